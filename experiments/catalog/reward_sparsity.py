"""Reward sparsity: dense per-token reward vs the whole return on the last token.

Both give every sequence the same return, so the optimum is the same (by construction); only credit assignment
differs. Tabular Q-learning and sampled REINFORCE (KL penalty beta = 0.01, a per-state running-mean baseline) learn
on worlds of horizon 3 to 8; the learning curve records the normalised gap at log-spaced episode counts. The cost of
sparsity of a run pair (same world, same seed) is the terminal run's mean normalised gap over the curve (its area
on a log axis) minus the dense run's.

Each learner is tested on its own:

* Q-learning must propagate a terminal reward back through H bootstrapped updates: terminal reward costs more
  (Wilcoxon signed-rank over (H, seed) pairs), increasingly with H (Spearman, one-sided).
* REINFORCE with a per-state baseline in a prefix tree pays (almost) nothing: a prefix determines the rewards
  already paid, so a terminal return is the dense return-to-go plus a constant of the state, which the state's
  baseline absorbs; after a state's first visit its updates are the same under both schedules. Its cost is
  equivalent to 0 within ``MARGIN`` (TOST) and smaller than Q-learning's on the same world (Wilcoxon).

Not claimed: that terminal-reward Q-learning reaches the dense asymptote within the budget (at H = 7 and 8 it has
not yet converged after 30000 episodes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, mean_ci, spearman_trend

TABLE = "curves"
CLAIM = (
    "terminal-only reward slows Q-learning, more so the longer the horizon; REINFORCE with a per-state baseline "
    "pays almost nothing for it (in a prefix tree the baseline absorbs the rewards already paid)"
)
MARGIN = 0.05  # REINFORCE's cost of sparsity is equivalent to 0 within this (in mean normalised gap)
ALPHA = 0.01
LEARNER = {"q_learning": "tabular Q-learning", "policy_gradient": "REINFORCE, per-state baseline"}


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
        a.set(xscale="log", xlabel="episodes (log scale)", ylabel="normalised gap (fraction of opt - ref)")
        a.set_title(f"{LEARNER.get(method, method)}\nsolid: dense reward, dashed: terminal only", fontsize=9)
        a.legend(fontsize=7, ncol=2)
    c = costs(table)
    for k, (method, g) in enumerate(c.groupby("method")):
        r = np.array([(h, *mean_ci(x["extra"])) for h, x in g.groupby("env.horizon")])
        axs[-1].plot(r[:, 0], r[:, 1], "o-", color=f"C{k}", label=LEARNER.get(method, method))
        axs[-1].fill_between(r[:, 0], r[:, 2], r[:, 3], alpha=0.2, color=f"C{k}")
    axs[-1].axhspan(-MARGIN, MARGIN, color="grey", alpha=0.15, label=f"equivalence margin +-{MARGIN:g}")
    axs[-1].axhline(0, color="grey", lw=0.5)
    axs[-1].set(xlabel="horizon H (tokens)", ylabel="cost: terminal - dense mean gap")
    s = statistics(table)
    title = "cost of sparsity (mean, 95% CI over seeds)"
    if {"q_learning", "policy_gradient"} <= set(s):
        q, pg = s["q_learning"], s["policy_gradient"]
        title += (
            f"\nQ-learning: {q['mean']:.2f}, grows with H (Spearman p = {q['p_trend']:.1g})"
            f"\nREINFORCE: {pg['mean']:.3f}, within +-{MARGIN:g} (TOST p = {pg['p_tost']:.1g})"
        )
    axs[-1].set_title(title, fontsize=9)
    axs[-1].legend(fontsize=7, loc="upper left")
    return axs


def costs(table) -> pd.DataFrame:
    """One row per (method, H, seed): the cost of sparsity ``extra`` (terminal area - dense area)."""
    runs = per_run(table)
    wide = runs.pivot_table(
        index=["method", "env.horizon", "seed"], columns="corruption.sparsity.mode", values="area"
    ).dropna()
    return (wide["terminal"] - wide["none"]).rename("extra").reset_index()


def tost(x: np.ndarray, margin: float) -> float:
    """The p-value of the two one-sided t-tests that the mean of ``x`` lies within ``(-margin, margin)``."""
    lower = stats.ttest_1samp(x, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(x, margin, alternative="less").pvalue
    return float(max(lower, upper))


def statistics(table) -> dict:
    """Per learner: the mean cost, its test against 0 (Wilcoxon) and its trend in H (Spearman); REINFORCE's TOST;
    the paired contrast of the two learners' costs."""
    c = costs(table)
    out: dict = {}
    for method, g in c.groupby("method"):
        x = g["extra"].to_numpy()
        rho, p_trend = spearman_trend(g["env.horizon"], x) if g["env.horizon"].nunique() > 1 else (np.nan, np.nan)
        out[method] = {
            "mean": float(x.mean()),
            "p_positive": float(stats.wilcoxon(x, alternative="greater").pvalue) if x.size > 1 else np.nan,
            "rho": rho,
            "p_trend": p_trend,
            "p_tost": tost(x, MARGIN) if x.size > 1 else np.nan,
            "by_h": g.groupby("env.horizon")["extra"].mean().round(3).to_dict(),
        }
    if {"q_learning", "policy_gradient"} <= set(c["method"]):
        w = c.pivot_table(index=["env.horizon", "seed"], columns="method", values="extra").dropna()
        d = (w["q_learning"] - w["policy_gradient"]).to_numpy()
        out["p_contrast"] = float(stats.wilcoxon(d, alternative="greater").pvalue) if d.size > 1 else np.nan
    return out


def check(table) -> None:
    s = statistics(table)
    assert "q_learning" in s and "policy_gradient" in s, f"both learners must run: got {sorted(s)}"
    q, pg = s["q_learning"], s["policy_gradient"]
    assert q["p_positive"] < ALPHA and q["mean"] > 0, (
        f"terminal reward does not slow Q-learning: mean extra gap {q['mean']:.3f} (by H {q['by_h']}), "
        f"Wilcoxon p = {q['p_positive']:.3g}"
    )
    assert q["p_trend"] < ALPHA, (
        f"Q-learning's cost of sparsity does not grow with H: Spearman rho = {q['rho']:.3f}, one-sided "
        f"p = {q['p_trend']:.3g} (by H {q['by_h']})"
    )
    assert pg["p_tost"] < ALPHA, (
        f"REINFORCE's cost of sparsity is not within +-{MARGIN}: mean {pg['mean']:.4f} (by H {pg['by_h']}), "
        f"TOST p = {pg['p_tost']:.3g}"
    )
    assert s["p_contrast"] < ALPHA, (
        f"Q-learning's cost of sparsity ({q['mean']:.3f}) is not larger than REINFORCE's ({pg['mean']:.3f}): "
        f"Wilcoxon p = {s['p_contrast']:.3g}"
    )
