"""Goodhart prevalence (Karwowski et al. 2023): how often does optimising a proxy at angle alpha hurt?

Each seed draws a new world and a proxy whose linear weights sit at exactly angle alpha from the oracle's. Along
the soft planner's beta path the normalised drop height is (best oracle return on the path - final) / (range on
the path); a Goodhart drop is a drop of more than 1% of the range.
"""

from __future__ import annotations

import numpy as np

from experiments.catalog.common import axes, mean_ci, normalized_drop, spearman_trend

TABLE = "curves"
CLAIM = "no Goodhart drop at alpha = 0; drops become more frequent as the angle grows"
THRESHOLD = 0.01


def drops(table):
    """One row per run: the angle and its normalised drop height."""
    rows = []
    for (alpha, seed), g in table.groupby(["corruption.misspec.angle", "seed"]):
        rows.append(
            {"alpha": float(alpha), "seed": seed, "ndh": normalized_drop(g.sort_values("step")["oracle_return"])}
        )
    import pandas as pd

    return pd.DataFrame(rows)


def plot(table, ax=None):
    d = drops(table)
    axs = axes(2, ax)
    stats_ = [(a, *mean_ci((g["ndh"] > THRESHOLD).astype(float))) for a, g in d.groupby("alpha")]
    a_, m, lo, hi = np.array(stats_).T
    axs[0].plot(a_, m, "o-")
    axs[0].fill_between(a_, lo, hi, alpha=0.2)
    axs[0].set(
        xlabel="angle alpha between proxy and oracle (rad)",
        ylabel="fraction of worlds with a drop",
        title=f"Goodhart prevalence (NDH > {THRESHOLD:g})",
        ylim=(-0.02, 1.02),
    )
    for alpha, g in d.groupby("alpha"):
        axs[1].scatter(np.full(len(g), alpha), g["ndh"], s=8, alpha=0.5)
    axs[1].set(xlabel="angle alpha (rad)", ylabel="normalised drop height", title="drop heights per world")
    return axs


def check(table) -> None:
    d = drops(table)
    at_zero = d[d["alpha"] == 0]["ndh"]
    assert len(at_zero) and at_zero.max() <= 1e-9, f"a Goodhart drop at alpha = 0: NDH up to {at_zero.max():.3g}"
    rho, p = spearman_trend(d["alpha"], (d["ndh"] > THRESHOLD).astype(float))
    assert rho > 0 and p < 0.01, f"drops do not become more frequent with alpha (Spearman {rho:.3f}, p = {p:.3g})"
