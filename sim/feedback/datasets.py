"""Feedback datasets: who writes the compared sequences, which prompts are covered, how many labels.

Sequences come from a *source* (:class:`sim.worlds.SequenceSource`): pi_ref, every complete sequence equally likely,
the agent's policy (iterated RLHF) or a mixture of pi_ref and a near-optimal *expert*. Only a fraction ``kappa`` of
prompts (chosen at random) appears in the data; the held-out *in-distribution* set comes from the same source and
prompts, the *shifted* set from the oracle's soft optimum over all prompts: where the data never went, the reward
model must generalise, and may not. :func:`stutter_free` removes one kind of output from a source altogether.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError
from sim.worlds import LevelPolicy, Sequences


@dataclass(eq=False)
class FeedbackData:
    """Labels from a teacher.

    Attributes:
        kind: ``preferences``, ``ratings`` or ``rankings``.
        pool: the labelled sequences.
        items: int indices into ``pool``: (m, 2) pairs ``[i, j]``; (m, 1) rated sequences; (m, k) rankings, best first.
        labels: preferences: P(i preferred) labels in {0, 1/2, 1}; ratings: the scores; rankings: None.
        covered: the prompts the data may contain.
    """

    kind: str
    pool: Sequences
    items: np.ndarray
    labels: np.ndarray | None
    covered: np.ndarray

    @property
    def n(self) -> int:
        return int(self.items.shape[0])

    def __add__(self, other: FeedbackData) -> FeedbackData:
        labels = None if self.labels is None else np.concatenate([self.labels, other.labels])
        pool = Sequences.concat([self.pool, other.pool])
        items = np.concatenate([self.items, other.items + self.pool.n])
        return FeedbackData(self.kind, pool, items, labels, self.covered)

    def subset(self, rows: np.ndarray) -> FeedbackData:
        return FeedbackData(
            self.kind, self.pool, self.items[rows], None if self.labels is None else self.labels[rows], self.covered
        )


def covered_prompts(n_prompts: int, kappa: float, rng: np.random.Generator) -> np.ndarray:
    """A random ``ceil(kappa * P)`` of the prompts, sorted."""
    k = max(1, math.ceil(kappa * n_prompts - 1e-9))
    return np.sort(rng.permutation(n_prompts)[:k])


def stutter_free(world, policy) -> LevelPolicy:
    """``policy`` that never repeats a token right after itself: in each state whose last token is ``y`` (not EOS),
    ``pi(y | s)`` is set to 0 and the row renormalised (a row with no other mass becomes uniform over the others).

    Raises:
        ConfigError: if the world's states do not keep the last token (nothing to mask).
    """
    V, f = world.vocab_size, world.first_token
    if world.horizon > 1 and (world.last_token[world.level_start[1] :] < 0).all():
        raise ConfigError(
            "feedback.stutter_free", True, "false on a world whose states do not keep the last token (nothing reads it)"
        )

    def rows(t: int) -> np.ndarray:
        out = np.array(policy.level(t), dtype=np.float64, copy=True)
        lo, hi = world.level(t)
        y = world.last_token[lo:hi]
        live = np.flatnonzero((y >= f) & (y < V))
        out[live, y[live]] = 0.0
        mass = out.sum(axis=1, keepdims=True)
        other = np.ones_like(out)
        other[live, y[live]] = 0.0
        return np.where(mass > 0, out / np.where(mass > 0, mass, 1.0), other / other.sum(axis=1, keepdims=True))

    return LevelPolicy(world, rows)


def sample_items(source, prompts: np.ndarray, n: int, k: int, rng: np.random.Generator) -> tuple[Sequences, np.ndarray]:
    """``n`` groups of ``k`` sequences, each group from one prompt drawn uniformly from ``prompts``.

    Returns:
        ``(pool, items)``: the ``n k`` sequences and (n, k) indices into them.
    """
    rows = rng.choice(prompts, size=n)
    pool = Sequences.concat([source.draw(rows, rng) for _ in range(k)])
    return pool, np.arange(n * k).reshape(k, n).T.copy()


def collect(
    teacher,
    source,
    covered: np.ndarray,
    kind: str,
    n: int,
    rng: np.random.Generator,
    k: int = 4,
) -> FeedbackData:
    """Ask the teacher for ``n`` labels on sequences from ``source`` over the ``covered`` prompts.

    Raises:
        ConfigError: if skipping leaves no data.
    """
    width = {"preferences": 2, "ratings": 1, "rankings": k}
    if kind not in width:
        raise ConfigError("feedback.kind", kind, "one of ['preferences', 'ratings', 'rankings']")
    pool, items = sample_items(source, covered, n, width[kind], rng)
    R, G = teacher.perceive(pool)
    if kind == "preferences":
        labels, kept = teacher.prefer(R, G, items[:, 0], items[:, 1], rng)
        data = FeedbackData(kind, pool, items[kept], labels, covered)
    elif kind == "ratings":
        labels, kept = teacher.rate(R, G, items[:, 0], rng)
        data = FeedbackData(kind, pool, items[kept], labels, covered)
    else:
        ranked, kept = teacher.rank(R, G, items, rng)
        data = FeedbackData(kind, pool, ranked, None, covered)
    if data.n == 0:
        best = float((R.max() - teacher.center) / teacher.scale)
        raise ConfigError(
            "feedback.skip",
            teacher.skip,
            f"a threshold that keeps some of the {n} items (the best standardised return drawn was {best:.3g})",
        )
    return data


def preference_accuracy(predicted: np.ndarray, true: np.ndarray, pairs: np.ndarray) -> float | None:
    """Fraction of pairs with different true returns that ``predicted`` orders the same way.

    A predicted tie counts 1/2. ``None`` when every pair is a true tie.
    """
    dt = true[pairs[:, 0]] - true[pairs[:, 1]]
    dp = predicted[pairs[:, 0]] - predicted[pairs[:, 1]]
    informative = dt != 0
    if not informative.any():
        return None
    agree = np.where(dp == 0, 0.5, (np.sign(dp) == np.sign(dt)).astype(float))
    return float(agree[informative].mean())
