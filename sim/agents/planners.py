"""Exact planners: they see the whole expected proxy reward and solve it exactly, on any world."""

from __future__ import annotations

import numpy as np

from sim import goodhart
from sim.agents.base import AgentContext, AgentResult, beta_path, pressure_path, register
from sim.errors import check


@register("exact_planner")
def exact_planner(ctx: AgentContext, cfg) -> AgentResult:
    """The deterministic optimal policy of the proxy reward (ties to the lowest token)."""
    return AgentResult(ctx.world.greedy_policy(ctx.proxy))


#: Karwowski et al.'s measures on a soft planner's path cost a few conjugate-gradient solves over the S * A entries on
#: a compressed world (about 0.1 s at V = 200, H = 16; 6 s at V = 1000, H = 32, where a path takes 10-20 s): up to this
#: many entries they are reported by default.
MEASURE_ENTRIES = 5_000_000


def _check_soft_planner(config) -> None:
    a = config.agent
    if a.early_stop_angle is None:
        return
    check(a.path, "agent.early_stop_angle", a.early_stop_angle, "null unless agent.path=true (the rule walks the path)")


@register(
    "soft_planner",
    kl=True,
    keys=("beta", "path", "path_max_beta", "checkpoints", "early_stop_angle"),
    check=_check_soft_planner,
)
def soft_planner(ctx: AgentContext, cfg) -> AgentResult:
    """The KL-regularised optimum ``pi ∝ pi_ref exp(R_proxy / beta)`` (:meth:`sim.worlds.World.soft_policy`).

    With ``agent.path`` the curve traces the optimum along the beta path (``sim.agents.base.beta_path``). On a world of
    at most :data:`MEASURE_ENTRIES` state-action entries (or with ``early_stop_angle``) the path also reports
    Karwowski et al.'s measures (``sim.goodhart``, in the world's own occupancy space): ``reward_angle`` (the
    projected angle between oracle and proxy, measured, never used by the agent), ``path_ndh`` (the normalised drop
    height of the whole path), ``path_best_oracle_return`` and ``oracle_worst_return`` (the worst policy's, NDH's
    normaliser with the optimal return). With ``agent.early_stop_angle`` = theta the policy
    is the path's point where the early-stopping rule stops (``early_stop_step``, 1-based, and ``early_stop_beta``);
    the curve still holds the whole path, with ``step_angle``: the angle between the projected proxy and the step
    to the next point (NaN at the last point).
    """
    # the policy (each point of a path) is evaluated in the pass that solves it: its rows are formed once
    solve = lambda beta: ctx.world.soft_policy(ctx.proxy, beta, evaluate=ctx.rewards)  # noqa: E731
    if not cfg.path:
        return AgentResult(solve(cfg.beta))
    measured = ctx.world.n_states * ctx.world.n_actions <= MEASURE_ENTRIES or cfg.early_stop_angle is not None
    if not measured:  # the measures would cost more than the path itself: left out
        return pressure_path(ctx, cfg, solve)

    betas = beta_path(cfg)
    policies = [solve(float(b)) for b in betas]
    walk = iter(policies)  # pressure_path asks for them in the same order
    result = pressure_path(ctx, cfg, lambda beta: next(walk))
    oracle = ctx.oracle.reward
    j0 = np.array([row["oracle_return"] for row in result.curve])
    best, worst = ctx.world.optimal_return(oracle), goodhart.worst_return(ctx.world, oracle)
    angle = goodhart.reward_angle(ctx.world, oracle, ctx.proxy)
    extra = {
        "reward_angle": angle,  # None when the oracle or the proxy has no direction (the same return everywhere)
        "path_ndh": goodhart.normalized_drop_height(j0, best, worst),
        "path_best_oracle_return": float(j0.max()),
        "oracle_worst_return": worst,
    }
    if cfg.early_stop_angle is not None:
        angles = goodhart.path_step_angles(ctx.world, ctx.proxy, policies)
        k = goodhart.stop_index(angles, cfg.early_stop_angle)
        for row, a in zip(result.curve, [*angles, float("nan")], strict=True):
            row["step_angle"] = a
        extra.update(early_stop_step=float(k + 1), early_stop_beta=float(betas[k]))
        return AgentResult(policies[k], result.curve, extra)
    return AgentResult(result.policy, result.curve, extra)
