"""Shared timing helpers and the results file.

Every ratio of ``make bench`` is measured as the *best of* :data:`REPEATS` repeats inside one run: both sides of a
ratio are timed in turn, repeat after repeat (so a burst of load from other processes hits both), and the ratio is
formed from each side's best time (its fastest repeat, or highest throughput). The best time is the least disturbed
by other processes, so a noisy machine slows a ratio's inputs but rarely flips its verdict; the per-repeat ratios
are kept beside it (``repeat_ratios``) to show the spread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BENCH_FILE = Path("results/bench.json")
#: Repeats of each side of a ratio inside one ``make bench`` run.
REPEATS = 5


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def best_of(fns: dict[str, Callable[[], object]], repeats: int = REPEATS, inner: int = 1) -> dict[str, list[float]]:
    """Wall times in seconds of each of ``fns``, called in turn ``repeats`` times (after one warm-up call each).

    Args:
        fns: name -> a callable to time.
        repeats: rounds; in each round every callable is timed once, in the order given.
        inner: calls per timing; a timing is the median of their times (for calls of a few milliseconds).

    Returns:
        name -> the ``repeats`` timings in round order (``min`` of them is the best).
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            calls = []
            for _ in range(inner):
                t0 = time.perf_counter()
                fn()
                calls.append(time.perf_counter() - t0)
            times[name].append(float(np.median(calls)))
    return times


def best_ratio(ours: list[float], baseline: list[float]) -> tuple[float, list[float]]:
    """``min(ours) / min(baseline)`` and the per-round ratios ``ours[i] / baseline[i]`` (rounded), for times or
    inverse throughputs."""
    return min(ours) / min(baseline), [round(o / b, 4) for o, b in zip(ours, baseline, strict=True)]


def record(name: str, ratio: float, target: float, goal: str, **timings: object) -> dict:
    """A bench.json entry; ``goal`` is ``"<="`` or ``">="`` (how ratio must compare with target)."""
    met = ratio <= target if goal == "<=" else ratio >= target
    return {"ratio": round(ratio, 4), "target": target, "goal": goal, "met": bool(met), **timings}


def save(results: dict[str, dict], path: Path = BENCH_FILE) -> dict[str, dict]:
    """Merge ``results`` into ``path`` (other benchmarks' entries are kept) and return the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing.update(results)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return existing
