"""K-wise rankings: the full Plackett-Luce likelihood vs splitting them into pairs (Zhu, Jordan, Jiao 2023).

Sweep: K (sequences per ranking), the number N of rankings, and how a linear reward model (weak prior, so close
to the maximum-likelihood estimate) reads them: ``plackett_luce`` (the full likelihood) or ``pairs`` (each
ranking split into its K(K-1)/2 pairwise wins, fitted by Bradley-Terry as if they were independent). Under
Plackett-Luce each split pair is marginally a correct Bradley-Terry observation, so both estimators are
consistent; but the pairs of one ranking are dependent, so the split estimator wastes information. The measure is
the reward distance (EPIC-style Pearson distance of returns) to the oracle; the loss is the log of the split fit's
distance over the full fit's, per (K, N, seed) on the same rankings.

What holds by construction and is not checked: at K = 2 a ranking is one pair and the two likelihoods are the same
function, so the two fits coincide (drawn as the 0% line). What is checked: (1) at every K > 2 the full likelihood
is closer to the oracle; (2) the loss grows with K (more, and more dependent, pairs per ranking); (3) theory
(both estimators are root-N consistent, so the ratio of their errors tends to the square root of a ratio of
asymptotic variances) predicts a loss roughly constant in N: from N = 300 on, the slope of the log distance ratio
in log10 N, common to all K > 2, lies within +-0.03 per decade (TOST). Below N = 300 the prior and the distance's
own nonlinearity hide part of the loss (at N = 100, K = 4 loses under 1%). Only the paper-scale sweep tests (2) and
(3): (3) needs three values of N >= 300, and (2), a difference between two noisy losses, is not resolved by a few
seeds (on the paper table, three of five windows of 6 seeds at N = 300 and 1000 miss p < 0.01). The sanity sweep
(K = 8 only) checks (1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, line_ci, summarize
from experiments.catalog.rlhf_data_shared import log_count_axis, ordered_trend, wilcoxon_greater

TABLE = "runs"
CLAIM = (
    "from the same K-wise rankings, the full Plackett-Luce fit lands closer to the oracle than Bradley-Terry on the "
    "rankings split into pairs, by more at larger K, and (from N = 300 on) by a roughly constant fraction as N grows"
)
LIKELIHOODS = {"plackett_luce": "Plackett-Luce", "pairs": "split into pairs"}
ALPHA = 0.01
MIN_LOSS = 0.03  # log distance ratio at the largest K, at least (the split fit 3% further from the oracle)
ASYMPTOTIC = 300  # rankings from which the loss is compared across N
FLAT = 0.03  # |slope| of the log distance ratio per decade of N, at most (TOST)


def excess(table) -> pd.DataFrame:
    """Per (K, N, seed): reward distances of both fits, ``excess`` (split minus full), ``relative`` (split / full - 1)
    and ``loss`` (log of split / full)."""
    wide = table.pivot_table(
        index=["feedback.k", "feedback.n", "seed"], columns="reward_model.ranking_likelihood", values="reward_distance"
    )
    assert set(LIKELIHOODS) <= set(wide.columns), f"the sweep needs reward_model.ranking_likelihood {list(LIKELIHOODS)}"
    out = wide.assign(
        excess=wide["pairs"] - wide["plackett_luce"],
        relative=wide["pairs"] / wide["plackett_luce"] - 1,
        loss=np.log(wide["pairs"] / wide["plackett_luce"]),
    )
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
        yscale="log",
        xlabel="rankings N (log scale)",
        ylabel="reward distance to the oracle (log scale)",
        title="reward-model error",
    )
    axs[0].legend(fontsize=6)
    ex = excess(table)
    for k, g in ex.groupby("feedback.k"):
        s = summarize(g.assign(percent=100 * g["relative"]), "feedback.n", "percent")
        label = f"K = {k}" + (" (0 by construction)" if k == 2 else "")
        line_ci(axs[1], s["feedback.n"], s, label, color=colours.get(k))
    axs[1].axhline(0, color="grey", lw=0.8)
    span = (ex["feedback.n"].min() * 0.8, ASYMPTOTIC * 0.9)
    axs[1].axvspan(*span, color="grey", alpha=0.1, lw=0, label=f"N < {ASYMPTOTIC}: not yet asymptotic")
    axs[1].set(
        xlabel="rankings N (log scale)",
        ylabel="split-pairs fit's extra distance (%)",
        title="what splitting rankings costs",
    )
    axs[1].legend(fontsize=7)
    for a in axs:
        log_count_axis(a, table["feedback.n"])
    return axs


def common_slope(ex: pd.DataFrame) -> tuple[float, float, int]:
    """Least-squares slope of ``loss`` on log10 N shared by all K (each K its own intercept): (slope, SE, dof)."""
    x = np.log10(ex["feedback.n"].astype(float))
    xc = x - x.groupby(ex["feedback.k"]).transform("mean")
    yc = ex["loss"] - ex["loss"].groupby(ex["feedback.k"]).transform("mean")
    sxx = float((xc**2).sum())
    b = float((xc * yc).sum() / sxx)
    dof = len(ex) - 1 - ex["feedback.k"].nunique()
    se = float(np.sqrt(((yc - b * xc) ** 2).sum() / dof / sxx))
    return b, se, dof


def check(table) -> None:
    ex = excess(table).dropna(subset=["loss"])
    ex = ex[ex["feedback.k"] > 2]  # K = 2: the same estimator by construction
    ks = sorted(ex["feedback.k"].unique())
    assert ks, "the sweep needs a K > 2"
    lines = []
    # 1. the full likelihood is closer at every K > 2 (paired on the same rankings, over N and seeds)
    for k in ks:
        loss = ex[ex["feedback.k"] == k]["loss"].to_numpy()
        p = wilcoxon_greater(loss)
        need = MIN_LOSS if k == ks[-1] else 0.0
        assert p < ALPHA and loss.mean() > need, (
            f"at K = {k} the split-pairs fit is not further from the oracle: mean log distance ratio "
            f"{loss.mean():+.4f} (x{np.exp(loss.mean()):.3f}; Wilcoxon p = {p:.3g}, {loss.size} pairs; needs > {need})"
        )
        lines.append(
            f"K = {k}: split-pairs fit {100 * np.expm1(loss.mean()):+.1f}% further from the oracle (geometric mean of "
            f"the distance ratio; Wilcoxon p = {p:.3g}, {loss.size} pairs)"
        )
    # 2 and 3 need the paper sweep: two K > 2 and three N >= ASYMPTOTIC (at sanity scale the growth with K, a
    # difference of two noisy losses, is not resolved by a few seeds)
    late = ex[ex["feedback.n"] >= ASYMPTOTIC]
    if len(ks) >= 2 and late["feedback.n"].nunique() >= 3:
        # 2. the loss grows with K (blocks = (N, seed))
        t = ordered_trend(ex.pivot_table(index=["feedback.n", "seed"], columns="feedback.k", values="loss"))
        assert t.p < ALPHA and t.effect > 0, f"the loss of splitting does not grow with K ({t})"
        lines.append(f"log distance ratio over K: {t}")
        # 3. roughly constant in N from N = ASYMPTOTIC on
        b, se, dof = common_slope(late)
        p = max(float(stats.t.sf((b + FLAT) / se, dof)), float(stats.t.cdf((b - FLAT) / se, dof)))
        assert p < ALPHA, (
            f"the loss of splitting is not roughly constant in N >= {ASYMPTOTIC}: slope {b:+.4f} (SE {se:.4f}) of the "
            f"log distance ratio per decade of N (TOST within +-{FLAT}: p = {p:.3g})"
        )
        lines.append(
            f"N >= {ASYMPTOTIC}: slope of the log distance ratio {b:+.4f} per decade of N (SE {se:.4f}; TOST within "
            f"+-{FLAT}: p = {p:.3g})"
        )
    print("\n".join(lines))
