"""Shared statistics of the optimisation-pressure experiments (``overoptimization``, ``regressional_control``,
``scale_overoptimization``, ``kl_penalty``, ``phase_transition``).

* :func:`paths`: per-seed curves along an optimisation-pressure path, aligned by path step (the same beta, the same
  n, or the same number of training episodes for every seed).
* :func:`peak_drop_test`: does the oracle return fall after a peak? Testing the drop from the mean curve's argmax
  to the end as if that point had been fixed in advance is biased (the argmax of a noisy mean curve sits above its
  neighbours by chance: on a table of shuffled outcomes such a test "finds" a peak). The test here takes the
  largest t statistic of "gain at step k minus gain at the end" over all k and compares it with the same maximum
  under random sign flips of whole seeds, so the choice of k is part of the null distribution.
* :func:`fall_from_best`: per seed, the fall from the best point of its own path to the end (Karwowski et al.'s
  drop height, unnormalised): a statistic to compare conditions seed by seed.
* :func:`form_fits`: Gao et al.'s (2022) two functional forms for the gold-reward gain against
  ``d = sqrt(KL(pi || pi_ref))``, best-of-n ``R(d) = d (a - b d)`` and RL ``R(d) = d (a - b log d)``, each fitted to the
  seed-mean curve at evenly spaced points in ``d``, with R^2 and a bootstrap (over seeds) interval for the R^2
  difference between the two forms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize

#: Gao et al.'s functional forms of the gold-reward gain against d = sqrt(KL).
FORMS = {
    "bon": ("d(a - b d)", lambda x, a, b: x * (a - b * x)),
    "rl": ("d(a - b log d)", lambda x, a, b: x * (a - b * np.log(x))),
}
#: Points, evenly spaced in d, at which the forms are fitted.
FIT_POINTS = 20


def method_of(df: pd.DataFrame) -> pd.Series:
    """The agent of each row (``agent.name`` when the sweep varied it, else the run's ``agent`` metric)."""
    return df["agent.name"] if "agent.name" in df.columns else df["agent"]


def paths(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-seed curves of one set of runs, aligned by path step (truncated to the shortest run).

    Returns:
        ``d``: (K,) seed-mean sqrt(KL); ``dd``: (S, K) per-seed sqrt(KL); ``oracle`` and ``proxy``: (S, K) gains over
        pi_ref; ``seeds``: (S,); ``step``: (K,) the path steps; ``beta``: (K,) when the path has a beta column.
    """
    per_seed = [s.sort_values("step") for _, s in df.groupby("seed")]
    K = min(len(s) for s in per_seed)
    per_seed = [s.head(K) for s in per_seed]
    dd = np.array([np.sqrt(np.maximum(s["kl_to_reference"].to_numpy(dtype=float), 0.0)) for s in per_seed])
    out = {
        "d": dd.mean(axis=0),
        "dd": dd,
        "oracle": np.array([(s["oracle_return"] - s["reference_return"]).to_numpy(dtype=float) for s in per_seed]),
        "proxy": np.array([(s["proxy_return"] - s["reference_proxy_return"]).to_numpy(dtype=float) for s in per_seed]),
        "seeds": np.array([int(s["seed"].iloc[0]) for s in per_seed]),
        "step": per_seed[0]["step"].to_numpy(),
    }
    if "beta" in df.columns:
        out["beta"] = per_seed[0]["beta"].to_numpy(dtype=float)
    return out


def peak_drop_test(oracle: np.ndarray, n_flips: int = 20000, seed: int = 0) -> dict[str, float]:
    """Whether the gain falls from some point of the path to its end, over seeds (rows of ``oracle``, (S, K)).

    ``D[i, k] = oracle[i, k] - oracle[i, -1]``; ``T = max_k t_k``, ``t_k = mean_i D[i, k] / (sd_k / sqrt(S))``. Under
    the null (each seed's drops symmetric about 0), flipping the sign of whole rows leaves the distribution unchanged;
    the p-value is the share of sign patterns (all of them up to 2^16, else ``n_flips`` random ones) with a maximum
    at least ``T``.

    Returns:
        ``k`` (the step of the largest t), ``drop`` (mean ``D[:, k]``), ``drop_sd``, ``t``, ``p``, ``n`` (seeds).
    """
    D = (oracle - oracle[:, -1:])[:, :-1]
    S = D.shape[0]
    sq = (D**2).sum(axis=0)

    def tmax(signs: np.ndarray) -> np.ndarray:
        m = signs @ D / S
        sd = np.sqrt(np.maximum(sq - S * m**2, 0.0) / max(S - 1, 1))
        t = np.where(sd > 1e-12, m / np.where(sd > 1e-12, sd, 1.0) * np.sqrt(S), -np.inf)
        return t.max(axis=-1)

    ones = np.ones((1, S))
    t_obs = float(tmax(ones)[0])
    if S <= 16:
        codes = np.arange(2**S)[:, None] >> np.arange(S) & 1
        signs = 1.0 - 2.0 * codes
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_flips, S))
        signs = np.vstack([ones, signs])
    null = np.concatenate([tmax(signs[i : i + 4096]) for i in range(0, len(signs), 4096)])
    p = float(np.mean(null >= t_obs - 1e-12))
    m = D.mean(axis=0)
    sd = D.std(axis=0, ddof=1) if S > 1 else np.zeros_like(m)
    t = np.where(sd > 1e-12, m / np.where(sd > 1e-12, sd, 1.0) * np.sqrt(S), -np.inf)
    k = int(t.argmax())
    return {"k": k, "drop": float(m[k]), "drop_sd": float(sd[k]), "t": t_obs, "p": p, "n": S}


def fall_from_best(oracle: np.ndarray) -> np.ndarray:
    """Per seed (row): the best gain along its path minus its gain at the end (>= 0; rounding-level falls, below
    1e-9 of the path's scale, count as 0)."""
    fall = oracle.max(axis=1) - oracle[:, -1]
    return np.where(fall > 1e-9 * (1.0 + np.abs(oracle).max(axis=1)), fall, 0.0)


def cross_fitted_drop(oracle: np.ndarray) -> tuple[np.ndarray, int]:
    """Per seed (row), the oracle gain at the peak of the mean curve of the *other* half of the seeds minus its
    gain at the end of the path. Halves alternate rows (row order = seed order).

    Returns:
        ``(drop per seed, the peak index of the full mean curve)``.
    """
    S = oracle.shape[0]
    half = np.arange(S) % 2
    drop = np.empty(S)
    for h in (0, 1):
        other = oracle[half != h] if S > 1 else oracle
        k = int(other.mean(axis=0).argmax())
        drop[half == h] = oracle[half == h, k] - oracle[half == h, -1]
    return drop, int(oracle.mean(axis=0).argmax())


def even_grid(d: np.ndarray, gain: np.ndarray, points: int = FIT_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``gain`` interpolated at ``points`` evenly spaced values of ``d`` in ``(0, max d]`` (``d`` made monotone).

    Every path starts at pi_ref (d = 0, gain 0: the soft optimum at a large beta, best-of-1, or a learner before its
    first update), so the origin is added before interpolating: a learner whose first checkpoint is already at
    d > 0 is not extrapolated flat towards 0."""
    dm = np.maximum.accumulate(np.concatenate([[0.0], np.asarray(d, dtype=float)]))
    grid = np.linspace(0.0, dm[-1], points + 1)[1:]
    return grid, np.interp(grid, dm, np.concatenate([[0.0], np.asarray(gain, dtype=float)]))


def fit_form(form: str, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``(a, b, R^2)`` of one of Gao et al.'s forms (``bon`` or ``rl``); NaNs if it does not fit."""
    f = FORMS[form][1]
    try:
        (a, b), _ = optimize.curve_fit(f, x, y, p0=(1.0, 0.1), maxfev=20000)
    except (RuntimeError, ValueError):
        return np.nan, np.nan, np.nan
    res = y - f(x, a, b)
    tot = float(((y - y.mean()) ** 2).sum())
    return float(a), float(b), float(1.0 - (res @ res) / tot) if tot > 0 else np.nan


def form_fits(
    dd: np.ndarray, oracle: np.ndarray, points: int = FIT_POINTS, n_boot: int = 200, seed: int = 0
) -> dict[str, float]:
    """Both of Gao et al.'s forms fitted to the seed-mean curve (mean d, mean gain per path step) at ``points``
    evenly spaced values of d; and a 95% bootstrap interval over seeds for ``R^2(bon) - R^2(rl)``.

    Returns:
        ``a_bon, b_bon, r2_bon, a_rl, b_rl, r2_rl, dr2, dr2_lo, dr2_hi``.
    """
    out: dict[str, float] = {}
    grid, y = even_grid(dd.mean(axis=0), oracle.mean(axis=0), points)
    for form in FORMS:
        out[f"a_{form}"], out[f"b_{form}"], out[f"r2_{form}"] = fit_form(form, grid, y)
    out["dr2"] = out["r2_bon"] - out["r2_rl"]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, oracle.shape[0], oracle.shape[0])
        g, yb = even_grid(dd[idx].mean(axis=0), oracle[idx].mean(axis=0), points)
        diffs.append(fit_form("bon", g, yb)[2] - fit_form("rl", g, yb)[2])
    out["dr2_lo"], out["dr2_hi"] = (
        (float(v) for v in np.nanpercentile(diffs, [2.5, 97.5])) if diffs else (np.nan, np.nan)
    )
    return out


def form_curve(form: str, a: float, b: float, d_max: float, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The fitted form on ``(0, d_max]`` for drawing."""
    x = np.linspace(d_max / n, d_max, n)
    return x, FORMS[form][1](x, a, b)


def fits_legend(fits: dict[str, float]) -> dict[str, str]:
    """Legend labels for the two fitted forms, with their R^2."""
    return {form: f"fit {FORMS[form][0]}: R$^2$ = {fits[f'r2_{form}']:.3f}" for form in FORMS}


def describe_fits(label: str, fits: dict[str, float]) -> str:
    """One line for a check's output: both forms' R^2 and the bootstrap interval of their difference."""
    return (
        f"{label}: R^2 of d(a - b d) = {fits['r2_bon']:.3f}, of d(a - b log d) = {fits['r2_rl']:.3f}; "
        f"difference {fits['dr2']:+.3f} (95% bootstrap CI over seeds {fits['dr2_lo']:+.3f} to {fits['dr2_hi']:+.3f})"
    )
