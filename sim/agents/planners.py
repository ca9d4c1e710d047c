"""Exact planners: they see the whole expected proxy reward and solve it exactly, on any world."""

from __future__ import annotations

from sim.agents.base import AgentContext, AgentResult, pressure_path, register


@register("exact_planner")
def exact_planner(ctx: AgentContext, cfg) -> AgentResult:
    """The deterministic optimal policy of the proxy reward (ties to the lowest token)."""
    return AgentResult(ctx.world.greedy_policy(ctx.proxy))


@register("soft_planner", kl=True, keys=("beta", "path", "path_max_beta", "checkpoints"))
def soft_planner(ctx: AgentContext, cfg) -> AgentResult:
    """The KL-regularised optimum ``pi ∝ pi_ref exp(R_proxy / beta)`` (:meth:`sim.worlds.World.soft_policy`).

    With ``agent.path`` the curve traces the optimum along the beta path (``sim.agents.base.beta_path``).
    """
    if cfg.path:
        return pressure_path(ctx, cfg, lambda beta: ctx.world.soft_policy(ctx.proxy, beta))
    return AgentResult(ctx.world.soft_policy(ctx.proxy, cfg.beta))
