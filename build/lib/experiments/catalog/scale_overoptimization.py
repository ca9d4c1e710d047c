"""Reward-model overoptimisation at language-model scale (V = 1000, H = 32), computed exactly.

The world is never enumerated: oracle, reference and reward model are Markov, so the soft planner's whole beta
path is solved and evaluated by dynamic programming over (prompt, position, last token). The oracle rewards token
quality and penalises stuttering (a token equal to the previous one, weight 3); the reward model is linear over
unigram and position weights, which cannot see stuttering. Under mild pressure the policy picks better tokens;
under strong pressure it repeats the model's favourite token, and the oracle return collapses. With 10x more labels
the position weights are accurate, the best token differs across positions, and the collapse goes away: Gao et
al.'s finding that more reward-model data raises the peak and reduces overoptimisation.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from experiments.catalog.common import axes, mean_ci
from experiments.catalog.overoptimization import assert_overoptimized, path_means

TABLE = "curves"
CLAIM = (
    "at language-model scale, with 1000 labels the proxy rises with pressure while the oracle peaks and collapses; "
    "10x more labels give a higher peak (less overoptimisation)"
)


def _by_n(table):
    return {n: path_means(g) for n, g in table.groupby("feedback.n")}


def plot(table, ax=None):
    groups = _by_n(table)
    axs = np.atleast_1d(axes(len(groups), ax))
    for a, (n, means) in zip(axs, groups.items(), strict=False):
        m = means["soft_planner"]
        for key, color, label in (("oracle", "C0", "oracle (gold)"), ("proxy", "C1", "proxy (reward model)")):
            s = np.array([mean_ci(col) for col in m[key].T])
            a.plot(m["d"], s[:, 0], "o-", ms=3, color=color, label=label)
            a.fill_between(m["d"], s[:, 1], s[:, 2], color=color, alpha=0.2)
        a.axhline(0, color="grey", lw=0.5)
        a.set(
            xlabel="d = sqrt(KL(pi || pi_ref)) (sqrt nats)",
            ylabel="return gain over pi_ref (reward units)",
            title=f"soft planner, {int(n)} preference labels",
        )
        a.legend(fontsize=7)
    return axs


def check(table) -> None:
    groups = _by_n(table)
    fewest = min(groups)
    assert_overoptimized(groups[fewest]["soft_planner"], f"N = {fewest}", test="wilcoxon")
    if len(groups) > 1:  # more labels: a higher peak (each seed's best point on the path)
        most = max(groups)
        few_peak = groups[fewest]["soft_planner"]["oracle"].max(axis=1)
        many_peak = groups[most]["soft_planner"]["oracle"].max(axis=1)
        u = stats.mannwhitneyu(many_peak, few_peak, alternative="greater")
        assert u.pvalue < 0.01, (
            f"N = {most} does not reach a higher peak than N = {fewest}: {many_peak.mean():.2f} vs "
            f"{few_peak.mean():.2f} (p = {u.pvalue:.3g})"
        )
