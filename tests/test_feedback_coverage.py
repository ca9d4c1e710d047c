"""``feedback.stutter_free``: data that never cover one direction of the reward model (the pessimism experiment's
uncovered region, Zhu et al. 2023's Thm 3.9). The filter's rows are pi_ref's with the repeated token removed and
renormalised (checked state by state against a loop), no drawn sequence stutters (both samplers, both world kinds),
a linear reward model fitted to such data keeps the stutter (bigram-diagonal) weights at their prior (MAP 0, Laplace
sd = the prior's), and the settings that cannot carry it are refused."""

from __future__ import annotations

import numpy as np
import pytest

from sim.build import build_setup
from sim.config import Config, EnvConfig, FeedbackConfig, OracleConfig
from sim.errors import ConfigError
from sim.feedback import collect, covered_prompts, make_teacher, stutter_free
from sim.proxy import first_source

ENV = EnvConfig(n_prompts=2, vocab_size=4, horizon=4, reference="softmax")
DRAWS = 2000  # sequences per prompt


def _stutters(tokens: np.ndarray) -> np.ndarray:
    """Per sequence: whether some token repeats the one right before it (EOS and padding excluded)."""
    return ((tokens[:, 1:] == tokens[:, :-1]) & (tokens[:, 1:] > 0)).any(axis=1)


@pytest.fixture(scope="module")
def setup():
    return build_setup(ENV, OracleConfig(kind="linear+stutter"), seed=3)


def test_rows_are_pi_ref_without_the_repeated_token_renormalised(setup):
    world = setup.world
    free = stutter_free(world, world.ref)
    for t in range(world.horizon):
        ref, rows = world.ref.level(t), free.level(t)
        lo, _ = world.level(t)
        assert np.allclose(rows.sum(axis=1), 1.0, atol=1e-12)
        for i in range(ref.shape[0]):  # a plain loop over states: the reference implementation
            y = int(world.last_token[lo + i])
            expect = np.array(ref[i], dtype=float)
            if y >= world.first_token:
                expect[y] = 0.0
                expect /= expect.sum()
            np.testing.assert_allclose(rows[i], expect, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("sampler", ["reference", "expert"])
def test_stutter_free_data_never_stutter_and_pi_ref_does(setup, sampler):
    prompts = np.repeat([0, 1], DRAWS)
    free = first_source(Config(env=ENV, feedback=FeedbackConfig(sampler=sampler, stutter_free=True)), setup)
    assert not _stutters(free.draw(prompts, np.random.default_rng(0)).tokens).any()
    plain = first_source(Config(env=ENV, feedback=FeedbackConfig(sampler=sampler)), setup)
    # unfiltered, 19% of pi_ref's draws stutter here (sd 0.6% over 4000 draws), more with the expert mixed in
    assert _stutters(plain.draw(prompts, np.random.default_rng(0)).tokens).mean() > 0.1


def test_a_compressed_world_filters_the_same_way():
    env = EnvConfig(n_prompts=2, vocab_size=8, horizon=5, reference="bigram", compressed=True)
    setup = build_setup(env, OracleConfig(kind="linear+stutter"), seed=1)
    source = first_source(Config(env=env, feedback=FeedbackConfig(stutter_free=True)), setup)
    assert not _stutters(source.draw(np.repeat([0, 1], DRAWS), np.random.default_rng(0)).tokens).any()


def test_the_reward_model_keeps_the_uncovered_direction_at_its_prior(setup):
    """No stutter in the data: the bigram-diagonal weights never enter the likelihood, so MAP leaves them at the
    prior mean 0 and the Laplace posterior at the prior sd (what the pessimistic policy charges)."""
    from sim.features import FeatureMap
    from sim.reward_models import fit_reward_model

    world, rng = setup.world, np.random.default_rng(0)
    source = first_source(Config(env=ENV, feedback=FeedbackConfig(stutter_free=True)), setup)
    teacher = make_teacher(world, setup.oracle.reward, source, rng, oracle=setup.oracle, rationality=2.0)
    data = collect(teacher, source, covered_prompts(world.n_prompts, 1.0, rng), "preferences", 3000, rng)
    templates = ["unigram", "position", "bigram", "prompt"]
    rm = fit_reward_model(world, data, "linear", templates, prior_scale=1.0, pessimism=1.0)
    features = FeatureMap(world, templates)
    stutter = np.flatnonzero(world.last_token >= world.first_token)  # a state, and its last token as the action
    local = np.unique(features.index("bigram", stutter, world.last_token[stutter]))
    diag = local + features.offsets[templates.index("bigram")]
    assert diag.size == world.vocab_size - world.first_token  # one weight per token that can repeat
    assert np.abs(rm.theta[diag]).max() < 1e-8
    np.testing.assert_allclose(np.sqrt(np.diag(rm.covariance)[diag]), 1.0, rtol=1e-8)
    rest = np.setdiff1d(np.arange(rm.theta.size), diag)
    assert np.abs(rm.theta[rest]).max() > 0.1  # the covered weights did move


def test_settings_that_cannot_carry_the_filter_are_refused():
    for sampler in ("uniform", "policy"):
        with pytest.raises(ConfigError, match="feedback.stutter_free"):
            FeedbackConfig(sampler=sampler, stutter_free=True)
    env = EnvConfig(n_prompts=2, vocab_size=6, horizon=4, compressed=True)
    untracked = build_setup(env, OracleConfig(templates=["unigram", "position"]), seed=0, track_last_token=False)
    with pytest.raises(ConfigError, match="feedback.stutter_free"):
        stutter_free(untracked.world, untracked.world.ref)
