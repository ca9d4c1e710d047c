"""MAP fits of reward models: maximise ``log Pr(D | phi) + log Pr(phi)`` with a Gaussian prior.

Every model here is linear in its parameters: the predicted return of sequence ``i`` is ``X[i] @ theta`` (a
tabular model has ``X = I``). Objectives are divided by the number of labels ``m`` (as scikit-learn does, so
the stopping rule means the same), which leaves the minimiser unchanged:

* Bradley-Terry with soft labels ``y`` on pair differences ``Z = X[i] - X[j]``, ``delta = Z theta``:
  ``f = -(1/m) sum [y log s(delta) + (1 - y) log s(-delta)] + |theta|^2 / (2 s^2 m)``,
  ``grad = Z^T (sigmoid(delta) - y) / m + theta / (s^2 m)``;
* Plackett-Luce on rankings ``(a_1 > ... > a_k)``: ``-log P = -sum_j [u_j - logsumexp_{l >= j} u_l]``;
* Gaussian ratings ``r ~ N(X theta, sigma^2)``: ridge regression, solved exactly.

Fits use ``scipy.optimize.minimize(method="L-BFGS-B")`` with the fused loss-and-gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import expit, log_expit, logsumexp

Matrix = Any  # a dense ndarray or a scipy.sparse matrix


def bt_objective(
    theta: np.ndarray, Z: Matrix, y: np.ndarray, prior_scale: float, Zt: Matrix | None = None
) -> tuple[float, np.ndarray]:
    """Mean negative Bradley-Terry log posterior and its gradient.

    Args:
        theta: (D,) parameters.
        Z: (m, D) pair differences ``X[i] - X[j]``.
        y: (m,) probability that ``i`` is preferred (0, 1/2, 1 or any value in [0, 1]).
        prior_scale: prior standard deviation ``s``.
        Zt: ``Z.T``, formed once by a caller that evaluates many ``theta`` (a sparse transpose is a new matrix
            object each time: a tenth of a small fit's time).
    """
    m = y.size
    delta = Z @ theta
    ls = log_expit(delta)
    # y log s(d) + (1 - y) log s(-d) = log s(d) - (1 - y) d
    loss = -(ls.sum() - (1.0 - y) @ delta) / m
    lam = 1.0 / (prior_scale**2 * m)
    resid = np.exp(ls)
    resid -= y
    grad = (Z.T if Zt is None else Zt) @ resid
    grad /= m
    grad += lam * theta
    return float(loss + 0.5 * lam * (theta @ theta)), grad


def bt_log_likelihood(returns: np.ndarray, pairs: np.ndarray, y: np.ndarray) -> float:
    """``sum_k y_k log s(R_i - R_j) + (1 - y_k) log s(R_j - R_i)`` for predicted returns ``R``."""
    d = returns[pairs[:, 0]] - returns[pairs[:, 1]]
    return float(y @ log_expit(d) + (1 - y) @ log_expit(-d))


def _lbfgs(fun, theta0: np.ndarray, tol: float, maxiter: int) -> np.ndarray:
    from scipy import optimize  # here, not at the top: it adds ~0.2 s to every process's start

    res = optimize.minimize(
        fun,
        theta0,
        method="L-BFGS-B",
        jac=True,
        options={"maxiter": maxiter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    return res.x


def fit_bt(
    Z: Matrix,
    y: np.ndarray,
    prior_scale: float = 1.0,
    tol: float = 1e-6,
    maxiter: int = 15000,
    theta0: np.ndarray | None = None,
) -> np.ndarray:
    """MAP Bradley-Terry weights (D,) from pair differences ``Z`` (m, D) and labels ``y`` (m,)."""
    Z = Z.tocsr() if sparse.issparse(Z) else np.ascontiguousarray(Z, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    theta0 = np.zeros(Z.shape[1]) if theta0 is None else theta0
    Zt = Z.T
    return _lbfgs(lambda t: bt_objective(t, Z, y, prior_scale, Zt), theta0, tol, maxiter)


def pl_objective(theta: np.ndarray, X: Matrix, rankings: np.ndarray, prior_scale: float) -> tuple[float, np.ndarray]:
    """Mean negative Plackett-Luce log posterior and gradient.

    Args:
        X: (n_seq, D) design.
        rankings: (m, k) sequence ids, best first.
    """
    m, k = rankings.shape
    Xr = X[rankings.ravel()]
    u = (Xr @ theta).reshape(m, k)
    # suffix log-sum-exp: L[:, j] = logsumexp(u[:, j:])
    L = np.logaddexp.accumulate(u[:, ::-1], axis=1)[:, ::-1]
    nll = (L[:, :-1] - u[:, :-1]).sum()  # the last term is always 0
    # d(-log P)/du_l = -1[l < k-1] + sum_{j <= l, j < k-1} exp(u_l - L_j)
    W = np.exp(u[:, None, :] - L[:, :-1, None])  # (m, k-1, k): softmax of suffix j at l
    W *= np.triu(np.ones((k - 1, k)))[None]
    g = W.sum(axis=1)
    g[:, :-1] -= 1.0
    lam = 1.0 / (prior_scale**2 * m)
    grad = Xr.T @ g.ravel() / m + lam * theta
    return float(nll / m + 0.5 * lam * (theta @ theta)), grad


def pl_log_likelihood(returns: np.ndarray, rankings: np.ndarray) -> float:
    """``sum_rankings sum_j [R(a_j) - logsumexp_{l >= j} R(a_l)]``."""
    u = returns[rankings]
    return float(sum((u[:, j] - logsumexp(u[:, j:], axis=1)).sum() for j in range(u.shape[1] - 1)))


def fit_pl(
    X: Matrix, rankings: np.ndarray, prior_scale: float = 1.0, tol: float = 1e-6, maxiter: int = 15000
) -> np.ndarray:
    """MAP Plackett-Luce weights (D,)."""
    X = X.tocsr() if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
    return _lbfgs(lambda t: pl_objective(t, X, rankings, prior_scale), np.zeros(X.shape[1]), tol, maxiter)


def fit_ratings(X: Matrix, ratings: np.ndarray, prior_scale: float = 1.0, sigma: float = 1.0) -> np.ndarray:
    """MAP weights under ``r ~ N(X theta, sigma^2)``, ``theta ~ N(0, s^2 I)``: exact ridge solution."""
    A = (X.T @ X) / sigma**2
    b = X.T @ ratings / sigma**2
    if sparse.issparse(A):
        A = (A + sparse.identity(A.shape[0]) / prior_scale**2).tocsc()
        from scipy.sparse.linalg import spsolve

        return np.asarray(spsolve(A, b)).ravel()
    return np.linalg.solve(A + np.eye(A.shape[0]) / prior_scale**2, b)


def bt_hessian(theta: np.ndarray, Z: Matrix, prior_scale: float) -> np.ndarray:
    """Hessian (D, D) of the *total* negative BT log posterior: ``Z^T W Z + I / s^2``."""
    p = expit(Z @ theta)
    w = p * (1 - p)
    ZW = Z.multiply(w[:, None]) if sparse.issparse(Z) else Z * w[:, None]
    H = Z.T @ ZW
    H = H.toarray() if sparse.issparse(H) else H
    return H + np.eye(H.shape[0]) / prior_scale**2


def ratings_hessian(X: Matrix, prior_scale: float, sigma: float) -> np.ndarray:
    """Hessian (D, D) of the total negative Gaussian log posterior."""
    H = X.T @ X / sigma**2
    H = H.toarray() if sparse.issparse(H) else H
    return H + np.eye(H.shape[0]) / prior_scale**2


def pl_hessian(theta: np.ndarray, X: Matrix, rankings: np.ndarray, prior_scale: float, eps: float = 1e-6) -> np.ndarray:
    """Hessian of the total negative PL log posterior by central differences of the analytic gradient."""
    m = rankings.shape[0]
    D = theta.size
    H = np.empty((D, D))
    for d in range(D):
        e = np.zeros(D)
        e[d] = eps
        H[:, d] = (
            (
                pl_objective(theta + e, X, rankings, prior_scale)[1]
                - pl_objective(theta - e, X, rankings, prior_scale)[1]
            )
            * m
            / (2 * eps)
        )
    return 0.5 * (H + H.T)
