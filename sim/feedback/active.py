"""Active query selection: which pairs the annotator is asked about (``feedback.query``).

With ``random`` (the default) the pairs are the source's draws, as :func:`sim.feedback.collect` makes them. The other
rules choose preference pairs in ``rounds`` rounds. The ``n`` labels are split as evenly as possible over the rounds;
round 0 is random (unless earlier data exist); before each later round the reward model is fitted by MAP to the data
so far, a *candidate pool* of ``pool x batch`` pairs is drawn from the same source and prompts, each candidate
``(i, j)`` is scored by the model's uncertainty about its return difference, and the ``batch`` highest-scoring pairs
are labelled. With ``z = X[i] - X[j]`` the pair's design difference (features Psi for a linear model, one-hots for a
tabular one) and ``delta = theta . z`` the predicted return difference:

* ``disagreement``: the variance ``Var_m(theta_m . z)`` (ddof 1) over the members of a bootstrap ensemble (the data
  resampled with replacement, one MAP fit each): query-by-committee.
* ``laplace``: the posterior variance ``z^T Sigma z`` of ``delta`` under the Laplace posterior
  ``N(theta_MAP, Sigma)``, ``Sigma = H^-1`` with ``H = Z^T W Z + I / s^2`` the Bradley-Terry Hessian at the MAP
  (linear models only: a tabular model's posterior spans every complete sequence).
* ``entropy``: the binary entropy ``h(p) = -p log p - (1 - p) log(1 - p)`` (nats) of the MAP model's preference
  probability ``p = sigmoid(delta)``: the pairs the model is least sure how to order.

A pair with ``z = 0`` (the same sequence twice, or two the model's features cannot tell apart) carries no
information about ``theta`` whatever its label; every rule ranks such pairs last (entropy would otherwise rank them
first, at ``h(1/2) = log 2``). Ties keep the candidates' (random) order. Scoring is vectorised over candidates; each
round costs one MAP fit (``ensemble`` fits for disagreement, plus one ``D x D`` inverse for laplace).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.special import entr, expit

from sim.errors import ConfigError
from sim.feedback.datasets import FeedbackData, sample_items
from sim.worlds import Sequences

#: The rules of ``feedback.query``.
QUERY_RULES = ("random", "disagreement", "laplace", "entropy")
#: The largest linear model whose Laplace covariance (D x D, dense) the ``laplace`` rule forms: 4000^2 x 8 B = 128 MB.
MAX_LAPLACE_DIM = 4000


def check_query(cfg, world) -> None:
    """Refuse, before any label is drawn, an active rule the run's reward model cannot carry.

    Raises:
        ConfigError: naming ``feedback.query``: ``laplace`` with a tabular reward model, or with a linear one of more
            than :data:`MAX_LAPLACE_DIM` parameters.
    """
    from sim.features import FeatureMap

    fb, rmc = cfg.feedback, cfg.reward_model
    if fb.query != "laplace":
        return
    if rmc.name != "linear":
        raise ConfigError(
            "feedback.query",
            fb.query,
            "random, disagreement or entropy with reward_model=tabular (laplace needs a linear model: a tabular "
            "model's posterior covariance spans every complete sequence)",
        )
    dim = FeatureMap(world, rmc.templates, field="reward_model.templates").dim
    dim = min(dim, rmc.dim) if rmc.dim > 0 else dim  # a hashed model has reward_model.dim parameters
    if dim > MAX_LAPLACE_DIM:
        raise ConfigError(
            "feedback.query",
            fb.query,
            f"random, disagreement or entropy for a linear model of {dim} parameters (laplace inverts a dense D x D "
            f"Hessian, at most D = {MAX_LAPLACE_DIM}); or fewer reward_model.templates, or reward_model.dim <= "
            f"{MAX_LAPLACE_DIM}",
        )


def _rows_nonzero(Z) -> np.ndarray:
    """(c,) bool: rows of ``Z`` with some nonzero entry."""
    if sparse.issparse(Z):
        return np.asarray(abs(Z).sum(axis=1)).ravel() > 0
    return np.abs(Z).sum(axis=1) > 0


def disagreement_scores(Z, members: list[np.ndarray]) -> np.ndarray:
    """(c,) ``Var_m(Z theta_m)`` (ddof 1) over ensemble members' parameters ``members`` (M arrays of (D,))."""
    preds = np.asarray(Z @ np.stack(members, axis=1))  # (c, M)
    return preds.var(axis=1, ddof=1)


def laplace_scores(Z, cov: np.ndarray) -> np.ndarray:
    """(c,) ``z^T cov z`` for each row ``z`` of ``Z`` (c, D)."""
    ZC = np.asarray(Z @ cov)
    if sparse.issparse(Z):
        return np.asarray(Z.multiply(ZC).sum(axis=1)).ravel()
    return np.einsum("cd,cd->c", Z, ZC)


def entropy_scores(Z, theta: np.ndarray) -> np.ndarray:
    """(c,) the binary entropy (nats) of ``sigmoid(Z theta)``."""
    p = expit(np.asarray(Z @ theta).ravel())
    return entr(p) + entr(1.0 - p)


def select(scores: np.ndarray, informative: np.ndarray, batch: int) -> np.ndarray:
    """The indices of the ``batch`` best candidates: highest score first, uninformative ones (``z = 0``) last, ties in
    candidate order."""
    key = np.where(informative, scores, -np.inf)
    return np.argsort(-key, kind="stable")[:batch]


def _label(teacher, pool: Sequences, pairs: np.ndarray, covered, rng) -> FeedbackData:
    """The teacher's preferences on ``pairs`` (m, 2) of ``pool``, with the pool cut to the paired sequences."""
    m = pairs.shape[0]
    seqs = pool.take(np.concatenate([pairs[:, 0], pairs[:, 1]]))
    items = np.arange(2 * m).reshape(2, m).T.copy()
    R, G = teacher.perceive(seqs)
    labels, kept = teacher.prefer(R, G, items[:, 0], items[:, 1], rng)
    return FeedbackData("preferences", seqs, items[kept], labels, covered)


def _join(a: FeedbackData | None, b: FeedbackData) -> FeedbackData:
    return b if a is None else a + b


class QueryModel:
    """The reward model the rules score with: the run's model class (``reward_model.name``, ``.templates``,
    ``.prior_scale``, ``.tol``, and a linear model's capacity ``.dim``), fitted by MAP to the data so far."""

    def __init__(self, world, name: str, templates, prior_scale: float, tol: float, dim: int = 0):
        from sim.features import FeatureMap
        from sim.reward_models.model import feature_hash

        self.world, self.name, self.prior_scale, self.tol = world, name, prior_scale, tol
        self.features = FeatureMap(world, templates, field="reward_model.templates") if name == "linear" else None
        D = self.features.dim if self.features is not None else 0
        self.hash = feature_hash(D, dim) if 0 < dim < D else None  # the hashed model's design is X P

    def design(self, seqs: Sequences):
        from sim.reward_models.model import design

        X = design(self.world, self.name, self.features, seqs)
        return X if self.hash is None else (X @ self.hash).tocsr()

    def fit(self, data: FeedbackData, rng: np.random.Generator | None = None) -> np.ndarray:
        """MAP parameters on ``data``, or on a bootstrap resample of it when ``rng`` is given."""
        from sim.reward_models.model import map_fit

        if rng is not None:
            data = data.subset(rng.integers(0, data.n, data.n))
        return map_fit(self.design(data.pool), data, self.prior_scale, tol=self.tol)

    def scores(self, query: str, data: FeedbackData, Z, ensemble: int, rng: np.random.Generator) -> np.ndarray:
        """(c,) the rule's score of each candidate difference row of ``Z`` given the model fitted to ``data``."""
        if query == "disagreement":
            return disagreement_scores(Z, [self.fit(data, rng) for _ in range(ensemble)])
        theta = self.fit(data)
        if query == "entropy":
            return entropy_scores(Z, theta)
        if query == "laplace":
            from sim.reward_models import fit as fits

            X = self.design(data.pool)
            H = fits.bt_hessian(theta, X[data.items[:, 0]] - X[data.items[:, 1]], self.prior_scale)
            return laplace_scores(Z, np.linalg.inv(H))
        raise ConfigError("feedback.query", query, f"one of {list(QUERY_RULES)}")


def collect_active(
    teacher,
    source,
    covered: np.ndarray,
    n: int,
    rng: np.random.Generator,
    model: QueryModel,
    query: str,
    rounds: int = 5,
    pool: int = 10,
    ensemble: int = 5,
    prior: FeedbackData | None = None,
) -> FeedbackData:
    """``n`` preference labels on pairs chosen by ``query`` (module docstring) from ``source`` over ``covered``.

    Args:
        teacher: the simulated annotator.
        source: the source of candidate sequences.
        covered: the prompts the data cover.
        n: labels requested (skipped pairs are not replaced).
        rng: the stream of candidates, bootstrap resamples and labels.
        model: the model class the rules fit and score with.
        query: ``disagreement``, ``laplace`` or ``entropy``.
        rounds: the labelling rounds (round 0 random when ``prior`` is None).
        pool: candidate pairs drawn per label of a round.
        ensemble: bootstrap members of ``disagreement``.
        prior: data already labelled (earlier rounds of iterated RLHF): fitted with the new, not returned.

    Returns:
        The new labels only (``prior + result`` is all the data).

    Raises:
        ConfigError: if skipping leaves no data.
    """
    if query not in QUERY_RULES[1:]:
        raise ConfigError("feedback.query", query, f"one of {list(QUERY_RULES)}")
    batches = np.diff(np.linspace(0, n, rounds + 1).round().astype(int))
    new: FeedbackData | None = None
    for b in batches:
        if b == 0:
            continue
        so_far = new if prior is None else _join(prior, new) if new is not None else prior
        if so_far is None or so_far.n == 0:  # nothing to fit yet: the source's own pairs
            seqs, pairs = sample_items(source, covered, int(b), 2, rng)
        else:
            seqs, cand = sample_items(source, covered, int(b) * pool, 2, rng)
            X = model.design(seqs)
            Z = X[cand[:, 0]] - X[cand[:, 1]]
            scores = model.scores(query, so_far, Z, ensemble, rng)
            pairs = cand[select(scores, _rows_nonzero(Z), int(b))]
        new = _join(new, _label(teacher, seqs, pairs, covered, rng))
    if new is None or new.n == 0:
        raise ConfigError("feedback.skip", teacher.skip, f"a threshold that keeps some of the {n} items")
    return new
