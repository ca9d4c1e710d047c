"""Agents: optimisers of the proxy reward. Each returns a policy table pi[S, A] and a learning curve.

| name | class | learns from |
|---|---|---|
| exact_planner, soft_planner | exact planning | the expected proxy table |
| q_learning, policy_gradient | tabular | sampled rewards (policy_gradient also has an exact-gradient mode) |
| linear_q, lspi, loglinear_pg | linear in feature templates | sampled rewards (loglinear_pg: exact or sampled) |
| best_of_n | RL-free | the proxy table (the exact best-of-n distribution) |
| dpo | RL-free | the preference data |
"""

from __future__ import annotations

from sim.agents.base import AgentContext, AgentResult, run_agent

__all__ = ["AgentContext", "AgentResult", "run_agent"]
