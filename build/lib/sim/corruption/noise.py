"""Noise: Gaussian sigma, Likert quantisation to K levels, Bernoulli drop.

Applied, in that order, to each *delivered* reward (the transitions that pay reward after sparsity).

Modes:

* ``delivery``: fresh noise on each delivery. The learner sees a noisy signal; ``expected()`` is the exact
  expectation ``E[drop . Q(r + eps)]``, equal to ``r`` without quantisation and drop.
* ``fixed``: one draw kept for the whole run: a Gaussian error per complete sequence (on its last
  transition), quantisation, and a drop mask per delivering transition. A persistent proxy error like a
  reward model's; it is part of ``expected()``. This is the regressional-Goodhart setting (Gao et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr


@dataclass(frozen=True)
class Quantizer:
    """Rounding to ``levels`` evenly spaced values on ``[lo, hi]`` (values outside are clipped)."""

    lo: float
    hi: float
    levels: int

    @property
    def step(self) -> float:
        return (self.hi - self.lo) / (self.levels - 1)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        if self.hi <= self.lo:
            return np.full_like(v, self.lo, dtype=np.float64)
        k = np.rint((np.clip(v, self.lo, self.hi) - self.lo) / self.step)
        return self.lo + k * self.step

    def expected(self, mean: np.ndarray, sigma: float) -> np.ndarray:
        """``E[Q(mean + eps)]`` for ``eps ~ N(0, sigma^2)``, exactly (a sum of normal CDFs over the edges)."""
        if sigma == 0 or self.hi <= self.lo:
            return self(mean)
        out = np.full_like(mean, self.lo, dtype=np.float64)
        for j in range(1, self.levels):
            edge = self.lo + (j - 0.5) * self.step
            out += self.step * ndtr((mean - edge) / sigma)
        return out


def quantizer_for(values: np.ndarray, levels: int) -> Quantizer | None:
    """The quantiser spanning ``values`` (the clean delivered rewards), or ``None`` when ``levels == 0``."""
    if levels == 0 or values.size == 0:
        return None
    return Quantizer(float(values.min()), float(values.max()), int(levels))
