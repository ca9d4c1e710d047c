"""``bt_fit``: our MAP Bradley-Terry fit vs scikit-learn's lbfgs ``LogisticRegression`` on the same data.

10k pairs x 64 features, labels from a Bradley-Terry teacher; both stop at ``tol`` on the same objective
(scikit-learn's ``C`` equals our prior variance ``s^2``). scikit-learn is a benchmark/test dependency only. Both are
timed in turn, best of :data:`benchmarks.common.REPEATS` (each timing the median of 3 fits; see
:mod:`benchmarks.common`).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from benchmarks.common import REPEATS, best_of, best_ratio, record
from sim.reward_models.fit import fit_bt


def bt_problem(m: int = 10_000, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(m, d))
    theta = rng.normal(size=d) / np.sqrt(d) * 2
    y = (rng.random(m) < expit(Z @ theta)).astype(np.float64)
    return Z, y


def bench_bt_fit(repeats: int = REPEATS, tol: float = 1e-6, prior_scale: float = 1.0) -> dict:
    from sklearn.linear_model import LogisticRegression

    Z, y = bt_problem()

    def sk():
        return LogisticRegression(C=prior_scale**2, fit_intercept=False, solver="lbfgs", tol=tol, max_iter=15000).fit(
            Z, y
        )

    times = best_of({"ours": lambda: fit_bt(Z, y, prior_scale, tol), "sklearn": sk}, repeats, inner=3)
    ratio, per_round = best_ratio(times["ours"], times["sklearn"])
    diff = float(np.abs(fit_bt(Z, y, prior_scale, tol) - sk().coef_.ravel()).max())
    return record(
        "bt_fit",
        ratio,
        1.0,
        "<=",
        ours_s=min(times["ours"]),
        sklearn_s=min(times["sklearn"]),
        repeats=repeats,
        repeat_ratios=per_round,
        max_coef_diff=diff,
        pairs=int(Z.shape[0]),
        features=int(Z.shape[1]),
    )


BENCHMARKS = {"bt_fit": bench_bt_fit}
