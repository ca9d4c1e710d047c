"""rmsim: a reward misspecification simulator for RLHF research (import package ``sim``).

Importing ``sim`` registers the gymnasium id ``rmsim/TextMDP-v0`` (with a native vector entry point).
"""

from __future__ import annotations

ENV_ID = "rmsim/TextMDP-v0"


def _register() -> None:
    import gymnasium

    if ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=ENV_ID,
            entry_point="sim.env:TextMDPEnv",
            vector_entry_point="sim.env:TextMDPVectorEnv",
        )


_register()
