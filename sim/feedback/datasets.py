"""Feedback datasets: who writes the compared sequences, which prompts are covered, how many labels.

Sequences come from a *sampler* distribution over complete sequences: ``reference`` (pi_ref), ``uniform``
(every complete sequence of a prompt equally likely), a given ``policy`` (iterated RLHF) or ``expert`` (a mixture of
pi_ref and a near-optimal policy). Only a fraction
``kappa`` of prompts (chosen at random) appears in the data; the held-out *in-distribution* set comes from
the same sampler and prompts, the *shifted* set from the oracle's soft optimum over all prompts: where
the data never went, the reward model must generalise, and may not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError
from sim.feedback.sequences import Sequences, SequenceSampler
from sim.feedback.teachers import Teacher, standardisation
from sim.solvers import soft_optimal


@dataclass(eq=False)
class FeedbackData:
    """Labels from a teacher.

    Attributes:
        kind: ``preferences``, ``ratings`` or ``rankings``.
        items: int sequence ids: (m, 2) pairs ``[i, j]``; (m, 1) rated sequences; (m, k) rankings, best first.
        labels: preferences: P(i preferred) labels in {0, 1/2, 1}; ratings: the scores; rankings: None.
        covered: the prompts the data may contain.
    """

    kind: str
    items: np.ndarray
    labels: np.ndarray | None
    covered: np.ndarray

    @property
    def n(self) -> int:
        return int(self.items.shape[0])

    def __add__(self, other: FeedbackData) -> FeedbackData:
        labels = None if self.labels is None else np.concatenate([self.labels, other.labels])
        return FeedbackData(self.kind, np.concatenate([self.items, other.items]), labels, self.covered)

    def subset(self, rows: np.ndarray) -> FeedbackData:
        return FeedbackData(
            self.kind, self.items[rows], None if self.labels is None else self.labels[rows], self.covered
        )


def sampling_probs(
    seqs: Sequences, sampler: str, ref_policy: np.ndarray, policy: np.ndarray | None = None, mix: float = 0.5
) -> np.ndarray:
    """Joint probabilities (n_seq,) of the sampler (uniform prompts).

    ``policy`` is the agent's policy for ``sampler='policy'`` and the expert's for ``sampler='expert'``, which
    draws a fraction ``mix`` of the sequences from it and the rest from pi_ref.
    """
    if sampler == "reference":
        return seqs.probs(ref_policy)
    if sampler == "uniform":
        per_prompt = np.bincount(seqs.prompt, minlength=seqs.mdp.n_prompts)
        return seqs.mdp.initial_dist[seqs.prompt] / per_prompt[seqs.prompt]
    if sampler in ("policy", "expert"):
        if policy is None:
            raise ValueError(f"sampler={sampler!r} needs a policy table")
        if sampler == "policy":
            return seqs.probs(policy)
        return (1 - mix) * seqs.probs(ref_policy) + mix * seqs.probs(policy)
    raise ConfigError("feedback.sampler", sampler, "one of ['reference', 'uniform', 'policy', 'expert']")


def expert_policy(seqs: Sequences, oracle_reward: np.ndarray, ref_policy: np.ndarray, beta: float) -> np.ndarray:
    """The expert of ``sampler='expert'``: the oracle's soft optimum at ``beta`` return sds (under pi_ref).

    A stand-in for a good supervised model: it writes near-optimal outputs, so data mixed from it and pi_ref cover
    the optimal policy (the coverage condition under which a pessimistic reward model provably helps).
    """
    _, sd = standardisation(seqs.returns(oracle_reward), seqs.probs(ref_policy))
    return soft_optimal(seqs.mdp, oracle_reward, ref_policy, beta * sd)[2]


def covered_prompts(n_prompts: int, kappa: float, rng: np.random.Generator) -> np.ndarray:
    """A random ``ceil(kappa * P)`` of the prompts, sorted."""
    k = max(1, math.ceil(kappa * n_prompts - 1e-9))
    return np.sort(rng.permutation(n_prompts)[:k])


def sample_items(sampler: SequenceSampler, prompts: np.ndarray, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n, k) sequence ids, each row from one prompt drawn uniformly from ``prompts``."""
    rows = rng.choice(prompts, size=n)
    return np.stack([sampler.sample(rows, rng) for _ in range(k)], axis=1)


def collect(
    teacher: Teacher,
    sampler: SequenceSampler,
    covered: np.ndarray,
    kind: str,
    n: int,
    rng: np.random.Generator,
    k: int = 4,
) -> FeedbackData:
    """Ask the teacher for ``n`` labels on sequences from ``sampler`` over the ``covered`` prompts.

    Raises:
        ConfigError: if skipping leaves no data.
    """
    if kind == "preferences":
        items = sample_items(sampler, covered, n, 2, rng)
        labels, kept = teacher.prefer(items[:, 0], items[:, 1], rng)
    elif kind == "ratings":
        items = sample_items(sampler, covered, n, 1, rng)
        labels, kept = teacher.rate(items[:, 0], rng)
    elif kind == "rankings":
        items = sample_items(sampler, covered, n, k, rng)
        ranked, kept = teacher.rank(items, rng)
        data = FeedbackData(kind, ranked, None, covered)
    else:
        raise ConfigError("feedback.kind", kind, "one of ['preferences', 'ratings', 'rankings']")
    if kind != "rankings":
        data = FeedbackData(kind, items[kept], labels, covered)
    if data.n == 0:
        best = float((teacher.returns[:, items].max() - teacher.center) / teacher.scale)
        raise ConfigError(
            "feedback.skip",
            teacher.skip,
            f"a threshold that keeps some of the {n} items (the best standardised return drawn was {best:.3g})",
        )
    return data


def evaluation_pairs(sampler: SequenceSampler, prompts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) held-out pairs from ``sampler`` over ``prompts``."""
    return sample_items(sampler, prompts, n, 2, rng)


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
