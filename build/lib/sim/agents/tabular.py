"""Tabular learners: Q-learning and policy gradient with a KL penalty.

``q_learning`` steps ``agent.batch`` episodes together through the natively batched gymnasium vector env;
``agent.steps`` counts completed episodes. Updates of one batch are averaged per (s, a) (so a state visited by
many episodes at once is not over-stepped) with the per-pair step size ``lr / (1 + visits)^lr_decay``.
Exploration is epsilon-greedy (epsilon annealed from 1 to ``agent.epsilon`` over the first half) or
Boltzmann. Q starts at tiny random values (1e-12) so that greedy ties break at random. The returned policy is
greedy in Q.

``policy_gradient`` keeps a softmax table of logits, initialised at pi_ref, and maximises
``E[sum r] - beta KL(pi || pi_ref)``:

Its learning curve is its own pressure path: after t natural-gradient steps from pi_ref with ``lr * beta`` small,
``pi_t ∝ pi_ref exp(lr t Q)``, an effective beta of ``1 / (lr t)`` (the checkpoints of an overoptimisation curve).

* ``mode=exact``: the exact gradient from exact regularised values, ``A(s, a) = Q_reg(s, a) - V_reg(s)`` with
  ``Q_reg = r - beta log(pi/pi_ref) + V_reg(next)``. With ``natural=true`` (default) the natural gradient
  ``theta += lr * A`` (Cen et al. 2021: it converges linearly to the soft optimum when ``lr * beta <= 1``);
  otherwise the plain gradient ``theta += lr * d_pi(s) pi(a|s) A(s, a)``. ``agent.steps`` counts updates.
* ``mode=sampled``: REINFORCE on batches of ``agent.batch`` sampled episodes with the KL as a per-token
  penalty ``r_t - beta log(pi/pi_ref)(s_t, a_t)`` and a per-state running-average baseline. The score-function
  terms ``(G - b(s)) (e_a - pi(.|s))`` are averaged per visited state rather than over the batch, so a deep
  state visited once per batch moves as fast as the root (an estimate of ``pi(a|s) A(s, a)``, the gradient
  without its ``d_pi(s)`` factor).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.agents.base import (
    AgentContext,
    AgentResult,
    Curve,
    log_ratio,
    register,
    rollout,
    sample_from,
    softmax_rows,
)
from sim.env import TextMDPVectorEnv
from sim.solvers import greedy_policy, occupancy, policy_values


def epsilon_at(episodes: int, total: int, final: float) -> float:
    """Linear anneal from 1 to ``final`` over the first half of training."""
    return max(final, 1.0 - (1.0 - final) * episodes / max(1.0, 0.5 * total))


def row_max(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(argmax, max)`` per row; through argmax, which numpy reduces faster than max over short rows."""
    best = q.argmax(axis=1)
    return best, q[np.arange(q.shape[0]), best]


def _averaged_update(
    table: np.ndarray, visits: np.ndarray, flat: np.ndarray, delta: np.ndarray, lr: float, decay: float
):
    """``table[k] += lr / (1 + visits[k])^decay * mean(delta over the batch entries at k)``; counts the visits."""
    keys, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    mean = np.bincount(inverse, weights=delta, minlength=keys.size) / counts
    step = lr / (1.0 + visits.flat[keys]) ** decay if decay > 0 else lr
    table.flat[keys] += step * mean
    visits.flat[keys] += counts


def explore(q: np.ndarray, cfg, episodes: int, rng: np.random.Generator) -> np.ndarray:
    """Actions for a batch of Q rows (B, A) under the configured exploration."""
    if cfg.exploration == "boltzmann":
        return sample_from(softmax_rows(q / cfg.temperature), rng)
    greedy = q.argmax(axis=1)  # ties: Q starts at tiny random values, so exact ties do not occur
    eps = epsilon_at(episodes, cfg.steps, cfg.epsilon)
    return np.where(rng.random(q.shape[0]) < eps, rng.integers(0, q.shape[1], q.shape[0]), greedy)


def vector_env(ctx: AgentContext, batch: int) -> TextMDPVectorEnv:
    """The batched env over the context's world, paying the context's channel."""
    return TextMDPVectorEnv(num_envs=batch, world=replace(ctx.world, channel=ctx.channel))


@register("q_learning")
def q_learning(ctx: AgentContext, cfg) -> AgentResult:
    """Tabular Q-learning, batched over the vector env."""
    mdp, rng = ctx.mdp, ctx.rng
    A = mdp.n_actions
    Q = 1e-12 * rng.random((mdp.n_states, A))  # breaks ties at random without a per-step cost
    visits = np.zeros((mdp.n_states, A))
    envs = vector_env(ctx, cfg.batch)
    obs, _ = envs.reset(seed=int(rng.integers(2**63)))
    curve = Curve(ctx, cfg.steps, cfg.checkpoints)
    ended_last = np.zeros(cfg.batch, dtype=bool)
    episodes = updates = 0
    while episodes < cfg.steps:
        s = obs
        a = explore(Q[s], cfg, episodes, rng)
        obs, r, terminated, _, _ = envs.step(a)
        stepped = ~ended_last  # slots that ended last step were reset now: nothing to learn from them
        target = r + np.where(terminated, 0.0, row_max(Q[obs])[1])
        flat = (s * A + a)[stepped]
        _averaged_update(Q, visits, flat, (target - Q[s, a])[stepped], cfg.lr, cfg.lr_decay)
        updates += flat.size
        episodes += int(terminated[stepped].sum())
        ended_last = terminated
        if curve.due(episodes) or episodes >= cfg.steps:
            curve.record(episodes, greedy_policy(Q))
    return AgentResult(greedy_policy(Q), curve.rows, {"updates": float(updates)})


@register("policy_gradient")
def policy_gradient(ctx: AgentContext, cfg) -> AgentResult:
    """Softmax-table policy gradient with a KL penalty to pi_ref (exact or sampled)."""
    mdp = ctx.mdp
    with np.errstate(divide="ignore"):
        log_ref = np.log(ctx.ref_policy)
    theta = log_ref.copy()
    curve = Curve(ctx, cfg.steps, cfg.checkpoints)
    if cfg.mode == "exact":
        for step in range(1, cfg.steps + 1):
            pi = softmax_rows(theta)
            reg = ctx.proxy - cfg.beta * log_ratio(theta, log_ref)
            V, Q = policy_values(mdp, pi, reg)
            adv = Q - V[:, None]
            if cfg.natural:
                theta += cfg.lr * adv
            else:
                theta += cfg.lr * occupancy(mdp, pi)[:, None] * pi * adv
            if curve.due(step):
                curve.record(step, softmax_rows(theta))
        return AgentResult(softmax_rows(theta), curve.rows)

    baseline = np.zeros(mdp.n_states)
    base_visits = np.zeros(mdp.n_states)
    episodes = 0
    while episodes < cfg.steps:
        pi = softmax_rows(theta)
        states, actions, rewards, alive = rollout(mdp, pi, ctx.channel, ctx.rng, cfg.batch)
        logratio = log_ratio(theta, log_ref)[states, actions]
        reg = np.where(alive, rewards - cfg.beta * logratio, 0.0)
        G = np.cumsum(reg[:, ::-1], axis=1)[:, ::-1]  # regularised return-to-go
        s, a, g = states[alive], actions[alive], G[alive]
        adv = g - baseline[s]
        grad = -pi[s] * adv[:, None]
        grad[np.arange(s.size), a] += adv
        keys, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
        total = np.zeros((keys.size, grad.shape[1]))
        np.add.at(total, inverse, grad)
        theta[keys] += cfg.lr * total / counts[:, None]  # the score-function gradient averaged per visited state
        _averaged_update(baseline, base_visits, s, g - baseline[s], 1.0, 1.0)  # running mean of G per state
        episodes += cfg.batch
        if curve.due(episodes) or episodes >= cfg.steps:
            curve.record(episodes, softmax_rows(theta))
    return AgentResult(softmax_rows(theta), curve.rows)
