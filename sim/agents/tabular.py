"""Tabular learners over the world's states: Q-learning and policy gradient with a KL penalty, on any world (a
state is a prefix in the enumerated tree, a (prompt, position, last token) triple in a compressed world).

``q_learning`` steps ``agent.batch`` episodes together through the batched gymnasium env
(:class:`sim.env.TextVectorEnv`); ``agent.steps`` counts completed episodes. Updates of one batch are averaged per
(s, a) with the per-pair step size ``lr / (1 + visits)^lr_decay``. Exploration is epsilon-greedy (epsilon annealed
from 1 to ``agent.epsilon`` over the first half) or Boltzmann. Q starts at tiny random values (1e-12) so that
greedy ties break at random. The returned policy is greedy in Q.

``policy_gradient`` keeps a softmax table of logits, initialised at pi_ref, and maximises
``E[sum r] - beta KL(pi || pi_ref)``. Its learning curve is its own pressure path: after t natural-gradient steps
from pi_ref with ``lr * beta`` small, ``pi_t ∝ pi_ref exp(lr t Q)``, an effective beta of ``1 / (lr t)``.

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

import numpy as np

from sim.agents.base import (
    AgentContext,
    AgentResult,
    Curve,
    averaged_update,
    explore,
    greedy_rows,
    log_ratio,
    register,
    row_max,
    softmax_rows,
)
from sim.build import Setup
from sim.env import TextVectorEnv
from sim.errors import check
from sim.worlds import LevelPolicy, Table


def vector_env(ctx: AgentContext, batch: int) -> TextVectorEnv:
    """The batched env over the context's world, paying the context's channel, observing state indices."""
    return TextVectorEnv(num_envs=batch, setup=Setup(ctx.world, ctx.oracle, ctx.channel), obs_mode="state")


def greedy_policy(world, Q: np.ndarray) -> LevelPolicy:
    """The greedy policy of a Q table (S, A), rows formed per level."""
    return LevelPolicy(
        world,
        lambda t: greedy_rows(Q[slice(*world.level(t))]),
        lambda t, local: greedy_rows(Q[world.level_start[t] + local]),
    )


Q_KEYS = ("steps", "lr", "lr_decay", "epsilon", "exploration", "temperature", "batch", "checkpoints")


@register("q_learning", learns_from="samples", keys=Q_KEYS)
def q_learning(ctx: AgentContext, cfg) -> AgentResult:
    """Tabular Q-learning, batched over the vector env."""
    world, rng = ctx.world, ctx.rng
    A = world.n_actions
    Q = 1e-12 * rng.random((world.n_states, A))  # breaks ties at random without a per-step cost
    visits = np.zeros((world.n_states, A))
    envs = vector_env(ctx, cfg.batch)
    obs, _ = envs.reset(seed=int(rng.integers(2**63)))
    curve = Curve(ctx, cfg.steps, cfg.checkpoints)
    Q_flat = Q.reshape(-1)  # a view: entry (s, a) is Q_flat[s * A + a], gathered faster than Q[s, a]
    ended_last = np.zeros(cfg.batch, dtype=bool)
    episodes = updates = 0
    while episodes < cfg.steps:
        s = obs
        a = explore(Q[s], cfg, episodes, rng)
        obs, r, terminated, _, _ = envs.step(a)
        stepped = ~ended_last  # slots that ended last step were reset now: nothing to learn from them
        target = r + np.where(terminated, 0.0, row_max(Q[obs])[1])
        entry = s * A + a
        flat = entry[stepped]
        averaged_update(Q, visits, flat, (target - Q_flat[entry])[stepped], cfg.lr, cfg.lr_decay)
        updates += flat.size
        episodes += np.count_nonzero(terminated & stepped)
        ended_last = terminated
        if curve.due(episodes) or episodes >= cfg.steps:
            curve.record(episodes, greedy_policy(world, Q))
    return AgentResult(greedy_policy(world, Q), curve.rows, {"updates": float(updates)})


def _check_npg(config) -> None:
    cfg = config.agent
    check(
        cfg.mode != "exact" or not cfg.natural or cfg.lr * cfg.beta <= 1,
        "agent.lr",
        cfg.lr,
        f"<= 1/agent.beta = {1 / cfg.beta:.4g} for the exact natural policy gradient (it diverges beyond)",
    )


@register("policy_gradient", learns_from="samples", kl=True,
          keys=("beta", "steps", "lr", "mode", "natural", "batch", "checkpoints"), check=_check_npg)  # fmt: skip
def policy_gradient(ctx: AgentContext, cfg) -> AgentResult:
    """Softmax-table policy gradient with a KL penalty to pi_ref (exact or sampled)."""
    world = ctx.world
    with np.errstate(divide="ignore"):
        log_ref = np.log(world.table(world.ref))
    theta = log_ref.copy()
    curve = Curve(ctx, cfg.steps, cfg.checkpoints)
    if cfg.mode == "exact":
        proxy = world.table(ctx.proxy)
        for step in range(1, cfg.steps + 1):
            pi = softmax_rows(theta)
            reg = proxy - cfg.beta * log_ratio(theta, log_ref)
            V, Q = world.policy_values(Table(world, pi), Table(world, reg))
            adv = np.concatenate(Q) - np.concatenate(V)[:, None]
            if cfg.natural:
                theta += cfg.lr * adv
            else:
                theta += cfg.lr * np.concatenate(world.occupancy(Table(world, pi)))[:, None] * pi * adv
            if curve.due(step):
                curve.record(step, Table(world, softmax_rows(theta)))
        return AgentResult(Table(world, softmax_rows(theta)), curve.rows)

    baseline = np.zeros(world.n_states)
    base_visits = np.zeros(world.n_states)
    episodes = 0
    while episodes < cfg.steps:
        pi = softmax_rows(theta)
        states, actions, rewards, alive = world.rollout(Table(world, pi), ctx.channel, ctx.rng, cfg.batch)
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
        averaged_update(baseline, base_visits, s, g - baseline[s], 1.0, 1.0)  # running mean of G per state
        episodes += cfg.batch
        if curve.due(episodes) or episodes >= cfg.steps:
            curve.record(episodes, Table(world, softmax_rows(theta)))
    return AgentResult(Table(world, softmax_rows(theta)), curve.rows)
