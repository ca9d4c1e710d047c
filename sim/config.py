"""Typed, validated run configuration (plain dataclasses: no hydra here).

Each dataclass checks its ranges in ``__post_init__`` and raises :class:`~sim.errors.ConfigError` naming the
dotted key, so a bad value fails before any work. ``experiments/run.py`` registers :class:`Config` in hydra's
ConfigStore, which type-checks the YAML; ``OmegaConf.to_object`` then builds these objects and runs
the checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sim.corruption import CorruptionConfig
from sim.errors import ConfigError, check
from sim.features import check_templates
from sim.mdp import validate_world
from sim.oracle import FORMS, parse_kind
from sim.reference import REFERENCES

AGENTS = (
    "exact_planner",
    "soft_planner",
    "q_learning",
    "policy_gradient",
    "linear_q",
    "lspi",
    "loglinear_pg",
    "best_of_n",
    "dpo",
    "ipo",
)
KL_AGENTS = ("soft_planner", "policy_gradient", "loglinear_pg", "dpo", "ipo")
PREFERENCE_AGENTS = ("dpo", "ipo")
PIPELINES = ("direct", "rlhf")
FEEDBACK_KINDS = ("preferences", "ratings", "rankings")
SAMPLERS = ("reference", "uniform", "policy", "expert")
REWARD_MODELS = ("tabular", "linear")
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
    compressed: bool = False
    """Never enumerate: solve exactly over (prompt, position, last token). Needs a Markov oracle and reference."""

    def __post_init__(self) -> None:
        try:
            if self.compressed:
                check(self.n_prompts >= 1, "n_prompts", self.n_prompts, "an integer >= 1")
                check(self.vocab_size >= 2, "vocab_size", self.vocab_size, "an integer >= 2")
                check(self.horizon >= 1, "horizon", self.horizon, "an integer >= 1")
            else:
                validate_world(self.n_prompts, self.vocab_size, self.horizon, self.eos)
        except ConfigError as e:
            hint = "" if self.compressed else " (or env.compressed=true for a Markov world that is never enumerated)"
            raise ConfigError(f"env.{e.field}", e.value, e.allowed + hint) from None
        if self.compressed:
            check(
                self.reference in ("uniform", "bigram", "eos_hazard"),
                "env.reference",
                self.reference,
                "uniform, bigram or eos_hazard on a compressed world (softmax draws independent logits per prefix)",
            )
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
    """linear, nonlinear, length, repetition, stutter, or a '+'-joined sum such as linear+repetition."""
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
    repetition_weight: float = 1.0
    """Cost of a repeated token: any earlier occurrence (repetition) or the previous token (stutter)."""

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
class FeedbackConfig:
    """Simulated human feedback (pipeline=rlhf). Thresholds and noise are in units of the oracle's return
    standard deviation under the sampling distribution, so they mean the same on every world."""

    kind: str = "preferences"
    """preferences (Bradley-Terry pairs), ratings (scores) or rankings (Plackett-Luce, k at a time)."""
    n: int = 1000
    """Number of labels N requested (skipped pairs are not replaced)."""
    rationality: float = 1.0
    """Bradley-Terry / Plackett-Luce rationality on standardised returns; .inf is a perfect teacher."""
    flip: float = 0.0
    """Probability epsilon in [0, 1] that a preference label is flipped (a ranking replaced by a random one)."""
    myopia: float = 1.0
    """gamma in (0, 1]: the teacher weighs a sequence's rewards by gamma^(T-1-t); 1 is not myopic."""
    skip: float | None = None
    """Skip items whose best standardised return is below this (None = never skip)."""
    equal: float = 0.0
    """Label 1/2 when two returns differ by less than this many standard deviations."""
    sigma: float = 0.0
    """Noise of a rating, in return standard deviations."""
    levels: int = 0
    """Likert levels of a rating (0 = continuous, else >= 2)."""
    k: int = 4
    """Sequences per ranking (>= 2)."""
    annotators: int = 1
    """Number of annotators; each label comes from one drawn at random."""
    annotator_spread: float = 0.0
    """Angle (radians) between each annotator's linear weights and the oracle's."""
    sampler: str = "reference"
    """Who writes the compared sequences: reference (pi_ref), uniform, policy (iterated RLHF), or expert (a mixture
    of pi_ref and a near-optimal policy: data that cover the optimal outputs)."""
    expert_mix: float = 0.5
    """With sampler=expert: the fraction of sequences written by the expert (the rest by pi_ref)."""
    expert_beta: float = 0.1
    """With sampler=expert: the expert is the oracle's soft optimum at this beta (in return sds under pi_ref)."""
    rounds: int = 1
    """Rounds of iterated RLHF with sampler=policy: round 0 from pi_ref, later ones from the agent."""
    prompt_coverage: float = 1.0
    """Fraction kappa in (0, 1] of prompts that appear in the feedback data."""
    n_eval: int = 2000
    """Held-out pairs for each of the in-distribution and the shifted evaluation sets."""
    shift_beta: float = 0.5
    """The shifted evaluation set comes from the oracle's soft optimum at this beta (in return sds)."""

    def __post_init__(self) -> None:
        check(self.kind in FEEDBACK_KINDS, "feedback.kind", self.kind, f"one of {list(FEEDBACK_KINDS)}")
        check(self.n >= 1, "feedback.n", self.n, "an integer >= 1")
        check(self.rationality > 0, "feedback.rationality", self.rationality, "> 0 (.inf for a perfect teacher)")
        check(0 <= self.flip <= 1, "feedback.flip", self.flip, "in [0, 1]")
        check(0 < self.myopia <= 1, "feedback.myopia", self.myopia, "in (0, 1]")
        check(self.equal >= 0, "feedback.equal", self.equal, ">= 0")
        check(self.sigma >= 0, "feedback.sigma", self.sigma, ">= 0")
        check(self.levels == 0 or self.levels >= 2, "feedback.levels", self.levels, "0 (off) or >= 2")
        check(self.k >= 2, "feedback.k", self.k, "an integer >= 2")
        check(self.annotators >= 1, "feedback.annotators", self.annotators, "an integer >= 1")
        check(
            0 <= self.annotator_spread <= math.pi,
            "feedback.annotator_spread",
            self.annotator_spread,
            "in [0, pi]",
        )
        check(self.sampler in SAMPLERS, "feedback.sampler", self.sampler, f"one of {list(SAMPLERS)}")
        check(self.rounds >= 1, "feedback.rounds", self.rounds, "an integer >= 1")
        check(
            self.rounds == 1 or self.sampler == "policy",
            "feedback.rounds",
            self.rounds,
            "1 unless sampler=policy",
        )
        check(self.rounds <= self.n, "feedback.rounds", self.rounds, f"<= feedback.n={self.n}")
        check(0 < self.prompt_coverage <= 1, "feedback.prompt_coverage", self.prompt_coverage, "in (0, 1]")
        check(self.n_eval >= 1, "feedback.n_eval", self.n_eval, "an integer >= 1")
        check(self.shift_beta > 0, "feedback.shift_beta", self.shift_beta, "> 0")
        check(0 <= self.expert_mix <= 1, "feedback.expert_mix", self.expert_mix, "in [0, 1]")
        check(self.expert_beta > 0, "feedback.expert_beta", self.expert_beta, "> 0")


@dataclass
class RewardModelConfig:
    """The reward model fitted to the feedback by MAP (pipeline=rlhf)."""

    name: str = "linear"
    """tabular (one parameter per complete sequence) or linear (over feature templates)."""
    templates: list[str] = field(default_factory=lambda: ["unigram", "position", "bigram", "prompt"])
    """Feature templates of the linear model; leaving some of the oracle's out is a misspecification."""
    prior_scale: float = 1.0
    """Standard deviation s of the Gaussian prior N(0, s^2 I) on the parameters (the L2 strength 1/s^2)."""
    ensemble: int = 0
    """Bootstrap ensemble size (0 or 1 = a single MAP fit)."""
    pessimism: float = 0.0
    """Optimise mean - k * std of the predicted return (std from the ensemble, else the Laplace posterior)."""
    rating_sigma: float = 1.0
    """Standard deviation of the Gaussian ratings likelihood."""
    ranking_likelihood: str = "plackett_luce"
    """For rankings: plackett_luce (the full likelihood) or pairs (split each ranking into pairwise wins)."""
    tol: float = 1e-6
    """Stopping tolerance of L-BFGS-B on the projected gradient of the mean loss."""

    def __post_init__(self) -> None:
        check(self.name in REWARD_MODELS, "reward_model.name", self.name, f"one of {list(REWARD_MODELS)}")
        check_templates(self.templates, "reward_model.templates")
        check(self.prior_scale > 0, "reward_model.prior_scale", self.prior_scale, "> 0")
        check(self.ensemble >= 0, "reward_model.ensemble", self.ensemble, "an integer >= 0")
        check(self.pessimism >= 0, "reward_model.pessimism", self.pessimism, ">= 0")
        check(self.rating_sigma > 0, "reward_model.rating_sigma", self.rating_sigma, "> 0")
        check(
            self.ranking_likelihood in ("plackett_luce", "pairs"),
            "reward_model.ranking_likelihood",
            self.ranking_likelihood,
            "plackett_luce or pairs",
        )
        check(self.tol > 0, "reward_model.tol", self.tol, "> 0")


@dataclass
class AgentConfig:
    """The optimiser of the proxy reward (see ``sim/agents``)."""

    name: str = "soft_planner"
    """exact_planner, soft_planner, q_learning, policy_gradient, linear_q, lspi, loglinear_pg, best_of_n, dpo, ipo."""
    beta: float = 0.1
    """KL coefficient of soft_planner, policy_gradient, loglinear_pg, dpo and ipo (> 0)."""
    n: int = 4
    """Samples of best_of_n (>= 1)."""
    steps: int = 2000
    """Budget: episodes for sampling agents, gradient steps for exact-gradient ones, iterations for dpo and ipo."""
    lr: float = 0.5
    """Step size (the initial one when lr_decay > 0)."""
    lr_decay: float = 0.6
    """Tabular q_learning: per-(s, a) step size lr / (1 + visits)^lr_decay; 0 keeps it constant."""
    epsilon: float = 0.05
    """Final exploration rate of epsilon-greedy (annealed from 1 over the first half of training)."""
    exploration: str = "epsilon"
    """epsilon (epsilon-greedy) or boltzmann (softmax of Q / temperature) for q_learning and linear_q."""
    temperature: float = 0.1
    """Boltzmann exploration temperature."""
    batch: int = 256
    """Episodes stepped together (the vector env's num_envs) by sampling agents."""
    mode: str = "exact"
    """policy_gradient and loglinear_pg: exact (the exact gradient) or sampled (REINFORCE with a baseline)."""
    natural: bool = True
    """Exact tabular policy_gradient: natural gradient (KL-regularised NPG) or the plain gradient."""
    templates: list[str] = field(default_factory=lambda: ["position", "bigram"])
    """Feature templates of the linear agents."""
    policy: str = "tabular"
    """dpo's and ipo's policy class: tabular (a logit per state and token) or loglinear (pi_ref exp(theta . phi))."""
    checkpoints: int = 20
    """Points on the log-spaced learning curve (curve.csv)."""
    path: bool = False
    """soft_planner, dpo, ipo, best_of_n: record the optimisation-pressure path in the curve: beta log-spaced from
    path_max_beta down to agent.beta, or n from 1 up to agent.n (``checkpoints`` points). Learning agents' curves
    are their training checkpoints already."""
    path_max_beta: float = 100.0
    """The weakest pressure (largest beta) of a beta path."""

    def __post_init__(self) -> None:
        check(self.name in AGENTS, "agent.name", self.name, f"one of {list(AGENTS)}")
        check(0 < self.beta < float("inf"), "agent.beta", self.beta, "a finite number > 0")
        check(self.n >= 1, "agent.n", self.n, "an integer >= 1")
        check(self.steps >= 1, "agent.steps", self.steps, "an integer >= 1")
        check(0 < self.lr < float("inf"), "agent.lr", self.lr, "a finite number > 0")
        check(0 <= self.lr_decay <= 1, "agent.lr_decay", self.lr_decay, "in [0, 1]")
        check(0 <= self.epsilon <= 1, "agent.epsilon", self.epsilon, "in [0, 1]")
        check(
            self.exploration in ("epsilon", "boltzmann"), "agent.exploration", self.exploration, "epsilon or boltzmann"
        )
        check(self.temperature > 0, "agent.temperature", self.temperature, "> 0")
        check(self.batch >= 1, "agent.batch", self.batch, "an integer >= 1")
        check(self.mode in ("exact", "sampled"), "agent.mode", self.mode, "exact or sampled")
        check_templates(self.templates, "agent.templates")
        check(self.policy in ("tabular", "loglinear"), "agent.policy", self.policy, "tabular or loglinear")
        check(self.checkpoints >= 2, "agent.checkpoints", self.checkpoints, "an integer >= 2")
        check(
            self.mode != "exact" or not self.natural or self.name != "policy_gradient" or self.lr * self.beta <= 1,
            "agent.lr",
            self.lr,
            f"<= 1/agent.beta = {1 / self.beta:.4g} for the exact natural policy gradient (it diverges beyond)",
        )
        check(self.path_max_beta >= self.beta, "agent.path_max_beta", self.path_max_beta, f">= agent.beta={self.beta}")


COMPRESSED_AGENTS = ("exact_planner", "soft_planner", "loglinear_pg", "linear_q")


@dataclass
class Config:
    """One run."""

    env: EnvConfig = field(default_factory=EnvConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    name: str = "adhoc"
    """The experiment's name: sweeps are written to results/sweeps/<name>/<timestamp>/."""
    seed: int = 0
    """Root seed; world, oracle, corruption, feedback and agent draw from independent child streams."""
    pipeline: str = "direct"
    """direct (corrupt the oracle signal) or rlhf (fit a reward model to simulated feedback; the corruption
    pipeline then defines the reward the annotators perceive)."""
    scale: str = "paper"
    """paper or sanity (named experiments shrink at sanity scale)."""
    save_arrays: bool = False
    """Write arrays.npz (DESIGN section 9)."""

    def __post_init__(self) -> None:
        check(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        check(self.pipeline in PIPELINES, "pipeline", self.pipeline, f"one of {list(PIPELINES)}")
        check(self.scale in SCALES, "scale", self.scale, f"one of {list(SCALES)}")
        if self.agent.name in PREFERENCE_AGENTS:
            check(
                self.pipeline == "rlhf" and self.feedback.kind == "preferences",
                "agent.name",
                self.agent.name,
                f"{self.agent.name} only with pipeline=rlhf and feedback.kind=preferences (it learns from preference "
                "data)",
            )
        if self.env.compressed:
            self._check_compressed()
        if self.oracle.target_length is not None:
            check(
                self.oracle.target_length <= self.env.horizon,
                "oracle.target_length",
                self.oracle.target_length,
                f"in [1, env.horizon={self.env.horizon}]",
            )

    def _check_compressed(self) -> None:
        """A compressed world supports what keeps every quantity a function of (prompt, position, last token)."""
        from sim.markov import MARKOV_ORACLES, MARKOV_TEMPLATES

        why = "on a compressed world (env.compressed=true)"
        for family in self.oracle.kind.split("+"):
            check(
                family.strip() in MARKOV_ORACLES,
                "oracle.kind",
                self.oracle.kind,
                f"families {list(MARKOV_ORACLES)} {why}: {family.strip()} depends on the whole prefix",
            )
        for name in self.oracle.templates:
            check(
                name in MARKOV_TEMPLATES,
                "oracle.templates",
                name,
                f"Markov templates {list(MARKOV_TEMPLATES)} {why}: {name} looks beyond the last token",
            )
        check(
            self.agent.name in COMPRESSED_AGENTS,
            "agent.name",
            self.agent.name,
            f"one of {list(COMPRESSED_AGENTS)} {why} (other learners on compressed worlds are not built yet)",
        )
        if self.agent.name == "loglinear_pg":
            check(self.agent.mode == "sampled", "agent.mode", self.agent.mode, f"sampled for loglinear_pg {why}")
            for name in self.agent.templates:
                check(
                    name in ("unigram", "position", "bigram", "prompt"),
                    "agent.templates",
                    name,
                    f"unigram, position, bigram or prompt for loglinear_pg {why}",
                )
        if self.pipeline == "rlhf":  # preferences on sampled pairs, a linear model over Markov templates
            f, r = self.feedback, self.reward_model
            check(f.kind == "preferences", "feedback.kind", f.kind, f"preferences {why}")
            check(f.sampler == "reference" and f.rounds == 1, "feedback.sampler", f.sampler, f"reference {why}")
            check(
                f.annotators == 1 and f.myopia == 1.0,
                "feedback.annotators",
                f.annotators,
                f"1, with feedback.myopia = 1, {why}",
            )
            check(r.name == "linear", "reward_model.name", r.name, f"linear {why} (a table over ~V^H sequences)")
            for name in r.templates:
                check(
                    name in MARKOV_TEMPLATES,
                    "reward_model.templates",
                    name,
                    f"Markov templates {list(MARKOV_TEMPLATES)} {why}",
                )
            check(r.ensemble <= 1 and r.pessimism == 0, "reward_model.pessimism", r.pessimism, f"0 {why}")
        check(not self.save_arrays, "save_arrays", self.save_arrays, f"false {why}: S is never enumerated")
        from sim.markov import check_bigram_size

        V = self.env.vocab_size
        if "stutter" in self.oracle.kind:
            check_bigram_size(V, "oracle.kind", self.oracle.kind)
        if "linear" in self.oracle.kind and "bigram" in self.oracle.templates:
            check_bigram_size(V, "oracle.templates", "bigram")
        if self.env.reference == "bigram":
            check_bigram_size(V, "env.reference", "bigram")
        if self.agent.name in ("loglinear_pg", "linear_q") and "bigram" in self.agent.templates:
            check_bigram_size(V, "agent.templates", "bigram")
        if self.pipeline == "rlhf" and "bigram" in self.reward_model.templates:
            check_bigram_size(V, "reward_model.templates", "bigram")
        c = self.corruption
        check(
            c.noise.mode == "delivery" and c.noise.levels == 0 and c.noise.drop == 0,
            "corruption.noise.mode",
            c.noise.mode,
            f"delivery noise with sigma only {why} (per-sequence noise, Likert levels and drops are not built here)",
        )
        check(
            not c.misspec.project_to,
            "corruption.misspec.project_to",
            c.misspec.project_to,
            f"[] {why} (the projection is a least-squares fit over enumerated sequences)",
        )
        check(
            c.misspec.exploit == 0,
            "corruption.misspec.exploit",
            c.misspec.exploit,
            f"0 {why} (the exploit is one whole output, which does not compress)",
        )
        check(
            c.misspec.scope_tokens == 0 and c.misspec.scope_prompts == 1,
            "corruption.misspec.scope_tokens" if c.misspec.scope_tokens else "corruption.misspec.scope_prompts",
            c.misspec.scope_tokens or c.misspec.scope_prompts,
            f"off {why} (a scoped bigram term would depend on the position or prompt: not built)",
        )
