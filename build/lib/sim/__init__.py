"""rmsim: a reward misspecification simulator for RLHF research (import package ``sim``).

Importing ``sim`` registers the gymnasium ids ``rmsim/TextMDP-v0`` (an enumerated world, with a native vector entry
point) and ``rmsim/MarkovText-v0`` (a compressed world at language-model scale; vector only: ``make_vec``).
"""

from __future__ import annotations

ENV_ID = "rmsim/TextMDP-v0"
MARKOV_ENV_ID = "rmsim/MarkovText-v0"


def _register() -> None:
    import gymnasium

    if ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=ENV_ID,
            entry_point="sim.env:TextMDPEnv",
            vector_entry_point="sim.env:TextMDPVectorEnv",
        )
    if MARKOV_ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=MARKOV_ENV_ID,
            entry_point="sim.markov_env:single_env",
            vector_entry_point="sim.markov_env:MarkovVectorEnv",
        )


_register()
