"""Active query selection: does choosing which pairs to label reach a given gap with fewer labels?

Sweep: the number of preference labels N (log scale) and the rule ``feedback.query`` that chooses the labelled pairs
(``random``: the pairs pi_ref writes; ``disagreement``, ``laplace``, ``entropy``: in 5 rounds from a pool of 10
candidate pairs per label, by the current reward model's uncertainty; see :mod:`sim.feedback.active`), on the default
small world with a perfect teacher; a linear reward model; the KL-regularised optimum of the fitted model.

The statistic is *label efficiency*: for a run of rule r with N labels and gap g, the number of labels random selection
needed, in the same seed (one world, one teacher), to first reach a gap of g (its running-best gap over N, interpolated
linearly in log N; clipped to the swept range), divided by N. An efficiency of 3 means random needs three times the
labels. The largest N is left out (there the efficiency cannot exceed 1 by construction of the clip); per seed the
efficiencies over N are averaged in log (a geometric mean), and the seeds are the independent units of the test.

Why a perfect teacher: the rules only choose *which* pairs are asked, so they can help only when a label's worth
depends on the pair. With a deterministic teacher a pair the model already orders surely teaches nothing, and entropy
asks the others. The variance rules ask where the predicted return difference is uncertain, which need not be where
its sign is. With the default teacher (rationality 1) a label is mostly noise and no rule helps (measured on this
sweep with ``feedback.rationality=1``: efficiency x0.86 to x1.11, none different from 1; not part of the claim).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

from experiments.catalog.common import axes, line_ci, summarize
from experiments.catalog.rlhf_data_shared import log_count_axis, ordered_trend, wilcoxon_greater

TABLE = "runs"
CLAIM = (
    "with a perfect teacher, entropy selection (the pairs the model cannot yet order) reaches random selection's gap "
    "with fewer labels, and with fewer than the variance rules (disagreement, laplace) need"
)
ALPHA = 0.01
#: The geometric-mean label efficiency of entropy selection must exceed this (random needs 30% more labels).
MIN_EFFICIENCY = 1.3
#: Random selection's gap must fall by at least this (normalised) from the smallest to the largest N.
MIN_FALL_N = 0.1
RULES = ("random", "disagreement", "laplace", "entropy")
COLOURS = {"random": "0.3", "disagreement": "tab:blue", "laplace": "tab:green", "entropy": "tab:red"}


def _rules(table: pd.DataFrame) -> list[str]:
    present = set(table["feedback.query"])
    return [r for r in RULES if r in present]


def efficiency(table: pd.DataFrame, rule: str, metric: str = "normalized_gap", per_n: bool = False):
    """Label efficiency of ``rule`` against random (module docstring): per seed, the geometric mean over N (all but
    the largest) of random's labels to reach the rule's ``metric`` over the rule's labels; with ``per_n``, the
    (seeds x N) table of the efficiencies themselves. Seeds missing either rule are dropped."""
    wide = table.pivot_table(index="seed", columns=["feedback.query", "feedback.n"], values=metric)
    if "random" not in wide.columns.get_level_values(0) or rule not in wide.columns.get_level_values(0):
        return pd.DataFrame() if per_n else pd.Series(dtype=float)
    base, mine = wide["random"].sort_index(axis=1), wide[rule].sort_index(axis=1)
    ns = np.asarray(base.columns, dtype=float)
    out = {}
    for seed in base.index:
        b, m = base.loc[seed].to_numpy(float), mine.loc[seed].reindex(base.columns).to_numpy(float)
        if not (np.isfinite(b).all() and np.isfinite(m[:-1]).all()):
            continue
        best = np.minimum.accumulate(b)  # random's running best: the labels it needed to *first* reach a value
        # np.interp needs increasing x: the best gap falls with N, so read the curve backwards
        out[seed] = np.interp(m[:-1], best[::-1], np.log(ns)[::-1]) - np.log(ns[:-1])
    logs = pd.DataFrame.from_dict(out, orient="index", columns=ns[:-1])
    return np.exp(logs) if per_n else np.exp(logs.mean(axis=1))


def plot(table, ax=None):
    axs = axes(3, ax)
    rules = _rules(table)
    for rule in rules:
        g = table[table["feedback.query"] == rule]
        for a, col in zip(axs[:2], ("normalized_gap", "reward_distance"), strict=True):
            s = summarize(g, "feedback.n", col)
            line_ci(a, s["feedback.n"], s, rule, color=COLOURS[rule])
    axs[0].set(xlabel="preference labels N (log scale)", ylabel="normalised gap (fraction of opt - ref)",
               title="gap vs labels, by query rule")  # fmt: skip
    axs[1].set(xlabel="preference labels N (log scale)", ylabel="reward distance (EPIC-style, under pi_ref)",
               title="reward distance vs labels")  # fmt: skip
    for a in axs[:2]:
        log_count_axis(a, table["feedback.n"])
        a.set_yscale("log")
        a.legend(fontsize=7)
    others = [r for r in rules if r != "random"]
    for k, rule in enumerate(others):
        for dx, metric, marker in ((-0.12, "normalized_gap", "o"), (0.12, "reward_distance", "s")):
            e = efficiency(table, rule, metric)
            if e.empty:
                continue
            x = k + dx + np.linspace(-0.04, 0.04, e.size)
            axs[2].scatter(x, e, s=10, color=COLOURS[rule], marker=marker, alpha=0.6)
            axs[2].plot([k + dx - 0.08, k + dx + 0.08], [np.exp(np.log(e).mean())] * 2, color="k", lw=2)
    axs[2].axhline(1.0, color="0.5", ls=":", lw=1)
    axs[2].set_yscale("log")
    axs[2].yaxis.set_major_locator(FixedLocator([0.5, 0.7, 1, 1.5, 2, 3, 4, 6]))
    axs[2].yaxis.set_major_formatter(FormatStrFormatter("x%g"))
    axs[2].yaxis.set_minor_locator(NullLocator())
    axs[2].set_xticks(range(len(others)), others)
    axs[2].set(ylabel="label efficiency per seed (bar: geo. mean)",
               title="labels random needs / labels used\n(o: gap, s: reward distance)")  # fmt: skip
    return axs


def check(table) -> None:
    lines = []
    # the premise: random selection's gap falls with N (blocks = seeds)
    rnd = table[table["feedback.query"] == "random"]
    by_n = rnd.pivot_table(index="seed", columns="feedback.n", values="normalized_gap").sort_index(axis=1)
    t = ordered_trend(by_n, increasing=False)
    assert t.p < ALPHA and -t.effect > MIN_FALL_N, (
        f"random selection's gap does not fall with N ({t}; needs a fall above {MIN_FALL_N}): no curve to compare with"
    )
    lines.append(f"random: gap over N (falling): {t}")
    # the claim: entropy reaches random's gap with fewer labels (seeds are the units; log efficiency ~ symmetric)
    e = efficiency(table, "entropy")
    assert e.size >= 5, f"too few seeds with both random and entropy runs: {e.size}"
    geo, p = float(np.exp(np.log(e).mean())), _t_greater(np.log(e))
    assert p < ALPHA and geo > MIN_EFFICIENCY, (
        f"entropy selection does not reach random's gap with fewer labels: label efficiency x{geo:.2f} (geometric mean "
        f"over {e.size} seeds; one-sided t-test of log efficiency > 0, p = {p:.3g}; needs p < {ALPHA} and > "
        f"x{MIN_EFFICIENCY})"
    )
    per_n = np.exp(np.log(efficiency(table, "entropy", per_n=True)).mean())
    lines.append(
        f"entropy: label efficiency on the gap x{geo:.2f} (one-sided t-test of log efficiency p = {p:.3g}, Wilcoxon "
        f"p = {wilcoxon_greater(np.log(e)):.3g}; {e.size} seeds, {int((e > 1).sum())} above 1); by N: "
        + ", ".join(f"{n:g}: x{v:.2f}" for n, v in per_n.items())
    )
    for rule in ("disagreement", "laplace"):
        v = efficiency(table, rule)
        if v.size >= 5:
            d = (np.log(e.reindex(v.index)) - np.log(v)).dropna()
            assert wilcoxon_greater(d) < ALPHA, (
                f"entropy selection is not more label-efficient than {rule}: x{np.exp(d.mean()):.2f} (one-sided "
                f"Wilcoxon p = {wilcoxon_greater(d):.3g}, {d.size} seeds)"
            )
            lines.append(
                f"{rule}: label efficiency on the gap x{np.exp(np.log(v).mean()):.2f} (two-sided Wilcoxon vs 1 p = "
                f"{_two_sided(np.log(v)):.3g}); entropy / {rule} x{np.exp(d.mean()):.2f} (one-sided Wilcoxon p = "
                f"{wilcoxon_greater(d):.3g})"
            )
    for rule in _rules(table)[1:]:
        r = efficiency(table, rule, "reward_distance")
        if r.size >= 2:
            lines.append(f"{rule}: label efficiency on the reward distance x{np.exp(np.log(r).mean()):.2f} (measured)")
    print("\n".join(lines))


def _t_greater(d) -> float:
    """One-sided one-sample t-test p-value that ``d`` has mean above 0 (1 when ``d`` is constant)."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    return 1.0 if np.ptp(d) == 0 else float(stats.ttest_1samp(d, 0.0, alternative="greater").pvalue)


def _two_sided(d) -> float:
    from scipy import stats

    d = np.asarray(d, dtype=float)
    return 1.0 if np.all(d == 0) else float(stats.wilcoxon(d).pvalue)
