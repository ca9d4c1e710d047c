"""``q_learning``: Q-learning updates/s of our batched agent vs a plain per-step Python loop over gymnasium.make."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

import sim
from benchmarks.common import record
from sim.agents import AgentContext, run_agent
from sim.build import build_setup
from sim.config import AgentConfig, EnvConfig, OracleConfig


def plain_q_learning(setup, steps: int, rng: np.random.Generator, alpha: float = 0.5, eps: float = 0.1) -> int:
    """The textbook loop: one ``env.step`` and one Q update per transition."""
    env = gym.make(sim.ENV_ID, setup=setup)
    Q = np.zeros((setup.world.n_states, setup.world.n_actions))
    A = setup.world.n_actions
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        a = int(rng.integers(A)) if rng.random() < eps else int(Q[obs].argmax())
        nxt, r, terminated, truncated, _ = env.step(a)
        target = r if terminated else r + Q[nxt].max()
        Q[obs, a] += alpha * (target - Q[obs, a])
        obs = env.reset()[0] if terminated or truncated else nxt
    return steps


def bench_q_learning(episodes: int = 100_000, plain_steps: int = 30_000) -> dict:
    setup = build_setup(EnvConfig(), OracleConfig(), None, 0)  # the `small` world
    cfg = AgentConfig(name="q_learning", steps=episodes, batch=1024, checkpoints=2)
    channel = setup.channel
    ctx = AgentContext(setup.world, channel.expected(), channel, setup.oracle, np.random.default_rng(0))
    run_agent(ctx, AgentConfig(name="q_learning", steps=2000, batch=1024, checkpoints=2))  # warm-up
    t0 = time.perf_counter()
    result = run_agent(ctx, cfg)
    batched = result.extra["updates"] / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    n = plain_q_learning(setup, plain_steps, np.random.default_rng(0))
    plain = n / (time.perf_counter() - t0)
    return record(
        "q_learning", batched / plain, 30.0, ">=", batched_updates_per_s=batched, plain_updates_per_s=plain, batch=1024
    )


BENCHMARKS = {"q_learning": bench_q_learning}
