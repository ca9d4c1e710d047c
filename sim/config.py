"""Typed, validated run configuration (plain dataclasses: no hydra here).

Each dataclass checks its ranges in ``__post_init__`` and raises :class:`~sim.errors.ConfigError` naming the
dotted key, so a bad value fails before any work. ``experiments/run.py`` registers :class:`Config` in hydra's
ConfigStore, which type-checks the YAML; ``OmegaConf.to_object`` then builds these objects and runs
the checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.corruption import CorruptionConfig
from sim.errors import ConfigError, check
from sim.features import check_templates
from sim.mdp import validate_world
from sim.oracle import FORMS, parse_kind
from sim.reference import REFERENCES

AGENTS = ("exact_planner", "soft_planner")
PIPELINES = ("direct",)
SCALES = ("paper", "sanity")


@dataclass
class EnvConfig:
    """The text-MDP and its reference policy."""

    n_prompts: int = 4
    """Number of prompts P (uniform initial distribution)."""
    vocab_size: int = 6
    """Vocabulary size V = number of actions; token 0 is EOS when eos is true."""
    horizon: int = 5
    """Maximum response length H."""
    eos: bool = True
    """Whether token 0 ends the episode."""
    reference: str = "uniform"
    """Reference policy family: uniform, softmax, eos_hazard, bigram."""
    ref_temperature: float = 1.0
    """Logit temperature of the softmax and bigram references."""

    def __post_init__(self) -> None:
        try:
            validate_world(self.n_prompts, self.vocab_size, self.horizon, self.eos)
        except ConfigError as e:
            raise e.prefixed("env") from None
        check(self.reference in REFERENCES, "env.reference", self.reference, f"one of {list(REFERENCES)}")
        check(self.ref_temperature > 0, "env.ref_temperature", self.ref_temperature, "> 0")
        check(
            self.eos or self.reference != "eos_hazard",
            "env.reference",
            self.reference,
            "eos_hazard needs env.eos=true",
        )


@dataclass
class OracleConfig:
    """The true reward (see ``sim.oracle``)."""

    kind: str = "linear"
    """linear, nonlinear, length, or a '+'-joined sum such as linear+length."""
    form: str = "dense"
    """dense (token-level) or sequence (the whole return on the last token)."""
    templates: list[str] = field(default_factory=lambda: ["unigram", "position", "bigram", "prompt"])
    """Feature templates of the linear part."""
    scale: float = 1.0
    """Standard deviation of one token's linear reward."""
    n_pairs: int = 4
    """Co-occurrence pairs of the nonlinear family."""
    pair_scale: float = 1.0
    """Standard deviation of a co-occurrence bonus."""
    seq_noise: float = 0.5
    """Standard deviation of the nonlinear family's i.i.d. per-sequence term."""
    target_length: int | None = None
    """Preferred response length of the length family (default ceil(H/2))."""
    length_weight: float = 1.0
    """Reward at the target length."""

    def __post_init__(self) -> None:
        parse_kind(self.kind)
        check(self.form in FORMS, "oracle.form", self.form, f"one of {list(FORMS)}")
        check_templates(self.templates, "oracle.templates")
        check(self.scale > 0, "oracle.scale", self.scale, "> 0")
        check(self.n_pairs >= 0, "oracle.n_pairs", self.n_pairs, ">= 0")
        check(self.pair_scale >= 0, "oracle.pair_scale", self.pair_scale, ">= 0")
        check(self.seq_noise >= 0, "oracle.seq_noise", self.seq_noise, ">= 0")
        check(
            self.target_length is None or self.target_length >= 1,
            "oracle.target_length",
            self.target_length,
            ">= 1 (and <= env.horizon)",
        )


@dataclass
class AgentConfig:
    """The optimiser of the proxy reward."""

    name: str = "soft_planner"
    """exact_planner or soft_planner."""
    beta: float = 0.1
    """KL coefficient of KL-regularised agents (> 0)."""
    n: int = 4
    """Samples of best-of-n (>= 1)."""
    steps: int = 1000
    """Training budget of learning agents (>= 1)."""

    def __post_init__(self) -> None:
        check(self.name in AGENTS, "agent.name", self.name, f"one of {list(AGENTS)}")
        check(self.beta > 0 and self.beta < float("inf"), "agent.beta", self.beta, "a finite number > 0")
        check(self.n >= 1, "agent.n", self.n, ">= 1")
        check(self.steps >= 1, "agent.steps", self.steps, ">= 1")


@dataclass
class Config:
    """One run."""

    env: EnvConfig = field(default_factory=EnvConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    seed: int = 0
    """Root seed; world, oracle, corruption, feedback and agent draw from independent child streams."""
    pipeline: str = "direct"
    """direct (corrupt the oracle signal) or rlhf (fit a reward model to simulated feedback)."""
    scale: str = "paper"
    """paper or sanity (named experiments shrink at sanity scale)."""
    save_arrays: bool = False
    """Write arrays.npz (DESIGN section 9)."""

    def __post_init__(self) -> None:
        check(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        check(self.pipeline in PIPELINES, "pipeline", self.pipeline, f"one of {list(PIPELINES)} (so far)")
        check(self.scale in SCALES, "scale", self.scale, f"one of {list(SCALES)}")
        if self.oracle.target_length is not None:
            check(
                self.oracle.target_length <= self.env.horizon,
                "oracle.target_length",
                self.oracle.target_length,
                f"in [1, env.horizon={self.env.horizon}]",
            )
