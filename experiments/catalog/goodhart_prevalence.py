"""Goodhart prevalence (Karwowski et al. 2023): how often does optimising a proxy at angle alpha hurt?

Each seed draws a new world and a proxy whose linear weights sit at exactly angle alpha from the oracle's (one
rotation direction per seed, shared by its angles). The axis is not alpha but what Karwowski et al. measure: the
*projected angle* between oracle and proxy over the occupancy polytope (``reward_angle``, ``sim.goodhart``; rewards
that differ by potential shaping or a constant have angle 0), measured for each world's proxy and binned. Along the
soft planner's beta path from pi_ref to the proxy's argmax, the normalised drop height is (best oracle return on the
path - final) / (range on the path); a Goodhart drop is a drop of more than 1% of the range.

By construction, not tested: at alpha = 0 the projected angle is 0 and there is never a drop (the soft optimum of
the oracle itself, pi ∝ pi_ref exp(R/beta), has dE[R]/d(1/beta) = Var(R) >= 0). What is tested, over the worlds with
alpha > 0: the drop height rises with the measured projected angle (Spearman, one-sided) and drops are more frequent
in the highest angle bin than in the lowest (Fisher's exact test on the counts; the difference in frequency is the
effect size).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, mean_ci, normalized_drop, spearman_trend

TABLE = "curves"
CLAIM = (
    "drops (the oracle return falling along the proxy's optimisation path) become higher and more frequent as the "
    "projected angle between proxy and oracle grows (none at angle 0, by construction)"
)
THRESHOLD = 0.01
ALPHA = 0.01
#: Bins of the measured projected angle (radians); a bin needs MIN_BIN worlds to be compared or drawn.
BINS = (0.0, 0.1, 0.2, 0.35, 0.55, 0.8, 1.1, 1.4, np.pi)
MIN_BIN = 5


def drops(table) -> pd.DataFrame:
    """One row per run: the weight angle ``alpha``, the measured projected angle ``angle`` and its bin, the normalised
    drop height ``ndh`` and whether it is a drop."""
    rows = []
    for (alpha, seed), g in table.groupby(["corruption.misspec.angle", "seed"]):
        g = g.sort_values("step")
        ndh = normalized_drop(g["oracle_return"])
        angle = float(g["reward_angle"].iloc[0])
        rows.append({"alpha": float(alpha), "seed": seed, "angle": angle, "ndh": ndh, "drop": ndh > THRESHOLD})
    d = pd.DataFrame(rows)
    d["bin"] = np.clip(np.searchsorted(BINS, d["angle"].to_numpy(dtype=float), side="right") - 1, 0, len(BINS) - 2)
    return d


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return (np.nan, np.nan)
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (c - h, c + h)


def frequencies(d: pd.DataFrame) -> pd.DataFrame:
    """Drop frequency per bin of the measured angle (bins with at least ``MIN_BIN`` worlds), at the bin's mean angle."""
    rows = []
    for b, g in d.groupby("bin"):
        k, n = int(g["drop"].sum()), len(g)
        if n < MIN_BIN:
            continue
        lo, hi = wilson(k, n)
        rows.append({"bin": int(b), "angle": float(g["angle"].mean()), "k": k, "n": n, "freq": k / n, "lo": lo,
                     "hi": hi})  # fmt: skip
    return pd.DataFrame(rows, columns=["bin", "angle", "k", "n", "freq", "lo", "hi"])


def statistics(table) -> dict:
    """The trend in drop height with the measured angle and the frequency contrast of its extreme bins, over the
    worlds with alpha > 0."""
    d = drops(table)
    pos = d[d["alpha"] > 0]
    rho, p_trend = spearman_trend(pos["angle"], pos["ndh"]) if pos["angle"].nunique() > 1 else (np.nan, np.nan)
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
    axs[0].plot(f["angle"], f["freq"], "o-", label="fraction of worlds with a drop")
    axs[0].fill_between(f["angle"], f["lo"], f["hi"], alpha=0.2, label="95% Wilson interval")
    s = statistics(table)
    axs[0].set(
        xlabel="projected angle arg(oracle, proxy) (rad; binned, at the bin's mean)",
        ylabel=f"fraction of worlds with NDH > {THRESHOLD:g}",
        ylim=(-0.02, 1.02),
    )
    axs[0].set_title(
        f"Goodhart prevalence ({len(d)} worlds, binned by measured angle)\n"
        f"highest - lowest angle bin: {s['diff']:+.2f} (Fisher p = {s['p_fisher']:.1g})",
        fontsize=9,
    )
    axs[0].legend(fontsize=7, loc="upper left")
    for i, (alpha, g) in enumerate(d.groupby("alpha")):
        axs[1].scatter(g["angle"], g["ndh"], s=8, alpha=0.4, color=f"C{i % 10}", label=f"alpha = {alpha:g}")
    m = np.array([(g["angle"].mean(), *mean_ci(g["ndh"])) for _, g in d.groupby("bin") if len(g) >= MIN_BIN])
    axs[1].plot(m[:, 0], m[:, 1], "k-", lw=1, label="mean per bin")
    axs[1].fill_between(m[:, 0], m[:, 2], m[:, 3], color="k", alpha=0.15)
    axs[1].axhline(THRESHOLD, color="grey", ls=":", lw=0.8, label=f"drop threshold {THRESHOLD:g}")
    axs[1].set(xlabel="projected angle arg(oracle, proxy) (rad)", ylabel="normalised drop height (NDH)")
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
        f"drops are not more frequent in the highest projected-angle bin than in the lowest: frequencies "
        f"{dict(zip(f['angle'].round(2), f['freq'].round(3), strict=True))}, difference {s['diff']:.3f}, "
        f"Fisher p = {s['p_fisher']:.3g}"
    )
