"""Compressed worlds: exact answers at language-model scale when everything is Markov.

A text-MDP with ``V`` tokens and horizon ``H`` has ``~V^H`` prefixes, far beyond enumeration. But when the reward
and the reference policy depend on a prefix only through ``(prompt p, position t, last token y)`` (the Markov
templates ``unigram``, ``position``, ``bigram``, ``prompt``, ``length``; a ``uniform``, ``bigram`` or ``eos_hazard``
reference), so do the optimal values, the KL-regularised soft optimum and its policy. Every exact quantity is then
a dynamic programme over ``(p, t, y)``: ``O(H P V^2)`` work, or ``O(H P V)`` when nothing depends on ``y``.

Here ``y`` ranges over the tokens plus ``BOS`` (index ``V``, the "last token" at ``t = 0``). A Markov reward is kept
in additive form::

    r(p, t, y, a) = bigram[y, a] + row[t, p, a]

with ``row`` holding the unigram, position, prompt and length-at-end terms, so ``Q_t`` is never materialised beyond
a cache-sized block of rows. Policies are callables ``t -> (P, Y, V)`` tables (``Y = V + 1``, or 1 when nothing
depends on ``y``), built on the fly from the stored values, so memory stays ``O(H P V + P V^2)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import softmax

from sim.errors import ConfigError, check
from sim.features import template_dim  # noqa: F401  (re-exported for callers)

MARKOV_TEMPLATES = ("unigram", "position", "bigram", "prompt", "length")
MARKOV_REFERENCES = ("uniform", "bigram", "eos_hazard")
MARKOV_ORACLES = ("linear", "length", "stutter")
#: Rows of Q added and reduced at a time when unscreened: 64 rows x 1000 tokens x 8 bytes = 512 KiB stays in cache
#: (measured best).
BLOCK_BYTES = 512 * 1024

#: The largest (V + 1) x V table a bigram term may allocate: 1.5e8 float64 entries = 1.2 GB, i.e. V <= 12,246.
#: Beyond it, worlds must do without bigram terms (position-only oracles run at V = 50,000).
MAX_BIGRAM_ENTRIES = 150_000_000

Policy = Callable[[int], np.ndarray]


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


@dataclass(frozen=True)
class MarkovWorld:
    """The sizes of a compressed world (nothing is enumerated).

    Args:
        n_prompts, vocab_size, horizon, eos: as :class:`sim.mdp.TextMDP`; any size.
    """

    n_prompts: int
    vocab_size: int
    horizon: int
    eos: bool = True

    def __post_init__(self) -> None:
        check(self.n_prompts >= 1, "n_prompts", self.n_prompts, "an integer >= 1")
        check(self.vocab_size >= 2, "vocab_size", self.vocab_size, "an integer >= 2")
        check(self.horizon >= 1, "horizon", self.horizon, "an integer >= 1")

    @property
    def first_token(self) -> int:
        return 1 if self.eos else 0

    @property
    def bos(self) -> int:
        """The row index of the 'no previous token' state."""
        return self.vocab_size

    def continuing(self) -> np.ndarray:
        """Bool (V,): tokens that continue the episode (everything but EOS) before the last position."""
        c = np.ones(self.vocab_size, dtype=bool)
        if self.eos:
            c[0] = False
        return c


@dataclass
class MarkovReward:
    """A Markov reward in additive form: ``r(p, t, y, a) = bigram[y, a] + row[t, p, a]``.

    Attributes:
        bigram: (V + 1, V) or None (no dependence on the previous token).
        row: (H, P, V), the unigram, position, prompt and length-at-end terms.
    """

    bigram: np.ndarray | None
    row: np.ndarray
    theta: np.ndarray | None = field(default=None, repr=False)

    def rows(self, t: int, p: int, ys: slice | np.ndarray = slice(None)) -> np.ndarray:
        """``r(p, t, y, .)`` for the rows ``ys``: (n_rows, V)."""
        if self.bigram is None:
            return self.row[t, p][None, :]
        return self.bigram[ys] + self.row[t, p]

    def token(self, p: np.ndarray, t: int | np.ndarray, y: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``r(p, t, y, a)`` elementwise: the reward of token ``a`` after ``y`` at position ``t`` of prompt ``p``."""
        r = self.row[t, p, a]
        return r + self.bigram[y, a] if self.bigram is not None else r


def _end_lengths(world: MarkovWorld, t: int) -> np.ndarray:
    """Int (V,): the response length a token completes at position t, or -1 if it continues."""
    L = np.full(world.vocab_size, -1)
    if t == world.horizon - 1:
        L[:] = world.horizon
    if world.eos:
        L[0] = t
    return L


def markov_reward_from_theta(world: MarkovWorld, templates, theta: np.ndarray) -> MarkovReward:
    """The Markov reward of linear weights ``theta`` over ``templates`` (same layout as :class:`FeatureMap`).

    Raises:
        ConfigError: naming a template that breaks the Markov property.
    """
    for name in templates:
        if name not in MARKOV_TEMPLATES:
            raise ConfigError(
                "oracle.templates",
                name,
                f"Markov templates {list(MARKOV_TEMPLATES)} on a compressed world ({name} looks at more than the "
                "last token, so the prefix no longer compresses to (prompt, position, last token))",
            )
    V, H, P = world.vocab_size, world.horizon, world.n_prompts
    row = np.zeros((H, P, V))
    bigram = None
    offset = 0
    for name in templates:
        dim = template_dim(world, name)
        w = theta[offset : offset + dim]
        offset += dim
        if name == "unigram":
            row += w[None, None, :]
        elif name == "position":
            row += w.reshape(H, V)[:, None, :]
        elif name == "prompt":
            row += w.reshape(P, V)[None, :, :]
        elif name == "bigram":
            bigram = w.reshape(V + 1, V).copy()  # sized by the caller, which checked it
        elif name == "length":
            for t in range(H):
                L = _end_lengths(world, t)
                row[t, :, L >= 0] += w[L[L >= 0]][:, None]
    return MarkovReward(bigram=bigram, row=row, theta=theta)


@dataclass
class MarkovReference:
    """A Markov reference policy: ``pi_ref(a | p, t, y)`` from a bigram table and/or a per-position table."""

    bigram: np.ndarray | None  # (V + 1, V) rows summing to 1
    position: np.ndarray | None  # (H, V) rows summing to 1

    def rows(self, t: int, ys: slice | np.ndarray = slice(None)) -> np.ndarray:
        if self.bigram is not None:
            return self.bigram[ys]
        return self.position[t][None, :]

    @property
    def depends_on_last_token(self) -> bool:
        return self.bigram is not None


def markov_reference(
    world: MarkovWorld,
    kind: str = "uniform",
    rng: np.random.Generator | None = None,
    temperature: float = 1.0,
    hazard: tuple[float, float] = (0.1, 0.6),
) -> MarkovReference:
    """The Markov reference policies, drawn exactly as :func:`sim.reference.make_reference` draws them."""
    if kind not in MARKOV_REFERENCES:
        raise ConfigError(
            "env.reference",
            kind,
            f"one of {list(MARKOV_REFERENCES)} on a compressed world ({kind} draws independent logits per prefix, "
            "which does not compress)",
        )
    V, H = world.vocab_size, world.horizon
    rng = rng if rng is not None else np.random.default_rng(0)
    if kind == "uniform":
        return MarkovReference(None, np.full((H, V), 1.0 / V))
    if kind == "bigram":
        check_bigram_size(V, "env.reference", kind)
        return MarkovReference(softmax(rng.normal(size=(V + 1, V)) / temperature, axis=1), None)
    check(world.eos, "env.reference", kind, "eos_hazard only with env.eos = true")
    lo, hi = hazard
    frac = np.arange(H) / max(H - 1, 1)
    p_eos = lo + (hi - lo) * frac
    table = np.empty((H, V))
    table[:, 0] = p_eos
    table[:, 1:] = ((1 - p_eos) / (V - 1))[:, None]
    return MarkovReference(None, table)


def _n_rows(world: MarkovWorld, reward: MarkovReward, ref: MarkovReference | None) -> int:
    """Y: V + 1 rows when something depends on the last token, else 1."""
    dep = reward.bigram is not None or (ref is not None and ref.depends_on_last_token)
    return world.vocab_size + 1 if dep else 1


def _continuation(world: MarkovWorld, t: int, V_next: np.ndarray | None, p: int, rows: int) -> np.ndarray:
    """(V,) value of continuing with each token from position t: V_{t+1}[p, a] (0 for EOS and at the horizon)."""
    cont = np.zeros(world.vocab_size)
    if V_next is not None and t < world.horizon - 1:
        nxt = V_next[p] if rows > 1 else np.full(world.vocab_size, V_next[p, 0])
        cont[world.continuing()] = nxt[: world.vocab_size][world.continuing()]
    return cont


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
        B = self.B if rows is None else self.B[rows]
        buf = np.empty((min(self.block, B.shape[0]), B.shape[1]))
        res = out if rows is None else np.empty(B.shape[0])
        for lo in range(0, B.shape[0], self.block):
            hi = min(lo + self.block, B.shape[0])
            np.add(B[lo:hi], v, out=buf[: hi - lo])
            np.max(buf[: hi - lo], axis=1, out=res[lo:hi])
        if rows is not None:
            out[rows] = res

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


def optimal_values(world: MarkovWorld, reward: MarkovReward) -> list[np.ndarray]:
    """Optimal values ``V_t[p, y]`` for t = 0..H-1 (each (P, Y)), by backward induction.

    With a bigram term each step is a max-plus product with the fixed ``bigram`` matrix, screened by
    :class:`MaxPlus` so that most rows never read it (exact, bit for bit the plain product). Only reachable rows
    are computed: ``BOS`` at t = 0, the non-EOS tokens after (the other rows are left NaN).
    """
    P, V, H = world.n_prompts, world.vocab_size, world.horizon
    Y = _n_rows(world, reward, None)
    cont = world.continuing()
    lo = world.first_token
    product = MaxPlus(reward.bigram[lo:V]) if reward.bigram is not None and H > 1 else None
    vec = np.empty(V)
    values: list[np.ndarray] = [np.empty(0)] * H
    V_next = None
    for t in reversed(range(H)):
        Vt = np.full((P, Y), np.nan)
        for p in range(P):
            np.copyto(vec, reward.row[t, p])
            if V_next is not None:
                vec[cont] += V_next[p, :V][cont] if Y > 1 else V_next[p, 0]
            if reward.bigram is None:
                Vt[p, 0] = vec.max()
            elif t == 0:
                Vt[p, world.bos] = np.max(reward.bigram[world.bos] + vec)
            else:
                product(vec, Vt[p, lo:V])
        values[t] = V_next = Vt
    return values


def optimal_return(world: MarkovWorld, reward: MarkovReward) -> float:
    """``max_pi J_r(pi)``: the mean over prompts of ``V_0[p, BOS]``."""
    V0 = optimal_values(world, reward)[0]
    return float(V0[:, -1].mean())


def soft_values(world: MarkovWorld, reward: MarkovReward, ref: MarkovReference, beta: float) -> list[np.ndarray]:
    """Soft values ``V_t[p, y] = beta log sum_a pi_ref(a|y) exp(Q_t(p, y, a) / beta)`` (log-sum-exp)."""
    check(np.isfinite(beta) and beta > 0, "agent.beta", beta, "a finite number > 0")
    P, H = world.n_prompts, world.horizon
    Y = _n_rows(world, reward, ref)
    values: list[np.ndarray] = [np.empty(0)] * H
    V_next = None
    for t in reversed(range(H)):
        Vt = np.empty((P, Y))
        for p in range(P):
            z = _soft_logits(world, reward, ref, beta, t, p, V_next, Y)
            m = z.max(axis=1, keepdims=True)
            Vt[p] = beta * (m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))
        values[t] = V_next = Vt
    return values


def _q_rows(world, reward, t, p, V_next, Y) -> np.ndarray:
    vec = reward.row[t, p] + _continuation(world, t, V_next, p, Y)
    return vec[None, :] if reward.bigram is None else reward.bigram + vec


def _soft_logits(world, reward, ref, beta, t, p, V_next, Y) -> np.ndarray:
    q = _q_rows(world, reward, t, p, V_next, Y)
    with np.errstate(divide="ignore"):
        log_ref = np.log(ref.rows(t))
    z = log_ref + q / beta
    return np.broadcast_to(z, (Y, world.vocab_size)) if z.shape[0] != Y else z


def greedy_policy(world: MarkovWorld, reward: MarkovReward) -> Policy:
    """The deterministic optimal policy as a callable ``t -> (P, Y, V)``."""
    values = optimal_values(world, reward)
    Y = values[0].shape[1]

    def at(t: int) -> np.ndarray:
        V_next = values[t + 1] if t + 1 < world.horizon else None
        out = np.zeros((world.n_prompts, Y, world.vocab_size))
        for p in range(world.n_prompts):
            q = _q_rows(world, reward, t, p, V_next, Y)
            out[p, np.arange(Y), np.broadcast_to(q, (Y, q.shape[1])).argmax(axis=1)] = 1.0
        return out

    return at


def soft_policy(world: MarkovWorld, reward: MarkovReward, ref: MarkovReference, beta: float) -> Policy:
    """The KL-regularised optimum ``pi*(a|p,t,y) ∝ pi_ref exp(Q / beta)`` as a callable ``t -> (P, Y, V)``."""
    values = soft_values(world, reward, ref, beta)
    Y = values[0].shape[1]

    def at(t: int) -> np.ndarray:
        V_next = values[t + 1] if t + 1 < world.horizon else None
        return np.stack(
            [softmax(_soft_logits(world, reward, ref, beta, t, p, V_next, Y), axis=1) for p in range(world.n_prompts)]
        )

    return at


def reference_policy(world: MarkovWorld, ref: MarkovReference) -> Policy:
    """pi_ref as a policy callable."""
    Y = world.vocab_size + 1 if ref.depends_on_last_token else 1
    return lambda t: np.broadcast_to(ref.rows(t), (world.n_prompts, Y, world.vocab_size))


def evaluate(
    world: MarkovWorld, policy: Policy, rewards: dict[str, MarkovReward], ref: MarkovReference
) -> dict[str, float]:
    """Exact returns of ``policy`` under each reward and its sequence-level KL to pi_ref, by a forward pass.

    ``d_t[p, y]`` is the probability of being at position t with last token y; ``d_{t+1}[p, a] = sum_y d_t[p, y]
    pi_t(a|p, y)`` for continuing tokens a.

    Returns:
        ``{name: J_name(pi)}`` for each reward, and ``kl_to_reference``.
    """
    P, V, H = world.n_prompts, world.vocab_size, world.horizon
    depends = ref.depends_on_last_token or any(r.bigram is not None for r in rewards.values())
    d = np.zeros((P, V + 1))
    d[:, world.bos] = 1.0 / P
    totals = dict.fromkeys(rewards, 0.0)
    kl = 0.0
    cont = world.continuing()
    for t in range(H):
        pi = policy(t)
        Y = V + 1 if depends or pi.shape[1] > 1 else 1
        pi = np.broadcast_to(pi, (P, Y, V))
        ref_rows = np.broadcast_to(ref.rows(t), (Y, V))
        with np.errstate(divide="ignore"):
            log_ref = np.log(ref_rows)
        for p in range(P):
            occ = d[p] if Y > 1 else np.array([d[p].sum()])
            weights = occ[:, None] * pi[p]  # (Y, V): probability of (y, a) at position t
            for name, r in rewards.items():
                totals[name] += float((weights * np.broadcast_to(r.rows(t, p), (Y, V))).sum())
            with np.errstate(divide="ignore", invalid="ignore"):
                terms = np.where(pi[p] > 0, pi[p] * (np.log(pi[p]) - log_ref), 0.0)
            live = occ > 0
            kl += float(occ[live] @ terms[live].sum(axis=1))
            if t < H - 1:
                nxt = np.zeros(V + 1)
                nxt[:V][cont] = weights.sum(axis=0)[cont]
                d[p] = nxt
    return {**totals, "kl_to_reference": max(kl, 0.0)}


def sample_tokens(pi: np.ndarray, p: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per episode from ``pi`` (P, Y, V) at states (p, y); inverse CDF.

    Without dependence on the last token (Y = 1) it searches one cumulative distribution per prompt instead of
    gathering an (n, V) block, which matters at V = 50,000.
    """
    V = pi.shape[2]
    u = rng.random(p.size)
    if pi.shape[1] == 1:
        cum = np.cumsum(pi[:, 0], axis=1)
        a = np.empty(p.size, dtype=np.int64)
        for prompt in np.unique(p):
            mine = p == prompt
            a[mine] = np.searchsorted(cum[prompt], u[mine] * cum[prompt, -1], side="right")
        return np.minimum(a, V - 1)
    cum = np.cumsum(pi[p, y], axis=1)
    return np.minimum((u[:, None] * cum[:, -1:] >= cum).sum(axis=1), V - 1)


def sample_returns(
    world: MarkovWorld, policy: Policy, reward: MarkovReward, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Returns (n,) of ``n`` episodes of ``policy`` sampled together (Monte Carlo)."""
    P, H = world.n_prompts, world.horizon
    p = rng.integers(0, P, n)
    y = np.full(n, world.bos)
    alive = np.ones(n, dtype=bool)
    total = np.zeros(n)
    cont = world.continuing()
    for t in range(H):
        a = sample_tokens(policy(t), p, y, rng)
        total += np.where(alive, reward.token(p, t, y, a), 0.0)
        alive &= cont[a] & (t < H - 1)
        y = a
        if not alive.any():
            break
    return total


def mc_estimate(samples: np.ndarray, level: float = 0.99) -> tuple[float, float, float]:
    """Mean and a normal ``level`` confidence interval of Monte Carlo samples."""
    from scipy.stats import norm

    m = float(samples.mean())
    half = float(norm.ppf(0.5 + level / 2) * samples.std(ddof=1) / np.sqrt(samples.size))
    return m, m - half, m + half


def make_markov_oracle(
    world: MarkovWorld,
    kind: str = "linear",
    seed: int | np.random.SeedSequence = 0,
    templates=("unigram", "position", "bigram", "prompt"),
    scale: float = 1.0,
    target_length: int | None = None,
    length_weight: float = 1.0,
    repetition_weight: float = 1.0,
    **_: object,
) -> MarkovReward:
    """The oracle of :func:`sim.oracle.make_oracle` on a compressed world: the same draws for the same seed.

    Raises:
        ConfigError: for a family or template that is not Markov (``nonlinear``, ``repetition``, ``hashed``).
    """
    from sim.oracle import _FAMILY_STREAM, parse_kind

    families = parse_kind(kind)
    for f in families:
        if f not in MARKOV_ORACLES:
            raise ConfigError(
                "oracle.kind",
                kind,
                f"families {list(MARKOV_ORACLES)} on a compressed world ({f} depends on the whole prefix: "
                "co-occurrences, repetitions or a per-sequence term do not compress to (prompt, position, last token))",
            )
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)

    def stream(name: str) -> np.random.Generator:
        return np.random.default_rng(
            np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, _FAMILY_STREAM[name]))
        )

    H = world.horizon
    if "stutter" in families:
        check_bigram_size(world.vocab_size, "oracle.kind", kind)
    if "linear" in families and "bigram" in templates:
        check_bigram_size(world.vocab_size, "oracle.templates", "bigram")
    reward = MarkovReward(bigram=None, row=np.zeros((H, world.n_prompts, world.vocab_size)))
    if "linear" in families:
        templates = tuple(templates)
        dims = sum(template_dim(world, t) for t in templates if t in MARKOV_TEMPLATES)
        if any(t not in MARKOV_TEMPLATES for t in templates):
            markov_reward_from_theta(world, templates, np.zeros(0))  # raises, naming the template
        theta = stream("linear").normal(0.0, scale / np.sqrt(len(templates)), size=dims)
        reward = markov_reward_from_theta(world, templates, theta)
    if "length" in families:
        L_star = (H + 1) // 2 if target_length is None else target_length
        g = length_weight * np.arange(H + 1) * (2 * L_star - np.arange(H + 1)) / L_star**2
        reward.row[:, :, world.first_token :] += np.diff(g)[:, None, None]
    if "stutter" in families:  # the bigram diagonal: a token equal to the previous one
        if reward.bigram is None:
            reward.bigram = np.zeros((world.vocab_size + 1, world.vocab_size))
        tokens = np.arange(world.first_token, world.vocab_size)
        reward.bigram[tokens, tokens] -= repetition_weight
    return reward


def add(a: MarkovReward, b: MarkovReward, sign: float = 1.0) -> MarkovReward:
    """``a + sign * b`` (bigram terms combine; a missing bigram is zero)."""
    if a.bigram is None and b.bigram is None:
        bigram = None
    else:
        zero = np.zeros_like(a.bigram if a.bigram is not None else b.bigram)
        bigram = (a.bigram if a.bigram is not None else zero) + sign * (b.bigram if b.bigram is not None else zero)
    return MarkovReward(bigram=bigram, row=a.row + sign * b.row)


def misspecify(
    world: MarkovWorld,
    oracle: MarkovReward,
    templates,
    angle: float,
    omit,
    length_bias: float,
    rng: np.random.Generator,
) -> MarkovReward:
    """The direct pipeline's Markov-preserving misspecification (same draws as ``sim.corruption``): the linear
    part's weights rotated by ``angle`` and with ``omit`` templates dropped, plus ``length_bias`` per token."""
    from sim.corruption.misspec import misweight

    proxy = oracle
    if angle > 0 or omit:
        if oracle.theta is None:
            key, value = ("corruption.misspec.angle", angle) if angle > 0 else ("corruption.misspec.omit", omit)
            raise ConfigError(key, value, "only with an oracle that has a linear part (oracle.kind linear)")
        templates = tuple(templates)
        linear = markov_reward_from_theta(world, templates, oracle.theta)
        rest = add(oracle, linear, -1.0)
        theta = misweight(oracle.theta, angle, rng)
        if omit:
            offsets = np.concatenate([[0], np.cumsum([template_dim(world, t) for t in templates])])
            theta = theta.copy()
            for name in omit:
                if name not in templates:
                    raise ConfigError("corruption.misspec.omit", name, f"templates of the oracle {list(templates)}")
                k = templates.index(name)
                theta[offsets[k] : offsets[k + 1]] = 0.0
        proxy = add(rest, markov_reward_from_theta(world, templates, theta))
    if length_bias:
        proxy = MarkovReward(proxy.bigram, proxy.row.copy(), proxy.theta)
        proxy.row[:, :, world.first_token :] += length_bias
    return proxy


def most_likely_path(
    world: MarkovWorld, policy: Policy, rewards: dict[str, MarkovReward], p: int
) -> tuple[list[int], float, dict[str, float]]:
    """Follow the policy's most likely token at each step from prompt ``p``: (tokens, probability, returns)."""
    y, prob, tokens = world.bos, 1.0, []
    totals = dict.fromkeys(rewards, 0.0)
    for t in range(world.horizon):
        pi = policy(t)
        row = pi[p, y if pi.shape[1] > 1 else 0]
        a = int(row.argmax())
        prob *= float(row[a])
        for name, r in rewards.items():
            totals[name] += float(r.rows(t, p, slice(y, y + 1) if r.bigram is not None else slice(None))[0, a])
        tokens.append(a)
        if not world.continuing()[a]:
            break
        y = a
    return tokens, prob, totals
