"""The schema of a run: typed dataclasses whose fields carry their meaning and whose ranges are checked on creation.

This module knows no domain code. Each dataclass checks the ranges of its own fields in ``__post_init__`` and
raises :class:`~sim.errors.ConfigError` naming the dotted key. What needs the domain (template, family and
reference names, which agents exist and what they can do, what a world kind supports, sizes) is checked by
:func:`sim.run.check` before any work, from the registries. ``experiments/`` extends :class:`Config` with the
command line's own keys and registers it in hydra's ConfigStore, which type-checks the YAML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields


def _check(condition: bool, key: str, value: object, allowed: str) -> None:
    from sim.errors import ConfigError

    if not condition:
        raise ConfigError(key, value, allowed)


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _integer(x: object) -> bool:
    """An int (numpy's too), not a bool."""
    import numbers

    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


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
        # types too: the command line's schema checks them, but gym.make(..., n_prompts=True, eos="yes") does not
        _check(_integer(self.n_prompts) and self.n_prompts >= 1, "env.n_prompts", self.n_prompts, "an integer >= 1")
        _check(_integer(self.vocab_size) and self.vocab_size >= 2, "env.vocab_size", self.vocab_size, "an integer >= 2")
        _check(_integer(self.horizon) and self.horizon >= 1, "env.horizon", self.horizon, "an integer >= 1")
        _check(isinstance(self.eos, bool), "env.eos", self.eos, "true or false")
        _check(isinstance(self.compressed, bool), "env.compressed", self.compressed, "true or false")
        _check(isinstance(self.reference, str), "env.reference", self.reference, "a reference family's name")
        _check(
            _finite(self.ref_temperature) and self.ref_temperature > 0,
            "env.ref_temperature",
            self.ref_temperature,
            "a finite number > 0",
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
        _check(_finite(self.scale) and self.scale > 0, "oracle.scale", self.scale, "a finite number > 0")
        _check(self.n_pairs >= 0, "oracle.n_pairs", self.n_pairs, ">= 0")
        _check(_finite(self.pair_scale) and self.pair_scale >= 0, "oracle.pair_scale", self.pair_scale, ">= 0")
        _check(_finite(self.seq_noise) and self.seq_noise >= 0, "oracle.seq_noise", self.seq_noise, ">= 0")
        _check(
            self.target_length is None or self.target_length >= 1,
            "oracle.target_length",
            self.target_length,
            ">= 1 (and <= env.horizon)",
        )
        _check(_finite(self.length_weight), "oracle.length_weight", self.length_weight, "finite")
        _check(_finite(self.repetition_weight), "oracle.repetition_weight", self.repetition_weight, "finite")


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
        _check(
            self.mode in ("none", "terminal", "chunk"), "corruption.sparsity.mode", self.mode, "none, terminal or chunk"
        )
        _check(self.chunk >= 1, "corruption.sparsity.chunk", self.chunk, "an integer >= 1")
        _check(0 < self.budget <= 1, "corruption.sparsity.budget", self.budget, "in (0, 1]")


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
    dist: str = "gaussian"
    """The error's distribution: gaussian, or (fixed mode only) the heavy-tailed student_t (``df``) or pareto
    (``alpha``, one-sided: only overrating). sigma is its sd where a variance exists, else its interquartile range
    is N(0, sigma^2)'s (see :func:`sim.corruption.noise.fixed_errors`)."""
    df: float = 3.0
    """Degrees of freedom of dist=student_t (> 0; a variance exists above 2, a mean above 1)."""
    alpha: float = 3.0
    """Tail index of dist=pareto, P(error > x) ~ x^-alpha (> 0; a variance exists above 2, a mean above 1)."""
    unit: str = "sequence"
    """What one persistent error (mode=fixed) belongs to: sequence (one per complete sequence, paid on its last token;
    worlds that can list their sequences) or token (one per state and token of the world, paid with that token: on a
    compressed world a state is (prompt, position, last token), so the proxy stays Markov and exact; a sequence's
    error is the sum of its tokens')."""

    def __post_init__(self) -> None:
        _check(_finite(self.sigma) and self.sigma >= 0, "corruption.noise.sigma", self.sigma, "a finite number >= 0")
        _check(self.unit in ("sequence", "token"), "corruption.noise.unit", self.unit, "sequence or token")
        _check(self.unit == "sequence" or self.mode == "fixed", "corruption.noise.unit", self.unit,
               "sequence with corruption.noise.mode=delivery (delivered noise is fresh on every token anyway; "
               "unit=token is a persistent error: set corruption.noise.mode=fixed)")  # fmt: skip
        _check(self.levels == 0 or self.levels >= 2, "corruption.noise.levels", self.levels, "0 (off) or >= 2")
        _check(0 <= self.drop < 1, "corruption.noise.drop", self.drop, "in [0, 1)")
        _check(self.mode in ("delivery", "fixed"), "corruption.noise.mode", self.mode, "delivery or fixed")
        _check(self.dist in ("gaussian", "student_t", "pareto"), "corruption.noise.dist", self.dist,
               "gaussian, student_t or pareto")  # fmt: skip
        _check(self.dist == "gaussian" or self.mode == "fixed", "corruption.noise.dist", self.dist,
               "gaussian with corruption.noise.mode=delivery (a heavy tail is a persistent proxy error: set "
               "corruption.noise.mode=fixed)")  # fmt: skip
        _check(_finite(self.df) and self.df > 0, "corruption.noise.df", self.df, "a finite number > 0")
        _check(_finite(self.alpha) and self.alpha > 0, "corruption.noise.alpha", self.alpha, "a finite number > 0")

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
        _check(0 <= self.angle <= math.pi, "corruption.misspec.angle", self.angle, "in [0, pi]")
        _check(_finite(self.length_bias), "corruption.misspec.length_bias", self.length_bias, "finite")
        _check(
            self.scope_tokens >= 0, "corruption.misspec.scope_tokens", self.scope_tokens, "an integer >= 0 (0 = off)"
        )
        _check(0 < self.scope_prompts <= 1, "corruption.misspec.scope_prompts", self.scope_prompts, "in (0, 1]")
        _check(
            _finite(self.exploit) and self.exploit >= 0,
            "corruption.misspec.exploit",
            self.exploit,
            "a finite number >= 0 (0 = off)",
        )
        _check(
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
        for group in ("sparsity", "noise", "misspec"):
            mine = getattr(self, group)
            default = type(mine)()
            for f in fields(mine):
                value, key = getattr(mine, f.name), f.name
                if value != getattr(default, key) and not (key == "chunk" and mine.mode != "chunk"):
                    if not (key == "mode" and group == "noise" and not mine.active):
                        parts.append(f"{group}.{key}={value}")
        return ", ".join(parts) or "none"

    @staticmethod
    def of(d: dict | CorruptionConfig | None) -> CorruptionConfig:
        """A :class:`CorruptionConfig` from nested dicts such as ``{"noise": {"sigma": 0.5}}``."""
        from sim.errors import ConfigError

        if d is None or isinstance(d, CorruptionConfig):
            return d or CorruptionConfig()
        unknown = set(d) - {"sparsity", "noise", "misspec"}
        if unknown:
            raise ConfigError("corruption", sorted(unknown), "keys among sparsity, noise, misspec")
        return CorruptionConfig(
            sparsity=SparsityConfig(**d.get("sparsity", {})),
            noise=NoiseConfig(**d.get("noise", {})),
            misspec=MisspecConfig(**d.get("misspec", {})),
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
    stutter_free: bool = False
    """Whether the labelled sequences never repeat a token right after itself: every source policy (pi_ref, and the
    expert with sampler=expert) has that token's probability set to 0 and renormalised. A region of outputs the data
    never cover (with a stutter oracle, the direction Zhu et al. 2023's Thm 3.9 leaves uncovered); false = as drawn."""
    query: str = "random"
    """Which pairs are labelled: random (the source's draws), or chosen in query_rounds rounds (round 0 random) from
    query_pool candidate pairs per label by the reward model's uncertainty about a pair's return difference, fitted to
    the data so far: disagreement (its variance over a bootstrap ensemble of query_ensemble members), laplace (its
    Laplace posterior variance z^T H^-1 z; linear models) or entropy (the binary entropy of the MAP preference
    probability). Preferences only."""
    query_rounds: int = 5
    """Rounds of active selection (the labels split evenly over them; the model is refitted before each)."""
    query_pool: int = 10
    """Candidate pairs drawn per label of an active round (1 = no choice)."""
    query_ensemble: int = 5
    """Bootstrap members of query=disagreement."""

    def __post_init__(self) -> None:
        _check(self.kind in ("preferences", "ratings", "rankings"), "feedback.kind", self.kind,
               "one of ['preferences', 'ratings', 'rankings']")  # fmt: skip
        _check(self.n >= 1, "feedback.n", self.n, "an integer >= 1")
        _check(self.rationality > 0, "feedback.rationality", self.rationality, "> 0 (.inf for a perfect teacher)")
        _check(0 <= self.flip <= 1, "feedback.flip", self.flip, "in [0, 1]")
        _check(0 < self.myopia <= 1, "feedback.myopia", self.myopia, "in (0, 1]")
        _check(_finite(self.equal) and self.equal >= 0, "feedback.equal", self.equal, "a finite number >= 0")
        # sigma multiplies standardised returns (1e300 overflowed in reward_distance's squares)
        _check(_finite(self.sigma) and 0 <= self.sigma <= 1e6, "feedback.sigma", self.sigma, "in [0, 1e6]")
        _check(self.levels == 0 or self.levels >= 2, "feedback.levels", self.levels, "0 (off) or >= 2")
        _check(self.k >= 2, "feedback.k", self.k, "an integer >= 2")
        # each label comes from one annotator: more annotators than labels is meaningless (1e12 hung drawing weights)
        _check(1 <= self.annotators <= self.n, "feedback.annotators", self.annotators,
               f"an integer in [1, feedback.n={self.n}] (each label comes from one annotator)")  # fmt: skip
        _check(0 <= self.annotator_spread <= math.pi, "feedback.annotator_spread", self.annotator_spread, "in [0, pi]")
        _check(self.sampler in ("reference", "uniform", "policy", "expert"), "feedback.sampler", self.sampler,
               "one of ['reference', 'uniform', 'policy', 'expert']")  # fmt: skip
        _check(self.rounds >= 1, "feedback.rounds", self.rounds, "an integer >= 1")
        _check(self.rounds == 1 or self.sampler == "policy", "feedback.rounds", self.rounds, "1 unless sampler=policy")
        _check(self.rounds <= self.n, "feedback.rounds", self.rounds, f"<= feedback.n={self.n}")
        _check(0 < self.prompt_coverage <= 1, "feedback.prompt_coverage", self.prompt_coverage, "in (0, 1]")
        _check(self.n_eval >= 1, "feedback.n_eval", self.n_eval, "an integer >= 1")
        _check(_finite(self.shift_beta) and self.shift_beta > 0, "feedback.shift_beta", self.shift_beta, "> 0")
        _check(0 <= self.expert_mix <= 1, "feedback.expert_mix", self.expert_mix, "in [0, 1]")
        _check(_finite(self.expert_beta) and self.expert_beta > 0, "feedback.expert_beta", self.expert_beta, "> 0")
        _check(
            not self.stutter_free or self.sampler in ("reference", "expert"),
            "feedback.stutter_free",
            self.stutter_free,
            "false unless sampler is reference or expert (the sources given as policies)",
        )
        _check(self.query in ("random", "disagreement", "laplace", "entropy"), "feedback.query", self.query,
               "one of ['random', 'disagreement', 'laplace', 'entropy']")  # fmt: skip
        _check(self.query == "random" or self.kind == "preferences", "feedback.query", self.query,
               "random unless feedback.kind=preferences (active selection chooses pairs)")  # fmt: skip
        _check(_integer(self.query_rounds) and self.query_rounds >= 2, "feedback.query_rounds", self.query_rounds,
               "an integer >= 2 (round 0 is random, later rounds select)")  # fmt: skip
        _check(self.query == "random" or self.query_rounds <= self.n, "feedback.query_rounds", self.query_rounds,
               f"<= feedback.n={self.n} (each round labels at least one pair)")  # fmt: skip
        # a round draws query_pool x its batch candidate pairs at once (1e6 x 1000 labels would not fit in memory)
        _check(_integer(self.query_pool) and 1 <= self.query_pool <= 1000, "feedback.query_pool", self.query_pool,
               "an integer in [1, 1000] (candidate pairs per label)")  # fmt: skip
        _check(_integer(self.query_ensemble) and 2 <= self.query_ensemble <= 100, "feedback.query_ensemble",
               self.query_ensemble, "an integer in [2, 100] (bootstrap members)")  # fmt: skip


#: The range of ``reward_model.prior_scale`` and ``reward_model.rating_sigma``.
PRIOR_RANGE = (1e-6, 1e6)
#: The loosest ``reward_model.tol``: the mean loss's projected gradient at theta = 0 is typically 1e-2 to 1, so a
#: tolerance above this can leave the model at its initial point (``tol=1e300`` did: accuracy 0.5, proxy 0).
MAX_TOL = 1e-3


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
    objective: str = "mean"
    """How an ensemble's members make one reward (Coste et al. 2023): mean, wco (the worst member) or uwo (the mean
    minus uwo_lambda times the members' variance), over members standardised on the labelled sequences. With a single
    model (ensemble 0 or 1) every objective is the model itself."""
    uwo_lambda: float = 1.0
    """The weight of the members' variance (in standardised units) in objective=uwo."""
    dim: int = 0
    """The capacity of a linear model: its number of parameters d. 0 (or any d >= D) keeps one parameter per feature
    (D, the templates' dimension); 1 <= d < D hashes the D features into d buckets with random signs (the hashing
    trick; the hash is fixed per (D, d), the same in every run), so a smaller d is a coarser model class."""

    def __post_init__(self) -> None:
        _check(self.name in ("tabular", "linear"), "reward_model.name", self.name, "one of ['tabular', 'linear']")
        _check(self.objective in ("mean", "wco", "uwo"), "reward_model.objective", self.objective, "mean, wco or uwo")
        _check(self.objective == "mean" or self.pessimism == 0, "reward_model.pessimism", self.pessimism,
               "0 with objective wco or uwo (each is a conservative objective of its own)")  # fmt: skip
        _check(_finite(self.uwo_lambda) and self.uwo_lambda >= 0, "reward_model.uwo_lambda", self.uwo_lambda, ">= 0")
        _check(self.dim >= 0, "reward_model.dim", self.dim, "an integer >= 0 (0 = one parameter per feature)")
        _check(self.dim == 0 or self.name == "linear", "reward_model.dim", self.dim,
               "0 with reward_model.name=tabular (a hashed capacity is a linear model's)")  # fmt: skip
        # s and sigma enter the fits as 1/s^2 and 1/sigma^2: 1e-300 squares to 0 (ZeroDivisionError) and 1e300 to
        # an overflow. Within [1e-6, 1e6] both stay far from either limit (and from a singular ridge system).
        _check(
            _finite(self.prior_scale) and PRIOR_RANGE[0] <= self.prior_scale <= PRIOR_RANGE[1],
            "reward_model.prior_scale",
            self.prior_scale,
            f"a number in [{PRIOR_RANGE[0]:g}, {PRIOR_RANGE[1]:g}] (the prior's standard deviation)",
        )
        _check(self.ensemble >= 0, "reward_model.ensemble", self.ensemble, "an integer >= 0")
        _check(_finite(self.pessimism) and self.pessimism >= 0, "reward_model.pessimism", self.pessimism, ">= 0")
        _check(
            _finite(self.rating_sigma) and PRIOR_RANGE[0] <= self.rating_sigma <= PRIOR_RANGE[1],
            "reward_model.rating_sigma",
            self.rating_sigma,
            f"a number in [{PRIOR_RANGE[0]:g}, {PRIOR_RANGE[1]:g}] (the ratings likelihood's standard deviation)",
        )
        _check(
            self.ranking_likelihood in ("plackett_luce", "pairs"),
            "reward_model.ranking_likelihood",
            self.ranking_likelihood,
            "plackett_luce or pairs",
        )
        _check(
            _finite(self.tol) and 0 < self.tol <= MAX_TOL,
            "reward_model.tol",
            self.tol,
            f"a number in (0, {MAX_TOL:g}] (a looser tolerance stops L-BFGS before it moves: the model stays unfitted)",
        )


@dataclass
class AgentConfig:
    """The optimiser of the proxy reward (see ``sim/agents``; the registry says which agents exist)."""

    name: str = "soft_planner"
    """exact_planner, soft_planner, q_learning, policy_gradient, linear_q, lspi, loglinear_pg, ppo, best_of_n, dpo,
    ipo, sb3_ppo (the sb3 extra), or any registered agent."""
    beta: float = 0.1
    """KL coefficient of soft_planner, policy_gradient, loglinear_pg, ppo (per token), dpo and ipo (> 0)."""
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
    path_max_beta: float | None = None
    """The weakest pressure (largest beta) of a beta path (only with path=true); default max(100, 1000 * beta)."""
    early_stop_angle: float | None = None
    """soft_planner with path=true on an enumerated world: Karwowski et al.'s early-stopping rule for a true reward
    within this projected angle theta (radians, [0, pi/2]) of the proxy: stop before the first step of the beta path
    whose angle to the projected proxy exceeds pi/2 - theta (``sim.goodhart``); null walks the whole path."""
    samples: int = 4096
    """best_of_n on a world that cannot list its sequences: reference samples per prompt it chooses among."""
    clip: float = 0.2
    """ppo: the clip range epsilon of the surrogate objective (ratios outside [1 - eps, 1 + eps] stop the gradient)."""
    epochs: int = 4
    """ppo: passes over each batch of rollouts."""
    minibatch: int = 8
    """ppo: minibatches per epoch."""
    gae_lambda: float = 0.95
    """ppo: lambda of generalised advantage estimation (1 = Monte Carlo returns, 0 = one-step TD)."""
    value_lr: float = 0.1
    """ppo: step size of the linear value function (Adam)."""
    target_kl: float | None = None
    """ppo: with a value, an adaptive KL controller moves beta to keep the batch's KL near it (Ziegler et al.)."""

    def __post_init__(self) -> None:
        _check(_finite(self.beta) and self.beta > 0, "agent.beta", self.beta, "a finite number > 0")
        _check(self.n >= 1, "agent.n", self.n, "an integer >= 1")
        _check(self.steps >= 1, "agent.steps", self.steps, "an integer >= 1")
        _check(_finite(self.lr) and self.lr > 0, "agent.lr", self.lr, "a finite number > 0")
        _check(0 <= self.lr_decay <= 1, "agent.lr_decay", self.lr_decay, "in [0, 1]")
        _check(0 <= self.epsilon <= 1, "agent.epsilon", self.epsilon, "in [0, 1]")
        _check(
            self.exploration in ("epsilon", "boltzmann"), "agent.exploration", self.exploration, "epsilon or boltzmann"
        )
        _check(_finite(self.temperature) and self.temperature > 0, "agent.temperature", self.temperature, "> 0")
        _check(self.batch >= 1, "agent.batch", self.batch, "an integer >= 1")
        _check(self.mode in ("exact", "sampled"), "agent.mode", self.mode, "exact or sampled")
        _check(self.policy in ("tabular", "loglinear"), "agent.policy", self.policy, "tabular or loglinear")
        _check(self.checkpoints >= 2, "agent.checkpoints", self.checkpoints, "an integer >= 2")
        _check(self.samples >= 2, "agent.samples", self.samples, "an integer >= 2")
        _check(_finite(self.clip) and 0 < self.clip < 1, "agent.clip", self.clip, "in (0, 1)")
        _check(self.epochs >= 1, "agent.epochs", self.epochs, "an integer >= 1")
        _check(self.minibatch >= 1, "agent.minibatch", self.minibatch, "an integer >= 1")
        _check(_finite(self.gae_lambda) and 0 <= self.gae_lambda <= 1, "agent.gae_lambda", self.gae_lambda, "in [0, 1]")
        _check(_finite(self.value_lr) and self.value_lr > 0, "agent.value_lr", self.value_lr, "a finite number > 0")
        _check(
            self.target_kl is None or (_finite(self.target_kl) and self.target_kl > 0),
            "agent.target_kl",
            self.target_kl,
            "null (a fixed beta) or a finite number > 0 (nats per sequence)",
        )
        _check(
            self.early_stop_angle is None
            or (_finite(self.early_stop_angle) and 0 <= self.early_stop_angle <= math.pi / 2),
            "agent.early_stop_angle",
            self.early_stop_angle,
            "null (no early stopping) or an angle in [0, pi/2] radians",
        )
        if self.path and self.path_max_beta is not None:
            _check(
                _finite(self.path_max_beta) and self.path_max_beta >= self.beta,
                "agent.path_max_beta",
                self.path_max_beta,
                f">= agent.beta={self.beta} (the path runs from path_max_beta down to beta)",
            )


@dataclass
class Config:
    """One run: the world, its rewards, the feedback, the reward model and the agent, and one seed."""

    env: EnvConfig = field(default_factory=EnvConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    seed: int = 0
    """Root seed; world, oracle, corruption, feedback and agent draw from independent child streams."""
    pipeline: str = "direct"
    """direct (corrupt the oracle signal) or rlhf (fit a reward model to simulated feedback; the corruption
    pipeline then defines the reward the annotators perceive)."""

    def __post_init__(self) -> None:
        _check(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        _check(self.pipeline in ("direct", "rlhf"), "pipeline", self.pipeline, "one of ['direct', 'rlhf']")
        if self.oracle.target_length is not None:
            _check(
                self.oracle.target_length <= self.env.horizon,
                "oracle.target_length",
                self.oracle.target_length,
                f"in [1, env.horizon={self.env.horizon}]",
            )
