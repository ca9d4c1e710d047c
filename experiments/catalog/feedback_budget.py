"""Feedback budget: how many labels, and over how many prompts.

Sweep: the number of preference labels N (log scale) and the fraction kappa of prompts the data covers; a linear
reward model; an exact planner. ``gap_covered`` and ``gap_uncovered`` split the per-prompt gap by coverage.

The linear model shares its unigram, position and bigram weights across prompts, but its prompt x token weights of
a prompt the data never mention stay at their prior mean 0: on those prompts the policy follows the shared part
only, and more labels on the covered prompts do not help. So with kappa < 1 the gap stops falling at a floor, set by
the uncovered prompts (RLHF Deciphered's incorrect generalisation under low coverage).
"""

from __future__ import annotations

import pandas as pd

from experiments.catalog.common import axes, line_ci, summarize
from experiments.catalog.rlhf_data_shared import log_count_axis, ordered_trend, paired

TABLE = "runs"
CLAIM = (
    "the gap falls with N; at the largest N less prompt coverage kappa leaves a floor of gap that more labels do not "
    "remove, and with kappa < 1 the gap sits on the prompts the data never cover"
)
ALPHA = 0.01
MIN_FALL_N = 0.1  # normalised gap (fraction of opt - ref) lost from the smallest to the largest N, at least
FLOOR = 0.1  # normalised gap left at the largest N by the least coverage beyond full coverage's, at least
MIN_CONCENTRATION = 0.25  # reward units (a token's oracle reward has sd 1): uncovered minus covered per-prompt gap


def plot(table, ax=None):
    axs = axes(2, ax)
    colours = {}
    for kappa, g in table.groupby("feedback.prompt_coverage"):
        s = summarize(g, "feedback.n", "normalized_gap")
        line_ci(axs[0], s["feedback.n"], s, f"kappa = {kappa:g} of the prompts covered")
        colours[kappa] = axs[0].lines[-1].get_color()
    axs[0].set(
        xlabel="preference labels N (log scale)",
        ylabel="normalised gap (fraction of opt - ref)",
        title="gap vs feedback budget",
    )
    partial = table[table["feedback.prompt_coverage"] < 1]
    for col, label in (("gap_uncovered", "uncovered prompts"), ("gap_covered", "covered prompts")):
        for kappa, g in partial.groupby("feedback.prompt_coverage"):
            s = summarize(g.assign(**{col: g[col].astype(float)}), "feedback.n", col)
            line_ci(
                axs[1], s["feedback.n"], s, f"{label}, kappa = {kappa:g}", ls="-" if "un" in col else "--",
                color=colours[kappa],
            )  # fmt: skip
    axs[1].set(
        xlabel="preference labels N (log scale)",
        ylabel="mean per-prompt gap (reward units)",
        title="where the gap is (kappa < 1)",
    )
    for a in axs:
        log_count_axis(a, table["feedback.n"])
        a.set_ylim(bottom=0)
        a.legend(fontsize=7)
    return axs


def check(table) -> None:
    # N: blocks = (kappa, seed)
    by_n = table.pivot_table(index=["feedback.prompt_coverage", "seed"], columns="feedback.n", values="normalized_gap")
    t = ordered_trend(by_n.sort_index(axis=1), increasing=False)
    assert t.p < ALPHA and -t.effect > MIN_FALL_N, (
        f"the gap does not fall with N ({t}; the fall from the smallest to the largest N must exceed {MIN_FALL_N})"
    )
    lines = [f"gap over N (falling): {t}"]
    # kappa, where the labels suffice (the largest N): blocks = seeds
    n_max = table["feedback.n"].max()
    last = table[table["feedback.n"] == n_max]
    by_kappa = last.pivot_table(index="seed", columns="feedback.prompt_coverage", values="normalized_gap")
    t = ordered_trend(by_kappa.sort_index(axis=1), increasing=False)
    assert t.p < ALPHA and -t.effect > FLOOR, (
        f"at N = {n_max} the gap does not fall with kappa ({t}; the least coverage must leave more than {FLOOR} "
        "beyond full coverage's gap: more labels on the same prompts should not reach the uncovered ones)"
    )
    lines.append(f"at N = {n_max:g}, gap over kappa (falling): {t}")
    # where the gap is: paired within each run with kappa < 1
    partial = table[table["feedback.prompt_coverage"] < 1]
    wide = pd.DataFrame({"uncovered": partial["gap_uncovered"].astype(float), "covered": partial["gap_covered"]})
    d, p, m = paired(wide, "uncovered", "covered")
    assert p < ALPHA and d > MIN_CONCENTRATION, (
        f"the gap does not concentrate on uncovered prompts: uncovered minus covered per-prompt gap {d:+.3f} reward "
        f"units (paired Wilcoxon p = {p:.3g}, {m} runs; needs > {MIN_CONCENTRATION})"
    )
    lines.append(
        f"kappa < 1: uncovered minus covered per-prompt gap {d:+.3f} reward units (mean uncovered "
        f"{wide['uncovered'].mean():.3f}, covered {wide['covered'].mean():.3f}; paired Wilcoxon p = {p:.3g}, {m} runs)"
    )
    print("\n".join(lines))
