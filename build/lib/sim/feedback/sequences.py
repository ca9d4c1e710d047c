"""Complete sequences of an enumerated world, and sampling them.

A complete sequence is identified by its episode-ending transition ``(s, a)``; sequences are numbered in the
canonical row-major order of :func:`sim.features.terminal_transitions`. Everything the teachers and reward
models need is a vector over these ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.features import terminal_transitions
from sim.mdp import TextMDP
from sim.oracle import sequence_form
from sim.solvers import occupancy


@dataclass(eq=False)
class Sequences:
    """The complete sequences of a world.

    Attributes:
        s, a: int (n,), the last transition of each sequence.
        prompt: int (n,), its prompt.
        length: int (n,), its response length (non-EOS tokens).
    """

    mdp: TextMDP
    s: np.ndarray
    a: np.ndarray
    prompt: np.ndarray
    length: np.ndarray

    @classmethod
    def of(cls, mdp: TextMDP) -> Sequences:
        s, a = terminal_transitions(mdp)
        return cls(mdp=mdp, s=s, a=a, prompt=mdp.prompt[s], length=mdp.end_length()[s, a])

    @property
    def n(self) -> int:
        return int(self.s.size)

    def returns(self, r: np.ndarray, gamma: float = 1.0) -> np.ndarray:
        """(Myopic) returns (n,) of reward table ``r``: ``sum_t gamma^(T-1-t) r_t``."""
        return sequence_form(self.mdp, r, gamma)[self.s, self.a]

    def probs(self, policy: np.ndarray) -> np.ndarray:
        """Joint probabilities (n,) of prompt and sequence under ``policy``: ``d(s) pi(a|s)``."""
        return occupancy(self.mdp, policy)[self.s] * policy[self.s, self.a]

    def table(self, values: np.ndarray) -> np.ndarray:
        """A sequence-level reward table (S, A): ``values[i]`` on sequence ``i``'s last transition."""
        r = np.zeros((self.mdp.n_states, self.mdp.n_actions))
        r[self.s, self.a] = values
        return r

    def paths(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every sequence's path: ``(states, actions, mask)``, each (n, H); ``mask`` marks real steps."""
        mdp, H = self.mdp, self.mdp.horizon
        states = np.zeros((self.n, H), dtype=np.int64)
        actions = np.zeros((self.n, H), dtype=np.int64)
        mask = np.zeros((self.n, H), dtype=bool)
        cur, act = self.s.copy(), self.a.copy()
        rows = np.arange(self.n)
        for _ in range(H):
            live = cur >= 0
            d = mdp.depth[cur[live]]
            states[rows[live], d] = cur[live]
            actions[rows[live], d] = act[live]
            mask[rows[live], d] = True
            act = np.where(live, mdp.last_token[np.maximum(cur, 0)], 0)
            cur = np.where(live, mdp.parent[np.maximum(cur, 0)], -1)
        return states, actions, mask

    def policy(self, joint: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """The policy table (S, A) whose sequence distribution is ``joint`` (n,) (prompt marginals kept).

        ``pi(a|s)`` is the mass of sequences through ``(s, a)`` over the mass through ``s``; states with no mass
        take their row from ``fallback``.
        """
        mdp, f = self.mdp, self.mdp.first_token
        edge = np.zeros((mdp.n_states, mdp.n_actions))  # mass through each transition
        edge[self.s, self.a] = joint
        through = np.zeros(mdp.n_states)
        for t in reversed(range(mdp.horizon)):
            lo, hi = mdp.level(t)
            if t < mdp.horizon - 1:
                clo, chi = mdp.level(t + 1)
                edge[lo:hi, f:] += through[clo:chi].reshape(hi - lo, mdp.branching)
            through[lo:hi] = edge[lo:hi].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            pi = edge / through[:, None]
        return np.where(through[:, None] > 0, pi, fallback)

    def format(self, i: int) -> str:
        return self.mdp.format_sequence(int(self.s[i]), int(self.a[i]))


class SequenceSampler:
    """Draw sequences of given prompts from a distribution over complete sequences.

    Args:
        seqs: the sequences.
        probs: (n,) non-negative weights; normalised within each prompt.
    """

    def __init__(self, seqs: Sequences, probs: np.ndarray):
        P = seqs.mdp.n_prompts
        self.order = np.argsort(seqs.prompt, kind="stable")
        w = probs[self.order]
        sorted_prompt = seqs.prompt[self.order]
        self.start = np.searchsorted(sorted_prompt, np.arange(P + 1))
        mass = np.add.reduceat(w, self.start[:-1]) if w.size else np.zeros(P)
        if np.any(mass <= 0):
            raise ValueError("every prompt needs positive probability mass")
        cond = w / mass[sorted_prompt]
        cum = np.cumsum(cond)
        block_base = np.concatenate([[0.0], cum[self.start[1:-1] - 1]])
        # within prompt p's block the cumulative runs from 0 to 1 (exactly 1 at its last entry)
        self.cum = cum - block_base[sorted_prompt]
        self.cum[self.start[1:] - 1] = 1.0
        self.prompt_sorted = sorted_prompt

    def sample(self, prompts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One sequence id per entry of ``prompts`` (int array)."""
        prompts = np.asarray(prompts, dtype=np.int64)
        u = rng.random(prompts.size)
        lo, hi = self.start[prompts], self.start[prompts + 1]
        # search inside each block: shift u into a global key that is monotone across blocks
        key = prompts + u
        glob = self.cum + self.prompt_sorted
        pos = np.searchsorted(glob, key, side="right")
        pos = np.clip(pos, lo, hi - 1)
        return self.order[pos]
