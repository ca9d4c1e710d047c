"""Noise: Gaussian sigma, Likert quantisation to K levels, Bernoulli drop.

Applied, in that order, to each *delivered* reward (the transitions that pay reward after sparsity).

Modes:

* ``delivery``: fresh noise on each delivery. The learner sees a noisy signal; ``expected()`` is the exact
  expectation ``E[drop . Q(r + eps)]``, equal to ``r`` without quantisation and drop.
* ``fixed``: one draw kept for the whole run: an error per complete sequence (on its last transition),
  quantisation, and a drop mask per delivering transition. A persistent proxy error like a reward model's; it is
  part of ``expected()``. This is the regressional-Goodhart setting (Gao et al. 2022). The error is Gaussian, or
  heavy-tailed (``dist`` = ``student_t`` or ``pareto``: :func:`fixed_errors`), the setting of catastrophic Goodhart
  (Kwa et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri, stdtrit  # not scipy.stats: importing it costs ~0.7 s per process

#: Error distributions of fixed-mode noise; only ``gaussian`` is light-tailed.
DISTS = ("gaussian", "student_t", "pareto")
#: The interquartile range of N(0, 1): 2 * Phi^-1(3/4).
GAUSSIAN_IQR = float(2 * ndtri(0.75))  # = 2 stats.norm.ppf(0.75), bit for bit


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


def error_law(dist: str, sigma: float, df: float = 3.0, alpha: float = 3.0) -> tuple[float, float]:
    """The affine map ``error = scale * (z - centre)`` from the standard draw ``z`` of ``dist`` to the error.

    ``z`` is ``N(0, 1)`` (``gaussian``), Student's t with ``df`` degrees of freedom (``student_t``), or Lomax
    (Pareto II) with tail index ``alpha``, ``P(z > x) = (1 + x)^-alpha`` (``pareto``: numpy's ``pareto``).

    * Centre: the mean where it exists (``df > 1``, ``alpha > 1``), else the median; t and N are centred at 0.
    * Scale: ``sigma`` is the error's standard deviation where a variance exists (``df > 2``, ``alpha > 2``:
      ``sqrt(df / (df - 2))`` for t, ``sqrt(alpha / ((alpha - 1)^2 (alpha - 2)))`` for Lomax). Where it does
      not, ``sigma`` means the spread of the bulk: the error's interquartile range equals N(0, sigma^2)'s
      (1.349 sigma). A heavy tail at the same sigma therefore has the same variance as a Gaussian error, or the
      same bulk, and puts more of its spread into rare large errors.

    Returns:
        ``(centre, scale)``.
    """
    if dist == "gaussian":
        return 0.0, float(sigma)
    if dist == "student_t":
        if df > 2:
            return 0.0, float(sigma / np.sqrt(df / (df - 2)))
        return 0.0, float(sigma * GAUSSIAN_IQR / (2 * stdtrit(df, 0.75)))  # = stats.t.ppf(0.75, df), bit for bit
    if dist == "pareto":
        centre = 1 / (alpha - 1) if alpha > 1 else 2 ** (1 / alpha) - 1
        if alpha > 2:
            return float(centre), float(sigma / np.sqrt(alpha / ((alpha - 1) ** 2 * (alpha - 2))))
        iqr = 4 ** (1 / alpha) - (4 / 3) ** (1 / alpha)
        return float(centre), float(sigma * GAUSSIAN_IQR / iqr)
    raise ValueError(f"unknown noise distribution {dist!r}; choose from {list(DISTS)}")


def fixed_errors(rng: np.random.Generator, n: int, sigma: float, dist: str = "gaussian", df: float = 3.0,
                 alpha: float = 3.0) -> np.ndarray:  # fmt: skip
    """``n`` independent persistent errors (one per complete sequence) of spread ``sigma`` (:func:`error_law`).

    ``gaussian`` is ``rng.normal(0, sigma, n)`` itself, draw for draw; the heavy tails draw ``rng.standard_t`` or
    ``rng.pareto`` once each.

    Returns:
        float (n,).
    """
    if dist == "gaussian":
        return rng.normal(0.0, sigma, size=n)
    centre, scale = error_law(dist, sigma, df, alpha)
    z = rng.standard_t(df, size=n) if dist == "student_t" else rng.pareto(alpha, size=n)
    return scale * (z - centre)
