"""Misspecification: a proxy that is a different reward function, not a noisy view of the right one.

Sweep: the misweight angle alpha between the proxy's and the oracle's linear weights, omitted templates and a
spurious length bias lambda, for the exact and the soft (beta = 0.1) planner.
"""

from __future__ import annotations

import numpy as np

from experiments.catalog.common import axes, column, line_ci, spearman_trend, subset, summarize

TABLE = "runs"
CLAIM = "the gap is exactly 0 at alpha = 0 and rises with the misweight angle"


def _agent(df):
    return column(df, "agent", "exact_planner")


def plot(table, ax=None):
    df = table.assign(
        agent=_agent(table),
        omit=column(table, "corruption.misspec.omit", "[]"),
        bias=column(table, "corruption.misspec.length_bias", 0.0),
    )
    axs = axes(3, ax)
    clean = subset(df, omit="[]", bias=0.0)
    for agent, g in clean.groupby("agent"):
        s = summarize(g, "corruption.misspec.angle", "normalized_gap")
        line_ci(axs[0], s["corruption.misspec.angle"], s, agent)
    axs[0].set(
        xlabel="misweight angle alpha (rad)", ylabel="normalised gap (fraction of opt - ref)", title="misweighting"
    )
    base = df[df["corruption.misspec.angle"] == 0]
    base = base[base["bias"] == 0]
    labels = sorted(base["omit"].astype(str).unique())
    for k, (agent, g) in enumerate(base.groupby("agent")):
        s = summarize(g.assign(omit=g["omit"].astype(str)), "omit", "normalized_gap").set_index("omit").loc[labels]
        pos = np.arange(len(labels)) + 0.35 * k
        axs[1].bar(pos, s["mean"], width=0.35, yerr=[s["mean"] - s["lo"], s["hi"] - s["mean"]], label=agent)
    axs[1].set_xticks(np.arange(len(labels)) + 0.17, [f"omit {x}" for x in labels])
    axs[1].set(ylabel="normalised gap (fraction of opt - ref)", title="omitted templates (alpha = 0)")
    nob = df[(df["corruption.misspec.angle"] == 0) & (df["omit"].astype(str) == "[]")]
    for agent, g in nob.groupby("agent"):
        s = summarize(g, "bias", "normalized_gap")
        line_ci(axs[2], s["bias"], s, agent)
    axs[2].set(
        xlabel="length bias lambda (reward per token)",
        ylabel="normalised gap (fraction of opt - ref)",
        title="spurious length bias",
    )
    for a in axs:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    return axs


def check(table) -> None:
    df = table.assign(agent=_agent(table))
    df = subset(df, **{"corruption.misspec.omit": "[]", "corruption.misspec.length_bias": 0.0})
    exact = df[df["agent"] == "exact_planner"]
    at_zero = exact[exact["corruption.misspec.angle"] == 0]["gap"]
    assert len(at_zero) > 0 and np.all(at_zero == 0.0), f"gap at alpha = 0 is not 0: {at_zero.tolist()}"
    rho, p = spearman_trend(exact["corruption.misspec.angle"], exact["normalized_gap"])
    assert rho > 0 and p < 0.01, f"gap does not rise with alpha: Spearman rho = {rho:.3f}, one-sided p = {p:.3g}"
