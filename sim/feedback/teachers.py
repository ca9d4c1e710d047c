"""Simulated annotators (B-Pref style, Lee et al. 2021), on standardised returns.

Every threshold and noise level is in units of ``scale``, the standard deviation of the oracle's returns under
the sampling distribution, so ``rationality = 1`` means the same on every world. (Bradley-Terry on raw
returns makes a teacher nearly deterministic whenever returns are large, a known complaint about
popular synthetic teachers.)

Preferences, in B-Pref's order, for a pair with returns ``R1, R2`` (myopic returns ``G1, G2``):

1. skip the pair if ``max(z1, z2) < skip`` with ``z = (R - center) / scale``;
2. label 1/2 if ``|R1 - R2| / scale < equal``;
3. otherwise label 1 with ``P = sigmoid(rationality * (G1 - G2) / scale)`` (a step at ``rationality = inf``);
4. flip the label with probability ``flip``.

Ratings: ``(G - center) / scale + N(0, sigma^2)``, optionally Likert-quantised. Rankings: a Plackett-Luce draw
with utilities ``rationality * G / scale`` (Gumbel-max), replaced by a uniformly random order with probability
``flip``. Annotator mixtures: each label comes from one of several annotators, each with its own weights at
angle ``annotator_spread`` from ``theta*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from sim.corruption.misspec import misweight
from sim.corruption.noise import Quantizer
from sim.errors import ConfigError
from sim.features import sequence_features
from sim.feedback.sequences import Sequences


@dataclass(eq=False)
class Teacher:
    """A (mixture of) simulated annotator(s).

    Attributes:
        returns: (n_annotators, n_seq) the returns each annotator perceives.
        myopic: (n_annotators, n_seq) their myopic returns (equal to ``returns`` when ``gamma = 1``).
        center, scale: mean and standard deviation of the oracle's returns under the sampling distribution.
    """

    returns: np.ndarray
    myopic: np.ndarray
    center: float
    scale: float
    rationality: float = 1.0
    flip: float = 0.0
    skip: float | None = None
    equal: float = 0.0
    sigma: float = 0.0
    levels: int = 0

    @property
    def n_annotators(self) -> int:
        return int(self.returns.shape[0])

    def _who(self, m: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.n_annotators, size=m) if self.n_annotators > 1 else np.zeros(m, dtype=np.int64)

    def _kept(self, R: np.ndarray) -> np.ndarray:
        """Rows of ``R`` (m, k) whose best standardised return reaches the skip threshold."""
        if self.skip is None:
            return np.ones(R.shape[0], dtype=bool)
        return ((R.max(axis=1) - self.center) / self.scale) >= self.skip

    def _bradley_terry(self, G1: np.ndarray, G2: np.ndarray) -> np.ndarray:
        """``P(1 preferred)`` on myopic returns: a sigmoid of the standardised difference, a step at rationality inf."""
        if np.isinf(self.rationality):
            return 0.5 * (1 + np.sign(G1 - G2))
        return expit(self.rationality * (G1 - G2) / self.scale)

    def preference_prob(self, i: np.ndarray, j: np.ndarray, who: np.ndarray | None = None) -> np.ndarray:
        """Exact ``P(label = 1)`` that ``i`` is preferred to ``j`` (after equal-marking and flips).

        Averaged over annotators when ``who`` is None. Skipping is not included (it drops, not labels).
        """
        whos = [who] if who is not None else [np.full(np.size(i), k) for k in range(self.n_annotators)]
        out = np.zeros(np.size(i))
        for w in whos:
            R1, R2 = self.returns[w, i], self.returns[w, j]
            p = self._bradley_terry(self.myopic[w, i], self.myopic[w, j])
            p = np.where(np.abs(R1 - R2) / self.scale < self.equal, 0.5, p)
            out += (1 - self.flip) * p + self.flip * (1 - p)
        return out / len(whos)

    def prefer(self, i: np.ndarray, j: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Label pairs.

        Returns:
            ``(labels, kept)``: labels in {0, 1/2, 1} (1 = ``i`` preferred) for the kept pairs, and the bool
            mask of kept pairs over the input.
        """
        who = self._who(np.size(i), rng)
        kept = self._kept(np.stack([self.returns[who, i], self.returns[who, j]], axis=1))
        i, j, who = i[kept], j[kept], who[kept]
        R1, R2 = self.returns[who, i], self.returns[who, j]
        p = self._bradley_terry(self.myopic[who, i], self.myopic[who, j])
        y = (rng.random(i.size) < p).astype(np.float64)
        y[np.abs(R1 - R2) / self.scale < self.equal] = 0.5
        flipped = rng.random(i.size) < self.flip
        y[flipped] = 1.0 - y[flipped]
        return y, kept

    def rate(self, items: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Ratings of single sequences: ``(ratings, kept)``."""
        who = self._who(np.size(items), rng)
        kept = self._kept(self.returns[who, items][:, None])
        items, who = items[kept], who[kept]
        z = (self.myopic[who, items] - self.center) / self.scale
        z = z + rng.normal(0.0, self.sigma, size=z.size) if self.sigma > 0 else z
        if self.levels:
            clean = (self.myopic - self.center) / self.scale
            z = Quantizer(float(clean.min()), float(clean.max()), self.levels)(z)
        return z, kept

    def rank(self, items: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Rank rows of ``items`` (m, k), best first: ``(rankings, kept)``."""
        m, k = items.shape
        who = self._who(m, rng)
        kept = self._kept(self.returns[who[:, None], items])
        items, who = items[kept], who[kept]
        G = self.myopic[who[:, None], items]
        if np.isinf(self.rationality):
            order = np.argsort(-G + 1e-12 * rng.random(G.shape) * self.scale, axis=1, kind="stable")
        else:
            util = self.rationality * G / self.scale + rng.gumbel(size=G.shape)
            order = np.argsort(-util, axis=1)
        shuffled = rng.random(len(items)) < self.flip
        if shuffled.any():
            order[shuffled] = np.argsort(rng.random((int(shuffled.sum()), k)), axis=1)
        return np.take_along_axis(items, order, axis=1), kept


def standardisation(returns: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of ``returns`` under the weights ``probs`` (the sd is 1 if it would be 0)."""
    w = probs / probs.sum()
    center = float(w @ returns)
    scale = float(np.sqrt(max(w @ (returns - center) ** 2, 0.0)))
    return center, (scale if scale > 1e-12 else 1.0)


def make_teacher(
    seqs: Sequences,
    perceived: np.ndarray,
    sampling_probs: np.ndarray,
    rng: np.random.Generator,
    oracle=None,
    rationality: float = 1.0,
    flip: float = 0.0,
    myopia: float = 1.0,
    skip: float | None = None,
    equal: float = 0.0,
    sigma: float = 0.0,
    levels: int = 0,
    annotators: int = 1,
    annotator_spread: float = 0.0,
) -> Teacher:
    """Build a teacher.

    Args:
        seqs: the complete sequences.
        perceived: reward table (S, A) the annotators judge by (the oracle, or a corrupted view of it).
        sampling_probs: (n_seq,) the distribution the labelled sequences come from (for standardising).
        rng: draws the annotators' weights.
        oracle: the :class:`sim.oracle.Oracle` (its linear part is perturbed per annotator).
        The rest: see :class:`sim.config.FeedbackConfig`.
    """
    base = seqs.returns(perceived)
    base_myopic = seqs.returns(perceived, myopia) if myopia < 1 else base
    center, scale = standardisation(base, sampling_probs)
    returns, myopic = base[None, :], base_myopic[None, :]
    if annotators > 1:
        if oracle is None or oracle.features is None:
            raise ConfigError("feedback.annotators", annotators, "1 unless the oracle has a linear part")
        fm, theta = oracle.features, oracle.theta
        Psi = sequence_features(fm)
        rows, rows_myopic = [], []
        for _ in range(annotators):
            delta = misweight(theta, annotator_spread, rng) - theta
            rows.append(base + Psi @ delta)
            rows_myopic.append(base_myopic + (seqs.returns(fm.reward(delta), myopia) if myopia < 1 else Psi @ delta))
        returns, myopic = np.stack(rows), np.stack(rows_myopic)
    return Teacher(
        returns=returns,
        myopic=myopic,
        center=center,
        scale=scale,
        rationality=rationality,
        flip=flip,
        skip=skip,
        equal=equal,
        sigma=sigma,
        levels=levels,
    )
