"""One config for every entry point: a gymnasium env given the command line's config draws the command line's world."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import sim
from experiments.config import compose_config
from sim.config import Config
from sim.run import run

PRESETS = ["tiny", "small", "medium", "large"]


def test_the_schema_defaults_are_the_command_lines():
    """An env given no config draws the command line's default world: the schema's defaults equal the presets'."""
    cli = compose_config([])
    base = Config()
    for group in ("env", "oracle", "corruption", "feedback", "reward_model", "agent"):
        assert getattr(cli, group) == getattr(base, group), group
    assert cli.seed == base.seed and cli.pipeline == base.pipeline


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("seed", [0, 3])
def test_an_env_with_the_cli_config_is_the_cli_world(preset, seed):
    overrides = [f"env={preset}", f"seed={seed}", "agent=exact_planner", "corruption=misweighted"]
    if preset == "large":
        overrides.append("env.horizon=4")  # the large preset's world (compressed, V = 1000, bigram), 8x shorter
    config = compose_config(overrides)
    cli = run(config).metrics
    env_id = sim.MARKOV_ENV_ID if config.env.compressed else sim.ENV_ID
    env = gym.make(env_id, config=config, world_seed=seed)
    setup = env.unwrapped.setup
    world = setup.world
    greedy = world.greedy_policy(setup.channel.expected())
    scored = sim.score(lambda obs, p=greedy: _rows(world, p, obs), env, obs_mode="state")
    for key in ("optimal_return", "oracle_return", "reference_return", "proxy_return", "kl_to_reference"):
        assert scored[key] == pytest.approx(cli[key], rel=1e-9, abs=1e-12), key


def _rows(world, policy, states):
    """The rows of a policy at global states (a function of the ``state`` observation)."""
    out = np.empty((len(states), world.n_actions))
    depth = world.depth[states]
    for t in np.unique(depth):
        mine = depth == t
        out[mine] = policy.rows_at(int(t), states[mine] - world.level_start[t])
    return out


def test_keyword_shorthands_rebuild_the_cli_world():
    """The issue's case: env=medium rebuilt by keywords (its bigram reference included) scores as on the CLI."""
    cli = run(compose_config(["env=medium", "agent=exact_planner"])).metrics
    env = gym.make(sim.ENV_ID, n_prompts=8, vocab_size=8, horizon=6, reference="bigram")
    m = sim.score(np.asarray(env.unwrapped.setup.world.table(env.unwrapped.setup.world.ref)), env)
    assert m["reference_return"] == pytest.approx(cli["reference_return"], rel=1e-12)
    assert m["optimal_return"] == pytest.approx(cli["optimal_return"], rel=1e-12)


def test_unknown_env_keywords_and_config_keys_are_refused():
    from sim.errors import ConfigError

    with pytest.raises(ConfigError, match="n_promts"):
        gym.make(sim.ENV_ID, n_promts=3)
    with pytest.raises(ConfigError, match="env.bogus"):
        gym.make(sim.ENV_ID, config={"env": {"bogus": 1}})


@pytest.mark.parametrize("env_id, kwargs", [(sim.ENV_ID, {}), (sim.MARKOV_ENV_ID, {"vocab_size": 50, "horizon": 6})])
def test_info_keys_are_the_same_in_every_vectorisation_mode(env_id, kwargs):
    native = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", **kwargs)
    synced = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync", **kwargs)
    keys = []
    for envs in (native, synced):
        _, reset_info = envs.reset(seed=0)
        _, _, _, _, step_info = envs.step(np.ones(3, dtype=np.int64))
        keys.append((sorted(reset_info), sorted(step_info)))
    assert keys[0] == keys[1]
    assert "state" in keys[0][1] and "oracle_reward" in keys[0][1]
