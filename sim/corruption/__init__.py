"""Corruption between the oracle and the learner: misspecification (:mod:`.misspec`), then the reward channel's
sparsity, noise and budget (:mod:`.channel`)."""

from __future__ import annotations

from sim.corruption.channel import Channel, build_channel, identity_channel

__all__ = ["Channel", "build_channel", "identity_channel"]
