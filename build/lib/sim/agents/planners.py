"""Exact planners: they see the whole expected proxy table and solve it exactly."""

from __future__ import annotations

from sim.agents.base import AgentContext, AgentResult, pressure_path, register
from sim.solvers import optimal_policy, soft_optimal


@register("exact_planner")
def exact_planner(ctx: AgentContext, cfg) -> AgentResult:
    """The deterministic optimal policy of the proxy reward (ties to the lowest token)."""
    return AgentResult(optimal_policy(ctx.mdp, ctx.proxy))


@register("soft_planner")
def soft_planner(ctx: AgentContext, cfg) -> AgentResult:
    """The KL-regularised optimum ``pi ∝ pi_ref exp(R_proxy / beta)`` (``sim.solvers.soft_optimal``).

    With ``agent.path`` the curve traces the optimum along the beta path (``sim.agents.base.beta_path``).
    """
    if cfg.path:
        return pressure_path(ctx, cfg, lambda beta: soft_optimal(ctx.mdp, ctx.proxy, ctx.ref_policy, beta)[2])
    return AgentResult(soft_optimal(ctx.mdp, ctx.proxy, ctx.ref_policy, cfg.beta)[2])
