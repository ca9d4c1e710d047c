"""Reward models: tabular (one parameter per complete sequence) or linear (over feature templates).

Both predict a sequence's return as ``X[i] @ theta``; the fitted model becomes a reward table the agents
optimise: the linear model pays ``theta . phi(s, a)`` on every token (dense), the tabular one pays
``theta_i`` on sequence ``i``'s last token. With ``pessimism = k`` the table is the lower confidence bound
``mean - k * std`` of each sequence's predicted return (a sequence-level reward), where ``std`` comes from a
bootstrap ensemble or, for the linear model, the Laplace posterior ``N(theta_MAP, H^-1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from sim.errors import ConfigError
from sim.features import FeatureMap, sequence_features
from sim.feedback.datasets import FeedbackData
from sim.feedback.sequences import Sequences
from sim.reward_models import fit


@dataclass(eq=False)
class RewardModel:
    """A fitted reward model.

    Attributes:
        name: ``tabular`` or ``linear``.
        theta: (D,) MAP parameters (the ensemble mean for an ensemble).
        returns: (n_seq,) the predicted return of every complete sequence (pessimistic if asked).
        mean_returns: (n_seq,) the predicted return without pessimism.
        std_returns: (n_seq,) posterior or ensemble standard deviation, or ``None``.
        table: (S, A) the reward the agent optimises.
        features: the feature map of a linear model.
        covariance: (D, D) Laplace posterior covariance of a linear model, when computed.
    """

    name: str
    theta: np.ndarray
    returns: np.ndarray
    mean_returns: np.ndarray
    std_returns: np.ndarray | None
    table: np.ndarray
    features: FeatureMap | None = None
    covariance: np.ndarray | None = None


RANKING_LIKELIHOODS = ("plackett_luce", "pairs")


def rankings_to_pairs(data: FeedbackData) -> FeedbackData:
    """Each ranking ``a_1 > ... > a_k`` as its ``k(k-1)/2`` pairwise preferences ``(a_i, a_j)``, i < j, label 1.

    Under Plackett-Luce, ``P(a_i ranked above a_j) = sigmoid(u_i - u_j)`` exactly, so Bradley-Terry on the split
    pairs is consistent; but pairs from one ranking are dependent, so it wastes information (Zhu et al. 2023).
    """
    k = data.items.shape[1]
    i, j = np.triu_indices(k, 1)
    pairs = np.stack([data.items[:, i].ravel(), data.items[:, j].ravel()], axis=1)
    return FeedbackData("preferences", pairs, np.ones(len(pairs)), data.covered)


def design(seqs: Sequences, name: str, templates=()) -> tuple[sparse.csr_matrix, FeatureMap | None]:
    """The design matrix X (n_seq, D) of a model: identity for tabular, ``Psi`` for linear."""
    if name == "tabular":
        return sparse.identity(seqs.n, format="csr"), None
    if name == "linear":
        fm = FeatureMap(seqs.mdp, templates)
        return sequence_features(fm), fm
    raise ConfigError("reward_model.name", name, "one of ['tabular', 'linear']")


def map_fit(X, data: FeedbackData, prior_scale: float, rating_sigma: float = 1.0, tol: float = 1e-6) -> np.ndarray:
    """MAP parameters of a model with design ``X`` on ``data``."""
    if data.kind == "preferences":
        Z = X[data.items[:, 0]] - X[data.items[:, 1]]
        return fit.fit_bt(Z, data.labels, prior_scale, tol)
    if data.kind == "rankings":
        return fit.fit_pl(X, data.items, prior_scale, tol)
    if data.kind == "ratings":
        return fit.fit_ratings(X[data.items[:, 0]], data.labels, prior_scale, rating_sigma)
    raise ConfigError("feedback.kind", data.kind, "one of ['preferences', 'ratings', 'rankings']")


def laplace_covariance(X, data: FeedbackData, theta: np.ndarray, prior_scale: float, rating_sigma: float) -> np.ndarray:
    """Posterior covariance ``H^-1`` at the MAP (Laplace approximation)."""
    if data.kind == "preferences":
        H = fit.bt_hessian(theta, X[data.items[:, 0]] - X[data.items[:, 1]], prior_scale)
    elif data.kind == "ratings":
        H = fit.ratings_hessian(X[data.items[:, 0]], prior_scale, rating_sigma)
    else:
        H = fit.pl_hessian(theta, X, data.items, prior_scale)
    return np.linalg.inv(H)


def fit_reward_model(
    seqs: Sequences,
    data: FeedbackData,
    name: str = "linear",
    templates=("unigram", "position", "bigram", "prompt"),
    prior_scale: float = 1.0,
    ensemble: int = 0,
    pessimism: float = 0.0,
    rating_sigma: float = 1.0,
    tol: float = 1e-6,
    rng: np.random.Generator | None = None,
    ranking_likelihood: str = "plackett_luce",
) -> RewardModel:
    """Fit a reward model by MAP (and optionally a bootstrap ensemble) and turn it into a reward table.

    Args:
        seqs: the complete sequences.
        data: the feedback.
        name, templates, prior_scale, ensemble, pessimism, rating_sigma, tol: see
            :class:`sim.config.RewardModelConfig`.
        rng: resamples the data for the bootstrap ensemble.
        ranking_likelihood: for rankings, ``plackett_luce`` (the full likelihood) or ``pairs`` (each ranking of k
            split into its k(k-1)/2 pairwise wins, fitted by Bradley-Terry as if independent; the bootstrap still
            resamples whole rankings).
    """
    X, fm = design(seqs, name, templates)
    if ranking_likelihood not in RANKING_LIKELIHOODS:
        raise ConfigError("reward_model.ranking_likelihood", ranking_likelihood, f"one of {list(RANKING_LIKELIHOODS)}")
    split = data.kind == "rankings" and ranking_likelihood == "pairs"

    def prepared(d: FeedbackData) -> FeedbackData:
        return rankings_to_pairs(d) if split else d

    cov = None
    std = None
    if ensemble >= 2:
        rng = rng if rng is not None else np.random.default_rng(0)
        thetas = [
            map_fit(X, prepared(data.subset(rng.integers(0, data.n, data.n))), prior_scale, rating_sigma, tol)
            for _ in range(ensemble)
        ]
        preds = np.stack([X @ t for t in thetas])
        theta = np.mean(thetas, axis=0)
        mean, std = preds.mean(axis=0), preds.std(axis=0, ddof=1)
    else:
        theta = map_fit(X, prepared(data), prior_scale, rating_sigma, tol)
        mean = X @ theta
        if pessimism > 0:
            if name != "linear":
                raise ConfigError(
                    "reward_model.pessimism", pessimism, "0 for tabular without reward_model.ensemble >= 2"
                )
            cov = laplace_covariance(X, prepared(data), theta, prior_scale, rating_sigma)
            std = np.sqrt(np.maximum(np.asarray(X.multiply(X @ cov).sum(axis=1)).ravel(), 0.0))
    returns = mean - pessimism * std if pessimism > 0 else mean
    if pessimism == 0 and fm is not None:
        table = fm.reward(theta)
    else:
        table = seqs.table(returns)
    return RewardModel(
        name=name,
        theta=theta,
        returns=returns,
        mean_returns=mean,
        std_returns=std,
        table=table,
        features=fm,
        covariance=cov,
    )
