"""Reward models fitted to simulated human feedback by MAP."""

from __future__ import annotations

from sim.reward_models.model import RewardModel, fit_reward_model

__all__ = ["RewardModel", "fit_reward_model"]
