"""``sb3_ppo``: stable-baselines3's PPO as an rmsim agent (the ``sb3`` extra), so sweeps and named experiments can
use an off-the-shelf deep RL learner.

PPO (``MlpPolicy``: separate 64-64 tanh networks for the policy and the value, on the one-hot state index) trains
on the context's reward channel through :class:`sim.integrations.sb3.RmsimVecEnv`, the SB3 adapter over the batched
env (``agent.batch`` episodes stepped together). Undiscounted (``gamma = 1``: the return is rmsim's objective), no
KL penalty to pi_ref (PPO starts near the uniform policy, not at pi_ref); otherwise SB3's defaults (GAE lambda 0.95,
10 epochs, clip 0.2, no entropy bonus).

* ``agent.steps``: environment steps (transitions, over all envs), in ``round(steps / 2048)`` rollouts (at least one)
  of ``n_steps`` per env, rounded down so that a rollout is a whole number of minibatches of 64; the steps actually
  taken are the ``timesteps`` metric. ``agent.batch``: SB3's ``n_envs``. ``agent.lr``: Adam's learning rate.
* The learning curve has ``agent.checkpoints`` log-spaced points, each the exact evaluation of the model's action
  probabilities at that step (an SB3 callback); the last is the returned policy.
* The policy is the (S, A) table of the trained model's action probabilities (:func:`sim.scoring.as_policy`), a
  :class:`ModelTable` that keeps the model: ``sim.run.run(cfg).policy.model.save(path)``.
* Deterministic per seed: SB3 is seeded from the agent's generator, runs on the CPU, and torch on one thread while
  the agent trains and evaluates (the previous thread count is restored afterwards). SB3's seeding also seeds
  Python's, numpy's global and torch's generators, as it always does.

Works on both world kinds (a state is a prefix in the enumerated tree, a (prompt, position, last token) triple in a
compressed world); the one-hot input limits it to worlds of at most :data:`MAX_STATES` states.

Without the extra, ``agent=sb3_ppo`` is refused before any work (``ConfigError`` naming ``agent.name``). This module
imports neither stable-baselines3 nor torch until the agent runs.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

from sim.agents.base import AgentContext, AgentResult, Curve, register
from sim.agents.tabular import vector_env
from sim.errors import ConfigError, check
from sim.integrations import SB3_INSTALL
from sim.worlds import Table, n_states

#: The ``agent.*`` keys sb3_ppo reads.
SB3_PPO_KEYS = ("steps", "batch", "lr", "checkpoints")
#: Transitions per PPO rollout that the budget is split into (SB3's default: n_steps 2048 on one env).
ROLLOUT = 2048
#: SB3's default minibatch size.
MINIBATCH = 64
#: The one-hot state input of a larger world would not fit: (S x 64) weights in each of two networks, and
#: (n x S) floats per batch of n observations.
MAX_STATES = 1_000_000


@dataclass(eq=False)
class ModelTable(Table):
    """A policy table (S, A) that keeps the SB3 model it was read from.

    Attributes:
        model: the trained stable-baselines3 model.
    """

    model: object = None


#: The modules the agent imports when it runs.
SB3_MODULES = ("stable_baselines3", "torch")


def sb3_installed() -> bool:
    """Whether stable-baselines3 and torch can be imported (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in SB3_MODULES)


def _require(name: str) -> None:
    if not sb3_installed():
        raise ConfigError("agent.name", name, f"an agent whose extra is installed ({name} needs {SB3_INSTALL})")


def _check_sb3_ppo(config) -> None:
    _require(config.agent.name)
    S = n_states(config.env)
    check(
        S <= MAX_STATES,
        "agent.name",
        config.agent.name,
        f"an agent for this world: sb3_ppo reads one-hot states, at most {MAX_STATES:,} (env has {S:,.0f})",
    )


def ppo_sizes(steps: int, batch: int) -> tuple[int, int, int]:
    """PPO's rollout and minibatch sizes for a budget of ``steps`` transitions on ``batch`` envs.

    Args:
        steps: the budget (``agent.steps``).
        batch: the number of envs (``agent.batch``).

    Returns:
        ``(n_steps, minibatch, total)``: steps per env in a rollout, the minibatch size (it divides the rollout
        ``n_steps * batch``) and the transitions actually taken (whole rollouts; at most ``steps`` unless the budget
        is below one rollout of 2 steps per env).

    Example:
        >>> ppo_sizes(20_000, 16), ppo_sizes(300, 64), ppo_sizes(10, 16), ppo_sizes(20_000, 63)
        ((124, 64, 19840), (4, 64, 256), (2, 32, 32), (31, 63, 19530))
    """
    unit = MINIBATCH // math.gcd(batch, MINIBATCH)  # n_steps a multiple of unit: a rollout is whole minibatches
    rollouts = max(1, round(steps / ROLLOUT))
    n_steps = steps // (rollouts * batch) // unit * unit
    if n_steps >= max(unit, 2):
        return n_steps, MINIBATCH, rollouts * n_steps * batch
    n_steps = max(2, steps // (rollouts * batch))  # too few steps per env for whole minibatches of 64
    rollout = n_steps * batch
    minibatch = max(d for d in range(2, min(MINIBATCH, rollout) + 1) if rollout % d == 0)  # n_steps < 64 has one
    return n_steps, minibatch, rollouts * rollout


@register("sb3_ppo", learns_from="samples", keys=SB3_PPO_KEYS, check=_check_sb3_ppo, requires=SB3_MODULES)
def sb3_ppo(ctx: AgentContext, cfg) -> AgentResult:
    """stable-baselines3 PPO on the reward channel, through the SB3 adapter over the batched env."""
    _require(cfg.name)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(ctx, cfg)
    finally:
        torch.set_num_threads(threads)


def _train(ctx: AgentContext, cfg) -> AgentResult:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from sim.integrations.sb3 import RmsimVecEnv, action_probs
    from sim.scoring import as_policy

    world = ctx.world
    n_steps, minibatch, total = ppo_sizes(cfg.steps, cfg.batch)
    seed = int(ctx.rng.integers(2**31 - 1))
    venv = RmsimVecEnv(vector_env(ctx, cfg.batch))
    model = PPO(
        "MlpPolicy",
        venv,
        learning_rate=cfg.lr,
        n_steps=n_steps,
        batch_size=minibatch,
        gamma=1.0,
        seed=seed,
        device="cpu",
        verbose=0,
    )

    def policy_now():
        return as_policy(lambda obs: action_probs(model, obs), world, "state")

    curve = Curve(ctx, total, cfg.checkpoints)

    class Checkpoints(BaseCallback):
        """Exact evaluations of the model at the curve's log-spaced steps (the last one after training)."""

        def _on_step(self) -> bool:
            step = self.num_timesteps
            if curve.due(step) and step < total:
                curve.record(step, policy_now())
            return True

    model.learn(total_timesteps=total, callback=Checkpoints())
    policy = ModelTable(world, world.table(policy_now()), model)
    curve.due(model.num_timesteps)
    curve.record(model.num_timesteps, policy)
    venv.close()
    return AgentResult(policy, curve.rows, {"timesteps": float(model.num_timesteps)})
