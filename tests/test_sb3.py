"""The stable-baselines3 integration (the ``sb3`` extra; ``make test-sb3`` installs it and runs this file): the
``VecEnv`` adapter against SB3's own ``make_vec_env`` on single envs, ``agent=sb3_ppo`` through the command line's
run path on both world kinds, exact scoring of an SB3 model equal to the command line's evaluation of its table,
determinism per seed, and the example script. Without the extra, only the refusal tests run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import sim
from experiments.config import compose_config
from sim.agents import AgentContext, run_agent
from sim.agents.sb3 import ModelTable, sb3_installed
from sim.build import build_setup
from sim.config import AgentConfig
from sim.errors import ConfigError
from sim.metrics import exact_metrics
from sim.run import run
from sim.worlds import Table

ROOT = Path(__file__).resolve().parents[1]
needs_sb3 = pytest.mark.skipif(
    not sb3_installed(), reason="stable-baselines3 is not installed (the sb3 extra: make test-sb3 installs it)"
)
EXACT = ("optimal_return", "oracle_return", "reference_return", "gap", "normalized_gap", "proxy_return",
         "reference_proxy_return", "kl_to_reference")  # fmt: skip


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The agent sets torch to one thread while it runs; direct PPO calls here do the same (and restore it)."""
    if not sb3_installed():
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------- without the extra
def test_the_agents_package_imports_neither_torch_nor_stable_baselines3():
    code = "import sys, sim.agents, sim.integrations; print(sorted({'torch', 'stable_baselines3'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_without_the_extra_sb3_ppo_is_refused_before_any_work_naming_agent_name(monkeypatch):
    import sim.agents.sb3 as agent_module

    monkeypatch.setattr(agent_module, "sb3_installed", lambda: False)
    with pytest.raises(ConfigError) as e:
        compose_config(["agent=sb3_ppo"])
    assert e.value.field == "agent.name" and "pip install -e '.[sb3]'" in str(e.value)
    setup = build_setup(*_parts(compose_config(["env=tiny"])), 0)
    ctx = AgentContext(setup.world, setup.channel.expected(), setup.channel, setup.oracle, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="agent.name"):
        run_agent(ctx, AgentConfig(name="sb3_ppo"))


def _parts(cfg):
    return cfg.env, cfg.oracle, cfg.corruption


# ------------------------------------------------------------- the VecEnv adapter
def _deterministic_actions(obs: np.ndarray, n_actions: int) -> np.ndarray:
    """A fixed function of each observation (a state index, or a token or Markov vector)."""
    o = obs.reshape(len(obs), -1).astype(np.int64)
    return (o @ (7 * np.arange(o.shape[1]) + 3) + 1) % n_actions


def _episodes(venv, steps: int, actions) -> tuple[dict, set, list]:
    """Roll ``venv`` (an SB3 VecEnv); per first observation, the episodes' (return, length, terminal observation);
    the first observations seen after a reset; and (obs before, obs after, done, info) of every transition."""
    obs = venv.reset()
    start = [o.tobytes() for o in obs]
    starts = set(start)
    totals, lengths = np.zeros(venv.num_envs), np.zeros(venv.num_envs, dtype=int)
    outcomes: dict[bytes, set] = {}
    moves = []
    for _ in range(steps):
        nxt, rewards, dones, infos = venv.step(actions(obs))
        totals += rewards
        lengths += 1
        for i in range(venv.num_envs):
            moves.append((obs[i], nxt[i], bool(dones[i]), infos[i]))
            if dones[i]:
                ep = infos[i]["episode"]
                assert ep["r"] == pytest.approx(totals[i], abs=1e-5) and ep["l"] == lengths[i]
                outcomes.setdefault(start[i], set()).add(
                    (round(float(totals[i]), 5), int(lengths[i]), infos[i]["terminal_observation"].tobytes())
                )
                start[i] = nxt[i].tobytes()
                starts.add(start[i])
                totals[i], lengths[i] = 0.0, 0
        obs = nxt
    return outcomes, starts, moves


@needs_sb3
@pytest.mark.filterwarnings("ignore:.*render_mode")  # make_vec_env asks single envs for rgb_array first
@pytest.mark.parametrize("obs_mode", ["state", "tokens", "markov"])
def test_the_adapter_gives_the_episodes_and_observations_of_make_vec_env(obs_mode):
    """A deterministic policy on a deterministic reward: every prompt's episode (return, length, terminal observation)
    is the same through the adapter as through SB3's DummyVecEnv of single envs, and so are the reset observations."""
    from stable_baselines3.common.env_util import make_vec_env

    from sim.integrations.sb3 import make_rmsim_vec_env

    kwargs = {"config": compose_config(["env=small", "corruption=misweighted"]), "obs_mode": obs_mode}
    ours = make_rmsim_vec_env(sim.ENV_ID, n_envs=8, seed=0, **kwargs)
    theirs = make_vec_env(sim.ENV_ID, n_envs=8, seed=0, env_kwargs=kwargs)
    assert ours.observation_space == theirs.observation_space and ours.action_space == theirs.action_space
    V = ours.action_space.n

    def act(obs):
        return _deterministic_actions(obs, V)

    ours_out, ours_starts, moves = _episodes(ours, 60, act)
    theirs_out, theirs_starts, _ = _episodes(theirs, 60, act)
    assert ours_out == theirs_out and len(ours_out) == ours.setup.world.n_prompts
    assert all(len(v) == 1 for v in ours_out.values())  # one outcome per prompt: nothing leaks across episodes
    assert ours_starts == theirs_starts  # what an episode starts from is the same, and nothing else is
    world = ours.setup.world
    for before, after, done, info in moves:
        assert "terminal_observation" in info if done else "terminal_observation" not in info
        assert info["TimeLimit.truncated"] is False and np.isfinite(info["oracle_reward"])
        if obs_mode == "state":  # the state acted in, and where the episode went
            assert info["state"] == before
            assert after < world.n_prompts if done else world.depth[after] == world.depth[before] + 1


@needs_sb3
@pytest.mark.filterwarnings("ignore:.*render_mode")
def test_the_adapter_pays_the_distribution_of_make_vec_env():
    """Uniform random actions on a noisy, terminal-only, half-budget channel (pending payments and per-episode
    flags must restart with each episode): both envs' mean episode returns match the exact expected value."""
    from stable_baselines3.common.env_util import make_vec_env

    from sim.integrations.sb3 import make_rmsim_vec_env

    overrides = ["env=tiny", "corruption=noisy", "corruption.sparsity.mode=terminal", "corruption.sparsity.budget=0.5"]
    kwargs = {"config": compose_config(overrides)}
    ours = make_rmsim_vec_env(sim.ENV_ID, n_envs=64, seed=1, **kwargs)
    theirs = make_vec_env(sim.ENV_ID, n_envs=64, seed=1, env_kwargs=kwargs)
    world = ours.setup.world
    exact = sim.score(np.full((world.n_states, world.n_actions), 1.0 / world.n_actions), ours)
    rng = np.random.default_rng(0)
    oracle_returns: dict[str, list[float]] = {}
    for venv in (ours, theirs):
        venv.reset()
        returns, lengths = [], []
        oracle = oracle_returns.setdefault(type(venv).__name__, [])
        paid = np.zeros((venv.num_envs, 2), dtype=bool)  # per slot: saw an unpaid episode, saw a paid one
        while len(returns) < 4000:
            _, _, dones, infos = venv.step(rng.integers(0, world.n_actions, venv.num_envs))
            for i in np.flatnonzero(dones):
                returns.append(infos[i]["episode"]["r"])
                paid[i, int(returns[-1] != 0.0)] = True
                lengths.append(infos[i]["episode"]["l"])
                oracle.append(infos[i]["episode"].get("oracle_r", np.nan))
        r = np.asarray(returns)
        assert abs(r.mean() - exact["proxy_return"]) < 4.5 * r.std() / np.sqrt(r.size), type(venv).__name__
        assert np.mean(r == 0.0) > 0.4  # half the episodes carry no reward
        assert paid.all()  # drawn per episode, not per slot: each slot's ~60 episodes have both kinds
        n = np.asarray(lengths)  # H = 3, EOS with probability 1/4 at each step: E[length] = 1 + 3/4 + 9/16
        assert abs(n.mean() - (1 + 3 / 4 + 9 / 16)) < 4.5 * n.std() / np.sqrt(n.size)
    o = np.asarray(oracle_returns["RmsimVecEnv"])  # the adapter's own: the oracle return of each episode
    assert abs(o.mean() - exact["oracle_return"]) < 4.5 * o.std() / np.sqrt(o.size)


@needs_sb3
def test_the_adapter_is_seeded_scored_and_answers_sb3s_per_env_calls():
    from stable_baselines3 import PPO

    from sim.integrations.sb3 import RmsimVecEnv, make_rmsim_vec_env

    def rollout(seed):
        venv = make_rmsim_vec_env(sim.ENV_ID, n_envs=4, seed=seed, vocab_size=4, horizon=3)
        first = venv.reset()
        return [first, *(venv.step(np.ones(4, dtype=np.int64))[0] for _ in range(5))]

    assert all(np.array_equal(a, b) for a, b in zip(rollout(3), rollout(3), strict=True))
    venv = make_rmsim_vec_env(sim.ENV_ID, n_envs=4, seed=0, vocab_size=4, horizon=3)
    assert venv.get_attr("obs_mode") == ["state"] * 4 and venv.get_attr("num_envs", [1, 2]) == [4, 4]
    assert venv.env_is_wrapped(gym.Wrapper) == [False] * 4 and venv.get_attr("render_mode") == [None] * 4
    with pytest.raises(ValueError, match="share one env"):
        venv.set_attr("foo", 1, indices=[0])
    with pytest.raises(TypeError, match="rmsim's batched env"):
        RmsimVecEnv(gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync"))
    with pytest.raises(TypeError, match="SB3's VecEnv wrappers"):
        RmsimVecEnv(gym.wrappers.vector.NormalizeReward(gym.make_vec(sim.ENV_ID, num_envs=2, vocab_size=4, horizon=3)))
    markov = make_rmsim_vec_env(sim.MARKOV_ENV_ID, n_envs=4, seed=0, vocab_size=50, horizon=4)
    assert markov.reset().shape == (4, 3) and markov.get_attr("obs_mode") == ["markov"] * 4
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=64, seed=0, device="cpu").learn(64)
    single = gym.make(sim.ENV_ID, vocab_size=4, horizon=3)
    assert sim.score(model, venv) == sim.score(model, single)  # the adapter is a scoring target like any rmsim env


# ------------------------------------------------------------- agent=sb3_ppo
@needs_sb3
def test_an_sb3_ppo_run_scored_by_sim_score_equals_the_command_line_metrics_of_its_table():
    """The issue's must-show: PPO on a misweighted proxy; sim.score of the model (on a gym env of the same config)
    equals, to 1e-9, the run path's metrics of the table of the model's action probabilities."""
    cfg = compose_config(["agent=sb3_ppo", "env=small", "corruption=misweighted", "agent.steps=2048", "seed=3"])
    result = run(cfg)
    assert isinstance(result.policy, ModelTable) and result.metrics["timesteps"] == 2048
    model = result.policy.model
    env = gym.make(sim.ENV_ID, config=cfg, world_seed=cfg.seed)
    world, setup = env.unwrapped.world, env.unwrapped.setup
    # the (S, A) table, read through SB3's own API
    dist = model.policy.get_distribution(model.policy.obs_to_tensor(np.arange(world.n_states))[0])
    table = dist.distribution.probs.detach().numpy().astype(np.float64)
    np.testing.assert_array_equal(table, result.policy.values)
    table_metrics = exact_metrics(world, Table(world, table), setup.oracle.reward, setup.channel.expected())
    scored = sim.score(model, env)
    for key in EXACT:
        assert abs(scored[key] - result.metrics[key]) <= 1e-9, key
        assert abs(scored[key] - table_metrics[key]) <= 1e-9, key
    curve = result.curve
    assert [row["step"] for row in curve] == sorted(row["step"] for row in curve) and curve[-1]["step"] == 2048
    assert curve[-1]["oracle_return"] == pytest.approx(result.metrics["oracle_return"], abs=1e-12)
    assert curve[-1]["proxy_return"] > curve[0]["proxy_return"]  # PPO optimised the proxy it was paid


@needs_sb3
def test_sb3_ppo_runs_on_a_compressed_world_and_is_scored_there_exactly():
    cfg = compose_config(["agent=sb3_ppo", "env=small", "env.compressed=true", "corruption=misweighted",
                          "agent.steps=512", "agent.checkpoints=3"])  # fmt: skip
    result = run(cfg)
    assert result.metrics["world"] == "markov" and len(result.curve) >= 2
    scored = sim.score(result.policy.model, gym.make(sim.ENV_ID, config=cfg, world_seed=cfg.seed))
    for key in EXACT:
        assert abs(scored[key] - result.metrics[key]) <= 1e-9, key


@needs_sb3
def test_sb3_ppo_is_deterministic_per_seed_and_leaves_torch_as_it_found_it():
    import torch

    cfg = compose_config(["env=tiny", "corruption=misweighted"])
    setup = build_setup(*_parts(cfg), 0)
    agent = AgentConfig(name="sb3_ppo", steps=512, batch=8, lr=3e-4, checkpoints=4)

    def train(seed):
        ctx = AgentContext(setup.world, setup.channel.expected(), setup.channel, setup.oracle,
                           np.random.default_rng(seed))  # fmt: skip
        return run_agent(ctx, agent)

    torch.set_num_threads(2)
    a, b, c = train(0), train(0), train(1)
    assert torch.get_num_threads() == 2
    np.testing.assert_array_equal(a.policy.values, b.policy.values)
    assert a.curve == b.curve and a.extra == b.extra
    assert not np.array_equal(a.policy.values, c.policy.values)


@needs_sb3
def test_the_example_trains_on_a_misweighted_proxy_and_prints_the_exact_gap(capsys):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import sb3_ppo as example
    finally:
        sys.path.pop(0)
    results = example.main(["--steps", "512", "--env", "tiny"])
    out = capsys.readouterr().out
    assert "misweighted" in results and results["misweighted"]["gap"] > 0
    assert set(results) == {"misweighted", "rlhf"} and "skipped" not in out  # trained on both proxies
    assert results["rlhf"]["proxy_return"] != results["misweighted"]["proxy_return"]


@needs_sb3
def test_sb3_ppo_learns_from_the_fitted_reward_model_in_the_rlhf_pipeline():
    cfg = compose_config(["agent=sb3_ppo", "pipeline=rlhf", "env=tiny", "agent.steps=256", "agent.checkpoints=2"])
    m = run(cfg).metrics
    assert m["pipeline"] == "rlhf" and m["agent"] == "sb3_ppo" and np.isfinite(m["oracle_return"])
