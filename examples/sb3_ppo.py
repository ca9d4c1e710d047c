"""Train stable-baselines3 PPO on an imperfect reward and print its exact oracle gap.

Two proxies of the same world (the command line's ``env=small`` by default): a misweighted one (the oracle's linear
weights rotated by 0.6 rad, ``corruption=misweighted``) and the reward model the rlhf pipeline fits to simulated
preferences (``pipeline=rlhf``: the env pays the model, ``info["oracle_reward"]`` keeps the oracle). PPO trains
through :class:`sim.integrations.sb3.RmsimVecEnv` (SB3's ``VecEnv`` over rmsim's batched env) and :func:`sim.score`
evaluates the trained model exactly against the oracle (no sampling).

Run (needs the sb3 extra: ``pip install -e '.[sb3]'``, or ``make test-sb3`` once)::

    .venv/bin/python examples/sb3_ppo.py                  # 20,000 steps per proxy on env=small (~1 min)
    .venv/bin/python examples/sb3_ppo.py --steps 4096 --env tiny
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch
from stable_baselines3 import PPO

import sim
from experiments.config import compose_config
from sim.integrations.sb3 import RmsimVecEnv

COLUMNS = ("oracle_return", "proxy_return", "reference_return", "optimal_return", "gap", "normalized_gap",
           "kl_to_reference")  # fmt: skip


def train(venv: RmsimVecEnv, steps: int, seed: int) -> PPO:
    """PPO on the env's reward, undiscounted (rmsim's objective is the episode's return), on the CPU."""
    model = PPO("MlpPolicy", venv, n_steps=max(2, 2048 // venv.num_envs), gamma=1.0, seed=seed, device="cpu")
    return model.learn(total_timesteps=steps)


def proxy_env(overrides: list[str], n_envs: int) -> RmsimVecEnv:
    """The batched env of the command line's config ``overrides`` (``world_seed`` = the config's ``seed``)."""
    cfg = compose_config(overrides)
    return RmsimVecEnv(gym.make_vec(sim.ENV_ID, num_envs=n_envs, config=cfg, world_seed=cfg.seed))


def main(argv: list[str] | None = None) -> dict[str, dict[str, float | None]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="PPO timesteps per proxy")
    parser.add_argument("--n-envs", type=int, default=16, help="episodes stepped together")
    parser.add_argument("--env", default="small", help="the command line's env preset (tiny, small, medium)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (as experiments.run seed=) and PPO's seed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small networks: one thread is fastest, and results do not depend on the machine

    base = [f"env={args.env}", f"seed={args.seed}"]
    proxies = {  # the rlhf env pays the reward model fitted as `experiments.run pipeline=rlhf seed=...` fits it
        "misweighted": proxy_env([*base, "corruption=misweighted"], args.n_envs),
        "rlhf": proxy_env([*base, "pipeline=rlhf"], args.n_envs),
    }
    results = {}
    print(f"{'proxy':<12}" + "".join(f"{c:>17}" for c in COLUMNS) + f"{'steps/s':>10}")
    for name, venv in proxies.items():
        t0 = time.perf_counter()
        model = train(venv, args.steps, args.seed)
        rate = model.num_timesteps / (time.perf_counter() - t0)
        results[name] = m = sim.score(model, venv)  # exact, against the oracle; proxy_return under the env's reward
        print(f"{name:<12}" + "".join(f"{m[c]:>17.4f}" for c in COLUMNS) + f"{rate:>10.0f}")
    print("gap = optimal_return - oracle_return: what optimising the proxy instead of the oracle left on the table")
    return results


if __name__ == "__main__":
    main()
