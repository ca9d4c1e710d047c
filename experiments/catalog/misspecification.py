"""Misspecification: a proxy that is a different reward function, not a noisy view of the right one.

The exact planner optimises a misspecified proxy of a linear+length oracle (the oracle prefers answers of about
2 tokens). One kind of misspecification at a time, on the same worlds (seeds): the misweight angle alpha between
the proxy's and the oracle's linear weights from 0 to pi (along one great circle per seed: the rotation direction
is the seed's), each template of the oracle's linear part omitted, and a spurious length bias lambda per token.

By construction, not tested: with nothing misspecified (alpha = 0, no omission, lambda = 0) the exact planner
optimises the oracle itself, so its gap is exactly 0. What is tested: the gap rises monotonically with alpha
(Page's L test over the angles > 0, seeds as blocks), every omitted template costs a gap (Wilcoxon signed-rank
against the correctly specified proxy on the same world), and the gap rises with lambda (Page's L test).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, line_ci, mean_ci, summarize

TABLE = "runs"
CLAIM = (
    "the gap rises monotonically with the misweight angle from 0 to pi; omitting any one template of the oracle "
    "costs a gap; a spurious length bias costs more the larger it is"
)
ALPHA = 0.01
LABEL = "normalised gap (fraction of opt - ref)"


def settings(table: pd.DataFrame) -> pd.DataFrame:
    """``angle``, ``omit`` (a template name or ``""``) and ``bias`` of each run, and its ``kind``: ``none``,
    ``angle``, ``omit`` or ``bias`` (the one setting that differs from the correctly specified proxy).

    Read from dotted override columns when the sweep has them, else from the run's ``corruption`` description
    (``misspec.angle=0.39, ...``: the sweep runs over whole ``corruption.misspec`` dicts)."""

    def from_text(text: str, key: str):
        m = re.search(rf"misspec\.{key}=(\[[^\]]*\]|[^,]+)", str(text))
        return None if m is None else m.group(1).strip()

    def get(key: str, default, parse):
        col = f"corruption.misspec.{key}"
        if col in table.columns:  # runs that leave the key unset have NaN here: the default
            return table[col].map(lambda v: default if v is None or (isinstance(v, float) and v != v) else parse(v))
        if "corruption" in table.columns:
            return table["corruption"].map(lambda t: default if from_text(t, key) is None else parse(from_text(t, key)))
        return pd.Series(default, index=table.index)

    def omit_name(v) -> str:
        names = re.findall(r"[a-z_]+", str(v))
        return ",".join(names)

    out = table.assign(
        angle=get("angle", 0.0, float), omit=get("omit", "", omit_name), bias=get("length_bias", 0.0, float)
    )
    kinds = np.select(
        [out["angle"] > 0, out["omit"] != "", out["bias"] != 0], ["angle", "omit", "bias"], default="none"
    )
    n_set = (out["angle"] > 0).astype(int) + (out["omit"] != "").astype(int) + (out["bias"] != 0).astype(int)
    return out.assign(kind=np.where(n_set > 1, "mixed", kinds))


def _rounded(series: pd.Series) -> dict:
    """A series as a plain ``{level: value}`` dict for messages."""
    return {k if isinstance(k, str) else float(k): round(float(v), 3) for k, v in series.items()}


def _wide(df: pd.DataFrame, level: str) -> pd.DataFrame:
    """Seeds x levels of ``normalized_gap`` (complete seeds only)."""
    return df.pivot_table(index="seed", columns=level, values="normalized_gap").dropna()


def angle_trend(df: pd.DataFrame):
    """Page's L test that the gap rises with alpha over the angles > 0 (seeds are blocks), and Kendall's tau."""
    w = _wide(df[df["kind"] == "angle"], "angle")
    res = stats.page_trend_test(w.to_numpy(), method="auto") if w.shape[1] >= 3 and len(w) >= 2 else None
    long = w.stack().reset_index(name="g")
    tau = stats.kendalltau(long["angle"], long["g"]).statistic if len(long) > 2 else np.nan
    return w, res, float(tau)


def bias_trend(df: pd.DataFrame):
    """Page's L test that the gap rises with lambda, lambda = 0 (the correct proxy on the same world) included."""
    d = df[df["kind"].isin(["none", "bias"])]
    w = _wide(d, "bias")
    res = stats.page_trend_test(w.to_numpy(), method="auto") if w.shape[1] >= 3 and len(w) >= 2 else None
    return w, res


def omission_cost(df: pd.DataFrame) -> pd.DataFrame:
    """Per omitted template and seed: its gap minus the correctly specified proxy's gap on the same world."""
    base = df[df["kind"] == "none"].set_index("seed")["normalized_gap"]
    om = df[df["kind"] == "omit"]
    return om.assign(cost=om["normalized_gap"].to_numpy() - base.reindex(om["seed"]).to_numpy()).dropna(subset="cost")


def plot(table, ax=None):
    df = settings(table)
    axs = axes(3, ax, width=4.4)
    ang = df[df["kind"].isin(["none", "angle"])]
    s = summarize(ang, "angle", "normalized_gap")
    line_ci(axs[0], s["angle"], s, "exact planner (mean, 95% CI)")
    w, res, tau = angle_trend(df)
    for _, row in w.iterrows():
        axs[0].plot([0.0, *w.columns], [0.0, *row.to_numpy()], color="grey", lw=0.5, alpha=0.4)
    axs[0].plot([], [], color="grey", lw=0.5, label="one world (seed)")
    axs[0].axhline(1.0, color="k", ls=":", lw=0.8, label="as bad as pi_ref")
    axs[0].set_xticks(np.pi * np.arange(5) / 4, ["0", "pi/4", "pi/2", "3pi/4", "pi"])
    txt = f"Kendall tau {tau:.2f}" + (f", Page p = {res.pvalue:.1g}" if res is not None else "")
    axs[0].set(xlabel="misweight angle alpha (rad)", ylabel=LABEL, title=f"misweighting\n{txt}")
    om = omission_cost(df)
    labels = sorted(om["omit"].unique())
    stats_ = [mean_ci(om[om["omit"] == k]["normalized_gap"]) for k in labels]
    m = np.array([x[0] for x in stats_])
    axs[1].bar(
        np.arange(len(labels)),
        m,
        yerr=[m - np.array([x[1] for x in stats_]), np.array([x[2] for x in stats_]) - m],
        capsize=3,
        color="C1",
    )
    for k, name in enumerate(labels):
        v = om[om["omit"] == name]["normalized_gap"]
        axs[1].scatter(np.full(len(v), k) + np.linspace(-0.15, 0.15, len(v)), v, s=6, color="k", alpha=0.5, zorder=3)
    axs[1].set_xticks(np.arange(len(labels)), labels)
    w_om = stats.wilcoxon(om["cost"], alternative="greater").pvalue if len(om) > 1 else np.nan
    axs[1].set(
        xlabel="template the proxy omits",
        ylabel=LABEL,
        title=f"omitted templates (alpha = 0)\nWilcoxon p = {w_om:.1g} vs the correct proxy",
    )
    _, res_b = bias_trend(df)
    b = df[df["kind"].isin(["none", "bias"])]
    s = summarize(b, "bias", "normalized_gap")
    line_ci(axs[2], s["bias"], s, "exact planner (mean, 95% CI)")
    axs[2].set(
        xlabel="spurious length bias lambda (proxy reward per token)",
        ylabel=LABEL,
        title="length bias (the oracle prefers 2 tokens)" + (f"\nPage p = {res_b.pvalue:.1g}" if res_b else ""),
    )
    for a in (axs[0], axs[2]):
        a.legend(fontsize=7, loc="upper left")
    return axs


def check(table) -> None:
    df = settings(table)
    w, res, tau = angle_trend(df)
    assert res is not None, f"need >= 3 angles > 0 and >= 2 seeds for the trend test, got {w.shape}"
    means = w.mean()
    assert res.pvalue < ALPHA and tau > 0, (
        f"the gap does not rise with the misweight angle: Page L = {res.statistic:.1f}, p = {res.pvalue:.3g}, "
        f"Kendall tau = {tau:.3f}; mean gaps {_rounded(means)}"
    )
    om = omission_cost(df)
    assert len(om) >= 2, "no omitted templates to test"
    w_om = stats.wilcoxon(om["cost"], alternative="greater")
    per = om.groupby("omit")["cost"].mean()
    assert w_om.pvalue < ALPHA and (per > 0).all(), (
        f"omitting a template does not cost a gap: mean extra normalised gap per template {_rounded(per)}, "
        f"Wilcoxon p = {w_om.pvalue:.3g} over {len(om)} (template, world) pairs"
    )
    wb, res_b = bias_trend(df)
    assert res_b is not None, f"need lambda = 0 and >= 2 lambdas > 0 on >= 2 seeds, got {wb.shape}"
    assert res_b.pvalue < ALPHA and wb.mean().iloc[-1] > wb.mean().iloc[0], (
        f"the gap does not rise with the length bias: Page L = {res_b.statistic:.1f}, p = {res_b.pvalue:.3g}; "
        f"mean gaps {_rounded(wb.mean())}"
    )
