"""Shared statistics and drawing for the named experiments."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

CI_LEVEL = 0.95


def mean_ci(values: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% bootstrap (percentile) confidence interval over seeds; a single value is its own CI."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (np.nan, np.nan, np.nan)
    m = float(x.mean())
    if x.size == 1 or np.ptp(x) == 0:
        return (m, m, m)
    res = stats.bootstrap(
        (x,), np.mean, confidence_level=CI_LEVEL, n_resamples=2000, method="percentile", rng=np.random.default_rng(seed)
    )
    return (m, float(res.confidence_interval.low), float(res.confidence_interval.high))


def summarize(df: pd.DataFrame, by: str | list[str], value: str) -> pd.DataFrame:
    """Per group: ``mean``, ``lo``, ``hi`` (95% bootstrap CI over the group's runs) and ``n``."""
    rows = []
    for key, g in df.groupby(by, sort=True, dropna=False):
        m, lo, hi = mean_ci(g[value].to_numpy())
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip([by] if isinstance(by, str) else by, key, strict=True)),
                "mean": m,
                "lo": lo,
                "hi": hi,
                "n": int(g[value].notna().sum()),
            }
        )
    return pd.DataFrame(rows)


def line_ci(ax, x, summary: pd.DataFrame, label: str, **kw) -> None:
    """A mean line with its shaded confidence band."""
    ax.plot(x, summary["mean"], marker="o", ms=3, label=label, **kw)
    ax.fill_between(x, summary["lo"], summary["hi"], alpha=0.2, color=ax.lines[-1].get_color())


def axes(n: int, ax=None, width: float = 4.2, height: float = 3.4):
    """``ax`` if given, else a new row of ``n`` axes (a single Axes when ``n == 1``)."""
    if ax is not None:
        return ax
    fig, axs = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, constrained_layout=True)
    return axs[0, 0] if n == 1 else axs[0]


def subset(df: pd.DataFrame, **equal) -> pd.DataFrame:
    """Rows where each column equals the given value (columns missing from the table are ignored)."""
    mask = np.ones(len(df), dtype=bool)
    for col, val in equal.items():
        if col not in df.columns:
            continue
        numeric = pd.to_numeric(df[col], errors="coerce")
        if isinstance(val, int | float) and not isinstance(val, bool) and numeric.notna().all():
            mask &= np.isclose(numeric.to_numpy(dtype=float), float(val))
        else:
            mask &= df[col].astype(str).to_numpy() == str(val)
    return df[mask]


def column(df: pd.DataFrame, name: str, default):
    """A config column, or the run's default when the sweep did not vary it."""
    return df[name] if name in df.columns else pd.Series(default, index=df.index)


def spearman_trend(x, y) -> tuple[float, float]:
    """Spearman rho and its one-sided p-value for an increasing trend."""
    rho, p = stats.spearmanr(x, y)
    return float(rho), float(p / 2 if rho > 0 else 1 - p / 2)


def normalized_drop(values: np.ndarray) -> float:
    """Normalised drop height: (best value along the path - final value) / (range of the path)."""
    v = np.asarray(values, dtype=float)
    span = v.max() - v.min()
    return 0.0 if span <= 0 else float((v.max() - v[-1]) / span)
