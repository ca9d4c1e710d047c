"""The compressed-world envs (``rmsim/MarkovText-v0``: ``TextEnv``/``TextVectorEnv`` on a Markov world with
``obs_mode="markov"``): spaces, dynamics, delivered rewards, autoreset, Monte Carlo vs exact values."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from scipy import stats

import sim
from sim.agents.base import sample_from
from sim.build import Setup
from sim.config import CorruptionConfig, NoiseConfig, SparsityConfig
from sim.corruption import build_channel
from sim.env import TextEnv, TextVectorEnv, markov_env, markov_vector_env
from sim.errors import ConfigError
from sim.oracle import make_oracle
from sim.reference import make_reference
from sim.worlds import MarkovWorld, Sequences

WORLD = dict(n_prompts=3, vocab_size=6, horizon=5, reference="bigram")


def _local(world: MarkovWorld, obs: np.ndarray) -> np.ndarray:
    """The level-local row of each Markov observation ``[prompt, position, last token]``: the prompt at position 0
    (or when the world does not track the last token), else the (prompt, last token) pair, prompt-major."""
    p, t, y = obs[:, 0], obs[:, 1], obs[:, 2]
    if not world.track:
        return p
    return np.where(t == 0, p, p * world.branching + y - world.first_token)


def _rollout(env: TextVectorEnv, rng: np.random.Generator, policy=None):
    """One episode per slot from a fresh reset: per-step delivered and oracle rewards, tokens, and prompts."""
    B, H, V = env.num_envs, env.world.horizon, env.world.vocab_size
    obs, _ = env.reset()
    prompts = obs[:, 0].copy()
    tokens = np.full((B, H), -1, dtype=np.int64)
    delivered, oracle = np.zeros((B, H)), np.zeros((B, H))
    finished = np.zeros(B, dtype=bool)
    for t in range(H):
        assert np.all(obs[~finished, 1] == t)
        a = rng.integers(0, V, B)
        if policy is not None:  # finished slots keep their random (ignored) action
            on = np.flatnonzero(~finished)
            a[on] = sample_from(policy.level(t)[_local(env.world, obs[on])], rng)
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
    envs = gym.make_vec(sim.MARKOV_ENV_ID, num_envs=8, **WORLD)
    assert isinstance(envs, TextVectorEnv) and envs.obs_mode == "markov"
    assert isinstance(envs.world, MarkovWorld) and envs.world is envs.setup.world
    obs, _ = envs.reset(seed=3)
    assert obs.shape == (8, 3) and np.all(obs[:, 1] == 0) and np.all(obs[:, 2] == 6)  # position 0, BOS
    obs2, *_ = envs.step(np.full(8, 2))
    np.testing.assert_array_equal(obs2[:, 0], obs[:, 0])  # the prompt stays
    assert np.all(obs2[:, 1:] == [1, 2])


def test_make_gives_a_single_env_that_passes_check_env():
    """``gym.make`` now gives one episode at a time (it used to refuse, pointing to make_vec)."""
    env = gym.make(sim.MARKOV_ENV_ID, **WORLD)
    u = env.unwrapped
    assert isinstance(u, TextEnv) and u.obs_mode == "markov" and isinstance(u.world, MarkovWorld)
    assert u.observation_space.nvec.tolist() == [3, 6, 7]
    obs, info = env.reset(seed=0)
    assert obs[1:].tolist() == [0, 6] and u.world.depth[info["state"]] == 0
    obs, r, term, trunc, info = env.step(4)
    assert obs[1:].tolist() == [1, 4] and not term and not trunc
    assert info["oracle_reward"] == r  # no corruption


@pytest.mark.parametrize(
    "corruption", [None, {"noise": {"sigma": 0.5}}, {"sparsity": {"mode": "terminal", "budget": 0.5}}]
)
def test_check_env_passes(corruption):
    check_env(markov_env(**WORLD, corruption=corruption), skip_render_check=True)


def test_check_env_passes_at_the_default_language_model_scale():
    """The defaults: 4 prompts, 1000 tokens, horizon 32, a bigram reference and oracle (~1000^32 prefixes)."""
    env = gym.make(sim.MARKOV_ENV_ID)
    u = env.unwrapped
    assert (u.world.n_prompts, u.world.vocab_size, u.world.horizon) == (4, 1000, 32)
    check_env(u, skip_render_check=True)


def test_oracle_rewards_sum_to_the_exact_sequence_returns():
    env = markov_vector_env(500, **WORLD)
    env.reset(seed=0)
    prompts, tokens, delivered, oracle = _rollout(env, np.random.default_rng(1))
    seqs = Sequences(prompt=prompts, tokens=tokens, length=(tokens >= 0).sum(axis=1))
    np.testing.assert_allclose(
        oracle.sum(axis=1), env.world.sequence_returns(env.setup.oracle.reward, seqs), atol=1e-12
    )
    np.testing.assert_array_equal(delivered, oracle)  # no corruption: the learner is paid the oracle, token by token
    ends = tokens[np.arange(500), (tokens >= 0).sum(axis=1) - 1]
    short = (tokens >= 0).sum(axis=1) < env.world.horizon
    assert np.all(ends[short] == 0)  # an episode shorter than H ended with EOS


def test_same_seed_same_rollout():
    runs = []
    for _ in range(2):
        env = markov_vector_env(64, **WORLD, corruption={"noise": {"sigma": 1.0}, "sparsity": {"budget": 0.5}})
        env.reset(seed=11)
        runs.append(_rollout(env, np.random.default_rng(2)))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_next_step_autoreset():
    env = markov_vector_env(4, **WORLD)
    env.reset(seed=0)
    obs, r, term, _, infos = env.step(np.array([0, 1, 0, 1]))  # EOS ends slots 0 and 2
    np.testing.assert_array_equal(term, [True, False, True, False])
    assert np.all(obs[[0, 2], 1:] == [1, 0])  # the final observation: [prompt, length, last token]
    obs, r, term, _, infos = env.step(np.array([3, 1, 3, 1]))  # slots 0 and 2 restart; their actions are ignored
    np.testing.assert_array_equal(infos["_oracle_reward"], [False, True, False, True])
    assert np.all(obs[[0, 2], 1:] == [0, 6]) and np.all(r[[0, 2]] == 0) and not term[[0, 2]].any()
    assert np.all(infos["oracle_reward"][[0, 2]] == 0)
    assert np.all(obs[[1, 3], 1:] == [2, 1])


def test_noise_is_drawn_for_every_slot():
    """Fresh noise is drawn for every slot of the batch, stepped or not: a slot's noise does not depend on whether
    the other slots ended (two envs whose slot 2 ends at different steps deliver the same noise to slots 0, 1, 3)."""
    corruption = {"noise": {"sigma": 1.0}}
    runs = []
    for first in ([1, 1, 0, 1], [1, 1, 1, 1]):  # slot 2 ends at step 1 in the first env only
        env = markov_vector_env(4, **WORLD, corruption=corruption)
        env.reset(seed=4)
        steps = [env.step(np.array(first)), env.step(np.array([2, 2, 2, 2]))]
        runs.append([r - infos["oracle_reward"] for _, r, _, _, infos in steps])
    for k in range(2):
        np.testing.assert_array_equal(runs[0][k][[0, 1, 3]], runs[1][k][[0, 1, 3]])
        assert np.all(runs[1][k] != 0)
    assert runs[0][1][2] == 0  # the restarted slot is paid nothing


def test_delivery_through_sparsity_noise_and_budget():
    rng = np.random.default_rng(0)
    base = markov_vector_env(4000, **WORLD)
    base.reset(seed=5)
    _, tokens, _, oracle = _rollout(base, rng)
    totals, live = oracle.sum(axis=1), tokens >= 0
    lengths = live.sum(axis=1)

    def run(corruption):
        env = markov_vector_env(4000, **WORLD, corruption=corruption)
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
    env = markov_vector_env(20_000, **WORLD, corruption={"misspec": {"angle": 0.7}})
    env.reset(seed=0)
    s = env.setup
    _, _, paid, oracle = _rollout(env, np.random.default_rng(3), s.world.ref)
    exact = s.world.evaluate(s.world.ref, {"oracle": s.oracle.reward, "proxy": s.channel.expected()})
    for name, returns in (("oracle", oracle.sum(axis=1)), ("proxy", paid.sum(axis=1))):
        se = returns.std(ddof=1) / np.sqrt(returns.size)
        z = (returns.mean() - exact[name]) / se
        assert abs(z) < stats.norm.ppf(0.9995), (name, returns.mean(), exact[name], se)  # a 99.9% interval


def test_compressed_env_steps_like_the_enumerated_env():
    """With the same world seed, actions and env seed, the compressed env and the enumerated env with Markov
    observations give the same observations, rewards (noise included) and terminations, step by step."""
    corruption = {"noise": {"sigma": 0.5}, "sparsity": {"mode": "chunk", "chunk": 2}}
    oracle = {"templates": ["unigram", "position", "bigram", "prompt"]}
    kw = dict(**WORLD, oracle=oracle, obs_mode="markov", corruption=corruption, world_seed=7)
    envs = [gym.make_vec(sim.ENV_ID, num_envs=32, compressed=c, **kw) for c in (False, True)]
    assert [e.world.kind for e in envs] == ["enumerated", "markov"]
    first = [e.reset(seed=1)[0] for e in envs]
    np.testing.assert_array_equal(*first)
    rng = np.random.default_rng(2)
    for _ in range(20):
        a = rng.integers(0, 6, 32)
        (o0, r0, t0, _, i0), (o1, r1, t1, _, i1) = (e.step(a) for e in envs)
        np.testing.assert_array_equal(o0, o1)
        np.testing.assert_array_equal(t0, t1)
        np.testing.assert_allclose(r0, r1, atol=1e-12)
        np.testing.assert_allclose(i0["oracle_reward"], i1["oracle_reward"], atol=1e-12)


def test_state_observations_are_the_compressed_states():
    """``obs_mode="state"`` on a compressed world observes its (prompt, position, last token) state index."""
    envs = [markov_vector_env(16, **WORLD, obs_mode=m) for m in ("state", "markov")]
    w = envs[0].world
    assert envs[0].single_observation_space == gym.spaces.Discrete(w.n_states)
    obs = [e.reset(seed=0)[0] for e in envs]
    rng = np.random.default_rng(0)
    for _ in range(3):  # no EOS: everyone is mid-episode
        s, m = obs
        np.testing.assert_array_equal(w.prompt[s], m[:, 0])
        np.testing.assert_array_equal(w.depth[s], m[:, 1])
        np.testing.assert_array_equal(np.where(w.last_token[s] < 0, w.vocab_size, w.last_token[s]), m[:, 2])
        a = rng.integers(1, 6, 16)
        obs = [e.step(a)[0] for e in envs]


def test_bad_worlds_are_refused_before_allocation():
    with pytest.raises(ConfigError, match="oracle.templates"):
        markov_vector_env(2, vocab_size=50_000, horizon=64, reference="uniform")  # the default oracle has bigrams
    with pytest.raises(ConfigError, match="oracle.templates"):
        markov_vector_env(2, **WORLD, oracle={"templates": ["unigram", "hashed"]})
    with pytest.raises(ConfigError, match="oracle.kind"):
        markov_env(**WORLD, oracle={"kind": "nonlinear"})
    with pytest.raises(ConfigError, match="env.reference"):
        markov_env(**{**WORLD, "reference": "softmax"})
    with pytest.raises(ConfigError, match="num_envs"):
        markov_vector_env(0, **WORLD)
    with pytest.raises(ConfigError, match="obs_mode"):
        markov_vector_env(2, **WORLD, obs_mode="tokens")  # a compressed state is not a prefix
    with pytest.raises(ConfigError, match="obs_mode"):
        markov_env(**WORLD, obs_mode="pixels")


def test_learners_accept_a_ready_setup():
    world = MarkovWorld(2, 5, 4, track_last_token=False)
    world.ref = make_reference(world, "uniform")
    oracle = make_oracle(world, "linear", "dense", 0, templates=("unigram", "position"))
    setup = Setup(world, oracle, build_channel(world, oracle))
    env = markov_vector_env(16, setup=setup)
    assert env.setup is setup
    obs, _ = env.reset(seed=0)
    assert env.single_observation_space.nvec.tolist() == [2, 5, 6] and obs.shape == (16, 3)
    _, _, paid, oracle_paid = _rollout(env, np.random.default_rng(0), world.ref)
    np.testing.assert_array_equal(paid, oracle_paid)
