"""``batched_rollout``: transitions/s of the native vector env (B = 1024) vs a plain gymnasium loop."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

import sim
from benchmarks.common import record
from sim.build import build_setup
from sim.config import CorruptionConfig, EnvConfig, NoiseConfig, OracleConfig


def bench_batched_rollout(batch: int = 1024, batched_steps: int = 400, plain_steps: int = 40_000) -> dict:
    env_cfg = EnvConfig(n_prompts=8, vocab_size=8, horizon=6, reference="bigram")  # the `medium` preset
    setup = build_setup(env_cfg, OracleConfig(), CorruptionConfig(noise=NoiseConfig(sigma=0.5)), seed=0)
    rng = np.random.default_rng(0)
    V = setup.world.vocab_size

    envs = gym.make_vec(sim.ENV_ID, num_envs=batch, setup=setup)
    envs.reset(seed=0)
    actions = rng.integers(0, V, size=(batched_steps, batch))
    t0 = time.perf_counter()
    for a in actions:
        envs.step(a)
    batched = batched_steps * batch / (time.perf_counter() - t0)

    env = gym.make(sim.ENV_ID, setup=setup)
    env.reset(seed=0)
    plain_actions = rng.integers(0, V, size=plain_steps).tolist()
    t0 = time.perf_counter()
    for a in plain_actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    plain = plain_steps / (time.perf_counter() - t0)
    return record(
        "batched_rollout",
        batched / plain,
        40.0,
        ">=",
        batched_transitions_per_s=batched,
        plain_transitions_per_s=plain,
        batch=batch,
    )


BENCHMARKS = {"batched_rollout": bench_batched_rollout}
