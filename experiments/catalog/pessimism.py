"""Pessimism and coverage (Zhu, Jordan, Jiao 2023, Thm 3.9): greedy on the MAP reward can stay suboptimal for every
N; a lower-confidence reward fixes it.

Sweep: the number of preference labels N, the pessimism k of a linear reward model (the policy is greedy on
``mean - k * std`` of each sequence's predicted return, std from the Laplace posterior; k = 0 is the MAP fit), and
whether the data cover every direction of the model. The oracle is linear plus a stutter penalty (a token repeated
right after itself costs 2 token-reward sds), which the model represents exactly (a bigram-diagonal feature). The
data come from pi_ref either as drawn (``stutter_free = false``: stutters appear in the data, every direction is
covered) or with every stutter filtered out (``stutter_free = true``: the bigram-diagonal direction is never
covered; human-written data rarely stutter).

Without coverage the MAP weights of the diagonal stay at their prior mean 0 for every N, so the model extrapolates:
a sequence that repeats the best token looks best, and the greedy policy stutters whatever N. Those weights keep
their prior standard deviation, so the lower confidence bound charges every stutter k prior sds and the pessimistic
policy avoids them. With full coverage the MAP fit is consistent, its gap falls towards 0 with N, and pessimism
changes little.

What is checked, at the largest N (paired by seed: the same world, oracle and pi_ref): (1) MAP's gap without
stutters in the data exceeds its gap with full coverage by more than 0.1; (2) the k = 2 lower confidence bound
removes more than half of it; and, at paper scale (the sanity sweep has one N), (3) with full coverage MAP's gap
falls with N (Page's trend test). Measured, not checked: without coverage MAP's gap shows no significant fall from
N = 300 on (it stays near a third of the optimal-minus-reference span).
"""

from __future__ import annotations

import pandas as pd

from experiments.catalog.common import axes, line_ci, summarize
from experiments.catalog.rlhf_data_shared import log_count_axis, ordered_trend, paired

TABLE = "runs"
CLAIM = (
    "when the data never contain a stutter (a direction they leave uncovered), greedy on the MAP reward stays "
    "suboptimal as N grows, and a pessimistic reward (k = 2) removes most of its gap; with full coverage the MAP gap "
    "falls towards 0"
)
COVERAGE = {False: "data from pi_ref (every direction covered)", True: "data without stutters (one uncovered)"}
K = 2.0
ALPHA = 0.01
STUCK = 0.1  # MAP's gap without coverage, at the largest N, exceeds full coverage's by at least this (normalised)
PLATEAU = 300  # labels from which MAP's gap without coverage is reported as flat (measured, not checked)
FIXED = 0.5  # pessimism removes at least this fraction of MAP's gap without coverage, at the largest N


def _prep(table: pd.DataFrame) -> pd.DataFrame:
    hole = table["feedback.stutter_free"].astype(str).str.lower().isin(("true", "1", "1.0"))
    return table.assign(hole=hole, k=table["reward_model.pessimism"].astype(float))


def plot(table, ax=None):
    df = _prep(table)
    axs = axes(2, ax)
    top = 0.0
    for a, (hole, title) in zip(axs, COVERAGE.items(), strict=True):
        part = df[df["hole"] == hole]
        for k, g in part.groupby("k"):
            s = summarize(g, "feedback.n", "normalized_gap")
            main = k in (0, K)
            line_ci(
                a,
                s["feedback.n"],
                s,
                "MAP (k = 0)" if k == 0 else f"pessimistic, k = {k:g}",
                lw=2 if main else 1,
                alpha=1 if main else 0.6,
            )
            top = max(top, float(s["hi"].max()))
        log_count_axis(a, df["feedback.n"])
        a.set(
            xlabel="preference labels N (log scale)",
            ylabel="normalised gap (fraction of opt - ref)",
            title=title,
        )
        a.legend(fontsize=7)
    for a in axs:
        a.set_ylim(0, top * 1.05)
    return axs


def _wide(df: pd.DataFrame, index: list[str], columns: str) -> pd.DataFrame:
    return df.pivot_table(index=index, columns=columns, values="normalized_gap").sort_index(axis=1)


def check(table) -> None:
    df = _prep(table)
    assert set(df["hole"]) == {False, True}, "the sweep needs feedback.stutter_free false and true"
    assert {0.0, K} <= set(df["k"]), f"the sweep needs reward_model.pessimism 0 and {K:g}"
    n_max = df["feedback.n"].max()
    last = df[df["feedback.n"] == n_max]
    # 1. without coverage MAP stays suboptimal: at the largest N its gap exceeds full coverage's (paired by seed)
    cov = _wide(last[last["k"] == 0], ["seed"], "hole")
    d, p, m = paired(cov, True, False)
    assert p < ALPHA and d > STUCK, (
        f"at N = {n_max}, MAP's gap without stutters in the data exceeds full coverage's by only {d:+.3f} "
        f"(MAP gap {cov[True].mean():.3f} vs {cov[False].mean():.3f}; paired Wilcoxon p = {p:.3g}, {m} seeds; "
        f"needs > {STUCK})"
    )
    lines = [
        f"N = {n_max:g}, MAP gap without stutters {cov[True].mean():.3f} vs full coverage {cov[False].mean():.3f}: "
        f"{d:+.3f} (paired Wilcoxon p = {p:.3g}, {m} seeds)"
    ]
    # 2. pessimism fixes it: at the largest N, without coverage, the k-pessimistic gap is smaller (paired by seed)
    fix = _wide(last[last["hole"]], ["seed"], "k")
    d, p, m = paired(fix, 0.0, K)
    removed = d / max(float(fix[0.0].mean()), 1e-12)
    assert p < ALPHA and removed > FIXED, (
        f"at N = {n_max} without stutters in the data, pessimism (k = {K:g}) cuts MAP's gap by {d:+.3f} "
        f"({100 * removed:.0f}% of {fix[0.0].mean():.3f}; paired Wilcoxon p = {p:.3g}, {m} seeds; needs > "
        f"{100 * FIXED:.0f}%)"
    )
    lines.append(
        f"N = {n_max:g}, without stutters: k = {K:g} gap {fix[K].mean():.3f} vs MAP {fix[0.0].mean():.3f}, "
        f"{100 * removed:.0f}% removed (paired Wilcoxon p = {p:.3g}, {m} seeds)"
    )
    # 3. with full coverage MAP is consistent: its gap falls with N (blocks = seeds; needs two N: paper scale)
    if df["feedback.n"].nunique() >= 2:
        t = ordered_trend(_wide(df[~df["hole"] & (df["k"] == 0)], ["seed"], "feedback.n"), increasing=False)
        assert t.p < ALPHA and t.effect < -STUCK, (
            f"with full coverage MAP's gap does not fall with N ({t}; the fall must exceed {STUCK})"
        )
        lines.append(f"full coverage, MAP gap over N (falling): {t}")
        late = df[df["hole"] & (df["k"] == 0) & (df["feedback.n"] >= PLATEAU)]
        if late["feedback.n"].nunique() >= 2:
            t = ordered_trend(_wide(late, ["seed"], "feedback.n"), increasing=False)
            lines.append(f"without stutters, MAP gap over N >= {PLATEAU} (measured, not checked): {t}")
    print("\n".join(lines))
