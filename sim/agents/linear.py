"""Linear agents over feature templates (``agent.templates``), on any world.

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
from scipy import sparse

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
from sim.agents.tabular import vector_env
from sim.errors import check
from sim.features import FeatureMap, template_dim
from sim.worlds import LevelPolicy, Table, bigram_uses, n_states

#: The exact natural gradient builds an (S A, D) design and a (D, D) Fisher matrix: at most this many S A entries.
MAX_EXACT_FISHER_ENTRIES = 5_000_000
#: ... and at most this many features.
MAX_DENSE_FEATURES = 20_000


def _templates(cfg) -> list[str]:
    return list(cfg.templates)


def _dim(config) -> int:
    e = config.env
    return sum(template_dim(t, e.n_prompts, e.vocab_size, e.horizon) for t in config.agent.templates)


def _check_lspi(config) -> None:
    check(_dim(config) <= MAX_DENSE_FEATURES, "agent.templates", list(config.agent.templates),
          f"templates with at most {MAX_DENSE_FEATURES} features for lspi (its dense (D, D) system; these have "
          f"{_dim(config)})")  # fmt: skip


def _check_loglinear(config) -> None:
    a = config.agent
    if a.mode != "exact" or not a.natural:
        return
    entries = n_states(config.env, bool(bigram_uses(config, a.templates))) * config.env.vocab_size
    check(entries <= MAX_EXACT_FISHER_ENTRIES and _dim(config) <= MAX_DENSE_FEATURES, "agent.natural", True,
          f"false, or agent.mode=sampled, on a world this large (the exact natural gradient builds an (S A, D) design "
          f"and a (D, D) Fisher matrix: S A = {entries:.3g} must be <= {MAX_EXACT_FISHER_ENTRIES:.0e} and "
          f"D = {_dim(config)} <= {MAX_DENSE_FEATURES})")  # fmt: skip


def greedy_linear(world, fm: FeatureMap, w: np.ndarray) -> LevelPolicy:
    """The greedy policy of ``Q_w``, rows formed per level."""
    return LevelPolicy(
        world,
        lambda t: greedy_rows(fm.values(w, np.arange(*world.level(t)))),
        lambda t, local: greedy_rows(fm.values(w, world.level_start[t] + local)),
    )


@register("linear_q", learns_from="samples", templates=_templates,
          keys=("templates", "steps", "lr", "lr_decay", "epsilon", "exploration", "temperature", "batch",
                "checkpoints"))  # fmt: skip
def linear_q(ctx: AgentContext, cfg) -> AgentResult:
    """Semi-gradient Q-learning with linear function approximation."""
    rng, world = ctx.rng, ctx.world
    fm = FeatureMap(world, cfg.templates, field="agent.templates")
    D = fm.dim
    w_ext = np.append(1e-12 * rng.random(D), 0.0)  # the last slot stays 0: inactive features
    visits = np.zeros(D + 1)
    K = len(fm.templates)
    envs = vector_env(ctx, cfg.batch)
    obs, _ = envs.reset(seed=int(rng.integers(2**63)))
    curve = Curve(ctx, cfg.steps, cfg.checkpoints)
    ended_last = np.zeros(cfg.batch, dtype=bool)
    episodes = 0
    while episodes < cfg.steps:
        s = obs
        G = fm.global_rows(s)
        q = sum(w_ext[g] for g in G)
        a = explore(q, cfg, episodes, rng)
        obs, r, terminated, _, _ = envs.step(a)
        stepped = ~ended_last
        target = r + np.where(terminated, 0.0, row_max(fm.values(w_ext[:-1], obs))[1])
        delta = (target - q[np.arange(q.shape[0]), a])[stepped]
        for g in G:
            idx = g[np.arange(s.size), a][stepped]
            live = idx < D
            averaged_update(w_ext, visits, idx[live], delta[live], cfg.lr / K, cfg.lr_decay)
        episodes += int(terminated[stepped].sum())
        ended_last = terminated
        if curve.due(episodes) or episodes >= cfg.steps:
            curve.record(episodes, greedy_linear(world, fm, w_ext[:-1].copy()))
    return AgentResult(greedy_linear(world, fm, w_ext[:-1].copy()), curve.rows)


@register("lspi", learns_from="samples", templates=_templates, keys=("templates", "steps", "batch", "checkpoints"),
          check=_check_lspi)  # fmt: skip
def lspi(ctx: AgentContext, cfg) -> AgentResult:
    """Least-squares policy iteration on uniform-policy episodes."""
    world, rng = ctx.world, ctx.rng
    fm = FeatureMap(world, cfg.templates, field="agent.templates")
    A = world.n_actions
    uniform = LevelPolicy(world, lambda t: np.full((int(world.sizes[t]), A), 1.0 / A))
    chunks = [
        world.rollout(uniform, ctx.channel, rng, min(cfg.batch, cfg.steps - k)) for k in range(0, cfg.steps, cfg.batch)
    ]
    S_, A_, R_, L_ = (np.concatenate([c[i] for c in chunks]) for i in range(4))
    s, a, r = S_[L_], A_[L_], R_[L_]
    nxt = world.next_state(s, a)
    cont = nxt >= 0
    Phi = fm.design(s, a)
    b = Phi.T @ r
    n_cont = int(cont.sum())
    embed = sparse.csr_matrix((np.ones(n_cont), (np.flatnonzero(cont), np.arange(n_cont))), shape=(s.size, n_cont))
    w = np.zeros(fm.dim)
    policy_next = None
    curve = Curve(ctx, 30, cfg.checkpoints)
    for it in range(1, 31):
        a_next = fm.values(w, nxt[cont]).argmax(axis=1)
        if policy_next is not None and np.array_equal(a_next, policy_next):
            break
        policy_next = a_next
        Phi_next = embed @ fm.design(nxt[cont], a_next)  # zero rows for episode ends
        Amat = (Phi.T @ (Phi - Phi_next)).toarray() + 1e-6 * np.eye(fm.dim)
        w = np.linalg.lstsq(Amat, b, rcond=None)[0]
        if curve.due(it):
            curve.record(it, greedy_linear(world, fm, w))
    return AgentResult(greedy_linear(world, fm, w), curve.rows, {"lspi_iterations": float(it)})


def _loglinear_table(world, fm: FeatureMap, log_ref: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return log_ref + fm.table_values(theta)


@register("loglinear_pg", learns_from="samples", kl=True, templates=_templates, check=_check_loglinear,
          keys=("templates", "beta", "steps", "lr", "mode", "natural", "batch", "checkpoints"))  # fmt: skip
def loglinear_pg(ctx: AgentContext, cfg) -> AgentResult:
    """Log-linear policy gradient with a KL penalty to pi_ref."""
    world = ctx.world
    fm = FeatureMap(world, cfg.templates, field="agent.templates")
    curve = Curve(ctx, cfg.steps, cfg.checkpoints)
    if cfg.mode == "exact":
        with np.errstate(divide="ignore"):
            log_ref = np.log(world.table(world.ref))
        proxy = world.table(ctx.proxy)
        S, A = world.n_states, world.n_actions
        if cfg.natural:
            theta = np.zeros(fm.dim)
            D1 = fm.dim + 1  # feature indices per template, (S*A,): D1 - 1 where the template is inactive
            all_cols = np.concatenate([g.ravel() for g in fm.global_rows(np.arange(S))]).astype(np.int64)
            cols = np.split(all_cols, len(fm.templates))  # views, one per template
            # M's sparsity is fixed: its distinct (state, index) entries, in CSR order, once; each step sums pi into
            # them (bincount) and builds the CSR arrays directly, with no COO conversion or duplicate summing
            key = np.repeat(np.arange(S), A) * D1  # the state of each (state, action), times D1
            entry, where = np.unique(np.concatenate([key + c for c in cols]), return_inverse=True)
            m_rows, m_cols = entry // D1, entry % D1
            m_indptr = np.searchsorted(m_rows, np.arange(S + 1))
            for step in range(1, cfg.steps + 1):
                logits = _loglinear_table(world, fm, log_ref, theta)
                pi = softmax_rows(logits)
                reg = proxy - cfg.beta * log_ratio(logits, log_ref)
                V, Q = world.policy_values(Table(world, pi), Table(world, reg))
                V, Q = np.concatenate(V), np.concatenate(Q)
                d = np.concatenate(world.occupancy(Table(world, pi)))
                w = (d[:, None] * pi).ravel()
                grad = fm.gather(d[:, None] * pi * (Q - V[:, None]))
                # Fisher F = sum_s d(s) Cov_pi(phi(s, .)) = Phi^T diag(d pi) Phi - M^T diag(d) M, M = E_pi phi per
                # state; phi has one 1 per active template, so Phi^T diag(w) Phi sums w over pairs of active indices
                gram = sum(np.bincount(ci * D1 + cj, weights=w, minlength=D1 * D1) for ci in cols for cj in cols)
                # M sparse (S, D + 1): at most A entries per template in a state's row, never S x D floats
                m = np.bincount(where, weights=np.tile(pi.ravel(), len(cols)), minlength=entry.size)
                M = sparse.csr_matrix((m, m_cols, m_indptr), shape=(S, D1))
                dM = sparse.csr_matrix((m * d[m_rows], m_cols, m_indptr), shape=(S, D1))
                F = gram.reshape(D1, D1) - (M.T @ dM).toarray()
                F = F[: fm.dim, : fm.dim]
                F += 1e-10 * max(np.trace(F), 1e-12) * np.eye(fm.dim)
                theta += cfg.lr * np.linalg.lstsq(F, grad, rcond=None)[0]
                if curve.due(step):
                    curve.record(step, Table(world, softmax_rows(_loglinear_table(world, fm, log_ref, theta))))
            return AgentResult(Table(world, softmax_rows(_loglinear_table(world, fm, log_ref, theta))), curve.rows)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            logits = _loglinear_table(world, fm, log_ref, theta)
            pi = softmax_rows(logits)
            reg = proxy - cfg.beta * log_ratio(logits, log_ref)
            V, Q = world.policy_values(Table(world, pi), Table(world, reg))
            Vc = np.concatenate(V)
            d = np.concatenate(world.occupancy(Table(world, pi)))
            grad = fm.gather(d[:, None] * pi * (np.concatenate(Q) - Vc[:, None]))
            return -world.initial_value(V), -grad

        step = [0]

        def callback(theta: np.ndarray) -> None:
            step[0] += 1
            if curve.due(step[0]):
                curve.record(step[0], Table(world, softmax_rows(_loglinear_table(world, fm, log_ref, theta))))

        from scipy import optimize  # here, not at the top: it adds ~0.2 s to every process's start

        res = optimize.minimize(
            objective,
            np.zeros(fm.dim),
            jac=True,
            method="L-BFGS-B",
            callback=callback,
            options={"maxiter": cfg.steps, "gtol": 1e-10, "ftol": 1e-15},
        )
        pi = Table(world, softmax_rows(_loglinear_table(world, fm, log_ref, res.x)))
        if not curve.rows or curve.rows[-1]["step"] != step[0]:
            curve.record(max(step[0], 1), pi)
        return AgentResult(pi, curve.rows)

    theta = np.zeros(fm.dim)
    baseline = np.zeros(world.n_states)
    base_visits = np.zeros(world.n_states)
    episodes = 0
    while episodes < cfg.steps:
        policy = loglinear_policy(world, fm, theta)
        states, actions, rewards, alive = world.rollout(policy, ctx.channel, ctx.rng, cfg.batch)
        logratio = np.zeros(states.shape)
        pi_s = np.empty((states.shape[0], world.horizon, world.n_actions))
        for t, lo, _ in world.levels():
            live = alive[:, t]
            if not live.any():
                break
            rows = states[live, t] - lo
            logits = loglinear_logits(world, fm, theta, t, rows)
            logratio[live, t] = log_ratio(logits, world.log_ref_rows(t, rows))[np.arange(rows.size), actions[live, t]]
            pi_s[live, t] = softmax_rows(logits)
        reg = np.where(alive, rewards - cfg.beta * logratio, 0.0)
        G = np.cumsum(reg[:, ::-1], axis=1)[:, ::-1]
        s, a, g = states[alive], actions[alive], G[alive]
        adv = g - baseline[s]
        # score of a log-linear policy: phi(s, a) - E_pi phi(s, .)
        weights = -pi_s[alive] * adv[:, None]
        weights[np.arange(s.size), a] += adv
        grad = np.zeros(fm.dim + 1)
        for Gk in fm.global_rows(s):
            grad += np.bincount(Gk.ravel(), weights=weights.ravel(), minlength=fm.dim + 1)
        theta += cfg.lr * grad[: fm.dim] / cfg.batch
        averaged_update(baseline, base_visits, s, g - baseline[s], 1.0, 1.0)
        episodes += cfg.batch
        if curve.due(episodes) or episodes >= cfg.steps:
            curve.record(episodes, loglinear_policy(world, fm, theta))
    return AgentResult(loglinear_policy(world, fm, theta), curve.rows)


def loglinear_logits(world, fm: FeatureMap, theta: np.ndarray, t: int, local: np.ndarray | None = None) -> np.ndarray:
    """``log pi_ref + theta . phi`` for the level-``t`` states (all, or ``local``): (n, A)."""
    if local is None:
        return world.log_ref(t) + fm.values(theta, np.arange(*world.level(t)))
    return world.log_ref_rows(t, local) + fm.values(theta, world.level_start[t] + local)


def loglinear_policy(world, fm: FeatureMap, theta: np.ndarray) -> LevelPolicy:
    """The policy ``pi ∝ pi_ref exp(theta . phi)`` of a snapshot of ``theta``, rows formed when asked."""
    frozen = theta.copy()
    return LevelPolicy(
        world,
        lambda t: softmax_rows(loglinear_logits(world, fm, frozen, t)),
        lambda t, local: softmax_rows(loglinear_logits(world, fm, frozen, t, local)),
    )
