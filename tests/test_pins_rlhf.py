"""Pins of the rlhf pipeline (sim.rlhf.run_rlhf): its rounds and its metrics, rebuilt step by step from the pieces
it is made of (mutation testing, issue #18).

A small world with 3 prompts, a teacher whose scale is not 1, a shift beta that is not 1/2, ceil(0.6 * 3) = 2 of 3
prompts covered (so covered and uncovered gaps differ), and 10 labels in 3 rounds (3 + 4 + 3: not all equal).
"""

from __future__ import annotations

import numpy as np
import pytest

import sim.rlhf as rlhf
from sim.build import build_setup, seed_streams
from sim.config import AgentConfig, Config, EnvConfig, FeedbackConfig, RewardModelConfig
from sim.feedback import preference_accuracy, sample_items
from sim.metrics import reward_distance
from sim.proxy import start_feedback

ENV = EnvConfig(n_prompts=3, vocab_size=3, horizon=3)


def _cfg(**fb) -> Config:
    base = dict(n=10, n_eval=40, rationality=2.0, shift_beta=0.7, prompt_coverage=0.6)
    return Config(
        pipeline="rlhf",
        env=ENV,
        feedback=FeedbackConfig(**{**base, **fb}),
        reward_model=RewardModelConfig(name="linear", templates=["unigram", "prompt"]),
        agent=AgentConfig(name="soft_planner", beta=0.3),
    )


@pytest.fixture(scope="module")
def setup():
    return build_setup(ENV, _cfg().oracle, _cfg().corruption, 4)


def test_iterated_rlhf_splits_the_labels_into_rounds_and_refits_on_all_data(setup, monkeypatch):
    cfg = _cfg(sampler="policy", rounds=3)
    calls = {"gather": [], "fit": [], "agent": []}
    gather, fit, run_agent = rlhf.gather, rlhf.fit, rlhf.run_agent

    def spy_gather(cfg_, world, feedback, source, n, prior=None):
        calls["gather"].append((source, n, None if prior is None else prior.n, feedback, world))
        return gather(cfg_, world, feedback, source, n, prior=prior)

    def spy_fit(cfg_, world, data, rng):
        rm = fit(cfg_, world, data, rng)
        calls["fit"].append((data.n, rm, rng, world))
        return rm

    def spy_agent(ctx, acfg):
        res = run_agent(ctx, acfg)
        calls["agent"].append((ctx, res))
        return res

    monkeypatch.setattr(rlhf, "gather", spy_gather)
    monkeypatch.setattr(rlhf, "fit", spy_fit)
    monkeypatch.setattr(rlhf, "run_agent", spy_agent)
    agent_rng = np.random.default_rng(1)
    progress = lambda done, total: None  # noqa: E731
    res = rlhf.run_rlhf(cfg, setup, seed_streams(0)["feedback"], agent_rng, progress)
    # linspace(0, 10, 4) = 0, 3.33, 6.67, 10 -> rounded 0, 3, 7, 10: rounds of 3, 4 and 3 labels
    assert [c[1] for c in calls["gather"]] == [3, 4, 3]
    assert all(type(c[1]) is int for c in calls["gather"])
    assert [c[2] for c in calls["gather"]] == [None, 3, 7]  # each round's queries see all data so far
    assert [c[0] for c in calls["fit"]] == [3, 7, 10]  # refit on all data so far
    assert res.data.n == 10 and res.metrics["n_feedback"] == 10
    assert res.reward_model is calls["fit"][-1][1] and res.agent is calls["agent"][-1][1]
    feedback = calls["gather"][0][3]
    assert calls["gather"][0][0] is feedback.source  # round 0 from the first source (pi_ref)
    assert all(c[4] is setup.world for c in calls["gather"]) and all(c[3] is feedback for c in calls["gather"])
    assert all(c[2] is feedback.rng and c[3] is setup.world for c in calls["fit"])  # the fits draw from the data stream
    for k in (1, 2):  # later rounds from the previous round's agent
        want = setup.world.sequence_probs(calls["agent"][k - 1][1].policy)
        np.testing.assert_allclose(calls["gather"][k][0].probs, want, rtol=1e-12)
    assert np.abs(calls["gather"][1][0].probs - feedback.source.probs).max() > 0.01
    for (_, rm, _, _), (ctx, _) in zip(calls["fit"], calls["agent"], strict=True):
        assert ctx.world is setup.world and ctx.proxy is rm.reward and ctx.oracle is setup.oracle
        assert ctx.rng is agent_rng and ctx.progress is progress and ctx.feedback.n == rm_n(calls, rm)
        assert ctx.channel.world is setup.world and ctx.channel.reward is rm.reward  # pays the model's reward exactly
        np.testing.assert_array_equal(ctx.channel.expected().level(1), rm.reward.level(1))


def rm_n(calls, rm) -> int:
    return next(c[0] for c in calls["fit"] if c[1] is rm)


def test_metrics_are_the_formulas_on_the_held_out_draws(setup):
    cfg = _cfg()
    res = rlhf.run_rlhf(cfg, setup, seed_streams(0)["feedback"], np.random.default_rng(1))
    world, oracle, rm = setup.world, setup.oracle, res.reward_model
    feedback = start_feedback(cfg, setup, seed_streams(0)["feedback"])  # the same draws, from a fresh seed
    assert feedback.teacher.scale != pytest.approx(1.0, abs=0.05)  # so beta * scale and beta / scale differ
    np.testing.assert_array_equal(feedback.covered, [0, 2])
    eval_rng = np.random.default_rng(feedback.eval_seed)
    pool, pairs = sample_items(feedback.source, feedback.covered, 40, 2, eval_rng)
    assert pairs.shape == (40, 2)
    in_dist = preference_accuracy(rm.predict(pool), world.sequence_returns(oracle.reward, pool), pairs)
    shift = world.sequence_source(world.soft_policy(oracle.reward, 0.7 * feedback.teacher.scale))
    pool, pairs = sample_items(shift, np.arange(3), 40, 2, eval_rng)
    shifted = preference_accuracy(rm.predict(pool), world.sequence_returns(oracle.reward, pool), pairs)
    seqs, weights = feedback.source.coverage(eval_rng.integers(0, 3, 80), eval_rng)
    distance = reward_distance(world.sequence_returns(oracle.reward, seqs), rm.predict(seqs), weights, seqs.prompt)
    gaps = world.prompt_values(None, oracle.reward) - world.prompt_values(res.agent.policy, oracle.reward)
    assert gaps.min() > 0 and abs(gaps[1] - gaps[[0, 2]].mean()) > 0.01
    want = {
        "rm_accuracy_in_dist": in_dist,
        "rm_accuracy_shifted": shifted,
        "reward_distance": distance,
        "n_feedback": 10,
        "n_covered_prompts": 2,
        "gap_covered": (gaps[0] + gaps[2]) / 2,
        "gap_uncovered": gaps[1],
    }
    assert list(res.metrics) == list(want)
    for k, v in want.items():
        assert res.metrics[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k
    assert type(res.metrics["n_covered_prompts"]) is int
    assert type(res.metrics["gap_covered"]) is float and type(res.metrics["gap_uncovered"]) is float
    # soft policy at the wrong scale and the other held-out draws would give other accuracies: the data tell them apart
    assert 0.5 < in_dist < 1 and 0.5 < shifted < 1 and in_dist != shifted


def test_full_coverage_has_no_uncovered_gap(setup):
    res = rlhf.run_rlhf(_cfg(prompt_coverage=1.0), setup, seed_streams(0)["feedback"], np.random.default_rng(1))
    assert res.metrics["n_covered_prompts"] == 3 and res.metrics["gap_uncovered"] is None
    gaps = setup.world.prompt_values(None, setup.oracle.reward) - setup.world.prompt_values(
        res.agent.policy, setup.oracle.reward
    )
    assert res.metrics["gap_covered"] == pytest.approx(gaps.mean(), rel=1e-12)


def test_reward_distance_on_a_compressed_world_is_over_draws_from_every_prompt():
    """A compressed world's coverage is one draw per prompt entry (an enumerated one lists every sequence): the
    held-out draws are ``2 n_eval`` prompts uniform over all prompts, after the two accuracy samples."""
    env = EnvConfig(n_prompts=3, vocab_size=4, horizon=3, compressed=True)
    cfg = _cfg()
    cfg = Config(pipeline="rlhf", env=env, feedback=cfg.feedback, reward_model=cfg.reward_model, agent=cfg.agent)
    setup = build_setup(env, cfg.oracle, cfg.corruption, 4)
    res = rlhf.run_rlhf(cfg, setup, seed_streams(0)["feedback"], np.random.default_rng(1))
    world, oracle, rm = setup.world, setup.oracle, res.reward_model
    feedback = start_feedback(cfg, setup, seed_streams(0)["feedback"])
    eval_rng = np.random.default_rng(feedback.eval_seed)
    sample_items(feedback.source, feedback.covered, 40, 2, eval_rng)
    shift = world.sequence_source(world.soft_policy(oracle.reward, 0.7 * feedback.teacher.scale))
    sample_items(shift, np.arange(3), 40, 2, eval_rng)
    prompts = eval_rng.integers(0, 3, 80)
    seqs, weights = feedback.source.coverage(prompts, eval_rng)
    assert seqs.n == 80 and np.bincount(seqs.prompt, minlength=3).min() > 15
    want = reward_distance(world.sequence_returns(oracle.reward, seqs), rm.predict(seqs), weights, seqs.prompt)
    assert res.metrics["reward_distance"] == pytest.approx(want, rel=1e-12)
