"""Pessimism and coverage (Zhu, Jordan, Jiao 2023): when does a lower-confidence reward model help?

Sweep: the number of preference labels N, the pessimism k of a linear reward model (the policy is greedy on
``mean - k * std`` of each sequence's predicted return, std from the Laplace posterior; k = 0 is the MAP fit), and
who wrote the compared sequences: pi_ref (``reference``, which rarely writes the best outputs) or pi_ref mixed
half and half with a near-optimal expert (``expert``, data that cover the optimal policy).

Zhu et al.'s theory: the greedy policy on the maximum-likelihood reward can stay suboptimal even with data that
cover the optimal policy, because it exploits directions the data leave uncertain; the pessimistic policy only
needs the optimum covered. Without that coverage, pessimism steers towards whatever the data cover, which is no
better.
"""

from __future__ import annotations

import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, line_ci, summarize

TABLE = "runs"
CLAIM = (
    "with data that cover the optimal policy, a pessimistic reward model (k = 2) has a smaller gap than the MAP "
    "model, and pessimism pays more there than with data from pi_ref"
)
SAMPLERS = {"reference": "data from pi_ref", "expert": "data from pi_ref + near-optimal expert"}
K = 2.0


def plot(table, ax=None):
    axs = axes(2, ax)
    top = 0.0
    for a, (sampler, title) in zip(axs, SAMPLERS.items(), strict=True):
        part = table[table["feedback.sampler"] == sampler]
        for k, g in part.groupby("reward_model.pessimism"):
            s = summarize(g, "feedback.n", "normalized_gap")
            line_ci(a, s["feedback.n"], s, "MAP (k = 0)" if k == 0 else f"pessimistic, k = {k:g}")
            top = max(top, float(s["hi"].max()))
        a.set(xscale="log", xlabel="preference labels N (log scale)", ylabel="normalised gap", title=title)
        a.legend(fontsize=7)
    for a in axs:
        a.set_ylim(0, top * 1.05)
    return axs


def pessimism_gain(table: pd.DataFrame, sampler: str, k: float = K) -> pd.Series:
    """Per (N, seed): gap of the MAP model minus gap of the k-pessimistic one (positive = pessimism helps)."""
    part = table[table["feedback.sampler"] == sampler]
    wide = part.pivot_table(index=["feedback.n", "seed"], columns="reward_model.pessimism", values="normalized_gap")
    assert 0 in wide.columns and k in wide.columns, f"the sweep needs reward_model.pessimism 0 and {k:g}"
    return (wide[0] - wide[k]).dropna()


def check(table) -> None:
    assert set(SAMPLERS) <= set(table["feedback.sampler"]), f"the sweep needs feedback.sampler {list(SAMPLERS)}"
    expert = pessimism_gain(table, "expert")
    w = stats.wilcoxon(expert.to_numpy(), alternative="greater")
    assert w.pvalue < 0.01, (
        f"with expert-covered data, pessimism (k = {K:g}) does not reduce the gap: mean gain "
        f"{expert.mean():.3f} (Wilcoxon p = {w.pvalue:.3g})"
    )
    reference = pessimism_gain(table, "reference")
    diff = (expert - reference).dropna().to_numpy()
    w = stats.wilcoxon(diff, alternative="greater")
    assert w.pvalue < 0.01, (
        f"pessimism does not pay more with expert-covered data ({expert.mean():.3f}) than with data from pi_ref "
        f"({reference.mean():.3f}) (paired Wilcoxon p = {w.pvalue:.3g})"
    )
