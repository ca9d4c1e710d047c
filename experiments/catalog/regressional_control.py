"""Regressional Goodhart as a matched control for ``overoptimization``: how much of the reward model's
overoptimisation does independent noise of the same size reproduce?

Same world, oracle (token quality plus a repetition penalty) and pressure paths (the soft optimum along beta,
best-of-n along n) as ``overoptimization``. Conditions (columns ``pipeline`` and ``corruption.noise.sigma``):

* the reward model (``pipeline = rlhf``, sigma = 0): the misspecified proxy of ``overoptimization``;
* independent noise (``pipeline = direct``, sigma > 0): proxy = oracle + Z, one Gaussian Z per complete sequence
  drawn once per run; sigma = 2.7 matches the reward model's error: its noise-to-signal ratio
  ``sqrt(1 - rho^2) / rho`` (rho = its within-prompt correlation with the oracle under pi_ref) is 1.0 and the
  oracle's sd under pi_ref is 2.5 to 2.7 (medians over seeds; the check recomputes both from the table), with half
  and twice that around it;
* no noise (``pipeline = direct``, sigma = 0): the proxy is the oracle; its oracle return never falls along either
  path, by construction. It is the reference the noise is compared with.

The finite-population effect: Gao et al.'s argument that independent noise cannot hurt (``E[X | X + Z]`` rises with
``X + Z``) is about a fresh draw of Z; a run has one fixed draw over a finite set of sequences. Under strong
pressure the policy concentrates on the few sequences whose realised noise is largest. Here most sequences are
long (6^5 of length 5 per prompt), long ones have lower oracle returns (repeated tokens cost 2 each), and the
largest draws sit among them: the noisy argmax is a long sequence (length 4 or 5 in 77% of prompts) with a draw of
about 3 sd whose oracle return is far below the best sequence's (a short one). So, seed by seed, the oracle return
can peak and fall although the noise is independent of it; which seeds fall depends on the draw, so the fall is
spread along the path and the *mean* curve over seeds barely falls.

What the check tests, per method, on each seed's fall from the best point of its path to the end (exactly 0 for a
path that never falls): (1) matched noise makes the oracle return fall where the same seed without noise does not
(paired Wilcoxon, p < 0.01); (2) the reward model's fall is larger than matched noise's (paired Wilcoxon,
p < 0.01). It reports the share of the reward model's fall that matched noise reproduces (ratio of mean falls,
bootstrap CI), how many seeds fall, and whether the mean curve falls (sign-flip max-t test, not asserted).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import axes, mean_ci
from experiments.catalog.pressure_shared import fall_from_best, method_of, paths, peak_drop_test

TABLE = "curves"
CLAIM = (
    "a fixed draw of independent noise of the reward model's own size (sd 2.7, noise/signal 1.0) makes the oracle "
    "return peak and fall in many seeds (a finite-population effect; never without noise), but the misspecified "
    "reward model's fall is larger, seed by seed"
)
MATCHED = 2.7  # the reward model's error in oracle units (median over seeds), see the module docstring
SIGMA = "corruption.noise.sigma"
ALPHA = 0.01
METHODS = {"soft_planner": "soft optimum (beta path)", "best_of_n": "best-of-n (n path)"}


def conditions(table) -> dict[str, dict[tuple[str, float], dict[str, np.ndarray]]]:
    """Per method: ``("rm", 0)``, ``("noise", sigma)`` and ``("none", 0)`` -> aligned per-seed paths. Rows of
    ``pipeline = rlhf`` with sigma > 0 (a teacher who perceives the noise) are not a condition and are left out."""
    df = table.assign(method=method_of(table), sigma=table[SIGMA].astype(float))
    out: dict[str, dict] = {}
    for (method, pipeline, sigma), g in df.groupby(["method", "pipeline", "sigma"]):
        if pipeline == "rlhf":
            if sigma > 0:
                continue
            key = ("rm", 0.0)
        else:
            key = ("noise", float(sigma)) if sigma > 0 else ("none", 0.0)
        out.setdefault(method, {})[key] = paths(g)
    return {m: out[m] for m in [*METHODS, *sorted(set(out) - set(METHODS))] if m in out}


def _paired(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each seed's fall from the best point of its path to the end, under two conditions, on their common seeds."""
    common = np.intersect1d(a["seeds"], b["seeds"])
    ia, ib = np.searchsorted(a["seeds"], common), np.searchsorted(b["seeds"], common)
    return fall_from_best(a["oracle"])[ia], fall_from_best(b["oracle"])[ib]


def decomposition(table) -> pd.DataFrame:
    """Per method and condition: the mean fall from each seed's best point to the end with its 95% CI, and its
    share of the reward model's (ratio of means over the common seeds) with a bootstrap CI."""
    rows = []
    for method, conds in conditions(table).items():
        rm = conds.get(("rm", 0.0))
        for key, m in conds.items():
            mean, lo, hi = mean_ci(fall_from_best(m["oracle"]))
            row = {"method": method, "condition": key[0], "sigma": key[1], "drop": mean, "lo": lo, "hi": hi}
            if rm is not None and key[0] != "rm":
                d_rm, d_x = _paired(rm, m)
                idx = np.random.default_rng(0).integers(0, d_rm.size, (2000, d_rm.size))
                share = d_x[idx].mean(axis=1) / np.maximum(d_rm[idx].mean(axis=1), 1e-12)
                row.update(share=d_x.mean() / max(d_rm.mean(), 1e-12), share_lo=np.quantile(share, 0.025),
                           share_hi=np.quantile(share, 0.975))  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows)


def matched_level(table) -> tuple[float, float, float] | None:
    """From the table, per seed: the reward model's noise-to-signal ratio ``sqrt(1 - rho^2) / rho`` (rho =
    ``1 - 2 reward_distance^2``), the oracle's sd under pi_ref (from the no-noise soft path's first point,
    ``KL ~ Var / (2 beta^2)`` at beta = 100), and their product, the matched sigma. Returns the medians, or None
    when the sweep lacks the runs."""
    df = table.assign(method=method_of(table), sigma=table[SIGMA].astype(float))
    rm = df[(df["pipeline"] == "rlhf") & (df["sigma"] == 0)]
    ref = df[(df["pipeline"] == "direct") & (df["sigma"] == 0) & (df["method"] == "soft_planner")]
    if rm.empty or ref.empty or "reward_distance" not in rm.columns or "beta" not in ref.columns:
        return None
    rho = 1 - 2 * rm.groupby("seed")["reward_distance"].first() ** 2
    eta = np.sqrt(1 - rho**2) / rho
    first = ref.sort_values("step").groupby("seed").head(1).set_index("seed")
    sd = first["beta"] * np.sqrt(2 * first["kl_to_reference"])
    both = pd.concat([eta.rename("eta"), sd.rename("sd")], axis=1).dropna()
    return float(both["eta"].median()), float(both["sd"].median()), float((both["eta"] * both["sd"]).median())


def _label(key) -> str:
    kind, sigma = key
    if kind == "rm":
        return "reward model (misspecified)"
    if kind == "none":
        return "no noise (proxy = oracle)"
    return f"oracle + noise, sd {sigma:g}" + (" (matched)" if np.isclose(sigma, MATCHED) else "")


def plot(table, ax=None):
    conds = conditions(table)
    axs = np.atleast_1d(axes(len(conds) + 1, ax))
    noise_levels = sorted({k[1] for c in conds.values() for k in c if k[0] == "noise"})
    blues = {s: c for s, c in zip(noise_levels, ["#9ecae1", "#4292c6", "#08306b", "#041a3a"], strict=False)}
    top = max(float(m["oracle"].mean(axis=0).max()) for cs in conds.values() for m in cs.values())
    for a, (method, cs) in zip(axs, conds.items(), strict=False):
        a.set_ylim(-0.2, 1.6 * top)
        for key in sorted(cs, key=lambda k: ({"none": 0, "noise": 1, "rm": 2}[k[0]], k[1])):
            m = cs[key]
            s = np.array([mean_ci(col) for col in m["oracle"].T])
            style = {"rm": dict(color="C3", lw=2), "none": dict(color="grey", ls=":", lw=1.5)}.get(
                key[0], dict(color=blues.get(key[1], "C0"), lw=2 if np.isclose(key[1], MATCHED) else 1.2)
            )
            a.plot(m["d"], s[:, 0], label=_label(key), **style)
            a.fill_between(m["d"], s[:, 1], s[:, 2], alpha=0.12, color=style["color"])
        a.axhline(0, color="grey", lw=0.5)
        a.set(
            xlabel="d = sqrt(KL(pi || pi_ref))  (sqrt nats)",
            ylabel="oracle return gain over pi_ref (reward units)",
            title=f"{METHODS.get(method, method)}: oracle return",
        )
        a.legend(fontsize=6.5, loc="upper left", framealpha=0.9)
    b = axs[len(conds)]
    width = 0.8 / max(1, len(conds))
    rng = np.random.default_rng(0)
    ticks: list[str] = []
    dec = decomposition(table)
    for j, (method, cs) in enumerate(conds.items()):
        keys = sorted((k for k in cs if k[0] != "none"), key=lambda k: (k[0] == "rm", k[1]))
        g = dec[dec["method"] == method].set_index(["condition", "sigma"]).loc[keys]
        x = np.arange(len(keys)) + (j - (len(conds) - 1) / 2) * width
        b.bar(x, g["drop"], width, yerr=[g["drop"] - g["lo"], g["hi"] - g["drop"]], capsize=2, alpha=0.75,
              label=METHODS.get(method, method), color=f"C{j}")  # fmt: skip
        for xi, key in zip(x, keys, strict=True):
            f = fall_from_best(cs[key]["oracle"])
            b.scatter(xi + rng.uniform(-0.25, 0.25, f.size) * width, f, s=4, color="k", alpha=0.35, zorder=3)
            share = g.loc[key].get("share", np.nan)
            if key[0] == "noise" and np.isfinite(share):
                b.text(xi, g.loc[key, "hi"] + 0.05, f"{share:.0%}", ha="center", fontsize=6.5, fontweight="bold")
        ticks = [("reward\nmodel" if k[0] == "rm" else f"noise\nsd {k[1]:g}") for k in keys]
    b.set_xticks(np.arange(len(ticks)), ticks, fontsize=7)
    b.set(
        ylabel="fall after each seed's best point\n(reward units; bars: mean, 95% CI)",
        title="falls (dots: seeds); % = share of\nthe reward model's fall",
    )
    b.legend(fontsize=7, loc="upper left")
    return axs


def _falls(m: dict) -> int:
    """Seeds whose oracle return falls by more than 5% of their path's range after their best point."""
    o = m["oracle"]
    return int((fall_from_best(o) > 0.05 * np.ptp(o, axis=1)).sum())


def check(table) -> None:
    conds = conditions(table)
    assert conds, "no runs"
    lines, found = [], {}
    level = matched_level(table)
    if level is not None:
        lines.append(
            f"matched level from the table: the reward model's noise/signal {level[0]:.2f} x the oracle's sd "
            f"{level[1]:.2f} = {level[2]:.2f} (medians over seeds; the sweep's matched sigma is {MATCHED})"
        )
    for method, cs in conds.items():
        rm, none = cs.get(("rm", 0.0)), cs.get(("none", 0.0))
        matched = next((m for (kind, s), m in cs.items() if kind == "noise" and np.isclose(s, MATCHED)), None)
        assert rm is not None and none is not None and matched is not None, (
            f"{method}: the sweep needs the reward model, sigma = 0 and sigma = {MATCHED}"
        )
        d_noise, d_none = _paired(matched, none)
        d_rm, d_noise2 = _paired(rm, matched)
        p_noise = float(stats.wilcoxon(d_noise - d_none, alternative="greater", zero_method="zsplit").pvalue)
        p_more = float(stats.wilcoxon(d_rm - d_noise2, alternative="greater", zero_method="zsplit").pvalue)
        found[method] = (d_noise, d_none, p_noise, d_rm, d_noise2, p_more)
        t_noise, t_rm = peak_drop_test(matched["oracle"]), peak_drop_test(rm["oracle"])
        n = matched["oracle"].shape[0]
        lines.append(
            f"{method}: fall from each seed's best point to the end: matched noise {d_noise.mean():.2f} "
            f"({_falls(matched)}/{n} seeds fall by > 5% of their range) vs {d_none.mean():.2f} without noise "
            f"(paired Wilcoxon p = {p_noise:.2g}); reward model {d_rm.mean():.2f} ({_falls(rm)}/{rm['oracle'].shape[0]}"
            f" seeds), {np.mean(d_rm - d_noise2):+.2f} more than matched noise "
            f"(sd {np.std(d_rm - d_noise2, ddof=1):.2f}, paired Wilcoxon p = {p_more:.2g}); mean curve falls by "
            f"{t_noise['drop']:.2f} under matched noise "
            f"(sign-flip max-t p = {t_noise['p']:.2g}), by {t_rm['drop']:.2f} under the reward model "
            f"(p = {t_rm['p']:.2g})"
        )
    dec = decomposition(table)
    for _, r in dec[dec["condition"] == "noise"].iterrows():
        lines.append(
            f"  {r['method']}, noise sd {r['sigma']:g}: fall {r['drop']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}], "
            f"{r['share']:.0%} of the RM's [{r['share_lo']:.0%}, {r['share_hi']:.0%}]"
        )
    print("\n".join(lines))
    if level is not None:
        assert MATCHED / 1.5 < level[2] < MATCHED * 1.5, (
            f"the sweep's matched sigma {MATCHED} is not the reward model's error level {level[2]:.2f} in this table"
        )
    for method, (d_noise, d_none, p_noise, d_rm, d_noise2, p_more) in found.items():
        assert p_noise < ALPHA, (
            f"{method}: matched independent noise (sd {MATCHED}) does not make the oracle return fall more than no "
            f"noise does (mean fall {d_noise.mean():.3f} vs {d_none.mean():.3f}; paired Wilcoxon p = {p_noise:.3g})"
        )
        assert p_more < ALPHA, (
            f"{method}: the reward model's fall ({d_rm.mean():.3f}) does not exceed matched noise's "
            f"({d_noise2.mean():.3f}) seed by seed (paired Wilcoxon p = {p_more:.3g})"
        )
