"""Hydra entry point: ``python -m experiments.run [overrides]``.

Reads like the algorithm: validate the config, skip a finished run, run, write the outputs, summarise.
A single run prints a full summary (metrics, and what the policy learned to say); a job of a sweep prints one
line. Every job's log goes to ``<run dir>/run.log``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import experiments  # noqa: F401  (single-threaded BLAS before numpy; registers the subdir resolver)
from experiments.callbacks import FAILED, RAN_BY, SWEEP_ID
from experiments.config import CLIConfig, config_digest, inapplicable, is_stale, memory_limit_gb, validate_object
from experiments.io import (
    CURVE_COLUMNS,
    SUPERSEDED,
    make_room,
    read_metrics,
    write_csv,
    write_json,
    write_npz,
    write_text,
)
from experiments.report import arrays, summary
from sim.errors import ConfigError, RunError
from sim.run import RunResult, run

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger("rmsim")


def validate(cfg: DictConfig, overrides: list[str] | None = None) -> CLIConfig:
    """:func:`experiments.config.validate_object`, exiting with status 2 on an invalid value."""
    checked = validate_object(cfg, overrides)
    if isinstance(checked, str):
        print(f"rmsim: invalid config: {checked}", file=sys.stderr)
        sys.exit(2)
    return checked


def one_line(metrics: dict, label: str) -> str:
    keys = ("gap", "normalized_gap", "oracle_return", "proxy_return", "kl_to_reference")
    parts = [f"{k}={metrics[k]:.4g}" if isinstance(metrics.get(k), float) else f"{k}={metrics.get(k)}" for k in keys]
    return f"{label}: " + " ".join(parts) + f" ({metrics['wall_time_s']:.2f}s)"


class ProgressBar:
    """A tqdm bar driven by the ``progress(done, total)`` callback of :func:`sim.run.run`."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None or self.bar.total != total:
            self.close()
            from tqdm.auto import tqdm  # here: a run without a bar does not pay its import

            self.bar = tqdm(total=total, leave=False, dynamic_ncols=True, desc="training")
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def execute(config: CLIConfig, progress: bool = False) -> RunResult:
    """Run a validated config (no files)."""
    bar = ProgressBar() if progress else None
    try:
        return run(config, progress=bar, max_memory_gb=memory_limit_gb(config.max_memory_gb))
    finally:
        if bar is not None:
            bar.close()


def write_outputs(out: Path, config: CLIConfig, result: RunResult) -> None:
    """Write a run's files into ``out``: ``curve.csv``, ``arrays.npz`` (if asked), then ``metrics.json`` last."""
    if result.curve:
        extra = [k for k in result.curve[0] if k not in CURVE_COLUMNS]  # e.g. beta or n along a pressure path
        write_csv(out / "curve.csv", result.curve, [*CURVE_COLUMNS, *extra])
    if config.save_arrays:
        write_npz(out / "arrays.npz", arrays(result))
    # last: its presence marks a finished run; its digest, of which config
    write_json(out / "metrics.json", {**result.metrics, "config_digest": config_digest(config)})


#: The files of a run's results, moved aside together when its config has changed since it ran.
OUTPUTS = ("metrics.json", "curve.csv", "arrays.npz")


def set_aside(out: Path) -> Path:
    """Move a stale run's results (``metrics.json`` first, so the run stops counting as finished at once) into
    ``<out>/superseded/<n>/``: nothing is deleted. Returns that directory."""
    root = out / SUPERSEDED
    n = 0
    while (root / str(n)).exists():
        n += 1
    dest = root / str(n)
    dest.mkdir(parents=True)
    for name in OUTPUTS:
        if os.path.lexists(out / name):
            os.replace(out / name, dest / name)
    return dest


@contextmanager
def job_lock(out: Path):
    """Hold ``<out>/.lock`` for the run (an advisory lock released when the process ends, however it ends); yields
    whether it was free. Two sweeps into one directory never compute a job twice."""
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / ".lock", "a")  # noqa: SIM115  (kept open while the lock is held)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


def fail(out: Path, label: str, reason: str, sweeping: bool, code: int) -> None:
    """Record why a run failed (``failed.txt``, and ``run.log``); a sweep carries on with its other jobs."""
    write_text(out / FAILED, reason + "\n")
    log.error("failed: %s", reason)
    print(f"rmsim: {'failed' if sweeping else 'run failed'}: {label}: {reason.splitlines()[0]}", file=sys.stderr)
    if not sweeping:
        sys.exit(code)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    config = validate(cfg, overrides)
    out = Path(hc.runtime.output_dir)
    sweeping = hc.mode == RunMode.MULTIRUN
    label = f"#{hc.job.num} {hc.job.override_dirname or 'defaults'} seed={config.seed}" if sweeping else str(out)
    previous = read_metrics(out / "metrics.json")
    if isinstance(previous, dict) and not is_stale(previous, config):
        log.info("skipping %s: metrics.json exists", out)
        print(f"rmsim: skipped {label} (metrics.json exists)")
        return None
    if os.path.lexists(out / "metrics.json") and not isinstance(previous, dict):  # a dangling symlink is damage too
        blocked = make_room(out / "metrics.json")  # an empty directory is cleared; a full one fails before the work
        if blocked:
            fail(out, label, blocked, sweeping, 1)
            return None
        print(f"rmsim: {label}: {previous}: running it again", file=sys.stderr)
    for warning in inapplicable(config, overrides):
        log.warning(warning)
        if not sweeping:
            print(f"rmsim: warning: {warning}", file=sys.stderr)

    with job_lock(out) as free:
        if not free:
            print(f"rmsim: skipped {label} (another sweep is running it)")
            return None
        current = read_metrics(out / "metrics.json")
        if isinstance(current, dict) and not is_stale(current, config):  # another sweep finished it meanwhile
            print(f"rmsim: skipped {label} (metrics.json exists)")
            return None
        if isinstance(current, dict):
            moved = set_aside(out)
            print(f"rmsim: {label}: its config has changed since it ran: running it again (its old results are "
                  f"in {moved})", file=sys.stderr)  # fmt: skip
        write_text(out / RAN_BY, os.environ.get(SWEEP_ID, "") + "\n")
        (out / FAILED).unlink(missing_ok=True)
        log.info("running %s", label)
        try:
            result = execute(config, progress=sys.stderr.isatty() and not sweeping)
        except ConfigError as e:  # a value that only turns out impossible on the drawn data
            fail(out, label, f"invalid config: {e}", sweeping, 2)
            return None
        except RunError as e:
            fail(out, label, str(e), sweeping, 1)
            return None
        except Exception as e:  # noqa: BLE001  (one job's bug must not stop a sweep; its traceback is kept)
            if not sweeping:
                raise
            fail(out, label, f"{type(e).__name__}: {e}\n{traceback.format_exc()}", sweeping, 1)
            return None
        write_outputs(out, config, result)
    log.info("metrics: %s", result.metrics)
    if sweeping:
        print(one_line(result.metrics, label), flush=True)
    else:
        print(summary(result, config))
        print(f"\noutputs: {out}")
    return result.metrics


def prevalidate(argv: list[str]) -> None:
    """Validate a run's overrides before hydra does, so that a bad key, type or override syntax gets rmsim's message
    and exit code 2 (hydra would print its own error and exit 1). A sweep's (``-m`` or ``hydra.mode=MULTIRUN``)
    overrides are parsed here and its non-sweep overrides composed (``seed=0,,1``, ``hydra/launcher=bogus``); every
    job is then validated by the sweep callback. Other flags (``--cfg``, ``--help``, ...) are hydra's own business."""
    flags = [a for a in argv if a.startswith("-")]
    if any(a not in ("-m", "--multirun") for a in flags):
        return
    from hydra import initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from experiments.callbacks import CONFIGS, config_groups, job_config

    task = [a for a in argv if not a.startswith("-") and not a.lstrip("+~").startswith("hydra.")]
    multirun = bool(flags) or "hydra.mode=MULTIRUN" in [a.lstrip("+~") for a in argv]
    try:
        if multirun:  # a sweep: its sweep overrides (a,b / range / choice) are expanded and checked by the callback
            parsed = OverridesParser.create().parse_overrides(task)
            task = [o.input_line for o in parsed if not o.is_sweep_override()]
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = job_config("config", task, {}, config_groups())
    except Exception as e:  # noqa: BLE001  (hydra's or OmegaConf's rejection of an override)
        key = getattr(e, "full_key", None)
        lines = [x.strip() for x in str(e).splitlines() if x.strip()] or [type(e).__name__]
        why = " ".join(lines[:2]) if lines[0].startswith("Error parsing") else lines[0]  # the 2nd line says why
        print(f"rmsim: invalid config: {key + ': ' if key else ''}{why}", file=sys.stderr)
        sys.exit(2)
    skip_mode_composition(argv)
    if multirun:
        return
    checked = validate_object(cfg, task)
    if isinstance(checked, str):
        print(f"rmsim: invalid config: {checked}", file=sys.stderr)
        sys.exit(2)


def skip_mode_composition(argv: list[str]) -> None:
    """Spare hydra one composition of the whole config per invocation (0.2-0.3 s: a tenth of a small run).

    Before composing the config to run it, hydra composes it once more only to read ``hydra.mode``
    (``Hydra.get_mode``), which is None unless a config or the command line sets it. rmsim's configs never set it
    (``tests/test_cli.py`` checks every file under ``configs/``), so unless an override does (or ``--config-dir`` /
    ``--config-path`` bring other configs, which :func:`prevalidate` leaves to hydra), the mode is None without
    composing: what hydra's ``get_mode`` returns then."""
    if any(a.lstrip("+~").startswith("hydra.mode") for a in argv):
        return
    from hydra._internal.hydra import Hydra

    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]


if __name__ == "__main__":
    prevalidate(sys.argv[1:])
    main()
