"""Reward sparsity: dense per-token reward vs the whole return on the last token.

Both give every sequence the same return, so the optimum is the same; only credit assignment differs. Tabular
Q-learning and sampled REINFORCE (KL penalty beta = 0.01) learn on worlds of horizon 3 to 8; the learning curve
records the normalised gap at log-spaced episode counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, mean_ci, spearman_trend

TABLE = "curves"
CLAIM = "terminal-only reward needs more episodes, increasingly with the horizon, to the same asymptote"


def _agent(df):
    return df["agent.name"] if "agent.name" in df.columns else df["agent"]


def with_gap(table) -> pd.DataFrame:
    span = table["optimal_return"] - table["reference_return"]
    return table.assign(method=_agent(table), ngap=(table["optimal_return"] - table["oracle_return"]) / span)


def per_run(table) -> pd.DataFrame:
    """One row per run: the curve's mean normalised gap (its area on a log axis) and its final gap."""
    df = with_gap(table)
    keys = ["method", "env.horizon", "corruption.sparsity.mode", "seed"]
    return df.sort_values("step").groupby(keys).agg(area=("ngap", "mean"), final=("ngap", "last")).reset_index()


def plot(table, ax=None):
    df = with_gap(table)
    methods = sorted(df["method"].unique())
    axs = axes(len(methods) + 1, ax)
    colors = {h: f"C{i}" for i, h in enumerate(sorted(df["env.horizon"].unique()))}
    for a, method in zip(axs, methods, strict=False):
        mine = df[df["method"] == method]
        grid = np.geomspace(max(mine.groupby("seed")["step"].min().max(), 1), mine["step"].max(), 40)
        for (h, mode), g in mine.groupby(["env.horizon", "corruption.sparsity.mode"]):
            # each run's checkpoints fall at slightly different episode counts: interpolate onto one log grid
            runs = [
                np.interp(np.log(grid), np.log(r["step"]), r["ngap"]) for _, r in g.sort_values("step").groupby("seed")
            ]
            a.plot(
                grid,
                np.mean(runs, axis=0),
                ls="-" if mode == "none" else "--",
                color=colors[h],
                label=f"H={h}" if mode == "none" else None,
            )
        a.set(
            xscale="log",
            xlabel="episodes (log scale)",
            ylabel="normalised gap (fraction of opt - ref)",
            title=f"{method}: solid dense, dashed terminal",
        )
        a.legend(fontsize=7, ncol=2)
    runs = per_run(table)
    wide = runs.pivot_table(
        index=["method", "env.horizon", "seed"], columns="corruption.sparsity.mode", values="area"
    ).reset_index()
    wide["extra"] = wide["terminal"] - wide["none"]
    for method, g in wide.groupby("method"):
        s = np.array([(h, *mean_ci(x["extra"])) for h, x in g.groupby("env.horizon")])
        axs[-1].plot(s[:, 0], s[:, 1], "o-", label=method)
        axs[-1].fill_between(s[:, 0], s[:, 2], s[:, 3], alpha=0.2)
    axs[-1].axhline(0, color="grey", lw=0.5)
    axs[-1].set(
        xlabel="horizon H (tokens)", ylabel="extra mean normalised gap (terminal - dense)", title="cost of sparsity"
    )
    axs[-1].legend(fontsize=7)
    return axs


def check(table) -> None:
    runs = per_run(table)
    wide = runs.pivot_table(
        index=["method", "env.horizon", "seed"], columns="corruption.sparsity.mode", values=["area", "final"]
    ).reset_index()
    extra = (wide[("area", "terminal")] - wide[("area", "none")]).to_numpy()
    w = stats.wilcoxon(extra, alternative="greater")
    assert w.pvalue < 0.01, (
        f"terminal reward is not slower: mean extra gap {extra.mean():.3f}, Wilcoxon p = {w.pvalue:.3g}"
    )
    # the trend in H within each method (their scales differ), combined across methods (Stouffer)
    flat = pd.DataFrame({"method": wide["method"].to_numpy(), "H": wide["env.horizon"].to_numpy(), "extra": extra})
    trends = {m: spearman_trend(g["H"], g["extra"]) for m, g in flat.groupby("method")}
    combined = stats.combine_pvalues([p for _, p in trends.values()], method="stouffer").pvalue
    assert all(rho > 0 for rho, _ in trends.values()) and combined < 0.05, (
        f"the cost of sparsity does not grow with H: per-method Spearman (rho, p) {trends}, combined p = {combined:.3g}"
    )
    final = wide[("final", "none")].to_numpy(), wide[("final", "terminal")].to_numpy()
    converged = final[0] < 0.05  # where dense reward has converged, terminal reward reaches the same optimum
    gap = np.abs(final[1] - final[0])[converged]
    assert converged.any() and np.median(gap) < 0.05, f"different asymptotes: |terminal - dense| final gaps {gap}"
