"""Tabular vs linear learners under the same corruption.

The same algorithm (Q-learning, epsilon-greedy, noisy rewards) with a table of Q-values or with Q linear in
[position, bigram] templates. On a Markov oracle (unigram/position/bigram) the optimal Q-function is in the linear
class, so the linear learner generalises across states and needs fewer episodes; on the nonlinear oracle it is
not, and the linear learner's error stays however long it trains, while the table keeps improving.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from experiments.catalog.common import axes, line_ci, summarize

TABLE = "runs"
CLAIM = "linear learners need less data when the class is right and lose more under class mismatch"
LABEL = {"linear": "class right (Markov oracle)", "nonlinear": "class mismatch (nonlinear oracle)"}


def _agent(df):
    return df["agent.name"] if "agent.name" in df.columns else df["agent"]


def plot(table, ax=None):
    df = table.assign(learner=_agent(table))
    kinds = [k for k in ("linear", "nonlinear") if k in set(df["oracle.kind"])]
    axs = np.atleast_1d(axes(len(kinds), ax))
    for a, kind in zip(axs, kinds, strict=False):
        for learner, g in df[df["oracle.kind"] == kind].groupby("learner"):
            s = summarize(g, "agent.steps", "normalized_gap")
            line_ci(a, s["agent.steps"], s, {"q_learning": "tabular Q", "linear_q": "linear Q"}.get(learner, learner))
        a.set(
            xscale="log",
            xlabel="episodes (log scale)",
            ylabel="normalised gap (fraction of opt - ref)",
            title=LABEL[kind],
        )
        a.legend(fontsize=7)
    return axs


def _paired(df, kind, steps):
    g = df[(df["oracle.kind"] == kind) & (df["agent.steps"] == steps)]
    wide = g.pivot_table(index="seed", columns="learner", values="normalized_gap").dropna()
    return (wide["q_learning"] - wide["linear_q"]).to_numpy()  # > 0: the linear learner is better


def check(table) -> None:
    df = table.assign(learner=_agent(table))
    budgets = sorted(df["agent.steps"].unique())
    small, large = budgets[0], budgets[-1]
    right = _paired(df, "linear", small)
    p = stats.ttest_1samp(right, 0.0, alternative="greater").pvalue
    assert right.mean() > 0 and p < 0.01, (
        f"with the right class and {small} episodes, linear is not better: tabular minus linear gap "
        f"{right.mean():.3f} (p = {p:.3g})"
    )
    wrong = -_paired(df, "nonlinear", large)
    p = stats.ttest_1samp(wrong, 0.0, alternative="greater").pvalue
    assert wrong.mean() > 0 and p < 0.01, (
        f"under class mismatch after {large} episodes, linear does not lose more: linear minus tabular gap "
        f"{wrong.mean():.3f} (p = {p:.3g})"
    )
