"""sim.score: exact metrics of a policy given as a table, a function of observations or an SB3-style model, on both
world kinds, equal to the command line's metrics of the same policy, with a Monte Carlo cross-check."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import sim
from experiments.config import compose_config
from sim.errors import ConfigError
from sim.metrics import exact_metrics
from sim.run import run

KEYS = ("optimal_return", "oracle_return", "reference_return", "gap", "proxy_return", "kl_to_reference")


def _soft_table(setup, beta=0.3):
    world = setup.world
    return world.table(world.soft_policy(setup.channel.expected(), beta))


def test_a_table_scores_as_the_run_that_produced_it():
    config = compose_config(["env=small", "corruption=misweighted", "agent=soft_planner", "agent.beta=0.3"])
    cli = run(config)
    env = gym.make(sim.ENV_ID, config=config)
    table = cli.setup.world.table(cli.policy)
    m = sim.score(table, env)
    for key in KEYS:
        assert m[key] == pytest.approx(cli.metrics[key], rel=1e-12, abs=1e-14), key


class TokensPolicy:
    """A policy that reads the token observation: it prefers token 1 after any prefix shorter than 2, else EOS."""

    def __call__(self, obs):
        length = obs[:, -1]
        probs = np.full((len(obs), 6), 0.05)
        probs[np.arange(len(obs)), np.where(length < 2, 1, 0)] = 0.75
        return probs


class PredictOnly:
    """An SB3-shaped model without probabilities: predict() gives the argmax of a fixed table."""

    def __init__(self, table):
        self.table = table

    def predict(self, obs, deterministic=True):
        return self.table[np.asarray(obs)].argmax(axis=1), None


def test_functions_of_observations_and_predict_models_are_scored_exactly():
    env = gym.make(sim.ENV_ID, config={"corruption": {"misspec": {"angle": 0.6}}}, obs_mode="tokens")
    setup = env.unwrapped.setup
    world = setup.world
    # the tokens policy, expanded to a table by hand: a prefix of depth t < 2 prefers token 1
    table = np.full((world.n_states, 6), 0.05)
    table[np.arange(world.n_states), np.where(world.depth < 2, 1, 0)] = 0.75
    expected = exact_metrics(world, sim.worlds.Table(world, table), setup.oracle.reward, setup.channel.expected())
    m = sim.score(TokensPolicy(), env, mc_episodes=4000, seed=1)
    for key in KEYS:
        assert m[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-14)
    assert m["oracle_return_mc_ci99_lo"] <= m["oracle_return"] <= m["oracle_return_mc_ci99_hi"]
    # actions instead of probabilities, and an SB3-style predict(): a deterministic policy
    soft = _soft_table(setup)
    greedy = np.zeros_like(soft)
    greedy[np.arange(world.n_states), soft.argmax(axis=1)] = 1.0
    by_actions = sim.score(lambda obs: soft[obs].argmax(axis=1), env, obs_mode="state")
    by_predict = sim.score(PredictOnly(soft), env, obs_mode="state")
    by_table = sim.score(greedy, env)
    for key in KEYS:
        assert by_actions[key] == by_predict[key] == pytest.approx(by_table[key], rel=1e-12, abs=1e-14)


def test_compressed_worlds_are_scored_through_the_dp_with_a_monte_carlo_check():
    env = gym.make(sim.MARKOV_ENV_ID, vocab_size=200, horizon=12)  # a bigram reference: states keep the last token
    setup = env.unwrapped.setup
    world = setup.world
    soft = world.soft_policy(setup.channel.expected(), 1.0)

    def markov_policy(obs):  # reads [prompt, position, last token]
        p, t, y = obs[:, 0], obs[:, 1], obs[:, 2]
        rows = np.empty((len(obs), world.n_actions))
        for tt in np.unique(t):
            mine = t == tt
            local = p[mine] if tt == 0 else p[mine] * world.branching + y[mine] - world.first_token
            rows[mine] = soft.rows_at(int(tt), local)
        return rows

    m = sim.score(markov_policy, env, mc_episodes=3000, seed=0)
    exact = exact_metrics(world, soft, setup.oracle.reward, setup.channel.expected())
    assert m["oracle_return"] == pytest.approx(exact["oracle_return"], rel=1e-12)
    assert m["kl_to_reference"] == pytest.approx(exact["kl_to_reference"], rel=1e-12)
    assert m["oracle_return_mc_ci99_lo"] <= m["oracle_return"] <= m["oracle_return_mc_ci99_hi"]


def test_what_cannot_be_scored_says_why():
    env = gym.make(sim.ENV_ID)
    with pytest.raises(ValueError, match="sum to 1"):
        sim.score(lambda obs: np.ones((len(obs), 6)), env)
    with pytest.raises(ValueError, match="shape"):
        sim.score(np.ones((3, 6)) / 6, env)
    with pytest.raises(TypeError, match="rmsim"):
        sim.score(lambda obs: obs, object())
    position_only = gym.make(sim.MARKOV_ENV_ID, vocab_size=50, horizon=4, reference="uniform",
                             oracle={"templates": ["unigram", "position"]})  # fmt: skip
    with pytest.raises(ConfigError, match="last token"):
        sim.score(lambda obs: np.full((len(obs), 50), 0.02), position_only)
    # the same policy read from the state index is fine there
    m = sim.score(lambda obs: np.full((len(obs), 50), 0.02), position_only, obs_mode="state")
    assert m["kl_to_reference"] == pytest.approx(0.0, abs=1e-12)


def test_a_model_is_queried_in_bounded_chunks_with_the_same_scores(monkeypatch):
    """A model that one-hots its input must never see a whole big level at once (sim.scoring.QUERY_ENTRIES)."""
    import sim.scoring as scoring

    config = compose_config(["env=small", "agent=soft_planner", "agent.beta=0.3"])
    env = gym.make(sim.ENV_ID, config=config)
    table = run(config).setup.world.table(run(config).policy)
    seen = []

    def model(obs):
        seen.append(len(obs))
        return table[np.asarray(obs).reshape(len(obs), -1)[:, 0]]

    whole = sim.score(model, env, obs_mode="state")
    S = env.unwrapped.setup.world.n_states
    monkeypatch.setattr(scoring, "QUERY_ENTRIES", 7 * S)  # at most 7 observations per call
    seen.clear()
    chunked = sim.score(model, env, obs_mode="state")
    assert max(seen) == 7 and sum(seen) >= S
    for key in KEYS:
        assert chunked[key] == whole[key], key
