"""Early stopping (Karwowski et al. 2023, Section 5): the rule avoids Goodhart drops, at a cost in true return.

Each run walks the soft planner's beta path on a random world whose proxy's linear weights sit at angle alpha from
the oracle's, and applies the early-stopping rule with bound theta (``agent.early_stop_angle``): stop before the first
step whose angle to the projected proxy exceeds pi/2 - theta (``sim.goodhart``). The curve keeps the whole path, so
each run gives the unstopped outcome (the path's last point) and the stopped one (point ``early_stop_step``). A run
is *covered* when the measured projected angle between oracle and proxy (``reward_angle``) is within theta: the case
the rule is built for. Heights are in units of the oracle return's range over all policies (optimal - worst), the
paper's normalised drop height (NDH).

By construction, not tested: on a covered run the oracle return never falls before the stop (the paper's theorem;
the unit tests in ``tests/test_goodhart.py`` check it on random worlds), and the cost (best point on the path minus
the stopped point) is >= 0. What is tested, over the covered runs where the rule took at least one step (a rule that
never moves avoids every drop and proves nothing):

- drops are avoided: the unstopped path drops (NDH > 1e-4) in some of these runs and the stopped prefix does not
  (McNemar's exact test on the paired drop indicators, one-sided; effect: the difference in drop frequency);
- the price is real: the stopped point is below the path's best point (Wilcoxon signed-rank, one-sided; effect: the
  mean cost in NDH units, reported beside the mean drop it avoids).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, mean_ci

TABLE = "curves"
CLAIM = (
    "the early-stopping rule avoids the Goodhart drops of the unstopped path whenever the true reward is within its "
    "angle bound, at a measured cost in oracle return against the path's best point"
)
#: A drop: NDH above this (the stopped prefixes of covered runs are exactly 0 up to rounding, ~1e-15).
DROP = 1e-4
ALPHA = 0.01
#: The smallest effect the check accepts: the drop frequency removed among the covered runs that moved.
MIN_DIFF = 0.1


def runs(table) -> pd.DataFrame:
    """One row per run: alpha, theta, seed, the measured angle, ``k`` (the stop, 1-based), the unstopped and stopped
    NDH, the cost (best point on the path - stopped point) and the stopped minus the unstopped end, all in units of
    the oracle return's range over policies."""
    rows = []
    keys = ["corruption.misspec.angle", "agent.early_stop_angle", "seed"]
    for (alpha, theta, seed), g in table.groupby(keys):
        g = g.sort_values("step")
        j = g["oracle_return"].to_numpy(dtype=float)
        k = int(round(float(g["early_stop_step"].iloc[0])))
        k = min(max(k, 1), len(j))
        span = float(g["optimal_return"].iloc[0]) - float(g["oracle_worst_return"].iloc[0])
        span = span if span > 0 else np.nan
        rows.append(
            {
                "alpha": float(alpha),
                "theta": float(theta),
                "seed": seed,
                "angle": float(g["reward_angle"].iloc[0]),
                "k": k,
                "ndh_full": (j.max() - j[-1]) / span,
                "ndh_stop": (j[:k].max() - j[k - 1]) / span,
                "cost": (j.max() - j[k - 1]) / span,
                "vs_end": (j[k - 1] - j[-1]) / span,
            }
        )
    d = pd.DataFrame(rows)
    d["covered"] = d["angle"] <= d["theta"]
    d["moved"] = d["k"] >= 2
    d["drop_full"] = d["ndh_full"] > DROP
    d["drop_stop"] = d["ndh_stop"] > DROP
    return d


def statistics(table) -> dict:
    """McNemar's exact test of the drop indicators and the Wilcoxon test of the cost, over covered runs that moved."""
    d = runs(table)
    c = d[d["covered"] & d["moved"]]
    n = len(c)
    b = int((c["drop_full"] & ~c["drop_stop"]).sum())  # drops the rule avoided
    w = int((~c["drop_full"] & c["drop_stop"]).sum())  # drops the rule made
    p_mcnemar = float(stats.binomtest(b, b + w, 0.5, alternative="greater").pvalue) if b + w else 1.0
    freq_full = float(c["drop_full"].mean()) if n else np.nan
    freq_stop = float(c["drop_stop"].mean()) if n else np.nan
    cost = c["cost"].to_numpy(dtype=float)
    p_cost = float(stats.wilcoxon(cost, alternative="greater").pvalue) if n and np.any(cost != 0) else 1.0
    return {
        "runs": d,
        "n": n,
        "n_covered": int(d["covered"].sum()),
        "avoided": b,
        "made": w,
        "p_mcnemar": p_mcnemar,
        "freq_full": freq_full,
        "freq_stop": freq_stop,
        "diff": freq_full - freq_stop if n else np.nan,
        "p_cost": p_cost,
        "cost": float(cost.mean()) if n else np.nan,
        "drop_avoided": float(c["ndh_full"].mean()) if n else np.nan,
    }


def plot(table, ax=None):
    s = statistics(table)
    d = s["runs"]
    axs = axes(3, ax, width=4.4)
    thetas = sorted(d["theta"].unique())
    width = 0.35
    for i, (label, col) in enumerate([("unstopped path", "drop_full"), ("early-stopped", "drop_stop")]):
        freqs = []
        for theta in thetas:
            g = d[(d["theta"] == theta) & d["covered"]]
            freqs.append(g[col].mean() if len(g) else np.nan)
        axs[0].bar(np.arange(len(thetas)) + (i - 0.5) * width, freqs, width, label=label)
    axs[0].set_xticks(np.arange(len(thetas)), [f"{t:g}" for t in thetas])
    axs[0].set(xlabel="angle bound theta (rad)", ylabel=f"fraction of covered runs with NDH > {DROP:g}")
    axs[0].set_title(
        f"drops on covered runs (reward_angle <= theta)\nmoved: {s['freq_full']:.2f} -> {s['freq_stop']:.2f} "
        f"(McNemar p = {s['p_mcnemar']:.1g}, n = {s['n']})",
        fontsize=9,
    )
    axs[0].legend(fontsize=7)
    for theta, g in d.groupby("theta"):
        axs[1].scatter(g["angle"], g["cost"], s=8, alpha=0.5, label=f"theta = {theta:g}")
        axs[1].axvline(theta, color=axs[1].collections[-1].get_facecolor()[0], ls=":", lw=0.8)
    axs[1].set(xlabel="measured projected angle arg(oracle, proxy) (rad)", ylabel="cost: best on path - stopped (NDH)")
    axs[1].set_title(
        f"the price of stopping (covered, moved: mean {s['cost']:.3f},\nWilcoxon p = {s['p_cost']:.1g}) "
        f"vs the drop it avoids (mean {s['drop_avoided']:.4f})",
        fontsize=9,
    )
    axs[1].legend(fontsize=7)
    rows = []
    for theta, g in d[d["covered"]].groupby("theta"):
        for name, col in [("cost", "cost"), ("drop avoided", "ndh_full"), ("stopped - end", "vs_end")]:
            m, lo, hi = mean_ci(g[col])
            rows.append((theta, name, m, lo, hi))
    r = pd.DataFrame(rows, columns=["theta", "what", "mean", "lo", "hi"])
    for name, g in r.groupby("what", sort=False):
        axs[2].errorbar(g["theta"], g["mean"], yerr=[g["mean"] - g["lo"], g["hi"] - g["mean"]], marker="o", ms=3,
                        capsize=2, label=name)  # fmt: skip
    axs[2].axhline(0, color="grey", lw=0.6)
    axs[2].set(xlabel="angle bound theta (rad)", ylabel="oracle return (NDH units), covered runs")
    axs[2].set_title("mean cost, avoided drop and stopped - unstopped end\n(95% bootstrap CIs)", fontsize=9)
    axs[2].legend(fontsize=7)
    return axs


def check(table) -> None:
    s = statistics(table)
    assert s["n"] >= 10, (
        f"too few covered runs where the rule moved to test it: {s['n']} of {s['n_covered']} covered runs took a step"
    )
    assert s["p_mcnemar"] < ALPHA and s["diff"] >= MIN_DIFF, (
        f"the rule does not avoid the unstopped path's drops on covered runs: drop frequency {s['freq_full']:.3f} "
        f"unstopped vs {s['freq_stop']:.3f} stopped (avoided {s['avoided']}, made {s['made']}, McNemar exact "
        f"p = {s['p_mcnemar']:.3g}; need p < {ALPHA} and a difference >= {MIN_DIFF})"
    )
    assert s["p_cost"] < ALPHA, (
        f"no measurable cost of stopping: mean {s['cost']:.4f} of the range, Wilcoxon p = {s['p_cost']:.3g}"
    )
