"""Pins of the reward-model fits (sim.reward_models.fit) against their formulas (mutation testing, issue #18).

Data are chosen so nothing cancels: soft labels with ``sum (1 - y) d != 0``, a prior scale and a rating noise both
different from 1 (and from each other), designs without symmetry.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import sparse

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
