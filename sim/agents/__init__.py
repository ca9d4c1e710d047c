"""Agents: optimisers of the proxy reward, each written once for every world kind and registered with what it can do.

| name | class | learns from |
|---|---|---|
| exact_planner, soft_planner | exact planning | the expected proxy |
| q_learning, policy_gradient | tabular over the world's states | sampled rewards (policy_gradient: or exact) |
| linear_q, lspi, loglinear_pg | linear in feature templates | sampled rewards (loglinear_pg: exact or sampled) |
| ppo | log-linear or tabular policy, linear critic | sampled rewards (PPO with a per-token KL penalty) |
| sb3_ppo | stable-baselines3's PPO (the ``sb3`` extra) | sampled rewards |
| best_of_n | RL-free | the expected proxy (the best-of-n distribution) |
| dpo, ipo | RL-free | the preference data |

A new agent is one module in this package whose function is decorated with :func:`register` (every module here is
imported, so it registers itself), plus a YAML in ``configs/agent/``.
"""

from __future__ import annotations

import importlib
import pkgutil

from sim.agents.base import AGENTS, AgentContext, AgentResult, AgentSpec, agent_spec, register, run_agent

for _module in pkgutil.iter_modules(__path__):  # registration: every agent module registers its agents on import
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["AGENTS", "AgentContext", "AgentResult", "AgentSpec", "agent_spec", "register", "run_agent"]
