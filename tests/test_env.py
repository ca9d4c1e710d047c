"""Gymnasium environments: API compliance, agreement with the exact model, next-step autoreset."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim
from sim.build import build_setup
from sim.config import CorruptionConfig, EnvConfig, NoiseConfig, OracleConfig, SparsityConfig
from sim.env import TextEnv, TextVectorEnv
from sim.errors import ConfigError
from sim.worlds import EnumeratedWorld, Table

CORRUPTIONS = [None, {"noise": {"sigma": 0.5}}, {"sparsity": {"mode": "terminal", "budget": 0.5}}]


@pytest.mark.parametrize("obs_mode", ["state", "tokens", "markov"])
@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_check_env_passes(obs_mode, corruption):
    env = gym.make(sim.ENV_ID, obs_mode=obs_mode, corruption=corruption, vocab_size=5, horizon=4)
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("obs_mode", ["state", "markov"])
def test_check_env_passes_on_a_compressed_world(obs_mode):
    env = gym.make(sim.ENV_ID, obs_mode=obs_mode, vocab_size=5, horizon=4, reference="bigram", compressed=True)
    assert env.unwrapped.world.kind == "markov"
    check_env(env.unwrapped, skip_render_check=True)


def test_make_and_make_vec_build_our_worlds():
    env = gym.make(sim.ENV_ID, n_prompts=3, vocab_size=5, horizon=4, oracle={"kind": "nonlinear"})
    assert isinstance(env.unwrapped, TextEnv)
    assert env.unwrapped.world.n_prompts == 3 and env.unwrapped.setup.oracle.kind == "nonlinear"
    assert isinstance(env.unwrapped.world, EnumeratedWorld)
    envs = gym.make_vec(sim.ENV_ID, num_envs=16, n_prompts=3, vocab_size=5, horizon=4)
    assert isinstance(envs, TextVectorEnv)
    assert envs.num_envs == 16 and envs.observation_space.shape == (16,)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP


def test_same_world_as_the_experiment_runner():
    env = gym.make(sim.ENV_ID, n_prompts=4, vocab_size=6, horizon=5, world_seed=3)
    s = build_setup(EnvConfig(n_prompts=4, vocab_size=6, horizon=5), OracleConfig(), None, 3)
    u = env.unwrapped
    np.testing.assert_array_equal(u.world.table(u.setup.oracle.reward), s.world.table(s.oracle.reward))
    np.testing.assert_array_equal(u.world.table(u.world.ref), s.world.table(s.world.ref))


def test_single_env_episode_follows_the_tree_and_reports_oracle_reward():
    env = gym.make(sim.ENV_ID, vocab_size=4, horizon=3, corruption={"noise": {"sigma": 1.0}}, render_mode="ansi")
    u = env.unwrapped
    r_star = u.world.table(u.setup.oracle.reward)
    obs, info = env.reset(seed=1)
    assert obs == info["state"] and u.world.depth[obs] == 0
    for a in (2, 3):
        s = obs
        obs, r, term, trunc, info = env.step(a)
        assert info["oracle_reward"] == r_star[s, a]
        assert r != info["oracle_reward"]  # noisy channel
        assert not term and obs == u.world.next_table[s, a]
    obs, r, term, trunc, info = env.step(1)  # the H-th token ends the episode
    assert term and not trunc
    assert env.render().endswith("t2 t3 t1")
    with pytest.raises(RuntimeError, match="reset"):
        u.step(1)


def test_tokens_observation_decodes_the_prefix():
    world = build_setup(EnvConfig(n_prompts=2, vocab_size=4, horizon=3), OracleConfig()).world
    table = world.token_table()
    for s in range(world.n_states):
        p, toks = world.decode(s)
        assert table[s, 0] == p and table[s, -1] == len(toks)
        assert list(table[s, 1 : 1 + len(toks)]) == list(toks)
        assert np.all(table[s, 1 + len(toks) : -1] == world.vocab_size)


def test_tokens_observation_needs_an_enumerated_world():
    world = build_setup(EnvConfig(n_prompts=2, vocab_size=4, horizon=3, compressed=True), OracleConfig()).world
    with pytest.raises(ConfigError, match="obs_mode"):
        world.token_table()


@pytest.mark.parametrize("obs_mode", ["state", "tokens", "markov"])
def test_vector_env_matches_single_env_semantics(obs_mode):
    """Every slot of the vector env walks the tree; autoreset comes one step after termination."""
    B = 64
    envs = gym.make_vec(sim.ENV_ID, num_envs=B, vocab_size=4, horizon=3, obs_mode=obs_mode)
    u = envs
    world = u.world
    r_star = world.table(u.setup.oracle.reward)
    obs, _ = envs.reset(seed=0)
    states = u._states.copy()
    rng = np.random.default_rng(0)
    done = np.zeros(B, dtype=bool)
    for _ in range(20):
        a = rng.integers(0, 4, B)
        obs, r, term, trunc, info = envs.step(a)
        stepped = ~done
        np.testing.assert_array_equal(info["_oracle_reward"], stepped)
        np.testing.assert_array_equal(r[stepped], r_star[states[stepped], a[stepped]])
        assert np.all(r[done] == 0) and not term[done].any()
        assert np.all(world.depth[u._states[done]] == 0)  # reset slots are at a prompt
        expected_term = world.next_table[states, a] < 0
        np.testing.assert_array_equal(term[stepped], expected_term[stepped])
        if obs_mode == "tokens":
            for i in np.flatnonzero(stepped & term):
                p, toks = world.decode(int(states[i]))
                resp = [*toks] + ([] if a[i] == 0 else [int(a[i])])
                assert obs[i, 0] == p and obs[i, -1] == len(resp)
                assert list(obs[i, 1 : 1 + len(resp)]) == resp
        if obs_mode == "markov":  # [prompt, position, last token]; a final observation counts the last token
            nxt = u._states
            going = ~term
            np.testing.assert_array_equal(obs[:, 0], world.prompt[nxt])
            np.testing.assert_array_equal(obs[going, 1], world.depth[nxt[going]])
            last = np.where(world.last_token[nxt] < 0, world.vocab_size, world.last_token[nxt])
            np.testing.assert_array_equal(obs[going, 2], last[going])
            ended = stepped & term
            np.testing.assert_array_equal(obs[ended, 1], world.depth[states[ended]] + 1)
            np.testing.assert_array_equal(obs[ended, 2], a[ended])
        done = term.copy()
        states = u._states.copy()
    assert not trunc.any()


def test_vector_env_mean_return_matches_exact_value():
    """Uniform random actions: the mean episode return is within 4 standard errors of J(uniform)."""
    B = 2048
    setup = build_setup(EnvConfig(n_prompts=4, vocab_size=5, horizon=4), OracleConfig(kind="nonlinear"), None, 0)
    envs = gym.make_vec(sim.ENV_ID, num_envs=B, setup=setup)
    envs.reset(seed=0)
    rng = np.random.default_rng(1)
    ret = np.zeros(B)
    done = np.zeros(B, dtype=bool)
    finished: list[np.ndarray] = []
    for _ in range(60):
        _, r, term, _, _ = envs.step(rng.integers(0, 5, B))
        ret = np.where(done, 0.0, ret) + r
        finished.append(ret[term])
        done = term
    returns = np.concatenate(finished)
    world = setup.world
    uniform = Table(world, np.full((world.n_states, world.n_actions), 1 / 5))
    exact = world.evaluate(uniform, {"oracle": setup.oracle.reward})["oracle"]
    assert abs(returns.mean() - exact) < 4 * returns.std() / np.sqrt(returns.size)


def test_vector_env_budget_flags_are_per_episode():
    setup = build_setup(
        EnvConfig(n_prompts=2, vocab_size=4, horizon=3),
        OracleConfig(),
        CorruptionConfig(sparsity=SparsityConfig(budget=0.5), noise=NoiseConfig(sigma=0.0)),
        0,
    )
    envs = gym.make_vec(sim.ENV_ID, num_envs=4096, setup=setup)
    envs.reset(seed=0)
    carrying = []
    for _ in range(3):  # no EOS: every episode lasts 3 steps when actions avoid token 0
        _, r, term, _, info = envs.step(np.ones(4096, dtype=np.int64))
        carrying.append(r == info["oracle_reward"])
    # within an episode, either every reward arrives or none does
    np.testing.assert_array_equal(carrying[0], carrying[1])
    np.testing.assert_array_equal(carrying[1], carrying[2])
    assert abs(np.mean(carrying[0]) - 0.5) < 4 * np.sqrt(0.25 / 4096)


def test_bad_env_arguments():
    with pytest.raises(ConfigError, match="obs_mode"):
        gym.make(sim.ENV_ID, obs_mode="pixels")
    with pytest.raises(ConfigError, match="vocab_size"):
        gym.make(sim.ENV_ID, vocab_size=1)
    with pytest.raises(ConfigError, match="corruption.noise.sigma"):
        gym.make(sim.ENV_ID, corruption={"noise": {"sigma": -1}})
    with pytest.raises(ConfigError, match="num_envs"):
        gym.make_vec(sim.ENV_ID, num_envs=0)
    with pytest.raises(ConfigError, match="env.compressed=true"):  # too large to enumerate: suggests compression
        gym.make(sim.ENV_ID, vocab_size=1000, horizon=32)
    with pytest.raises(ConfigError, match="oracle.kind"):  # a compressed world carries Markov oracles only
        gym.make(sim.ENV_ID, compressed=True, oracle={"kind": "nonlinear"})


RLHF_WORLDS = {
    "enumerated": (sim.ENV_ID, {}),
    "compressed": (
        sim.MARKOV_ENV_ID,
        {
            "env": {
                "n_prompts": 2,
                "vocab_size": 30,
                "horizon": 6,
                "eos": True,
                "reference": "bigram",
                "compressed": True,
            },
            "reward_model": {"name": "linear"},
        },
    ),
}


@pytest.mark.parametrize("kind", list(RLHF_WORLDS))
def test_rlhf_env_pays_the_reward_model_the_cli_fits(kind):
    """pipeline=rlhf: the env pays the reward model fitted exactly as ``experiments.run seed=k pipeline=rlhf`` fits
    it (same labels, same MAP fit: equal to the last bit), and info keeps the oracle's reward."""
    from sim.build import config_from
    from sim.run import run

    env_id, extra = RLHF_WORLDS[kind]
    conf = {"pipeline": "rlhf", "feedback": {"n": 150, "flip": 0.1}, **extra}
    res = run(config_from(conf, {"seed": 5}))
    envs = gym.make_vec(env_id, num_envs=64, config=conf, world_seed=5)
    u = envs.unwrapped if hasattr(envs, "unwrapped") else envs
    w, model = u.world, u.setup.reward_model
    assert model is not None and u.setup.oracle is not None
    s = np.arange(min(w.n_states, 5000))[:, None]
    a = np.arange(w.n_actions)[None, :]
    np.testing.assert_array_equal(u.setup.channel.expected().at(s, a), res.proxy.at(s, a))
    assert not np.allclose(model.reward.at(s, a), u.setup.oracle.reward.at(s, a))  # a proxy, not the oracle
    envs.reset(seed=1)
    acts = np.ones(64, dtype=np.int64)
    for _ in range(4):
        _, r, _, _, infos = envs.step(acts)
        live, states = infos["_state"], infos["state"]  # the slots that stepped, and the states they acted in
        assert live.any()
        np.testing.assert_array_equal(r[live], model.reward.at(states[live], acts[live]))
        np.testing.assert_array_equal(infos["oracle_reward"][live], u.setup.oracle.reward.at(states[live], acts[live]))


def test_rlhf_env_refuses_rounds_that_need_an_agent():
    conf = {"pipeline": "rlhf", "feedback": {"sampler": "policy", "rounds": 3}}
    with pytest.raises(ConfigError, match="feedback.rounds"):
        gym.make(sim.ENV_ID, config=conf)


#: (world, corruption, obs_mode, whether the vector env steps on its fast path)
FAST_CASES = {
    "eos/oracle": (dict(n_prompts=3, vocab_size=5, horizon=4), None, "state", True),
    "no_eos/oracle": (dict(n_prompts=2, vocab_size=4, horizon=4, eos=False), None, "state", True),
    "eos/misweighted": (dict(n_prompts=3, vocab_size=5, horizon=4), {"misspec": {"angle": 0.6}}, "state", True),
    "noisy": (dict(n_prompts=3, vocab_size=5, horizon=4), {"noise": {"sigma": 0.5}}, "state", False),
    "budget": (dict(n_prompts=3, vocab_size=5, horizon=4), {"sparsity": {"budget": 0.5}}, "state", False),
    "tokens": (dict(n_prompts=3, vocab_size=5, horizon=4), None, "tokens", False),
    "compressed": (
        dict(n_prompts=2, vocab_size=6, horizon=4, reference="bigram", compressed=True),
        None,
        "state",
        False,
    ),
}


@pytest.mark.parametrize("case", list(FAST_CASES))
def test_the_fast_step_is_the_general_step_output_for_output(case):
    """The vector env's fast path (state observations, an exact channel, (S, A) reward tables) against the general
    step forced on an identical env: every output and info bit for bit, and the same draws (new prompts), over enough
    steps that slots end by EOS and at the horizon and are autoreset, or restarted by a subclass (setting ``_done``)."""
    env_kw, corruption, obs_mode, fast = FAST_CASES[case]
    B = 256
    fast_env = TextVectorEnv(num_envs=B, obs_mode=obs_mode, corruption=corruption, world_seed=1, **env_kw)
    general = TextVectorEnv(num_envs=B, obs_mode=obs_mode, corruption=corruption, world_seed=1, **env_kw)
    assert (fast_env._fast is not None) == fast
    general._fast = None
    w = fast_env.world
    for env in (fast_env, general):
        env.reset(seed=3)
    rng = np.random.default_rng(0)
    ends = {"eos": 0, "horizon": 0, "autoreset": 0}
    for _ in range(40):
        a = rng.integers(0, w.vocab_size, B)
        before = fast_env._states.copy()
        out_fast, out_general = fast_env.step(a), general.step(a.copy())
        for x, y in zip(out_fast[:4], out_general[:4], strict=True):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        assert out_fast[4].keys() == out_general[4].keys()
        for key in out_fast[4]:
            np.testing.assert_array_equal(out_fast[4][key], out_general[4][key])
        np.testing.assert_array_equal(fast_env._states, general._states)
        term, stepped = out_fast[2], out_fast[4]["_state"]
        ends["eos"] += int((term & (a == 0) & w.eos).sum())
        ends["horizon"] += int((term & (w.depth[before] == w.horizon - 1)).sum())
        ends["autoreset"] += int((~stepped).sum())
        restart = np.flatnonzero(term)[::3]  # a subclass restarting slots itself (sim.integrations.sb3's restart)
        for env in (fast_env, general):
            env._states[restart] = restart % w.n_prompts
            env._done[restart] = False
    assert fast_env.np_random.random() == general.np_random.random()  # the same draws were made
    assert ends["horizon"] > 0 and ends["autoreset"] > 0 and (ends["eos"] > 0 or not w.eos)


@pytest.mark.parametrize("eos", [True, False])
def test_the_fast_steps_closed_form_is_the_worlds_next_state(eos):
    env = TextVectorEnv(num_envs=4, n_prompts=3, vocab_size=4, horizon=4, eos=eos)
    w = env.world
    assert env._closed_form is not None
    s, a = np.divmod(np.arange(w.n_states * w.n_actions), w.n_actions)
    env._states = s
    env._done = np.zeros(s.size, dtype=bool)
    env.num_envs = s.size
    obs, _, term, _, _ = env._step_fast(a)
    expected = w.next_table.reshape(-1)
    np.testing.assert_array_equal(term, expected < 0)
    np.testing.assert_array_equal(obs[~term], expected[~term])
