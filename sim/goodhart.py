"""Goodhart's law in occupancy space (Karwowski et al. 2023, "Goodhart's Law in Reinforcement Learning", ICLR 2024,
arXiv:2310.09144): the projected angle between two rewards, the normalised drop height of an optimisation path, and
the early-stopping rule.

**Occupancy measures.** A policy pi of a world (of its states: prefixes of the tree on an enumerated world,
(prompt, position, last token) on a compressed one) has the state-action occupancy
``eta(s, a) = d_pi(s) pi(a|s)`` (``d_pi`` from :meth:`sim.worlds.World.occupancy`; the horizon is finite, so the
paper's discount is gamma = 1), and ``J_R(pi) = <eta, R>`` over the ``S * A`` entries (their Section 2.1). The set
``Omega`` of occupancies is a polytope, cut out of ``eta >= 0`` by the flow constraints, one per state ``s``:

    sum_a eta(s, a) = 1 / P                              (s a prompt: the uniform initial distribution)
    sum_a eta(s, a) = sum of eta over the transitions into s   (every other state; on the tree, the one from its parent)

Written ``C eta = b`` with ``C`` the (S, S*A) constraint matrix, the linear subspace parallel to ``Omega``'s affine
hull is ``L = null(C)`` (every transition is reachable, so ``Omega`` is full-dimensional in its affine hull).

**Projected angle** (their Section 2.1): ``arg(R0, R1)`` = the angle between ``M R0`` and ``M R1``, where ``M`` is the
orthogonal (Euclidean, over the S*A entries) projection onto ``L``. Since ``L``'s orthogonal complement is the row
space of ``C``, ``M R = R - C^T lam`` with ``(C C^T) lam = C R``; entrywise

    (M R)(s, a) = R(s, a) - lam(s) + lam(s')              (lam(s') = 0 when (s, a) ends the episode)

so ``M R`` is the potential-shaped version of ``R`` (potential ``-lam``) with the least Euclidean norm. Two rewards
whose returns differ on every complete sequence only by a per-prompt constant (potential shaping, constant shifts,
moving rewards to the last token) have the same ``M R``: angle 0; ``-R`` has angle pi. In general ``C C^T`` is
``diag(A + in-degree) - (adjacency + adjacency^T)`` over the states, a grounded graph Laplacian, solved by conjugate
gradients through the world's ``continuation`` and ``push`` (:meth:`sim.worlds.World.occupancy_potentials`; checked
against the pseudo-inverse of the explicit ``C`` on both world kinds). On the tree it is tridiagonal over the tree
(diagonal ``V + [t >= 1]``, ``-1`` between a state and its children), so the enumerated world solves it exactly
with one elimination sweep up the tree and one back-substitution down, level by level: with ``b`` children per state
below the last level and ``c(s) = sum_a R(s, a) - R(parent(s), a_in(s))``,

    D_{H-1} = V + [H > 1],  D_t = V + [t >= 1] - b beta_{t+1},  beta_t = [t >= 1] / D_t
    alpha(s) = (c(s) + sum_children alpha(child)) / D_t
    lam(s) = alpha(s) + beta_t lam(parent(s)),  lam(prompt) = alpha(prompt)

(``alpha`` is formed as ``gamma(s) - R(parent, a_in) / D_t`` with ``gamma`` a function of the subtree only, so the
sweep up reads one level of rows at a time). The angle is ``2 atan2(|u - v|, |u + v|)`` of the unit vectors
``u = M R0 / |M R0|``, ``v = M R1 / |M R1|`` (accurate at 0 and pi, where ``arccos`` loses half the digits).

Note: this is not the angle between the two rewards' *returns* over complete sequences after removing per-prompt
means. Both views have the same equivalence classes, but the occupancy-space inner product weighs a transition once,
however many sequences pass through it (a sequence-space vector ``u`` maps to ``eta = B^T u`` with ``B`` the
sequence-transition incidence matrix, so the metric is ``(B B^T)^-1``, not the identity); a test shows they differ.

**Normalised drop height** (their Section 2.2): along an optimisation path ``pi_1 .. pi_K`` of increasing pressure,
``NDH = (max_k J_0(pi_k) - J_0(pi_K)) / (max_pi J_0(pi) - min_pi J_0(pi))``: the true return lost between the path's
best point and its end, in units of the true return's range over all policies (the optimal minus the worst policy,
both exact by backward induction; the paper normalises the true reward to that range). A Goodhart drop is
``NDH > 0``. (``experiments.catalog.common.normalized_drop`` divides by the range along the path instead: the same
sign, a larger number.)

**Early stopping** (their Section 5). If the true reward is within angle ``theta`` of the proxy,
``arg(R0, R1) <= theta``, then a step ``d = eta_{k+1} - eta_k`` (in ``L``) raises the true return for *every* such
``R0`` exactly when ``angle(M R1, d) <= pi/2 - theta``: the worst true reward in the cone of half-angle
``theta`` around ``M R1`` is at angle ``angle(M R1, d) + theta`` from ``d``. The rule walks the proxy's optimisation
path and stops at the first ``k`` whose next step breaks this, returning ``pi_k``; before the stop, the true return
never falls (whatever the true reward in the cone). With ``d`` in ``L``, ``<M R1, d> = J_1(pi_{k+1}) - J_1(pi_k)``, so

    cos angle(M R1, d_k) = (J_1(pi_{k+1}) - J_1(pi_k)) / (|M R1| |eta_{k+1} - eta_k|)

needs only the proxy, the occupancies and ``|M R1|``: the rule never sees the true reward. (``<R1, d>`` is summed
entrywise over the occupancy difference, not as a difference of two returns, so that short steps keep their
digits; a step shorter than ``1e-10`` in occupancy cannot lower any return measurably and counts as angle 0.) The
paper states the rule for the continuous steepest-ascent path; on the discrete beta path it is applied to the chord
between consecutive points, for which the guarantee holds exactly: if ``arg(R0, R1) <= theta``, the true return is
non-decreasing over the points up to the stop, so the stopped prefix has NDH = 0 (a theorem: stated, not tested as
a claim; the unit tests check it on random worlds).

In rmsim: ``R0`` is the oracle's reward, ``R1`` the proxy the agent optimises (``ctx.proxy``), the path is the soft
planner's beta path (``sim.agents.base.beta_path``: pressure ``1/beta`` rising from ``path_max_beta`` to ``beta``).
On a compressed world the same definitions apply to its own MDP, whose states merge the prefixes that end in the same
token at the same position: another occupancy polytope than the prefix tree's (the angle between two rewards is not
the same number on the two kinds of one world, but each is Karwowski et al.'s angle for the MDP at hand).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.worlds.base import Rows, Table, block_rows

#: An occupancy step shorter than this (Euclidean, over the S*A entries) is no move: angle 0.
MIN_STEP = 1e-10


def potentials(world, reward: Rows) -> list[np.ndarray]:
    """``lam_t`` (n_t,) per level: ``M R = R - lam(s) + lam(s')`` is the projection of ``reward`` onto the space
    parallel to the occupancy polytope (module docstring): :meth:`sim.worlds.World.occupancy_potentials` (an
    elimination up and down the prefix tree on an enumerated world; conjugate gradients on a compressed one)."""
    return world.occupancy_potentials(reward)


def projected_rows(world, reward: Rows, lam: list[np.ndarray], t: int, lo: int, hi: int, whole: bool) -> np.ndarray:
    """``(M R)`` rows (hi - lo, A) of the level-``t`` states ``lo..hi-1``, from the potentials ``lam``."""
    out = np.array(block_rows(reward, t, lo, hi, whole), dtype=np.float64, copy=True)
    out -= lam[t][lo:hi, None]
    if t < world.horizon - 1:
        out[:, world.first_token :] += world.continuation(t, lam[t + 1])[lo:hi]
    return out


def project(world, reward: Rows) -> np.ndarray:
    """The projection ``M R`` as a full (S, A) array (for small worlds and tests)."""
    lam = potentials(world, reward)
    levels = [projected_rows(world, reward, lam, t, 0, int(world.sizes[t]), True) for t in range(world.horizon)]
    return np.concatenate(levels)


def _sum_squares(world, rewards: Sequence[Rows], lams: Sequence[list[np.ndarray]], coef: Sequence[float]) -> float:
    """``|sum_i coef_i M R_i|^2``, summed a block of states at a time."""
    total = 0.0
    for t in range(world.horizon):
        for lo, hi, whole in world.blocks(t, *rewards):
            parts = zip(rewards, lams, coef, strict=True)
            x = sum(c * projected_rows(world, r, lam, t, lo, hi, whole) for r, lam, c in parts)
            total += float(np.einsum("ij,ij->", x, x))
    return total


def _raw_norm(world, reward: Rows) -> float:
    """``|R|`` over the S*A entries."""
    total = 0.0
    for t in range(world.horizon):
        for lo, hi, whole in world.blocks(t, reward):
            r = np.asarray(block_rows(reward, t, lo, hi, whole), dtype=np.float64)
            total += float(np.einsum("ij,ij->", r, r))
    return float(np.sqrt(total))


def projected_norm(world, reward: Rows, lam: list[np.ndarray] | None = None) -> float:
    """``|M R|``: the Euclidean norm of the reward's projection onto the space parallel to the occupancy polytope."""
    lam = potentials(world, reward) if lam is None else lam
    return float(np.sqrt(_sum_squares(world, [reward], [lam], [1.0])))


def reward_angle(world, r0: Rows, r1: Rows) -> float | None:
    """Karwowski et al.'s projected angle ``arg(r0, r1)`` in [0, pi] (radians), or None when either reward projects to
    0, i.e. ``|M R| <= 1e-12 |R|`` (its return is the same for every policy, up to rounding: it has no direction)."""
    lams = [potentials(world, r0), potentials(world, r1)]
    norms = [projected_norm(world, r, lam) for r, lam in zip((r0, r1), lams, strict=True)]
    for n, r in zip(norms, (r0, r1), strict=True):
        if not n > 1e-12 * _raw_norm(world, r):
            return None
    n0, n1 = norms
    diff = _sum_squares(world, [r0, r1], lams, [1.0 / n0, -1.0 / n1])
    add = _sum_squares(world, [r0, r1], lams, [1.0 / n0, 1.0 / n1])
    return float(2.0 * np.arctan2(np.sqrt(diff), np.sqrt(add)))


# ------------------------------------------------------------------------------------------------ the path
def occupancy_rows(world, policy: Rows, d: list[np.ndarray], t: int, lo: int, hi: int, whole: bool) -> np.ndarray:
    """``eta(s, a) = d(s) pi(a|s)`` (hi - lo, A) of a block of level-``t`` states."""
    return d[t][lo:hi, None] * block_rows(policy, t, lo, hi, whole)


def occupancy_step(
    world, p: Rows, q: Rows, reward: Rows, dp: list[np.ndarray] | None = None, dq: list[np.ndarray] | None = None
) -> tuple[float, float]:
    """``(<R, eta_q - eta_p>, |eta_q - eta_p|)``: the return gained by moving from policy ``p`` to ``q`` and the
    Euclidean length of the move in occupancy space, summed entrywise over the occupancy difference."""
    dp = world.occupancy(p) if dp is None else dp
    dq = world.occupancy(q) if dq is None else dq
    gain = sq = 0.0
    for t in range(world.horizon):
        for lo, hi, whole in world.blocks(t, p, q, reward):
            x = occupancy_rows(world, q, dq, t, lo, hi, whole) - occupancy_rows(world, p, dp, t, lo, hi, whole)
            gain += float(np.einsum("ij,ij->", x, np.asarray(block_rows(reward, t, lo, hi, whole), dtype=np.float64)))
            sq += float(np.einsum("ij,ij->", x, x))
    return gain, float(np.sqrt(sq))


def occupancy_distance(
    world, p: Rows, q: Rows, dp: list[np.ndarray] | None = None, dq: list[np.ndarray] | None = None
) -> float:
    """``|eta_p - eta_q|``: the Euclidean distance between two policies' state-action occupancies."""
    dp = world.occupancy(p) if dp is None else dp
    dq = world.occupancy(q) if dq is None else dq
    total = 0.0
    for t in range(world.horizon):
        for lo, hi, whole in world.blocks(t, p, q):
            x = occupancy_rows(world, p, dp, t, lo, hi, whole) - occupancy_rows(world, q, dq, t, lo, hi, whole)
            total += float(np.einsum("ij,ij->", x, x))
    return float(np.sqrt(total))


def step_angle(gain: float, proxy_norm: float, distance: float) -> float:
    """``angle(M R1, d)`` (radians) of a step ``d`` of occupancy length ``distance`` that raises the proxy return by
    ``gain``: ``arccos(gain / (|M R1| |d|))``. A step shorter than :data:`MIN_STEP` has angle 0 (it cannot lower any
    return measurably); a proxy that projects to 0 gives pi/2 (no step is known to help)."""
    if distance <= MIN_STEP:
        return 0.0
    if proxy_norm <= 0.0:
        return float(np.pi / 2)
    return float(np.arccos(np.clip(gain / (proxy_norm * distance), -1.0, 1.0)))


def path_step_angles(world, proxy: Rows, policies: Sequence[Rows]) -> list[float]:
    """``angle(M R1, eta_{k+1} - eta_k)`` for the ``K - 1`` steps of a path of ``K`` policies (occupancies formed
    once each)."""
    norm = projected_norm(world, proxy)
    policies = [Table(world, world.table(p)) for p in policies]  # rows formed once (a soft policy forms them per call)
    occ = [world.occupancy(p) for p in policies]
    angles = []
    for k in range(len(policies) - 1):
        gain, dist = occupancy_step(world, policies[k], policies[k + 1], proxy, occ[k], occ[k + 1])
        angles.append(step_angle(gain, norm, dist))
    return angles


def stop_index(angles: Sequence[float], bound: float) -> int:
    """The early-stopping rule on a path whose ``k``-th step (from point ``k`` to ``k + 1``, 0-based) makes
    ``angles[k]`` with the projected proxy: the first ``k`` with ``angles[k] > pi/2 - bound``, or the last point
    (``len(angles)``) when no step breaks the bound."""
    limit = np.pi / 2 - bound
    for k, a in enumerate(angles):
        if a > limit:
            return k
    return len(angles)


class _Negated:
    """``-R`` as rows (for the worst return by backward induction)."""

    def __init__(self, reward: Rows):
        self.reward = reward
        if getattr(reward, "rows_at", None) is not None:
            self.rows_at = lambda t, local: -np.asarray(reward.rows_at(t, local), dtype=np.float64)

    def level(self, t: int) -> np.ndarray:
        return -np.asarray(self.reward.level(t), dtype=np.float64)


def worst_return(world, reward: Rows) -> float:
    """``min_pi J_R(pi)`` (exact: ``-max_pi J_{-R}(pi)``)."""
    return -world.optimal_return(_Negated(reward))


def normalized_drop_height(path_returns: Sequence[float], best: float, worst: float) -> float:
    """NDH = (max of the true return along the path - its value at the end) / (best - worst true return over all
    policies); 0 when every policy has the same true return."""
    v = np.asarray(path_returns, dtype=float)
    span = best - worst
    if v.size == 0 or not span > 1e-12 * max(1.0, abs(best), abs(worst)):
        return 0.0
    return float(max(v.max() - v[-1], 0.0) / span)
