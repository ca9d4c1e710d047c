"""K-wise rankings: the full Plackett-Luce likelihood vs splitting them into pairs (Zhu, Jordan, Jiao 2023).

Sweep: K (sequences per ranking), the number N of rankings, and how a linear reward model (weak prior, so close
to the maximum-likelihood estimate) reads them: ``plackett_luce`` (the full likelihood) or ``pairs`` (each
ranking split into its K(K-1)/2 pairwise wins, fitted by Bradley-Terry as if they were independent). Under
Plackett-Luce each split pair is marginally a correct Bradley-Terry observation, so both estimators are
consistent; but the pairs of one ranking are dependent, so the split estimator wastes information. At K = 2 the
two are the same estimator. The measure is the reward distance (EPIC-style Pearson distance of returns) to the
oracle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, line_ci, summarize

TABLE = "runs"
CLAIM = (
    "the full Plackett-Luce fit is closer to the oracle than Bradley-Terry on the split pairs at the largest K, "
    "and the two coincide at K = 2"
)
LIKELIHOODS = {"plackett_luce": "Plackett-Luce", "pairs": "split into pairs"}


def excess(table) -> pd.DataFrame:
    """Per (K, N, seed): reward distance of the split-pairs fit minus that of the Plackett-Luce fit."""
    wide = table.pivot_table(
        index=["feedback.k", "feedback.n", "seed"], columns="reward_model.ranking_likelihood", values="reward_distance"
    )
    assert set(LIKELIHOODS) <= set(wide.columns), f"the sweep needs reward_model.ranking_likelihood {list(LIKELIHOODS)}"
    out = wide.assign(excess=wide["pairs"] - wide["plackett_luce"], relative=wide["pairs"] / wide["plackett_luce"] - 1)
    return out.reset_index()


def plot(table, ax=None):
    axs = axes(2, ax)
    colours = {}
    for (k, lik), g in table.groupby(["feedback.k", "reward_model.ranking_likelihood"]):
        s = summarize(g, "feedback.n", "reward_distance")
        kw = {"ls": "-" if lik == "plackett_luce" else "--"}
        if k in colours:
            kw["color"] = colours[k]
        line_ci(axs[0], s["feedback.n"], s, f"K = {k}, {LIKELIHOODS.get(lik, lik)}", **kw)
        colours.setdefault(k, axs[0].lines[-1].get_color())
    axs[0].set(
        xscale="log",
        yscale="log",
        xlabel="rankings N (log scale)",
        ylabel="reward distance to the oracle (log scale)",
        title="reward-model error",
    )
    axs[0].legend(fontsize=6)
    ex = excess(table)
    for k, g in ex.groupby("feedback.k"):
        s = summarize(g.assign(percent=100 * g["relative"]), "feedback.n", "percent")
        line_ci(axs[1], s["feedback.n"], s, f"K = {k}", color=colours.get(k))
    axs[1].axhline(0, color="grey", lw=0.8)
    axs[1].set(
        xscale="log",
        xlabel="rankings N (log scale)",
        ylabel="extra distance of the split-pairs fit (%)",
        title="what splitting rankings costs",
    )
    axs[1].legend(fontsize=7)
    return axs


def check(table) -> None:
    ex = excess(table)
    ks = sorted(ex["feedback.k"].unique())
    assert ks[0] == 2 and len(ks) >= 2, f"the sweep needs K = 2 and a larger K, got {ks}"
    two = ex[ex["feedback.k"] == 2]
    worst = float(np.abs(two["relative"]).max())
    assert worst < 1e-6, f"at K = 2 the two likelihoods should coincide, but differ by up to {100 * worst:.3g}%"
    top = ex[ex["feedback.k"] == ks[-1]]
    w = stats.wilcoxon(top["excess"].to_numpy(), alternative="greater")
    assert w.pvalue < 0.01, (
        f"at K = {ks[-1]} the split-pairs fit is not further from the oracle: mean excess distance "
        f"{top['excess'].mean():.4f} ({100 * top['relative'].mean():.1f}%, Wilcoxon p = {w.pvalue:.3g})"
    )
