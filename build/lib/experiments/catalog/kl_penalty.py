"""A KL penalty acts like early stopping (Gao, Schulman, Hilton 2022).

Sweep: the KL coefficient beta of exact (natural) policy gradient on a reward model fitted to 300 preferences, in
the overoptimisation world; each run records oracle return and KL(pi || pi_ref) at log-spaced training
checkpoints. Gao et al. found that the penalty does not move the frontier of gold reward against KL: penalised
runs stop earlier (at a smaller KL) on the same curve that an unpenalised run traces while it trains.

The check compares, seed by seed, each penalised run with the least penalised one (beta = 0.001) at matched KL
(interpolated in log KL over the KL range both runs cover), in units of the least penalised run's oracle range.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, mean_ci, spearman_trend

TABLE = "curves"
CLAIM = (
    "a KL penalty acts like early stopping: larger penalties end training at a smaller KL, but at matched KL their "
    "oracle return equals the unpenalised run's (within 10% of its range): the KL-gold frontier does not move"
)
MARGIN = 0.10  # equivalence margin, in units of the least penalised run's oracle range along training
GRID_POINTS = 8


def _runs(table) -> dict[tuple[float, int], tuple[np.ndarray, np.ndarray]]:
    """``(beta, seed) -> (kl, oracle gain over pi_ref)`` along training, in step order."""
    out = {}
    for (beta, seed), g in table.groupby(["agent.beta", "seed"]):
        g = g.sort_values("step")
        out[(float(beta), int(seed))] = (
            g["kl_to_reference"].to_numpy(),
            (g["oracle_return"] - g["reference_return"]).to_numpy(),
        )
    return out


def matched_differences(table) -> pd.DataFrame:
    """Per (beta, seed), beta above the smallest: the mean oracle difference to the least penalised run of the same
    seed at matched KL, divided by that run's oracle range (positive = the penalty did better)."""
    runs = _runs(table)
    base_beta = min(b for b, _ in runs)
    rows = []
    for (beta, seed), (kl, gain) in runs.items():
        if beta == base_beta or (base_beta, seed) not in runs:
            continue
        kl0, gain0 = runs[(base_beta, seed)]
        lo, hi = max(kl.min(), kl0.min(), 1e-6), min(kl.max(), kl0.max())
        if hi <= lo:
            continue
        grid = np.log(np.geomspace(lo, hi, GRID_POINTS))
        here = np.interp(grid, np.log(np.maximum(kl, 1e-12)), gain)
        there = np.interp(grid, np.log(np.maximum(kl0, 1e-12)), gain0)
        span = float(np.ptp(gain0)) or 1.0
        rows.append({"agent.beta": beta, "seed": seed, "difference": float(np.mean(here - there)) / span})
    return pd.DataFrame(rows)


def plot(table, ax=None):
    axs = axes(2, ax)
    runs = _runs(table)
    betas = sorted({b for b, _ in runs})
    top = max(float(np.sqrt(kl.max())) for kl, _ in runs.values())
    grid = np.linspace(0.0, top, 30)
    for beta in betas:
        curves = []
        for (b, _), (kl, gain) in runs.items():
            if b == beta:
                d = np.sqrt(kl)
                curves.append(np.where(grid <= d.max(), np.interp(grid, d, gain, left=np.nan), np.nan))
        curves = np.array(curves)
        keep = np.mean(np.isfinite(curves), axis=0) >= 0.5  # where at least half the seeds got that far
        s = np.array([mean_ci(c) for c in curves.T[keep]])
        axs[0].plot(grid[keep], s[:, 0], label=f"beta = {beta:g}")
        axs[0].fill_between(grid[keep], s[:, 1], s[:, 2], alpha=0.15, color=axs[0].lines[-1].get_color())
    axs[0].set(
        xlabel="d = sqrt(KL(pi || pi_ref)) along training",
        ylabel="oracle return gain over pi_ref",
        title="the KL-oracle frontier (training checkpoints)",
    )
    axs[0].legend(fontsize=7)
    final = table.sort_values("step").groupby(["agent.beta", "seed"]).tail(1)
    s = np.array([(b, *mean_ci(g["kl_to_reference"])) for b, g in final.groupby("agent.beta")])
    axs[1].errorbar(s[:, 0], s[:, 1], yerr=[s[:, 1] - s[:, 2], s[:, 3] - s[:, 1]], marker="o", capsize=3)
    axs[1].set(
        xscale="log",
        xlabel="KL penalty beta (log scale)",
        ylabel="KL at the end of training",
        title="where training stops",
    )
    return axs


def check(table) -> None:
    final = table.sort_values("step").groupby(["agent.beta", "seed"]).tail(1)
    rho, p = spearman_trend(final["agent.beta"], -final["kl_to_reference"])
    assert rho > 0 and p < 0.01, f"the final KL does not fall as beta grows (Spearman rho = {-rho:.3f}, p = {p:.3g})"
    diff = matched_differences(table)["difference"].to_numpy()
    assert diff.size >= 4, "the sweep needs several penalised runs beside the least penalised one"
    # two one-sided tests (TOST): the mean difference lies within +-MARGIN
    p_low = stats.ttest_1samp(diff, -MARGIN, alternative="greater").pvalue
    p_high = stats.ttest_1samp(diff, MARGIN, alternative="less").pvalue
    p_tost = max(p_low, p_high)
    assert p_tost < 0.01, (
        f"at matched KL the penalised runs differ from the unpenalised one by {diff.mean():+.3f} of its range on "
        f"average (sd {diff.std(ddof=1):.3f}); equivalence within +-{MARGIN} not shown (TOST p = {p_tost:.3g})"
    )
