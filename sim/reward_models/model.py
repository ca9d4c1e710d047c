"""Reward models: tabular (one parameter per complete sequence) or linear (over feature templates), on any world.

Both predict a sequence's return as ``X[i] @ theta`` for a design row ``X[i]`` (a one-hot of the sequence for a
tabular model, its features ``Psi`` for a linear one). The fitted model becomes the reward the agent optimises:
the linear model pays ``theta . phi(s, a)`` on every token (dense; in the world's own form, so a compressed world
stays exact), the tabular one pays ``theta_i`` on sequence ``i``'s last token (worlds that can list their
sequences). With ``pessimism = k`` the reward is the lower confidence bound ``mean - k * std`` of each sequence's
predicted return (a sequence-level reward), where ``std`` comes from a bootstrap ensemble or the Laplace posterior
``N(theta_MAP, H^-1)`` (for a tabular model, sequences absent from the data keep their prior std). With an
ensemble, ``objective = wco`` or ``uwo`` pays a conservative combination of the standardised members instead of
their mean (Coste et al. 2023; :func:`combine`), also a sequence-level reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from sim.errors import ConfigError
from sim.features import FeatureMap
from sim.feedback.datasets import FeedbackData
from sim.reward_models import fit


@dataclass(eq=False)
class RewardModel:
    """A fitted reward model.

    Attributes:
        name: ``tabular`` or ``linear``.
        world: the world.
        theta: (D,) MAP parameters (the ensemble mean for an ensemble).
        members: the parameters of each ensemble member (``[theta]`` for a single fit).
        reward: the reward the agent optimises.
        features: the feature map of a linear model.
        covariance: (D, D) Laplace posterior covariance of a linear model, when computed.
    """

    name: str
    world: object
    theta: np.ndarray
    members: list[np.ndarray]
    reward: object = None
    features: FeatureMap | None = None
    covariance: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def design(self, seqs) -> sparse.csr_matrix:
        """The design rows (n, D) of a batch of sequences."""
        return design(self.world, self.name, self.features, seqs)

    def predict(self, seqs) -> np.ndarray:
        """(n,) the predicted return of each sequence (the ensemble mean, without pessimism)."""
        X = self.design(seqs)
        if len(self.members) == 1:
            return X @ self.theta
        return np.stack([X @ t for t in self.members]).mean(axis=0)


RANKING_LIKELIHOODS = ("plackett_luce", "pairs")
#: How an ensemble's members are combined into one reward (Coste et al. 2023).
OBJECTIVES = ("mean", "wco", "uwo")


def combine(preds: np.ndarray, pool_preds: np.ndarray, objective: str, uwo_lambda: float = 1.0) -> np.ndarray:
    """An ensemble's predicted returns (M, n) combined into one return per sequence (n,), Coste et al. (2023).

    Each member is first standardised by the mean and standard deviation of its predictions on the labelled
    sequences (``pool_preds``, (M, m)), so that members count alike whatever their scale: ``z_i = (r_i - mu_i) /
    sd_i``. Then ``mean`` is ``mean_i z_i``, ``wco`` (worst-case optimisation) ``min_i z_i`` and ``uwo``
    (uncertainty-weighted) ``mean_i z_i - lambda var_i z_i`` (the population variance over members, in standardised
    units as in the paper). The result is mapped back to reward units by the mean and standard deviation of the
    ensemble mean on the labelled sequences (an affine map: the same preferences, a beta on the usual scale).
    """
    mu = pool_preds.mean(axis=1, keepdims=True)
    sd = pool_preds.std(axis=1, keepdims=True)
    sd = np.where(sd > 0, sd, 1.0)  # a member constant on the data (no information) keeps its predictions' offsets
    z = (preds - mu) / sd
    if objective == "mean":
        out = z.mean(axis=0)
    elif objective == "wco":
        out = z.min(axis=0)
    elif objective == "uwo":
        out = z.mean(axis=0) - uwo_lambda * z.var(axis=0)
    else:
        raise ConfigError("reward_model.objective", objective, f"one of {list(OBJECTIVES)}")
    avg = pool_preds.mean(axis=0)
    scale = avg.std() if avg.std() > 0 else 1.0
    return avg.mean() + scale * out


def rankings_to_pairs(data: FeedbackData) -> FeedbackData:
    """Each ranking ``a_1 > ... > a_k`` as its ``k(k-1)/2`` pairwise preferences ``(a_i, a_j)``, i < j, label 1.

    Under Plackett-Luce, ``P(a_i ranked above a_j) = sigmoid(u_i - u_j)`` exactly, so Bradley-Terry on the split
    pairs is consistent; but pairs from one ranking are dependent, so it wastes information (Zhu et al. 2023).
    """
    k = data.items.shape[1]
    i, j = np.triu_indices(k, 1)
    pairs = np.stack([data.items[:, i].ravel(), data.items[:, j].ravel()], axis=1)
    return FeedbackData("preferences", data.pool, pairs, np.ones(len(pairs)), data.covered)


def design(world, name: str, features: FeatureMap | None, seqs) -> sparse.csr_matrix:
    """The design rows (n, D) of ``seqs``: a one-hot over all complete sequences (tabular), or ``Psi`` (linear)."""
    if name == "tabular":
        n_all = world.terminal_transitions()[0].size
        ids = world.sequence_ids(seqs)
        return sparse.csr_matrix((np.ones(ids.size), (np.arange(ids.size), ids)), shape=(ids.size, n_all))
    if name == "linear":
        return features.sequences(seqs)
    raise ConfigError("reward_model.name", name, "one of ['tabular', 'linear']")


def feature_hash(D: int, d: int) -> sparse.csr_matrix:
    """The (D, d) signed hashing matrix of a capacity-``d`` linear model over ``D`` features: row ``j`` has one entry,
    ``s_j`` in {-1, +1} in column ``h_j``, both drawn once from a generator seeded by ``(D, d)`` (a fixed model class,
    the same in every run). The model's design is ``X @ P`` and its parameters over the features ``P @ theta``."""
    rng = np.random.default_rng([D, d])
    cols = rng.integers(0, d, size=D)
    signs = rng.choice(np.array([-1.0, 1.0]), size=D)
    return sparse.csr_matrix((signs, (np.arange(D), cols)), shape=(D, d))


def map_fit(X, data: FeedbackData, prior_scale: float, rating_sigma: float = 1.0, tol: float = 1e-6) -> np.ndarray:
    """MAP parameters of a model with design ``X`` (rows of ``data.pool``) on ``data``."""
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


#: The tabular Laplace posterior inverts an (m, m) matrix over the m sequences in the data: 6000 is 288 MB.
MAX_TABULAR_LAPLACE = 6000


def tabular_laplace_std(
    world, data: FeedbackData, theta: np.ndarray, prior_scale: float, rating_sigma: float
) -> np.ndarray:
    """Laplace posterior standard deviation (n_seq,) of each sequence's parameter in a tabular model.

    A sequence the data never mention appears only in the prior, so its posterior is its prior: std ``s``. The
    Hessian is block-diagonal between those and the ``m`` sequences in the data, so only the (m, m) block is
    inverted; the result equals the full Laplace posterior exactly.

    Raises:
        ConfigError: when ``m`` is too large to invert densely.
    """
    ids = world.sequence_ids(data.pool)[data.items]
    seen, local = np.unique(ids, return_inverse=True)
    if seen.size > MAX_TABULAR_LAPLACE:
        raise ConfigError(
            "reward_model.pessimism",
            "tabular Laplace",
            f"a tabular model's Laplace posterior over at most {MAX_TABULAR_LAPLACE} sequences in the data (these "
            f"data name {seen.size}); use reward_model.ensemble >= 2, a linear model, or fewer labels",
        )
    block = FeedbackData(data.kind, data.pool, local.reshape(data.items.shape), data.labels, data.covered)
    cov = laplace_covariance(sparse.identity(seen.size, format="csr"), block, theta[seen], prior_scale, rating_sigma)
    std = np.full(theta.size, float(prior_scale))
    std[seen] = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return std


def fit_reward_model(
    world,
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
    objective: str = "mean",
    uwo_lambda: float = 1.0,
    dim: int = 0,
) -> RewardModel:
    """Fit a reward model by MAP (and optionally a bootstrap ensemble) and turn it into a reward.

    Args:
        world: the world.
        data: the feedback.
        name, templates, prior_scale, ensemble, pessimism, rating_sigma, tol: see
            :class:`sim.config.RewardModelConfig`.
        rng: resamples the data for the bootstrap ensemble.
        ranking_likelihood: for rankings, ``plackett_luce`` (the full likelihood) or ``pairs`` (each ranking of k
            split into its k(k-1)/2 pairwise wins, fitted by Bradley-Terry as if independent; the bootstrap still
            resamples whole rankings).
        objective: how an ensemble's members are combined (:func:`combine`): ``mean``, ``wco`` or ``uwo``.
        uwo_lambda: the weight of the members' variance in ``uwo``.
        dim: a linear model's number of parameters ``d``: with ``0 < d < D`` the features are hashed into ``d``
            signed buckets (:func:`feature_hash`) and fitted there; ``theta`` and ``members`` are reported over the
            ``D`` features (``P @ theta_d``), ``covariance`` over the ``d`` parameters. 0 or ``d >= D``: no hashing.
    """
    if objective not in OBJECTIVES:
        raise ConfigError("reward_model.objective", objective, f"one of {list(OBJECTIVES)}")
    objective = objective if ensemble >= 2 else "mean"  # one model: every combination of it is itself
    if ranking_likelihood not in RANKING_LIKELIHOODS:
        raise ConfigError("reward_model.ranking_likelihood", ranking_likelihood, f"one of {list(RANKING_LIKELIHOODS)}")
    features = FeatureMap(world, templates, field="reward_model.templates") if name == "linear" else None
    X = design(world, name, features, data.pool)
    P = feature_hash(features.dim, dim) if features is not None and 0 < dim < features.dim else None
    if P is not None:
        X = (X @ P).tocsr()
    split = data.kind == "rankings" and ranking_likelihood == "pairs"

    def prepared(d: FeedbackData) -> FeedbackData:
        return rankings_to_pairs(d) if split else d

    if ensemble >= 2:
        rng = rng if rng is not None else np.random.default_rng(0)
        members = [
            map_fit(X, prepared(data.subset(rng.integers(0, data.n, data.n))), prior_scale, rating_sigma, tol)
            for _ in range(ensemble)
        ]
        theta = np.mean(members, axis=0)
    else:
        theta = map_fit(X, prepared(data), prior_scale, rating_sigma, tol)
        members = [theta]
    reduced = members
    if P is not None:  # the hashed model as parameters over the features: the same predictions, the world's own form
        members = [P @ m for m in members]
        theta = np.mean(members, axis=0) if ensemble >= 2 else members[0]
    model = RewardModel(name=name, world=world, theta=theta, members=members, features=features)
    if pessimism == 0 and objective == "mean" and features is not None:
        model.reward = features.reward(theta)
        return model
    every = world.all_sequences()
    X_all = model.design(every)
    preds = np.stack([X_all @ t for t in members])
    mean = preds.mean(axis=0) if ensemble >= 2 else preds[0]
    if objective != "mean":
        mean = combine(preds, np.stack([X @ t for t in reduced]), objective, uwo_lambda)
    returns = mean
    if pessimism > 0:
        if ensemble >= 2:
            std = preds.std(axis=0, ddof=1)
        elif name == "tabular":
            std = tabular_laplace_std(world, prepared(data), theta, prior_scale, rating_sigma)
        else:
            model.covariance = cov = laplace_covariance(X, prepared(data), reduced[0], prior_scale, rating_sigma)
            X_fit = X_all if P is None else (X_all @ P).tocsr()
            std = np.sqrt(np.maximum(np.asarray(X_fit.multiply(X_fit @ cov).sum(axis=1)).ravel(), 0.0))
        returns = mean - pessimism * std
    model.reward = world.sequence_reward(every, returns)
    return model
