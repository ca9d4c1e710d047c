"""Reward-model overoptimisation (Gao, Schulman and Hilton 2022) in an exact world.

A linear reward model is fitted to 300 preferences of an oracle that rewards token quality and penalises
repeated tokens (weight 2), which no linear model represents. Optimisation pressure grows along three paths, each
recorded per seed and aligned by step: the exact soft optimum ``pi ∝ pi_ref exp(r_hat / beta)`` along a beta path
(40 betas from 100 down to 0.003), best-of-n along n (1 to 4096), and PPO (``agent=ppo``: a log-linear policy over
[position, bigram], per-token KL penalty 0.003, GAE with a linear value function, 4,000 episodes in batches of 256)
along its training checkpoints, the optimiser RLHF practice uses. ``d = sqrt(KL(pi || pi_ref))``.

What the check tests: the mean oracle return peaks inside the path, and seeds' gains fall from a point of the path
to its end, significantly (a sign-flip test whose null distribution includes choosing that point:
:func:`experiments.catalog.pressure_shared.peak_drop_test`). What holds by
construction and is not tested: the proxy return rises monotonically along the soft optimum's path and along n
(``d/dbeta E_pi_beta[r_hat] < 0``; best-of-n's proxy return grows with n); for PPO it is not guaranteed, so it is
checked there (Spearman of the mean proxy over the checkpoints, > 0.9). PPO runs at paper scale only (its sanity runs
are ``kl_penalty``'s); the check tests every method in the table. Exact natural policy gradient is not a separate
panel: each of its iterates is a soft optimum, so it traces the soft planner's path.

Gao et al.'s forms, best-of-n ``R(d) = d (a - b d)`` and RL ``R(d) = d (a - b log d)``, are both fitted to every
method's mean curve at 20 evenly spaced points in d; the legend and the check's output give both R^2 and a bootstrap
interval of their difference (PPO's path gets the origin, pi_ref, before its first checkpoint). They are reported,
not claimed: at paper scale both forms fit every method (R^2 0.93 to 0.99), the intervals include 0 on the soft path
and best-of-n, and where one excludes it (PPO: +0.06, 95% CI +0.02 to +0.12) it favours d(a - b d): the data do not
single out Gao et al.'s RL form for the RL paths.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from experiments.catalog.common import axes, mean_ci
from experiments.catalog.pressure_shared import (
    describe_fits,
    fits_legend,
    form_curve,
    form_fits,
    method_of,
    paths,
    peak_drop_test,
)

TABLE = "curves"
CLAIM = (
    "along the soft optimum's beta path, best-of-n's n and PPO training, the reward-model proxy rises "
    "while the oracle return peaks inside the path and then falls significantly, seed by seed"
)
METHODS = {
    "soft_planner": "soft optimum (beta path)",
    "best_of_n": "best-of-n (n path)",
    "ppo": "PPO (training checkpoints)",
}
ALPHA = 0.01


def path_means(df) -> dict[str, dict[str, np.ndarray]]:
    """Per method (in the order of :data:`METHODS`), the aligned per-seed paths (:func:`pressure_shared.paths`)."""
    df = df.assign(method=method_of(df))
    found = {m: paths(g) for m, g in df.groupby("method")}
    return {m: found[m] for m in [*METHODS, *sorted(set(found) - set(METHODS))] if m in found}


def plot_paths(table, ax=None, proxy_label: str = "proxy (reward model)", fits: bool = True):
    """One panel per method: oracle and proxy gain against d with CIs; both of Gao et al.'s forms fitted to the
    oracle curve, with their R^2 in the legend."""
    means = path_means(table)
    axs = np.atleast_1d(axes(len(means), ax))
    for a, (method, m) in zip(axs, means.items(), strict=False):
        for key, color, label in (("oracle", "C0", "oracle (gold)"), ("proxy", "C1", proxy_label)):
            s = np.array([mean_ci(col) for col in m[key].T])
            a.plot(m["d"], s[:, 0], "o-", ms=2, lw=1.5, color=color, label=label)
            a.fill_between(m["d"], s[:, 1], s[:, 2], color=color, alpha=0.2)
        if fits:
            f = form_fits(m["dd"], m["oracle"], n_boot=0)
            labels = fits_legend(f)
            for form, style in (("bon", "k--"), ("rl", "k:")):
                if np.isfinite(f[f"r2_{form}"]):
                    a.plot(*form_curve(form, f[f"a_{form}"], f[f"b_{form}"], m["d"].max()), style, lw=1.2,
                           label=labels[form])  # fmt: skip
        a.axhline(0, color="grey", lw=0.5)
        a.set(
            xlabel="d = sqrt(KL(pi || pi_ref))  (sqrt nats)",
            ylabel="return gain over pi_ref (reward units)",
            title=f"{METHODS.get(method, method)}, {m['oracle'].shape[0]} seeds",
        )
        a.legend(fontsize=7, loc="upper left")
    return axs


def plot(table, ax=None):
    return plot_paths(table, ax)


def drop_stats(m: dict) -> dict[str, float]:
    """The oracle side of the claim on one method's path: where the mean oracle curve peaks (``k``), and the
    selection-aware test that the gain falls from some point of the path to its end
    (:func:`experiments.catalog.pressure_shared.peak_drop_test`: ``drop`` and ``p`` at its step ``k_test``).

    Returns:
        ``k``, ``K`` (path length), ``peak`` (mean gain at ``k``), ``drop`` (mean, reward units), ``drop_sd``,
        ``p``, ``n`` (seeds).
    """
    oracle = m["oracle"]
    mean = oracle.mean(axis=0)
    k = int(mean.argmax())
    t = peak_drop_test(oracle)
    return {
        "k": k,
        "K": oracle.shape[1],
        "peak": float(mean[k]),
        "drop": float(mean[k] - mean[-1]),
        "drop_sd": float((oracle[:, k] - oracle[:, -1]).std(ddof=1)),
        "p": t["p"],
        "n": oracle.shape[0],
    }


def describe_drop(label: str, m: dict, s: dict) -> str:
    return (
        f"{label}: oracle peak gain {s['peak']:.2f} at d = {m['d'][s['k']]:.2f} (point {s['k'] + 1} of {s['K']}), "
        f"then a drop of {s['drop']:.2f} (sd {s['drop_sd']:.2f}, {s['drop'] / max(s['peak'], 1e-12):.0%} of the peak "
        f"gain; sign-flip max-t p = {s['p']:.2g}, {s['n']} seeds)"
    )


def assert_overoptimized(label: str, s: dict) -> None:
    """The mean oracle curve peaks inside the path, and the drop after it is significant."""
    k, K = s["k"], s["K"]
    assert 0 < k < K - 1, f"{label}: the mean oracle return peaks at the path's {'end' if k else 'start'} ({k}/{K})"
    assert s["p"] < ALPHA, (
        f"{label}: no significant fall after the oracle peak (mean drop {s['drop']:.3f} reward units, "
        f"{s['drop'] / max(s['peak'], 1e-12):.0%} of the peak gain {s['peak']:.3f}; p = {s['p']:.3g}, {s['n']} seeds)"
    )


def check(table) -> None:
    means = path_means(table)
    for method in ("soft_planner", "best_of_n"):
        assert method in means, f"no {method} runs in the table"
    lines, found = [], {}
    for method, m in means.items():
        found[method] = drop_stats(m)
        lines.append(describe_drop(method, m, found[method]))
        lines.append("  " + describe_fits(method, form_fits(m["dd"], m["oracle"])))
    print("\n".join(lines))
    for method, m in means.items():
        if method in ("ppo", "policy_gradient"):  # not monotone by construction for a sampled learner
            proxy = m["proxy"].mean(axis=0)
            rho = stats.spearmanr(np.arange(proxy.size), proxy)[0]
            assert rho > 0.9, f"{method}: the mean proxy return does not rise with training (Spearman {rho:.3f})"
        assert_overoptimized(method, found[method])
