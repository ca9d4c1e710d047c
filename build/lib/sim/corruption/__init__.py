"""Corruption modules between the oracle and the learner (see ``pipeline`` for the order)."""

from __future__ import annotations

from sim.corruption.pipeline import (
    CorruptionConfig,
    MisspecConfig,
    NoiseConfig,
    RewardChannel,
    SparsityConfig,
    build_channel,
    identity_channel,
)

__all__ = [
    "CorruptionConfig",
    "MisspecConfig",
    "NoiseConfig",
    "RewardChannel",
    "SparsityConfig",
    "build_channel",
    "identity_channel",
]
