"""rmsim: a reward misspecification simulator for RLHF research (import package ``sim``).

Importing ``sim`` registers the gymnasium ids ``rmsim/TextMDP-v0`` (an enumerated world) and ``rmsim/MarkovText-v0``
(a compressed world at language-model scale), each with a natively batched vector entry point (``make_vec``), and
gives :func:`sim.score`: the exact metrics of any policy, however it was trained (:mod:`sim.scoring`).
"""

from __future__ import annotations

ENV_ID = "rmsim/TextMDP-v0"
MARKOV_ENV_ID = "rmsim/MarkovText-v0"


def _register() -> None:
    import gymnasium

    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="sim.env:TextEnv", vector_entry_point="sim.env:TextVectorEnv")
    if MARKOV_ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=MARKOV_ENV_ID, entry_point="sim.env:markov_env", vector_entry_point="sim.env:markov_vector_env"
        )


_register()

from sim.scoring import score  # noqa: E402

__all__ = ["ENV_ID", "MARKOV_ENV_ID", "score"]
