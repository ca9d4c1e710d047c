"""Catastrophic Goodhart (Kwa, Thomas, Garriga-Alonso 2024): heavy-tailed proxy error under KL regularisation.

Sweep: the proxy is the oracle plus one persistent error per complete sequence (``corruption.noise.mode = fixed``),
of spread ``sigma`` = the oracle's return sd under pi_ref, drawn from a light tail (``gaussian``) or a heavy one
(``student_t`` with df from 30 down to 1, the one-sided ``pareto``); the exact soft optimum's beta path is the
pressure. Where a variance exists (gaussian, t with df > 2, pareto with alpha > 2) every tail has the same sd, so
they differ in shape only; below that the tails have the gaussian's interquartile range (no variance to match).
The world has no EOS: pi_ref is uniform over the complete sequences, so a sequence picked regardless of the oracle
has pi_ref's expected oracle return, and "no oracle gain" is a gain of 0 in expectation.

Gains are in units of the attainable oracle gain, ``optimal_return - reference_return``: the oracle gain
``G = (oracle_return - reference_return) / span`` and the proxy gain ``P = (proxy_return - reference_proxy_return)
/ span``. *No variance* means a tail index (df or alpha) <= 2.

What holds by construction, and is therefore not tested: the proxy return never falls along the soft optimum's own
path (``d/dbeta E_pi_beta[r_hat] = -Var/beta^2``), and both gains are 0 at pi_ref.

What is measured and tested (Kwa et al.'s contrast; the world is finite, so "arbitrarily high" becomes "far higher
than the light tail's"): (1) at a matched KL of ``KL_STAR`` nats, light-tailed error keeps an oracle gain that
heavy-tailed error (no variance) does not: the gaussian's G exceeds the heavy tail's, paired by seed (Wilcoxon), by
at least ``MIN_DIFF`` on average; (2) at the same KL the heavy tail's proxy gain is at least ``MIN_RATIO`` times the
gaussian's (Wilcoxon on the paired differences): the proxy rises while the oracle does not; (3) "little or no
oracle gain": at the end of the path (the proxy's argmax) the heavy tail's G is below ``MARGIN`` (one-sided t-test),
while the gaussian's is above it; (4) it is the tail that matters: over the symmetric tails (gaussian = df
infinity), the oracle gain at the end rises with the tail index (Spearman), and so it does among the tails of equal
variance (gaussian and t with df > 2) alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, column, mean_ci

TABLE = "curves"
CLAIM = (
    "under KL regularisation, a proxy with light-tailed (gaussian) error keeps oracle gains while heavy-tailed error "
    "(no variance) lets the proxy return rise far higher with little or no oracle gain; the lighter the tail, the "
    "more oracle gain, even at equal variance"
)
KL_STAR = 4.0  # nats: the matched KL of claims (1) and (2)
MIN_DIFF = 0.15  # of the attainable oracle gain: the light tail's least advantage at KL_STAR
MIN_RATIO = 2.0  # the heavy tail's proxy gain over the light tail's at KL_STAR
MARGIN = 0.15  # of the attainable oracle gain: "little or no" oracle gain at the end of the path
ALPHA = 0.01
DIST, DF, SHAPE = "corruption.noise.dist", "corruption.noise.df", "corruption.noise.alpha"


def tails(table: pd.DataFrame) -> pd.DataFrame:
    """Per row: ``tail`` (a label), ``index`` (the tail index: df, alpha, or inf for gaussian) and ``heavy`` (no
    variance: index <= 2)."""
    dist = column(table, DIST, "gaussian").astype(str)
    df = pd.to_numeric(column(table, DF, 3.0), errors="coerce").fillna(3.0)
    alpha = pd.to_numeric(column(table, SHAPE, 3.0), errors="coerce").fillna(3.0)
    index = np.where(dist == "student_t", df, np.where(dist == "pareto", alpha, np.inf))
    label = np.where(
        dist == "student_t",
        "t, df=" + df.map("{:g}".format),
        np.where(dist == "pareto", "pareto, alpha=" + alpha.map("{:g}".format), "gaussian"),
    )
    return pd.DataFrame({"tail": label, "dist": dist, "index": index, "heavy": index <= 2}, index=table.index)


def runs(table: pd.DataFrame) -> pd.DataFrame:
    """Per run (tail, seed): the oracle gain ``G`` and proxy gain ``P`` (units of the attainable oracle gain) at
    ``KL_STAR`` nats (interpolated along the path, which starts at pi_ref: KL 0, gains 0) and at the path's end."""
    df = pd.concat([table, tails(table)], axis=1)
    rows = []
    for (tail, seed), g in df.groupby(["tail", "seed"]):
        g = g.sort_values("beta", ascending=False)  # growing pressure
        span = float(g["optimal_return"].iloc[0] - g["reference_return"].iloc[0])
        G = (g["oracle_return"] - g["reference_return"]).to_numpy(dtype=float) / span
        P = (g["proxy_return"] - g["reference_proxy_return"]).to_numpy(dtype=float) / span
        kl = np.maximum.accumulate(np.maximum(g["kl_to_reference"].to_numpy(dtype=float), 0.0))
        kl, G0, P0 = np.r_[0.0, kl], np.r_[0.0, G], np.r_[0.0, P]
        rows.append(
            {
                "tail": tail,
                "dist": g["dist"].iloc[0],
                "index": float(g["index"].iloc[0]),
                "heavy": bool(g["heavy"].iloc[0]),
                "seed": int(seed),
                "G_kl": float(np.interp(KL_STAR, kl, G0)) if kl[-1] >= KL_STAR else np.nan,
                "P_kl": float(np.interp(KL_STAR, kl, P0)) if kl[-1] >= KL_STAR else np.nan,
                "G_end": float(G[-1]),
                "P_end": float(P[-1]),
                "kl_end": float(kl[-1]),
            }
        )
    return pd.DataFrame(rows)


def _order(r: pd.DataFrame) -> list[str]:
    """Tails from light to heavy: gaussian, then t by falling df, then pareto by falling alpha."""
    key = r.drop_duplicates("tail").assign(kind=lambda d: d["dist"].map({"gaussian": 0, "student_t": 1, "pareto": 2}))
    return key.sort_values(["kind", "index"], ascending=[True, False])["tail"].tolist()


def band(values: np.ndarray, seed: int = 0, n_resamples: int = 2000) -> np.ndarray:
    """Mean and 95% percentile-bootstrap interval over seeds (rows) of every column at once: (3, columns). The same
    method as :func:`experiments.catalog.common.mean_ci`, vectorised over a curve's points."""
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, x.shape[0], size=(n_resamples, x.shape[0]))
    means = x[idx].mean(axis=1)
    return np.vstack([x.mean(axis=0), np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)])


def plot(table, ax=None):
    axs = axes(3, ax)
    df = pd.concat([table, tails(table)], axis=1)
    r = runs(table)
    order = _order(r)
    cmap = {t: c for t, c in zip(order, [f"C{i}" for i in range(10)], strict=False)}
    grid = np.linspace(0, float(np.floor(r["kl_end"].min() * 10) / 10), 46)
    for tail in order:
        curves = []
        for _, g in df[df["tail"] == tail].groupby("seed"):
            g = g.sort_values("beta", ascending=False)
            span = float(g["optimal_return"].iloc[0] - g["reference_return"].iloc[0])
            kl = np.r_[0.0, np.maximum.accumulate(np.maximum(g["kl_to_reference"].to_numpy(dtype=float), 0.0))]
            G = np.r_[0.0, (g["oracle_return"] - g["reference_return"]).to_numpy(dtype=float) / span]
            P = np.r_[0.0, (g["proxy_return"] - g["reference_proxy_return"]).to_numpy(dtype=float) / span]
            curves.append((np.interp(grid, kl, G), np.interp(grid, kl, P)))
        for k, ax_ in enumerate(axs[:2]):
            m = band(np.array([c[k] for c in curves]))
            ax_.plot(grid, m[0], color=cmap[tail], label=tail, lw=1.2, ls="--" if "pareto" in tail else "-")
            ax_.fill_between(grid, m[1], m[2], alpha=0.12, color=cmap[tail])
    for ax_ in axs[:2]:
        ax_.axvline(KL_STAR, color="grey", ls=":", lw=1)
        ax_.axhline(0, color="grey", lw=0.5)
    axs[0].set(xlabel="KL(pi || pi_ref) along the soft-optimum path (nats)", ylabel="oracle gain (of the attainable)",
               title="oracle return: the true gain")  # fmt: skip
    axs[1].set(xlabel="KL(pi || pi_ref) along the soft-optimum path (nats)", yscale="symlog",
               ylabel="proxy gain (of the attainable)",
               title="proxy return: what the policy sees")  # fmt: skip
    axs[1].set_ylim(bottom=0)
    axs[0].legend(fontsize=6.5)
    rng = np.random.default_rng(0)
    for i, tail in enumerate(order):
        g = r[r["tail"] == tail]
        m, lo, hi = mean_ci(g["G_end"])
        axs[2].scatter(i + rng.uniform(-0.15, 0.15, len(g)), g["G_end"], s=6, color="grey", alpha=0.6)
        axs[2].errorbar(i, m, yerr=[[m - lo], [hi - m]], marker="o", capsize=3, color=cmap[tail])
    axs[2].axhline(0, color="grey", lw=0.5)
    axs[2].axhline(MARGIN, color="C3", ls="--", lw=1, label=f"'little or no gain' bound ({MARGIN})")
    axs[2].set_xticks(range(len(order)), order, rotation=40, ha="right", fontsize=7)
    axs[2].set(ylabel="oracle gain (of the attainable)", title="at the proxy's argmax (beta = 0.001)")
    axs[2].legend(fontsize=7)
    return axs


def check(table) -> None:
    r = runs(table)
    light = r[r["dist"] == "gaussian"].set_index("seed")
    heavy = r[r["heavy"]]
    assert len(light) and len(heavy), "the sweep needs gaussian runs and runs of a tail without variance (index <= 2)"
    light_cols = light[["G_kl", "P_kl"]].add_suffix("_light")
    pairs = heavy.merge(light_cols, left_on="seed", right_index=True).dropna(
        subset=["G_kl", "G_kl_light", "P_kl", "P_kl_light"]
    )
    assert len(pairs) >= 8, f"only {len(pairs)} heavy-light pairs reach KL = {KL_STAR} nats"
    d_oracle = (pairs["G_kl_light"] - pairs["G_kl"]).to_numpy()
    d_proxy = (pairs["P_kl"] - MIN_RATIO * pairs["P_kl_light"]).to_numpy()
    w_oracle = stats.wilcoxon(d_oracle, alternative="greater")
    w_proxy = stats.wilcoxon(d_proxy, alternative="greater")
    ratio = float(pairs["P_kl"].mean() / pairs["P_kl_light"].mean())
    t_little = stats.ttest_1samp(heavy["G_end"], MARGIN, alternative="less")
    t_light = stats.ttest_1samp(light["G_end"], MARGIN, alternative="greater")
    sym = r[r["dist"].isin(["gaussian", "student_t"])]
    rho, p_rho = stats.spearmanr(sym["index"], sym["G_end"])
    equal_var = sym[sym["index"] > 2]
    rho_v, p_v = stats.spearmanr(equal_var["index"], equal_var["G_end"])
    by_tail = r.groupby("tail")["G_end"].mean()
    print(
        f"at KL = {KL_STAR} nats: oracle gain {pairs['G_kl_light'].mean():.2f} (gaussian) vs "
        f"{pairs['G_kl'].mean():.2f} (no variance), difference {d_oracle.mean():.2f} (Wilcoxon p = "
        f"{w_oracle.pvalue:.2g}, {len(pairs)} pairs); proxy gain {pairs['P_kl'].mean():.3g} vs "
        f"{pairs['P_kl_light'].mean():.3g} ({ratio:.3g}x; Wilcoxon vs {MIN_RATIO}x: p = {w_proxy.pvalue:.2g}). "
        f"At the proxy's argmax: oracle gain {heavy['G_end'].mean():.3f} (no variance; t-test < {MARGIN}: p = "
        f"{t_little.pvalue:.2g}) vs {light['G_end'].mean():.2f} (gaussian; > {MARGIN}: p = {t_light.pvalue:.2g}); "
        f"proxy gain {heavy['P_end'].mean():.3g} vs {light['P_end'].mean():.3g}. Oracle gain at the end rises with "
        f"the tail index: Spearman rho = {rho:.2f} (p = {p_rho:.2g}), among equal-variance tails rho = {rho_v:.2f} "
        f"(p = {p_v:.2g}); by tail: {', '.join(f'{k}: {v:.2f}' for k, v in by_tail.items())}"
    )
    assert d_oracle.mean() >= MIN_DIFF and w_oracle.pvalue < ALPHA, (
        f"at KL = {KL_STAR} nats the gaussian's oracle gain exceeds the heavy tail's by {d_oracle.mean():.2f} "
        f"(expected >= {MIN_DIFF}; Wilcoxon p = {w_oracle.pvalue:.3g})"
    )
    assert ratio >= MIN_RATIO and w_proxy.pvalue < ALPHA, (
        f"at KL = {KL_STAR} nats the heavy tail's proxy gain is {ratio:.3g}x the gaussian's (expected >= "
        f"{MIN_RATIO}x; Wilcoxon p = {w_proxy.pvalue:.3g})"
    )
    assert t_little.pvalue < ALPHA, (
        f"heavy-tailed error keeps an oracle gain of {heavy['G_end'].mean():.3f} at the proxy's argmax (expected "
        f"< {MARGIN}; t-test p = {t_little.pvalue:.3g})"
    )
    assert t_light.pvalue < ALPHA, (
        f"gaussian error keeps only {light['G_end'].mean():.3f} of the attainable gain at the proxy's argmax "
        f"(expected > {MARGIN}; t-test p = {t_light.pvalue:.3g})"
    )
    assert rho > 0 and p_rho / 2 < ALPHA, (
        f"the oracle gain at the end does not rise with the tail index (Spearman rho = {rho:.2f}, two-sided "
        f"p = {p_rho:.3g})"
    )
    assert rho_v > 0 and p_v / 2 < ALPHA, (
        f"among tails of equal variance the oracle gain at the end does not rise with the tail index (Spearman "
        f"rho = {rho_v:.2f}, two-sided p = {p_v:.3g}): the variance, not the tail, would be what matters"
    )
