"""Goodhart prevalence (Karwowski et al. 2023): how often does optimising a proxy at angle alpha hurt?

Each seed draws a new world and a proxy whose linear weights sit at exactly angle alpha from the oracle's (one
rotation direction per seed, shared by its angles). Along the soft planner's beta path from pi_ref to the proxy's
argmax, the normalised drop height is (best oracle return on the path - final) / (range on the path); a Goodhart
drop is a drop of more than 1% of the range.

By construction, not tested: at alpha = 0 there is never a drop (the soft optimum of the oracle itself,
pi ∝ pi_ref exp(R/beta), has dE[R]/d(1/beta) = Var(R) >= 0). What is tested, over the angles > 0: the drop height
rises with alpha (Spearman, one-sided) and drops are more frequent at the largest angle than at the smallest
(Fisher's exact test on the counts; the difference in frequency is the effect size).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, mean_ci, normalized_drop, spearman_trend

TABLE = "curves"
CLAIM = (
    "drops (the oracle return falling along the proxy's optimisation path) become higher and more frequent as the "
    "proxy's angle from the oracle grows (none at alpha = 0, by construction)"
)
THRESHOLD = 0.01
ALPHA = 0.01


def drops(table) -> pd.DataFrame:
    """One row per run: the angle, its normalised drop height ``ndh`` and whether it is a drop."""
    rows = []
    for (alpha, seed), g in table.groupby(["corruption.misspec.angle", "seed"]):
        ndh = normalized_drop(g.sort_values("step")["oracle_return"])
        rows.append({"alpha": float(alpha), "seed": seed, "ndh": ndh, "drop": ndh > THRESHOLD})
    return pd.DataFrame(rows)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return (np.nan, np.nan)
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (c - h, c + h)


def frequencies(d: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for alpha, g in d.groupby("alpha"):
        k, n = int(g["drop"].sum()), len(g)
        lo, hi = wilson(k, n)
        rows.append({"alpha": alpha, "k": k, "n": n, "freq": k / n, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def statistics(table) -> dict:
    """The trend in drop height and the frequency contrast, over the angles > 0."""
    d = drops(table)
    pos = d[d["alpha"] > 0]
    rho, p_trend = spearman_trend(pos["alpha"], pos["ndh"]) if pos["alpha"].nunique() > 1 else (np.nan, np.nan)
    f = frequencies(pos)
    if len(f) < 2:
        return {"rho": rho, "p_trend": p_trend, "freq": f, "diff": np.nan, "p_fisher": np.nan}
    lo, hi = f.iloc[0], f.iloc[-1]
    fisher = stats.fisher_exact([[hi["k"], hi["n"] - hi["k"]], [lo["k"], lo["n"] - lo["k"]]], alternative="greater")
    return {"rho": rho, "p_trend": p_trend, "freq": f, "diff": hi["freq"] - lo["freq"], "p_fisher": fisher.pvalue}


def plot(table, ax=None):
    d = drops(table)
    axs = axes(2, ax, width=4.6)
    f = frequencies(d)
    axs[0].plot(f["alpha"], f["freq"], "o-", label="fraction of worlds with a drop")
    axs[0].fill_between(f["alpha"], f["lo"], f["hi"], alpha=0.2, label="95% Wilson interval")
    s = statistics(table)
    axs[0].set(
        xlabel="angle alpha between proxy and oracle weights (rad)",
        ylabel=f"fraction of worlds with NDH > {THRESHOLD:g}",
        ylim=(-0.02, 1.02),
    )
    axs[0].set_title(
        f"Goodhart prevalence ({int(f['n'].max())} worlds per angle)\n"
        f"largest - smallest angle > 0: {s['diff']:+.2f} (Fisher p = {s['p_fisher']:.1g})",
        fontsize=9,
    )
    axs[0].legend(fontsize=7, loc="upper left")
    for alpha, g in d.groupby("alpha"):
        jitter = np.random.default_rng(0).uniform(-0.015, 0.015, len(g))
        axs[1].scatter(np.full(len(g), alpha) + jitter, g["ndh"], s=8, alpha=0.4, color="C0")
    m = np.array([(a, *mean_ci(g["ndh"])) for a, g in d.groupby("alpha")])
    axs[1].plot(m[:, 0], m[:, 1], "k-", lw=1, label="mean")
    axs[1].fill_between(m[:, 0], m[:, 2], m[:, 3], color="k", alpha=0.15)
    axs[1].axhline(THRESHOLD, color="grey", ls=":", lw=0.8, label=f"drop threshold {THRESHOLD:g}")
    axs[1].set(xlabel="angle alpha (rad)", ylabel="normalised drop height (NDH)")
    axs[1].set_title(
        f"drop height per world\nSpearman rho = {s['rho']:.2f} over alpha > 0 (p = {s['p_trend']:.1g})", fontsize=9
    )
    axs[1].legend(fontsize=7, loc="upper left")
    return axs


def check(table) -> None:
    s = statistics(table)
    f = s["freq"]
    assert s["p_trend"] < ALPHA, (
        f"the drop height does not rise with the angle: Spearman rho = {s['rho']:.3f}, one-sided p = {s['p_trend']:.3g}"
    )
    assert s["diff"] > 0 and s["p_fisher"] < ALPHA, (
        f"drops are not more frequent at the largest angle than at the smallest: frequencies "
        f"{dict(zip(f['alpha'], f['freq'].round(3), strict=True))}, difference {s['diff']:.3f}, "
        f"Fisher p = {s['p_fisher']:.3g}"
    )
