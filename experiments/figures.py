"""Reproduce the named experiments: ``python -m experiments.figures <name|all> [--scale paper|sanity] [--check]``.

For each experiment: run its sweep (``+experiment=<name> scale=<scale>``) into
``results/sweeps/<name>/<scale>/`` (re-running skips finished jobs), collect the table, draw the figure into
``results/figures/<name>.png`` and ``.pdf`` (``results/figures/sanity/`` at sanity scale) and, with ``--check``,
assert the experiment's claim. ``make figures`` = all at paper scale; ``make sanity`` = all at sanity scale
with checks (what CI runs). By default a sweep runs here (``--runner here``: the same jobs, run directories and files
as the contract command line, composed once per distinct choice of config groups, without hydra's per-job set-up,
which is most of a small sweep's time), its jobs in ``--jobs`` forked workers at paper scale; at sanity scale several
experiments run side by side instead. ``--runner cli`` sends each sweep through ``python -m experiments.run -m``.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

import experiments  # noqa: F401  (single-threaded BLAS)
from experiments import catalog
from experiments.catalog.common import plt
from experiments.collect import (
    curves_table,
    finished_runs,
    runs_table,
    sweep_roots,
    write_table,
)
from experiments.io import write_figure

RESULTS = Path("results")


def sweep_dir(name: str, scale: str, results: Path = RESULTS) -> Path:
    return Path(results) / "sweeps" / name / scale


def figure_path(name: str, scale: str, results: Path = RESULTS) -> Path:
    return Path(results) / "figures" / (f"{name}.png" if scale == "paper" else f"sanity/{name}.png")


def run_sweep(name: str, scale: str, jobs: int, results: Path = RESULTS) -> None:
    """Run (or resume) the experiment's sweep through the contract command line."""
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        "-m",
        f"+experiment={name}",
        f"scale={scale}",
        f"hydra.sweep.dir={sweep_dir(name, scale, results).resolve()}",
    ]
    if jobs > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep of {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    last = [line for line in proc.stdout.splitlines() if "sweep finished" in line]
    print(f"  {last[-1] if last else 'sweep done'}", flush=True)


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_yaml(cfg) -> str:
    """``OmegaConf.to_yaml(cfg)`` (what hydra writes as ``.hydra/config.yaml``), emitted by libyaml: the same text
    (tested) at 40% of the time, which is a third of a small job's set-up. OmegaConf's own when libyaml is missing or
    a string is not ASCII or holds a carriage return: the two emitters escape some non-ASCII characters differently
    (U+0085, some beyond the Basic Multilingual Plane) and a key with ``\r``; on the rest of ASCII they agree,
    character for character (tested)."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    dumper = _c_dumper()
    if dumper is None or not _ascii(container):
        return OmegaConf.to_yaml(cfg)
    return yaml.dump(container, Dumper=dumper, default_flow_style=False, allow_unicode=True, sort_keys=False)


def _ascii(x) -> bool:
    """Whether every string in a config container (keys and values) is ASCII without a carriage return."""
    if isinstance(x, str):
        return x.isascii() and "\r" not in x
    if isinstance(x, dict):
        return all(_ascii(k) and _ascii(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_ascii(v) for v in x)
    return True


@functools.cache
def _c_dumper():
    """OmegaConf's yaml dumper (its quoting of strings that read as booleans or numbers) on libyaml's emitter."""
    if not hasattr(yaml, "CDumper"):
        return None
    from omegaconf._utils import OmegaConfDumper

    dumper = type("OmegaConfCDumper", (yaml.CDumper,), {})
    dumper.add_representer(str, OmegaConfDumper.str_representer)
    return dumper


def _run_job(item) -> None:
    """One job of :func:`run_sweep_here`: its hydra files, then the run's outputs (``metrics.json`` last)."""
    from experiments.io import write_text
    from experiments.run import execute, write_outputs

    out, task, config_yaml, config = item
    write_text(out / ".hydra" / "overrides.yaml", "".join(f"- {o}\n" for o in task))
    write_text(out / ".hydra" / "config.yaml", config_yaml)  # the contract: as hydra writes it
    write_outputs(out, config, execute(config))


def run_sweep_here(name: str, scale: str, results: Path = RESULTS, jobs: int = 1, overrides: Sequence[str] = ()) -> int:
    """Run (or resume) the experiment's sweep without hydra's launcher: the same jobs, directories and files as
    :func:`run_sweep` (tested equal), each job's config composed once per distinct choice of config groups and
    validated before any job runs. Tests use it to run a sweep under a simulator fault injected with
    ``monkeypatch``.

    Args:
        jobs: jobs run side by side, in worker processes forked from this one (1: in this process). A job's results
            depend only on its config and seed, not on the worker.
        overrides: more command-line overrides (``seed=0`` replaces the sweep's seeds, as on the command line).

    Returns:
        The number of jobs run.

    Raises:
        RuntimeError: a job's config is invalid (nothing run). A job that fails stops the sweep with its error; the
            jobs finished before it keep their results, and re-running resumes.
    """
    from hydra import compose, initialize_config_dir

    from experiments.callbacks import config_groups, job_config, share_composition, sweep_jobs
    from experiments.config import is_stale, validate_object
    from experiments.io import read_metrics
    from experiments.run import set_aside
    from hydra_plugins.rmsim_sweeper.resuming_sweeper import job_subdir

    root = sweep_dir(name, scale, results)
    todo, stale = [], []
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        command = [f"+experiment={name}", f"scale={scale}", *overrides]
        cfg = compose(config_name="config", overrides=command, return_hydra_config=True)
        od = cfg.hydra.job.config.override_dirname
        cache, groups = {}, config_groups()  # one composition per distinct choice of config groups
        share_composition(cache, command, groups, cfg)  # the sweep's own serves the jobs that choose no other groups
        for job in sweep_jobs(cfg):
            task = [o for o in job if not o.lstrip("+~").startswith("hydra.")]
            out = root / job_subdir(job, list(od.exclude_keys), od.item_sep, od.kv_sep, cfg.seed)
            composed = job_config("config", task, cache, groups)
            config = validate_object(composed, task)
            if isinstance(config, str):
                raise RuntimeError(f"the sweep of {name} has an invalid job ({' '.join(task)}): {config}")
            record = read_metrics(out / "metrics.json")
            if isinstance(record, dict) and not is_stale(record, config):
                continue
            if isinstance(record, dict):
                stale.append(out)
            todo.append((out, task, config_yaml(composed), config))
    for out in stale:  # only once every job is valid: a refused sweep changes nothing
        print(f"  {out.name}: its config has changed since it ran: running it again (its old results are in "
              f"{set_aside(out)})", flush=True)  # fmt: skip
    if jobs <= 1 or len(todo) <= 1:
        for item in todo:
            _run_job(item)
        return len(todo)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        done = pool.map(_run_job, todo)
        for _ in tqdm(done, total=len(todo), desc=name, leave=False, disable=not sys.stderr.isatty()):
            pass
    return len(todo)


def draw(name: str, scale: str, table, results: Path = RESULTS, draft: bool = False) -> Path:
    """Draw and save the figure (png and pdf; with ``draft``, a low-resolution png without the layout pass: what
    tests draw, where the figure code must run but nobody looks at the picture; constrained layout is half of a
    draft's cost)."""
    module = catalog.get(name)
    axs = module.plot(table)
    fig = (axs.flat[0] if hasattr(axs, "flat") else axs).figure
    width_chars = int(fig.get_figwidth() * 15)
    fig.suptitle(textwrap.fill(f"{name}: {module.CLAIM}", width_chars), fontsize=9)
    path = figure_path(name, scale, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    if draft:
        fig.set_layout_engine("none")
    write_figure(path, fig, dpi=50 if draft else 130)
    if not draft:
        write_figure(path.with_suffix(".pdf"), fig)
    plt.close(fig)
    return path


#: Measured in every run: a NaN or inf here is a numerical failure, never "not applicable".
CORE = ("optimal_return", "oracle_return", "proxy_return", "kl_to_reference")


def nonfinite(table) -> list[str]:
    """The core columns with NaN or infinite values, as ``"column (k rows)"``."""
    bad = []
    for col in CORE:
        if col in table.columns:
            k = int((~np.isfinite(table[col].to_numpy(dtype=float))).sum())
            if k:
                bad.append(f"{col} ({k} rows)")
    return bad


def reproduce(
    name: str,
    scale: str = "paper",
    check: bool = False,
    jobs: int = 1,
    run: bool = True,
    results: Path = RESULTS,
    here: bool = False,
    draft: bool = False,
) -> tuple[bool, object]:
    """Sweep, collect, draw and (optionally) check one experiment.

    Args:
        here: run the sweep in this process (:func:`run_sweep_here`) instead of through the command line.
        draft: draw a low-resolution png only (:func:`draw`).

    Returns:
        ``(check passed, table)``: the table drawn and checked (runs or curves, as the experiment's module
        declares; ``None`` when there was nothing to draw). The sweep's runs are read once for it and for the written
        ``table.parquet``.
    """
    t0 = time.perf_counter()
    print(f"{name} ({scale})", flush=True)
    if run and here:
        where = "in this process" if jobs <= 1 else f"in {jobs} worker processes"
        print(f"  ran {run_sweep_here(name, scale, results, jobs)} jobs {where}", flush=True)
    elif run:
        run_sweep(name, scale, jobs, results)
    root = sweep_dir(name, scale, results)
    try:
        roots = sweep_roots(root)
        runs = finished_runs(roots)
        per_run = runs_table(runs, roots)
        write_table(per_run, root)
    except FileNotFoundError as e:  # --no-run before any sweep, or a sweep that finished nothing
        print(f"  no results to draw: {e}" + (" (run it without --no-run)" if not run else ""), flush=True)
        return False, None
    table = curves_table(runs, roots) if catalog.get(name).TABLE == "curves" else per_run
    print(f"  figure: {draw(name, scale, table, results, draft)}", flush=True)
    ok = True
    if check:
        try:
            bad = nonfinite(table)
            assert not bad, f"non-finite values in {', '.join(bad)}: a numerical failure, so no claim is checked"
            catalog.get(name).check(table)
            print(f"  claim holds: {catalog.get(name).CLAIM}", flush=True)
        except AssertionError as e:
            ok = False
            print(f"  CLAIM FAILED: {e}", flush=True)
    print(f"  {time.perf_counter() - t0:.1f}s", flush=True)
    return ok, table


def _one_report(name: str, args, jobs: int) -> tuple[str, bool, str]:
    """Reproduce one experiment with its report captured (what :func:`_side_by_side` runs in a worker process)."""
    import contextlib
    import io
    import traceback

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            here = args.runner == "here"
            ok, _ = reproduce(name, args.scale, args.check, jobs, not args.no_run, Path(args.results), here)
        except Exception:  # noqa: BLE001  (one experiment's failure is reported with the others)
            traceback.print_exc()
            ok = False
    return name, ok, buf.getvalue()


def _side_by_side(names: list[str], args, jobs: int, parallel: int) -> list[str]:
    """The experiments ``parallel`` at a time, each in a worker process forked from this one (the imports are paid
    once; the sanity sweeps are small and sequential: two of them keep two cores busy); each one's report is printed
    when it ends, in order. Returns the experiments whose claim failed (or whose run raised)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    failed = []
    context = multiprocessing.get_context("fork")  # the workers inherit the imported modules
    with ProcessPoolExecutor(max_workers=parallel, mp_context=context) as pool:
        for name, ok, out in pool.map(_one_report, names, [args] * len(names), [jobs] * len(names)):
            print(out, end="", flush=True)
            if not ok:
                failed.append(name)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help=f"'all' or some of {list(catalog.NAMES)}")
    parser.add_argument("--scale", choices=("paper", "sanity"), default="paper")
    parser.add_argument("--check", action="store_true", help="assert each experiment's claim")
    parser.add_argument(
        "--jobs", type=int, default=0, help="parallel jobs (default: all cores at paper scale, 1 at sanity)"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=0,
        help="experiments run side by side, each in its own process (default: all cores at sanity, 1 at paper)",
    )
    parser.add_argument(
        "--runner",
        choices=("cli", "here"),
        default=None,
        help="run each sweep through the command line (hydra's launcher) or here (the same jobs, directories and "
        "files, without hydra's per-job set-up, which is most of a small sweep's time); --jobs in parallel either way "
        "(default: here)",
    )
    parser.add_argument("--no-run", action="store_true", help="draw from the existing sweep results only")
    parser.add_argument("--results", default=str(RESULTS), help="results root (default: results)")
    args = parser.parse_args(argv)
    names = list(catalog.NAMES) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in catalog.NAMES]
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from {list(catalog.NAMES)} or 'all'")
    jobs = args.jobs or ((os.cpu_count() or 1) if args.scale == "paper" else 1)
    parallel = args.parallel or (1 if args.scale == "paper" else (os.cpu_count() or 1))
    args.runner = args.runner or "here"
    if parallel > 1 and len(names) > 1:
        failed = _side_by_side(names, args, jobs, parallel)
    else:
        run = not args.no_run
        here = args.runner == "here"
        failed = [n for n in names if not reproduce(n, args.scale, args.check, jobs, run, Path(args.results), here)[0]]
    if failed:
        print(f"rmsim: failed (a claim, a run, or nothing to draw): {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
