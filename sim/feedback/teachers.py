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

A teacher judges a *pool* of sequences: :meth:`Teacher.perceive` gives every annotator's returns of the pool, and
the labelling methods take indices into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from sim.corruption.misspec import misweight
from sim.corruption.noise import Quantizer
from sim.errors import ConfigError


@dataclass(eq=False)
class Teacher:
    """A (mixture of) simulated annotator(s).

    Attributes:
        world: the world.
        perceived: the reward the annotators judge by (the oracle, or a corrupted view of it).
        center, scale: mean and standard deviation of the perceived returns under the sampling distribution.
        myopia: gamma of the myopic returns (1 = none).
        features, deltas: each annotator's change of the linear weights (one zero delta without a mixture).
    """

    world: object
    perceived: object
    center: float
    scale: float
    rationality: float = 1.0
    flip: float = 0.0
    skip: float | None = None
    equal: float = 0.0
    sigma: float = 0.0
    levels: int = 0
    myopia: float = 1.0
    features: object | None = None
    deltas: list[np.ndarray] = field(default_factory=list)

    @property
    def n_annotators(self) -> int:
        return max(1, len(self.deltas))

    def perceive(self, pool) -> tuple[np.ndarray, np.ndarray]:
        """``(returns, myopic)``, each (n_annotators, n): what every annotator sees of each sequence of ``pool``."""
        w = self.world
        base = w.sequence_returns(self.perceived, pool)
        base_myopic = w.sequence_returns(self.perceived, pool, self.myopia) if self.myopia < 1 else base
        if not self.deltas:
            return base[None, :], base_myopic[None, :]
        Psi = self.features.sequences(pool)
        rows, rows_myopic = [], []
        for delta in self.deltas:
            rows.append(base + Psi @ delta)
            extra = (
                w.sequence_returns(self.features.reward(delta), pool, self.myopia) if self.myopia < 1 else Psi @ delta
            )
            rows_myopic.append(base_myopic + extra)
        return np.stack(rows), np.stack(rows_myopic)

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

    def preference_prob(self, returns: np.ndarray, myopic: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Exact ``P(label = 1)`` that ``i`` is preferred to ``j`` (after equal-marking and flips), averaged over
        annotators. Skipping is not included (it drops, not labels)."""
        out = np.zeros(np.size(i))
        for w in range(returns.shape[0]):
            R1, R2 = returns[w, i], returns[w, j]
            p = self._bradley_terry(myopic[w, i], myopic[w, j])
            p = np.where(np.abs(R1 - R2) / self.scale < self.equal, 0.5, p)
            out += (1 - self.flip) * p + self.flip * (1 - p)
        return out / returns.shape[0]

    def prefer(
        self, returns: np.ndarray, myopic: np.ndarray, i: np.ndarray, j: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Label pairs ``(i, j)`` of the pool whose perceived returns are given.

        Returns:
            ``(labels, kept)``: labels in {0, 1/2, 1} (1 = ``i`` preferred) for the kept pairs, and the bool
            mask of kept pairs over the input.
        """
        who = self._who(np.size(i), rng)
        kept = self._kept(np.stack([returns[who, i], returns[who, j]], axis=1))
        i, j, who = i[kept], j[kept], who[kept]
        R1, R2 = returns[who, i], returns[who, j]
        p = self._bradley_terry(myopic[who, i], myopic[who, j])
        y = (rng.random(i.size) < p).astype(np.float64)
        y[np.abs(R1 - R2) / self.scale < self.equal] = 0.5
        flipped = rng.random(i.size) < self.flip
        y[flipped] = 1.0 - y[flipped]
        return y, kept

    def rate(
        self, returns: np.ndarray, myopic: np.ndarray, items: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ratings of single sequences: ``(ratings, kept)``."""
        who = self._who(np.size(items), rng)
        kept = self._kept(returns[who, items][:, None])
        items, who = items[kept], who[kept]
        z = (myopic[who, items] - self.center) / self.scale
        z = z + rng.normal(0.0, self.sigma, size=z.size) if self.sigma > 0 else z
        if self.levels:
            lo, hi = self.myopic_range
            z = Quantizer((lo - self.center) / self.scale, (hi - self.center) / self.scale, self.levels)(z)
        return z, kept

    def rank(
        self, returns: np.ndarray, myopic: np.ndarray, items: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rank rows of ``items`` (m, k), best first: ``(rankings, kept)``."""
        m, k = items.shape
        who = self._who(m, rng)
        kept = self._kept(returns[who[:, None], items])
        items, who = items[kept], who[kept]
        G = myopic[who[:, None], items]
        if np.isinf(self.rationality):
            order = np.argsort(-G + 1e-12 * rng.random(G.shape) * self.scale, axis=1, kind="stable")
        else:
            util = self.rationality * G / self.scale + rng.gumbel(size=G.shape)
            order = np.argsort(-util, axis=1)
        shuffled = rng.random(len(items)) < self.flip
        if shuffled.any():
            order[shuffled] = np.argsort(rng.random((int(shuffled.sum()), k)), axis=1)
        return np.take_along_axis(items, order, axis=1), kept

    #: the range of myopic perceived returns that a Likert scale spans (set by :func:`make_teacher` for ratings)
    myopic_range: tuple[float, float] = (0.0, 1.0)


def make_teacher(
    world,
    perceived,
    source,
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
        world: the world.
        perceived: the reward the annotators judge by (the oracle, or a corrupted view of it).
        source: the :class:`sim.worlds.SequenceSource` the labelled sequences come from (for standardising).
        rng: draws the annotators' weights.
        oracle: the :class:`sim.oracle.Oracle` (its linear part is perturbed per annotator).
        The rest: see :class:`sim.config.FeedbackConfig`.
    """
    center, scale = source.moments(perceived)
    deltas = []
    features = None
    if annotators > 1:
        if oracle is None or oracle.features is None:
            raise ConfigError("feedback.annotators", annotators, "1 unless the oracle has a linear part")
        features, theta = oracle.features, oracle.theta
        deltas = [misweight(theta, annotator_spread, rng) - theta for _ in range(annotators)]
    teacher = Teacher(
        world=world,
        perceived=perceived,
        center=center,
        scale=scale,
        rationality=rationality,
        flip=flip,
        skip=skip,
        equal=equal,
        sigma=sigma,
        levels=levels,
        myopia=myopia,
        features=features,
        deltas=deltas,
    )
    if levels:
        teacher.myopic_range = source.myopic_range(teacher)
    return teacher
