"""Reward-model overoptimisation (Gao, Schulman and Hilton 2022) in an exact world.

A linear reward model is fitted to 300 preferences of an oracle that rewards token quality and penalises
repeated tokens (weight 2), which no linear model represents. Optimisation pressure grows along a beta path
(soft planner, KL-regularised policy gradient) or with n (best-of-n); d = sqrt(KL(pi || pi_ref)). Gao et al.'s
forms are fitted to the gain in oracle return over the reference: best-of-n R(d) = d (a - b d),
RL R(d) = d (a - b log d).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats

from experiments.catalog.common import axes, mean_ci

TABLE = "curves"
CLAIM = "proxy return rises monotonically with optimisation pressure while oracle return peaks and falls"
METHODS = {
    "soft_planner": "soft planner (beta path)",
    "best_of_n": "best-of-n (n path)",
    "policy_gradient": "policy gradient (training checkpoints)",
}


def _method(df):
    return df["agent.name"] if "agent.name" in df.columns else df["agent"]


def path_means(df) -> dict[str, np.ndarray]:
    """Per method: seed-mean d = sqrt(KL) along the path, and per seed the oracle and proxy gains over pi_ref."""
    out = {}
    for method, g in df.assign(method=_method(df)).groupby("method"):
        g = g.sort_values(["seed", "step"])
        K = g.groupby("seed").size().min()
        per_seed = [s.head(K) for _, s in g.groupby("seed")]
        d = np.mean([np.sqrt(s["kl_to_reference"].to_numpy()) for s in per_seed], axis=0)
        oracle = np.array([s["oracle_return"].to_numpy() - s["reference_return"].to_numpy() for s in per_seed])
        proxy = np.array([s["proxy_return"].to_numpy() - s["reference_proxy_return"].to_numpy() for s in per_seed])
        out[method] = {"d": d, "oracle": oracle, "proxy": proxy}
    return out


def gao_fit(method: str, d: np.ndarray, gain: np.ndarray) -> np.ndarray | None:
    """Least-squares (a, b) of Gao et al.'s functional form, or None if it does not fit."""
    keep = d > 1e-3
    if keep.sum() < 3:
        return None
    form = (lambda x, a, b: x * (a - b * x)) if method == "best_of_n" else (lambda x, a, b: x * (a - b * np.log(x)))
    try:
        return optimize.curve_fit(form, d[keep], gain[keep], p0=(1.0, 0.1), maxfev=10000)[0]
    except (RuntimeError, ValueError):
        return None


def plot_paths(table, ax=None, proxy_label: str = "proxy (reward model)", fits: bool = True):
    """One panel per method: oracle and proxy gain against d with CIs; Gao et al.'s fit overlaid on the oracle."""
    means = path_means(table)
    axs = np.atleast_1d(axes(len(means), ax))
    for a, (method, m) in zip(axs, means.items(), strict=False):
        for key, color, label in (("oracle", "C0", "oracle (gold)"), ("proxy", "C1", proxy_label)):
            stats_ = np.array([mean_ci(col) for col in m[key].T])
            a.plot(m["d"], stats_[:, 0], "o-", ms=3, color=color, label=label)
            a.fill_between(m["d"], stats_[:, 1], stats_[:, 2], color=color, alpha=0.2)
        params = gao_fit(method, m["d"], m["oracle"].mean(axis=0)) if fits else None
        if params is not None:
            x = np.linspace(max(m["d"].min(), 1e-3), m["d"].max(), 100)
            y = x * (params[0] - params[1] * (x if method == "best_of_n" else np.log(x)))
            form = "d(a - b d)" if method == "best_of_n" else "d(a - b log d)"
            a.plot(x, y, "k--", lw=1, label=f"fit {form}: a={params[0]:.2f}, b={params[1]:.2f}")
        a.axhline(0, color="grey", lw=0.5)
        a.set(
            xlabel="d = sqrt(KL(pi || pi_ref)) (sqrt nats)",
            ylabel="return gain over pi_ref (reward units)",
            title=METHODS.get(method, method),
        )
        a.legend(fontsize=7)
    return axs


def plot(table, ax=None):
    return plot_paths(table, ax)


def assert_overoptimized(m: dict, label: str, test: str = "t") -> None:
    """The claim on one method's path: mean proxy monotone in pressure; mean oracle with an interior peak and a
    significant per-seed drop after it (``test``: one-sided t-test, or Wilcoxon for heavy tails)."""
    proxy = m["proxy"].mean(axis=0)
    rho = stats.spearmanr(np.arange(proxy.size), proxy)[0]
    assert rho > 0.99, f"{label}: the mean proxy return is not monotone in pressure (Spearman {rho:.3f})"
    oracle = m["oracle"]
    mean = oracle.mean(axis=0)
    k = int(mean.argmax())
    assert 0 < k < mean.size - 1, f"{label}: the mean oracle return peaks at the path's end (index {k})"
    drop = oracle[:, k] - oracle[:, -1]  # per seed, from the mean curve's peak to the end
    if test == "wilcoxon":
        p = stats.wilcoxon(drop, alternative="greater").pvalue
    else:
        p = stats.ttest_1samp(drop, 0.0, alternative="greater").pvalue
    assert p < 0.01, f"{label}: no significant drop after the peak (mean drop {drop.mean():.3f}, p = {p:.3g})"


def check(table) -> None:
    means = path_means(table)
    for method in ("soft_planner", "best_of_n"):
        assert method in means, f"no {method} runs in the table"
        assert_overoptimized(means[method], method)
