"""Exact solvers over an enumerated :class:`~sim.mdp.TextMDP`.

All functions work level by level. Because the children of level ``t`` are one contiguous block of
level ``t+1`` laid out as an ``[n_t, b]`` matrix, the backward pass reads ``V[next level].reshape(n_t, b)``
and the forward pass writes ``d[next level]`` with a reshape: no gather through ``next_state``.

Notation: ``r`` is a reward table (S, A); ``pi`` a policy table (S, A) with rows summing to 1;
``V(-1) = 0`` at an episode end.
"""

from __future__ import annotations

import numpy as np

from sim.errors import check
from sim.mdp import TextMDP


def _continuation(mdp: TextMDP, t: int, values: np.ndarray) -> np.ndarray:
    """V of the children of level ``t`` as an (n_t, b) view."""
    lo, hi = mdp.level(t)
    clo, chi = mdp.level(t + 1)
    return values[clo:chi].reshape(hi - lo, mdp.branching)


def backward_induction(mdp: TextMDP, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal values of reward ``r``.

    Returns:
        ``(V, Q)``: V float array (S,), ``V(s) = max_a Q(s, a)``; Q float array (S, A),
        ``Q(s, a) = r(s, a) + V(next(s, a))``.
    """
    f = mdp.first_token
    Q = np.array(r, dtype=np.float64, order="C", copy=True)
    V = np.empty(mdp.n_states)
    for t in reversed(range(mdp.horizon)):
        lo, hi = mdp.level(t)
        if t < mdp.horizon - 1:
            Q[lo:hi, f:] += _continuation(mdp, t, V)
        np.max(Q[lo:hi], axis=1, out=V[lo:hi])
    return V, Q


def greedy_policy(Q: np.ndarray) -> np.ndarray:
    """Deterministic policy (S, A): one-hot on ``argmax_a Q(s, a)`` (ties to the lowest token)."""
    pi = np.zeros_like(Q, dtype=np.float64)
    pi[np.arange(Q.shape[0]), Q.argmax(axis=1)] = 1.0
    return pi


def optimal_policy(mdp: TextMDP, r: np.ndarray) -> np.ndarray:
    """A deterministic optimal policy (S, A) for reward ``r``."""
    return greedy_policy(backward_induction(mdp, r)[1])


def soft_optimal(
    mdp: TextMDP, r: np.ndarray, ref_policy: np.ndarray, beta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The KL-regularised optimum of ``max_pi E[sum r] - beta KL(pi || pi_ref)``.

    ``Q(s, a) = r(s, a) + V(next)``, ``V(s) = beta log sum_a pi_ref(a|s) exp(Q(s, a)/beta)``,
    ``pi*(a|s) = pi_ref(a|s) exp((Q(s, a) - V(s))/beta)``; equivalently
    ``pi*(y|x) ∝ pi_ref(y|x) exp(R(x, y)/beta)`` over whole sequences. Computed with log-sum-exp, stable
    from ``beta = 1e-6`` (the argmax policy restricted to the support of pi_ref) to ``beta = 1e6`` (pi_ref).

    Args:
        mdp: the world.
        r: reward (S, A).
        ref_policy: pi_ref (S, A).
        beta: KL coefficient, > 0.

    Returns:
        ``(V, Q, pi)``: soft values (S,), soft Q-values (S, A), the optimal policy (S, A).
    """
    check(np.isfinite(beta) and beta > 0, "agent.beta", beta, "a finite number > 0")
    f = mdp.first_token
    with np.errstate(divide="ignore"):
        log_ref = np.log(ref_policy)
    Q = np.array(r, dtype=np.float64, copy=True)
    V = np.empty(mdp.n_states)
    pi = np.empty_like(Q)
    for t in reversed(range(mdp.horizon)):
        lo, hi = mdp.level(t)
        if t < mdp.horizon - 1:
            Q[lo:hi, f:] += _continuation(mdp, t, V)
        z = log_ref[lo:hi] + Q[lo:hi] / beta
        m = z.max(axis=1, keepdims=True)
        w = np.exp(z - m)
        total = w.sum(axis=1, keepdims=True)
        pi[lo:hi] = w / total
        V[lo:hi] = beta * (m[:, 0] + np.log(total[:, 0]))
    return V, Q, pi


def occupancy(mdp: TextMDP, pi: np.ndarray, initial_dist: np.ndarray | None = None) -> np.ndarray:
    """State occupancy d_pi (S,): the probability of visiting each state.

    In a tree each state is visited at most once, so ``d`` of a level sums to the probability of reaching
    that depth. ``d(child(s, a)) = d(s) pi(a|s)``.
    """
    f = mdp.first_token
    d = np.zeros(mdp.n_states)
    init = mdp.initial_dist if initial_dist is None else initial_dist
    lo, hi = mdp.level(0)
    d[lo:hi] = init[lo:hi]
    for t in range(mdp.horizon - 1):
        lo, hi = mdp.level(t)
        clo, chi = mdp.level(t + 1)
        d[clo:chi] = (d[lo:hi, None] * pi[lo:hi, f:]).reshape(-1)
    return d


def policy_values(mdp: TextMDP, pi: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of policy ``pi`` under reward ``r``.

    Returns:
        ``(V, Q)``: ``V(s) = sum_a pi(a|s) Q(s, a)``, ``Q(s, a) = r(s, a) + V(next)``.
    """
    f = mdp.first_token
    Q = np.array(r, dtype=np.float64, copy=True)
    V = np.empty(mdp.n_states)
    for t in reversed(range(mdp.horizon)):
        lo, hi = mdp.level(t)
        if t < mdp.horizon - 1:
            Q[lo:hi, f:] += _continuation(mdp, t, V)
        V[lo:hi] = np.einsum("ij,ij->i", pi[lo:hi], Q[lo:hi])
    return V, Q


def expected_return(mdp: TextMDP, pi: np.ndarray, r: np.ndarray, d: np.ndarray | None = None) -> float:
    """``J_r(pi) = sum_s d_pi(s) sum_a pi(a|s) r(s, a)``.

    Args:
        d: the occupancy of ``pi`` if already computed.
    """
    d = occupancy(mdp, pi) if d is None else d
    return float(d @ np.einsum("ij,ij->i", pi, r))


def kl_divergence(mdp: TextMDP, pi: np.ndarray, ref_policy: np.ndarray, d: np.ndarray | None = None) -> float:
    """Sequence-level ``KL(pi || pi_ref) = sum_s d_pi(s) KL(pi(.|s) || pi_ref(.|s))``, in nats.

    ``0 log 0 = 0``; the result is ``inf`` if ``pi`` puts mass where ``pi_ref`` has none on a visited state.
    """
    d = occupancy(mdp, pi) if d is None else d
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pi > 0, pi * (np.log(pi) - np.log(ref_policy)), 0.0)
    per_state = terms.sum(axis=1)
    visited = d > 0
    return float(max(d[visited] @ per_state[visited], 0.0))
