"""One run path for every world kind: config -> setup -> proxy -> agent -> exact metrics.

No hydra, no files and no printing here: :func:`run` returns a :class:`RunResult`; ``experiments/`` writes and
summarises it. :func:`check` validates a config against the registries (agents, world kinds, templates, oracle
families, references) before anything is built, so a bad value fails fast, naming its key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtri
from threadpoolctl import threadpool_limits

from sim.agents import AgentContext, agent_spec, run_agent
from sim.build import Setup, build_setup, check_setup, seed_streams
from sim.config import Config
from sim.errors import ConfigError, RunError
from sim.features import check_templates
from sim.metrics import exact_metrics
from sim.resources import check_memory
from sim.rlhf import run_rlhf
from sim.worlds import bigram_uses, kind_of, n_states, sequence_total

#: Episodes sampled for the Monte Carlo estimate reported beside the exact oracle return.
MC_EPISODES = 2000
#: Metrics that every run measures: a NaN or an infinity here is a numerical failure, never "not applicable".
CORE_METRICS = ("optimal_return", "oracle_return", "reference_return", "proxy_return", "reference_proxy_return",
                "kl_to_reference")  # fmt: skip


def check(cfg: Config, max_memory_gb: float | None = None) -> bool:
    """Validate a whole run before any work: the agent's capabilities, the pipeline, the setup, and its memory
    (estimated in closed form, against ``max_memory_gb``; default: a safe fraction of the memory available).

    Returns:
        Whether a compressed world must keep the last token in its states.

    Raises:
        ConfigError: naming the key that must change and why.
    """
    spec = agent_spec(cfg.agent.name)
    kind = kind_of(cfg.env)
    if kind not in spec.worlds:
        raise ConfigError(
            "agent.name",
            cfg.agent.name,
            f"an agent for the {kind} world ({cfg.agent.name} runs on {list(spec.worlds)})",
        )
    if spec.learns_from == "preferences" and not (cfg.pipeline == "rlhf" and cfg.feedback.kind == "preferences"):
        raise ConfigError(
            "agent.name",
            cfg.agent.name,
            f"{cfg.agent.name} only with pipeline=rlhf and feedback.kind=preferences (it learns from preference data)",
        )
    check_templates(cfg.reward_model.templates, "reward_model.templates")  # names, even where unused: a typo is a typo
    check_templates(cfg.agent.templates, "agent.templates")
    agent_templates = tuple(spec.templates(cfg.agent)) if spec.templates else ()
    track = check_setup(cfg.env, cfg.oracle, cfg.corruption, cfg, agent_templates)
    if spec.check is not None:  # the agent's own limits, once the names and the world are known to be valid
        spec.check(cfg)
    n_bigram = len(bigram_uses(cfg, agent_templates)) if track else 0
    check_memory(cfg, n_states(cfg.env, track), sequence_total(cfg.env), n_bigram, max_memory_gb)
    return track


@dataclass(eq=False)
class RunResult:
    """Everything a run produced.

    Attributes:
        metrics: the flat metrics record (``metrics.json``).
        curve: learning-curve rows (empty for planners).
        setup: the world, oracle and channel.
        policy: the agent's policy.
        proxy: the expected reward the agent optimised.
    """

    metrics: dict[str, float | int | str | None]
    setup: Setup
    policy: object
    proxy: object
    curve: list[dict[str, float]] = field(default_factory=list)


def run(cfg: Config, progress=None, max_memory_gb: float | None = None) -> RunResult:
    """Run one experiment end to end (``progress(done, total)`` is called during training, if given).

    BLAS and OpenMP run on one thread inside, whatever the environment says, so results do not depend on it.

    Raises:
        ConfigError: a setting that turns out impossible on the drawn data.
        RunError: a result that must not be recorded (a non-finite core metric or learning curve).
    """
    with threadpool_limits(limits=1):
        return _run(cfg, progress, max_memory_gb)


def _run(cfg: Config, progress, max_memory_gb: float | None) -> RunResult:
    t0 = time.perf_counter()
    track = check(cfg, max_memory_gb)
    setup = build_setup(cfg.env, cfg.oracle, cfg.corruption, cfg.seed, track)
    world, oracle = setup.world, setup.oracle
    streams = seed_streams(cfg.seed)
    agent_rng = np.random.default_rng(streams["agent"])
    if cfg.pipeline == "rlhf":  # annotators perceive the (possibly misspecified) reward; the agent sees the model
        result = run_rlhf(cfg, setup, streams["feedback"], agent_rng, progress)
        agent, proxy = result.agent, result.reward_model.reward
        extra = {**result.metrics, **agent.extra}
    else:
        proxy = setup.channel.expected()
        ctx = AgentContext(world, proxy, setup.channel, oracle, agent_rng, progress=progress)
        agent = run_agent(ctx, cfg.agent)
        extra = dict(agent.extra)
    metrics: dict[str, float | int | str | None] = dict(exact_metrics(world, agent.policy, oracle.reward, proxy))
    # a Monte Carlo estimate beside the exact value (what a sampling-only simulator would report)
    mc_rng = np.random.default_rng(streams["agent"].spawn(1)[0])
    prompts = mc_rng.integers(0, world.n_prompts, MC_EPISODES)
    draw = getattr(agent.policy, "draw", None)  # a policy given as a sample of sequences draws its own
    seqs = draw(prompts, mc_rng) if draw is not None else world.sample(agent.policy, prompts, mc_rng)
    mc, lo, hi = mc_estimate(world.sequence_returns(oracle.reward, seqs), 0.99)
    metrics.update(
        seed=cfg.seed,
        pipeline=cfg.pipeline,
        oracle=f"{cfg.oracle.kind} ({cfg.oracle.form})",
        corruption=cfg.corruption.describe(),
        **extra,
        agent=cfg.agent.name,
        world=world.kind,
        compressed=bool(cfg.env.compressed),
        n_states=world.n_prefix_states,
        n_actions=world.n_actions,
        oracle_return_mc=mc,
        oracle_return_mc_ci99_lo=lo,
        oracle_return_mc_ci99_hi=hi,
        wall_time_s=time.perf_counter() - t0,
    )
    bad = [k for k in CORE_METRICS if not np.isfinite(metrics[k])]
    bad += [f"curve.csv {k}" for k in ("oracle_return", "proxy_return", "kl_to_reference")
            if any(not np.isfinite(row[k]) for row in agent.curve)]  # fmt: skip
    if bad:
        raise RunError(
            f"non-finite {', '.join(bad)} (a numerical failure: e.g. agent.beta or agent.lr out of the range where "
            "the optimiser is stable, or rewards too large); nothing was recorded"
        )
    return RunResult(metrics=metrics, setup=setup, policy=agent.policy, proxy=proxy, curve=agent.curve)


def mc_estimate(samples: np.ndarray, level: float = 0.99) -> tuple[float, float, float]:
    """Mean and a normal ``level`` confidence interval of Monte Carlo samples."""
    m = float(samples.mean())
    half = float(ndtri(0.5 + level / 2) * samples.std(ddof=1) / np.sqrt(samples.size))
    return m, m - half, m + half
