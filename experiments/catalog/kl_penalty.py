"""A KL penalty acts like early stopping (Gao, Schulman, Hilton 2022), tested on PPO.

Sweep: the KL coefficient beta of PPO (``agent=ppo``: a log-linear policy over [position, bigram] started at pi_ref,
the KL as a per-token penalty ``r_t - beta log(pi/pi_ref)``, GAE with a learned linear value function, the clipped
surrogate, Adam; 4,000 episodes in batches of 256) on a reward model fitted to 300 preferences, in the
overoptimisation world; each run records oracle return and KL(pi || pi_ref) after every batch. Gao et al. found that
the penalty does not move the frontier of gold reward against KL: penalised runs stop earlier (at a smaller KL) on the
curve that an unpenalised run traces while it trains.

Why not exact natural policy gradient: from pi_ref, each of its iterates is ``pi_t ∝ pi_ref exp(c_t r_hat)``, a soft
optimum of the proxy, whatever the penalty (the penalty only moves c_t), so every run walks the same soft-optimum path
and the claim holds by construction. PPO (like sampled REINFORCE) is not confined to that path.

The check (1) asks the final KL to fall as beta grows (Spearman over runs) and (2) compares, seed by seed, each
penalised run with the least penalised one (the smallest beta) at matched KL (interpolated in log KL over the KL
range both runs cover), in units of the least penalised run's oracle range, and asks the mean difference to lie
within +-10% (two one-sided t-tests, TOST). Same seed = same world, reward model and rollout stream.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter
from scipy import stats

from experiments.catalog.common import axes, mean_ci, spearman_trend

TABLE = "curves"
CLAIM = (
    "for PPO, a KL penalty acts like early stopping: larger penalties end training at a smaller KL, but at matched "
    "KL their oracle return equals the least penalised run's (within 10% of its range, TOST): the KL-oracle "
    "frontier does not move"
)
MARGIN = 0.10  # equivalence margin, in units of the least penalised run's oracle range along training
GRID_POINTS = 8
ALPHA = 0.01


def _runs(table) -> dict[tuple[float, int], tuple[np.ndarray, np.ndarray]]:
    """``(beta, seed) -> (kl, oracle gain over pi_ref)`` along training, in step order."""
    out = {}
    for (beta, seed), g in table.groupby(["agent.beta", "seed"]):
        g = g.sort_values("step")
        out[(float(beta), int(seed))] = (
            g["kl_to_reference"].to_numpy(dtype=float),
            (g["oracle_return"] - g["reference_return"]).to_numpy(dtype=float),
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
        order, order0 = np.argsort(kl), np.argsort(kl0)
        here = np.interp(grid, np.log(np.maximum(kl[order], 1e-12)), gain[order])
        there = np.interp(grid, np.log(np.maximum(kl0[order0], 1e-12)), gain0[order0])
        span = float(np.ptp(gain0)) or 1.0
        rows.append({"agent.beta": beta, "seed": seed, "difference": float(np.mean(here - there)) / span})
    return pd.DataFrame(rows, columns=["agent.beta", "seed", "difference"])


def _final(table) -> pd.DataFrame:
    return table.sort_values("step").groupby(["agent.beta", "seed"]).tail(1)


def plot(table, ax=None):
    axs = axes(3, ax, width=4.8)
    for beta, g in table.groupby("agent.beta"):  # every run of one beta has the same checkpoints: average by step
        per_seed = [r.sort_values("step") for _, r in g.groupby("seed")]
        K = min(len(r) for r in per_seed)
        d = np.mean([np.sqrt(r["kl_to_reference"].to_numpy(dtype=float)[:K]) for r in per_seed], axis=0)
        gain = np.array([(r["oracle_return"] - r["reference_return"]).to_numpy(dtype=float)[:K] for r in per_seed])
        s = np.array([mean_ci(c) for c in gain.T])
        axs[0].plot(d, s[:, 0], "o-", ms=2, label=f"beta = {float(beta):g}")
        axs[0].fill_between(d, s[:, 1], s[:, 2], alpha=0.15, color=axs[0].lines[-1].get_color())
    axs[0].set(
        xlabel="d = sqrt(KL(pi || pi_ref)) along training  (sqrt nats)",
        ylabel="oracle return gain over pi_ref (reward units)",
        title="PPO: KL-oracle frontier (checkpoints)",
    )
    axs[0].legend(fontsize=7, title="KL penalty", title_fontsize=7)
    final = _final(table)
    s = np.array([(b, *mean_ci(g["kl_to_reference"])) for b, g in final.groupby("agent.beta")])
    axs[1].errorbar(s[:, 0], s[:, 1], yerr=[s[:, 1] - s[:, 2], s[:, 3] - s[:, 1]], marker="o", capsize=3)
    axs[1].set(
        xscale="log",
        xlabel="KL penalty beta (log scale)",
        ylabel="KL(pi || pi_ref) at the end of training (nats)",
        title="where training stops",
    )
    diff = matched_differences(table)
    if len(diff):
        s = np.array([(b, *mean_ci(g["difference"])) for b, g in diff.groupby("agent.beta")])
        axs[2].errorbar(s[:, 0], s[:, 1], yerr=[s[:, 1] - s[:, 2], s[:, 3] - s[:, 1]], marker="o", capsize=3)
        for b, g in diff.groupby("agent.beta"):
            axs[2].scatter(np.full(len(g), b), g["difference"], s=6, color="grey", alpha=0.5, zorder=0)
    axs[2].axhspan(-MARGIN, MARGIN, color="C2", alpha=0.12, label=f"equivalence margin +-{MARGIN:g}")
    axs[2].axhline(0, color="grey", lw=0.5)
    axs[2].set(
        xscale="log",
        xlabel="KL penalty beta (log scale)",
        ylabel="oracle difference at matched KL\n(fraction of the least penalised run's range)",
        title="penalised minus least penalised",
    )
    axs[2].legend(fontsize=7)
    betas = sorted(float(b) for b in final["agent.beta"].unique())
    for a in axs[1:]:  # the swept betas as ticks (a log axis over one or two decades crowds its minor labels)
        a.set_xticks(betas, [f"{b:g}" for b in betas])
        a.xaxis.set_minor_formatter(NullFormatter())
    return axs


def check(table) -> None:
    final = _final(table)
    rho, p = spearman_trend(final["agent.beta"], -final["kl_to_reference"])
    assert rho > 0 and p < ALPHA, f"the final KL does not fall as beta grows (Spearman rho = {-rho:.3f}, p = {p:.3g})"
    diff = matched_differences(table)["difference"].to_numpy()
    assert diff.size >= 4, "the sweep needs several penalised runs beside the least penalised one"
    # two one-sided tests (TOST): the mean difference lies within +-MARGIN
    p_low = stats.ttest_1samp(diff, -MARGIN, alternative="greater").pvalue
    p_high = stats.ttest_1samp(diff, MARGIN, alternative="less").pvalue
    p_tost = float(max(p_low, p_high))
    kl = final.groupby("agent.beta")["kl_to_reference"].mean()
    print(
        f"final KL by beta: {', '.join(f'{b:g}: {v:.2f}' for b, v in kl.items())} nats (Spearman rho = {-rho:.2f}, "
        f"p = {p:.2g}); at matched KL the penalised runs differ by {diff.mean():+.3f} of the range on average "
        f"(sd {diff.std(ddof=1):.3f}, {diff.size} runs; TOST p = {p_tost:.2g})"
    )
    assert p_tost < ALPHA, (
        f"at matched KL the penalised runs differ from the least penalised one by {diff.mean():+.3f} of its range on "
        f"average (sd {diff.std(ddof=1):.3f}); equivalence within +-{MARGIN} not shown (TOST p = {p_tost:.3g})"
    )
