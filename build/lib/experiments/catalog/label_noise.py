"""Label noise: what flipped and irrational preference labels cost, for a tabular and a linear reward model.

Sweep: the teacher's flip rate epsilon in [0, 0.5] and rationality (0.5, 2, perfect); the reward model; an exact
planner optimises the fitted model.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from experiments.catalog.common import axes, column, line_ci, spearman_trend, summarize

TABLE = "runs"
CLAIM = "the gap rises with the flip rate; at epsilon = 0.5 reward-model accuracy is chance"


def _prep(table):
    return table.assign(
        rm=column(table, "reward_model", "linear").astype(str),
        rat=column(table, "feedback.rationality", np.inf).astype(float),
    )


def plot(table, ax=None):
    df = _prep(table)
    axs = axes(3, ax)
    perfect = df[np.isinf(df["rat"])]
    for rm, g in perfect.groupby("rm"):
        s = summarize(g, "feedback.flip", "normalized_gap")
        line_ci(axs[0], s["feedback.flip"], s, f"{rm} reward model")
        s = summarize(g, "feedback.flip", "rm_accuracy_in_dist")
        line_ci(axs[1], s["feedback.flip"], s, f"{rm} reward model")
    axs[0].set(
        xlabel="flip rate epsilon",
        ylabel="normalised gap (fraction of opt - ref)",
        title="gap (perfectly rational teacher)",
    )
    axs[1].axhline(0.5, color="grey", ls=":", label="chance")
    axs[1].set(xlabel="flip rate epsilon", ylabel="held-out pair accuracy (fraction)", title="reward-model accuracy")
    clean = df[df["feedback.flip"] == 0]
    for rm, g in clean.groupby("rm"):
        s = summarize(g.assign(rat=np.minimum(g["rat"], 100.0)), "rat", "normalized_gap")
        line_ci(axs[2], s["rat"], s, f"{rm} reward model")
    axs[2].set(
        xscale="log",
        xlabel="teacher rationality (100 = perfect)",
        ylabel="normalised gap (fraction of opt - ref)",
        title="gap vs rationality (epsilon = 0)",
    )
    for a in axs:
        a.legend(fontsize=7)
    return axs


def check(table) -> None:
    df = _prep(table)
    df = df[np.isinf(df["rat"])]
    for rm, g in df.groupby("rm"):
        rho, p = spearman_trend(g["feedback.flip"], g["normalized_gap"])
        assert rho > 0 and p < 0.01, f"{rm}: gap does not rise with epsilon (rho = {rho:.3f}, p = {p:.3g})"
        acc = g[g["feedback.flip"] == 0.5]["rm_accuracy_in_dist"].to_numpy()
        assert acc.size >= 2, f"{rm}: no runs at epsilon = 0.5"
        t = stats.ttest_1samp(acc, 0.5)
        assert abs(acc.mean() - 0.5) < 0.06 and t.pvalue > 0.01, (
            f"{rm}: accuracy at epsilon = 0.5 is {acc.mean():.3f} (t-test against 0.5: p = {t.pvalue:.3g})"
        )
