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
product (:class:`MaxPlus`) that mostly avoids reading the bigram matrix and is bit for bit the plain product.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        over the fixed bigram matrix, bit for bit the plain product."""
        if not isinstance(reward, FactoredReward) or reward.bigram is None:
            return super().optimal_values(reward)
        P, V, H, b, f = self.n_prompts, self.vocab_size, self.horizon, self.branching, self.first_token
        cont = self.continuing()
        product = MaxPlus(reward.bigram[f:V], k=max(16, V // 40)) if H > 1 else None
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
        bigram: (V + 1, V) or None (no dependence on the previous token; row ``V`` is BOS).
        row: (H, P, V): the unigram, position, prompt and length-at-end terms.
    """

    world: MarkovWorld
    bigram: np.ndarray | None
    row: np.ndarray

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

    * ``T_y``: the entries of row ``y`` above a threshold ``thr_y = max_a B[y, a] - delta`` (found once; ``delta``
      is chosen so that about ``k`` entries per row pass);
    * ``S``: the ``m`` columns with the largest ``v[a]`` (found per call, O(V)).

    Every other column has ``B[y, a] <= thr_y`` and ``v[a] <= v_m`` (the largest ``v`` outside S), so, because
    rounding is monotone, ``fl(B[y, a] + v[a]) <= fl(thr_y + v_m)``. Rows whose candidate max reaches that bound
    are exact, bit for bit the plain result; the others (and every row when the screen cannot help: non-finite
    entries, constant rows, too many candidates) are computed plainly in cache-sized blocks.

    Args:
        B: (n, V) float64.
        k: the target number of row candidates; m: the number of column candidates (both at most ``V / 4``).
    """

    #: A transposed copy makes the per-call column gather contiguous; above this size it is gathered in place.
    TRANSPOSE_BYTES = 64 * 1024**2

    def __init__(self, B: np.ndarray, k: int = 16, m: int = 64) -> None:
        self.B = B
        n, V = B.shape
        self.m = min(m, max(1, V // 4))
        self.block = max(1, BLOCK_BYTES // (8 * V))
        self.screen = V >= 4
        if self.screen:
            self._build(min(k, max(1, V // 4)))

    def _build(self, k: int) -> None:
        B = self.B
        n, V = B.shape
        rmax = B.max(axis=1)
        sample = np.linspace(0, n - 1, min(n, 16)).astype(int)
        kth = np.partition(B[sample], V - k, axis=1)[:, V - k]
        delta = float(np.median(rmax[sample] - kth))
        if not (np.isfinite(rmax).all() and np.isfinite(delta) and delta > 0):
            self.screen = False
            return
        thr = rmax - delta
        mask = B > thr[:, None]
        if np.count_nonzero(mask) > 4 * k * n:
            self.screen = False
            return
        flat = np.flatnonzero(mask)
        rows = flat // V
        self.tval = B.ravel()[flat]
        self.tcol = flat - rows * V
        starts = np.searchsorted(rows, np.arange(n))
        # A row whose threshold rounded to its max has no candidates: it is always computed plainly.
        self.empty = np.diff(np.append(starts, flat.size)) == 0
        self.starts = np.minimum(starts, flat.size - 1)
        self.thr = thr
        self.BT = np.ascontiguousarray(B.T) if B.nbytes <= self.TRANSPOSE_BYTES else None

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
        if self.BT is not None:
            best = (self.BT[S] + v[S, None]).max(axis=0)
        else:
            best = (np.take(self.B, S, axis=1) + v[S]).max(axis=1)
        np.maximum(best, np.maximum.reduceat(self.tval + v[self.tcol], self.starts), out=best)
        exact = (best >= self.thr + v_rest) & ~self.empty
        out[exact] = best[exact]
        rest = np.flatnonzero(~exact)
        if rest.size:
            self.plain(v, out, rest)
        return int(rest.size)
