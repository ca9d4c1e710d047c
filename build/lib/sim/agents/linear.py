"""Linear agents over feature templates (``agent.templates``); each turns its weights into a policy table.

* ``linear_q``: semi-gradient Q-learning, ``Q_w(s, a) = w . phi(s, a)``, batched over the vector env with the
  exploration of ``q_learning``; each template's weights move by the per-feature mean TD error over the batch
  times ``lr / K`` (``K`` templates), decayed per feature as in ``q_learning``. Greedy policy.
* ``lspi``: least-squares policy iteration (LSTD-Q) on ``agent.steps`` episodes from the uniform policy:
  ``w = (Phi^T (Phi - Phi'_pi) + 1e-6 I)^-1 Phi^T r``, then greedy, until the greedy policy stops changing
  (at most 30 iterations).
* ``loglinear_pg``: the reference-anchored log-linear policy ``pi(a|s) ∝ pi_ref(a|s) exp(theta . phi(s, a))``
  maximising ``E[sum r] - beta KL(pi || pi_ref)``. ``mode=exact`` uses the exact gradient
  ``g = sum_s d(s) sum_a pi(a|s) A_reg(s, a) phi(s, a)``: with ``natural=true`` (default) the natural gradient
  ``theta += lr F^-1 g``, ``F = sum_s d(s) Cov_pi(phi(s, .))`` (compatible function approximation: when the
  advantage is linear in the features this is tabular NPG, which converges to the soft optimum); with
  ``natural=false`` L-BFGS on the exact objective, which can stall where the remaining improvement lies in
  states the policy rarely visits (their gradient carries a factor d(s)). ``agent.steps`` counts iterations.
  ``mode=sampled``: REINFORCE with the KL as a per-token penalty and a per-state baseline.

When the optimal (soft) Q-function is linear in the templates (e.g. an oracle over position and bigram
templates, agents with ``[position, bigram]``), ``lspi`` and ``loglinear_pg`` reach the (soft) optimum; when
it is not, a gap remains however long they train: the class cannot represent the optimum.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, sparse

from sim.agents.base import AgentContext, AgentResult, Curve, log_ratio, register, rollout, softmax_rows
from sim.agents.tabular import _averaged_update, explore, row_max, vector_env
from sim.features import FeatureMap
from sim.solvers import greedy_policy, occupancy, policy_values


class LinearQ:
    """Global feature indices of every (s, a): ``Q_w = sum_k w[G_k]`` with ``G_k = -1`` mapped to a zero slot."""

    def __init__(self, mdp, templates):
        self.fm = FeatureMap(mdp, templates)
        self.D = self.fm.dim
        self.G = [
            np.where(self.fm.index(t) >= 0, self.fm.index(t) + off, self.D)
            for t, off in zip(self.fm.templates, self.fm.offsets, strict=False)
        ]

    def values(self, w: np.ndarray, states: np.ndarray | None = None) -> np.ndarray:
        """``w . phi`` for all (S, A), or the rows of ``states``."""
        w_ext = np.append(w, 0.0)
        rows = slice(None) if states is None else states
        return sum(w_ext[G[rows]] for G in self.G)

    def gather(self, weights: np.ndarray) -> np.ndarray:
        """``sum_{s,a} weights[s, a] phi(s, a)`` (D,)."""
        out = np.zeros(self.D + 1)
        for G in self.G:
            out += np.bincount(G.ravel(), weights=weights.ravel(), minlength=self.D + 1)
        return out[: self.D]

    def design(self, s: np.ndarray, a: np.ndarray) -> sparse.csr_matrix:
        """Sparse (n, D) rows phi(s_i, a_i)."""
        cols = np.stack([G[s, a] for G in self.G], axis=1)
        rows = np.repeat(np.arange(s.size), len(self.G))
        keep = cols.ravel() < self.D
        return sparse.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols.ravel()[keep])), shape=(s.size, self.D))


@register("linear_q")
def linear_q(ctx: AgentContext, cfg) -> AgentResult:
    """Semi-gradient Q-learning with linear function approximation."""
    rng = ctx.rng
    lin = LinearQ(ctx.mdp, cfg.templates)
    w_ext = np.append(1e-12 * rng.random(lin.D), 0.0)  # the last slot stays 0: inactive features
    visits = np.zeros(lin.D + 1)
    K = len(lin.G)
    envs = vector_env(ctx, cfg.batch)
    obs, _ = envs.reset(seed=int(rng.integers(2**63)))
    curve = Curve(ctx, cfg.steps, cfg.checkpoints)
    ended_last = np.zeros(cfg.batch, dtype=bool)
    episodes = 0
    while episodes < cfg.steps:
        s = obs
        q = lin.values(w_ext[:-1], s)
        a = explore(q, cfg, episodes, rng)
        obs, r, terminated, _, _ = envs.step(a)
        stepped = ~ended_last
        target = r + np.where(terminated, 0.0, row_max(lin.values(w_ext[:-1], obs))[1])
        delta = (target - q[np.arange(q.shape[0]), a])[stepped]
        for G in lin.G:
            idx = G[s, a][stepped]
            live = idx < lin.D
            _averaged_update(w_ext, visits, idx[live], delta[live], cfg.lr / K, cfg.lr_decay)
        episodes += int(terminated[stepped].sum())
        ended_last = terminated
        if curve.due(episodes) or episodes >= cfg.steps:
            curve.record(episodes, greedy_policy(lin.values(w_ext[:-1])))
    return AgentResult(greedy_policy(lin.values(w_ext[:-1])), curve.rows)


@register("lspi")
def lspi(ctx: AgentContext, cfg) -> AgentResult:
    """Least-squares policy iteration on uniform-policy episodes."""
    mdp, rng = ctx.mdp, ctx.rng
    lin = LinearQ(mdp, cfg.templates)
    uniform = np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)
    chunks = [
        rollout(mdp, uniform, ctx.channel, rng, min(cfg.batch, cfg.steps - k)) for k in range(0, cfg.steps, cfg.batch)
    ]
    S_, A_, R_, L_ = (np.concatenate([c[i] for c in chunks]) for i in range(4))
    s, a, r = S_[L_], A_[L_], R_[L_]
    nxt = mdp.next_state[s, a]
    cont = nxt >= 0
    Phi = lin.design(s, a)
    b = Phi.T @ r
    n_cont = int(cont.sum())
    embed = sparse.csr_matrix((np.ones(n_cont), (np.flatnonzero(cont), np.arange(n_cont))), shape=(s.size, n_cont))
    w = np.zeros(lin.D)
    policy_next = None
    curve = Curve(ctx, 30, cfg.checkpoints)
    for it in range(1, 31):
        a_next = lin.values(w, nxt[cont]).argmax(axis=1)
        if policy_next is not None and np.array_equal(a_next, policy_next):
            break
        policy_next = a_next
        Phi_next = embed @ lin.design(nxt[cont], a_next)  # zero rows for episode ends
        Amat = (Phi.T @ (Phi - Phi_next)).toarray() + 1e-6 * np.eye(lin.D)
        w = np.linalg.lstsq(Amat, b, rcond=None)[0]
        if curve.due(it):
            curve.record(it, greedy_policy(lin.values(w)))
    return AgentResult(greedy_policy(lin.values(w)), curve.rows, {"lspi_iterations": float(it)})


def _loglinear_policy(lin: LinearQ, log_ref: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return softmax_rows(log_ref + lin.values(theta))


@register("loglinear_pg")
def loglinear_pg(ctx: AgentContext, cfg) -> AgentResult:
    """Log-linear policy gradient with a KL penalty to pi_ref."""
    mdp = ctx.mdp
    lin = LinearQ(mdp, cfg.templates)
    with np.errstate(divide="ignore"):
        log_ref = np.log(ctx.ref_policy)
    curve = Curve(ctx, cfg.steps, cfg.checkpoints)
    if cfg.mode == "exact" and cfg.natural:
        theta = np.zeros(lin.D)
        S, A = mdp.n_states, mdp.n_actions
        Phi = lin.design(np.repeat(np.arange(S), A), np.tile(np.arange(A), S))  # (S*A, D)
        rows = np.repeat(np.arange(S), A)
        for step in range(1, cfg.steps + 1):
            pi = _loglinear_policy(lin, log_ref, theta)
            reg = ctx.proxy - cfg.beta * log_ratio(log_ref + lin.values(theta), log_ref)
            V, Q = policy_values(mdp, pi, reg)
            d = occupancy(mdp, pi)
            w = (d[:, None] * pi).ravel()
            grad = Phi.T @ (w * (Q - V[:, None]).ravel())
            # Fisher F = sum_s d(s) Cov_pi(phi(s, .)) = Phi^T diag(d pi) Phi - M^T diag(d) M, M = E_pi phi per state
            M = sparse.csr_matrix((pi.ravel(), (rows, np.arange(S * A))), shape=(S, S * A)) @ Phi
            F = (Phi.T @ Phi.multiply(w[:, None]) - M.T @ M.multiply(d[:, None])).toarray()
            F += 1e-10 * max(np.trace(F), 1e-12) * np.eye(lin.D)
            theta += cfg.lr * np.linalg.lstsq(F, grad, rcond=None)[0]
            if curve.due(step):
                curve.record(step, _loglinear_policy(lin, log_ref, theta))
        return AgentResult(_loglinear_policy(lin, log_ref, theta), curve.rows)
    if cfg.mode == "exact":

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            pi = _loglinear_policy(lin, log_ref, theta)
            reg = ctx.proxy - cfg.beta * log_ratio(log_ref + lin.values(theta), log_ref)
            V, Q = policy_values(mdp, pi, reg)
            d = occupancy(mdp, pi)
            grad = lin.gather(d[:, None] * pi * (Q - V[:, None]))
            return -float(mdp.initial_dist @ V), -grad

        step = [0]

        def callback(theta: np.ndarray) -> None:
            step[0] += 1
            if curve.due(step[0]):
                curve.record(step[0], _loglinear_policy(lin, log_ref, theta))

        res = optimize.minimize(
            objective,
            np.zeros(lin.D),
            jac=True,
            method="L-BFGS-B",
            callback=callback,
            options={"maxiter": cfg.steps, "gtol": 1e-10, "ftol": 1e-15},
        )
        pi = _loglinear_policy(lin, log_ref, res.x)
        if not curve.rows or curve.rows[-1]["step"] != step[0]:
            curve.record(max(step[0], 1), pi)
        return AgentResult(pi, curve.rows)

    theta = np.zeros(lin.D)
    baseline = np.zeros(mdp.n_states)
    base_visits = np.zeros(mdp.n_states)
    episodes = 0
    while episodes < cfg.steps:
        pi = _loglinear_policy(lin, log_ref, theta)
        states, actions, rewards, alive = rollout(mdp, pi, ctx.channel, ctx.rng, cfg.batch)
        logratio = log_ratio(log_ref + lin.values(theta), log_ref)[states, actions]
        reg = np.where(alive, rewards - cfg.beta * logratio, 0.0)
        G = np.cumsum(reg[:, ::-1], axis=1)[:, ::-1]
        s, a, g = states[alive], actions[alive], G[alive]
        adv = g - baseline[s]
        # score of a log-linear policy: phi(s, a) - E_pi phi(s, .)
        weights = -pi[s] * adv[:, None]
        weights[np.arange(s.size), a] += adv
        grad = np.zeros(lin.D + 1)
        for Gk in lin.G:
            grad += np.bincount(Gk[s].ravel(), weights=weights.ravel(), minlength=lin.D + 1)
        theta += cfg.lr * grad[: lin.D] / cfg.batch
        _averaged_update(baseline, base_visits, s, g - baseline[s], 1.0, 1.0)
        episodes += cfg.batch
        if curve.due(episodes) or episodes >= cfg.steps:
            curve.record(episodes, _loglinear_policy(lin, log_ref, theta))
    return AgentResult(_loglinear_policy(lin, log_ref, theta), curve.rows)
