"""Feedback budget: how many labels, and over how many prompts.

Sweep: the number of preference labels N (log scale) and the fraction kappa of prompts the data covers; a linear
reward model; an exact planner. ``gap_covered`` and ``gap_uncovered`` split the per-prompt gap by coverage.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from experiments.catalog.common import axes, line_ci, spearman_trend, summarize

TABLE = "runs"
CLAIM = "the gap falls with N and kappa, and concentrates on uncovered prompts"


def plot(table, ax=None):
    axs = axes(2, ax)
    for kappa, g in table.groupby("feedback.prompt_coverage"):
        s = summarize(g, "feedback.n", "normalized_gap")
        line_ci(axs[0], s["feedback.n"], s, f"kappa = {kappa:g}")
    axs[0].set(
        xscale="log",
        xlabel="preference labels N (log scale)",
        ylabel="normalised gap (fraction of opt - ref)",
        title="gap vs feedback budget",
    )
    partial = table[table["feedback.prompt_coverage"] < 1]
    for col, label in (("gap_covered", "covered prompts"), ("gap_uncovered", "uncovered prompts")):
        for kappa, g in partial.groupby("feedback.prompt_coverage"):
            s = summarize(g, "feedback.n", col)
            line_ci(axs[1], s["feedback.n"], s, f"{label}, kappa = {kappa:g}", ls="-" if "un" in col else "--")
    axs[1].set(
        xscale="log",
        xlabel="preference labels N (log scale)",
        ylabel="mean per-prompt gap (reward units)",
        title="where the gap is",
    )
    for a in axs:
        a.legend(fontsize=7)
    return axs


def check(table) -> None:
    rho, p = spearman_trend(table["feedback.n"], -table["normalized_gap"])
    assert rho > 0 and p < 0.01, f"gap does not fall with N (Spearman rho = {-rho:.3f}, p = {p:.3g})"
    # kappa: paired at the same N and seed, the least against the most coverage
    wide = table.pivot_table(index=["feedback.n", "seed"], columns="feedback.prompt_coverage", values="normalized_gap")
    lo, hi = wide.columns.min(), wide.columns.max()
    diff = (wide[lo] - wide[hi]).dropna().to_numpy()
    w = stats.wilcoxon(diff, alternative="greater")
    assert w.pvalue < 0.01, (
        f"gap does not fall with kappa: kappa={lo:g} minus kappa={hi:g} is {np.mean(diff):.3f} on average "
        f"(Wilcoxon p = {w.pvalue:.3g})"
    )
    partial = table[table["feedback.prompt_coverage"] < 1]
    diff = (partial["gap_uncovered"] - partial["gap_covered"]).to_numpy()
    w = stats.wilcoxon(diff, alternative="greater")
    assert w.pvalue < 0.01, (
        f"the gap does not concentrate on uncovered prompts (mean difference {np.mean(diff):.3f}, "
        f"Wilcoxon p = {w.pvalue:.3g})"
    )
