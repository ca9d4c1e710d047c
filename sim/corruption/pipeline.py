"""The direct corruption pipeline: oracle -> reward channel.

Modules compose in a fixed order, each the identity at zero strength:

1. **misspecification** (``project_to``, ``angle``, ``omit``, ``length_bias``, then the scope ``scope_tokens``,
   ``scope_prompts``, then the ``exploit``): a different reward function;
2. **sparsity** (``mode`` = ``none`` | ``terminal`` | ``chunk``): when reward is paid;
3. **noise** (``sigma``, then ``levels``, then ``drop``; ``mode`` = ``delivery`` | ``fixed``): on each
   paid reward;
4. **budget** (``p``): only a fraction ``p`` of episodes carry any reward.

The result is a :class:`RewardChannel`: ``sample(states, actions, rng)`` for online learners and
``expected()`` -> r_hat[S, A] for planners and metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sim.corruption import misspec, noise, sparsity
from sim.errors import ConfigError, check
from sim.features import TEMPLATES, check_templates
from sim.mdp import TextMDP
from sim.oracle import Oracle, sequence_form

SPARSITY_MODES = ("none", "terminal", "chunk")
NOISE_MODES = ("delivery", "fixed")


@dataclass
class SparsityConfig:
    """When the learner receives reward."""

    mode: str = "none"
    """none (every token), terminal (the return at the episode end) or chunk (every `chunk` tokens)."""
    chunk: int = 2
    """Chunk length k of mode=chunk (>= 1)."""
    budget: float = 1.0
    """Fraction p in (0, 1] of episodes that carry any reward; the others give 0."""

    def __post_init__(self) -> None:
        check(
            self.mode in SPARSITY_MODES,
            "corruption.sparsity.mode",
            self.mode,
            f"one of {list(SPARSITY_MODES)}",
        )
        check(self.chunk >= 1, "corruption.sparsity.chunk", self.chunk, "an integer >= 1")
        check(0 < self.budget <= 1, "corruption.sparsity.budget", self.budget, "in (0, 1]")


@dataclass
class NoiseConfig:
    """Noise on each delivered reward."""

    sigma: float = 0.0
    """Gaussian standard deviation (>= 0)."""
    levels: int = 0
    """Likert quantisation to K levels over the clean reward range (0 = off, else >= 2)."""
    drop: float = 0.0
    """Probability in [0, 1) that a delivered reward is replaced by 0."""
    mode: str = "delivery"
    """delivery (fresh noise each time; expected() unchanged by sigma) or fixed (one persistent draw)."""

    def __post_init__(self) -> None:
        check(self.sigma >= 0 and math.isfinite(self.sigma), "corruption.noise.sigma", self.sigma, ">= 0")
        check(self.levels == 0 or self.levels >= 2, "corruption.noise.levels", self.levels, "0 (off) or >= 2")
        check(0 <= self.drop < 1, "corruption.noise.drop", self.drop, "in [0, 1)")
        check(self.mode in NOISE_MODES, "corruption.noise.mode", self.mode, f"one of {list(NOISE_MODES)}")

    @property
    def active(self) -> bool:
        return self.sigma > 0 or self.levels > 0 or self.drop > 0


@dataclass
class MisspecConfig:
    """A different reward function."""

    angle: float = 0.0
    """Misweight angle alpha in [0, pi] radians between the proxy's and the oracle's linear weights."""
    omit: list[str] = field(default_factory=list)
    """Templates of the oracle's linear part whose weights the proxy drops."""
    length_bias: float = 0.0
    """Spurious length bias lambda: the proxy adds lambda * length."""
    project_to: list[str] = field(default_factory=list)
    """Replace the oracle by its least-squares fit in this smaller template class (empty = off)."""
    scope_tokens: int = 0
    """Scope (Pan et al. 2022): the proxy pays nothing for tokens at positions >= k (0 = off; dense oracles)."""
    scope_prompts: float = 1.0
    """Scope: the proxy covers only the first ceil(fraction * P) prompts and pays nothing on the others."""
    exploit: float = 0.0
    """Reward hacking: each prompt's oracle-worst output (of ``exploit_length``) is overrated so that it beats the
    proxy's best output by this many oracle-return sds (0 = off)."""
    exploit_length: int | None = None
    """The response length of the exploited output (None = any length); longer outputs are rarer under pi_ref."""

    def __post_init__(self) -> None:
        check(0 <= self.angle <= math.pi, "corruption.misspec.angle", self.angle, "in [0, pi]")
        for name in self.omit:
            check(name in TEMPLATES, "corruption.misspec.omit", name, f"template names in {list(TEMPLATES)}")
        check(math.isfinite(self.length_bias), "corruption.misspec.length_bias", self.length_bias, "finite")
        if self.project_to:
            check_templates(self.project_to, "corruption.misspec.project_to")
        check(self.scope_tokens >= 0, "corruption.misspec.scope_tokens", self.scope_tokens, "an integer >= 0 (0 = off)")
        check(0 < self.scope_prompts <= 1, "corruption.misspec.scope_prompts", self.scope_prompts, "in (0, 1]")
        check(
            math.isfinite(self.exploit) and self.exploit >= 0,
            "corruption.misspec.exploit",
            self.exploit,
            "a finite number >= 0 (0 = off)",
        )
        check(
            self.exploit_length is None or self.exploit_length >= 0,
            "corruption.misspec.exploit_length",
            self.exploit_length,
            "null (any length) or an integer >= 0",
        )


@dataclass
class CorruptionConfig:
    """The whole direct pipeline; all modules off by default."""

    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    misspec: MisspecConfig = field(default_factory=MisspecConfig)

    def describe(self) -> str:
        """The active settings, e.g. ``"noise.sigma=0.5, sparsity.mode=terminal"``, or ``"none"``."""
        parts = []
        for group, default in (
            ("sparsity", SparsityConfig()),
            ("noise", NoiseConfig()),
            ("misspec", MisspecConfig()),
        ):
            mine = getattr(self, group)
            for key in mine.__dataclass_fields__:
                value = getattr(mine, key)
                if value != getattr(default, key) and not (key == "chunk" and mine.mode != "chunk"):
                    if not (key == "mode" and group == "noise" and not mine.active):
                        parts.append(f"{group}.{key}={value}")
        return ", ".join(parts) or "none"


@dataclass(eq=False)
class RewardChannel:
    """What the learner receives.

    Attributes:
        table: float (S, A), the deterministic part of the delivered reward (after misspecification, sparsity
            and, in ``fixed`` mode, the persistent noise).
        deliver: bool (S, A), the transitions that pay reward (fresh noise only lands there).
        sigma, quantizer, drop: the fresh (``delivery``-mode) noise; zero/None when there is none.
        budget: fraction of episodes that carry reward.
    """

    table: np.ndarray
    deliver: np.ndarray
    sigma: float = 0.0
    quantizer: noise.Quantizer | None = None
    drop: float = 0.0
    budget: float = 1.0
    _expected: np.ndarray | None = field(default=None, repr=False)

    def expected(self) -> np.ndarray:
        """r_hat (S, A): the exact expected delivered reward (cached; do not modify)."""
        if self._expected is None:
            if self.quantizer is None:
                r = self.table
            else:
                r = np.where(self.deliver, self.quantizer.expected(self.table, self.sigma), 0.0)
            scale = (1.0 - self.drop) * self.budget
            self._expected = r if scale == 1.0 else r * scale
        return self._expected

    def episode_flags(self, n: int, rng: np.random.Generator) -> np.ndarray | None:
        """Which of ``n`` new episodes carry reward (``None`` when all do)."""
        return None if self.budget >= 1.0 else rng.random(n) < self.budget

    def sample(
        self,
        states: np.ndarray,
        actions: np.ndarray,
        rng: np.random.Generator,
        carries: np.ndarray | None = None,
    ) -> np.ndarray:
        """Delivered rewards of a batch of transitions.

        Args:
            states, actions: int arrays (n,).
            rng: the learner's generator (fresh noise).
            carries: bool (n,) budget flags of the transitions' episodes (from :meth:`episode_flags`);
                ``None`` draws them per transition, which is right only when each episode has one delivery.

        Returns:
            float array (n,); its mean over draws is ``expected()[states, actions]``.
        """
        r = self.table[states, actions]
        if self.sigma > 0 or self.quantizer is not None or self.drop > 0:
            d = self.deliver[states, actions]
            if self.sigma > 0:
                r = r + np.where(d, rng.normal(0.0, self.sigma, size=r.shape), 0.0)
            if self.quantizer is not None:
                r = np.where(d, self.quantizer(r), r)
            if self.drop > 0:
                r = np.where(d & (rng.random(r.shape) < self.drop), 0.0, r)
        if self.budget < 1.0:
            if carries is None:
                carries = rng.random(r.shape) < self.budget
            r = np.where(carries, r, 0.0)
        return r


def identity_channel(mdp: TextMDP, r: np.ndarray) -> RewardChannel:
    """A channel that delivers ``r`` exactly."""
    return RewardChannel(table=r, deliver=np.ones(r.shape, dtype=bool))


def build_channel(
    mdp: TextMDP, oracle: Oracle, cfg: CorruptionConfig | None = None, seed: int | np.random.SeedSequence = 0
) -> RewardChannel:
    """Apply the pipeline to the oracle.

    Args:
        mdp: the world.
        oracle: the true reward (its linear part is what misweight/omit act on).
        cfg: the corruption settings (default: none, the identity).
        seed: randomness of the corruption itself (the misweight direction, fixed noise draws).

    Returns:
        The :class:`RewardChannel`; at zero strength its ``table`` is ``oracle.reward`` itself.
    """
    cfg = cfg or CorruptionConfig()
    rng = np.random.default_rng(seed)
    r = _misspecify(mdp, oracle, cfg.misspec, rng)

    sp = cfg.sparsity
    if sp.mode == "none":
        deliver = np.ones(r.shape, dtype=bool)
    else:
        k = mdp.horizon if sp.mode == "terminal" else sp.chunk
        deliver = sparsity.delivery_mask(mdp, k)
        r = sparsity.chunked(mdp, r, k) if k > 1 else r

    nz = cfg.noise
    quant = noise.quantizer_for(r[deliver], nz.levels)
    if nz.mode == "fixed" and nz.active:
        terminal = mdp.terminal_mask()
        r = r.copy()
        if nz.sigma > 0:
            r[terminal] += rng.normal(0.0, nz.sigma, size=int(terminal.sum()))
        if quant is not None:
            r = np.where(deliver, quant(r), r)
        if nz.drop > 0:
            r = np.where(deliver & (rng.random(r.shape) < nz.drop), 0.0, r)
        return RewardChannel(table=r, deliver=deliver, budget=sp.budget)
    return RewardChannel(table=r, deliver=deliver, sigma=nz.sigma, quantizer=quant, drop=nz.drop, budget=sp.budget)


def _misspecify(mdp: TextMDP, oracle: Oracle, m: MisspecConfig, rng: np.random.Generator) -> np.ndarray:
    """The misspecified reward in the oracle's form (the oracle's own table when nothing is set)."""
    reweight = m.angle > 0 or bool(m.omit)
    scoped = m.scope_tokens > 0 or m.scope_prompts < 1
    if not (m.project_to or reweight or m.length_bias != 0 or scoped or m.exploit > 0):
        return oracle.reward
    r = oracle.reward
    if m.project_to:
        fm, theta = misspec.project(mdp, oracle.reward, m.project_to)
        rest = np.zeros_like(r)  # the projection replaces the whole oracle
    elif reweight:
        if oracle.features is None:
            key, value = ("corruption.misspec.angle", m.angle) if m.angle > 0 else ("corruption.misspec.omit", m.omit)
            raise ConfigError(key, value, "only with an oracle that has a linear part (oracle.kind linear/nonlinear)")
        fm, theta = oracle.features, oracle.theta
        linear = fm.reward(theta)
        rest = r - (linear if oracle.form == "dense" else sequence_form(mdp, linear))  # the non-linear terms
    if m.project_to or reweight:
        theta = misspec.omit(fm, misspec.misweight(theta, m.angle, rng), m.omit)
        r = rest + fm.reward(theta)
    if m.length_bias != 0:
        r = r + misspec.length_reward(mdp, m.length_bias)
    if m.scope_tokens or m.scope_prompts < 1:
        if m.scope_tokens and oracle.form != "dense":
            raise ConfigError(
                "corruption.misspec.scope_tokens",
                m.scope_tokens,
                "0 with oracle.form=sequence (a sequence-form reward is paid at the end, not token by token)",
            )
        r = misspec.restrict_scope(mdp, r, m.scope_tokens, m.scope_prompts)
    if m.exploit > 0:
        r = misspec.add_exploit(mdp, r, oracle.reward, m.exploit, m.exploit_length)
    return sequence_form(mdp, r) if oracle.form == "sequence" else r
