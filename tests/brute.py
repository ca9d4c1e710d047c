"""Brute-force enumeration of complete sequences, independent of the level-order tricks of the world solvers.

Walks the tree one transition at a time through ``world.next_state`` with plain Python recursion: the reference
answer for small worlds. Rewards and policies are full ``(S, A)`` arrays (``world.table(x)`` of a reward object).
"""

from __future__ import annotations

import numpy as np

from sim.worlds import World


def sequences(world: World) -> list[tuple[int, list[tuple[int, int]]]]:
    """Every complete sequence as ``(prompt, [(s, a), ...])`` along its path."""
    out = []

    def walk(s: int, path: list[tuple[int, int]], prompt: int) -> None:
        for a in range(world.n_actions):
            step = [*path, (s, a)]
            nxt = int(world.next_state(np.array([s]), np.array([a]))[0])
            if nxt < 0:
                out.append((prompt, step))
            else:
                walk(nxt, step, prompt)

    for p in range(world.n_prompts):
        walk(p, [], p)
    return out


def seq_return(path: list[tuple[int, int]], r: np.ndarray) -> float:
    return float(sum(r[s, a] for s, a in path))


def seq_prob(path: list[tuple[int, int]], pi: np.ndarray) -> float:
    return float(np.prod([pi[s, a] for s, a in path]))


def initial(world: World, prompt: int) -> float:
    """The probability of a prompt (uniform)."""
    return 1.0 / world.n_prompts


def brute_optimal(world: World, r: np.ndarray) -> float:
    best = {}
    for p, path in sequences(world):
        best[p] = max(best.get(p, -np.inf), seq_return(path, r))
    return float(sum(initial(world, p) * v for p, v in best.items()))


def brute_return(world: World, pi: np.ndarray, r: np.ndarray) -> float:
    return float(sum(initial(world, p) * seq_prob(path, pi) * seq_return(path, r) for p, path in sequences(world)))


def brute_moments(world: World, pi: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """``(E[R], E[R^2])`` of the return under ``pi``, prompts uniform."""
    m1 = m2 = 0.0
    for p, path in sequences(world):
        w, R = initial(world, p) * seq_prob(path, pi), seq_return(path, r)
        m1, m2 = m1 + w * R, m2 + w * R * R
    return m1, m2


def brute_kl(world: World, pi: np.ndarray, ref: np.ndarray) -> float:
    total = 0.0
    for p, path in sequences(world):
        q = seq_prob(path, pi)
        if q > 0:
            total += initial(world, p) * q * np.log(q / seq_prob(path, ref))
    return float(total)


def brute_soft(world: World, r: np.ndarray, ref: np.ndarray, beta: float) -> dict[tuple, float]:
    """pi*(y|x) ∝ pi_ref(y|x) exp(R(x, y)/beta), keyed by the path's (s, a) tuple."""
    seqs = sequences(world)
    out = {}
    for p in range(world.n_prompts):
        mine = [path for q, path in seqs if q == p]
        logw = np.array([np.log(seq_prob(path, ref)) + seq_return(path, r) / beta for path in mine])
        w = np.exp(logw - logw.max())
        w /= w.sum()
        out.update({tuple(path): float(x) for path, x in zip(mine, w, strict=True)})
    return out
