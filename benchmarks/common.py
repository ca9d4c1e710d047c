"""Shared timing helpers and the results file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BENCH_FILE = Path("results/bench.json")


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


def record(name: str, ratio: float, target: float, goal: str, **timings: float) -> dict:
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
