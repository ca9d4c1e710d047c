"""Statistics shared by the rlhf-data experiments (label_noise, feedback_budget, pessimism, ranking_efficiency,
deterministic_preferences): ordered trends over blocked (paired) designs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Trend:
    """An ordered trend across the columns of a blocked table.

    Attributes:
        test: ``"Page L"`` (three or more levels) or ``"Wilcoxon"`` (two levels: the signed-rank test of last - first).
        statistic: the test's statistic.
        p: its one-sided p-value (the trend goes the predicted way).
        effect: mean over blocks of (last level - first level), in the outcome's units.
        blocks: the number of complete blocks.
    """

    test: str
    statistic: float
    p: float
    effect: float
    blocks: int

    def __str__(self) -> str:
        return (
            f"{self.test} = {self.statistic:.4g}, p = {self.p:.3g}, last - first = {self.effect:+.4g} "
            f"({self.blocks} blocks)"
        )


def ordered_trend(wide: pd.DataFrame, increasing: bool = True) -> Trend:
    """Whether the outcome rises (or falls) across the columns of ``wide`` (blocks x ordered levels), blocks paired.

    Page's L test with three or more levels; the one-sided Wilcoxon signed-rank test of last minus first with two.
    Incomplete blocks are dropped.
    """
    wide = wide.dropna()
    x = wide.to_numpy(dtype=float)
    assert x.shape[1] >= 2 and x.shape[0] >= 2, f"a trend needs two levels and two blocks, got {x.shape}"
    sign = 1.0 if increasing else -1.0
    effect = float(np.mean(x[:, -1] - x[:, 0]))
    if x.shape[1] == 2:
        d = sign * (x[:, 1] - x[:, 0])
        if np.all(d == 0):
            return Trend("Wilcoxon", 0.0, 1.0, effect, x.shape[0])
        w = stats.wilcoxon(d, alternative="greater")
        return Trend("Wilcoxon", float(w.statistic), float(w.pvalue), effect, x.shape[0])
    if np.all(np.ptp(x, axis=1) == 0):
        return Trend("Page L", float("nan"), 1.0, effect, x.shape[0])
    res = stats.page_trend_test(sign * x)
    return Trend("Page L", float(res.statistic), float(res.pvalue), effect, x.shape[0])


def wilcoxon_greater(d) -> float:
    """One-sided Wilcoxon signed-rank p-value that ``d`` is centred above 0 (1 when every difference is 0)."""
    d = np.asarray(d, dtype=float)
    return 1.0 if np.all(d == 0) else float(stats.wilcoxon(d, alternative="greater").pvalue)


def paired(wide: pd.DataFrame, a, b) -> tuple[float, float, int]:
    """Column ``a`` minus column ``b`` of a blocked table: (mean difference, one-sided Wilcoxon p that a > b, pairs)."""
    d = (wide[a] - wide[b]).dropna().to_numpy(dtype=float)
    assert d.size >= 2, f"too few pairs of {a} and {b}: {d.size}"
    return float(d.mean()), wilcoxon_greater(d), int(d.size)


def count_label(n: float) -> str:
    """``30``, ``300``, ``3k``, ``10k``: a count for a tick label."""
    n = float(n)
    if n >= 1000 and n % 1000 == 0:
        return f"{n / 1000:g}k"
    return f"{n:g}"


def log_count_axis(ax, values) -> None:
    """A log x axis whose ticks are exactly the swept counts (no minor ticks, no 2 x 10^3 clutter)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ticks = sorted({float(v) for v in values})
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([count_label(v) for v in ticks])
