"""Text-MDPs: a prompt, then tokens one at a time until EOS or the horizon.

The world is a finite-horizon deterministic tree. Every decision state is a prefix
``(x, y_1..y_t)`` with ``t < H`` and no EOS. States are enumerated *level by level*
(all depth-0 states, then depth 1, ...) and, inside a level, prompt-major in
lexicographic token order. Hence:

* each depth is a contiguous slice ``level_start[t]:level_start[t+1]``;
* the children of state number ``i`` of level ``t`` (one per non-EOS token ``j``) are
  states ``level_start[t+1] + i*b + j`` of level ``t+1``, with ``b`` the branching factor;
  so the children of a whole level are one contiguous block of the next level, laid out
  as an ``[n_t, b]`` matrix. Solvers exploit this: no gather is needed.

Sizes: ``b = V - 1`` with EOS (token 0 is EOS), ``b = V`` without; ``S = P * sum_{t<H} b^t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.errors import check

#: The largest enumerated world, in state-action entries ``S * A``.
MAX_ENUMERATED_ENTRIES = 50_000_000


def world_size(n_prompts: int, vocab_size: int, horizon: int, eos: bool = True) -> int:
    """Number of decision states ``S = P * sum_{t<H} b^t`` (no arrays are built)."""
    b = vocab_size - 1 if eos else vocab_size
    return int(n_prompts * sum(b**t for t in range(horizon)))


def validate_world(n_prompts: int, vocab_size: int, horizon: int, eos: bool = True) -> None:
    """Check a world's size before building it.

    Raises:
        ConfigError: naming the field and the allowed range.
    """
    check(isinstance(n_prompts, int | np.integer) and n_prompts >= 1, "n_prompts", n_prompts, "an integer >= 1")
    check(
        isinstance(vocab_size, int | np.integer) and vocab_size >= 2,
        "vocab_size",
        vocab_size,
        "an integer >= 2",
    )
    check(isinstance(horizon, int | np.integer) and horizon >= 1, "horizon", horizon, "an integer >= 1")
    entries = world_size(n_prompts, vocab_size, horizon, eos) * vocab_size
    check(
        entries <= MAX_ENUMERATED_ENTRIES,
        "horizon",
        horizon,
        f"a world with S*A <= {MAX_ENUMERATED_ENTRIES:.0e} state-action entries "
        f"(n_prompts={n_prompts}, vocab_size={vocab_size}, horizon={horizon} gives {entries:.3g}); "
        "shrink vocab_size or horizon",
    )


@dataclass(eq=False)
class TextMDP:
    """A synthetic text-generation MDP, fully enumerated.

    Args:
        n_prompts: number of prompts ``P`` (initial states); the initial distribution is uniform.
        vocab_size: number of tokens ``V`` = number of actions ``A``. With ``eos``, token 0 is EOS.
        horizon: maximum number of generated tokens ``H``; taking any token at depth ``H-1`` ends the episode.
        eos: whether token 0 ends the episode.

    Attributes:
        next_state: int64 array (S, A); ``-1`` marks an episode end.
        depth: int64 array (S,), number of tokens generated so far.
        prompt: int64 array (S,), the prompt of each state.
        last_token: int64 array (S,), the last generated token, ``-1`` at depth 0.
        prev_token: int64 array (S,), the token before it, ``-1`` if none.
        parent: int64 array (S,), the parent state, ``-1`` at depth 0 (``last_token`` is the action into s).
        level_start: int64 array (H+1,), ``level_start[t]`` is the first state of depth ``t``.
        initial_dist: float64 array (S,), uniform over the depth-0 states.
    """

    n_prompts: int
    vocab_size: int
    horizon: int
    eos: bool = True
    next_state: np.ndarray = field(init=False, repr=False)
    depth: np.ndarray = field(init=False, repr=False)
    prompt: np.ndarray = field(init=False, repr=False)
    last_token: np.ndarray = field(init=False, repr=False)
    prev_token: np.ndarray = field(init=False, repr=False)
    parent: np.ndarray = field(init=False, repr=False)
    level_start: np.ndarray = field(init=False, repr=False)
    initial_dist: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        validate_world(self.n_prompts, self.vocab_size, self.horizon, self.eos)
        self.n_prompts, self.vocab_size, self.horizon = (
            int(self.n_prompts),
            int(self.vocab_size),
            int(self.horizon),
        )
        P, V, H, b = self.n_prompts, self.vocab_size, self.horizon, self.branching
        sizes = np.array([P * b**t for t in range(H)], dtype=np.int64)
        self.level_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        S = int(self.level_start[-1])

        self.next_state = np.full((S, V), -1, dtype=np.int64)
        self.depth = np.repeat(np.arange(H, dtype=np.int64), sizes)
        self.prompt = np.empty(S, dtype=np.int64)
        self.last_token = np.full(S, -1, dtype=np.int64)
        self.prev_token = np.full(S, -1, dtype=np.int64)
        self.parent = np.full(S, -1, dtype=np.int64)
        self.prompt[:P] = np.arange(P)
        tokens = np.arange(self.first_token, V, dtype=np.int64)  # the b non-EOS tokens, in order
        for t in range(H - 1):
            lo, hi = self.level(t)
            n = hi - lo
            clo = int(self.level_start[t + 1])
            chi = clo + n * b
            self.next_state[lo:hi, self.first_token :] = clo + np.arange(n * b, dtype=np.int64).reshape(n, b)
            self.parent[clo:chi] = np.repeat(np.arange(lo, hi, dtype=np.int64), b)
            self.prompt[clo:chi] = self.prompt[self.parent[clo:chi]]
            self.last_token[clo:chi] = np.tile(tokens, n)
            self.prev_token[clo:chi] = self.last_token[self.parent[clo:chi]]
        self.initial_dist = np.zeros(S)
        self.initial_dist[:P] = 1.0 / P

    # ----------------------------------------------------------------- sizes
    @property
    def branching(self) -> int:
        """Children per decision state: ``V-1`` with EOS, ``V`` without."""
        return self.vocab_size - 1 if self.eos else self.vocab_size

    @property
    def first_token(self) -> int:
        """The first non-EOS token (1 with EOS, 0 without)."""
        return 1 if self.eos else 0

    @property
    def n_states(self) -> int:
        """Number of decision states ``S``."""
        return int(self.level_start[-1])

    @property
    def n_actions(self) -> int:
        """Number of actions ``A`` (= vocabulary size)."""
        return self.vocab_size

    def level(self, t: int) -> tuple[int, int]:
        """The half-open state range ``(lo, hi)`` of depth ``t``."""
        return int(self.level_start[t]), int(self.level_start[t + 1])

    def levels(self) -> list[tuple[int, int]]:
        """All depth slices, from depth 0 to ``H-1``."""
        return [self.level(t) for t in range(self.horizon)]

    # -------------------------------------------------------------- structure
    def terminal_mask(self) -> np.ndarray:
        """Bool array (S, A): True where taking ``a`` in ``s`` ends the episode."""
        return self.next_state < 0

    def end_length(self) -> np.ndarray:
        """Int array (S, A): response length (non-EOS tokens) of the sequence a terminal transition completes.

        EOS at depth ``t`` completes a response of length ``t``; a non-EOS token at depth ``H-1`` one of
        length ``H``. Non-terminal entries are ``-1``.
        """
        length = np.where(self.terminal_mask(), self.depth[:, None] + 1, -1)
        if self.eos:
            length[:, 0] = self.depth
        return length

    def sequence_count(self) -> int:
        """Number of complete sequences = number of terminal (s, a) pairs."""
        return int(self.terminal_mask().sum())

    def decode(self, s: int) -> tuple[int, tuple[int, ...]]:
        """The prompt and generated tokens of state ``s``.

        Returns:
            ``(prompt, tokens)``; tokens exclude EOS (a decision state never contains it).
        """
        if not 0 <= s < self.n_states:
            raise IndexError(f"state {s} outside [0, {self.n_states})")
        t = int(np.searchsorted(self.level_start, s, side="right") - 1)
        i = s - int(self.level_start[t])
        b = self.branching
        digits = []
        for _ in range(t):
            i, j = divmod(i, b)
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

    def format_sequence(self, s: int, a: int | None = None) -> str:
        """A readable string for prefix ``s`` followed by token ``a`` (``<eos>`` for EOS)."""
        p, toks = self.decode(s)
        words = [f"t{x}" for x in toks]
        if a is not None:
            words.append("<eos>" if (self.eos and a == 0) else f"t{a}")
        return f"x{p}: " + (" ".join(words) if words else "(empty)")

    def describe(self) -> str:
        """One line: sizes of the world."""
        return (
            f"TextMDP(P={self.n_prompts}, V={self.vocab_size}, H={self.horizon}, eos={self.eos}): "
            f"S={self.n_states:,} states, S*A={self.n_states * self.n_actions:,}, "
            f"{self.sequence_count():,} complete sequences"
        )
