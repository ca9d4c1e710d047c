"""Brute-force enumeration of complete sequences, independent of the level-order tricks of sim.solvers.

Walks the tree through ``next_state`` with plain Python recursion: the reference answer for small worlds.
"""

from __future__ import annotations

import numpy as np

from sim.mdp import TextMDP


def sequences(mdp: TextMDP) -> list[tuple[int, list[tuple[int, int]]]]:
    """Every complete sequence as ``(prompt, [(s, a), ...])`` along its path."""
    out = []

    def walk(s: int, path: list[tuple[int, int]], prompt: int) -> None:
        for a in range(mdp.n_actions):
            step = [*path, (s, a)]
            nxt = int(mdp.next_state[s, a])
            if nxt < 0:
                out.append((prompt, step))
            else:
                walk(nxt, step, prompt)

    for p in range(mdp.n_prompts):
        walk(p, [], p)
    return out


def seq_return(path: list[tuple[int, int]], r: np.ndarray) -> float:
    return float(sum(r[s, a] for s, a in path))


def seq_prob(path: list[tuple[int, int]], pi: np.ndarray) -> float:
    return float(np.prod([pi[s, a] for s, a in path]))


def brute_optimal(mdp: TextMDP, r: np.ndarray) -> float:
    best = {}
    for p, path in sequences(mdp):
        best[p] = max(best.get(p, -np.inf), seq_return(path, r))
    return float(sum(mdp.initial_dist[p] * v for p, v in best.items()))


def brute_return(mdp: TextMDP, pi: np.ndarray, r: np.ndarray) -> float:
    return float(sum(mdp.initial_dist[p] * seq_prob(path, pi) * seq_return(path, r) for p, path in sequences(mdp)))


def brute_kl(mdp: TextMDP, pi: np.ndarray, ref: np.ndarray) -> float:
    total = 0.0
    for p, path in sequences(mdp):
        q = seq_prob(path, pi)
        if q > 0:
            total += mdp.initial_dist[p] * q * np.log(q / seq_prob(path, ref))
    return float(total)


def brute_soft(mdp: TextMDP, r: np.ndarray, ref: np.ndarray, beta: float) -> dict[tuple, float]:
    """pi*(y|x) ∝ pi_ref(y|x) exp(R(x, y)/beta), keyed by the path's (s, a) tuple."""
    seqs = sequences(mdp)
    out = {}
    for p in range(mdp.n_prompts):
        mine = [path for q, path in seqs if q == p]
        logw = np.array([np.log(seq_prob(path, ref)) + seq_return(path, r) / beta for path in mine])
        w = np.exp(logw - logw.max())
        w /= w.sum()
        out.update({tuple(path): float(x) for path, x in zip(mine, w, strict=True)})
    return out
