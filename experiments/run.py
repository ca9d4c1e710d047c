"""Hydra entry point: ``python -m experiments.run [overrides]``.

Reads like the algorithm: validate the config, skip a finished run, run, write the outputs, summarise.
A single run prints a full summary (metrics, and what the policy learned to say); a job of a sweep prints one
line. Every job's log goes to ``<run dir>/run.log``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from tqdm.auto import tqdm

import experiments  # noqa: F401  (single-threaded BLAS before numpy; registers the subdir resolver)
from experiments.config import CLIConfig, validate_object
from experiments.io import write_csv, write_json, write_npz
from experiments.report import arrays, summary
from sim.errors import ConfigError
from sim.run import RunResult, run

log = logging.getLogger("rmsim")

CURVE_COLUMNS = ("step", "oracle_return", "proxy_return", "kl_to_reference")


def validate(cfg: DictConfig) -> CLIConfig:
    """:func:`experiments.config.validate_object`, exiting with status 2 on an invalid value."""
    checked = validate_object(cfg)
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
        return run(config, progress=bar)
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
    write_json(out / "metrics.json", result.metrics)  # last: its presence marks a finished run


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    config = validate(cfg)
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    sweeping = hc.mode == RunMode.MULTIRUN
    label = f"#{hc.job.num} {hc.job.override_dirname or 'defaults'} seed={config.seed}" if sweeping else str(out)
    if (out / "metrics.json").exists():
        log.info("skipping %s: metrics.json exists", out)
        print(f"rmsim: skipped {label} (metrics.json exists)")
        return None

    log.info("running %s", label)
    try:
        result = execute(config, progress=sys.stderr.isatty() and not sweeping)
    except ConfigError as e:  # a value that only turns out impossible on the drawn data
        print(f"rmsim: invalid config: {e}", file=sys.stderr)
        sys.exit(2)

    write_outputs(out, config, result)
    log.info("metrics: %s", result.metrics)
    if sweeping:
        print(one_line(result.metrics, label), flush=True)
    else:
        print(summary(result, config))
        print(f"\noutputs: {out}")
    return result.metrics


if __name__ == "__main__":
    main()
