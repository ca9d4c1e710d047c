"""RLHF vs RL-free methods at matched KL.

On the same preference data: RLHF (a linear reward model by MAP, then the exact KL-regularised policy gradient
along a beta path), DPO (a tabular policy, same beta path) and best-of-n under the reward model (n path). Each run
traces oracle return against KL(pi || pi_ref); the curves are interpolated (in log KL) at a common grid of KL
values and averaged over seeds, per condition (label flip rate, number of labels).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from experiments.catalog.common import axes, mean_ci

TABLE = "curves"
CLAIM = "RLHF, DPO and best-of-n compared at matched KL with 95% CIs (no winner asserted)"
KL_GRID = np.array([0.25, 0.5, 1.0, 2.0, 4.0])


def _method(df):
    return df["agent.name"] if "agent.name" in df.columns else df["agent"]


def matched(table) -> pd.DataFrame:
    """Oracle return (minus the reference's) of every run interpolated at ``KL_GRID``; NaN outside its range."""
    rows = []
    df = table.assign(method=_method(table))
    keys = ["method", "feedback.flip", "feedback.n", "seed"]
    for key, g in df.groupby(keys):
        g = g.sort_values("kl_to_reference")
        kl = g["kl_to_reference"].to_numpy()
        gain = (g["oracle_return"] - g["reference_return"]).to_numpy()
        ok = kl > 0
        for target in KL_GRID:
            inside = ok.sum() >= 2 and kl[ok].min() <= target <= kl[ok].max()
            value = np.interp(np.log(target), np.log(kl[ok]), gain[ok]) if inside else np.nan
            rows.append({**dict(zip(keys, key, strict=True)), "kl": target, "gain": value})
    return pd.DataFrame(rows)


def plot(table, ax=None):
    m = matched(table)
    conditions = sorted(m.groupby(["feedback.flip", "feedback.n"]).groups)
    axs = np.atleast_1d(axes(len(conditions), ax))
    for a, (flip, n) in zip(axs, conditions, strict=False):
        c = m[(m["feedback.flip"] == flip) & (m["feedback.n"] == n)]
        for k, (method, g) in enumerate(c.groupby("method")):
            s = np.array([(kl, *mean_ci(x["gain"])) for kl, x in g.groupby("kl")])
            offset = (k - 1) * 0.04
            a.errorbar(
                s[:, 0] * (1 + offset),
                s[:, 1],
                yerr=[s[:, 1] - s[:, 2], s[:, 3] - s[:, 1]],
                marker="o",
                ms=3,
                capsize=2,
                label={"policy_gradient": "RLHF (RM + KL-reg. PG)"}.get(method, method),
            )
        a.set(
            xscale="log",
            xlabel="matched KL(pi || pi_ref) (nats)",
            ylabel="oracle gain over pi_ref (reward units)",
            title=f"flip {flip:g}, {int(n)} labels",
        )
        a.xaxis.set_major_locator(FixedLocator(KL_GRID))
        a.xaxis.set_major_formatter(FixedFormatter([f"{k:g}" for k in KL_GRID]))
        a.xaxis.set_minor_locator(NullLocator())
        a.legend(fontsize=7)
    return axs


def check(table) -> None:
    m = matched(table)
    methods = set(m["method"])
    assert methods == {"policy_gradient", "dpo", "best_of_n"}, f"missing methods: got {sorted(methods)}"
    for (flip, n, method), g in m.groupby(["feedback.flip", "feedback.n", "method"]):
        means = g.groupby("kl")["gain"].mean()
        covered = means.notna().sum()
        assert covered >= 3, f"{method} (flip {flip}, n {n}) reaches only {covered} of the matched KL values"
        finite = [mean_ci(x["gain"]) for _, x in g.groupby("kl") if x["gain"].notna().any()]
        assert all(np.isfinite(v).all() for v in finite), f"{method}: non-finite confidence intervals"
