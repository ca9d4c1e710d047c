"""Agents: optimisers of the proxy reward. Each returns a policy table pi[S, A] and a learning curve."""

from __future__ import annotations

from sim.agents.base import AgentResult, run_agent

__all__ = ["AgentResult", "run_agent"]
