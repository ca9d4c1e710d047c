"""Phase transitions in reward hacking (Pan, Bhatia, Steinhardt 2022).

Sweep: a proxy that overrates one bad output per prompt (``corruption.misspec.exploit = 1``: the oracle-worst output
of response length L beats the proxy's best by one oracle-return sd), and the exact soft optimum along a beta path
from 1000 down to 0.001 (optimisation power, or capability, grows to the right). One prompt, so each run has one
exploit.

What holds by construction, and is therefore not tested: the oracle return ends in a collapse (the end of the path is
the proxy's argmax, the exploit, which is the oracle's worst output of its length); the proxy return never falls
along the soft optimum's own path (``d/dbeta E_pi_beta[r_hat] = -Var/beta^2``); and with no exploit (proxy = oracle)
the oracle return never falls, for the same reason, so the sweep has no such control.

What is measured and tested: *how sharp* the collapse is, and *where* it comes. The soft optimum moves mass onto the
exploit once ``1 / beta`` outweighs its improbability under pi_ref, over a range of beta set by how rare it is and by
the margin, not by construction. (1) Sharpness: the oracle's fall from its peak to the end, 10% to 90%, spans at most
half a decade of beta in every run. (2) Rarer (longer) exploits collapse later: log10 beta* at the fall's midpoint
falls with the exploit's length (Spearman over runs, and paired by seed between the shortest and the longest).
(3) Rarer exploits collapse more sharply: the width falls with the exploit's length (Spearman over runs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, column, mean_ci

TABLE = "curves"
CLAIM = (
    "with an overrated bad output, the oracle return collapses within half a decade of optimisation pressure "
    "(beta), and rarer (longer) exploits collapse later and more sharply (the collapse itself, a rising proxy and a "
    "flat control hold by construction of the soft optimum)"
)
MAX_WIDTH = 0.5  # decades of beta for the 10%-to-90% part of a collapse
ALPHA = 0.01
EXPLOIT = "corruption.misspec.exploit"
LENGTH = "corruption.misspec.exploit_length"


def collapses(table) -> pd.DataFrame:
    """Per run: the oracle return's fall after its peak along the path, its width (decades of beta from 10% to 90%
    of the fall, interpolated) and its midpoint ``log10 beta*``; and the largest fall of the proxy return."""
    df = table.assign(**{EXPLOIT: column(table, EXPLOIT, 1.0)})
    rows = []
    for (exploit, length, seed), g in df.groupby([EXPLOIT, LENGTH, "seed"], dropna=False):
        g = g.sort_values("beta", ascending=False)  # growing pressure
        logb = np.log10(g["beta"].to_numpy(dtype=float))
        oracle, proxy = g["oracle_return"].to_numpy(dtype=float), g["proxy_return"].to_numpy(dtype=float)
        k = int(oracle.argmax())
        fall = float(oracle[k] - oracle[-1])
        width = mid = np.nan
        if fall > 1e-9:
            frac = (oracle[k] - oracle[k:]) / fall  # 0 at the peak, 1 at the end (not monotone in general)
            at = [np.interp(q, np.maximum.accumulate(frac), logb[k:]) for q in (0.1, 0.5, 0.9)]
            width, mid = at[0] - at[2], at[1]
        rows.append(
            {
                EXPLOIT: float(exploit),
                LENGTH: length,
                "seed": int(seed),
                "fall": fall,
                "span": float(np.ptp(oracle)) or 1.0,
                "width": width,
                "log10_beta_star": mid,
                "proxy_fall": float(np.max(np.maximum.accumulate(proxy) - proxy)),
            }
        )
    return pd.DataFrame(rows)


def plot(table, ax=None):
    axs = axes(3, ax)
    for length, g in table.groupby(LENGTH):
        per_seed = [s.sort_values("beta", ascending=False) for _, s in g.groupby("seed")]
        K = min(len(s) for s in per_seed)
        beta = per_seed[0]["beta"].to_numpy()[:K]
        gain = np.array([(s["oracle_return"] - s["reference_return"]).to_numpy()[:K] for s in per_seed])
        m = np.array([mean_ci(c) for c in gain.T])
        axs[0].plot(1 / beta, m[:, 0], label=f"exploit of length {length:g}")
        axs[0].fill_between(1 / beta, m[:, 1], m[:, 2], alpha=0.15, color=axs[0].lines[-1].get_color())
    axs[0].axhline(0, color="grey", lw=0.5)
    axs[0].set(
        xscale="log",
        xlabel="optimisation pressure 1 / beta (log scale)",
        ylabel="oracle return gain over pi_ref (reward units)",
        title="oracle return along the soft-optimum path",
    )
    axs[0].legend(fontsize=6.5)
    c = collapses(table)
    for j, (col, ax_, ylabel, title) in enumerate(
        (
            ("log10_beta_star", axs[1], "log10(1 / beta) at the collapse's midpoint", "how much power finds it"),
            ("width", axs[2], "collapse width, 10% to 90% of the fall\n(decades of beta)", "how sharp the collapse is"),
        )
    ):
        sign = -1.0 if j == 0 else 1.0
        s = np.array([(L, *mean_ci(sign * g[col])) for L, g in c.groupby(LENGTH)])
        rng = np.random.default_rng(0)
        ax_.scatter(c[LENGTH] + rng.uniform(-0.12, 0.12, len(c)), sign * c[col], s=6, color="grey", alpha=0.6,
                    label="one run (seed)")  # fmt: skip
        ax_.errorbar(s[:, 0], s[:, 1], yerr=[s[:, 1] - s[:, 2], s[:, 3] - s[:, 1]], marker="o", capsize=3,
                     label="mean, 95% CI")  # fmt: skip
        ax_.set(xlabel="exploit length (longer = rarer under pi_ref)", ylabel=ylabel, title=title)
    axs[2].axhline(MAX_WIDTH, color="C3", ls="--", lw=1, label=f"claimed bound ({MAX_WIDTH} decades)")
    axs[2].set_ylim(bottom=0)
    axs[2].legend(fontsize=7)
    axs[1].legend(fontsize=7)
    return axs


def check(table) -> None:
    c = collapses(table)
    hacked = c[c[EXPLOIT] > 0]
    assert len(hacked), "the sweep needs corruption.misspec.exploit > 0"
    never = int(hacked["width"].isna().sum())
    assert never == 0, f"{never} of {len(hacked)} exploited runs never collapse (the exploit was not found)"
    widest = float(hacked["width"].max())
    q = hacked.groupby(LENGTH)["width"].median()
    order = hacked.pivot_table(index="seed", columns=LENGTH, values="log10_beta_star")
    short, long_ = order.columns.min(), order.columns.max()
    diff = (order[short] - order[long_]).dropna().to_numpy()
    rho, p_rho = stats.spearmanr(hacked[LENGTH], hacked["log10_beta_star"])
    w = stats.wilcoxon(diff, alternative="greater")
    rho_w, p_w = stats.spearmanr(hacked[LENGTH], hacked["width"])
    slope = np.polyfit(hacked[LENGTH].astype(float), hacked["log10_beta_star"], 1)[0]
    print(
        f"collapse width: median {hacked['width'].median():.2f}, widest {widest:.2f} decades of beta "
        f"(median by length: {', '.join(f'{k:g}: {v:.2f}' for k, v in q.items())}; "
        f"Spearman rho with length = {rho_w:.2f}, p = {p_w:.2g}); log10 beta* falls by "
        f"{-slope:.2f} per unit of length (Spearman rho = {rho:.2f}, p = {p_rho:.2g}); length {long_:g} collapses "
        f"{diff.mean():.2f} decades later than length {short:g} (Wilcoxon p = {w.pvalue:.2g}, {diff.size} seeds)"
    )
    assert widest <= MAX_WIDTH, f"a collapse spans {widest:.2f} decades of beta (expected <= {MAX_WIDTH})"
    assert rho < 0 and p_rho / 2 < ALPHA, (
        f"log10 beta* does not fall with the exploit's length (Spearman rho = {rho:.2f}, two-sided p = {p_rho:.3g})"
    )
    assert rho_w < 0 and p_w / 2 < ALPHA, (
        f"rarer exploits do not collapse more sharply (Spearman rho of width and length = {rho_w:.2f}, p = {p_w:.3g})"
    )
    assert w.pvalue < ALPHA, (
        f"exploits of length {long_} do not collapse later than those of length {short}: log10 beta* differs by "
        f"{diff.mean():.2f} on average (Wilcoxon p = {w.pvalue:.3g})"
    )
