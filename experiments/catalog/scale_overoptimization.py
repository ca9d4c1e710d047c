"""Reward-model overoptimisation at language-model scale (V = 1000, H = 32), computed exactly, seed by seed.

The world is never enumerated: oracle, reference and reward model are Markov, so the soft planner's whole beta
path is solved and evaluated by dynamic programming over (prompt, position, last token). The oracle rewards token
quality and penalises stuttering (a token equal to the previous one, weight 3); the reward model is linear over
unigram and position weights, which cannot see stuttering. Under mild pressure the policy picks better tokens.
Under strong pressure it writes the reward model's favourite token at every position it can, and whether that
stutters is all or nothing: if one token's estimated unigram weight beats every position's estimated weights, the
policy repeats it and the oracle return collapses far below pi_ref's; if the position weights are estimated well
enough that the best token changes from one position to the next, the return stays high. So the outcome across
seeds is two groups, not a mean with noise around it, and more labels move seeds from the first group to the second.

The check tests distributional statements: (1) with the fewest labels the oracle return falls after a peak
(:func:`experiments.catalog.pressure_shared.peak_drop_test`); (2) the share of seeds whose oracle return ends below
pi_ref's (a collapse) falls as the number of labels grows (Cochran-Armitage trend test in log N); (3) each seed's
peak gain rises with N (Spearman), Gao et al.'s data scaling. The figure draws every seed's path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.catalog.common import plt
from experiments.catalog.pressure_shared import describe_fits, form_fits, paths, peak_drop_test

TABLE = "curves"
CLAIM = (
    "at language-model scale, with few labels the oracle return peaks and then collapses below pi_ref's in most "
    "seeds; as labels grow, the share of seeds that collapse falls and each seed's peak rises"
)
N = "feedback.n"
ALPHA = 0.01


def _groups(table) -> dict[int, dict[str, np.ndarray]]:
    return {int(n): paths(g) for n, g in table.groupby(N)}


def outcomes(table) -> pd.DataFrame:
    """Per (N, seed): the peak gain, the final gain and whether the run collapses (final gain below 0)."""
    rows = []
    for n, m in _groups(table).items():
        for i, seed in enumerate(m["seeds"]):
            o = m["oracle"][i]
            rows.append({N: n, "seed": int(seed), "peak": float(o.max()), "final": float(o[-1]),
                         "collapse": bool(o[-1] < 0)})  # fmt: skip
    return pd.DataFrame(rows)


def cochran_armitage(x: np.ndarray, n: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """The Cochran-Armitage test for a trend in proportions ``x / n`` over ordered groups with scores ``score``.

    Returns:
        ``(z, one-sided p for a decreasing trend)``.
    """
    x, n, score = (np.asarray(v, dtype=float) for v in (x, n, score))
    p = x.sum() / n.sum()
    if p in (0.0, 1.0):
        return 0.0, 1.0
    centred = score - (n * score).sum() / n.sum()
    z = float((x * centred).sum() / np.sqrt(p * (1 - p) * (n * centred**2).sum()))
    return z, float(stats.norm.cdf(z))


def plot(table, ax=None):
    groups = _groups(table)
    k = len(groups)
    if ax is None:  # a row of per-N panels over two summary panels of half the width each
        cols = max(k, 2)
        fig = plt.figure(figsize=(3.6 * cols, 6.6), constrained_layout=True)
        grid = fig.add_gridspec(2, 2 * cols)
        top = [fig.add_subplot(grid[0, 2 * i : 2 * i + 2]) for i in range(k)]
        bottom = [fig.add_subplot(grid[1, :cols]), fig.add_subplot(grid[1, cols:])]
    else:
        axs = np.atleast_1d(ax)
        top, bottom = axs[:k], axs[k : k + 2]
    ymin = min(m["oracle"].min() for m in groups.values())
    ymax = max(max(m["oracle"].max(), m["proxy"].max()) for m in groups.values())
    for a, (n, m) in zip(top, groups.items(), strict=False):
        labelled = set()
        for dd, o in zip(m["dd"], m["oracle"], strict=True):
            collapsed = bool(o[-1] < 0)
            label = (
                None
                if collapsed in labelled
                else ("one seed, collapses (ends < 0)" if collapsed else "one seed, does not collapse")
            )
            labelled.add(collapsed)
            a.plot(dd, o, "-", lw=0.9, alpha=0.8, color="C3" if collapsed else "C0", label=label)
        a.plot(m["d"], np.median(m["proxy"], axis=0), "--", color="C1", lw=1.5, label="proxy (median over seeds)")
        a.axhline(0, color="grey", lw=0.5)
        share = np.mean(m["oracle"][:, -1] < 0)
        a.set(
            ylim=(ymin * 1.05, ymax * 1.05),
            xlabel="d = sqrt(KL(pi || pi_ref))  (sqrt nats)",
            ylabel="oracle return gain over pi_ref",
            title=f"N = {n} labels: {int(round(share * m['oracle'].shape[0]))} of {m['oracle'].shape[0]} collapse",
        )
        a.legend(fontsize=6.5, loc="lower left")
    out = outcomes(table)
    ns = sorted(out[N].unique())
    rng = np.random.default_rng(0)
    a = bottom[0]
    for col, color, label in (("peak", "C2", "peak gain"), ("final", "C3", "final gain (end of the path)")):
        jitter = np.exp(rng.uniform(-0.06, 0.06, len(out)))
        a.scatter(out[N] * jitter, out[col], s=12, color=color, alpha=0.7, label=label)
        a.plot(ns, [out.loc[out[N] == n, col].median() for n in ns], "-", color=color, lw=1)
    a.axhline(0, color="grey", lw=0.5)
    a.set(xscale="log", xlabel="preference labels N (log scale)", ylabel="oracle return gain over pi_ref",
          title="every seed's peak and final gain")  # fmt: skip
    a.legend(fontsize=7, title="points: seeds; lines: medians", title_fontsize=7)
    b = bottom[1]
    share = out.groupby(N)["collapse"].agg(["sum", "count"])
    cis = np.array([stats.binomtest(int(r["sum"]), int(r["count"])).proportion_ci(0.95) for _, r in share.iterrows()])
    lo, hi = cis[:, 0], cis[:, 1]
    frac = share["sum"] / share["count"]
    b.errorbar(share.index, frac, yerr=[frac - lo, hi - frac], marker="o", capsize=3)
    b.set(xscale="log", ylim=(-0.05, 1.05), xlabel="preference labels N (log scale)",
          ylabel="share that collapse (95% Clopper-Pearson CI)", title="share of seeds that collapse")  # fmt: skip
    return np.concatenate([np.atleast_1d(top), np.atleast_1d(bottom)])


def check(table) -> None:
    groups = _groups(table)
    out = outcomes(table)
    fewest = min(groups)
    m = groups[fewest]
    s = peak_drop_test(m["oracle"])
    share = out.groupby(N)["collapse"].agg(["sum", "count"])
    z, p_share = cochran_armitage(share["sum"], share["count"], np.log10(share.index.to_numpy(dtype=float)))
    rho, p_rho = stats.spearmanr(np.log10(out[N]), out["peak"]) if out[N].nunique() > 1 else (np.nan, np.nan)
    lines = [
        f"N = {fewest}: oracle peak {m['oracle'].mean(axis=0).max():.1f}, largest mean drop to the end "
        f"{s['drop']:.1f} (sign-flip max-t p = {s['p']:.2g}, {s['n']} seeds)",
        "collapse share by N: "
        + ", ".join(f"{n}: {int(r['sum'])}/{int(r['count'])}" for n, r in share.iterrows())
        + f" (Cochran-Armitage z = {z:.2f}, one-sided p = {p_share:.2g})",
        "final gain by N (min / median / max): "
        + "; ".join(
            f"{n}: {g['final'].min():.1f} / {g['final'].median():.1f} / {g['final'].max():.1f}"
            for n, g in out.groupby(N)
        ),
        f"peak gain by N (median): {', '.join(f'{n}: {g.median():.1f}' for n, g in out.groupby(N)['peak'])} "
        f"(Spearman rho with log N = {rho:.2f}, p = {p_rho:.2g})",
    ]
    for n, g in groups.items():
        lines.append("  " + describe_fits(f"N = {n}", form_fits(g["dd"], g["oracle"], n_boot=100)))
    print("\n".join(lines))
    K = m["oracle"].shape[1]
    k = int(m["oracle"].mean(axis=0).argmax())
    assert 0 < k < K - 1, f"N = {fewest}: the mean oracle return peaks at the path's {'end' if k else 'start'}"
    assert s["p"] < ALPHA, f"N = {fewest}: no significant fall after the oracle peak (p = {s['p']:.3g})"
    assert share["sum"].iloc[0] > share["count"].iloc[0] / 2, (
        f"N = {fewest}: only {int(share['sum'].iloc[0])} of {int(share['count'].iloc[0])} seeds collapse"
    )
    assert len(share) > 1 and p_share < ALPHA, (
        f"the share of collapsing seeds does not fall with N (Cochran-Armitage z = {z:.2f}, p = {p_share:.3g})"
    )
    assert rho > 0 and p_rho / 2 < ALPHA, (
        f"the peak gain does not rise with N (Spearman rho = {rho:.2f}, p = {p_rho:.3g})"
    )
