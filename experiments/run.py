"""Hydra entry point: ``python -m experiments.run [overrides]`` (DESIGN section 8).

Reads like the algorithm: validate the config, skip a finished run, run, write the outputs, summarise.
A single run prints a full summary (metrics, and what the policy learned to say); a job of a sweep prints one
line. Every job's log goes to ``<run dir>/run.log``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import experiments  # noqa: F401  (single-threaded BLAS before numpy; registers the subdir resolver)
from experiments.io import write_csv, write_json, write_npz
from sim.config import Config
from sim.errors import ConfigError
from sim.experiment import run, summary

log = logging.getLogger("rmsim")
ConfigStore.instance().store(name="base_config", node=Config)

CURVE_COLUMNS = ("step", "oracle_return", "proxy_return", "kl_to_reference")


def validate_object(cfg: DictConfig) -> Config | str:
    """The checked :class:`Config`, or the error message naming the key, the value and the allowed range."""
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except ConfigError as e:
        return str(e)
    except OmegaConfBaseException as e:  # a ConfigError raised inside a dataclass arrives wrapped
        cause = e.__cause__ or e.__context__
        if not isinstance(cause, ConfigError):
            raise
        return str(cause)


def validate(cfg: DictConfig) -> Config:
    """:func:`validate_object`, exiting with status 2 on an invalid value."""
    checked = validate_object(cfg)
    if isinstance(checked, str):
        print(f"rmsim: invalid config: {checked}", file=sys.stderr)
        sys.exit(2)
    return checked


def one_line(metrics: dict, label: str) -> str:
    keys = ("gap", "normalized_gap", "oracle_return", "proxy_return", "kl_to_reference")
    parts = [f"{k}={metrics[k]:.4g}" if isinstance(metrics.get(k), float) else f"{k}={metrics.get(k)}" for k in keys]
    return f"{label}: " + " ".join(parts) + f" ({metrics['wall_time_s']:.2f}s)"


def execute(config: Config, progress: bool = False):
    """Run a validated config (no files): the :class:`sim.experiment.RunResult`."""
    return run(config, progress=progress)


def write_outputs(out: Path, config: Config, result) -> None:
    """Write a run's files into ``out``: ``curve.csv``, ``arrays.npz`` (if asked), then ``metrics.json`` last."""
    if result.curve:
        extra = [k for k in result.curve[0] if k not in CURVE_COLUMNS]  # e.g. beta or n along a pressure path
        write_csv(out / "curve.csv", result.curve, [*CURVE_COLUMNS, *extra])
    if config.save_arrays:
        write_npz(out / "arrays.npz", result.arrays)
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
        print(summary(result))
        print(f"\noutputs: {out}")
    return result.metrics


if __name__ == "__main__":
    main()
