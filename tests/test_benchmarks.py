"""The benchmarks' own arithmetic: exponent fits, best-of ratios, the ladders and the merge into bench.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.common import best_of, best_ratio, record, save
from benchmarks.scaling import (
    ENUMERATED,
    MEMORY_FLOOR,
    PLANNER_BYTES_PER_ENTRY,
    PeakMemory,
    World,
    enumerated_entries,
    exponents,
    fit_slope,
    ladders,
    planner_memory,
    q_learning_episodes,
    refusal,
    timed,
    upper_half,
)
from sim.worlds import enumerated_size
from sim.worlds.enumerated import MAX_ENUMERATED_ENTRIES


@pytest.mark.parametrize("slope", [0.5, 1.0, 1.15, 2.0])
def test_fit_slope_recovers_a_power_law(slope):
    x = np.geomspace(1e4, 5e7, 9)
    assert fit_slope(x, 3e-7 * x**slope) == pytest.approx(slope, abs=1e-9)


def test_fit_slope_ignores_nonpositive_points_and_needs_two():
    x = np.array([1.0, 10.0, 100.0, 1000.0])
    assert fit_slope(x, [0.0, -1.0, 5.0, 50.0]) == pytest.approx(1.0)
    assert fit_slope([10.0], [1.0]) is None
    assert fit_slope([10.0, 10.0], [1.0, 2.0]) is None  # no spread in x


def test_upper_half_keeps_the_large_sizes_and_at_least_three():
    x = np.geomspace(1e4, 1e8, 9)
    assert upper_half(x).tolist() == [False] * 4 + [True] * 5
    assert upper_half(np.array([1.0, 2.0, 1000.0])).tolist() == [True, True, True]
    assert upper_half(np.array([1.0, 1000.0, 1001.0, 1002.0])).tolist() == [False, True, True, True]


def test_exponents_fit_the_upper_half_and_skip_memory_noise():
    size = np.geomspace(1e4, 1e8, 9)
    # fixed costs flatten the small end; the large end grows linearly; memory below the floor is noise
    wall = 1e-3 + 1e-8 * size
    mem = np.where(size < 1e5, 1000.0, 16.0 * size)
    points = [{"size": s, "wall_s": w, "cpu_s": w, "peak_bytes": m} for s, w, m in zip(size, wall, mem, strict=True)]
    fit = exponents(points)
    assert fit["time_exponent"] == pytest.approx(1.0, abs=0.1)
    assert fit["time_exponent_all"] < fit["time_exponent"]  # the overhead tilts the whole-range fit down
    assert fit["memory_exponent"] == pytest.approx(1.0, abs=1e-6)
    assert all(m >= MEMORY_FLOOR for m in mem[upper_half(size)])


def test_best_ratio_is_the_ratio_of_best_times():
    ratio, per_round = best_ratio([3.0, 2.0, 4.0], [1.0, 2.0, 1.0])
    assert ratio == 2.0
    assert per_round == [3.0, 1.0, 4.0]


def test_best_of_times_every_callable_in_turn():
    calls = []
    times = best_of({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # a warm-up each, then in turn
    assert set(times) == {"a", "b"} and all(len(t) == 3 for t in times.values())


def test_record_judges_the_goal():
    assert record("x", 1.2, 1.4, "<=")["met"] and not record("x", 1.5, 1.4, "<=")["met"]
    assert record("x", 40.0, 35.0, ">=")["met"] and not record("x", 30.0, 35.0, ">=")["met"]


def test_save_merges_without_clobbering(tmp_path):
    path = tmp_path / "bench.json"
    save({"q_learning": {"ratio": 50.0}}, path)
    save({"scaling": {"curves": {}}}, path)
    save({"q_learning": {"ratio": 60.0}}, path)
    data = json.loads(path.read_text())
    assert data == {"q_learning": {"ratio": 60.0}, "scaling": {"curves": {}}}


def test_the_enumerated_ladder_is_geometric_and_reaches_the_cap():
    sizes = np.array([enumerated_entries(p, v, h) for p, v, h in ENUMERATED], dtype=float)
    assert sizes.tolist() == [enumerated_size(p, v, h) * v for p, v, h in ENUMERATED]
    assert 0.9e4 <= sizes[0] <= 1.1e4 and 0.9 * MAX_ENUMERATED_ENTRIES <= sizes[-1] <= MAX_ENUMERATED_ENTRIES
    steps = np.diff(np.log10(sizes))
    assert (steps > 0.2).all() and (steps < 0.7).all()  # about half a decade apart


def test_every_ladder_grows_and_quick_ladders_are_smaller():
    full, quick = ladders(), ladders(quick=True)
    assert [c.name for c in full] == [c.name for c in quick]
    for c, q in zip(full, quick, strict=True):
        sizes = [w.size for w in c.worlds]
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
        assert max(w.size for w in q.worlds) <= max(sizes)


def test_q_learning_epoch_is_about_one_update_per_entry():
    w = World("enumerated", 4, 11, 7, size=float(enumerated_entries(4, 11, 7)))
    mean_length = sum((1 - 1 / 11) ** t for t in range(7))
    assert q_learning_episodes(w) * mean_length == pytest.approx(w.size, rel=1e-6)


def test_the_library_refuses_bigram_tables_beyond_its_limit():
    assert refusal(World("markov", 1, 30_000, 8, bigram=True), "soft_optimum", 100.0) is not None
    assert refusal(World("markov", 1, 50_000, 8, bigram=False), "soft_optimum", 100.0) is None


def test_peak_memory_sees_a_new_allocation():
    """A fresh anonymous mapping of 8 MiB, every page written, raises the peak by about 8 MiB. (Not ``np.ones``: after
    a long test session malloc may serve it from pages the process already holds, which does not raise the RSS.)"""
    import mmap

    mem = PeakMemory()
    mem.reset()
    before = mem.current()
    block = mmap.mmap(-1, 8 * 2**20)
    block.write(b"x" * (8 * 2**20))
    assert mem.peak() - before >= 7 * 2**20 or mem.method.startswith("ru_maxrss")
    block.close()


def test_the_first_call_exponent_shows_a_cache_the_best_call_hides():
    size = np.geomspace(1e2, 1e4, 5)
    # a first call that builds a quadratic index, later calls linear: the best call's slope is 1, the first's near 2
    points = [{"size": n, "wall_s": 1e-6 * n, "cpu_s": 1e-6 * n, "first_cpu_s": 1e-6 * n + 1e-7 * n**2,
               "peak_bytes": 0.0} for n in size]  # fmt: skip
    fit = exponents(points)
    assert fit["cpu_time_exponent"] == pytest.approx(1.0, abs=1e-9)
    assert 1.8 < fit["first_call_cpu_time_exponent"] <= 2.0


def test_planner_memory_judges_the_largest_world_on_the_whole_process():
    points = [
        {"P": 2, "V": 11, "H": 3, "size": 1e4, "peak_rss_bytes": 3e8, "peak_bytes": 1e6},  # the interpreter dominates
        {"P": 4, "V": 11, "H": 7, "size": 4.9e7, "peak_rss_bytes": 34.0 * 4.9e7, "peak_bytes": 30.0 * 4.9e7},
    ]
    entry = {"stages": {"planner_run": {"points": points}}}
    pm = planner_memory(entry)
    assert (pm["P"], pm["H"]) == (4, 7) and pm["peak_rss_bytes_per_entry"] == pytest.approx(34.0)
    assert pm["run_increment_bytes_per_entry"] == pytest.approx(30.0) and pm["met"]
    points[1]["peak_rss_bytes"] = (PLANNER_BYTES_PER_ENTRY + 1) * 4.9e7
    assert not planner_memory(entry)["met"]
    assert planner_memory(None) is None and planner_memory({"stages": {}}) is None


def test_timed_keeps_the_best_and_the_first_call(monkeypatch):
    import benchmarks.scaling

    monkeypatch.setattr(benchmarks.scaling, "MAX_CALLS", 3)
    calls = []

    def call():
        calls.append(np.ones(2**20))  # 8 MiB held: the first call's peak
        return float(len(calls))

    out = timed(call, PeakMemory())
    assert out["calls"] == len(calls) >= 2  # cheap calls are repeated within the budget
    assert out["wall_s"] <= out["first_wall_s"] and out["cpu_s"] <= out["first_cpu_s"]
    assert out["updates"] == float(len(calls)) and out["peak_rss_bytes"] >= out["peak_bytes"]
