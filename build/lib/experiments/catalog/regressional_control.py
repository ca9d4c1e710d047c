"""Regressional Goodhart, the negative control: proxy = oracle + independent noise, no misspecification.

Gao et al. (2022): with X_hat = X + Z and independent Gaussian Z, E[X | X_hat] rises monotonically with X_hat,
so optimising harder never hurts on average. If this experiment showed a peak, the overoptimisation figure's
peak could be an artefact of the simulator; it must not.
"""

from __future__ import annotations

import numpy as np

from experiments.catalog.overoptimization import path_means, plot_paths

TABLE = "curves"
CLAIM = "with independent noise and no misspecification, oracle return never falls as pressure grows"


def plot(table, ax=None):
    return plot_paths(table, ax, proxy_label="proxy = oracle + noise", fits=False)


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
