"""``q_learning``: Q-learning updates/s of our batched agent vs a plain per-step Python loop over gymnasium.make.

Both are timed in turn, best of :data:`benchmarks.common.REPEATS` (see :mod:`benchmarks.common`).
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

import sim
from benchmarks.common import REPEATS, record
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


def bench_q_learning(episodes: int = 100_000, plain_steps: int = 8_000, repeats: int = REPEATS) -> dict:
    setup = build_setup(EnvConfig(), OracleConfig(), None, 0)  # the `small` world
    cfg = AgentConfig(name="q_learning", steps=episodes, batch=1024, checkpoints=2)
    channel = setup.channel

    def batched() -> float:
        ctx = AgentContext(setup.world, channel.expected(), channel, setup.oracle, np.random.default_rng(0))
        t0 = time.perf_counter()
        result = run_agent(ctx, cfg)
        return result.extra["updates"] / (time.perf_counter() - t0)

    def plain() -> float:
        t0 = time.perf_counter()
        n = plain_q_learning(setup, plain_steps, np.random.default_rng(0))
        return n / (time.perf_counter() - t0)

    ctx = AgentContext(setup.world, channel.expected(), channel, setup.oracle, np.random.default_rng(0))
    run_agent(ctx, AgentConfig(name="q_learning", steps=2000, batch=1024, checkpoints=2))  # warm-up
    plain_q_learning(setup, 1000, np.random.default_rng(0))
    rates: dict[str, list[float]] = {"batched": [], "plain": []}
    for _ in range(repeats):  # in turn, so that a burst of load hits both
        rates["batched"].append(batched())
        rates["plain"].append(plain())
    best_batched, best_plain = max(rates["batched"]), max(rates["plain"])
    return record(
        "q_learning",
        best_batched / best_plain,
        35.0,
        ">=",
        batched_updates_per_s=best_batched,
        plain_updates_per_s=best_plain,
        repeats=repeats,
        repeat_ratios=[round(b / p, 4) for b, p in zip(rates["batched"], rates["plain"], strict=True)],
        batch=1024,
    )


BENCHMARKS = {"q_learning": bench_q_learning}
