"""Exact planners: they see the whole expected proxy table and solve it exactly."""

from __future__ import annotations

import numpy as np

from sim.mdp import TextMDP
from sim.solvers import optimal_policy, soft_optimal


def exact_planner(mdp: TextMDP, proxy_reward: np.ndarray, ref_policy: np.ndarray, **_: object) -> np.ndarray:
    """The deterministic optimal policy of the proxy reward (ties to the lowest token)."""
    return optimal_policy(mdp, proxy_reward)


def soft_planner(
    mdp: TextMDP, proxy_reward: np.ndarray, ref_policy: np.ndarray, beta: float = 0.1, **_: object
) -> np.ndarray:
    """The KL-regularised optimum ``pi ∝ pi_ref exp(R_proxy / beta)`` (``sim.solvers.soft_optimal``)."""
    return soft_optimal(mdp, proxy_reward, ref_policy, beta)[2]
