"""Pins of the reward-model fits and models (sim.reward_models.fit, .model) by formula (mutation testing, issue #18).

Data are chosen so nothing cancels: soft labels with ``sum (1 - y) d != 0``, a prior scale and a rating noise both
different from 1 (and from each other), designs without symmetry.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import sparse

import sim.reward_models.model as model
from sim.errors import ConfigError
from sim.reward_models.fit import (
    bt_hessian,
    bt_log_likelihood,
    bt_objective,
    fit_bt,
    fit_pl,
    fit_ratings,
    pl_hessian,
    pl_log_likelihood,
    pl_objective,
    ratings_hessian,
)


def _log_s(x: float) -> float:
    return -math.log1p(math.exp(-x))


R = np.array([0.3, -1.2, 2.0, 0.7])
PAIRS = np.array([[0, 1], [2, 0], [3, 2], [1, 3], [0, 3]])
Y = np.array([1.0, 0.5, 0.0, 0.25, 0.75])


def test_bt_log_likelihood_by_hand_with_soft_labels():
    d = R[PAIRS[:, 0]] - R[PAIRS[:, 1]]  # 1.5, 1.7, -1.3, -1.9, -0.4
    assert abs((1 - Y) @ d) > 0.5  # log s(-d) = log s(d) - d: a sign error in the second term would show
    want = sum(y * _log_s(x) + (1 - y) * _log_s(-x) for y, x in zip(Y, d, strict=True))
    assert bt_log_likelihood(R, PAIRS, Y) == pytest.approx(want, rel=1e-13)
    assert want == pytest.approx(-2.887610, abs=1e-6)


@pytest.mark.parametrize("as_sparse", [False, True])
def test_bt_objective_value_and_gradient_by_hand(as_sparse):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(4, 3))
    Z = X[PAIRS[:, 0]] - X[PAIRS[:, 1]]
    theta = np.array([0.4, -0.9, 1.3])
    s, m = 0.7, len(Y)
    d = Z @ theta
    nll = -sum(y * _log_s(x) + (1 - y) * _log_s(-x) for y, x in zip(Y, d, strict=True))
    want = nll / m + theta @ theta / (2 * s**2 * m)
    grad = Z.T @ (1 / (1 + np.exp(-d)) - Y) / m + theta / (s**2 * m)
    f, g = bt_objective(theta, sparse.csr_matrix(Z) if as_sparse else Z, Y, s)
    assert f == pytest.approx(want, rel=1e-13)
    np.testing.assert_allclose(g, grad, rtol=1e-12)


def test_fit_bt_is_the_stationary_point_from_any_start():
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(30, 4))
    y = rng.choice([0.0, 0.25, 0.5, 1.0], size=30)
    theta = fit_bt(Z, y, prior_scale=0.6)
    _, g = bt_objective(theta, Z, y, 0.6)
    assert np.abs(g).max() < 1e-6
    assert np.abs(theta).max() > 0.05
    np.testing.assert_allclose(fit_bt(Z, y, 0.6, theta0=np.full(4, 3.0)), theta, atol=1e-5)
    np.testing.assert_allclose(fit_bt(sparse.csr_matrix(Z), y, 0.6), theta, atol=1e-5)
    # the default prior scale is 1
    default = fit_bt(Z, y)
    assert np.abs(bt_objective(default, Z, y, 1.0)[1]).max() < 1e-6 and np.abs(default - theta).max() > 1e-3
    # a list of labels is accepted as a float array
    np.testing.assert_allclose(fit_bt(Z, list(y), 0.6), theta, atol=1e-9)
    # maxiter bounds the optimiser's iterations, and theta0 is where it starts: one step from two starts differs
    one = fit_bt(Z, y, 0.6, maxiter=1)
    assert np.abs(one - theta).max() > 1e-3
    assert np.abs(fit_bt(Z, y, 0.6, maxiter=1, theta0=np.full(4, 3.0)) - one).max() > 1e-3


def test_plackett_luce_by_hand():
    u = np.array([0.5, -0.3, 1.1, 0.2])
    rankings = np.array([[2, 0, 1], [1, 3, 0]])
    lse = lambda *xs: math.log(sum(math.exp(x) for x in xs))  # noqa: E731
    want = (u[2] - lse(u[2], u[0], u[1])) + (u[0] - lse(u[0], u[1]))
    want += (u[1] - lse(u[1], u[3], u[0])) + (u[3] - lse(u[3], u[0]))
    assert pl_log_likelihood(u, rankings) == pytest.approx(want, rel=1e-13)
    X = np.array([[1.0, 0.0], [0.5, -1.0], [0.0, 2.0], [1.5, 0.5]])
    theta = np.array([0.8, -0.35])
    s = 1.7
    f, g = pl_objective(theta, sparse.csr_matrix(X), rankings, s)
    assert f == pytest.approx(-pl_log_likelihood(X @ theta, rankings) / 2 + theta @ theta / (2 * s**2 * 2), rel=1e-13)
    eps = 1e-6
    fd = [(pl_objective(theta + e, X, rankings, s)[0] - pl_objective(theta - e, X, rankings, s)[0]) / (2 * eps)
          for e in np.eye(2) * eps]  # fmt: skip
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_fit_pl_is_the_stationary_point():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(10, 3))
    rankings = np.array([rng.permutation(10)[:3] for _ in range(40)])
    theta = fit_pl(X, rankings, prior_scale=0.8)
    assert np.abs(pl_objective(theta, X, rankings, 0.8)[1]).max() < 1e-6
    np.testing.assert_allclose(fit_pl(sparse.csr_matrix(X), rankings, 0.8), theta, atol=1e-5)
    # the default prior scale is 1
    default = fit_pl(X, rankings)
    assert np.abs(pl_objective(default, X, rankings, 1.0)[1]).max() < 1e-6
    assert np.abs(default - fit_pl(X, rankings, 2.0)).max() > 1e-3


@pytest.mark.parametrize("as_sparse", [False, True])
def test_fit_ratings_is_the_ridge_solution_with_a_prior(as_sparse):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(25, 4))
    r = X @ np.array([1.0, -2.0, 0.5, 3.0]) + rng.normal(size=25)
    s, sigma = 0.3, 1.7  # the prior matters: 1 / s^2 = 11 against X^T X / sigma^2 ~ 9 per coordinate
    want = np.linalg.solve(X.T @ X / sigma**2 + np.eye(4) / s**2, X.T @ r / sigma**2)
    got = fit_ratings(sparse.csr_matrix(X) if as_sparse else X, r, prior_scale=s, sigma=sigma)
    assert type(got) is np.ndarray and got.shape == (4,)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # the default rating noise and prior scale are 1
    one = np.linalg.solve(X.T @ X + np.eye(4) / s**2, X.T @ r)
    np.testing.assert_allclose(fit_ratings(sparse.csr_matrix(X) if as_sparse else X, r, s), one, rtol=1e-10)
    unit = np.linalg.solve(X.T @ X + np.eye(4), X.T @ r)
    np.testing.assert_allclose(fit_ratings(sparse.csr_matrix(X) if as_sparse else X, r), unit, rtol=1e-10)
    assert np.linalg.norm(want - np.linalg.lstsq(X, r, rcond=None)[0]) > 0.5


@pytest.mark.parametrize("as_sparse", [False, True])
def test_ratings_hessian_is_the_posterior_precision(as_sparse):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(12, 3))
    s, sigma = 0.6, 1.4
    H = ratings_hessian(sparse.csr_matrix(X) if as_sparse else X, s, sigma)
    assert type(H) is np.ndarray
    np.testing.assert_allclose(H, X.T @ X / sigma**2 + np.eye(3) / s**2, rtol=1e-12)


@pytest.mark.parametrize("as_sparse", [False, True])
def test_bt_hessian_by_hand(as_sparse):
    rng = np.random.default_rng(9)
    Z = rng.normal(size=(15, 3))
    theta = np.array([0.7, -0.4, 1.1])
    p = 1 / (1 + np.exp(-Z @ theta))
    want = (Z * (p * (1 - p))[:, None]).T @ Z + np.eye(3) / 0.8**2
    H = bt_hessian(theta, sparse.csr_matrix(Z) if as_sparse else Z, 0.8)
    assert type(H) is np.ndarray
    np.testing.assert_allclose(H, want, rtol=1e-12)


def test_pl_hessian_of_two_item_rankings_is_the_bt_hessian():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(8, 3))
    rankings = np.array([rng.permutation(8)[:2] for _ in range(20)])
    theta = np.array([0.5, -1.0, 0.3])
    Z = X[rankings[:, 0]] - X[rankings[:, 1]]
    H = pl_hessian(theta, X, rankings, 1.3)
    np.testing.assert_allclose(H, bt_hessian(theta, Z, 1.3), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(H, H.T)


# --- sim.reward_models.model -----------------------------------------------------------------------------------------

PREDS = np.array([[1.0, 2.0, 3.0, 10.0], [2.0, 4.0, 6.0, 0.0], [0.0, 1.0, 5.0, 3.0]])
POOL = np.array([[1.0, 3.0], [2.0, 6.0], [0.0, 4.0]])  # member means 2, 4, 2; population sds 1, 2, 2


def test_combine_by_hand_with_its_default_lambda_and_degenerate_scales():
    z = np.array([[-1.0, 0.0, 1.0, 8.0], [-1.0, 0.0, 1.0, -2.0], [-1.0, -0.5, 1.5, 0.5]])  # (r - mu_i) / sd_i
    mu, sd = 8 / 3, 5 / 3  # the ensemble mean on the pool, [1, 13/3]: its mean and population sd
    np.testing.assert_allclose(model.combine(PREDS, POOL, "mean"), mu + sd * z.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(model.combine(PREDS, POOL, "wco"), mu + sd * z.min(axis=0), rtol=1e-14)
    # uwo's default lambda is 1: the last sequence's z = 8, -2, 0.5 has mean 6.5/3 and population variance 17.1667
    want = mu + sd * (6.5 / 3 - np.var([8.0, -2.0, 0.5]))
    assert model.combine(PREDS, POOL, "uwo")[3] == pytest.approx(want, rel=1e-14)
    # a member constant on the pool keeps its offsets (sd 1); an ensemble mean constant on the pool keeps scale 1
    preds, pool = np.array([[1.0, 4.0], [3.0, -1.0]]), np.array([[2.0, 2.0], [0.0, 2.0]])
    # member 0: mu 2, sd 0 -> 1: z = -1, 2; member 1: mu 1, sd 1: z = 2, -2; mean z = 0.5, 0; avg pool = [1, 2]
    np.testing.assert_allclose(model.combine(preds, pool, "mean"), 1.5 + 0.5 * np.array([0.5, 0.0]), rtol=1e-14)
    # a member whose sd on the pool is below 1 is divided by it: member 1's pool [0, 1] has sd 1/2
    small = model.combine(np.array([[1.0, 4.0], [1.0, 0.0]]), np.array([[2.0, 2.0], [0.0, 1.0]]), "mean")
    # z = [-1, 2] and [(1 - 0.5) / 0.5, (0 - 0.5) / 0.5] = [1, -1]; mean z = [0, 0.5]; avg pool [1, 1.5]: 1.25, 0.25
    np.testing.assert_allclose(small, 1.25 + 0.25 * np.array([0.0, 0.5]), rtol=1e-14)
    flat = np.array([[2.0, 0.0], [0.0, 2.0]])  # both members: mu 1, sd 1; z = [0, 3] and [2, -2]
    # the average on the pool is [1, 1]: sd 0 -> scale 1, around 1; wco = 1 + min z
    np.testing.assert_allclose(model.combine(preds, flat, "wco"), 1.0 + np.array([0.0, -2.0]), rtol=1e-14)
    with pytest.raises(ConfigError) as err:
        model.combine(PREDS, POOL, "median")
    assert (err.value.field, err.value.value) == ("reward_model.objective", "median")
    assert err.value.allowed == "one of ['mean', 'wco', 'uwo']"


def _rm_world():
    from sim.feedback import collect, make_teacher
    from sim.oracle import make_oracle
    from sim.reference import make_reference
    from sim.worlds import EnumeratedWorld

    w = EnumeratedWorld(2, 3, 3)
    w.ref = make_reference(w, "softmax", np.random.default_rng(3))
    o = make_oracle(w, "linear", seed=2)
    source = w.sequence_source(w.ref)
    rng = np.random.default_rng(4)
    teacher = make_teacher(w, o.reward, source, rng, rationality=1.5, sigma=0.6)
    data = {kind: collect(teacher, source, np.arange(2), kind, 40, rng, 3) for kind in ("preferences", "ratings")}
    data["rankings"] = collect(teacher, source, np.arange(2), "rankings", 30, rng, 3)
    return w, data


@pytest.fixture(scope="module")
def rm_world():
    return _rm_world()


TEMPLATES = ("unigram", "prompt")
TEMPLATE_NAMES = ("unigram", "position", "bigram", "prompt", "length", "hashed")


def test_an_ensemble_is_the_mean_of_bootstrap_fits_and_pays_mean_minus_k_sample_sd(rm_world):
    w, data = rm_world
    d = data["preferences"]
    rm = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, ensemble=3, pessimism=1.5, rng=np.random.default_rng(7))
    X = model.design(w, "linear", rm.features, d.pool)
    rng = np.random.default_rng(7)
    members = [model.map_fit(X, d.subset(rng.integers(0, d.n, d.n)), 0.8) for _ in range(3)]
    assert len(rm.members) == 3
    for got, want in zip(rm.members, members, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.abs(members[0] - members[1]).max() > 0.05  # the resamples differ
    np.testing.assert_allclose(rm.theta, np.mean(members, axis=0), rtol=1e-12)
    every = w.all_sequences()
    Xa = model.design(w, "linear", rm.features, every)
    preds = np.stack([Xa @ m for m in members])
    np.testing.assert_allclose(rm.predict(every), preds.mean(axis=0), rtol=1e-12)
    want = preds.mean(axis=0) - 1.5 * preds.std(axis=0, ddof=1)
    np.testing.assert_allclose(w.sequence_returns(rm.reward, every), want, rtol=1e-10, atol=1e-12)
    assert rm.covariance is None
    # without a generator the bootstrap draws from default_rng(0)
    again = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, ensemble=3, pessimism=1.5)
    rng0 = np.random.default_rng(0)
    first = model.map_fit(X, d.subset(rng0.integers(0, d.n, d.n)), 0.8)
    np.testing.assert_allclose(again.members[0], first, rtol=1e-12)


def test_an_ensemble_objective_pays_the_combination_of_its_members(rm_world):
    w, data = rm_world
    d = data["preferences"]
    every = w.all_sequences()
    for objective, lam in (("wco", 1.0), ("uwo", 2.5)):
        rm = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, ensemble=3, rng=np.random.default_rng(7),
                                    objective=objective, uwo_lambda=lam)  # fmt: skip
        X, Xa = (model.design(w, "linear", rm.features, s) for s in (d.pool, every))
        preds, pool = np.stack([Xa @ m for m in rm.members]), np.stack([X @ m for m in rm.members])
        want = model.combine(preds, pool, objective, lam)
        np.testing.assert_allclose(w.sequence_returns(rm.reward, every), want, rtol=1e-10, atol=1e-12)
        assert np.abs(want - preds.mean(axis=0)).max() > 0.01  # not the plain mean
        # with pessimism the combination is the centre
        pess = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, ensemble=3, pessimism=0.5,
                                      rng=np.random.default_rng(7), objective=objective, uwo_lambda=lam)  # fmt: skip
        np.testing.assert_allclose(
            w.sequence_returns(pess.reward, every), want - 0.5 * preds.std(axis=0, ddof=1), rtol=1e-10, atol=1e-12
        )
    # two members are an ensemble too
    two = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, ensemble=2, rng=np.random.default_rng(7),
                                 objective="wco")  # fmt: skip
    X, Xa = (model.design(w, "linear", two.features, s) for s in (d.pool, every))
    preds, pool = np.stack([Xa @ m for m in two.members]), np.stack([X @ m for m in two.members])
    np.testing.assert_allclose(w.sequence_returns(two.reward, every), model.combine(preds, pool, "wco"), rtol=1e-10)
    assert np.abs(model.combine(preds, pool, "wco") - preds.mean(axis=0)).max() > 0.01
    # a single model has nothing to combine: any objective is its dense linear reward
    one = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, objective="wco")
    np.testing.assert_allclose(w.table(one.reward), one.features.table_values(one.theta), rtol=1e-13)


def test_model_refusals_name_the_key():
    w, data = _rm_world()
    d = data["preferences"]
    for kw, field, allowed in (
        ({"objective": "max"}, "reward_model.objective", "one of ['mean', 'wco', 'uwo']"),
        ({"ranking_likelihood": "borda"}, "reward_model.ranking_likelihood", "one of ['plackett_luce', 'pairs']"),
        ({"name": "forest"}, "reward_model.name", "one of ['tabular', 'linear']"),
        ({"templates": ["trigram"]}, "reward_model.templates", "template names in " + str(list(TEMPLATE_NAMES))),
    ):
        with pytest.raises(ConfigError) as err:
            model.fit_reward_model(w, d, **kw)
        assert (err.value.field, err.value.allowed) == (field, allowed)
        assert err.value.value == next(iter(kw.values())) or err.value.value == "trigram"
    with pytest.raises(ConfigError) as err:
        model.map_fit(np.eye(3), model.FeedbackData("scores", d.pool, d.items, d.labels, d.covered), 1.0)
    assert (err.value.field, err.value.value) == ("feedback.kind", "scores")
    assert err.value.allowed == "one of ['preferences', 'ratings', 'rankings']"


def test_map_fit_and_laplace_covariance_of_each_kind(rm_world):
    w, data = rm_world
    X = model.design(w, "linear", model.FeatureMap(w, TEMPLATES), w.all_sequences())
    s, sigma = 0.7, 1.3
    for kind, d in data.items():
        Xp = model.design(w, "linear", model.FeatureMap(w, TEMPLATES), d.pool)
        theta = model.map_fit(Xp, d, s, sigma, 1e-10)
        if kind == "preferences":
            Z = Xp[d.items[:, 0]] - Xp[d.items[:, 1]]
            want, H = fit_bt(Z, d.labels, s, 1e-10), bt_hessian(theta, Z, s)
        elif kind == "rankings":
            want, H = fit_pl(Xp, d.items, s, 1e-10), pl_hessian(theta, Xp, d.items, s)
        else:
            want = fit_ratings(Xp[d.items[:, 0]], d.labels, s, sigma)
            H = ratings_hessian(Xp[d.items[:, 0]], s, sigma)
        np.testing.assert_allclose(theta, want, rtol=1e-8, atol=1e-10)
        cov = model.laplace_covariance(Xp, d, theta, s, sigma)
        if kind == "rankings":  # central differences of the gradient
            np.testing.assert_allclose(cov, np.linalg.inv(H), rtol=1e-8)
        else:  # analytic: the same numbers (a pair as a two-item ranking would differ by the differencing error)
            np.testing.assert_array_equal(cov, np.linalg.inv(H))
    assert X.shape[1] == 3 + 6
    r = data["ratings"]
    Xr = model.design(w, "linear", model.FeatureMap(w, TEMPLATES), r.pool)
    # the rating noise defaults to 1
    np.testing.assert_allclose(model.map_fit(Xr, r, s), fit_ratings(Xr[r.items[:, 0]], r.labels, s, 1.0), rtol=1e-12)


def test_split_rankings_keep_their_order_pool_and_coverage():
    from sim.worlds import EnumeratedWorld

    pool = EnumeratedWorld(2, 3, 3).all_sequences()
    covered = np.array([1])
    items = np.array([[4, 2, 7], [1, 0, 3]])
    pairs = model.rankings_to_pairs(model.FeedbackData("rankings", pool, items, None, covered))
    np.testing.assert_array_equal(pairs.items, [[4, 2], [4, 7], [2, 7], [1, 0], [1, 3], [0, 3]])
    assert pairs.kind == "preferences" and pairs.pool is pool and pairs.covered is covered
    assert pairs.labels.dtype == np.float64 and np.all(pairs.labels == 1.0) and pairs.labels.shape == (6,)


def test_tabular_laplace_inverts_up_to_max_tabular_laplace_sequences(rm_world, monkeypatch):
    w, data = rm_world
    d = data["preferences"]
    seen = np.unique(w.sequence_ids(d.pool)[d.items]).size
    theta = model.map_fit(model.design(w, "tabular", None, d.pool), d, 0.9)
    monkeypatch.setattr(model, "MAX_TABULAR_LAPLACE", seen)
    std = model.tabular_laplace_std(w, d, theta, 0.9, 1.0)  # at the bound: inverted
    assert std.shape == theta.shape and np.sum(std == 0.9) == theta.size - seen
    monkeypatch.setattr(model, "MAX_TABULAR_LAPLACE", seen - 1)
    with pytest.raises(ConfigError) as err:
        model.tabular_laplace_std(w, d, theta, 0.9, 1.0)
    assert (err.value.field, err.value.value) == ("reward_model.pessimism", "tabular Laplace")
    assert err.value.allowed == (
        f"a tabular model's Laplace posterior over at most {seen - 1} sequences in the data (these data name {seen}); "
        "use reward_model.ensemble >= 2, a linear model, or fewer labels"
    )


def test_feature_hash_has_its_shape_whatever_buckets_the_features_fall_in():
    P = model.feature_hash(3, 50)  # 3 features cannot fill 50 buckets: the shape is still (D, d)
    assert P.shape == (3, 50) and P.nnz == 3
    rng = np.random.default_rng([3, 50])
    cols = rng.integers(0, 50, size=3)
    signs = rng.choice(np.array([-1.0, 1.0]), size=3)
    np.testing.assert_array_equal(P.toarray()[np.arange(3), cols], signs)


def test_fit_reward_model_defaults(rm_world):
    w, data = rm_world
    d = data["preferences"]
    default = model.fit_reward_model(w, d)  # linear over unigram, position, bigram, prompt
    assert default.name == "linear" and default.features.templates == ("unigram", "position", "bigram", "prompt")
    assert len(default.members) == 1 and default.members[0] is default.theta
    r = data["ratings"]
    rated = model.fit_reward_model(w, r, "linear", TEMPLATES, 0.8)  # rating noise 1 by default
    X = model.design(w, "linear", rated.features, r.pool)
    np.testing.assert_allclose(rated.theta, fit_ratings(X[r.items[:, 0]], r.labels, 0.8, 1.0), rtol=1e-12)
    assert np.abs(rated.theta - fit_ratings(X[r.items[:, 0]], r.labels, 0.8, 2.0)).max() > 1e-3
    uwo = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, ensemble=3, rng=np.random.default_rng(7),
                                 objective="uwo")  # fmt: skip
    every = w.all_sequences()
    Xp, Xa = (model.design(w, "linear", uwo.features, s) for s in (d.pool, every))
    want = model.combine(np.stack([Xa @ m for m in uwo.members]), np.stack([Xp @ m for m in uwo.members]), "uwo", 1.0)
    np.testing.assert_allclose(w.sequence_returns(uwo.reward, every), want, rtol=1e-10, atol=1e-12)


def test_fit_reward_model_passes_its_settings_to_every_fit(rm_world):
    w, data = rm_world
    fm = model.FeatureMap(w, TEMPLATES)
    # preferences: the tolerance reaches the single fit and each bootstrap fit (1e-10 and the default 1e-6 differ)
    d = data["preferences"]
    X = model.design(w, "linear", fm, d.pool)
    one = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, tol=1e-10)
    np.testing.assert_allclose(one.theta, model.map_fit(X, d, 0.8, 1.0, 1e-10), rtol=1e-13)
    assert np.abs(model.map_fit(X, d, 0.8, 1.0, 1e-10) - model.map_fit(X, d, 0.8)).max() > 1e-9
    ens = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, ensemble=2, tol=1e-10, rng=np.random.default_rng(9))
    rng = np.random.default_rng(9)
    for m in ens.members:
        np.testing.assert_allclose(
            m, model.map_fit(X, d.subset(rng.integers(0, d.n, d.n)), 0.8, 1.0, 1e-10), rtol=1e-13
        )
    # ratings: the rating noise reaches the bootstrap fits too
    r = data["ratings"]
    Xr = model.design(w, "linear", fm, r.pool)
    ens = model.fit_reward_model(
        w, r, "linear", TEMPLATES, 0.8, ensemble=2, rating_sigma=1.7, rng=np.random.default_rng(9)
    )
    rng = np.random.default_rng(9)
    for m in ens.members:
        sub = r.subset(rng.integers(0, r.n, r.n))
        np.testing.assert_allclose(m, fit_ratings(Xr[sub.items[:, 0]], sub.labels, 0.8, 1.7), rtol=1e-12)
    # rankings: Plackett-Luce by default, Bradley-Terry on the split pairs with ranking_likelihood=pairs
    k = data["rankings"]
    Xk = model.design(w, "linear", fm, k.pool)
    pl = model.fit_reward_model(w, k, "linear", TEMPLATES, 0.8, tol=1e-10)
    np.testing.assert_allclose(pl.theta, fit_pl(Xk, k.items, 0.8, 1e-10), rtol=1e-12)
    split = model.fit_reward_model(w, k, "linear", TEMPLATES, 0.8, tol=1e-10, ranking_likelihood="pairs")
    pairs = model.rankings_to_pairs(k)
    Z = Xk[pairs.items[:, 0]] - Xk[pairs.items[:, 1]]
    np.testing.assert_allclose(split.theta, fit_bt(Z, pairs.labels, 0.8, 1e-10), rtol=1e-12)
    assert np.abs(split.theta - pl.theta).max() > 1e-3


def test_a_capacity_of_one_parameter_is_hashed(rm_world):
    w, data = rm_world
    d = data["preferences"]
    rm = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, dim=1)
    P = model.feature_hash(9, 1)
    X = model.design(w, "linear", model.FeatureMap(w, TEMPLATES), d.pool) @ P
    np.testing.assert_allclose(rm.theta, P @ model.map_fit(X.tocsr(), d, 0.8), rtol=1e-12)
    assert np.abs(rm.theta).min() == pytest.approx(np.abs(rm.theta).max(), rel=1e-12)  # one value, signed per feature


def test_pessimism_of_two_members_and_of_ratings_posteriors(rm_world, monkeypatch):
    w, data = rm_world
    every = w.all_sequences()
    d = data["preferences"]
    two = model.fit_reward_model(
        w, d, "linear", TEMPLATES, 0.8, ensemble=2, pessimism=0.5, rng=np.random.default_rng(9)
    )
    Xa = model.design(w, "linear", two.features, every)
    preds = np.stack([Xa @ m for m in two.members])
    want = preds.mean(axis=0) - 0.5 * preds.std(axis=0, ddof=1)
    np.testing.assert_allclose(w.sequence_returns(two.reward, every), want, rtol=1e-10, atol=1e-12)
    assert two.covariance is None
    # ratings: the Laplace posterior of a linear and of a tabular model has the rating noise in it
    r = data["ratings"]
    lin = model.fit_reward_model(w, r, "linear", TEMPLATES, 0.8, pessimism=1.0, rating_sigma=1.7)
    Xr = model.design(w, "linear", lin.features, r.pool)
    np.testing.assert_allclose(lin.covariance, np.linalg.inv(ratings_hessian(Xr[r.items[:, 0]], 0.8, 1.7)), rtol=1e-12)
    tab = model.fit_reward_model(w, r, "tabular", prior_scale=0.8, pessimism=1.0, rating_sigma=1.7)
    std = model.tabular_laplace_std(w, r, tab.theta, 0.8, 1.7)
    assert np.abs(std - model.tabular_laplace_std(w, r, tab.theta, 0.8, 1.0)).max() > 1e-3
    Xt = model.design(w, "tabular", None, every)
    np.testing.assert_allclose(w.sequence_returns(tab.reward, every), Xt @ tab.theta - std, rtol=1e-10, atol=1e-12)
    # without pessimism a tabular model needs no posterior: nothing to invert, whatever the data's size
    monkeypatch.setattr(model, "MAX_TABULAR_LAPLACE", 1)
    plain = model.fit_reward_model(w, r, "tabular", prior_scale=0.8, rating_sigma=1.7)
    np.testing.assert_allclose(w.sequence_returns(plain.reward, every), Xt @ plain.theta, rtol=1e-10, atol=1e-12)


def test_a_hashed_ensemble_reports_its_members_and_their_mean_over_the_features(rm_world):
    w, data = rm_world
    d = data["preferences"]
    P = model.feature_hash(9, 4)
    X = (model.design(w, "linear", model.FeatureMap(w, TEMPLATES), d.pool) @ P).tocsr()
    rng = np.random.default_rng(9)
    reduced = [model.map_fit(X, d.subset(rng.integers(0, d.n, d.n)), 0.8) for _ in range(2)]
    rm = model.fit_reward_model(w, d, "linear", TEMPLATES, 0.8, ensemble=2, rng=np.random.default_rng(9), dim=4)
    assert len(rm.members) == 2
    for got, m in zip(rm.members, reduced, strict=True):
        np.testing.assert_allclose(got, P @ m, rtol=1e-12)
    assert rm.theta.shape == (9,)
    np.testing.assert_allclose(rm.theta, P @ (reduced[0] + reduced[1]) / 2, rtol=1e-12)
    assert np.abs(reduced[0] - reduced[1]).max() > 0.05
