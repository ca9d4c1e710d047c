"""How cost grows with the world: wall time and peak memory of every stage along ladders of world sizes.

``make bench-scaling`` (``python -m benchmarks.scaling``) measures, for each world of a ladder and each stage, the
wall time and the peak memory, fits the exponent of each curve, merges everything under the ``scaling`` key of
``results/bench.json`` (the other entries are kept) and draws ``results/figures/scaling.png``.

**Ladders.**

* ``enumerated``: S·A from about 1e4 to the enumeration cap (V = 11; P = 2..8, H = 3..7, half a decade apart, up
  to P = 4, H = 7: 48.9M entries). Stages: ``world_build`` (:func:`sim.build.build_setup`: the world, pi_ref, the
  oracle and the channel), ``optimal_values`` (backward induction), ``soft_optimum`` (the KL-regularised optimum's
  values, beta = 0.1), ``evaluation`` (exact oracle and proxy returns and the KL of the soft optimum, whose rows are
  formed on the way, as a run does), ``q_learning_epoch`` (``q_learning`` with ``agent.batch=1024`` as in
  ``make bench``, for about S·A updates; its two curve checkpoints, exact evaluations, are included) and
  ``planner_run`` (a whole :func:`sim.run.run` of the default ``soft_planner``: build, solve, exact metrics, Monte
  Carlo check). The planner's memory per entry is judged at the largest world: the whole process's peak resident
  set (interpreter and imports included) over S·A must stay at or below :data:`PLANNER_BYTES_PER_ENTRY`
  (``planner_memory`` in the results).
* compressed Markov worlds (``env.compressed=true``, one prompt), stages ``world_build``, ``optimal_values`` (the
  screened max-plus DP), ``soft_optimum`` and ``evaluation``: ``markov_vocab_bigram`` (a bigram oracle and a bigram
  reference, H = 8, V = 100..10,000; larger V is refused by the library, a (V + 1) x V table per bigram term, and
  is recorded as refused), ``markov_vocab_plain`` (no bigram term: a uniform reference and a unigram, position and
  length oracle, H = 32, V = 100..50,000), ``markov_horizon_bigram`` (V = 1000) and ``markov_horizon_plain``
  (V = 50,000), both H = 8..128.

Every world is checked first by :func:`sim.run.check` against ``--max-memory-gb`` (default: the library's limit,
or 80% of the memory available when the ladder starts if that is less); a refused world is recorded with the
library's reason and skipped.

**Measurement.** Each (world, stage) runs in a fresh process, forked from a parent that has imported everything
and run every stage once on a tiny world (so neither imports nor first-use costs are charged to a stage). Peak
memory is the child's *resident set* high-water mark (``VmHWM``), reset through ``/proc/self/clear_refs`` right
before the stage, minus the resident set just before it (after garbage collection and glibc's ``malloc_trim``, so
that it holds only live memory): the increment the stage adds at its peak over what the process already holds
(imports, the world, the stage's inputs). Resident memory is what the kernel's OOM killer and
a cluster's memory limit count, with the allocator's and numpy's real behaviour (an array that is allocated but
never touched costs nothing); a fresh process keeps memory freed by earlier stages from hiding a peak. tracemalloc
(which numpy reports to) was the alternative; it counts allocated rather than resident bytes and slows the
Python-heavy Q-learning loop, so time and memory could not come from the same call. Where ``clear_refs`` cannot be
written, the peak falls back to ``ru_maxrss`` (not resettable: a stage's peak then shows only above the build's);
``memory_method`` says which was used. Time is wall (``perf_counter``) and CPU (``process_time``) time; a stage is
called up to 9 times while the calls take under 2 s in total, and the best call is reported. Caches a first call
fills (the world's ``log pi_ref`` rows) are cleared before every call, so every call does the same work; the first
call's times are kept too (``first_wall_s``, ``first_cpu_s``, and ``first_call_cpu_time_exponent``), so a cache
that the library keeps on a reward (and a first call builds) shows: the compressed argmax DP keeps its max-plus
screen on the reward (:meth:`sim.worlds.markov.FactoredReward.max_plus`), so its best call is a solve with the screen
built and its first call includes the build (one read of the (V + 1) x V bigram table).

**Exponents.** Each curve's exponent is the least-squares slope of log(time) (or log(memory)) on log(size) over
the upper half of its ladder (sizes at or above the geometric middle; at least three points), where fixed costs no
longer flatten it; ``*_all`` is the slope over the whole ladder. Memory slopes use only increments of at least
:data:`MEMORY_FLOOR` bytes. Targets (recorded as ``met``, never failing the run): the enumerated stages' time
exponent <= 1.15 in S·A, the compressed argmax DP with bigram terms <= 1.5 in V, its soft optimum <= 2.1 in V;
``met`` judges the wall-time exponent, ``met_cpu`` the CPU-time one. On a loaded machine (load average above the
number of cores) trust the CPU-time exponents: a short call can escape the other processes (the best of several
calls), a long one cannot, so wall time inflates the large worlds more than the small ones and tilts the slopes up.
The stages are single-threaded (BLAS is pinned to one thread), so on an idle machine wall and CPU time agree.
A world that is c times larger then costs about c^exponent times as much: that is how to size a sweep.

**Part of the ladders.** ``python -m benchmarks.scaling <ladder> ... [--stages <stage> ...]`` measures only those
ladders (and stages) and merges them into the recorded ``scaling`` entry: the other ladders and stages are kept, the
``targets`` are recomputed from the merged ladders, ``partial_runs`` lists what was measured again, when and under
what load, and the figure is redrawn. For instance ``python -m benchmarks.scaling markov_vocab_bigram --stages
optimal_values`` re-measures the compressed argmax DP with bigram terms alone (about 3 minutes).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import multiprocessing as mp
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from benchmarks.common import BENCH_FILE, save

FIGURE = Path("results/figures/scaling.png")
#: Memory increments below this are page-level noise: left out of the memory exponent's fit.
MEMORY_FLOOR = 4 * 2**20
#: A stage is called again while its calls took less than this in total (at most MAX_CALLS calls).
REPEAT_BUDGET_S = 2.0
MAX_CALLS = 9
BETA = 0.1

ENUMERATED_STAGES = ("world_build", "optimal_values", "soft_optimum", "evaluation", "q_learning_epoch", "planner_run")
MARKOV_STAGES = ("world_build", "optimal_values", "soft_optimum", "evaluation")
#: (P, V, H) of the enumerated ladder: S·A = 9.8e3, 3.7e4, 9.8e4, 3.7e5, 9.8e5, 3.7e6, 9.8e6, 2.4e7, 4.9e7.
ENUMERATED = (
    (8, 11, 3), (3, 11, 4), (8, 11, 4), (3, 11, 5), (8, 11, 5), (3, 11, 6), (8, 11, 6), (2, 11, 7), (4, 11, 7),
)  # fmt: skip
VOCAB_BIGRAM = (100, 300, 1000, 3000, 10_000, 30_000)  # 30,000 is above the library's bigram limit: recorded refused
VOCAB_PLAIN = (100, 300, 1000, 3000, 10_000, 30_000, 50_000)
HORIZONS = (8, 16, 32, 64, 128)

#: The planner's peak resident memory per state-action entry (the whole process, interpreter included) at the
#: largest world of the enumerated ladder must stay at or below this.
PLANNER_BYTES_PER_ENTRY = 48.0
#: (curve, stage) -> the largest allowed time exponent.
TARGETS = {
    **{("enumerated", stage): 1.15 for stage in ENUMERATED_STAGES if stage != "planner_run"},
    ("markov_vocab_bigram", "optimal_values"): 1.5,
    ("markov_vocab_bigram", "soft_optimum"): 2.1,
}


@dataclass(frozen=True)
class World:
    """One world of a ladder: its config and its size along the ladder's axis."""

    kind: str  # "enumerated" or "markov"
    n_prompts: int
    vocab_size: int
    horizon: int
    bigram: bool = True
    size: float = 0.0


@dataclass
class Curve:
    """A ladder: worlds of one kind growing along one axis, and the stages measured on each."""

    name: str
    axis: str  # what ``World.size`` counts
    worlds: list[World]
    stages: tuple[str, ...]
    refused: list[dict] = field(default_factory=list)


def enumerated_entries(n_prompts: int, vocab_size: int, horizon: int) -> int:
    """S·A of an enumerated world with EOS (closed form)."""
    b = vocab_size - 1
    return n_prompts * (b**horizon - 1) // (b - 1) * vocab_size


def ladders(quick: bool = False) -> list[Curve]:
    """The ladders; ``quick`` keeps only their small worlds (a minute's check of the machinery)."""
    enum = [World("enumerated", p, v, h, size=float(enumerated_entries(p, v, h))) for p, v, h in ENUMERATED]
    vocab_b, vocab_p, horizons = VOCAB_BIGRAM, VOCAB_PLAIN, HORIZONS
    if quick:
        enum, vocab_b, vocab_p, horizons = enum[:4], (100, 300, 1000, 30_000), (100, 1000, 10_000), (8, 16, 32)
    return [
        Curve("enumerated", "state-action entries S*A", enum, ENUMERATED_STAGES),
        Curve("markov_vocab_bigram", "vocabulary V (H = 8, bigram terms)",
              [World("markov", 1, v, 8, True, float(v)) for v in vocab_b], MARKOV_STAGES),
        Curve("markov_vocab_plain", "vocabulary V (H = 32, no bigram term)",
              [World("markov", 1, v, 32, False, float(v)) for v in vocab_p], MARKOV_STAGES),
        Curve("markov_horizon_bigram", "horizon H (V = 1000, bigram terms)",
              [World("markov", 1, 1000, h, True, float(h)) for h in horizons], MARKOV_STAGES),
        Curve("markov_horizon_plain", "horizon H (V = 50,000, no bigram term)",
              [World("markov", 1, 50_000, h, False, float(h)) for h in horizons], MARKOV_STAGES),
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------- configs and setups
def configs(world: World, stage: str):
    """The run config of ``world`` (its env and oracle; the agent the stage stands for)."""
    from sim.config import AgentConfig, Config, EnvConfig, OracleConfig

    compressed = world.kind == "markov"
    reference = "bigram" if (compressed and world.bigram) else "uniform"
    env = EnvConfig(
        n_prompts=world.n_prompts,
        vocab_size=world.vocab_size,
        horizon=world.horizon,
        reference=reference,
        compressed=compressed,
    )
    oracle = OracleConfig() if world.bigram else OracleConfig(templates=["unigram", "position", "length"])
    agent = AgentConfig(name="q_learning", batch=1024) if stage == "q_learning_epoch" else AgentConfig()
    return Config(env=env, oracle=oracle, agent=agent)


def refusal(world: World, stage: str, max_memory_gb: float) -> str | None:
    """The library's reason to refuse this world and stage (its config checks and memory estimate), else None."""
    from sim.errors import ConfigError
    from sim.run import check

    try:
        check(configs(world, stage), max_memory_gb=max_memory_gb)
    except ConfigError as e:
        return str(e)
    return None


def q_learning_episodes(world: World) -> int:
    """Episodes for about S·A updates: S·A over the expected length of a uniformly random episode."""
    length = sum((1 - 1 / world.vocab_size) ** t for t in range(world.horizon))
    return max(1, math.ceil(world.size / length))


# ------------------------------------------------------------------------------------------- memory of a process
def release_free_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the kernel (glibc's ``malloc_trim``), so that the
    resident set counts only live memory: otherwise a stage could reuse pages freed earlier and hide its peak."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class PeakMemory:
    """The resident-set peak of this process since :meth:`reset` (``VmHWM``, reset via ``/proc/self/clear_refs``),
    or ``ru_maxrss`` where that is not possible (see the module docstring)."""

    def __init__(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            _status_bytes("VmHWM")
            self.method = "VmHWM reset via /proc/self/clear_refs"
        except OSError:
            self.method = "ru_maxrss (not resettable)"

    def current(self) -> int:
        """Resident bytes now."""
        if self.method.startswith("VmHWM"):
            return _status_bytes("VmRSS")
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def reset(self) -> None:
        if self.method.startswith("VmHWM"):
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")

    def peak(self) -> int:
        """Peak resident bytes since the last :meth:`reset`."""
        if self.method.startswith("VmHWM"):
            return _status_bytes("VmHWM")
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------------------------------------ one measurement
def stage_call(stage: str, setup, cfg) -> Callable[[], object]:
    """The call that one stage times, with its inputs prepared (they are not part of the measurement)."""
    if stage == "planner_run":
        from sim.run import run

        return lambda: run(cfg, max_memory_gb=1e6)  # measure() checked the world against the real limit
    world, reward = setup.world, setup.oracle.reward
    if stage == "optimal_values":
        return lambda: world.optimal_values(reward)
    if stage == "soft_optimum":
        return lambda: world.soft_policy(reward, BETA)
    if stage == "evaluation":
        policy = world.soft_policy(reward, BETA)
        rewards = {"oracle": reward, "proxy": setup.channel.expected()}
        return lambda: world.evaluate(policy, rewards)
    if stage == "q_learning_epoch":
        from sim.agents import AgentContext, run_agent

        def epoch() -> float:
            ctx = AgentContext(world, setup.channel.expected(), setup.channel, setup.oracle, np.random.default_rng(0))
            return float(run_agent(ctx, cfg.agent).extra["updates"])

        return epoch
    raise ValueError(f"unknown stage {stage}")


def measure(world: World, stage: str) -> dict:
    """Build ``world`` and measure ``stage`` on it in this process (a fresh child; see the module docstring)."""
    from dataclasses import replace

    from sim.build import build_setup, check_setup

    cfg = configs(world, stage)
    if stage == "q_learning_epoch":
        cfg = replace(cfg, agent=replace(cfg.agent, steps=q_learning_episodes(world), checkpoints=2))
    mem = PeakMemory()
    load = os.getloadavg()[0]
    if stage == "planner_run":  # a whole run builds its own world
        return {"load_average": load, "memory_method": mem.method, stage: timed(stage_call(stage, None, cfg), mem)}
    release_free_memory()
    before = mem.current()
    mem.reset()
    track = check_setup(cfg.env, cfg.oracle, cfg.corruption, cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    setup = build_setup(cfg.env, cfg.oracle, cfg.corruption, 0, track)
    build = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "peak_bytes": mem.peak() - before}
    build["retained_bytes"] = mem.current() - before
    out = {"load_average": load, "memory_method": mem.method, "world_build": build}
    if stage == "world_build":
        return out
    call = stage_call(stage, setup, cfg)

    def empty_caches() -> None:  # the world's log pi_ref cache: every call does the same work
        setup.world.ref = setup.world.ref

    out[stage] = timed(call, mem, empty_caches)
    return out


def timed(call: Callable[[], object], mem: PeakMemory, before_call: Callable[[], None] | None = None) -> dict:
    """Wall and CPU time of ``call`` (the best of up to :data:`MAX_CALLS` calls within :data:`REPEAT_BUDGET_S`) and
    the peak memory of its first call: ``peak_bytes`` over the resident set just before it, ``peak_rss_bytes`` the
    whole process's."""
    if before_call is not None:
        before_call()
    release_free_memory()
    before = mem.current()
    mem.reset()
    walls, cpus, result = [], [], None
    while len(walls) < MAX_CALLS and (not walls or sum(walls) < REPEAT_BUDGET_S):
        if walls:
            del result
            if before_call is not None:
                before_call()
            release_free_memory()
        t0, c0 = time.perf_counter(), time.process_time()
        result = call()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if len(walls) == 1:
            peak_rss = mem.peak()
    out = {"wall_s": min(walls), "cpu_s": min(cpus), "calls": len(walls), "peak_bytes": peak_rss - before}
    out.update(first_wall_s=walls[0], first_cpu_s=cpus[0])  # with what the first call builds and caches, if any
    out["peak_rss_bytes"] = peak_rss
    if isinstance(result, float):  # q_learning_epoch: the updates made
        out["updates"] = result
    return out


def _child(conn, world: World, stage: str) -> None:
    try:
        conn.send(measure(world, stage))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which records it
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def run_forked(world: World, stage: str, timeout: float) -> dict:
    """:func:`measure` in a fresh process forked from this one (which stays small), within ``timeout`` seconds."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, world, stage))
    proc.start()
    child.close()
    try:
        result = parent.recv() if parent.poll(timeout) else {"error": f"timed out after {timeout:.0f} s"}
    except EOFError:  # the child died without answering (e.g. killed for memory)
        result = None
    proc.join(5)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    return result if result is not None else {"error": f"the measuring process died (exit code {proc.exitcode})"}


def warm_up() -> None:
    """Every stage once on tiny worlds, in this (parent) process: later children inherit the imports."""
    for world in (World("enumerated", 2, 4, 3, size=float(enumerated_entries(2, 4, 3))), World("markov", 1, 8, 3),
                  World("markov", 1, 8, 3, bigram=False)):  # fmt: skip
        for stage in ENUMERATED_STAGES if world.kind == "enumerated" else MARKOV_STAGES:
            measure(world, stage)


# ---------------------------------------------------------------------------------------------------- the fits
def fit_slope(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> float | None:
    """The least-squares slope of ``log y`` on ``log x`` (None with fewer than two positive points)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(np.log(x[ok])) == 0:
        return None
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def upper_half(x: list[float] | np.ndarray, minimum: int = 3) -> np.ndarray:
    """Bool mask of the sizes at or above the geometric middle of their range (at least ``minimum`` largest)."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return np.zeros(0, dtype=bool)
    mid = np.exp((np.log(x.min()) + np.log(x.max())) / 2)
    mask = x >= mid * (1 - 1e-9)
    if mask.sum() < min(minimum, x.size):
        mask = np.zeros(x.size, dtype=bool)
        mask[np.argsort(x)[-min(minimum, x.size) :]] = True
    return mask


def exponents(points: list[dict]) -> dict:
    """The time and memory exponents of one stage's points (``size``, ``wall_s``, ``cpu_s``, ``peak_bytes``)."""
    if not points:
        return {}
    size = np.array([p["size"] for p in points])
    upper = upper_half(size)
    out = {}
    keys = [("wall_s", "time_exponent"), ("cpu_s", "cpu_time_exponent"), ("peak_bytes", "memory_exponent")]
    if all("first_cpu_s" in p for p in points):
        keys.append(("first_cpu_s", "first_call_cpu_time_exponent"))
    for key, name in keys:
        y = np.array([p[key] for p in points], dtype=float)
        use = np.ones(size.size, dtype=bool) if key != "peak_bytes" else y >= MEMORY_FLOOR
        out[name] = _round(fit_slope(size[use & upper], y[use & upper]))
        out[name + "_all"] = _round(fit_slope(size[use], y[use]))
        if key == "peak_bytes":
            out["memory_points_fitted"] = int((use & upper).sum())
    return out


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


# ------------------------------------------------------------------------------------------------- the ladders
def memory_limit_gb(requested: float | None) -> float:
    """The memory limit worlds are checked against: ``requested``, else the smaller of the library's default and 80%
    of the memory available now (other processes share the machine)."""
    from sim.resources import default_limit_gb

    if requested is not None:
        return requested
    try:
        with open("/proc/meminfo") as fh:
            avail = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
        return min(default_limit_gb(), 0.8 * avail / 1e9)
    except (OSError, StopIteration):
        return default_limit_gb()


def run_curve(curve: Curve, timeout: float, max_memory_gb: float, log: Callable[[str], None]) -> dict:
    """Measure every (world, stage) of a ladder; returns its bench.json entry."""
    stages: dict[str, list[dict]] = {s: [] for s in curve.stages}
    errors = []
    for world in curve.worlds:
        desc = {"P": world.n_prompts, "V": world.vocab_size, "H": world.horizon, "size": world.size}
        builds = []
        for stage in curve.stages:
            if stage == "world_build":
                continue  # measured in every other stage's process (the best of them is kept)
            reason = refusal(world, stage, max_memory_gb)
            if reason is not None:
                curve.refused.append({**desc, "stage": stage, "reason": reason})
                log(f"  {curve.name} {desc} {stage}: refused ({reason})")
                continue
            res = run_forked(world, stage, timeout)
            if "error" in res:
                errors.append({**desc, "stage": stage, "error": res["error"]})
                log(f"  {curve.name} {desc} {stage}: {res['error']}")
                continue
            if "world_build" in res:
                builds.append(res["world_build"])
            point = {**desc, **res[stage], "load_average": round(res["load_average"], 2)}
            if world.kind == "enumerated":
                point["bytes_per_entry"] = round(point["peak_bytes"] / world.size, 2)
                point["rss_bytes_per_entry"] = round(point["peak_rss_bytes"] / world.size, 2)
            stages[stage].append(point)
            mb = point["peak_bytes"] / 1e6
            log(f"  {curve.name:22s} {_world_label(world):22s} {stage:17s} wall {point['wall_s']:9.4f} s  "
                f"cpu {point['cpu_s']:9.4f} s  peak +{mb:9.1f} MB  load {point['load_average']}")  # fmt: skip
        if builds and "world_build" in stages:
            best = min(builds, key=lambda b: b["wall_s"])
            point = {**desc, "wall_s": best["wall_s"], "cpu_s": min(b["cpu_s"] for b in builds),
                     "peak_bytes": max(b["peak_bytes"] for b in builds),
                     "retained_bytes": max(b["retained_bytes"] for b in builds), "calls": len(builds)}  # fmt: skip
            if world.kind == "enumerated":
                point["bytes_per_entry"] = round(point["peak_bytes"] / world.size, 2)
                point["retained_bytes_per_entry"] = round(point["retained_bytes"] / world.size, 2)
            stages["world_build"].append(point)
    entry = {"axis": curve.axis, "stages": {}, "refused": curve.refused, "errors": errors}
    for stage, points in stages.items():
        fit = exponents(points)
        target = TARGETS.get((curve.name, stage))
        if target is not None and fit.get("time_exponent") is not None:
            fit.update(target=target, goal="<=", met=bool(fit["time_exponent"] <= target))
            fit["met_cpu"] = fit["cpu_time_exponent"] is not None and bool(fit["cpu_time_exponent"] <= target)
        entry["stages"][stage] = {**fit, "points": points}
    return entry


def planner_memory(entry: dict | None) -> dict | None:
    """The planner's peak bytes per state-action entry at the largest world it ran on, judged against
    :data:`PLANNER_BYTES_PER_ENTRY`: the whole process's peak resident set (interpreter, imports and all) over S·A,
    and the run's own increment over what the process held before it."""
    points = (entry or {}).get("stages", {}).get("planner_run", {}).get("points", [])
    if not points:
        return None
    top = max(points, key=lambda p: p["size"])
    per_entry = top["peak_rss_bytes"] / top["size"]
    return {
        "P": top["P"], "V": top["V"], "H": top["H"], "size": top["size"],
        "peak_rss_bytes": top["peak_rss_bytes"], "peak_rss_bytes_per_entry": round(per_entry, 2),
        "run_increment_bytes_per_entry": round(top["peak_bytes"] / top["size"], 2),
        "target": PLANNER_BYTES_PER_ENTRY, "goal": "<=", "met": bool(per_entry <= PLANNER_BYTES_PER_ENTRY),
    }  # fmt: skip


def _world_label(world: World) -> str:
    if world.kind == "enumerated":
        return f"P={world.n_prompts} V={world.vocab_size} H={world.horizon}"
    return f"V={world.vocab_size} H={world.horizon}" + (" bigram" if world.bigram else "")


# ---------------------------------------------------------------------------------------------------- the figure
STAGE_COLORS = {
    "world_build": "tab:gray",
    "optimal_values": "tab:blue",
    "soft_optimum": "tab:orange",
    "evaluation": "tab:green",
    "q_learning_epoch": "tab:red",
    "planner_run": "tab:purple",
}


def draw(curves: dict[str, dict], path: Path, note: str = "") -> None:
    """Time and memory vs size, log-log, one line per stage, the fitted exponents in the legends (``note`` is added to
    the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.io import write_figure

    panels = [
        ("enumerated", [("enumerated", "-")], "S·A (state-action entries)"),
        ("compressed, vs V", [("markov_vocab_bigram", "-"), ("markov_vocab_plain", "--")], "vocabulary V"),
        ("compressed, vs H", [("markov_horizon_bigram", "-"), ("markov_horizon_plain", "--")], "horizon H"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), constrained_layout=True)
    for col, (title, members, xlabel) in enumerate(panels):
        for row, (key, exp_key, ylabel) in enumerate(
            (("wall_s", "time_exponent", "wall time (s)"), ("peak_bytes", "memory_exponent", "peak memory added (B)"))
        ):
            ax = axes[row, col]
            for name, style in members:
                measured = curves.get(name, {}).get("stages", {})
                for stage, data in sorted(measured.items(), key=lambda kv: ENUMERATED_STAGES.index(kv[0])):
                    pts = [p for p in data["points"] if p[key] > 0]
                    if not pts:
                        continue
                    slope = data.get(exp_key)
                    kind = "" if name == "enumerated" else (" (bigram)" if "bigram" in name else " (no bigram)")
                    label = f"{stage}{kind}: " + ("n/a" if slope is None else f"∝ n^{slope:.2f}")
                    if row == 0 and data.get("cpu_time_exponent") is not None:
                        label += f" (cpu {data['cpu_time_exponent']:.2f})"
                    if row == 0 and "target" in data:
                        label += f", target ≤ {data['target']}: " + ("met" if data["met"] else "MISSED")
                    ax.plot([p["size"] for p in pts], [p[key] for p in pts], style, marker="o", ms=3,
                            color=STAGE_COLORS[stage], label=label)  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(f"{title}: {'time' if row == 0 else 'memory'}")
            ax.grid(True, which="major", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=6.5, loc="best", framealpha=0.7)
    fig.suptitle(f"rmsim scaling: exponents are log-log slopes over the upper half of each ladder{note}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_figure(path, fig, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------ the CLI
def summary_rows(curves: dict[str, dict]) -> list[str]:
    rows = []
    for name, entry in curves.items():
        for stage, data in entry["stages"].items():
            if not data.get("points"):
                continue
            target = ""
            if "target" in data:
                verdict = {True: "ok", False: "MISSED"}
                target = f"(target <= {data['target']}: wall {verdict[data['met']]}, cpu {verdict[data['met_cpu']]})"
            rows.append(f"{name:22s} {stage:17s} time exponent {data.get('time_exponent')!s:>6} "
                        f"(all {data.get('time_exponent_all')!s:>6}, cpu {data.get('cpu_time_exponent')!s:>6})  "
                        f"memory exponent {data.get('memory_exponent')!s:>6}  {target}")  # fmt: skip
    return rows


def figure_note(entry: dict) -> str:
    """The run's conditions, for the figure's title."""
    start, end = entry["load_average_start"][0], entry["load_average_end"][0]
    return f"\n{entry['cpus']} cores, load average {start:.1f} to {end:.1f}, {entry['total_wall_s'] / 60:.0f} min"


def target_rows(curves: dict[str, dict]) -> list[dict]:
    """The ``targets`` list of the scaling entry: every (curve, stage) with a target, and its verdicts."""
    return [
        {
            "curve": name,
            "stage": stage,
            "time_exponent": d["time_exponent"],
            "target": d["target"],
            "met": d["met"],
            "cpu_time_exponent": d["cpu_time_exponent"],
            "met_cpu": d["met_cpu"],
        }
        for name, e in curves.items()
        for stage, d in e["stages"].items()
        if "target" in d
    ]


def merge_curves(recorded: dict[str, dict], results: dict[str, dict]) -> dict[str, dict]:
    """``recorded`` ladders with the stages of ``results`` replacing theirs (their refusals and errors too)."""
    merged = {name: dict(entry) for name, entry in recorded.items()}
    for name, new in results.items():
        old = merged.get(name, {"axis": new["axis"], "stages": {}, "refused": [], "errors": []})
        ran = set(new["stages"])
        merged[name] = {
            **old,
            "axis": new["axis"],
            "stages": {**old.get("stages", {}), **new["stages"]},
            "refused": [r for r in old.get("refused", []) if r.get("stage") not in ran] + new["refused"],
            "errors": [r for r in old.get("errors", []) if r.get("stage") not in ran] + new["errors"],
        }
    return merged


def save_partial(recorded, results, chosen, load_start, total, limit, out, figure, log) -> int:
    """Merge a run of some ladders or stages into the recorded ``scaling`` entry (listed under ``partial_runs``: which
    curves and stages were measured again, when, and under what load), then redraw the figure."""
    curves = merge_curves(recorded.get("curves", {}), results)
    runs = list(recorded.get("partial_runs", []))
    runs.append(
        {
            "curves": [c.name for c in chosen],
            "stages": sorted({s for c in chosen for s in c.stages}),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "total_wall_s": round(total, 1),
            "memory_limit_gb": round(limit, 2),
        }
    )
    entry = {**recorded, "curves": curves, "targets": target_rows(curves), "partial_runs": runs}
    for row in summary_rows(results):
        log(row)
    log(f"scaling: {total / 60:.1f} min; load average {runs[-1]['load_average_end'][0]:.2f} at the end")
    save({"scaling": entry}, out)
    log(f"merged into 'scaling' in {out} (other ladders and stages kept)")
    if figure is not None:
        draw(curves, figure, figure_note(entry))
        log(f"figure: {figure}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", nargs="*", help="ladders to run (default: all)")
    parser.add_argument(
        "--stages",
        nargs="+",
        default=None,
        help="only these stages of the chosen ladders (e.g. markov_vocab_bigram --stages optimal_values); the results "
        "are merged into the recorded ladders, whose other curves and stages are kept",
    )
    parser.add_argument("--quick", action="store_true", help="small worlds only; writes nothing unless --out")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed to one (world, stage)")
    parser.add_argument("--max-memory-gb", type=float, default=None, help="refuse worlds estimated above this")
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default {BENCH_FILE})")
    parser.add_argument("--figure", type=Path, default=None, help=f"figure (default {FIGURE})")
    parser.add_argument("--redraw", action="store_true", help="only draw the figure from the results file")
    args = parser.parse_args(argv)
    if args.redraw:
        import json

        entry = json.loads((args.out or BENCH_FILE).read_text())["scaling"]
        draw(entry["curves"], args.figure or FIGURE, figure_note(entry))
        return 0
    all_curves = ladders(args.quick)
    names = [c.name for c in all_curves]
    unknown = [n for n in args.curves if n not in names]
    if unknown:
        parser.error(f"unknown ladder(s) {unknown}; choose from {names}")
    chosen = [c for c in all_curves if not args.curves or c.name in args.curves]
    if args.stages is not None:
        known = set(ENUMERATED_STAGES)
        if set(args.stages) - known:
            parser.error(f"unknown stage(s) {sorted(set(args.stages) - known)}; choose from {sorted(known)}")
        chosen = [replace(c, stages=tuple(s for s in c.stages if s in args.stages)) for c in chosen]
        chosen = [c for c in chosen if c.stages]
        if not chosen:
            parser.error(f"none of the chosen ladders has the stages {args.stages}")
    partial = bool(args.curves) or args.stages is not None
    out = args.out if args.out is not None else (None if args.quick else BENCH_FILE)
    figure = args.figure if args.figure is not None else (None if args.quick else FIGURE)

    def log(msg: str) -> None:
        print(msg, flush=True)

    started, load_start = time.perf_counter(), os.getloadavg()
    limit = memory_limit_gb(args.max_memory_gb)
    log(f"scaling: warming up; load average {load_start[0]:.2f}; worlds checked against {limit:.1f} GB")
    warm_up()
    release_free_memory()
    results = {}
    for curve in chosen:
        log(f"{curve.name}: {len(curve.worlds)} worlds x {len(curve.stages)} stages")
        results[curve.name] = run_curve(curve, args.timeout, limit, log)
    total = time.perf_counter() - started
    if partial and out is not None and out.exists():  # a part of the ladders: merged into the recorded ones
        import json

        recorded = json.loads(out.read_text()).get("scaling")
        if recorded is not None:
            return save_partial(recorded, results, chosen, load_start, total, limit, out, figure, log)
    entry = {
        "curves": results,
        "targets": target_rows(results),
        "planner_memory": planner_memory(results.get("enumerated")),
        "memory_method": PeakMemory().method,
        "memory_limit_gb": round(limit, 2),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "total_wall_s": round(total, 1),
        "quick": args.quick,
    }
    for row in summary_rows(results):
        log(row)
    pm = entry["planner_memory"]
    if pm is not None:
        log(f"planner_run at S*A = {pm['size']:.3g}: peak {pm['peak_rss_bytes'] / 1e9:.2f} GB resident, "
            f"{pm['peak_rss_bytes_per_entry']} B/entry (target <= {pm['target']}: {'ok' if pm['met'] else 'MISSED'}; "
            f"the run's own increment {pm['run_increment_bytes_per_entry']} B/entry)")  # fmt: skip
    log(f"scaling: {total / 60:.1f} min; load average {entry['load_average_end'][0]:.2f} at the end")
    if out is not None:
        save({"scaling": entry}, out)
        log(f"merged under 'scaling' in {out}")
    if figure is not None:
        draw(results, figure, figure_note(entry))
        log(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
