"""Reference ("pretrained") policies pi_ref[S, A].

* ``uniform``: every token equally likely.
* ``softmax``: i.i.d. ``N(0, 1)`` logits per (state, token), divided by ``temperature``.
* ``eos_hazard``: EOS probability rising linearly with depth from ``hazard[0]`` at depth 0 to ``hazard[1]``
  at depth ``H-1``; the other tokens uniform. Needs an EOS token.
* ``bigram``: a Markov language model: logits ``W[y_t, a] / temperature``, ``W ~ N(0, 1)``, with
  ``y_t = BOS`` at depth 0.

Every table has rows summing to 1 and full support (all entries > 0), so ``KL(pi || pi_ref)`` is finite.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from sim.errors import check
from sim.mdp import TextMDP

REFERENCES = ("uniform", "softmax", "eos_hazard", "bigram")


def make_reference(
    mdp: TextMDP,
    kind: str = "uniform",
    rng: np.random.Generator | None = None,
    temperature: float = 1.0,
    hazard: tuple[float, float] = (0.1, 0.6),
) -> np.ndarray:
    """Build a reference policy.

    Args:
        mdp: the world.
        kind: one of ``uniform``, ``softmax``, ``eos_hazard``, ``bigram``.
        rng: randomness for ``softmax`` and ``bigram``.
        temperature: logit temperature (> 0) for ``softmax`` and ``bigram``.
        hazard: EOS probability at the first and the last depth for ``eos_hazard``, each in (0, 1).

    Returns:
        float array (S, A), rows sum to 1.
    """
    check(kind in REFERENCES, "env.reference", kind, f"one of {list(REFERENCES)}")
    check(temperature > 0, "env.ref_temperature", temperature, "> 0")
    S, V = mdp.n_states, mdp.vocab_size
    rng = rng if rng is not None else np.random.default_rng(0)
    if kind == "uniform":
        return np.full((S, V), 1.0 / V)
    if kind == "softmax":
        return softmax(rng.normal(size=(S, V)) / temperature, axis=1)
    if kind == "bigram":
        W = rng.normal(size=(V + 1, V)) / temperature
        prev = np.where(mdp.last_token < 0, V, mdp.last_token)
        return softmax(W, axis=1)[prev]
    # eos_hazard
    check(mdp.eos, "env.reference", kind, "eos_hazard only with env.eos = true")
    lo, hi = hazard
    check(0 < lo < 1 and 0 < hi < 1, "env.ref_hazard", list(hazard), "two probabilities in (0, 1)")
    frac = mdp.depth / max(mdp.horizon - 1, 1)
    p_eos = lo + (hi - lo) * frac
    pi = np.empty((S, V))
    pi[:, 0] = p_eos
    pi[:, 1:] = ((1 - p_eos) / (V - 1))[:, None]
    return pi
