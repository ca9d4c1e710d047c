"""``backward_induction``: the optimal values on S*A ≈ 1.2e7 vs one ``Q.max(axis=1)`` of the same size."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import median_time, record
from sim.worlds import EnumeratedWorld, Table


def bench_backward_induction(repeats: int = 7) -> dict:
    t0 = time.perf_counter()
    world = EnumeratedWorld(10, 11, 6)  # S = 1,111,110, S*A = 12,222,210
    build = time.perf_counter() - t0
    r = np.random.default_rng(0).normal(size=(world.n_states, world.n_actions))
    Q = r.copy()
    reward = Table(world, r)
    baseline = median_time(lambda: Q.max(axis=1), repeats)
    ours = median_time(lambda: world.optimal_values(reward), repeats)
    return record(
        "backward_induction",
        ours / baseline,
        1.5,
        "<=",
        ours_s=ours,
        baseline_s=baseline,
        world_build_s=build,
        state_action_entries=world.n_states * world.n_actions,
    )


BENCHMARKS = {"backward_induction": bench_backward_induction}
