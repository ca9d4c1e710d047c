"""The learned proxy: simulated feedback on a setup and the reward model fitted to it by MAP.

This is the first half of the rlhf pipeline, without an agent. :func:`sim.rlhf.run_rlhf` starts from
:func:`start_feedback` and :func:`fit` and repeats them in rounds with an agent; an env built with ``pipeline=rlhf``
pays the reward model of the single round (:func:`learned_setup`), drawn exactly as ``experiments.run seed=k
pipeline=rlhf`` draws it, so the model an outside agent trains on is the model the CLI's agent optimises.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sim.build import Setup, seed_streams
from sim.config import Config
from sim.corruption import identity_channel
from sim.errors import ConfigError
from sim.feedback import (
    FeedbackData,
    QueryModel,
    Teacher,
    check_query,
    collect,
    collect_active,
    covered_prompts,
    make_teacher,
    stutter_free,
)
from sim.reward_models import RewardModel, fit_reward_model


def first_source(cfg: Config, setup: Setup):
    """Where round 0's sequences come from: pi_ref, uniform over sequences, or pi_ref mixed with an expert (the
    oracle's soft optimum at ``expert_beta`` return standard deviations under pi_ref). With
    ``feedback.stutter_free`` each policy first loses the token it just wrote (:func:`sim.feedback.stutter_free`)."""
    fb, world = cfg.feedback, setup.world
    if fb.sampler == "uniform":
        return world.uniform_source()
    ref = stutter_free(world, world.ref) if fb.stutter_free else world.ref
    ref_source = world.sequence_source(world.ref)
    if fb.sampler != "expert":
        return world.sequence_source(ref) if fb.stutter_free else ref_source
    _, sd = ref_source.moments(setup.oracle.reward)
    expert = world.soft_policy(setup.oracle.reward, fb.expert_beta * sd)
    expert = stutter_free(world, expert) if fb.stutter_free else expert
    return world.sequence_source(ref, mix=(fb.expert_mix, expert))


@dataclass(eq=False)
class Feedback:
    """What the feedback of a run is drawn from, fixed before the first label.

    Attributes:
        rng: the stream of the data and the fits (one stream, in the pipeline's order).
        eval_seed: the seed of the held-out evaluation pairs.
        source: round 0's source of sequences (:func:`first_source`).
        covered: the prompts the data cover (``feedback.prompt_coverage``).
        teacher: the simulated annotator, judging by the reward it perceives (the oracle through the corruption).
    """

    rng: np.random.Generator
    eval_seed: np.random.SeedSequence
    source: object
    covered: np.ndarray
    teacher: Teacher


def start_feedback(cfg: Config, setup: Setup, feedback_seed: np.random.SeedSequence) -> Feedback:
    """The source, covered prompts and teacher of a run's feedback, drawn from its ``feedback`` seed stream.

    Raises:
        ConfigError: an active ``feedback.query`` the reward model cannot carry (:func:`sim.feedback.check_query`),
            before any draw.
    """
    fb, world = cfg.feedback, setup.world
    check_query(cfg, world)
    data_ss, eval_ss = feedback_seed.spawn(2)
    rng = np.random.default_rng(data_ss)
    source = first_source(cfg, setup)
    covered = covered_prompts(world.n_prompts, fb.prompt_coverage, rng)
    teacher = make_teacher(
        world,
        setup.channel.expected(),
        source,
        rng,
        oracle=setup.oracle,
        rationality=fb.rationality,
        flip=fb.flip,
        myopia=fb.myopia,
        skip=fb.skip,
        equal=fb.equal,
        sigma=fb.sigma,
        levels=fb.levels,
        annotators=fb.annotators,
        annotator_spread=fb.annotator_spread,
    )
    return Feedback(rng, eval_ss, source, covered, teacher)


def gather(cfg: Config, world, feedback: Feedback, source, n: int, prior: FeedbackData | None = None) -> FeedbackData:
    """``n`` new labels on sequences from ``source``, the pairs chosen by ``feedback.query``: the source's own draws
    (``random``: :func:`sim.feedback.collect`, the same draws as before the key existed) or the pairs the current
    model is least sure of (:func:`sim.feedback.collect_active`, fitting the run's model class to ``prior`` and the
    new labels before each active round)."""
    fb, rmc = cfg.feedback, cfg.reward_model
    if fb.query == "random":
        return collect(feedback.teacher, source, feedback.covered, fb.kind, n, feedback.rng, fb.k)
    model = QueryModel(world, rmc.name, rmc.templates, rmc.prior_scale, rmc.tol, rmc.dim)
    return collect_active(
        feedback.teacher,
        source,
        feedback.covered,
        n,
        feedback.rng,
        model,
        fb.query,
        rounds=fb.query_rounds,
        pool=fb.query_pool,
        ensemble=fb.query_ensemble,
        prior=prior,
    )


def fit(cfg: Config, world, data: FeedbackData, rng: np.random.Generator) -> RewardModel:
    """The reward model (``cfg.reward_model``) fitted by MAP to ``data``.

    Raises:
        ConfigError: every preference label is a tie (``feedback.equal`` at or above every pair's return gap): the
            likelihood is flat, the fit stays at theta = 0 and the proxy is identically 0.
    """
    rmc = cfg.reward_model
    if data.kind == "preferences" and data.n > 0 and cfg.feedback.equal > 0 and np.all(data.labels == 0.5):
        raise ConfigError(
            "feedback.equal",
            cfg.feedback.equal,
            f"a threshold that leaves some pair unequal (all {data.n} labels are ties: nothing to fit)",
        )
    return fit_reward_model(
        world,
        data,
        rmc.name,
        rmc.templates,
        rmc.prior_scale,
        rmc.ensemble,
        rmc.pessimism,
        rmc.rating_sigma,
        rmc.tol,
        rng,
        rmc.ranking_likelihood,
        rmc.objective,
        rmc.uwo_lambda,
        rmc.dim,
    )


def learned_setup(cfg: Config, setup: Setup, seed: int) -> tuple[Setup, RewardModel, FeedbackData]:
    """``setup`` with its channel replaced by the reward model fitted to ``feedback.n`` labels: what an env with
    ``pipeline=rlhf`` pays. The annotators perceive ``setup``'s channel (the oracle through the corruption); the
    oracle stays the oracle. The same draws as round 0 of ``experiments.run seed=seed pipeline=rlhf``.

    Raises:
        ConfigError: ``feedback.rounds`` > 1 with ``feedback.sampler=policy`` (later rounds sample the agent's
            policy, and an env has no agent).
    """
    fb = cfg.feedback
    if fb.sampler == "policy" and fb.rounds > 1:
        raise ConfigError(
            "feedback.rounds",
            fb.rounds,
            "1 in an env (later rounds of sampler=policy sample the agent's policy, and an env has no agent)",
        )
    feedback = start_feedback(cfg, setup, seed_streams(seed)["feedback"])
    data = gather(cfg, setup.world, feedback, feedback.source, fb.n)
    model = fit(cfg, setup.world, data, feedback.rng)
    return replace(setup, channel=identity_channel(setup.world, model.reward)), model, data
