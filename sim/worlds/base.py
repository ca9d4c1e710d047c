"""The world interface: a text-MDP as ``H`` levels of decision states, and everything exact written once over them.

A *world* is a prompt, then tokens until EOS or the horizon ``H``. Its decision states are grouped by depth ``t``
into *levels*; level ``t`` holds ``n_t`` states, numbered ``level_start[t] .. level_start[t+1]`` in one global index
space of ``S`` states. Level 0 is the ``P`` prompts, in order. Taking a non-EOS token ``a`` at depth ``t < H-1``
leads to one state of level ``t+1`` (:meth:`World.child`); EOS, or any token at depth ``H-1``, ends the episode.

Two implementations (``sim.worlds.enumerated`` and ``sim.worlds.markov``) differ only in how children are laid out:

* the **enumerated** tree: every prefix is a state, ``n_t = P b^t``; the children of a level form one contiguous
  block of the next, so :meth:`continuation` and :meth:`push` are reshapes;
* the **Markov** world: a state is ``(prompt, position, last token)`` (or ``(prompt, position)`` when nothing
  depends on the last token), so many prefixes share one state and children merge.

Above that, everything is written once here, level by level (``r_t``, ``pi_t`` are the ``(n_t, A)`` rows of a
reward or policy at level ``t``; ``V(end) = 0``):

* optimal values ``V_t(s) = max_a r_t(s, a) + V_{t+1}(child)`` and the greedy policy;
* the KL-regularised optimum ``V_t(s) = beta log sum_a pi_ref(a|s) exp(Q_t(s, a) / beta)``,
  ``pi*(a|s) = pi_ref(a|s) exp((Q_t(s, a) - V_t(s)) / beta)``;
* exact evaluation of a policy under several rewards by the forward occupancy ``d_{t+1} = push(d_t pi_t)``:
  ``J_r(pi) = sum_t d_t . sum_a pi_t r_t`` and ``KL(pi || pi_ref) = sum_t d_t . KL(pi_t || ref_t)``;
* sampling complete sequences and rolling out episodes (with the reward channel), and the path of any sequence.

Rewards and policies are anything with ``level(t) -> (n_t, A)`` rows (a :class:`Table` over all ``S`` states, or
rows computed on demand); rewards also give ``at(states, actions)`` and support ``+`` and scalar ``*``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from sim.errors import ConfigError, check


class Rows(Protocol):
    """A reward or a policy: ``(n_t, A)`` rows per level."""

    def level(self, t: int) -> np.ndarray: ...


@dataclass(eq=False)
class Table:
    """A float array ``(S, A)`` over a world's states: a reward, or a policy (rows summing to 1).

    Attributes:
        world: the world whose states index the rows.
        values: float array (S, A).
    """

    world: World
    values: np.ndarray

    def level(self, t: int) -> np.ndarray:
        lo, hi = self.world.level(t)
        return self.values[lo:hi]

    def at(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``values[states, actions]`` elementwise."""
        return self.values[states, actions]

    def rows(self, states: np.ndarray) -> np.ndarray:
        return self.values[states]

    def rows_at(self, t: int, local: np.ndarray) -> np.ndarray:
        """The rows of the level-``t`` states ``local`` (local indices)."""
        return self.values[self.world.level_start[t] + local]

    def __add__(self, other: Table) -> Table:
        return Table(self.world, self.values + other.values)

    def __mul__(self, c: float) -> Table:
        return Table(self.world, self.values * c)

    __rmul__ = __mul__


class LevelPolicy:
    """A policy whose rows are computed when asked (nothing ``(S, A)`` is stored).

    Args:
        world: the world.
        rows: ``t -> (n_t, A)`` action probabilities of level ``t``.
        rows_at: ``(t, local) -> (n, A)``: the rows of some level-``t`` states only (what sampling needs); by default
            taken from the whole level.
        state_kl: ``(ref, kl)`` when the policy knows each state's ``KL(pi(.|s) || ref(.|s))`` (``kl``: (n_t,) per
            level), as the soft optimum does from its own pass; the exact evaluation then reads it instead of
            taking logarithms of the rows (only while the world's reference is still ``ref``).
        evaluated: ``(ref, rewards, result)`` when the policy was evaluated exactly where it was made (the soft
            optimum's own pass, with ``rewards`` ``{name: reward}``): :meth:`evaluated` returns ``result`` for those
            very reward objects under ``ref``.
    """

    def __init__(
        self,
        world: World,
        rows: Callable[[int], np.ndarray],
        rows_at: Callable[[int, np.ndarray], np.ndarray] | None = None,
        state_kl: tuple[Any, list[np.ndarray]] | None = None,
        evaluated: tuple[Any, dict[str, Any], dict[str, float]] | None = None,
    ):
        self.world = world
        self._rows = rows
        self._rows_at = rows_at
        self._state_kl = state_kl
        self._evaluated = evaluated

    def kl_to(self, ref) -> list[np.ndarray] | None:
        """Each state's KL to ``ref`` per level, when the policy carries it for that very reference, else None."""
        if self._state_kl is None or self._state_kl[0] is not ref:
            return None
        return self._state_kl[1]

    def evaluated(self, ref, rewards: Mapping[str, Any]) -> dict[str, float] | None:
        """The exact evaluation made with the policy (:meth:`World.soft_policy`'s ``evaluate``) when it was of these
        very reward objects under the reference ``ref``, else None."""
        if self._evaluated is None:
            return None
        known_ref, known, result = self._evaluated
        if known_ref is not ref or known.keys() != rewards.keys() or any(known[k] is not rewards[k] for k in known):
            return None
        return dict(result)

    def level(self, t: int) -> np.ndarray:
        return self._rows(t)

    def rows_at(self, t: int, local: np.ndarray) -> np.ndarray:
        return self._rows_at(t, local) if self._rows_at is not None else self._rows(t)[local]


def rows_of(x: Rows, t: int, local: np.ndarray) -> np.ndarray:
    """The rows of the level-``t`` states ``local`` of a reward or policy (only those rows are formed, where ``x``
    can form them alone)."""
    rows_at = getattr(x, "rows_at", None)
    return rows_at(t, local) if rows_at is not None else x.level(t)[local]


#: The exact passes take a level's rows in blocks of at most this many state-action entries, so their temporaries
#: stay near 8 MB per array whatever the world's size; a level that fits in one block is taken whole.
BLOCK_ENTRIES = 1 << 20
#: Row maxima over at most this many actions are taken a column at a time (``np.maximum`` over runs of
#: :data:`COLUMN_ROWS` rows, whose columns stay in cache): several times faster than ``max(axis=1)`` over short rows.
COLUMN_MAX_ACTIONS = 32
COLUMN_ROWS = 1 << 14
#: ``log pi_ref`` is kept for every level once computed when all its levels together take at most this many bytes
#: (a V = 1000, H = 32 compressed world's 256 MB just fits): every exact soft solve and evaluation reads each level's
#: log-rows, and a log over a level of a million entries costs as much as the rest of the level's pass.
LOG_REF_CACHE_BYTES = 256 * 2**20


def blockable(x: Rows) -> bool:
    """Whether ``x`` forms the rows of a block of states without forming its whole level."""
    if isinstance(x, Table):
        return True
    if isinstance(x, LevelPolicy):
        return x._rows_at is not None
    return getattr(x, "rows_at", None) is not None


def block_rows(x: Rows, t: int, lo: int, hi: int, whole: bool) -> np.ndarray:
    """The rows of the level-``t`` states ``lo..hi-1`` (local) of a reward or policy (the level when ``whole``)."""
    if whole:
        return x.level(t)
    if isinstance(x, Table):
        start = int(x.world.level_start[t])
        return x.values[start + lo : start + hi]
    return x.rows_at(t, np.arange(lo, hi))  # type: ignore[attr-defined]


@dataclass(eq=False)
class Sequences:
    """A batch of complete sequences of one world.

    Attributes:
        prompt: int (n,).
        tokens: int (n, H): the generated tokens, ``-1`` after the end (an EOS that ended it is kept).
        length: int (n,): tokens emitted, EOS included.
        ids: int (n,) or None: the sequence's index among all complete sequences, where the world numbers them.
    """

    prompt: np.ndarray
    tokens: np.ndarray
    length: np.ndarray
    ids: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.prompt.size)

    def take(self, rows: np.ndarray) -> Sequences:
        return Sequences(
            self.prompt[rows], self.tokens[rows], self.length[rows], None if self.ids is None else self.ids[rows]
        )

    @staticmethod
    def concat(parts: list[Sequences]) -> Sequences:
        ids = None if any(p.ids is None for p in parts) else np.concatenate([p.ids for p in parts])
        return Sequences(
            np.concatenate([p.prompt for p in parts]),
            np.concatenate([p.tokens for p in parts]),
            np.concatenate([p.length for p in parts]),
            ids,
        )


def draw_actions(x: Rows, t: int, local: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One action per entry of ``local`` (level-``t`` states): the first index where the cumulative row exceeds ``u``
    times the row's total (rows need not be exactly normalised).

    Only the rows of the distinct states are formed. When few distinct states are asked for many times (e.g. 2000
    episodes over 4 prompts), each one's cumulative sum is searched instead of gathering an ``(n, A)`` block; both
    give the same index.
    """
    uniq, inv = np.unique(local, return_inverse=True)
    rows = rows_of(x, t, uniq)
    A = rows.shape[1]
    if uniq.size * 8 <= local.size:
        cum = np.cumsum(rows, axis=1)
        a = np.empty(local.size, dtype=np.int64)
        for k in range(uniq.size):
            mine = inv == k
            a[mine] = np.searchsorted(cum[k], u[mine] * cum[k, -1], side="right")
        return np.minimum(a, A - 1)
    cum = np.cumsum(rows[inv], axis=1)
    return np.minimum((u[:, None] * cum[:, -1:] >= cum).sum(axis=1), A - 1)


def _logsumexp_rows(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(m, w, total)`` with ``m`` the row max, ``w = exp(z - m)`` and ``total`` its row sum (keepdims)."""
    m = z.max(axis=1, keepdims=True)
    w = np.exp(z - m)
    return m, w, w.sum(axis=1, keepdims=True)


def row_kl(pi: np.ndarray, log_ref: np.ndarray) -> np.ndarray:
    """``KL(pi(.|s) || ref(.|s))`` per row, with ``0 log 0 = 0`` (``inf`` where pi has mass outside ref's support)."""
    positive = pi > 0
    log_pi = np.zeros(pi.shape)
    np.log(pi, out=log_pi, where=positive)  # only where pi > 0: a deterministic policy costs one log per row
    with np.errstate(invalid="ignore"):
        terms = np.where(positive, pi * (log_pi - log_ref), 0.0)
    return terms.sum(axis=1)


class World(ABC):
    """A text-MDP as levels of decision states (module docstring); subclasses define how children are laid out.

    Attributes:
        n_prompts, vocab_size, horizon, eos: ``P``, ``V`` (= actions ``A``; token 0 is EOS when ``eos``), ``H``.
        sizes: int (H,) states per level; ``level_start``: int (H + 1,).
        prompt, depth: int (S,) of every state.
        last_token: int (S,): the last generated token, ``-1`` at depth 0 (and where the world does not track it).
        ref: the reference policy pi_ref (set by the builder).
    """

    kind: ClassVar[str] = ""
    #: whether every complete sequence has an index (and the world can list all of them)
    enumerable: ClassVar[bool] = False

    def __init__(self, n_prompts: int, vocab_size: int, horizon: int, eos: bool, sizes: np.ndarray):
        self.n_prompts, self.vocab_size, self.horizon, self.eos = int(n_prompts), int(vocab_size), int(horizon), eos
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.level_start = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self._ref: Any = None
        self.prev_token: np.ndarray | None = None  # the token before the last one, where the world keeps it
        self._cont = self.continuing()
        self._log_ref_cache: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------ capabilities
    @classmethod
    def check_config(cls, cfg, agent_templates: tuple[str, ...] = ()) -> None:
        """Refuse, before anything is built, a :class:`sim.config.Config` this world kind cannot carry (naming the
        key that must change and why)."""
        return None

    def check_templates(self, templates, field: str) -> None:
        """Refuse feature templates this world cannot compute."""
        return None

    def check_oracle(self, families: tuple[str, ...], form: str, kind: str) -> None:
        """Refuse oracle families or a form this world cannot carry."""
        return None

    def check_reference(self, kind: str) -> None:
        """Refuse a reference family this world cannot carry."""
        return None

    def token_table(self) -> np.ndarray:
        """Int64 (S, H + 2): ``[prompt, tokens padded with V, length]`` for every state (worlds whose states are
        prefixes)."""
        raise ConfigError("obs_mode", "tokens", f"state or markov on a {self.kind} world (a state is not a prefix)")

    # ----------------------------------------------------------------- structure
    @property
    def first_token(self) -> int:
        """The first non-EOS token (1 with EOS, 0 without)."""
        return 1 if self.eos else 0

    @property
    def branching(self) -> int:
        """Non-EOS tokens ``b``: ``V - 1`` with EOS, ``V`` without."""
        return self.vocab_size - 1 if self.eos else self.vocab_size

    @property
    def bos(self) -> int:
        """The index that stands for "no previous token" in bigram tables (``V``)."""
        return self.vocab_size

    @property
    def n_states(self) -> int:
        return int(self.level_start[-1])

    @property
    def n_actions(self) -> int:
        return self.vocab_size

    @property
    def n_prefix_states(self) -> int | None:
        """The number of prefixes (decision states of the full tree) where the world enumerates them, else None."""
        return None

    def level(self, t: int) -> tuple[int, int]:
        """The global state range ``(lo, hi)`` of depth ``t``."""
        return int(self.level_start[t]), int(self.level_start[t + 1])

    def levels(self) -> Iterator[tuple[int, int, int]]:
        """``(t, lo, hi)`` for every depth."""
        for t in range(self.horizon):
            yield (t, *self.level(t))

    def continuing(self) -> np.ndarray:
        """Bool (V,): tokens that continue the episode before the last position (everything but EOS)."""
        c = np.ones(self.vocab_size, dtype=bool)
        if self.eos:
            c[0] = False
        return c

    def end_length(self, t: np.ndarray | int, a: np.ndarray | int) -> np.ndarray:
        """The response length (non-EOS tokens) that token ``a`` at depth ``t`` completes, ``-1`` if it continues.

        EOS at depth ``t`` completes a response of length ``t``; any other token at depth ``H - 1`` one of length ``H``.
        """
        t, a = np.broadcast_arrays(np.asarray(t), np.asarray(a))
        length = np.where(t == self.horizon - 1, t + 1, -1)
        return np.where(a == 0, t, length) if self.eos else length

    def ends(self, t: np.ndarray | int, a: np.ndarray) -> np.ndarray:
        """Bool: whether token ``a`` at depth ``t`` ends the episode."""
        return ~self._cont[a] | (np.asarray(t) == self.horizon - 1)

    @abstractmethod
    def child(self, t: int, local: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Level-``t+1`` index (local) of the state reached from level-``t`` states ``local`` by non-EOS tokens ``a``
        (``t`` may be an array, for states of mixed depths)."""

    @abstractmethod
    def continuation(self, t: int, values_next: np.ndarray) -> np.ndarray:
        """``(n_t, b)``: the values ``values_next`` (n_{t+1},) of each level-``t`` state's children (non-EOS tokens)."""

    @abstractmethod
    def push(self, t: int, mass: np.ndarray) -> np.ndarray:
        """``(n_{t+1},)``: the mass reaching each level-``t+1`` state, from ``mass`` (n_t, b) on non-EOS tokens."""

    @abstractmethod
    def push_into(self, t: int, lo: int, hi: int, mass: np.ndarray, out: np.ndarray) -> None:
        """Add to ``out`` (n_{t+1},) the mass reaching level ``t+1`` from the level-``t`` states ``lo..hi-1``
        (``mass``: their (hi - lo, b) rows on non-EOS tokens)."""

    def blocks(self, t: int, *xs: Rows) -> list[tuple[int, int, bool]]:
        """``(lo, hi, whole)`` blocks of level ``t``'s local states for an exact pass over the rows of ``xs``: the
        whole level when it holds at most :data:`BLOCK_ENTRIES` entries or when one of ``xs`` can only form whole
        levels, else blocks of that many entries."""
        n = int(self.sizes[t])
        step = max(1, BLOCK_ENTRIES // self.n_actions)
        if n <= step or not all(blockable(x) for x in xs):
            return [(0, n, True)]
        return [(lo, min(n, lo + step), False) for lo in range(0, n, step)]

    def log_ref_block(self, t: int, lo: int, hi: int, whole: bool) -> np.ndarray:
        """``log pi_ref`` rows of the level-``t`` states ``lo..hi-1``."""
        return self.log_ref(t) if whole else self.log_ref_rows(t, np.arange(lo, hi))

    def next_state(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Global index of the state after ``(states, actions)``, ``-1`` at an episode end."""
        states, actions = np.asarray(states), np.asarray(actions)
        t = self.depth[states]
        end = self.ends(t, actions)
        tt = np.minimum(t, self.horizon - 2)
        nxt = self.level_start[tt + 1] + self.child(tt, states - self.level_start[tt], actions)  # type: ignore[arg-type]
        return np.where(end, -1, nxt)

    # ---------------------------------------------------------------- policies
    @property
    def ref(self):
        """The reference policy pi_ref."""
        return self._ref

    @ref.setter
    def ref(self, policy) -> None:
        self._ref = policy
        self._log_ref_cache.clear()

    def log_ref(self, t: int) -> np.ndarray:
        """``log pi_ref`` rows of level ``t`` (``-inf`` off its support); kept once computed when the whole
        reference's log-rows take at most :data:`LOG_REF_CACHE_BYTES`."""
        if t in self._log_ref_cache:
            return self._log_ref_cache[t]
        log_level = getattr(self.ref, "log_level", None)
        if log_level is not None:
            out = log_level(t)
        else:
            with np.errstate(divide="ignore"):
                out = np.log(self.ref.level(t))
        if self.log_ref_cached():
            self._log_ref_cache[t] = out
        return out

    def log_ref_cached(self) -> bool:
        """Whether :meth:`log_ref` keeps the levels it computes (the reference's log-rows fit the cache)."""
        return 8.0 * float(self.level_start[-1]) * self.n_actions <= LOG_REF_CACHE_BYTES

    def log_ref_rows(self, t: int, local: np.ndarray) -> np.ndarray:
        """``log pi_ref`` rows of some level-``t`` states."""
        if t in self._log_ref_cache:
            return self._log_ref_cache[t][local]
        log_rows_at = getattr(self.ref, "log_rows_at", None)
        if log_rows_at is not None:
            return log_rows_at(t, local)
        with np.errstate(divide="ignore"):
            return np.log(rows_of(self.ref, t, local))

    def table_reward(self, values: np.ndarray) -> Table:
        """A reward given as a full ``(S, A)`` array."""
        return Table(self, values)

    def linear_reward(self, features, theta: np.ndarray):
        """``r(s, a) = theta . phi(s, a)`` over a :class:`sim.features.FeatureMap` of this world."""
        return Table(self, features.table_values(theta))

    def table(self, x: Rows) -> np.ndarray:
        """The full ``(S, A)`` array of a reward or policy (a :class:`Table`'s own values, else its levels stacked)."""
        if isinstance(x, Table):
            return x.values
        return np.concatenate([x.level(t) for t in range(self.horizon)])

    # -------------------------------------------------------------- exact solve
    def q_level(
        self, reward: Rows, t: int, values_next: np.ndarray | None, local: np.ndarray | None = None
    ) -> np.ndarray:
        """``Q_t = r_t + V_{t+1}(child)`` (n_t, A) (or of the states ``local`` only), a fresh array."""
        r = reward.level(t) if local is None else rows_of(reward, t, local)
        q = np.array(r, dtype=np.float64, order="C", copy=True)
        if values_next is not None and t < self.horizon - 1:
            cont = self.continuation(t, values_next)
            q[:, self.first_token :] += cont if local is None else cont[local]
        return q

    def _q_block(self, reward: Rows, t: int, cont: np.ndarray | None, lo: int, hi: int, whole: bool) -> np.ndarray:
        """``Q_t`` (hi - lo, A) of a block of level-``t`` states, a fresh array (``cont``: the level's continuation
        values, None at the last level)."""
        q = np.array(block_rows(reward, t, lo, hi, whole), dtype=np.float64, order="C", copy=True)
        if cont is not None:
            q[:, self.first_token :] += cont if whole else cont[lo:hi]
        return q

    def _by_blocks(self, t: int, xs: tuple, fn: Callable[[int, int, bool], np.ndarray]) -> np.ndarray:
        """``fn(lo, hi, whole)`` over the blocks of level ``t``, concatenated."""
        parts = [fn(lo, hi, whole) for lo, hi, whole in self.blocks(t, *xs)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _continuation(self, t: int, values_next: np.ndarray | None) -> np.ndarray | None:
        return None if values_next is None or t >= self.horizon - 1 else self.continuation(t, values_next)

    def _max_q_block(self, reward: Rows, t: int, cont: np.ndarray | None, lo: int, hi: int, whole: bool) -> np.ndarray:
        """``Q_t.max(axis=1)`` of a block of level-``t`` states (as :meth:`_q_block`), bit for bit; with few actions
        column by column over cache-sized runs of rows, without forming ``Q``."""
        if self.n_actions > COLUMN_MAX_ACTIONS:
            return self._q_block(reward, t, cont, lo, hi, whole).max(axis=1)
        r = block_rows(reward, t, lo, hi, whole)
        c = None if cont is None else (cont if whole else cont[lo:hi])
        n, f = r.shape[0], self.first_token
        out = np.empty(n)
        tmp = np.empty(min(n, COLUMN_ROWS))
        for i in range(0, n, COLUMN_ROWS):
            j = min(n, i + COLUMN_ROWS)
            m, rows = out[i:j], r[i:j]
            for a in range(r.shape[1]):
                col = rows[:, a] if c is None or a < f else np.add(rows[:, a], c[i:j, a - f], out=tmp[: j - i])
                if a == 0:
                    np.copyto(m, col)
                else:
                    np.maximum(m, col, out=m)
        return out

    def optimal_values(self, reward: Rows) -> list[np.ndarray]:
        """Optimal values ``V_t`` (n_t,) per level, by backward induction (in blocks of a level's states)."""
        values: list[np.ndarray] = [np.empty(0)] * self.horizon
        nxt = None
        for t in reversed(range(self.horizon)):
            cont = self._continuation(t, nxt)
            values[t] = nxt = self._by_blocks(
                t, (reward,), lambda lo, hi, whole, t=t, c=cont: self._max_q_block(reward, t, c, lo, hi, whole)
            )
        return values

    def optimal_return(self, reward: Rows) -> float:
        """``max_pi J_r(pi)``: the mean over prompts of the optimal value."""
        return self.initial_value(self.optimal_values(reward))

    def greedy_policy(self, reward: Rows) -> LevelPolicy:
        """A deterministic optimal policy of ``reward`` (ties to the lowest token), rows built on demand."""
        values = self.optimal_values(reward)

        def rows_at(t: int, local: np.ndarray | None = None) -> np.ndarray:
            q = self.q_level(reward, t, values[t + 1] if t + 1 < self.horizon else None, local)
            pi = np.zeros_like(q)
            pi[np.arange(q.shape[0]), q.argmax(axis=1)] = 1.0
            return pi

        return LevelPolicy(self, rows_at, rows_at)

    def _soft_rows(
        self, reward: Rows, t: int, values: list[np.ndarray], beta: float, local: np.ndarray | None = None
    ) -> np.ndarray:
        q = self.q_level(reward, t, values[t + 1] if t + 1 < self.horizon else None, local)
        return (self.log_ref(t) if local is None else self.log_ref_rows(t, local)) + q / beta

    def soft_values(self, reward: Rows, beta: float) -> list[np.ndarray]:
        """Soft values ``V_t = beta logsumexp(log pi_ref + Q_t / beta)`` (n_t,) per level (in blocks)."""
        return self._soft_pass(reward, beta)[0]

    def _soft_pass(
        self, reward: Rows, beta: float, evaluate: Mapping[str, Rows] | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, float] | None]:
        """One backward pass of the soft optimum ``pi*``: its soft values per level and, with ``evaluate``, each
        state's ``KL(pi*(.|s) || pi_ref(.|s))`` and the exact evaluation of ``pi*`` (as :meth:`evaluate`), by
        backward induction over the same rows. ``log pi* - log pi_ref = Q / beta - m - log(total)`` (``m`` the row
        max of ``log pi_ref + Q / beta``, ``total`` the sum of its exponentials): the KL costs a product per row and
        no logarithm of the policy; each return ``V^pi_t = sum_a pi* (r + V^pi_{t+1}(child))`` a product per row."""
        check(np.isfinite(beta) and beta > 0, "agent.beta", beta, "a finite number > 0")
        H, f = self.horizon, self.first_token
        values: list[np.ndarray] = [np.empty(0)] * H
        kls: list[np.ndarray] = [np.empty(0)] * H
        rewards = dict(evaluate or {})
        own: dict[str, list[np.ndarray]] = {name: [np.empty(0)] * H for name in rewards}
        kl_value: list[np.ndarray] = [np.empty(0)] * H
        for t in reversed(range(H)):
            cont = self._continuation(t, values[t + 1] if t + 1 < H else None)
            n = int(self.sizes[t])
            conts = {name: self._continuation(t, own[name][t + 1] if t + 1 < H else None) for name in rewards}
            cont_kl = self._continuation(t, kl_value[t + 1] if t + 1 < H else None) if evaluate is not None else None
            if evaluate is not None:
                kls[t], kl_value[t] = np.empty(n), np.empty(n)
                for name in rewards:
                    own[name][t] = np.empty(n)

            def block(
                lo: int,
                hi: int,
                whole: bool,
                t: int = t,
                cont: np.ndarray | None = cont,
                conts: dict = conts,
                cont_kl: np.ndarray | None = cont_kl,
            ) -> np.ndarray:
                qb = self._q_block(reward, t, cont, lo, hi, whole)
                qb /= beta
                m, w, total = _logsumexp_rows(self.log_ref_block(t, lo, hi, whole) + qb)
                log_total = np.log(total[:, 0])
                if evaluate is not None:
                    tot = total[:, 0]
                    kls[t][lo:hi] = np.einsum("ij,ij->i", w, np.subtract(qb, m, out=qb)) / tot - log_total
                    for name, r in rewards.items():  # sum_a pi (r + V(child)), without forming r + V(child)
                        v = np.einsum("ij,ij->i", w, np.asarray(block_rows(r, t, lo, hi, whole), dtype=np.float64))
                        if conts[name] is not None:
                            c = conts[name] if whole else conts[name][lo:hi]
                            v += np.einsum("ij,ij->i", w[:, f:], c)
                        own[name][t][lo:hi] = v / tot
                    kl_value[t][lo:hi] = kls[t][lo:hi]
                    if cont_kl is not None:
                        c = cont_kl if whole else cont_kl[lo:hi]
                        kl_value[t][lo:hi] += np.einsum("ij,ij->i", w[:, f:], c) / tot
                return beta * (m[:, 0] + log_total)

            values[t] = self._by_blocks(t, (reward, self.ref, *rewards.values()), block)
        if evaluate is None:
            return values, kls, None
        d0 = np.full(self.n_prompts, 1.0 / self.n_prompts)
        result = {name: float(d0 @ v[0]) for name, v in own.items()}
        result["kl_to_reference"] = float(max(d0 @ kl_value[0], 0.0))
        return values, kls, result

    def soft_policy(self, reward: Rows, beta: float, evaluate: Mapping[str, Rows] | None = None) -> LevelPolicy:
        """The optimum of ``E[sum r] - beta KL(pi || pi_ref)``: ``pi* ∝ pi_ref exp(Q / beta)``, stable from
        ``beta = 1e-6`` (the argmax restricted to pi_ref's support) to ``1e6`` (pi_ref).

        With ``evaluate`` (``{name: reward}``), the policy is evaluated exactly in the pass that solves it (a
        backward induction instead of :meth:`evaluate`'s forward pass, which would form every row again): a later
        ``evaluate(policy, rewards)`` of those very reward objects returns that evaluation, and any other evaluation
        reads the states' KL to the reference from it."""
        values, kls, result = self._soft_pass(reward, beta, evaluate)

        def rows_at(t: int, local: np.ndarray | None = None) -> np.ndarray:
            _, w, total = _logsumexp_rows(self._soft_rows(reward, t, values, beta, local))
            return w / total

        if result is None:
            return LevelPolicy(self, rows_at, rows_at)
        return LevelPolicy(
            self, rows_at, rows_at, state_kl=(self.ref, kls), evaluated=(self.ref, dict(evaluate or {}), result)
        )

    def policy_values(self, policy: Rows, reward: Rows) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(V, Q)`` per level: ``V_t = sum_a pi_t Q_t``, ``Q_t = r_t + V_{t+1}(child)``."""
        V: list[np.ndarray] = [np.empty(0)] * self.horizon
        Q: list[np.ndarray] = [np.empty(0)] * self.horizon
        for t in reversed(range(self.horizon)):
            Q[t] = self.q_level(reward, t, V[t + 1] if t + 1 < self.horizon else None)
            V[t] = np.einsum("ij,ij->i", policy.level(t), Q[t])
        return V, Q

    def prompt_values(self, policy: Rows | None, reward: Rows) -> np.ndarray:
        """(P,): the value of each prompt under ``policy`` (the optimal value when ``policy`` is None)."""
        if policy is None:
            return self.optimal_values(reward)[0]
        if hasattr(policy, "prompt_returns"):  # a weighted sample of sequences
            return policy.prompt_returns(reward)
        return self.policy_values(policy, reward)[0][0]

    def step_offsets(self) -> tuple[int, np.ndarray, int] | None:
        """``(b, offset, S)`` when the next state of every ``(s, a)`` is ``s * b + offset[a]`` (global indices;
        ``offset`` int64 (A,)), an episode end exactly where that falls outside ``[0, S)``: the batched env's fast
        step. None (the default) when the world has no such closed form; :meth:`next_state` is then used."""
        return None

    # ------------------------------------------------------- occupancy space
    def flow_reward(self, reward: Rows) -> list[np.ndarray]:
        """``C R`` per level (n_t,): ``sum_a R(s, a)`` minus the reward of the transitions into ``s``, where ``C`` is
        the (S, S * A) matrix of the flow constraints of the occupancy polytope (``sim.goodhart``)."""
        f = self.first_token
        out = []
        for t in range(self.horizon):
            c = np.empty(int(self.sizes[t]))
            for lo, hi, whole in self.blocks(t, reward):
                c[lo:hi] = np.asarray(block_rows(reward, t, lo, hi, whole), dtype=np.float64).sum(axis=1)
            if t >= 1:
                into = np.zeros(int(self.sizes[t]))
                for lo, hi, whole in self.blocks(t - 1, reward):
                    r = np.asarray(block_rows(reward, t - 1, lo, hi, whole), dtype=np.float64)
                    self.push_into(t - 1, lo, hi, np.ascontiguousarray(r[:, f:]), into)
                c -= into
            out.append(c)
        return out

    def occupancy_potentials(self, reward: Rows, rtol: float = 1e-13) -> list[np.ndarray]:
        """``lam_t`` (n_t,) per level with ``(C C^T) lam = C R``: then ``R(s, a) - lam(s) + lam(s')`` (``lam(s') = 0``
        at an episode end) is the orthogonal projection of ``reward`` onto the space parallel to the occupancy
        polytope (``sim.goodhart``). ``C C^T = diag(A + in-degree) - (adjacency + adjacency^T)`` over the states, a
        grounded graph Laplacian (every transition that ends an episode grounds it), symmetric positive definite;
        solved here by conjugate gradients, applying it through :meth:`continuation` and :meth:`push` (any world).
        A world whose graph allows a direct elimination overrides this (the prefix tree does).

        Raises:
            RunError: if conjugate gradients do not reach ``rtol`` (relative residual) in ``10 S`` iterations.
        """
        from scipy.sparse.linalg import LinearOperator, cg

        from sim.errors import RunError

        H, A, b = self.horizon, self.n_actions, self.branching
        sizes, starts = [int(n) for n in self.sizes], self.level_start
        deg = [np.full(sizes[0], float(A))]
        for t in range(1, H):
            deg.append(A + self.push(t - 1, np.ones((sizes[t - 1], b))))
        deg_all = np.concatenate(deg)

        def matvec(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64).ravel()
            lam = [x[starts[t] : starts[t + 1]] for t in range(H)]
            y = deg_all * x
            for t in range(H):
                seg = y[starts[t] : starts[t + 1]]
                if t < H - 1:
                    seg -= np.asarray(self.continuation(t, lam[t + 1])).sum(axis=1)
                if t >= 1:
                    seg -= self.push(t - 1, np.repeat(lam[t - 1][:, None], b, axis=1))
            return y

        rhs = np.concatenate(self.flow_reward(reward))
        scale = float(np.linalg.norm(rhs))
        if scale == 0.0:
            return [np.zeros(n) for n in sizes]
        op = LinearOperator((rhs.size, rhs.size), matvec=matvec, dtype=np.float64)
        x, info = cg(op, rhs, rtol=rtol, atol=0.0, maxiter=10 * rhs.size, M=LinearOperator(
            (rhs.size, rhs.size), matvec=lambda v: np.asarray(v).ravel() / deg_all, dtype=np.float64))  # fmt: skip
        residual = float(np.linalg.norm(matvec(x) - rhs)) / scale
        if info != 0 or residual > 100 * rtol:
            raise RunError(f"the occupancy projection did not converge (relative residual {residual:.2g})")
        return [x[starts[t] : starts[t + 1]].copy() for t in range(H)]

    # -------------------------------------------------------------- evaluation
    def occupancy(self, policy: Rows) -> list[np.ndarray]:
        """``d_t`` (n_t,): the probability of visiting each state (level 0: uniform over prompts)."""
        d = [np.full(self.n_prompts, 1.0 / self.n_prompts)]
        f = self.first_token
        for t in range(self.horizon - 1):
            nxt = np.zeros(int(self.sizes[t + 1]))
            for lo, hi, whole in self.blocks(t, policy):
                pi = block_rows(policy, t, lo, hi, whole)
                self.push_into(t, lo, hi, d[t][lo:hi, None] * pi[:, f:], nxt)
            d.append(nxt)
        return d

    def evaluate(self, policy: Rows, rewards: Mapping[str, Rows]) -> dict[str, float]:
        """Exact ``J_r(pi)`` for each reward and the sequence-level ``KL(pi || pi_ref)`` (in nats).

        Returns:
            ``{name: J_name(pi)}`` and ``kl_to_reference`` (``0 log 0 = 0``; ``inf`` if pi leaves pi_ref's support).
        """
        evaluate = getattr(policy, "evaluate", None)
        if evaluate is not None:  # a policy that is not a table of rows (e.g. a weighted sample of sequences)
            return evaluate(rewards)
        if isinstance(policy, LevelPolicy):
            done = policy.evaluated(self.ref, rewards)
            if done is not None:  # evaluated by the pass that solved it (soft_policy's ``evaluate``)
                return done
        f = self.first_token
        known = policy.kl_to(self.ref) if isinstance(policy, LevelPolicy) else None
        d = [np.full(self.n_prompts, 1.0 / self.n_prompts)]
        per_state: dict[str, list[np.ndarray]] = {name: [] for name in rewards}
        kl = []
        for t in range(self.horizon):  # one forward pass: each level's rows are formed once, a block at a time
            n = int(self.sizes[t])
            for name in rewards:
                per_state[name].append(np.empty(n))
            kl.append(np.empty(n))
            nxt = np.zeros(int(self.sizes[t + 1])) if t + 1 < self.horizon else None
            for lo, hi, whole in self.blocks(t, policy, self.ref, *rewards.values()):
                pi = block_rows(policy, t, lo, hi, whole)
                for name, r in rewards.items():
                    per_state[name][t][lo:hi] = np.einsum("ij,ij->i", pi, block_rows(r, t, lo, hi, whole))
                if known is not None:
                    kl[t][lo:hi] = known[t][lo:hi]
                elif policy is self.ref:  # log pi - log pi_ref is exactly 0 wherever pi > 0
                    kl[t][lo:hi] = 0.0
                else:
                    kl[t][lo:hi] = row_kl(pi, self.log_ref_block(t, lo, hi, whole))
                if nxt is not None:
                    self.push_into(t, lo, hi, d[t][lo:hi, None] * pi[:, f:], nxt)
            if nxt is not None:
                d.append(nxt)
        dd = np.concatenate(d)
        out = {name: float(dd @ np.concatenate(v)) for name, v in per_state.items()}
        k = np.concatenate(kl)
        visited = dd > 0
        out["kl_to_reference"] = float(max(dd[visited] @ k[visited], 0.0))
        return out

    # ---------------------------------------------------------------- sampling
    def sample(self, policy: Rows, prompts: np.ndarray, rng: np.random.Generator) -> Sequences:
        """One complete sequence of ``policy`` per entry of ``prompts``, all stepped together."""
        p = np.asarray(prompts, dtype=np.int64)
        n, H = p.size, self.horizon
        local = p.copy()
        tokens = np.full((n, H), -1, dtype=np.int64)
        length = np.zeros(n, dtype=np.int64)
        alive = np.ones(n, dtype=bool)
        for t in range(H):
            a = draw_actions(policy, t, local, rng.random(n))
            tokens[alive, t] = a[alive]
            length += alive
            alive &= ~self.ends(t, a)
            if not alive.any():
                break
            local = np.where(alive, self.child(t, local, np.where(alive, a, self.first_token)), local)
        return Sequences(prompt=p, tokens=tokens, length=length)

    def rollout(
        self, policy: Rows, channel, rng: np.random.Generator, batch: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``batch`` complete episodes of ``policy`` stepped together, paid through ``channel``.

        Returns:
            ``(states, actions, rewards, alive)``, each (batch, H); ``alive[b, t]`` marks real steps (an episode that
            ended before ``t`` is padded). Rewards are what the channel delivers (sparsity, noise, budget).
        """
        H, P = self.horizon, self.n_prompts
        local = rng.choice(P, size=batch, p=np.full(P, 1.0 / P))
        carries = channel.episode_flags(batch, rng)
        pending = np.zeros(batch)
        states = np.zeros((batch, H), dtype=np.int64)
        actions = np.zeros((batch, H), dtype=np.int64)
        rewards = np.zeros((batch, H))
        alive = np.zeros((batch, H), dtype=bool)
        live = np.ones(batch, dtype=bool)
        for t in range(H):
            a = draw_actions(policy, t, local, rng.random(batch))
            s = self.level_start[t] + local
            states[:, t], actions[:, t], alive[:, t] = s, a, live
            end = self.ends(t, a)
            paid = channel.pay(pending, s, a, np.full(batch, t), end, rng, carries)
            rewards[:, t] = np.where(live, paid, 0.0)
            live = live & ~end
            if not live.any():
                break
            local = np.where(live, self.child(t, local, np.where(live, a, self.first_token)), local)
        return states, actions, rewards, alive

    def paths(self, seqs: Sequences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every sequence's path: ``(states, actions, mask)``, each (n, H), ``mask`` marking real steps."""
        n, H = seqs.n, self.horizon
        states = np.zeros((n, H), dtype=np.int64)
        mask = seqs.tokens >= 0
        actions = np.where(mask, seqs.tokens, 0)
        local = seqs.prompt.astype(np.int64).copy()
        for t in range(H):
            states[:, t] = np.where(mask[:, t], self.level_start[t] + local, 0)
            if t + 1 < H:
                go = mask[:, t + 1]
                local = np.where(go, self.child(t, local, np.where(go, actions[:, t], self.first_token)), local)
        return states, actions, mask

    def sequence_returns(self, reward, seqs: Sequences, gamma: float = 1.0) -> np.ndarray:
        """(n,) returns ``sum_t gamma^(T-1-t) r_t`` of ``reward`` along each sequence (the last token weighs 1)."""
        states, actions, mask = self.paths(seqs)
        total = np.zeros(seqs.n)
        for t in range(self.horizon):
            live = mask[:, t]
            if not live.any():
                break
            r = np.where(live, reward.at(states[:, t], actions[:, t]), 0.0)
            total = np.where(live, gamma * total + r, total) if gamma != 1.0 else total + r
        return total

    def sequence_log_prob(self, policy: Rows, seqs: Sequences) -> np.ndarray:
        """(n,) ``log pi(y | x)`` of each sequence under a policy given by rows."""
        states, actions, mask = self.paths(seqs)
        out = np.zeros(seqs.n)
        for t in range(self.horizon):
            live = mask[:, t]
            if not live.any():
                break
            lo = self.level_start[t]
            rows = rows_of(policy, t, np.where(live, states[:, t] - lo, 0))
            with np.errstate(divide="ignore"):
                lp = np.log(rows[np.arange(seqs.n), actions[:, t]])
            out += np.where(live, lp, 0.0)
        return out

    # ---------------------------------------------------- sequences of a policy
    def return_moments(self, policy: Rows, reward: Rows) -> tuple[float, float]:
        """Exact ``(E[R], E[R^2])`` of ``reward``'s return under ``policy`` (prompts uniform), by the recursions
        ``M1 = sum_a pi (r + M1')`` and ``M2 = sum_a pi (r^2 + 2 r M1' + M2')`` over the children."""
        f = self.first_token
        m1 = m2 = None
        for t in reversed(range(self.horizon)):
            c1, c2 = (None, None) if m1 is None else (self.continuation(t, m1), self.continuation(t, m2))
            n1, n2 = np.empty(int(self.sizes[t])), np.empty(int(self.sizes[t]))
            for lo, hi, whole in self.blocks(t, reward, policy):
                r = np.asarray(block_rows(reward, t, lo, hi, whole), dtype=np.float64)
                q1, q2 = r.copy(), r * r
                if c1 is not None:
                    b1, b2 = (c1, c2) if whole else (c1[lo:hi], c2[lo:hi])
                    q1[:, f:] += b1
                    q2[:, f:] += 2 * r[:, f:] * b1 + b2
                pi = block_rows(policy, t, lo, hi, whole)
                n1[lo:hi], n2[lo:hi] = np.einsum("ij,ij->i", pi, q1), np.einsum("ij,ij->i", pi, q2)
            m1, m2 = n1, n2
        return float(m1.mean()), float(m2.mean())

    def sequence_source(self, policy: Rows, mix: tuple[float, Rows] | None = None) -> SequenceSource:
        """Sequences drawn from ``policy`` (or, with ``mix = (w, other)``, from the mixture ``(1-w) policy + w other``).

        A policy that is itself a distribution over sampled sequences is its own source.
        """
        if mix is None and hasattr(policy, "draw"):
            return policy  # type: ignore[return-value]
        return TokenSource(self, policy, mix)

    def uniform_source(self) -> SequenceSource:
        """Every complete sequence of a prompt equally likely: tokens drawn with probabilities proportional to the
        number of completions they lead to (``N_t = [EOS] + b N_{t+1}``, in logs)."""
        H, V, f = self.horizon, self.vocab_size, self.first_token
        log_n = np.zeros(H + 1)  # log completions from depth t (log_n[H] unused)
        log_n[H - 1] = np.log(V)
        rows = np.empty((H, V))
        rows[H - 1] = 1.0 / V
        for t in reversed(range(H - 1)):
            cont = np.log(self.branching) + log_n[t + 1]
            log_n[t] = np.logaddexp(0.0, cont) if self.eos else cont
            rows[t, f:] = np.exp(log_n[t + 1] - log_n[t])
            if self.eos:
                rows[t, 0] = np.exp(-log_n[t])
        return TokenSource(self, LevelPolicy(self, lambda t: np.broadcast_to(rows[t], (int(self.sizes[t]), V))))

    def weighted_policy(self, seqs: Sequences, weights: np.ndarray) -> Rows:
        """The policy whose sequence distribution is ``weights`` over ``seqs`` (per prompt, prompts uniform)."""
        return WeightedSequences(self, seqs, weights)

    def format(self, state: int, action: int | None = None) -> str:
        """A readable string for state ``state`` followed by token ``action``."""
        p, t, y = int(self.prompt[state]), int(self.depth[state]), int(self.last_token[state])
        text = f"x{p} @{t}" + (f" after t{y}" if y >= 0 else "")
        if action is not None:
            text += " <eos>" if (self.eos and action == 0) else f" t{action}"
        return text

    def text(self, seqs: Sequences, i: int) -> str:
        """Sequence ``i`` of a batch as text, e.g. ``x0: t3 t1 <eos>``."""
        toks = seqs.tokens[i, : seqs.length[i]]
        words = ["<eos>" if (self.eos and a == 0) else f"t{a}" for a in toks]
        return f"x{seqs.prompt[i]}: " + (" ".join(words) if words else "(empty)")

    def likely_sequences(self, policy: Rows, prompt: int, k: int = 3) -> tuple[Sequences, np.ndarray]:
        """Likely outputs of ``policy`` for ``prompt`` and their probabilities given the prompt.

        Here: the path of the most likely token at each step (one sequence); worlds that list their sequences give
        the exact ``k`` most likely ones.
        """
        if hasattr(policy, "top"):
            return policy.top(prompt, k)
        H = self.horizon
        tokens = np.full((1, H), -1, dtype=np.int64)
        local, prob, n = np.array([prompt]), 1.0, 0
        for t in range(H):
            row = rows_of(policy, t, local)[0]
            a = int(row.argmax())
            prob *= float(row[a])
            tokens[0, t] = a
            n = t + 1
            if self.ends(t, np.array([a]))[0]:
                break
            local = self.child(t, local, np.array([a]))
        return Sequences(np.array([prompt]), tokens, np.array([n])), np.array([prob])

    def initial_value(self, values: list[np.ndarray]) -> float:
        """``rho . V``: the expected value of level-0 values under the uniform initial distribution."""
        rho = np.zeros(self.n_states)
        rho[: self.n_prompts] = 1.0 / self.n_prompts
        return float(rho @ np.concatenate(values))

    # --------------------------------------------------------- world-specific
    def _not_listed(self, what: str) -> ConfigError:
        return ConfigError(
            "env.compressed",
            True,
            f"an enumerated world for {what} (a {self.kind} world cannot list its ~V^H complete sequences)",
        )

    def terminal_transitions(self) -> tuple[np.ndarray, np.ndarray]:
        """The last transition of every complete sequence (only worlds that can list them)."""
        raise self._not_listed("a table over complete sequences")

    def sequence_ids(self, seqs: Sequences) -> np.ndarray:
        """The index of each sequence among all complete sequences (only worlds that can list them)."""
        raise self._not_listed("sequence indices (a tabular reward model, per-sequence tables)")

    def all_sequences(self) -> Sequences:
        """Every complete sequence (only worlds that can list them)."""
        raise self._not_listed("this setting")

    def sequence_reward(self, seqs: Sequences, values: np.ndarray):
        """A reward paying ``values[i]`` on the last token of sequence ``i`` and 0 elsewhere (enumerable worlds)."""
        raise self._not_listed("a per-sequence reward")

    def chunk_table(self, reward, every: int) -> Table:
        """The reward paid every ``every`` tokens, as a table (enumerable worlds)."""
        raise ConfigError(
            "corruption.sparsity.mode",
            every,
            f"an enumerated world for this corruption (a {self.kind}"
            " world delivers chunks at run time but cannot tabulate them)",
        )

    def describe(self) -> str:
        return f"{self.kind} world (P={self.n_prompts}, V={self.vocab_size}, H={self.horizon}, eos={self.eos})"


class SequenceSource:
    """Where compared sequences come from.

    ``draw(prompts, rng)`` gives one sequence per prompt entry; ``moments(reward)`` the mean and standard deviation
    of a reward's return under the source (for standardising a teacher); ``coverage(prompts, rng)`` a weighted set of
    sequences standing for its distribution (every sequence with its exact probability where the world can list
    them, else one draw per prompt entry).
    """

    def draw(self, prompts: np.ndarray, rng: np.random.Generator) -> Sequences:  # pragma: no cover - interface
        raise NotImplementedError

    def moments(self, reward: Rows) -> tuple[float, float]:  # pragma: no cover - interface
        raise NotImplementedError

    def coverage(self, prompts: np.ndarray, rng: np.random.Generator) -> tuple[Sequences, np.ndarray]:
        seqs = self.draw(prompts, rng)
        return seqs, np.ones(seqs.n)


def _mean_sd(mean: float, second: float) -> tuple[float, float]:
    """Mean and standard deviation from raw moments (the sd is 1 if it would be 0)."""
    sd = float(np.sqrt(max(second - mean * mean, 0.0)))
    return mean, (sd if sd > 1e-12 * max(1.0, abs(mean)) else 1.0)


class TokenSource(SequenceSource):
    """Sequences sampled token by token from a policy, or from a mixture of two (a coin per sequence)."""

    def __init__(self, world: World, policy: Rows, mix: tuple[float, Rows] | None = None):
        self.world, self.policy, self.mix = world, policy, mix

    def draw(self, prompts: np.ndarray, rng: np.random.Generator) -> Sequences:
        prompts = np.asarray(prompts, dtype=np.int64)
        if self.mix is None or self.mix[0] == 0:
            return self.world.sample(self.policy, prompts, rng)
        w, other = self.mix
        pick = rng.random(prompts.size) < w
        out = self.world.sample(self.policy, prompts, rng)
        if pick.any():
            alt = self.world.sample(other, prompts[pick], rng)
            out.tokens[pick], out.length[pick] = alt.tokens, alt.length
        return out

    def moments(self, reward: Rows) -> tuple[float, float]:
        m1, m2 = self.world.return_moments(self.policy, reward)
        if self.mix is not None and self.mix[0] > 0:
            w = self.mix[0]
            o1, o2 = self.world.return_moments(self.mix[1], reward)
            m1, m2 = (1 - w) * m1 + w * o1, (1 - w) * m2 + w * o2
        return _mean_sd(m1, m2)

    def myopic_range(self, teacher) -> tuple[float, float]:
        """The range of perceived returns over all sequences (what a Likert scale spans), exactly by two DPs."""
        if teacher.deltas or teacher.myopia < 1:
            raise ConfigError("feedback.levels", teacher.levels, "0 with annotator mixtures or myopia on a world that "
                              "cannot list its sequences (the Likert range is their min and max)")  # fmt: skip
        w = self.world
        hi = float(w.optimal_values(teacher.perceived)[0].max())
        lo = -float(w.optimal_values(teacher.perceived * -1.0)[0].max())
        return lo, hi


class WeightedSequences:
    """A policy given as weights over a set of sampled sequences (e.g. best-of-n on a world that cannot list its
    sequences): evaluated by weighted sums of exact sequence returns; its KL is to the sample's own empirical
    distribution under pi_ref (each draw weighing 1/N of its prompt)."""

    def __init__(self, world: World, seqs: Sequences, weights: np.ndarray):
        self.world, self.seqs = world, seqs
        mass = np.bincount(seqs.prompt, weights=weights, minlength=world.n_prompts)
        self.weights = weights / mass[seqs.prompt] / world.n_prompts
        self.counts = np.bincount(seqs.prompt, minlength=world.n_prompts)

    def level(self, t: int) -> np.ndarray:
        raise ConfigError("agent.name", "best_of_n", "an enumerated world for per-state rows of this policy")

    def evaluate(self, rewards: Mapping[str, Rows]) -> dict[str, float]:
        out = {name: float(self.weights @ self.world.sequence_returns(r, self.seqs)) for name, r in rewards.items()}
        q = 1.0 / (self.counts[self.seqs.prompt] * self.world.n_prompts)
        w = self.weights
        with np.errstate(divide="ignore", invalid="ignore"):
            out["kl_to_reference"] = float(max(np.where(w > 0, w * np.log(w / q), 0.0).sum(), 0.0))
        return out

    def top(self, prompt: int, k: int) -> tuple[Sequences, np.ndarray]:
        """The ``k`` heaviest sequences of ``prompt`` and their probabilities given the prompt."""
        mine = np.flatnonzero(self.seqs.prompt == prompt)
        order = mine[np.argsort(-self.weights[mine], kind="stable")[:k]]
        return self.seqs.take(order), self.weights[order] * self.world.n_prompts

    def prompt_returns(self, reward: Rows) -> np.ndarray:
        """(P,): the expected return of each prompt."""
        R = self.world.sequence_returns(reward, self.seqs)
        return (
            np.bincount(self.seqs.prompt, weights=self.weights * R, minlength=self.world.n_prompts)
            * self.world.n_prompts
        )

    def draw(self, prompts: np.ndarray, rng: np.random.Generator) -> Sequences:
        """Sequences from the weights (one per prompt entry)."""
        prompts = np.asarray(prompts, dtype=np.int64)
        rows = np.empty(prompts.size, dtype=np.int64)
        u = rng.random(prompts.size)
        for p in np.unique(prompts):
            idx = np.flatnonzero(self.seqs.prompt == p)
            cum = np.cumsum(self.weights[idx])
            mine = prompts == p
            rows[mine] = idx[np.minimum(np.searchsorted(cum, u[mine] * cum[-1], side="right"), idx.size - 1)]
        return self.seqs.take(rows)
