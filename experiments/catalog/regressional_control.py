"""Regressional Goodhart, the negative control: proxy = oracle + independent noise, no misspecification.

Gao et al. (2022): with X_hat = X + Z and independent Gaussian Z, E[X | X_hat] rises monotonically with X_hat,
so optimising harder never hurts on average. If this experiment showed a peak, the overoptimisation figure's
peak could be an artefact of the simulator; it must not.
"""

from __future__ import annotations

import numpy as np

from experiments.catalog.common import axes, mean_ci
from experiments.catalog.overoptimization import METHODS, path_means

TABLE = "curves"
CLAIM = "with independent noise and no misspecification, oracle return never falls as pressure grows"


def plot(table, ax=None):
    means = path_means(table)
    axs = np.atleast_1d(axes(len(means), ax))
    for a, (method, m) in zip(axs, means.items(), strict=False):
        for key, color, label in (("oracle", "C0", "oracle"), ("proxy", "C1", "proxy = oracle + noise")):
            s = np.array([mean_ci(col) for col in m[key].T])
            a.plot(m["d"], s[:, 0], "o-", ms=3, color=color, label=label)
            a.fill_between(m["d"], s[:, 1], s[:, 2], color=color, alpha=0.2)
        a.set(
            xlabel="d = sqrt(KL(pi || pi_ref)) (sqrt nats)",
            ylabel="return gain over pi_ref (reward units)",
            title=METHODS.get(method, method),
        )
        a.legend(fontsize=7)
    return axs


def check(table) -> None:
    for method, m in path_means(table).items():
        oracle = m["oracle"]
        mean = oracle.mean(axis=0)
        k = int(mean.argmax())
        drop = oracle[:, k] - oracle[:, -1]
        se = drop.std(ddof=1) / np.sqrt(drop.size) if drop.size > 1 else 0.0
        # no interior maximum: the end of the path is within two standard errors of the mean curve's best point
        assert drop.mean() <= 2 * se + 1e-9, (
            f"{method}: oracle return falls by {drop.mean():.3f} +/- {se:.3f} after its peak at step {k}: "
            "regressional noise alone should not cause a peak"
        )
