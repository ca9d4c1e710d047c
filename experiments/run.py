"""Hydra entry point: ``python -m experiments.run [overrides]`` (DESIGN section 8).

Reads like the algorithm: validate the config, run, write the outputs, print a summary.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import experiments  # noqa: F401  (sets single-threaded BLAS before numpy is imported)
from experiments.io import write_csv, write_json, write_npz
from sim.config import Config
from sim.errors import ConfigError
from sim.experiment import run, summary

log = logging.getLogger("rmsim")
ConfigStore.instance().store(name="base_config", node=Config)

CURVE_COLUMNS = ("step", "oracle_return", "proxy_return", "kl_to_reference")


def validate(cfg: DictConfig) -> Config:
    """Turn the composed config into checked dataclasses, or exit with the offending key named."""
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except ConfigError as e:
        err = e
    except OmegaConfBaseException as e:  # a ConfigError raised inside a dataclass arrives wrapped
        cause = e.__cause__ or e.__context__
        if not isinstance(cause, ConfigError):
            raise
        err = cause
    print(f"rmsim: invalid config: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    config = validate(cfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    if (out / "metrics.json").exists():
        log.info("skipping %s: metrics.json exists", out)
        print(f"rmsim: skipped {out} (metrics.json exists)")
        return None

    try:
        result = run(config)
    except ConfigError as e:  # a value that only turns out impossible on the drawn data
        print(f"rmsim: invalid config: {e}", file=sys.stderr)
        sys.exit(2)

    if result.curve:
        write_csv(out / "curve.csv", result.curve, CURVE_COLUMNS)
    if config.save_arrays:
        write_npz(out / "arrays.npz", result.arrays)
    write_json(out / "metrics.json", result.metrics)  # last: its presence marks a finished run
    print(summary(result))
    print(f"\noutputs: {out}")
    log.info(
        "gap=%.6g oracle_return=%.6g kl=%.6g",
        result.metrics["gap"],
        result.metrics["oracle_return"],
        result.metrics["kl_to_reference"],
    )
    return result.metrics


if __name__ == "__main__":
    main()
