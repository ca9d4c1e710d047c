"""RLHF vs RL-free methods at matched KL, with matched policy classes.

On the same preference data (per seed): RLHF (a linear reward model by MAP with a Gaussian prior, then the exact
log-linear natural policy gradient with a KL penalty; its curve is its training path from pi_ref), DPO and IPO
(log-linear policies fitted to the preferences at each beta of a path). Policies, reward model and oracle share
the feature class [position, bigram], so every method can represent the target.

Each run traces oracle gain against KL(pi || pi_ref); the gain is normalised by the attainable gain
(optimal - reference oracle return) and interpolated (in log KL) at ``KL_GRID``. A method's paired contrast on a
seed is its mean gain minus DPO's over the grid points both reach.

Tested: with the smaller number of labels RLHF's gain exceeds DPO's (Wilcoxon signed-rank over seeds, one-sided);
with the larger number the two are equivalent within ``MARGIN`` (two one-sided t-tests, TOST). IPO is drawn, not
tested.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator
from scipy import stats

from experiments.catalog.common import axes, mean_ci

TABLE = "curves"
CLAIM = (
    "with matched log-linear policy classes, RLHF (reward model with a prior + KL-regularised policy gradient) "
    "beats DPO at matched KL when labels are few (100); with 1000 labels the two are equivalent"
)
KL_GRID = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
ALPHA = 0.01
MARGIN = 0.03  # equivalence margin, as a fraction of the attainable oracle gain
RLHF, DPO = "loglinear_pg", "dpo"
NAMES = {RLHF: "RLHF (linear RM + log-linear PG)", DPO: "DPO (log-linear)", "ipo": "IPO (log-linear)"}


def _method(df):
    return df["agent.name"] if "agent.name" in df.columns else df["agent"]


def matched(table) -> pd.DataFrame:
    """Normalised oracle gain of every run interpolated at ``KL_GRID``; NaN outside the KL range its path reached."""
    rows = []
    df = table.assign(method=_method(table))
    keys = ["method", "feedback.n", "seed"]
    for key, g in df.groupby(keys):
        g = g.sort_values("kl_to_reference")
        kl = g["kl_to_reference"].to_numpy()
        span = (g["optimal_return"] - g["reference_return"]).to_numpy()
        gain = ((g["oracle_return"] - g["reference_return"]).to_numpy()) / np.where(span > 0, span, np.nan)
        ok = (kl > 0) & np.isfinite(gain)
        for target in KL_GRID:
            inside = ok.sum() >= 2 and kl[ok].min() <= target <= kl[ok].max()
            value = np.interp(np.log(target), np.log(kl[ok]), gain[ok]) if inside else np.nan
            rows.append({**dict(zip(keys, key, strict=True)), "kl": target, "gain": value})
    return pd.DataFrame(rows)


def contrast(m: pd.DataFrame, method: str, against: str = DPO) -> pd.DataFrame:
    """Per (labels, seed): mean over the KL grid points both reach of ``method``'s gain minus ``against``'s."""
    w = m.pivot_table(index=["feedback.n", "seed", "kl"], columns="method", values="gain")
    if method not in w.columns or against not in w.columns:
        return pd.DataFrame(columns=["feedback.n", "seed", "diff", "points"])
    d = (w[method] - w[against]).dropna()
    out = d.groupby(level=[0, 1]).agg(["mean", "size"]).reset_index()
    return out.rename(columns={"mean": "diff", "size": "points"})


def tost(x: np.ndarray, margin: float) -> float:
    """The p-value of the two one-sided t-tests that the mean of ``x`` lies within ``(-margin, margin)``."""
    lower = stats.ttest_1samp(x, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(x, margin, alternative="less").pvalue
    return float(max(lower, upper))


def statistics(table) -> dict:
    """The two tests of the claim, with their effect sizes."""
    m = matched(table)
    c = contrast(m, RLHF)
    ns = sorted(c["feedback.n"].unique())
    out = {"m": m, "contrast": c, "n": ns}
    if len(ns) < 2:
        return out
    few, many = (c[c["feedback.n"] == n]["diff"].to_numpy() for n in (ns[0], ns[-1]))
    out["few"], out["many"] = few, many
    out["p_few"] = stats.wilcoxon(few, alternative="greater").pvalue if few.size >= 2 else np.nan
    out["p_many"] = tost(many, MARGIN) if many.size >= 2 else np.nan
    return out


def plot(table, ax=None):
    s = statistics(table)
    m = s["m"]
    ns = sorted(m["feedback.n"].unique())
    axs = np.atleast_1d(axes(len(ns) + 1, ax, width=4.3))
    methods = [x for x in (RLHF, DPO, "ipo") if x in set(m["method"])]
    for a, n in zip(axs, ns, strict=False):
        c = m[m["feedback.n"] == n]
        for k, method in enumerate(methods):
            g = c[c["method"] == method]
            rows = [(kl, *mean_ci(x["gain"]), x["gain"].notna().sum()) for kl, x in g.groupby("kl")]
            r = np.array(rows)
            offset = 1 + (k - 1) * 0.05
            a.errorbar(
                r[:, 0] * offset,
                r[:, 1],
                yerr=[r[:, 1] - r[:, 2], r[:, 3] - r[:, 1]],
                marker="o",
                ms=3,
                capsize=2,
                color=f"C{k}",
                label=NAMES.get(method, method),
            )
        a.set(
            xscale="log",
            xlabel="matched KL(pi || pi_ref) (nats)",
            ylabel="oracle gain (fraction of opt - ref)",
            title=f"{int(n)} preference labels (flip 0.2)",
        )
        a.xaxis.set_major_locator(FixedLocator(KL_GRID))
        a.xaxis.set_major_formatter(FixedFormatter([f"{k:g}" for k in KL_GRID]))
        a.xaxis.set_minor_locator(NullLocator())
        a.legend(fontsize=7, loc="upper left")
    a = axs[-1]
    for k, method in enumerate([x for x in methods if x != DPO]):
        c = contrast(m, method)
        for j, n in enumerate(ns):
            d = c[c["feedback.n"] == n]["diff"]
            xs = np.full(len(d), j) + (k - 0.5) * 0.3 + np.linspace(-0.06, 0.06, max(len(d), 1))[: len(d)]
            a.scatter(xs, d, s=10, color=f"C{methods.index(method)}", alpha=0.7, label=None if j else NAMES[method])
            if len(d):
                a.plot([j + (k - 0.5) * 0.3 - 0.1, j + (k - 0.5) * 0.3 + 0.1], [d.mean()] * 2, color="k", lw=1.5)
    a.axhspan(-MARGIN, MARGIN, color="grey", alpha=0.2, label=f"equivalence margin +-{MARGIN:g}")
    a.axhline(0, color="k", lw=0.5)
    a.set_xticks(range(len(ns)), [f"{int(n)} labels" for n in ns])
    title = "per seed: gain minus DPO's (mean over KL)"
    if "p_few" in s:
        title += (
            f"\nRLHF > DPO at {int(ns[0])}: Wilcoxon p = {s['p_few']:.1g}"
            f"\nequivalent at {int(ns[-1])}: TOST p = {s['p_many']:.1g}"
        )
    a.set(ylabel="gain difference (fraction of opt - ref)")
    a.set_title(title, fontsize=9)
    a.legend(fontsize=7, loc="upper right")
    return axs


def check(table) -> None:
    m = matched(table)
    methods = set(m["method"])
    assert {RLHF, DPO} <= methods, f"RLHF ({RLHF}) and DPO must both run: got {sorted(methods)}"
    for (n, method), g in m.groupby(["feedback.n", "method"]):
        covered = g.groupby("kl")["gain"].apply(lambda x: x.notna().mean())
        share = {float(k): round(float(v), 2) for k, v in covered.items()}
        assert (covered >= 0.5).sum() >= 3, (
            f"{method} ({int(n)} labels) reaches too few of the matched KL values (share of seeds): {share}"
        )
    s = statistics(table)
    assert len(s["n"]) >= 2, f"need two numbers of labels, got {s['n']}"
    few, many = s["few"], s["many"]
    assert s["p_few"] < ALPHA and np.median(few) > 0, (
        f"with {int(s['n'][0])} labels RLHF does not beat DPO at matched KL: per-seed mean gain difference "
        f"{np.round(few, 3).tolist()} (mean {few.mean():.3f}), Wilcoxon p = {s['p_few']:.3g}"
    )
    assert s["p_many"] < ALPHA, (
        f"with {int(s['n'][-1])} labels RLHF and DPO are not equivalent within +-{MARGIN}: per-seed difference "
        f"{np.round(many, 3).tolist()} (mean {many.mean():.4f}), TOST p = {s['p_many']:.3g}"
    )
