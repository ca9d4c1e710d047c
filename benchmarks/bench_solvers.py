"""``backward_induction``: the optimal values on S*A ≈ 1.2e7 vs one ``Q.max(axis=1)`` of the same size.

Both are timed in turn, best of :data:`benchmarks.common.REPEATS` (see :mod:`benchmarks.common`).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import REPEATS, best_of, best_ratio, record
from sim.worlds import EnumeratedWorld, Table


def bench_backward_induction(repeats: int = REPEATS) -> dict:
    t0 = time.perf_counter()
    world = EnumeratedWorld(10, 11, 6)  # S = 1,111,110, S*A = 12,222,210
    build = time.perf_counter() - t0
    r = np.random.default_rng(0).normal(size=(world.n_states, world.n_actions))
    Q = r.copy()
    reward = Table(world, r)
    times = best_of({"baseline": lambda: Q.max(axis=1), "ours": lambda: world.optimal_values(reward)}, repeats)
    ratio, per_round = best_ratio(times["ours"], times["baseline"])
    return record(
        "backward_induction",
        ratio,
        1.4,
        "<=",
        ours_s=min(times["ours"]),
        baseline_s=min(times["baseline"]),
        repeats=repeats,
        repeat_ratios=per_round,
        world_build_s=build,
        state_action_entries=world.n_states * world.n_actions,
    )


BENCHMARKS = {"backward_induction": bench_backward_induction}
