"""Tabular vs linear learners under the same corruption.

The same algorithm (Q-learning, epsilon-greedy, Gaussian noise sigma 0.5 on every delivered reward) with a table of
Q-values or with Q linear in [position, bigram] templates, each run's learning curve recorded at log-spaced episode
counts. On a Markov oracle (unigram/position/bigram) the optimal Q-function is in the linear class; on the
nonlinear oracle (co-occurrence bonuses and a per-sequence term) it is not.

Tested, paired by seed (the same world and oracle for both learners):

* class right: the linear learner learns faster: it reaches a normalised gap of 0.1 in fewer episodes (the log10
  ratio of the episodes the two need is > 0, one-sided t-test; a learner that never gets there counts the budget,
  which understates the ratio). Later both approach 0.
* class mismatch: the linear learner keeps a gap that the table does not. At the end of training, linear minus
  tabular final gap is larger on the nonlinear oracle than on the Markov one (a difference in differences,
  one-sided t-test), and the linear learner's final gap on the nonlinear oracle exceeds the table's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, mean_ci

TABLE = "curves"
CLAIM = (
    "under the same noisy reward, linear Q-learning learns faster than tabular Q-learning when the optimal "
    "Q-function is in its class, and keeps a gap the table closes when it is not"
)
LABEL = {"linear": "class right (Markov oracle)", "nonlinear": "class mismatch (nonlinear oracle)"}
NAMES = {"q_learning": "tabular Q", "linear_q": "linear Q [position, bigram]"}
ALPHA = 0.01
GRID_POINTS = 40
THRESHOLD = 0.1  # 'learns faster': reaches a normalised gap of 0.1 in fewer episodes


def _agent(df):
    return df["agent.name"] if "agent.name" in df.columns else df["agent"]


def curves(table) -> pd.DataFrame:
    """Each run's normalised gap interpolated (in log episodes) onto one log grid: columns ``oracle.kind``,
    ``learner``, ``seed``, ``episodes``, ``ngap``."""
    df = table.assign(learner=_agent(table))
    df = df.assign(ngap=(df["optimal_return"] - df["oracle_return"]) / (df["optimal_return"] - df["reference_return"]))
    first = df.groupby(["oracle.kind", "learner", "seed"])["step"].min().max()
    grid = np.unique(np.geomspace(max(first, 1), df["step"].max(), GRID_POINTS).round())
    rows = []
    for (kind, learner, seed), g in df.groupby(["oracle.kind", "learner", "seed"]):
        g = g.sort_values("step")
        v = np.interp(np.log(grid), np.log(g["step"].to_numpy(float)), g["ngap"].to_numpy(float))
        rows += [
            {"oracle.kind": kind, "learner": learner, "seed": seed, "episodes": e, "ngap": x}
            for e, x in zip(grid, v, strict=True)
        ]
    return pd.DataFrame(rows)


def episodes_to(c: pd.DataFrame, threshold: float = THRESHOLD) -> pd.DataFrame:
    """Per run: the first episode count (on the log grid) at which its normalised gap is <= ``threshold``; the
    budget when it never is (censored: the learner needs at least that many)."""
    rows = []
    for key, g in c.groupby(["oracle.kind", "learner", "seed"]):
        g = g.sort_values("episodes")
        below = np.flatnonzero(g["ngap"].to_numpy() <= threshold)
        e = g["episodes"].to_numpy()
        rows.append((*key, float(e[below[0]] if below.size else e[-1]), bool(below.size)))
    return pd.DataFrame(rows, columns=["oracle.kind", "learner", "seed", "episodes", "reached"])


def statistics(table) -> dict:
    c = curves(table)
    if not {"q_learning", "linear_q"} <= set(c["learner"]):
        return {}
    out: dict = {}
    reach = episodes_to(c[c["oracle.kind"] == "linear"]).pivot_table(index="seed", columns="learner", values="episodes")
    ratio = np.log10(reach["q_learning"] / reach["linear_q"]).dropna().to_numpy()  # > 0: linear needs fewer
    out["ratio"] = ratio
    out["p_ratio"] = stats.ttest_1samp(ratio, 0.0, alternative="greater").pvalue if ratio.size > 1 else np.nan
    w = c.pivot_table(index=["oracle.kind", "seed", "episodes"], columns="learner", values="ngap")
    adv = (w["q_learning"] - w["linear_q"]).rename("adv").reset_index()  # > 0: the linear learner is better
    last = adv["episodes"].max()
    final = adv[adv["episodes"] == last].pivot_table(index="seed", columns="oracle.kind", values="adv").dropna()
    if {"linear", "nonlinear"} <= set(final.columns):
        did = (final["linear"] - final["nonlinear"]).to_numpy()  # how much more the linear learner loses off-class
        out["did"] = did
        out["p_did"] = stats.ttest_1samp(did, 0.0, alternative="greater").pvalue if did.size > 1 else np.nan
        off = -final["nonlinear"].to_numpy()  # linear minus tabular final gap, off-class
        out["off"] = off
        out["p_off"] = stats.ttest_1samp(off, 0.0, alternative="greater").pvalue if off.size > 1 else np.nan
    out["episodes"] = last
    return out


def plot(table, ax=None):
    c = curves(table)
    kinds = [k for k in ("linear", "nonlinear") if k in set(c["oracle.kind"])]
    axs = np.atleast_1d(axes(len(kinds) + 2, ax, width=3.9))
    for a, kind in zip(axs, kinds, strict=False):
        for k, learner in enumerate(("q_learning", "linear_q")):
            g = c[(c["oracle.kind"] == kind) & (c["learner"] == learner)]
            if g.empty:
                continue
            r = np.array([(e, *mean_ci(x["ngap"])) for e, x in g.groupby("episodes")])
            a.plot(r[:, 0], r[:, 1], "o-", ms=2, color=f"C{k}", label=NAMES[learner])
            a.fill_between(r[:, 0], r[:, 2], r[:, 3], alpha=0.2, color=f"C{k}")
        a.axhline(0, color="grey", lw=0.5)
        if kind == "linear":
            a.axhline(THRESHOLD, color="k", ls=":", lw=0.8, label=f"gap {THRESHOLD:g}")
        a.set(xscale="log", xlabel="episodes (log scale)", ylabel="normalised gap (fraction of opt - ref)")
        a.set_title(LABEL[kind] + "\nmean, 95% CI over seeds", fontsize=9)
        a.legend(fontsize=7)
    s = statistics(table)
    a = axs[len(kinds)]
    reach = episodes_to(c[c["oracle.kind"] == "linear"]).pivot_table(index="seed", columns="learner", values="episodes")
    if {"q_learning", "linear_q"} <= set(reach.columns):
        for _, row in reach.iterrows():
            a.plot([0, 1], [row["q_learning"], row["linear_q"]], "-", color="grey", lw=0.6, alpha=0.6)
        for k, learner in enumerate(("q_learning", "linear_q")):
            a.scatter(np.full(len(reach), k), reach[learner], s=12, color=f"C{k}", zorder=3)
        a.set_xticks([0, 1], [NAMES["q_learning"], "linear Q"])
        a.set_xlim(-0.4, 1.4)
        a.set(yscale="log", ylabel=f"episodes to reach a gap of {THRESHOLD:g}")
        a.set_title(
            f"class right: linear needs {10 ** s['ratio'].mean():.1f}x fewer\n(geometric mean; t-test p = "
            f"{s['p_ratio']:.1g})",
            fontsize=9,
        )
    a = axs[len(kinds) + 1]
    last = c[c["episodes"] == c["episodes"].max()]
    for j, kind in enumerate(kinds):
        for k, learner in enumerate(("q_learning", "linear_q")):
            v = last[(last["oracle.kind"] == kind) & (last["learner"] == learner)]["ngap"]
            x = j + (k - 0.5) * 0.35
            jitter = np.linspace(-0.06, 0.06, len(v))
            a.scatter(
                np.full(len(v), x) + jitter, v, s=8, color=f"C{k}", alpha=0.6, label=None if j else NAMES[learner]
            )
            m, lo, hi = mean_ci(v)
            a.errorbar([x], [m], yerr=[[m - lo], [hi - m]], fmt="s", color="k", ms=4, capsize=3)
    a.set_xticks(range(len(kinds)), ["Markov oracle", "nonlinear oracle"][: len(kinds)])
    a.axhline(0, color="grey", lw=0.5)
    a.set(ylabel="final normalised gap")
    a.legend(fontsize=7, loc="upper left")
    if "did" in s:
        a.set_title(
            f"after {int(s['episodes']):,} episodes: linear - tabular\n+{s['off'].mean():.2f} off-class, "
            f"{s['off'].mean() - s['did'].mean():+.3f} on-class (p = {s['p_did']:.1g})",
            fontsize=9,
        )
    return axs


def check(table) -> None:
    s = statistics(table)
    assert s, "both learners (q_learning, linear_q) must run"
    r = s["ratio"]
    assert r.mean() > 0 and s["p_ratio"] < ALPHA, (
        f"with the right class the linear learner does not learn faster: it needs {10 ** r.mean():.2f}x fewer "
        f"episodes to reach a gap of {THRESHOLD:g} (log10 ratios {np.round(r, 2).tolist()}), p = {s['p_ratio']:.3g}"
    )
    assert "did" in s, "need both oracles (linear and nonlinear)"
    did, off = s["did"], s["off"]
    assert did.mean() > 0 and s["p_did"] < ALPHA and off.mean() > 0 and s["p_off"] < ALPHA, (
        f"after {int(s['episodes'])} episodes the linear learner does not keep a gap under class mismatch: "
        f"linear minus tabular final gap off-class {off.mean():.3f} (p = {s['p_off']:.3g}), its excess over "
        f"on-class {did.mean():.3f} (p = {s['p_did']:.3g})"
    )
