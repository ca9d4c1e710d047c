"""The compressed-world vector env: spaces, dynamics, delivered rewards, autoreset, Monte Carlo vs exact DP."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from scipy import stats

import sim  # noqa: F401  (registers the env ids)
from sim import markov
from sim.corruption import CorruptionConfig, NoiseConfig, SparsityConfig
from sim.errors import ConfigError
from sim.markov_env import MarkovSetup, MarkovVectorEnv
from sim.markov_rlhf import SampledSequences, sequence_returns

WORLD = dict(n_prompts=3, vocab_size=6, horizon=5, reference="bigram")


def _rollout(env: MarkovVectorEnv, rng: np.random.Generator, policy=None):
    """One episode per slot from a fresh reset: per-step delivered and oracle rewards, tokens, and prompts."""
    B, H = env.num_envs, env.world.horizon
    obs, _ = env.reset()
    prompts = obs[:, 0].copy()
    tokens = np.full((B, H), -1, dtype=np.int64)
    delivered, oracle = np.zeros((B, H)), np.zeros((B, H))
    finished = np.zeros(B, dtype=bool)
    for t in range(H):
        assert np.all(obs[~finished, 1] == t)
        if policy is None:
            a = rng.integers(0, env.world.vocab_size, B)
        else:
            a = markov.sample_tokens(policy(t), obs[:, 0], obs[:, 2], rng)
        obs, r, term, trunc, infos = env.step(a)
        assert not trunc.any() and obs in env.observation_space
        on = ~finished
        tokens[on, t] = a[on]
        delivered[on, t], oracle[on, t] = r[on], infos["oracle_reward"][on]
        finished |= term
        if finished.all():
            break
    assert finished.all()
    return prompts, tokens, delivered, oracle


def test_make_vec_builds_it_and_observations_are_the_markov_state():
    envs = gym.make_vec("rmsim/MarkovText-v0", num_envs=8, **WORLD)
    assert isinstance(envs, MarkovVectorEnv)
    obs, _ = envs.reset(seed=3)
    assert obs.shape == (8, 3) and np.all(obs[:, 1] == 0) and np.all(obs[:, 2] == 6)  # position 0, BOS
    obs2, *_ = envs.step(np.full(8, 2))
    np.testing.assert_array_equal(obs2[:, 0], obs[:, 0])  # the prompt stays
    assert np.all(obs2[:, 1:] == [1, 2])
    with pytest.raises(TypeError, match="make_vec"):
        gym.make("rmsim/MarkovText-v0")


def test_oracle_rewards_sum_to_the_exact_sequence_returns():
    env = MarkovVectorEnv(500, **WORLD)
    env.reset(seed=0)
    prompts, tokens, delivered, oracle = _rollout(env, np.random.default_rng(1))
    seqs = SampledSequences(prompt=prompts, tokens=tokens, length=(tokens >= 0).sum(axis=1))
    np.testing.assert_allclose(oracle.sum(axis=1), sequence_returns(env.world, env.setup.oracle, seqs), atol=1e-12)
    np.testing.assert_array_equal(delivered, oracle)  # no corruption: the learner is paid the oracle, token by token
    ends = tokens[np.arange(500), (tokens >= 0).sum(axis=1) - 1]
    short = (tokens >= 0).sum(axis=1) < env.world.horizon
    assert np.all(ends[short] == 0)  # an episode shorter than H ended with EOS


def test_same_seed_same_rollout():
    runs = []
    for _ in range(2):
        env = MarkovVectorEnv(64, **WORLD, corruption={"noise": {"sigma": 1.0}, "sparsity": {"budget": 0.5}})
        env.reset(seed=11)
        runs.append(_rollout(env, np.random.default_rng(2)))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_next_step_autoreset():
    env = MarkovVectorEnv(4, **WORLD)
    env.reset(seed=0)
    obs, r, term, _, infos = env.step(np.array([0, 1, 0, 1]))  # EOS ends slots 0 and 2
    np.testing.assert_array_equal(term, [True, False, True, False])
    obs, r, term, _, infos = env.step(np.array([3, 1, 3, 1]))  # slots 0 and 2 restart; their actions are ignored
    np.testing.assert_array_equal(infos["_oracle_reward"], [False, True, False, True])
    assert np.all(obs[[0, 2], 1:] == [0, 6]) and np.all(r[[0, 2]] == 0) and not term[[0, 2]].any()
    assert np.all(obs[[1, 3], 1:] == [2, 1])


def test_delivery_through_sparsity_noise_and_budget():
    rng = np.random.default_rng(0)
    base = MarkovVectorEnv(4000, **WORLD)
    base.reset(seed=5)
    _, tokens, _, oracle = _rollout(base, rng)
    totals, live = oracle.sum(axis=1), tokens >= 0
    lengths = live.sum(axis=1)

    def run(corruption):
        env = MarkovVectorEnv(4000, **WORLD, corruption=corruption)
        env.reset(seed=5)  # the same prompts; the same actions from the same generator
        _, tk, d, o = _rollout(env, np.random.default_rng(0))
        np.testing.assert_array_equal(tk, tokens)
        return d, o

    term, _ = run({"sparsity": {"mode": "terminal"}})
    np.testing.assert_allclose(term.sum(axis=1), totals, atol=1e-12)
    np.testing.assert_array_equal(term[np.arange(4000), lengths - 1], term.sum(axis=1))  # all on the last step
    chunk, _ = run({"sparsity": {"mode": "chunk", "chunk": 2}})
    np.testing.assert_allclose(chunk.sum(axis=1), totals, atol=1e-12)
    assert np.all(chunk[lengths > 1, 0] == 0)  # nothing paid after the first token unless the episode ended
    noisy, _ = run(CorruptionConfig(noise=NoiseConfig(sigma=2.0)))
    diff = (noisy - oracle)[live]
    # mean within 4 standard errors of 0; sd within 5% of 2 (its standard error is 2/sqrt(2n) < 0.5%)
    assert abs(diff.mean()) < 4 * 2.0 / np.sqrt(diff.size) and diff.std() == pytest.approx(2.0, rel=0.05)
    budget, its_oracle = run(CorruptionConfig(sparsity=SparsityConfig(budget=0.3)))  # (its own prompts)
    carried = np.any(budget != 0, axis=1)
    assert abs(carried.mean() - 0.3) < 4 * np.sqrt(0.21 / 4000)
    np.testing.assert_array_equal(budget[carried], its_oracle[carried])  # a carried episode is paid in full


def test_monte_carlo_return_of_pi_ref_in_the_env_matches_the_exact_value():
    env = MarkovVectorEnv(20_000, **WORLD, corruption={"misspec": {"angle": 0.7}})
    env.reset(seed=0)
    s = env.setup
    pi_ref = markov.reference_policy(s.world, s.ref)
    _, _, paid, oracle = _rollout(env, np.random.default_rng(3), pi_ref)
    exact = markov.evaluate(s.world, pi_ref, {"oracle": s.oracle, "proxy": s.proxy}, s.ref)
    for name, returns in (("oracle", oracle.sum(axis=1)), ("proxy", paid.sum(axis=1))):
        se = returns.std(ddof=1) / np.sqrt(returns.size)
        z = (returns.mean() - exact[name]) / se
        assert abs(z) < stats.norm.ppf(0.9995), (name, returns.mean(), exact[name], se)  # a 99.9% interval


def test_bad_worlds_are_refused_before_allocation():
    with pytest.raises(ConfigError, match="oracle.templates"):
        MarkovVectorEnv(2, vocab_size=50_000, horizon=64, reference="uniform")  # the default oracle has bigrams
    with pytest.raises(ConfigError, match="oracle.templates"):
        MarkovVectorEnv(2, **WORLD, oracle={"templates": ["unigram", "hashed"]})
    with pytest.raises(ConfigError, match="num_envs"):
        MarkovVectorEnv(0, **WORLD)


def test_learners_accept_a_ready_setup():
    world = markov.MarkovWorld(2, 5, 4)
    oracle = markov.make_markov_oracle(world, "linear", 0, templates=("unigram", "position"))
    setup = MarkovSetup(world, markov.markov_reference(world, "uniform"), oracle, oracle)
    env = MarkovVectorEnv(16, setup=setup)
    obs, _ = env.reset(seed=0)
    assert env.single_observation_space.nvec.tolist() == [2, 5, 6] and obs.shape == (16, 3)
