"""Sparsity: when the learner receives the reward.

* ``terminal``: the whole return on the episode-ending transition (same return, harder credit assignment).
* ``chunk``: the reward accumulated over each block of ``k`` tokens, paid on the ``k``-th token of the block
  (and the rest at the episode end). ``k = 1`` is the dense reward; ``k >= H`` is ``terminal``.
* ``budget`` (episode level, in the channel): only a fraction ``p`` of episodes carry any reward.

In a tree the path to ``(s, a)`` is fixed, so ``terminal`` and ``chunk`` are exact table transforms.
"""

from __future__ import annotations

import numpy as np

from sim.mdp import TextMDP


def delivery_mask(mdp: TextMDP, k: int) -> np.ndarray:
    """Bool (S, A): transitions that deliver reward when it is paid every ``k`` tokens.

    A transition from depth ``t`` delivers if it ends the episode or if ``(t + 1) % k == 0``.
    """
    return mdp.terminal_mask() | ((mdp.depth[:, None] + 1) % k == 0)


def chunked(mdp: TextMDP, r: np.ndarray, k: int) -> np.ndarray:
    """The reward paid in chunks of ``k`` tokens: every path keeps its return.

    Args:
        mdp: the world.
        r: reward (S, A).
        k: chunk length >= 1.

    Returns:
        float (S, A): on a delivering transition, the reward accumulated since the last delivery plus
        ``r(s, a)``; 0 elsewhere.
    """
    f = mdp.first_token
    deliver = delivery_mask(mdp, k)
    pending = np.zeros(mdp.n_states)  # reward earned but not yet paid when reaching each state
    for t in range(mdp.horizon - 1):
        lo, hi = mdp.level(t)
        clo, chi = mdp.level(t + 1)
        carried = pending[lo:hi, None] + r[lo:hi, f:]
        pending[clo:chi] = np.where(deliver[lo:hi, f:], 0.0, carried).reshape(-1)
    return np.where(deliver, pending[:, None] + r, 0.0)


def terminal(mdp: TextMDP, r: np.ndarray) -> np.ndarray:
    """The whole return on the episode-ending transition (``chunked`` with ``k = H``)."""
    return chunked(mdp, r, mdp.horizon)
