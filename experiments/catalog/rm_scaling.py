"""Reward-model capacity and data (Gao et al. 2022, Fig. 1 and 3), computed exactly, seed by seed.

scale_overoptimization's compressed world (the oracle rewards token quality and penalises stuttering); a linear
reward model over unigram, position and bigram templates, whose bigram weights *can* learn the stutter penalty,
hashed into ``d`` parameters (``reward_model.dim``; 0 = one parameter per feature, ``D`` of them), crossed with the
number of preference labels N. The soft planner optimises each model along a beta path; each run's *peak* is the
best oracle gain over pi_ref along the path, as a fraction of the attainable gain (optimal minus pi_ref's return).
Gao et al.'s two forms (best-of-n ``d(a - b d)`` and RL ``d(a - b log d)`` in ``d = sqrt(KL)``) are fitted to each
(capacity, N) cell's mean curve; the figure draws their coefficients against N and capacity.

The check tests the directions with rank statistics over seeds: (1) with the full model the peak rises with N
(Spearman, one-sided); (2) with the most labels the peak rises with capacity (Spearman over the capacity levels'
order); (3) capacity's benefit grows with N: per (N, seed), the full model's peak minus the smallest model's,
against log N (Spearman, one-sided); (4) the slope ``a`` of Gao's RL form fitted to each run's path rises with
capacity (Spearman over runs). Each comes with its effect size in units of the attainable gain. The form's bend ``b``
and the ratio ``b / a`` are drawn and reported, not tested (here ``b`` grows with capacity about in proportion to
``a``: ``b / a``, which sets where the form peaks, shows no trend).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import plt
from experiments.catalog.pressure_shared import FORMS, even_grid, fit_form, paths

TABLE = "curves"
CLAIM = (
    "the reward model's peak oracle gain along the optimisation path rises with the number of labels and, given "
    "enough labels, with the reward model's capacity; capacity's benefit grows with the labels"
)
DIM, N = "reward_model.dim", "feedback.n"
ALPHA = 0.01


def capacity_order(dims) -> list[int]:
    """The capacity levels from smallest to largest (``0``, one parameter per feature, is the largest)."""
    return sorted({int(d) for d in dims}, key=lambda d: np.inf if d == 0 else d)


def capacity_label(d: int) -> str:
    return "full (D)" if d == 0 else f"d = {d}"


def peaks(table: pd.DataFrame) -> pd.DataFrame:
    """Per run: capacity, N, seed, its capacity rank (0 = smallest), the peak and final oracle gain along the path
    as fractions of the attainable gain, the path's d = sqrt(KL) at the peak, and Gao et al.'s RL form
    ``d(a - b log d)`` fitted to the run's own path (``a_rl``, ``b_rl``)."""
    order = capacity_order(table[DIM])
    rows = []
    for (d, n), g in table.groupby([DIM, N]):
        m = paths(g)
        span = g.groupby("seed")[["optimal_return", "reference_return"]].first()
        scale = (span["optimal_return"] - span["reference_return"]).loc[m["seeds"]].to_numpy()
        for i, seed in enumerate(m["seeds"]):
            o = m["oracle"][i] / scale[i]
            k = int(o.argmax())
            a_rl, b_rl, _ = fit_form("rl", *even_grid(m["dd"][i], o))
            rows.append({DIM: int(d), N: int(n), "seed": int(seed), "rank": order.index(int(d)),
                         "peak": float(o[k]), "final": float(o[-1]), "d_peak": float(m["dd"][i, k]),
                         "a_rl": a_rl, "b_rl": b_rl})  # fmt: skip
    return pd.DataFrame(rows)


def cell_fits(table: pd.DataFrame) -> pd.DataFrame:
    """Gao et al.'s two forms fitted to each (capacity, N) cell's seed-mean curve (gain as a fraction of the
    attainable gain, against d = sqrt(KL)): ``a_bon, b_bon, r2_bon, a_rl, b_rl, r2_rl`` per cell."""
    rows = []
    for (d, n), g in table.groupby([DIM, N]):
        m = paths(g)
        span = g.groupby("seed")[["optimal_return", "reference_return"]].first()
        scale = (span["optimal_return"] - span["reference_return"]).loc[m["seeds"]].to_numpy()[:, None]
        grid, y = even_grid(m["dd"].mean(axis=0), (m["oracle"] / scale).mean(axis=0))
        row = {DIM: int(d), N: int(n)}
        for form in FORMS:
            row[f"a_{form}"], row[f"b_{form}"], row[f"r2_{form}"] = fit_form(form, grid, y)
        rows.append(row)
    return pd.DataFrame(rows)


def _median_ci(v: np.ndarray, rng: np.random.Generator, n_boot: int = 1000) -> tuple[float, float, float]:
    boots = np.median(rng.choice(v, size=(n_boot, v.size)), axis=1)
    return float(np.median(v)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def plot(table, ax=None):
    pk, fits = peaks(table), cell_fits(table)
    order, ns = capacity_order(pk[DIM]), sorted(pk[N].unique())
    if ax is None:
        fig, axs = plt.subplots(2, 3, figsize=(15, 8.5), constrained_layout=True)
        ax = axs
    a = np.asarray(ax).ravel()
    rng = np.random.default_rng(0)
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(order)))
    for c, d in zip(colors, order, strict=True):
        s = [_median_ci(pk.loc[(pk[DIM] == d) & (pk[N] == n), "peak"].to_numpy(), rng) for n in ns]
        med, lo, hi = (np.array(v) for v in zip(*s, strict=True))
        a[0].errorbar(ns, med, yerr=[med - lo, hi - med], marker="o", capsize=3, color=c, label=capacity_label(d))
    a[0].set(xscale="log", xlabel="preference labels N (log scale)", ylabel="peak oracle gain / attainable gain",
             title="peak gain vs labels, per capacity (median, 95% CI over seeds)")  # fmt: skip
    a[0].legend(fontsize=7)
    ncolors = plt.cm.plasma(np.linspace(0.0, 0.85, len(ns)))
    x = np.arange(len(order))
    for c, n in zip(ncolors, ns, strict=True):
        s = [_median_ci(pk.loc[(pk[DIM] == d) & (pk[N] == n), "peak"].to_numpy(), rng) for d in order]
        med, lo, hi = (np.array(v) for v in zip(*s, strict=True))
        a[1].errorbar(x, med, yerr=[med - lo, hi - med], marker="o", capsize=3, color=c, label=f"N = {n}")
    a[1].set_xticks(x, [capacity_label(d) for d in order], fontsize=7)
    a[1].set(xlabel="reward-model capacity (hashed parameters d)", ylabel="peak oracle gain / attainable gain",
             title="peak gain vs capacity, per N")  # fmt: skip
    a[1].legend(fontsize=7)
    largest = max(ns)
    for c, d in zip(colors, order, strict=True):
        g = table[(table[DIM] == d) & (table[N] == largest)]
        m = paths(g)
        span = g.groupby("seed")[["optimal_return", "reference_return"]].first()
        scale = (span["optimal_return"] - span["reference_return"]).loc[m["seeds"]].to_numpy()[:, None]
        a[2].plot(m["d"], (m["oracle"] / scale).mean(axis=0), "o-", ms=3, color=c, label=capacity_label(d))
        f = fits[(fits[DIM] == d) & (fits[N] == largest)].iloc[0]
        if np.isfinite(f["a_rl"]):
            xx = np.linspace(m["d"].max() / 100, m["d"].max(), 100)
            a[2].plot(xx, FORMS["rl"][1](xx, f["a_rl"], f["b_rl"]), "--", color=c, lw=0.8)
    a[2].axhline(0, color="grey", lw=0.5)
    a[2].set(xlabel="d = sqrt(KL(pi || pi_ref))", ylabel="oracle gain / attainable gain (seed mean)",
             title=f"N = {largest}: paths (dots) and fitted d(a - b log d) (dashed)")  # fmt: skip
    a[2].legend(fontsize=7)
    for panel, coef, name in ((a[3], "a_rl", "a"), (a[4], "b_rl", "b")):
        for c, d in zip(colors, order, strict=True):
            f = fits[fits[DIM] == d].sort_values(N)
            panel.plot(f[N], f[coef], "o-", color=c, label=capacity_label(d))
        panel.set(xscale="log", xlabel="preference labels N (log scale)", ylabel=f"fitted {name}",
                  title=f"RL form d(a - b log d): fitted {name} per (capacity, N)")  # fmt: skip
        panel.axhline(0, color="grey", lw=0.5)
        panel.legend(fontsize=7)
    for c, d in zip(colors, order, strict=True):
        f = fits[fits[DIM] == d].sort_values(N)
        a[5].plot(f[N], f["r2_rl"], "o-", color=c, label=f"{capacity_label(d)}, RL form")
        a[5].plot(f[N], f["r2_bon"], "x:", color=c)
    a[5].set(xscale="log", xlabel="preference labels N (log scale)", ylabel="R$^2$ of the fit",
             title="fit quality: RL form (o-) and best-of-n form d(a - b d) (x:)")  # fmt: skip
    a[5].legend(fontsize=7)
    return np.asarray(ax)


def _spearman_one_sided(x, y) -> tuple[float, float]:
    rho, p = stats.spearmanr(x, y)
    if not np.isfinite(rho):
        return 0.0, 1.0
    return float(rho), float(p / 2 if rho > 0 else 1 - p / 2)


def check(table) -> None:
    pk = peaks(table)
    order, ns = capacity_order(pk[DIM]), sorted(pk[N].unique())
    assert len(order) >= 2 and len(ns) >= 2, "the check needs at least two capacities and two label counts"
    full, small, most, fewest = order[-1], order[0], ns[-1], ns[0]
    f = pk[pk[DIM] == full]
    rho_n, p_n = _spearman_one_sided(np.log(f[N]), f["peak"])
    eff_n = f.loc[f[N] == most, "peak"].median() - f.loc[f[N] == fewest, "peak"].median()
    t = pk[pk[N] == most]
    rho_d, p_d = _spearman_one_sided(t["rank"], t["peak"])

    wide = pk.set_index([N, "seed", DIM])["peak"].unstack(DIM)
    benefit = (wide[full] - wide[small]).dropna()  # per (N, seed): the full model's peak minus the smallest's
    rho_b, p_b = _spearman_one_sided(np.log(benefit.index.get_level_values(N)), benefit.to_numpy())
    b_most, b_fewest = benefit.loc[most].to_numpy(), benefit.loc[fewest].to_numpy()
    rho_a, p_a = _spearman_one_sided(pk["rank"], pk["a_rl"])
    a_med = pk.groupby(DIM)["a_rl"].median()
    rho_b2, p_b2 = stats.spearmanr(pk["rank"], pk["b_rl"])
    rho_ba, p_ba = stats.spearmanr(pk["rank"], pk["b_rl"] / pk["a_rl"])
    fits = cell_fits(table)
    lines = [
        f"full model: peak gain rises with N (Spearman rho = {rho_n:.2f}, one-sided p = {p_n:.2g}); median peak "
        f"{f.loc[f[N] == fewest, 'peak'].median():.2f} at N = {fewest} -> {f.loc[f[N] == most, 'peak'].median():.2f} "
        f"at N = {most} (+{eff_n:.2f} of the attainable gain)",
        f"N = {most}: peak gain rises with capacity (Spearman rho = {rho_d:.2f}, one-sided p = {p_d:.2g}); median "
        + ", ".join(f"{capacity_label(d)}: {t.loc[t[DIM] == d, 'peak'].median():.2f}" for d in order),
        f"capacity's benefit (full minus {capacity_label(small)}, per seed): median {np.median(b_fewest):+.2f} at "
        f"N = {fewest}, {np.median(b_most):+.2f} at N = {most} (Spearman with log N over (N, seed): rho = {rho_b:.2f}, "
        f"one-sided p = {p_b:.2g})",
        f"Gao's RL form fitted per run: a (gold per unit sqrt KL at the start) rises with capacity (Spearman rho = "
        f"{rho_a:.2f}, one-sided p = {p_a:.2g}; median "
        + ", ".join(f"{capacity_label(d)}: {a_med[d]:.3f}" for d in order)
        + f"); not tested: b (the bend) with capacity rho = {rho_b2:.2f} (p = {p_b2:.2g}), b / a (which sets where "
        f"the form peaks, d* = exp(a / b - 1)) rho = {rho_ba:.2f} (p = {p_ba:.2g})",
        "median peak by (capacity, N): "
        + "; ".join(
            f"{capacity_label(d)}: "
            + " ".join(f"{pk.loc[(pk[DIM] == d) & (pk[N] == n), 'peak'].median():.2f}" for n in ns)  # fmt: skip
            for d in order
        ),
        "fitted RL form d(a - b log d) per (capacity, N) as a, b, R^2: "
        + "; ".join(
            f"{capacity_label(int(r[DIM]))} N={int(r[N])}: {r['a_rl']:.3f}, {r['b_rl']:.3f}, {r['r2_rl']:.2f}"
            for _, r in fits.iterrows()
        ),
    ]
    print("\n".join(lines))
    assert rho_n > 0 and p_n < ALPHA, f"the full model's peak does not rise with N (rho = {rho_n:.2f}, p = {p_n:.3g})"
    assert rho_d > 0 and p_d < ALPHA, (
        f"at N = {most} the peak does not rise with capacity (rho = {rho_d:.2f}, p = {p_d:.3g})"
    )
    assert rho_a > 0 and p_a < ALPHA, (
        f"the fitted slope a does not rise with capacity (rho = {rho_a:.2f}, p = {p_a:.3g})"
    )
    assert rho_b > 0 and p_b < ALPHA, f"capacity's benefit does not grow with N (rho = {rho_b:.2f}, p = {p_b:.3g})"
