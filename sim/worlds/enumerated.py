"""The enumerated world: every prefix is a state of a finite-horizon tree; rewards and policies are dense ``[S, A]``.

Decision states are prefixes ``(x, y_1..y_t)`` with ``t < H`` and no EOS, numbered *level by level* (all depth-0
states, then depth 1, ...) and, inside a level, prompt-major in lexicographic token order. Hence:

* each depth is a contiguous slice ``level_start[t]:level_start[t+1]``;
* the children of state number ``i`` of level ``t`` (one per non-EOS token ``j``) are states
  ``level_start[t+1] + i*b + j`` of level ``t+1``, with ``b`` the branching factor, so the children of a whole level
  are one contiguous ``[n_t, b]`` block of the next level: the solvers reshape, they never gather.

Sizes: ``b = V - 1`` with EOS (token 0 is EOS), ``b = V`` without; ``S = P * sum_{t<H} b^t``. Every quantity is
exact for any reward and reference. Complete sequences are numbered by their episode-ending transition ``(s, a)``
in row-major order (:meth:`EnumeratedWorld.terminal_transitions`).
"""

from __future__ import annotations

import math

import numpy as np

from sim.errors import ConfigError, check
from sim.worlds.base import (
    BLOCK_ENTRIES,
    Rows,
    Sequences,
    SequenceSource,
    Table,
    World,
    block_rows,
    blockable,
    rows_of,
)

#: The largest enumerated world, in state-action entries ``S * A``.
MAX_ENUMERATED_ENTRIES = 50_000_000
#: The terminal transitions of every complete sequence are kept once computed up to this many sequences.
TERMINAL_CACHE = 2_000_000


def enumerated_size(n_prompts: int, vocab_size: int, horizon: int, eos: bool = True) -> float:
    """``S = P * sum_{t<H} b^t`` in closed form (a float: ``inf`` when it overflows; no loop over ``H``)."""
    b = vocab_size - 1 if eos else vocab_size
    if b <= 1:
        return float(n_prompts * (horizon if b == 1 else 1))
    if horizon * math.log10(b) > 300:
        return math.inf
    return n_prompts * (float(b) ** horizon - 1) / (b - 1)


def sequence_count(n_prompts: int, vocab_size: int, horizon: int, eos: bool = True) -> float:
    """The number of complete sequences in closed form: an EOS from every state above the last level, and every
    token from the last level."""
    b = vocab_size - 1 if eos else vocab_size
    last = n_prompts * float(b) ** (horizon - 1) if (horizon - 1) * np.log10(max(b, 1)) < 300 else np.inf
    above = enumerated_size(n_prompts, vocab_size, horizon - 1, eos) if horizon > 1 else 0.0
    return (above if eos else 0.0) + last * vocab_size


def validate_world(n_prompts: int, vocab_size: int, horizon: int, eos: bool = True, prefix: str = "env.") -> None:
    """Check an enumerated world's size before building it (fast, for any size).

    Raises:
        ConfigError: naming the key and the allowed range.
    """
    check(
        isinstance(n_prompts, int | np.integer) and n_prompts >= 1, f"{prefix}n_prompts", n_prompts, "an integer >= 1"
    )
    check(
        isinstance(vocab_size, int | np.integer) and vocab_size >= 2,
        f"{prefix}vocab_size",
        vocab_size,
        "an integer >= 2",
    )
    check(isinstance(horizon, int | np.integer) and horizon >= 1, f"{prefix}horizon", horizon, "an integer >= 1")
    entries = enumerated_size(n_prompts, vocab_size, horizon, eos) * vocab_size
    if entries > MAX_ENUMERATED_ENTRIES:
        # blame the vocabulary when two levels of it are too many with one prompt; else the horizon when one
        # prompt's tree is too large; else the number of prompts
        if enumerated_size(1, vocab_size, min(horizon, 2), eos) * vocab_size > MAX_ENUMERATED_ENTRIES:
            key, value = "vocab_size", vocab_size
        elif enumerated_size(1, vocab_size, horizon, eos) * vocab_size > MAX_ENUMERATED_ENTRIES:
            key, value = "horizon", horizon
        else:
            key, value = "n_prompts", n_prompts
        raise ConfigError(
            f"{prefix}{key}",
            value,
            f"a world with S*A <= {MAX_ENUMERATED_ENTRIES:.0e} state-action entries (n_prompts={n_prompts}, "
            f"vocab_size={vocab_size}, horizon={horizon} gives {entries:.3g}); shrink n_prompts, vocab_size or "
            "horizon, or set env.compressed=true for a Markov world that is never enumerated",
        )


class EnumeratedWorld(World):
    """A synthetic text-generation MDP, fully enumerated.

    Args:
        n_prompts: ``P`` prompts (initial states), uniform.
        vocab_size: ``V`` tokens = actions. With ``eos``, token 0 is EOS.
        horizon: the maximum number of generated tokens ``H``.
        eos: whether token 0 ends the episode.

    Attributes:
        next_state: int64 (S, A); ``-1`` marks an episode end.
        prompt, depth: int64 (S,).
        last_token: int64 (S,): the last generated token, ``-1`` at depth 0.
        prev_token: int64 (S,): the token before it, ``-1`` if none.
        parent: int64 (S,): the parent state, ``-1`` at depth 0 (``last_token`` is the action into s).
        initial_dist: float64 (S,), uniform over the depth-0 states.
    """

    kind = "enumerated"
    enumerable = True

    def __init__(self, n_prompts: int, vocab_size: int, horizon: int, eos: bool = True):
        validate_world(n_prompts, vocab_size, horizon, eos, prefix="")
        P, V, H = int(n_prompts), int(vocab_size), int(horizon)
        b = V - 1 if eos else V
        super().__init__(P, V, H, eos, np.array([P * b**t for t in range(H)], dtype=np.int64))
        S = self.n_states
        self.depth = np.repeat(np.arange(H, dtype=np.int64), self.sizes)
        self.prompt = np.empty(S, dtype=np.int64)
        self.last_token = np.full(S, -1, dtype=np.int64)
        self.prev_token = np.full(S, -1, dtype=np.int64)
        self.parent = np.full(S, -1, dtype=np.int64)
        self.prompt[:P] = np.arange(P)
        tokens = np.arange(self.first_token, V, dtype=np.int64)  # the b non-EOS tokens, in order
        for t in range(H - 1):
            lo, hi = self.level(t)
            n = hi - lo
            clo, chi = self.level(t + 1)
            self.parent[clo:chi] = np.repeat(np.arange(lo, hi, dtype=np.int64), b)
            self.prompt[clo:chi] = self.prompt[self.parent[clo:chi]]
            self.last_token[clo:chi] = np.tile(tokens, n)
            self.prev_token[clo:chi] = self.last_token[self.parent[clo:chi]]
        self.initial_dist = np.zeros(S)
        self.initial_dist[:P] = 1.0 / P
        self._terminal: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def check_config(cls, cfg, agent_templates: tuple[str, ...] = ()) -> None:
        """An enumerated world carries every setting; only its size is limited (``MAX_ENUMERATED_ENTRIES``)."""
        e = cfg.env
        validate_world(e.n_prompts, e.vocab_size, e.horizon, e.eos)

    @property
    def n_prefix_states(self) -> int:
        return self.n_states

    def token_table(self) -> np.ndarray:
        H, V = self.horizon, self.vocab_size
        table = np.full((self.n_states, H + 2), V, dtype=np.int64)
        table[:, 0] = self.prompt
        table[:, H + 1] = self.depth
        for t in range(1, H):
            clo, chi = self.level(t)
            parents = np.repeat(np.arange(*self.level(t - 1)), self.branching)
            table[clo:chi, 1:t] = table[parents, 1:t]
            table[clo:chi, t] = self.last_token[clo:chi]
        return table

    # ------------------------------------------------------------- structure
    def child(self, t, local, a):
        return local * self.branching + (a - self.first_token)

    def next_state(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """As :meth:`World.next_state`, in closed form: a level-``t`` state ``s`` (global) has its children at
        ``level_start[t + 1] + (s - level_start[t]) * b + a - f = s * b + P + a - f``, since
        ``level_start[t + 1] - b * level_start[t] = P`` at every depth (no gathers: the batched env's hot path)."""
        states, actions = np.asarray(states), np.asarray(actions)
        end = states >= self.level_start[self.horizon - 1]
        if self.eos:
            end |= actions == 0
        return np.where(end, -1, states * self.branching + (actions + (self.n_prompts - self.first_token)))

    def continuation(self, t: int, values_next: np.ndarray) -> np.ndarray:
        return values_next.reshape(int(self.sizes[t]), self.branching)

    def push(self, t: int, mass: np.ndarray) -> np.ndarray:
        return mass.reshape(-1)

    def push_into(self, t: int, lo: int, hi: int, mass: np.ndarray, out: np.ndarray) -> None:
        b = self.branching
        out[lo * b : hi * b] += mass.reshape(-1)  # the children of a block of states are one block

    def step_offsets(self) -> tuple[int, np.ndarray, int] | None:
        """:meth:`next_state` in closed form: ``s * b + offset[a]``, ``offset[a] = P + a - f`` (``-2^62`` for EOS).
        A state of the last level has every child at or past ``S`` (``level_start[t + 1] = b level_start[t] + P``), so
        one unsigned comparison with ``S`` finds both kinds of episode end (tested against :meth:`next_state` for
        every state and action)."""
        if self.branching != self.n_actions - self.first_token:
            return None
        offset = self.n_prompts + np.arange(self.n_actions, dtype=np.int64) - self.first_token
        if self.eos:
            offset[0] = -(2**62)
        return self.branching, offset, self.n_states

    def occupancy_potentials(self, reward: Rows, rtol: float = 1e-13) -> list[np.ndarray]:
        """As :meth:`World.occupancy_potentials`, exactly: on the tree ``C C^T`` is tridiagonal over the tree (diagonal
        ``A + [t >= 1]``, ``-1`` between a state and each child), so one elimination sweep up the tree and one
        back-substitution down solve it, a level of rows at a time (``sim.goodhart``'s docstring has the recursion;
        ``rtol`` is unused)."""
        H, f, A, b = self.horizon, self.first_token, self.n_actions, self.branching
        D = np.empty(H)  # the pivots of the elimination up the tree
        beta_next = 0.0
        for t in reversed(range(H)):
            D[t] = A + (t >= 1) - (b * beta_next if t < H - 1 else 0.0)
            beta_next = (t >= 1) / D[t]
        gamma: list[np.ndarray] = [np.empty(0)] * H
        for t in reversed(
            range(H)
        ):  # up: gamma(s) = (sum_a R - sum_{a -> child} R / D_{t+1} + sum_children gamma) / D_t
            g = np.empty(int(self.sizes[t]))
            below = self.continuation(t, gamma[t + 1]).sum(axis=1) if t < H - 1 else None
            for lo, hi, whole in self.blocks(t, reward):
                r = np.asarray(block_rows(reward, t, lo, hi, whole), dtype=np.float64)
                acc = r.sum(axis=1)
                if below is not None:
                    acc -= r[:, f:].sum(axis=1) / D[t + 1]
                    acc += below[lo:hi]
                g[lo:hi] = acc / D[t]
            gamma[t] = g
        lam = gamma  # down: lam(s) = gamma(s) - R(parent, a_in) / D_t + beta_t lam(parent), overwriting gamma
        for t in range(1, H):
            into = np.zeros(int(self.sizes[t]))
            for lo, hi, whole in self.blocks(t - 1, reward):
                r = np.asarray(block_rows(reward, t - 1, lo, hi, whole), dtype=np.float64)
                self.push_into(t - 1, lo, hi, np.ascontiguousarray(r[:, f:]), into)
            parents = self.push(t - 1, np.broadcast_to(lam[t - 1][:, None], (lam[t - 1].size, b)))
            lam[t] = lam[t] + (parents - into) / D[t]  # beta_t = 1 / D_t for t >= 1
        return lam

    @property
    def next_table(self) -> np.ndarray:
        """Int64 (S, A): the state each transition leads to, ``-1`` at an episode end (``arrays.npz``'s
        ``next_state``). Formed when asked (S * A entries); the world itself computes children arithmetically."""
        b, f = self.branching, self.first_token
        out = np.full((self.n_states, self.vocab_size), -1, dtype=np.int64)
        for t in range(self.horizon - 1):
            lo, hi = self.level(t)
            n = hi - lo
            out[lo:hi, f:] = self.level_start[t + 1] + np.arange(n * b, dtype=np.int64).reshape(n, b)
        return out

    def terminal_mask(self) -> np.ndarray:
        """Bool (S, A): True where taking ``a`` in ``s`` ends the episode (EOS anywhere, any token at depth H-1)."""
        mask = np.zeros((self.n_states, self.vocab_size), dtype=bool)
        mask[self.level_start[self.horizon - 1] :] = True
        if self.eos:
            mask[:, 0] = True
        return mask

    @property
    def n_sequences(self) -> int:
        """The number of complete sequences: an EOS from every state before the last level, every token there."""
        last = int(self.level_start[self.horizon - 1])
        return (last if self.eos else 0) + int(self.sizes[-1]) * self.vocab_size

    def transitions_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The episode-ending transition ``(s, a)`` of each complete sequence index (closed form)."""
        ids = np.asarray(ids, dtype=np.int64)
        last = int(self.level_start[self.horizon - 1])
        head = last if self.eos else 0  # sequences ending with EOS before the last level: id = s
        tail = np.maximum(ids - head, 0)
        early = ids < head
        return np.where(early, ids, last + tail // self.vocab_size), np.where(early, 0, tail % self.vocab_size)

    def ids_of(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The index of the complete sequence that ends with each transition ``(s, a)`` (episode-ending ones)."""
        states, actions = np.asarray(states, dtype=np.int64), np.asarray(actions, dtype=np.int64)
        last = int(self.level_start[self.horizon - 1])
        head = last if self.eos else 0
        return np.where(states < last, states, head + (states - last) * self.vocab_size + actions)

    def end_length_table(self) -> np.ndarray:
        """Int (S, A): the response length a terminal transition completes, ``-1`` elsewhere."""
        return self.end_length(self.depth[:, None], np.arange(self.vocab_size)[None, :])

    def terminal_transitions(self) -> tuple[np.ndarray, np.ndarray]:
        """The episode-ending transitions ``(s, a)`` in row-major order: one per complete sequence, in the canonical
        order of complete sequences everywhere in rmsim."""
        if self._terminal is not None:
            return self._terminal
        out = self.transitions_of(np.arange(self.n_sequences, dtype=np.int64))
        if self.n_sequences <= TERMINAL_CACHE:
            self._terminal = out
        return out

    def decode(self, s: int) -> tuple[int, tuple[int, ...]]:
        """The prompt and generated tokens of state ``s`` (a decision state never contains EOS)."""
        if not 0 <= s < self.n_states:
            raise IndexError(f"state {s} outside [0, {self.n_states})")
        t = int(np.searchsorted(self.level_start, s, side="right") - 1)
        i = s - int(self.level_start[t])
        digits = []
        for _ in range(t):
            i, j = divmod(i, self.branching)
            digits.append(j + self.first_token)
        return i, tuple(reversed(digits))

    def encode(self, prompt: int, tokens: tuple[int, ...] | list[int]) -> int:
        """The state index of prefix ``(prompt, tokens)``; inverse of :meth:`decode`."""
        if not 0 <= prompt < self.n_prompts:
            raise IndexError(f"prompt {prompt} outside [0, {self.n_prompts})")
        if len(tokens) >= self.horizon:
            raise IndexError(f"a decision state has fewer than horizon={self.horizon} tokens")
        i = prompt
        for tok in tokens:
            if not self.first_token <= tok < self.vocab_size:
                raise IndexError(f"token {tok} is not a non-EOS token")
            i = i * self.branching + (tok - self.first_token)
        return int(self.level_start[len(tokens)]) + i

    def format(self, state: int, action: int | None = None) -> str:
        """A readable string for prefix ``state`` followed by token ``action`` (``<eos>`` for EOS)."""
        p, toks = self.decode(state)
        words = [f"t{x}" for x in toks]
        if action is not None:
            words.append("<eos>" if (self.eos and action == 0) else f"t{action}")
        return f"x{p}: " + (" ".join(words) if words else "(empty)")

    def describe(self) -> str:
        n_seq = self.n_sequences
        return (
            f"TextMDP(P={self.n_prompts}, V={self.vocab_size}, H={self.horizon}, eos={self.eos}): "
            f"S={self.n_states:,} states, S*A={self.n_states * self.n_actions:,}, {n_seq:,} complete sequences"
        )

    # ------------------------------------------------------------- sequences
    def sequences_of(self, ids: np.ndarray) -> Sequences:
        """The complete sequences with these indices (tokens recovered by walking up the tree)."""
        ids = np.asarray(ids, dtype=np.int64)
        s, a = self.transitions_of(ids)
        n, H = ids.size, self.horizon
        depth = self.depth[s]
        tokens = np.full((n, H), -1, dtype=np.int64)
        tokens[np.arange(n), depth] = a
        cur = s.copy()
        for _ in range(H - 1):
            live = self.parent[cur] >= 0
            if not live.any():
                break
            rows = np.flatnonzero(live)
            tokens[rows, self.depth[cur[rows]] - 1] = self.last_token[cur[rows]]
            cur = np.where(live, self.parent[cur], cur)
        return Sequences(prompt=self.prompt[s], tokens=tokens, length=depth + 1, ids=ids)

    def all_sequences(self) -> Sequences:
        return self.sequences_of(np.arange(self.terminal_transitions()[0].size))

    def sequence_ids(self, seqs: Sequences) -> np.ndarray:
        """The index of each sequence (its own, or found from its last transition)."""
        if seqs.ids is not None:
            return seqs.ids
        states, actions, mask = self.paths(seqs)
        last = seqs.length - 1
        return self.ids_of(states[np.arange(seqs.n), last], actions[np.arange(seqs.n), last])

    def sequence_probs(self, policy: Rows) -> np.ndarray:
        """Joint probabilities (n_seq,) of prompt and complete sequence under ``policy``: ``d(s) pi(a|s)``."""
        s, a = self.terminal_transitions()
        d = np.concatenate(self.occupancy(policy))
        return d[s] * self.table(policy)[s, a]

    def likely_sequences(self, policy: Rows, prompt: int, k: int = 3) -> tuple[Sequences, np.ndarray]:
        """The ``k`` most likely complete sequences of ``policy`` for ``prompt``, exactly, with their probabilities
        given the prompt."""
        if hasattr(policy, "top"):
            return policy.top(prompt, k)
        H, V, b, f = self.horizon, self.vocab_size, self.branching, self.first_token
        ends = slice(0, 1) if self.eos else slice(0, 0)  # the tokens that end a sequence before the last level
        best = (np.empty(0), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))  # (prob, s, a), k at most
        d = np.ones(1)  # the probability of reaching each of the prompt's level-t states (a contiguous range)
        first = prompt  # the local index of the first of them
        step = max(1, BLOCK_ENTRIES // V)
        for t in range(H):
            full = None if blockable(policy) else policy.level(t)
            nxt = np.empty(d.size * b) if t + 1 < H else None
            cols = slice(None) if t == H - 1 else ends
            for lo in range(0, d.size, step):
                hi = min(d.size, lo + step)
                local = np.arange(first + lo, first + hi)
                rows = rows_of(policy, t, local) if full is None else full[local]
                if nxt is not None:
                    nxt[lo * b : hi * b] = (d[lo:hi, None] * rows[:, f:]).reshape(-1)
                p_end = (d[lo:hi, None] * rows[:, cols]).ravel()
                if p_end.size == 0:
                    continue
                n_cols = p_end.size // (hi - lo)
                keep = np.flatnonzero(p_end >= np.partition(p_end, -min(k, p_end.size))[-min(k, p_end.size)])
                s_new = self.level_start[t] + local[keep // n_cols]
                a_new = keep % n_cols + (0 if t == H - 1 else ends.start)
                found = (p_end[keep], s_new, a_new)
                prob, s_all, a_all = (np.concatenate([x, y]) for x, y in zip(best, found, strict=True))
                order = np.lexsort((a_all, s_all, prob))[::-1][:k]  # most likely first; ties: the later sequence
                best = (prob[order], s_all[order], a_all[order])
            if nxt is not None:
                d, first = nxt, first * b
        prob, s_best, a_best = best
        pos = prob > 0
        return self.sequences_of(self.ids_of(s_best[pos], a_best[pos])), prob[pos]

    def sequence_reward(self, seqs: Sequences, values: np.ndarray) -> Table:
        s_all, a_all = self.terminal_transitions()
        ids = self.sequence_ids(seqs)
        r = np.zeros((self.n_states, self.n_actions))
        r[s_all[ids], a_all[ids]] = values
        return Table(self, r)

    def sequence_form(self, reward: Rows, gamma: float = 1.0) -> np.ndarray:
        """(S, A): the (discounted) return ``R(x, y)`` of each complete sequence on its last transition, 0 elsewhere.

        A path ``r_0..r_{T-1}`` gets ``sum_t gamma^(T-1-t) r_t`` (the last token weighs 1); ``gamma = 1`` keeps
        every sequence's return exactly.
        """
        f = self.first_token
        r = self.table(reward)
        prefix = np.zeros(self.n_states)  # (discounted) reward accumulated before reaching each state
        for t in range(self.horizon - 1):
            lo, hi = self.level(t)
            clo, chi = self.level(t + 1)
            prefix[clo:chi] = (gamma * prefix[lo:hi, None] + r[lo:hi, f:]).reshape(-1)
        return np.where(self.terminal_mask(), gamma * prefix[:, None] + r, 0.0)

    def chunk_table(self, reward: Rows, every: int) -> Table:
        """The reward paid every ``every`` tokens: on a delivering transition (an episode end, or
        ``(t + 1) % every == 0``) the reward accumulated since the last delivery plus ``r(s, a)``; 0 elsewhere."""
        f = self.first_token
        r = self.table(reward)
        deliver = self.delivery_mask(every)
        pending = np.zeros(self.n_states)  # reward earned but not yet paid when reaching each state
        for t in range(self.horizon - 1):
            lo, hi = self.level(t)
            clo, chi = self.level(t + 1)
            carried = pending[lo:hi, None] + r[lo:hi, f:]
            pending[clo:chi] = np.where(deliver[lo:hi, f:], 0.0, carried).reshape(-1)
        return Table(self, np.where(deliver, pending[:, None] + r, 0.0))

    def delivery_mask(self, every: int) -> np.ndarray:
        """Bool (S, A): transitions that pay when reward is delivered every ``every`` tokens."""
        return self.terminal_mask() | ((self.depth[:, None] + 1) % every == 0)

    def weighted_policy(self, seqs: Sequences, weights: np.ndarray) -> Table:
        """The policy table whose sequence distribution is ``weights`` over ``seqs`` (prompt marginals kept).

        ``pi(a|s)`` is the mass of sequences through ``(s, a)`` over the mass through ``s``; states with no mass take
        their row from pi_ref.
        """
        f = self.first_token
        s_all, a_all = self.terminal_transitions()
        ids = self.sequence_ids(seqs)
        edge = np.zeros((self.n_states, self.n_actions))  # mass through each transition
        np.add.at(edge, (s_all[ids], a_all[ids]), weights)
        through = np.zeros(self.n_states)
        for t in reversed(range(self.horizon)):
            lo, hi = self.level(t)
            if t < self.horizon - 1:
                clo, chi = self.level(t + 1)
                edge[lo:hi, f:] += through[clo:chi].reshape(hi - lo, self.branching)
            through[lo:hi] = edge[lo:hi].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            pi = edge / through[:, None]
        return Table(self, np.where(through[:, None] > 0, pi, self.table(self.ref)))

    def sequence_source(self, policy: Rows, mix: tuple[float, Rows] | None = None) -> ExactSource:
        probs = self.sequence_probs(policy)
        if mix is not None:
            probs = (1 - mix[0]) * probs + mix[0] * self.sequence_probs(mix[1])
        return ExactSource(self, probs)

    def uniform_source(self) -> ExactSource:
        s, _ = self.terminal_transitions()
        prompt = self.prompt[s]
        per_prompt = np.bincount(prompt, minlength=self.n_prompts)
        return ExactSource(self, self.initial_dist[prompt] / per_prompt[prompt])


class ExactSource(SequenceSource):
    """Sequences drawn from an exact distribution over all complete sequences (one uniform draw each).

    Args:
        world: the enumerated world.
        probs: (n_seq,) non-negative weights; normalised within each prompt.
    """

    def __init__(self, world: EnumeratedWorld, probs: np.ndarray):
        self.world, self.probs = world, probs
        s, _ = world.terminal_transitions()
        prompt = world.prompt[s]
        P = world.n_prompts
        self.prompt = prompt
        self.order = np.argsort(prompt, kind="stable")
        w = probs[self.order]
        sorted_prompt = prompt[self.order]
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

    def draw_ids(self, prompts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One sequence index per entry of ``prompts``."""
        prompts = np.asarray(prompts, dtype=np.int64)
        u = rng.random(prompts.size)
        lo, hi = self.start[prompts], self.start[prompts + 1]
        # search inside each block: shift u into a global key that is monotone across blocks
        pos = np.searchsorted(self.cum + self.prompt_sorted, prompts + u, side="right")
        return self.order[np.clip(pos, lo, hi - 1)]

    def draw(self, prompts: np.ndarray, rng: np.random.Generator) -> Sequences:
        return self.world.sequences_of(self.draw_ids(prompts, rng))

    def moments(self, reward: Rows) -> tuple[float, float]:
        """Mean and standard deviation of ``reward``'s return under this distribution (prompts uniform)."""
        return standardisation(self.world.sequence_form(reward)[self.world.terminal_transitions()], self.probs)

    def coverage(self, prompts: np.ndarray, rng: np.random.Generator) -> tuple[Sequences, np.ndarray]:
        """Every complete sequence, weighted by its exact probability."""
        return self.world.all_sequences(), self.probs

    def myopic_range(self, teacher) -> tuple[float, float]:
        """The range of the annotators' myopic returns over every complete sequence."""
        _, myopic = teacher.perceive(self.world.all_sequences())
        return float(myopic.min()), float(myopic.max())


def standardisation(returns: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of ``returns`` under the weights ``probs`` (the sd is 1 if it would be 0)."""
    w = probs / probs.sum()
    center = float(w @ returns)
    scale = float(np.sqrt(max(w @ (returns - center) ** 2, 0.0)))
    return center, (scale if scale > 1e-12 else 1.0)
