"""Phase transitions in reward hacking (Pan, Bhatia, Steinhardt 2022).

Sweep: a proxy that overrates one bad output per prompt (``corruption.misspec.exploit = 1``: the oracle-worst output
of response length L beats the proxy's best by one oracle-return sd; ``exploit = 0`` is the control, proxy =
oracle), and the exact soft optimum along a beta path from 1000 down to 0.001 (optimisation power, or capability,
grows to the right). One prompt, so each run has one exploit.

The soft optimum moves probability onto the exploit only once ``1 / beta`` outweighs the exploit's improbability
under pi_ref, and then all at once: the oracle return collapses within a fraction of a decade of beta while the
proxy return keeps rising. Longer exploits are rarer under pi_ref, so they take more power before they are found.
(The sharpness comes from the rarity: the empty response, one pi_ref draw in six, collapses over up to 0.7 decades,
so the sweep starts at length 1.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, mean_ci

TABLE = "curves"
CLAIM = (
    "with an overrated bad output, the oracle return collapses within half a decade of optimisation pressure while "
    "the proxy keeps rising, and rarer (longer) exploits collapse later; without one, it never falls"
)
MAX_WIDTH = 0.5  # decades of beta for the 10%-to-90% part of a collapse
EXPLOIT = "corruption.misspec.exploit"
LENGTH = "corruption.misspec.exploit_length"


def collapses(table) -> pd.DataFrame:
    """Per run: the oracle return's fall after its peak along the path, its width (decades of beta from 10% to 90%
    of the fall, interpolated) and its midpoint ``log10 beta*``; and the largest fall of the proxy return."""
    rows = []
    for (exploit, length, seed), g in table.groupby([EXPLOIT, LENGTH, "seed"], dropna=False):
        g = g.sort_values("beta", ascending=False)  # growing pressure
        logb = np.log10(g["beta"].to_numpy())
        oracle, proxy = g["oracle_return"].to_numpy(), g["proxy_return"].to_numpy()
        k = int(oracle.argmax())
        fall = float(oracle[k] - oracle[-1])
        width = mid = np.nan
        if fall > 1e-9:
            frac = (oracle[k] - oracle[k:]) / fall  # 0 at the peak, 1 at the end (not monotone in general)
            at = [logb[k:][np.argmax(frac >= q)] for q in (0.1, 0.5, 0.9)]
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
    axs = axes(2, ax)
    for (exploit, length), g in table.groupby([EXPLOIT, LENGTH], dropna=False):
        if exploit == 0 and length != table[LENGTH].min():
            continue  # the control is the same world at every length: draw it once
        per_seed = [s.sort_values("beta", ascending=False) for _, s in g.groupby("seed")]
        beta = per_seed[0]["beta"].to_numpy()
        gain = np.array([(s["oracle_return"] - s["reference_return"]).to_numpy() for s in per_seed])
        m = np.array([mean_ci(c) for c in gain.T])
        label = "control (no exploit)" if exploit == 0 else f"exploit of length {length:g}"
        axs[0].plot(
            1 / beta, m[:, 0], label=label, ls="--" if exploit == 0 else "-", color="k" if exploit == 0 else None
        )
        axs[0].fill_between(1 / beta, m[:, 1], m[:, 2], alpha=0.15, color=axs[0].lines[-1].get_color())
    axs[0].set(
        xscale="log",
        xlabel="optimisation pressure 1 / beta (log scale)",
        ylabel="oracle return gain over pi_ref",
        title="the oracle return along the soft optimum's path",
    )
    axs[0].legend(fontsize=6)
    c = collapses(table)
    c = c[c[EXPLOIT] > 0]
    s = np.array([(L, *mean_ci(g["log10_beta_star"])) for L, g in c.groupby(LENGTH)])
    axs[1].errorbar(s[:, 0], -s[:, 1], yerr=[s[:, 3] - s[:, 1], s[:, 1] - s[:, 2]], marker="o", capsize=3)
    axs[1].set(
        xlabel="exploit length (longer = rarer under pi_ref)",
        ylabel="log10(1 / beta) at the collapse",
        title="how much power it takes to find the exploit",
    )
    return axs


def check(table) -> None:
    c = collapses(table)
    control, hacked = c[c[EXPLOIT] == 0], c[c[EXPLOIT] > 0]
    assert len(control) and len(hacked), "the sweep needs corruption.misspec.exploit 0 and > 0"
    worst = float((control["fall"] / control["span"]).max())
    assert worst < 1e-6, f"without an exploit the oracle return still falls along the path ({worst:.3g} of its span)"
    assert float(c["proxy_fall"].max()) < 1e-6, "the proxy return falls along the soft optimum's path"
    assert hacked["width"].notna().all(), "some exploited runs never collapse"
    widest = float(hacked["width"].max())
    assert widest <= MAX_WIDTH, f"a collapse spans {widest:.2f} decades of beta (expected <= {MAX_WIDTH})"
    # rarer exploits take more power: per seed, the collapse of the shortest comes at a larger beta than the longest
    wide = hacked.pivot_table(index="seed", columns=LENGTH, values="log10_beta_star")
    short, long_ = wide.columns.min(), wide.columns.max()
    diff = (wide[short] - wide[long_]).dropna().to_numpy()
    w = stats.wilcoxon(diff, alternative="greater")
    assert w.pvalue < 0.01, (
        f"exploits of length {long_} do not collapse later than those of length {short}: log10 beta* differs by "
        f"{diff.mean():.2f} on average (Wilcoxon p = {w.pvalue:.3g})"
    )
