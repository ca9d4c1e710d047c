"""The compressed Markov world: exact answers at language-model scale when everything is Markov.

A text-MDP with ``V`` tokens and horizon ``H`` has ``~V^H`` prefixes. When the reward and the reference policy
depend on a prefix only through ``(prompt p, position t, last token y)`` (the Markov templates ``unigram``,
``position``, ``bigram``, ``prompt``, ``length``; a ``uniform``, ``bigram`` or ``eos_hazard`` reference), so do the
optimal values, the soft optimum and the value of any Markov policy, and that triple is the state:

* level 0: the ``P`` prompts (last token ``BOS``);
* level ``t >= 1``: ``(p, y)`` for every prompt and non-EOS token ``y``, prompt-major (``P * b`` states); the
  child of ``(p, y)`` under a non-EOS token ``a`` is ``(p, a)`` whatever ``y`` was, so children *merge*;
* when nothing depends on the last token (``track_last_token=False``), level ``t`` is just the ``P`` prompts:
  ``O(H P V)`` work at any ``V`` (50,000 tokens, horizon 64 in well under a second).

A Markov reward is kept factored, ``r(p, t, y, a) = bigram[y, a] + row[t, p, a]`` (:class:`FactoredReward`), so no
``(S, A)`` table is ever built: a level's rows are formed when asked. The argmax values use a screened max-plus
product (:class:`MaxPlus`) that mostly avoids reading the bigram matrix and is bit for bit the plain product; its
screen is built on a reward's first solve and kept on the reward (:meth:`FactoredReward.max_plus`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.errors import ConfigError, check
from sim.features import LAST_TOKEN_TEMPLATES, MARKOV_TEMPLATES, template_index
from sim.worlds.base import World

#: Oracle families and references that depend on a prefix only through (prompt, position, last token).
MARKOV_FAMILIES = ("linear", "length", "stutter")
MARKOV_REFERENCES = ("uniform", "eos_hazard", "bigram")
WHY = "on a compressed world (env.compressed=true)"

#: Rows of Q added and reduced at a time when unscreened: 64 rows x 1000 tokens x 8 bytes = 512 KiB stays in cache.
BLOCK_BYTES = 512 * 1024
#: Contiguous copies of the bigram matrix's columns a screened max-plus product keeps (:class:`MaxPlus`).
COLUMN_CACHE_BYTES = 64 * 1024**2

#: The largest (V + 1) x V table a bigram term may allocate: 1.5e8 float64 entries = 1.2 GB, i.e. V <= 12,246.
#: Beyond it, worlds must do without bigram terms (position-only oracles run at V = 50,000).
MAX_BIGRAM_ENTRIES = 150_000_000


def check_bigram_size(vocab_size: int, field: str, value: object) -> None:
    """Refuse a (V + 1) x V bigram table that would not fit, naming the setting that asks for it."""
    entries = (vocab_size + 1) * vocab_size
    if entries > MAX_BIGRAM_ENTRIES:
        v_max = int((np.sqrt(1 + 4 * MAX_BIGRAM_ENTRIES) - 1) / 2)
        raise ConfigError(
            field,
            value,
            f"no bigram term at vocab_size = {vocab_size}: its (V + 1) x V table would take "
            f"{8 * entries / 1e9:.1f} GB (bigram terms up to vocab_size = {v_max}; position-only worlds have no limit)",
        )


class MarkovWorld(World):
    """A compressed world over ``(prompt, position, last token)``; any size (nothing is enumerated).

    Args:
        n_prompts, vocab_size, horizon, eos: as :class:`sim.worlds.enumerated.EnumeratedWorld`.
        track_last_token: whether states keep the last token (needed by bigram rewards, references or features).
    """

    kind = "markov"

    def __init__(self, n_prompts: int, vocab_size: int, horizon: int, eos: bool = True, track_last_token: bool = True):
        self.track = bool(track_last_token) and horizon > 1
        P = int(n_prompts)
        b = vocab_size - 1 if eos else vocab_size
        sizes = [P] + [P * b if self.track else P] * (horizon - 1)
        super().__init__(P, vocab_size, horizon, eos, np.array(sizes, dtype=np.int64))
        self.depth = np.repeat(np.arange(self.horizon, dtype=np.int64), self.sizes)
        local = np.arange(self.n_states) - self.level_start[self.depth]
        deep = self.depth > 0
        if self.track:
            self.prompt = np.where(deep, local // max(b, 1), local)
            self.last_token = np.where(deep, local % max(b, 1) + self.first_token, -1)
        else:
            self.prompt = local
            self.last_token = np.full(self.n_states, -1, dtype=np.int64)
        self._prompt_t1 = np.repeat(np.arange(P), b) if self.track else np.arange(P)

    # ---------------------------------------------------------- capabilities
    @classmethod
    def check_config(cls, cfg, agent_templates: tuple[str, ...] = ()) -> None:
        """What keeps every quantity a function of (prompt, position, last token); bigram tables within memory."""
        from sim.worlds import bigram_uses

        e, c = cfg.env, cfg.corruption
        families = tuple(k.strip() for k in cfg.oracle.kind.split("+"))
        cls.check_oracle_names(families, cfg.oracle.form, cfg.oracle.kind)
        cls.check_reference_name(e.reference)
        for key, value in bigram_uses(cfg, agent_templates):
            check_bigram_size(e.vocab_size, key, value)
        cls.check_template_names(cfg.oracle.templates, "oracle.templates")
        cls.check_template_names(agent_templates, "agent.templates")
        token = c.noise.unit == "token"  # a fixed error per (state, token): Markov in (prompt, position, last token)
        check(c.noise.mode == "delivery" or not c.noise.active or token, "corruption.noise.mode", c.noise.mode,
              f"delivery {WHY}, or fixed with corruption.noise.unit=token (a fixed draw per complete sequence needs "
              "the sequences listed)")  # fmt: skip
        check(c.noise.mode == "delivery" or c.noise.drop == 0, "corruption.noise.drop", c.noise.drop,
              f"0 with corruption.noise.mode=fixed {WHY} (a fixed mask of dropped payments is not built)")  # fmt: skip
        check(c.noise.levels == 0, "corruption.noise.levels", c.noise.levels, f"0 {WHY} (the Likert scale spans the "
              "range of every payment, which needs the sequences listed)")  # fmt: skip
        check(not c.misspec.project_to, "corruption.misspec.project_to", c.misspec.project_to,
              f"[] {WHY} (the projection is a least-squares fit over every complete sequence)")  # fmt: skip
        check(c.misspec.exploit == 0, "corruption.misspec.exploit", c.misspec.exploit,
              f"0 {WHY} (the exploit is one whole output, which does not compress)")  # fmt: skip
        check(
            c.misspec.scope_tokens == 0 and c.misspec.scope_prompts == 1,
            "corruption.misspec.scope_tokens" if c.misspec.scope_tokens else "corruption.misspec.scope_prompts",
            c.misspec.scope_tokens or c.misspec.scope_prompts,
            f"off {WHY} (a scoped bigram term would depend on the position or prompt: not built)",
        )
        if cfg.pipeline == "rlhf":
            r = cfg.reward_model
            check(r.name == "linear", "reward_model.name", r.name, f"linear {WHY} (a table over ~V^H sequences)")
            if r.name == "linear":
                cls.check_template_names(r.templates, "reward_model.templates")
            check(r.pessimism == 0, "reward_model.pessimism", r.pessimism, f"0 {WHY} (a lower confidence bound per "
                  "sequence is not a Markov reward)")  # fmt: skip
            check(r.objective == "mean", "reward_model.objective", r.objective, f"mean {WHY} (the worst member or "
                  "a variance penalty per sequence is not a Markov reward)")  # fmt: skip

    @staticmethod
    def check_template_names(templates, field: str) -> None:
        for name in templates:
            check(name in MARKOV_TEMPLATES, field, name, f"Markov templates {list(MARKOV_TEMPLATES)} {WHY}: {name} "
                  "looks beyond the last token")  # fmt: skip

    @staticmethod
    def check_oracle_names(families: tuple[str, ...], form: str, kind: str) -> None:
        for f in families:
            check(f in MARKOV_FAMILIES, "oracle.kind", kind, f"families {list(MARKOV_FAMILIES)} {WHY}: {f} depends "
                  "on the whole prefix (co-occurrences, repetitions or a per-sequence term do not compress to "
                  "(prompt, position, last token))")  # fmt: skip
        check(form == "dense", "oracle.form", form, f"dense {WHY} (a sequence-form reward is paid on the last token, "
              "which depends on the whole path)")  # fmt: skip

    @staticmethod
    def check_reference_name(kind: str) -> None:
        check(kind in MARKOV_REFERENCES, "env.reference", kind, f"one of {list(MARKOV_REFERENCES)} {WHY} ({kind} draws "
              "independent logits per prefix, which does not compress)")  # fmt: skip

    def check_templates(self, templates, field: str) -> None:
        self.check_template_names(templates, field)

    def check_oracle(self, families: tuple[str, ...], form: str, kind: str) -> None:
        self.check_oracle_names(families, form, kind)

    def check_reference(self, kind: str) -> None:
        self.check_reference_name(kind)

    # ------------------------------------------------------------- structure
    def child(self, t, local, a):
        step = a - self.first_token
        if not self.track:
            return local
        p = np.where(np.asarray(t) == 0, local, local // self.branching)
        return p * self.branching + step

    def continuation(self, t: int, values_next: np.ndarray) -> np.ndarray:
        P, b = self.n_prompts, self.branching
        if not self.track:
            return np.broadcast_to(values_next[:, None], (P, b))
        per_prompt = values_next.reshape(P, b)
        return per_prompt if t == 0 else np.broadcast_to(per_prompt[:, None, :], (P, b, b)).reshape(P * b, b)

    def push(self, t: int, mass: np.ndarray) -> np.ndarray:
        P, b = self.n_prompts, self.branching
        if not self.track:
            return mass.sum(axis=1)
        return mass.reshape(P, -1, b).sum(axis=1).reshape(-1)

    def push_into(self, t: int, lo: int, hi: int, mass: np.ndarray, out: np.ndarray) -> None:
        P, b = self.n_prompts, self.branching
        if lo == 0 and hi == int(self.sizes[t]):
            out += self.push(t, mass)
        elif not self.track:  # state i of level t leads to state i of level t + 1
            out[lo:hi] += mass.sum(axis=1)
        elif t == 0:  # the prompts: prompt p's children are p * b .. p * b + b - 1
            out[lo * b : hi * b] += mass.reshape(-1)
        else:  # state p * b + y leads to p * b + a: sum the block's rows of each prompt
            per_prompt = out.reshape(P, b)
            first = lo // b
            for p in range(first, (hi - 1) // b + 1):
                rows = slice(max(lo, p * b) - lo, min(hi, (p + 1) * b) - lo)
                per_prompt[p] += mass[rows].sum(axis=0)

    def level_prompts(self, t: int) -> np.ndarray:
        """Prompts of the level-``t`` states."""
        return np.arange(self.n_prompts) if t == 0 else self._prompt_t1

    # --------------------------------------------------------------- rewards
    def linear_reward(self, features, theta: np.ndarray) -> FactoredReward:
        """``theta . phi`` over Markov templates, factored: templates of the last token go to the ``(V + 1, V)``
        bigram table, the rest to ``row[t, p, a]`` (each template's indices from :func:`sim.features.template_index`).
        """
        P, V, H = self.n_prompts, self.vocab_size, self.horizon
        t, p, a = np.arange(H)[:, None, None], np.arange(P)[None, :, None], np.arange(V)[None, None, :]
        end = self.end_length(t, a)
        row = np.zeros((H, P, V))
        bigram = None
        for name, off, dim in zip(features.templates, features.offsets, features.dims, strict=False):
            w = np.append(theta[off : off + dim], 0.0)  # index -1 reads the appended zero
            if name in LAST_TOKEN_TEMPLATES:
                check_bigram_size(V, features.field, name)
                if not self.track:
                    raise ConfigError(features.field, name, "a world that tracks the last token (built without it)")
                idx = template_index(name, 0, 0, np.arange(V + 1)[:, None], np.arange(V)[None, :], -1, None, V)
                bigram = w[idx] if bigram is None else bigram + w[idx]
            else:
                row += w[template_index(name, p, t, -1, a, end, None, V)]
        return FactoredReward(self, bigram, row)

    # ---------------------------------------------------------- exact solve
    def optimal_values(self, reward) -> list[np.ndarray]:
        """Optimal values per level; with a bigram term each step is a screened max-plus product (:class:`MaxPlus`)
        over the fixed bigram matrix, bit for bit the plain product. The screen is built on the reward's first solve
        (one read of the bigram matrix) and kept on it (:meth:`FactoredReward.max_plus`), so later solves of the same
        reward cost ``O(H P (k + m) V)``."""
        if not isinstance(reward, FactoredReward) or reward.bigram is None:
            return super().optimal_values(reward)
        P, V, H, b = self.n_prompts, self.vocab_size, self.horizon, self.branching
        cont = self.continuing()
        product = reward.max_plus() if H > 1 else None  # built on the first solve, kept on the reward
        vec = np.empty(V)
        values: list[np.ndarray] = [np.empty(0)] * H
        nxt = None  # (P, b): the next level's values per prompt and last token
        for t in reversed(range(H)):
            Vt = np.empty((P, 1 if t == 0 else b))
            for p in range(P):
                np.copyto(vec, reward.row[t, p])
                if nxt is not None:
                    vec[cont] += nxt[p]
                if t == 0:
                    Vt[p, 0] = np.max(reward.bigram[self.bos] + vec)
                else:
                    product(vec, Vt[p])
            nxt = Vt
            values[t] = Vt.reshape(-1)
        return values


@dataclass(eq=False)
class FactoredReward:
    """A Markov reward ``r(p, t, y, a) = bigram[y, a] + row[t, p, a]``.

    Attributes:
        world: the Markov world.
        bigram: (V + 1, V) or None (no dependence on the previous token; row ``V`` is BOS). Not modified in place once
            the reward has been solved: the screen of :meth:`max_plus` is kept for it, and the array is made
            read-only then (assign a new array to change the reward; ``+`` and ``*`` return new rewards).
        row: (H, P, V): the unigram, position, prompt and length-at-end terms.
    """

    world: MarkovWorld
    bigram: np.ndarray | None
    row: np.ndarray
    _screen: tuple | None = field(default=None, init=False, repr=False)

    def max_plus(self) -> MaxPlus:
        """The screened max-plus product over the bigram rows of the non-EOS tokens (:class:`MaxPlus`), built on the
        first call and kept on this reward while ``bigram`` stays the same array (assigning a new one rebuilds it).

        The cache is one screen per reward object, freed with it, and bounded: at most
        :data:`COLUMN_CACHE_BYTES` plus the candidates (about ``12 x 256`` bytes per token, ``4 x`` that at worst),
        e.g. 90 MB at V = 10,000 beside the bigram table's 800 MB (``reward.max_plus().cached_bytes``). It is not
        pickled (a copy rebuilds its own). The first solve builds it (one read of the table: 0.34 s at V = 10,000,
        H = 8, against 0.02 s for each later solve).
        """
        w = self.world
        cached = self._screen
        if cached is None or cached[0] is not self.bigram:
            self.bigram.flags.writeable = False  # a screen of stale entries would be silently wrong
            cached = (self.bigram, MaxPlus(self.bigram[w.first_token : w.vocab_size]))
            self._screen = cached
        return cached[1]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_screen": None}

    def level(self, t: int) -> np.ndarray:
        w = self.world
        p = w.level_prompts(t)
        if self.bigram is None:
            return self.row[t][p]
        if t == 0:
            return self.bigram[w.bos] + self.row[0]
        P, b = w.n_prompts, w.branching
        return (self.bigram[None, w.first_token : w.vocab_size] + self.row[t][:, None, :]).reshape(P * b, -1)

    def rows_at(self, t: int, local: np.ndarray) -> np.ndarray:
        """The rows of the level-``t`` states ``local``: (n, V)."""
        w = self.world
        states = w.level_start[t] + np.asarray(local)
        p = w.prompt[states]
        if self.bigram is None:
            return self.row[t][p]
        last = w.last_token[states]
        return self.bigram[np.where(last < 0, w.bos, last)] + self.row[t][p]

    def at(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``r(s, a)`` elementwise for global states."""
        w = self.world
        t, p = w.depth[states], w.prompt[states]
        r = self.row[t, p, actions]
        if self.bigram is not None:
            r = r + self.bigram[np.where(w.last_token[states] < 0, w.bos, w.last_token[states]), actions]
        return r

    def __add__(self, other: FactoredReward) -> FactoredReward:
        if self.bigram is None and other.bigram is None:
            bigram = None
        elif self.bigram is None or other.bigram is None:
            bigram = self.bigram if other.bigram is None else other.bigram
        else:
            bigram = self.bigram + other.bigram
        return FactoredReward(self.world, bigram, self.row + other.row)

    def __mul__(self, c: float) -> FactoredReward:
        return FactoredReward(self.world, None if self.bigram is None else c * self.bigram, c * self.row)

    __rmul__ = __mul__


class MaxPlus:
    """Exact ``out[y] = max_a (B[y, a] + v[a])`` for a fixed ``B`` and many vectors ``v``, mostly without reading B.

    The optimal-value recursion is this max-plus product once per position. Done plainly it reads all of ``B`` per
    call (an add and a max over ``n x V`` entries). A screen computes the max exactly over a small candidate set and
    proves that nothing outside it can beat it:

    * ``T_y^j``: the entries of row ``y`` above a threshold ``thr_j[y] = max_a B[y, a] - delta_j``, in tiers
      ``j = 0, 1, ...`` (``delta_j`` is chosen so that about ``k * growth^j`` entries per row pass; found once);
    * ``S``: the ``m`` columns with the largest ``v[a]`` (found per call, O(V)).

    Every column outside ``T_y^j`` and ``S`` has ``B[y, a] <= thr_j[y]`` and ``v[a] <= v_m`` (the largest ``v``
    outside S), so, because rounding is monotone, ``fl(B[y, a] + v[a]) <= fl(thr_j[y] + v_m)``. Each call takes the
    max over ``T_y^0`` and ``S`` for every row; rows whose max reaches the bound are exact, bit for bit the plain
    result; the others take the next tier's candidates (only theirs), and rows left after the last tier (and every
    row when the screen cannot help: non-finite entries, constant rows, too many candidates) are computed plainly,
    a cache-sized block of rows at a time. A call costs ``O((k + m) n)`` plus ``V`` per row left to the plain product.

    The columns of ``B`` that ``S`` picks are read from a cache of contiguous copies (a column read in place is a
    strided gather, about 30 times slower): the whole transpose when it fits in :data:`COLUMN_CACHE_BYTES`, else
    that many bytes of the most recently used columns. With the candidates, the cache is what the screen keeps
    beyond ``B``: at most ``COLUMN_CACHE_BYTES`` plus about ``12 k growth^(tiers-1) n`` bytes of candidates (at most
    4 times that), e.g. 67 + 23 MB at V = 10,000 with the defaults (measured), against B's 800 MB.

    Args:
        B: (n, V) float64, not modified while the screen is in use (it is read, never copied whole, except for the
            transpose of a small B).
        k: row candidates of the first tier; m: column candidates (at most ``V / 4``; by default ``V / 16`` within
            [32, 128]). A tier has at most ``max(min(V / 4, 64), V / 16)`` candidates per row: at V = 1000 the tiers
            are 16 and 64, at V = 10,000 16, 64 and 256.
        tiers, growth: the number of row tiers, and the factor between their candidate counts.
    """

    def __init__(self, B: np.ndarray, k: int = 16, m: int | None = None, tiers: int = 3, growth: int = 4) -> None:
        self.B = B
        n, V = B.shape
        if m is None:  # more columns as V grows (fewer rows left to the plain product), 64 at V = 1000, 128 from 2048
            m = min(128, max(32, V // 16))
        self.m = min(m, max(1, V // 4))
        self.block = max(1, BLOCK_BYTES // (8 * V))
        self.screen = V >= 4
        self.n_tiers = 0
        if self.screen:  # row tiers of k, k growth, ... candidates, at most max(min(V / 4, 64), V / 16)
            cap = max(min(V // 4, 64), V // 16, 1)
            self._build(sorted({min(k * growth**j, cap) for j in range(max(1, tiers))}))

    def _build(self, ks: list[int]) -> None:
        B = self.B
        n, V = B.shape
        rmax = B.max(axis=1)
        sample = np.linspace(0, n - 1, min(n, 16)).astype(int)
        kth = np.partition(B[sample], [V - k for k in ks], axis=1)
        deltas: list[tuple[int, float]] = []  # (k, delta), delta strictly increasing
        for k in ks:
            d = float(np.median(rmax[sample] - kth[:, V - k]))
            if np.isfinite(d) and d > (deltas[-1][1] if deltas else 0.0):
                deltas.append((k, d))
        if not deltas or not np.isfinite(rmax).all():
            self.screen = False
            return
        while True:  # the widest tier must stay near its target size (else drop it; no tier left: no screen)
            mask = B > (rmax - deltas[-1][1])[:, None]
            if np.count_nonzero(mask) <= 4 * deltas[-1][0] * n:
                break
            deltas.pop()
            if not deltas:
                self.screen = False
                return
        J = len(deltas)
        thr = rmax[None, :] - np.array([d for _, d in deltas])[:, None]  # (J, n): non-increasing along the tiers
        flat = np.flatnonzero(mask)
        del mask
        rows = flat // V
        cols = flat - rows * V
        vals = B.ravel()[flat]
        # an entry's tier: the first j with B > thr_j[y] (every entry passes the last one)
        tier = np.zeros(flat.size, dtype=np.int8)
        for j in range(J - 1):
            tier += vals <= thr[j, rows]
        parts = [np.flatnonzero(tier == j) for j in range(J)]  # by tier, then row: each tier's rows contiguous
        order = np.concatenate(parts)
        self.tval = vals[order]
        self.tcol = cols[order].astype(np.int32 if V < 2**31 else np.int64)
        # (tier j, row y) holds tval[bounds[j * n + y] : bounds[j * n + y + 1]]
        offsets = np.cumsum([0] + [p.size for p in parts])
        self.bounds = np.concatenate(
            [offsets[j] + np.searchsorted(rows[p], np.arange(n)) for j, p in enumerate(parts)] + [offsets[-1:]]
        )
        self.thr = thr
        self.n_tiers = J
        b0 = self.bounds[: n + 1]
        # rows without first-tier candidates (their max rounds to the threshold) are left out of the first tier's
        # segmented max: clipping their starts instead would cut the last candidate off the row before them
        self.has0 = np.flatnonzero(b0[1:] > b0[:-1])
        self.starts0 = b0[:-1][self.has0]
        C = min(V, max(self.m, COLUMN_CACHE_BYTES // (8 * n)))
        self._coltmp = np.empty(n)
        self._stamp = np.full(C, -1, dtype=np.int64)  # the call that last used each cached column
        self._tick = 0
        if C == V:  # the whole transpose
            self._cols = np.ascontiguousarray(B.T)
            self._slot = np.arange(V)
            self._owner = None
        else:
            self._cols = np.empty((C, n))
            self._slot = np.full(V, -1, dtype=np.int64)  # column -> its row in _cols, -1 if not cached
            self._owner = np.full(C, -1, dtype=np.int64)

    @property
    def cached_bytes(self) -> int:
        """Bytes the screen keeps beyond ``B`` (candidates, thresholds and the column cache)."""
        if not self.screen:
            return 0
        parts = (self.tval, self.tcol, self.bounds, self.thr, self.has0, self.starts0, self._cols, self._slot)
        return int(sum(x.nbytes for x in parts))

    def _column_slots(self, S: np.ndarray) -> np.ndarray:
        """Rows of the column cache holding the columns ``S`` (those not cached are copied in, evicting the least
        recently used; never a column of ``S``, since ``m`` <= the cache's size)."""
        if self._owner is None:  # the whole transpose: column a is row a
            return S
        self._tick += 1
        slots = self._slot[S]
        miss = slots < 0
        if miss.any():
            new = S[miss]
            self._stamp[slots[~miss]] = self._tick
            victims = np.argpartition(self._stamp, new.size - 1)[: new.size]
            old = self._owner[victims]
            self._slot[old[old >= 0]] = -1
            self._cols[victims] = np.take(self.B, new, axis=1).T
            self._owner[victims] = new
            self._slot[new] = victims
            slots = self._slot[S]
        self._stamp[slots] = self._tick
        return slots

    def _column_max(self, slots: np.ndarray, vs: np.ndarray) -> np.ndarray:
        """``max_i (cols[slots[i]] + vs[i])`` over the cached columns: in one (m, n) temporary while it stays in cache
        (1 MB), else a column at a time (measured: each is the faster one on its side)."""
        if slots.size * self._cols.shape[1] * 8 <= 2 * BLOCK_BYTES:
            return (self._cols[slots] + vs[:, None]).max(axis=0)
        best = self._cols[slots[0]] + vs[0]
        tmp = self._coltmp
        for i in range(1, slots.size):
            np.add(self._cols[slots[i]], vs[i], out=tmp)
            np.maximum(best, tmp, out=best)
        return best

    def plain(self, v: np.ndarray, out: np.ndarray, rows: np.ndarray | None = None) -> None:
        """The unscreened product (over ``rows`` only, if given), in blocks of rows that stay in cache."""
        n = self.B.shape[0] if rows is None else rows.size
        buf = np.empty((min(self.block, n), self.B.shape[1]))
        for lo in range(0, n, self.block):
            hi = min(lo + self.block, n)
            b = buf[: hi - lo]
            if rows is None:
                np.add(self.B[lo:hi], v, out=b)
                np.max(b, axis=1, out=out[lo:hi])
            else:  # a block of the rows at a time: no copy of all of them
                np.take(self.B, rows[lo:hi], axis=0, out=b)
                b += v
                out[rows[lo:hi]] = b.max(axis=1)

    def __call__(self, v: np.ndarray, out: np.ndarray) -> int:
        """Write the product into ``out`` (n,); returns the number of rows computed plainly."""
        n, V = self.B.shape
        if not self.screen or not np.isfinite(v).all():
            self.plain(v, out)
            return n
        order = np.argpartition(v, V - self.m - 1)
        S = order[V - self.m :]
        v_rest = v[order[V - self.m - 1]]
        best = self._column_max(self._column_slots(S), v[S])
        end0 = int(self.bounds[n])
        if end0:
            first = np.maximum.reduceat(self.tval[:end0] + v[self.tcol[:end0]], self.starts0)
            if self.has0.size == n:
                np.maximum(best, first, out=best)
            else:
                np.maximum(best[self.has0], first, out=first)
                best[self.has0] = first
        exact = best >= self.thr[0] + v_rest
        out[exact] = best[exact]
        rest = np.flatnonzero(~exact)
        best = best[rest]
        for j in range(1, self.n_tiers):  # the next tier's candidates of the rows left, and only theirs
            if not rest.size:
                return 0
            lo = self.bounds[j * n + rest]
            count = self.bounds[j * n + rest + 1] - lo
            total = int(count.sum())
            if total:
                has = count > 0
                start = np.cumsum(count) - count
                idx = np.repeat(lo - start, count) + np.arange(total)
                seg = np.maximum.reduceat(self.tval[idx] + v[self.tcol[idx]], start[has])
                np.maximum(best[has], seg, out=seg)
                best[has] = seg
            exact = best >= self.thr[j, rest] + v_rest
            out[rest[exact]] = best[exact]
            rest, best = rest[~exact], best[~exact]
        if rest.size:
            self.plain(v, out, rest)
        return int(rest.size)
