"""Reference ("pretrained") policies pi_ref, on any world.

* ``uniform``: every token equally likely.
* ``softmax``: i.i.d. ``N(0, 1)`` logits per (state, token), divided by ``temperature`` (one draw per prefix:
  enumerated worlds only).
* ``eos_hazard``: EOS probability rising linearly with depth from ``hazard[0]`` at depth 0 to ``hazard[1]``
  at depth ``H-1``; the other tokens uniform. Needs an EOS token.
* ``bigram``: a Markov language model: logits ``W[y_t, a] / temperature``, ``W ~ N(0, 1)``, with
  ``y_t = BOS`` at depth 0.

Every policy has rows summing to 1 and full support (all entries > 0), so ``KL(pi || pi_ref)`` is finite. Each
is a function of a state's depth and last token (but ``softmax``), so the same draws give the same reference on an
enumerated and a Markov world.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax

from sim.errors import check
from sim.worlds.base import LevelPolicy, Table

REFERENCES = ("uniform", "softmax", "eos_hazard", "bigram")
#: A reference is stored as a full (S, A) table up to this many entries, else its rows are formed when asked.
TABLE_ENTRIES = 50_000_000


class Reference(LevelPolicy):
    """A reference policy whose rows (and log-rows) are functions of the states' depth and last token.

    Args:
        world: the world.
        rows, log_rows: ``(t, last) -> (n, A)``: the (log-)probabilities of states at depth ``t`` whose last tokens
            are ``last`` (``V`` for none).
    """

    def __init__(self, world, rows, log_rows):
        super().__init__(world, lambda t: rows(t, self._last(t)), lambda t, local: rows(t, self._last(t, local)))
        self._log = log_rows

    def _last(self, t: int, local: np.ndarray | None = None) -> np.ndarray:
        lo, hi = self.world.level(t)
        last = self.world.last_token[lo:hi] if local is None else self.world.last_token[lo + np.asarray(local)]
        return np.where(last < 0, self.world.vocab_size, last)

    def log_level(self, t: int) -> np.ndarray:
        return self._log(t, self._last(t))

    def log_rows_at(self, t: int, local: np.ndarray) -> np.ndarray:
        return self._log(t, self._last(t, local))


def make_reference(
    world,
    kind: str = "uniform",
    rng: np.random.Generator | None = None,
    temperature: float = 1.0,
    hazard: tuple[float, float] = (0.1, 0.6),
):
    """Build a reference policy.

    Args:
        world: the world.
        kind: one of ``uniform``, ``softmax``, ``eos_hazard``, ``bigram``.
        rng: randomness for ``softmax`` and ``bigram``.
        temperature: logit temperature (> 0) for ``softmax`` and ``bigram``.
        hazard: EOS probability at the first and the last depth for ``eos_hazard``, each in (0, 1).

    Returns:
        A policy (a :class:`Table` on small worlds).
    """
    check(kind in REFERENCES, "env.reference", kind, f"one of {list(REFERENCES)}")
    check(temperature > 0, "env.ref_temperature", temperature, "> 0")
    V, H = world.vocab_size, world.horizon
    rng = rng if rng is not None else np.random.default_rng(0)
    world.check_reference(kind)
    if kind == "softmax":
        return Table(world, softmax(rng.normal(size=(world.n_states, V)) / temperature, axis=1))
    if kind == "uniform":
        prob = lambda t, last: np.full((last.size, V), 1.0 / V)  # noqa: E731
        log = lambda t, last: np.full((last.size, V), -np.log(V))  # noqa: E731
    elif kind == "bigram":
        W = rng.normal(size=(V + 1, V)) / temperature
        table, log_table = softmax(W, axis=1), log_softmax(W, axis=1)
        prob = lambda t, last: table[last]  # noqa: E731
        log = lambda t, last: log_table[last]  # noqa: E731
    else:  # eos_hazard
        check(world.eos, "env.reference", kind, "eos_hazard only with env.eos = true")
        lo_h, hi_h = hazard
        check(0 < lo_h < 1 and 0 < hi_h < 1, "env.ref_hazard", list(hazard), "two probabilities in (0, 1)")
        frac = np.arange(H) / max(H - 1, 1)
        p_eos = lo_h + (hi_h - lo_h) * frac
        rows = np.empty((H, V))
        rows[:, 0] = p_eos
        rows[:, 1:] = ((1 - p_eos) / (V - 1))[:, None]
        prob = lambda t, last: np.broadcast_to(rows[t], (last.size, V)).copy()  # noqa: E731
        log = lambda t, last: np.log(prob(t, last))  # noqa: E731
    ref = Reference(world, prob, log)
    if world.n_states * V <= TABLE_ENTRIES:
        return Table(world, np.concatenate([ref.level(t) for t in range(H)]))
    return ref
