"""The agent interface and registry.

An agent is a function ``(mdp, proxy_reward, ref_policy, params, rng) -> AgentResult``. Planners read the
expected proxy reward table; learning agents (later) also return a learning curve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sim.agents.planners import exact_planner, soft_planner
from sim.errors import check
from sim.mdp import TextMDP


@dataclass
class AgentResult:
    """What an agent returns.

    Attributes:
        policy: float array (S, A), rows sum to 1.
        curve: learning-curve rows (``step``, ``oracle_return``, ``proxy_return``, ``kl_to_reference``);
            empty for planners.
    """

    policy: np.ndarray
    curve: list[dict[str, float]] = field(default_factory=list)


AgentFn = Callable[..., np.ndarray]
AGENTS: dict[str, AgentFn] = {"exact_planner": exact_planner, "soft_planner": soft_planner}


def run_agent(
    name: str,
    mdp: TextMDP,
    proxy_reward: np.ndarray,
    ref_policy: np.ndarray,
    rng: np.random.Generator,
    beta: float = 0.1,
    **params: object,
) -> AgentResult:
    """Run agent ``name`` on the proxy reward and return its policy."""
    check(name in AGENTS, "agent.name", name, f"one of {list(AGENTS)}")
    policy = AGENTS[name](mdp, proxy_reward, ref_policy, rng=rng, beta=beta, **params)
    return AgentResult(policy=policy)
