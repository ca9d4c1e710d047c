"""Conservative reward-model ensembles (Coste, Anwar, Kirk and Krueger 2023) in an exact world.

With 25% of the labels flipped, a linear reward model is fitted to 300 preferences of overoptimization's oracle
(token quality minus a repetition penalty no linear model represents). A single MAP model is compared with
bootstrap ensembles of five, combined by their mean, their worst member (``wco``) or their mean minus the members'
variance (``uwo``), each member standardised on the labelled sequences. Pressure grows along the soft planner's
beta path, with best-of-n's n and (paper scale) along PPO's training; every point is evaluated exactly. Per seed,
the *peak* is the highest oracle gain over pi_ref along the path and the *drop* the oracle gain lost from the peak
to the path's end, both as fractions of the attainable gain (optimal - reference).

Tested, for each optimiser in the table: WCO and UWO reach a higher peak than the single model (Wilcoxon
signed-rank over seeds, p < 0.01, median improvement >= 0.05 of the attainable gain). Measured, not tested: the
ensemble mean is no better than the single model, and no objective removes the drop at the end of the path (the
repetition penalty is every member's blind spot, so conservatism over members cannot see it). With one model every
objective is the model itself (by construction).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, mean_ci

TABLE = "curves"
CLAIM = (
    "under 25% label noise, worst-case (WCO) and uncertainty-weighted (UWO) ensembles reach a higher oracle peak "
    "along the optimisation path than a single reward model"
)
ALPHA = 0.01
MIN_GAIN = 0.05
VARIANTS = {"single": "single model", "mean": "ensemble mean", "wco": "worst case (WCO)", "uwo": "UWO (lambda = 1)"}
AGENTS = {"soft_planner": "soft planner (beta path)", "best_of_n": "best-of-n (n path)", "ppo": "PPO (training)"}


def variants(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ``variant`` (single, mean, wco or uwo) and ``agent_name``; a single model's runs under several
    objectives are the same runs, so one objective's copy is kept."""
    df = table.copy()
    ens = pd.to_numeric(df["reward_model.ensemble"], errors="coerce") if "reward_model.ensemble" in df else 1
    objective = df["reward_model.objective"].astype(str) if "reward_model.objective" in df else "mean"
    df["variant"] = np.where(np.asarray(ens) >= 2, objective, "single")
    df["agent_name"] = df["agent.name"] if "agent.name" in df.columns else df["agent"]
    if "reward_model.objective" in df:
        first = df[df["variant"] == "single"]["reward_model.objective"].astype(str).min()
        df = df[(df["variant"] != "single") | (df["reward_model.objective"].astype(str) == first)]
    return df


def per_seed(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (agent, variant, seed): ``peak``, ``final`` and ``drop`` (fractions of the attainable gain), and
    ``d_peak`` = sqrt(KL) at the peak."""
    rows = []
    for (agent, variant, seed), g in variants(table).groupby(["agent_name", "variant", "seed"]):
        g = g.sort_values("step")
        gain = _gain(g)
        k = int(gain.argmax())
        d = np.sqrt(np.maximum(g["kl_to_reference"].to_numpy(), 0.0))
        rows.append(dict(agent=agent, variant=variant, seed=seed, peak=gain[k], final=gain[-1],
                         drop=gain[k] - gain[-1], d_peak=d[k]))  # fmt: skip
    return pd.DataFrame(rows)


def paired(s: pd.DataFrame, agent: str, variant: str, value: str = "peak") -> np.ndarray:
    """Per seed: ``value`` of ``variant`` minus the single model's (seeds present in both)."""
    w = s[s["agent"] == agent].pivot_table(index="seed", columns="variant", values=value)
    if variant not in w or "single" not in w:
        return np.array([])
    return (w[variant] - w["single"]).dropna().to_numpy()


def _gain(g: pd.DataFrame) -> np.ndarray:
    """The oracle gain over pi_ref along one path, as a fraction of the attainable gain."""
    ref = g["reference_return"].to_numpy()
    return (g["oracle_return"].to_numpy() - ref) / (g["optimal_return"].to_numpy() - ref)


def plot(table, ax=None):
    df = variants(table)
    agents = [a for a in AGENTS if a in set(df["agent_name"])]
    axs = np.atleast_1d(axes(len(agents) + 1, ax, width=4.4))
    for a, agent in zip(axs, agents, strict=False):
        for i, (variant, label) in enumerate(VARIANTS.items()):
            g = df[(df["agent_name"] == agent) & (df["variant"] == variant)].sort_values(["seed", "step"])
            if g.empty:
                continue
            K = g.groupby("seed").size().min()
            seeds = [s.head(K) for _, s in g.groupby("seed")]
            d = np.mean([np.sqrt(np.maximum(s["kl_to_reference"].to_numpy(), 0)) for s in seeds], axis=0)
            gain = np.array([_gain(s) for s in seeds])
            ci = np.array([mean_ci(col) for col in gain.T])
            a.plot(d, ci[:, 0], "o-", ms=3, color=f"C{i}", label=label)
            a.fill_between(d, ci[:, 1], ci[:, 2], color=f"C{i}", alpha=0.15)
        a.axhline(0, color="grey", lw=0.5)
        a.set(xlabel="d = sqrt(KL(pi || pi_ref)) (sqrt nats)", ylabel="oracle gain (fraction of opt - ref)",
              title=f"{AGENTS[agent]}, 25% flipped labels")  # fmt: skip
        a.legend(fontsize=7)
    s = per_seed(table)
    last = axs[len(agents)]
    for i, variant in enumerate(VARIANTS):
        if variant == "single":
            continue
        for j, agent in enumerate(agents):
            w = s[s["agent"] == agent].pivot_table(index="seed", columns="variant", values="peak")
            if variant in w and "single" in w:
                last.scatter(w["single"], w[variant], s=14, color=f"C{i}", marker="os^"[j % 3],
                             label=f"{VARIANTS[variant]}, {agent}")  # fmt: skip
    lim = [s["peak"].min() - 0.02, s["peak"].max() + 0.02] if len(s) else [0, 1]
    last.plot(lim, lim, "k:", lw=0.8, label="no change")
    last.set(xlabel="peak oracle gain, single model", ylabel="peak oracle gain, ensemble",
             title="per seed: the path's best point")  # fmt: skip
    last.legend(fontsize=6)
    return axs


def check(table) -> None:
    s = per_seed(table)
    assert not s.empty and "single" in set(s["variant"]), "no single-model runs in the table"
    tested = 0
    for agent in AGENTS:
        for variant in ("wco", "uwo"):
            diff = paired(s, agent, variant)
            if diff.size == 0:
                continue
            tested += 1
            p = stats.wilcoxon(diff, alternative="greater").pvalue if np.any(diff != 0) else 1.0
            med = float(np.median(diff))
            assert p < ALPHA and med >= MIN_GAIN, (
                f"{agent}, {variant}: the peak oracle gain is not reliably above the single model's "
                f"(median improvement {med:+.3f} of the attainable gain over {diff.size} seeds, Wilcoxon p = {p:.3g}; "
                f"needs p < {ALPHA} and >= {MIN_GAIN})"
            )
    assert tested, "no wco or uwo runs paired with single-model runs in the table"


def summary(table) -> dict:
    """The measured numbers quoted in the README: per agent and variant, median peak, drop and paired tests."""
    s = per_seed(table)
    out = {}
    for (agent, variant), g in s.groupby(["agent", "variant"]):
        row = {"median_peak": float(g["peak"].median()), "median_drop": float(g["drop"].median()), "n": len(g)}
        if variant != "single":
            for value in ("peak", "drop", "final"):
                diff = paired(s, agent, variant, value)
                p = stats.wilcoxon(diff).pvalue if diff.size and np.any(diff != 0) else 1.0
                row[f"{value}_vs_single"] = (float(np.median(diff)), float(p))
        out[f"{agent}/{variant}"] = row
    return out
