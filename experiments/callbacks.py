"""Hydra callbacks: validate every job of a sweep before any runs, and report what a sweep ran and skipped."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

#: Above this many jobs, each distinct override is validated once, plus a sample of whole jobs (composing a job
#: costs ~0.1 s, so validating every job of a 700-job sweep would take over a minute).
MAX_COMBINATIONS = 64
SAMPLED_JOBS = 16


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override lists of every job of the sweep: ``hydra.sweeper.params`` then the command line."""
    params = config.hydra.sweeper.get("params") or {}
    strings = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(strings)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def _task_overrides(job: list[str]) -> list[str]:
    return [o for o in job if not o.lstrip("+~").startswith("hydra.")]


def validate_jobs(config: DictConfig) -> tuple[int, str | None]:
    """Compose and validate each job's config.

    Returns:
        ``(n_jobs, error)``: the first error as ``"<overrides>: <message>"``, or None.
    """
    from experiments.config import validate_object

    jobs = sweep_jobs(config)
    if len(jobs) > MAX_COMBINATIONS:  # too many to compose: each distinct override on its own, and a sample
        shared = [o for o in jobs[0] if all(o in job for job in jobs)]  # e.g. +experiment=..., scale=...
        varying = sorted({o for job in jobs for o in job} - set(shared))
        sample = np.random.default_rng(0).choice(len(jobs), SAMPLED_JOBS, replace=False)
        jobs_to_check = [[*shared, o] for o in varying] + [jobs[i] for i in sorted(sample)]
    else:
        jobs_to_check = jobs
    name = config.hydra.job.config_name
    for job in jobs_to_check:
        overrides = _task_overrides(job)
        try:
            cfg = compose(config_name=name, overrides=overrides)
        except Exception as e:  # noqa: BLE001  (an override hydra itself rejects)
            return len(jobs), f"{' '.join(overrides)}: {e}"
        checked = validate_object(cfg)
        if isinstance(checked, str):
            return len(jobs), f"{' '.join(overrides)}: {checked}"
    return len(jobs), None


class SweepCallback(Callback):
    """Validate a whole sweep up front; at its end, say how many jobs ran and how many were skipped."""

    def __init__(self) -> None:
        self.start = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.time()
        n, error = validate_jobs(config)
        if error is not None:
            print(f"rmsim: invalid config in the sweep (nothing was run): {error}", file=sys.stderr)
            sys.exit(2)
        print(f"rmsim: {n} jobs validated; sweep dir {config.hydra.sweep.dir}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        done = list(root.glob("**/metrics.json"))
        ran = sum(1 for p in done if p.stat().st_mtime >= self.start)
        skipped = len(done) - ran
        print(f"rmsim: sweep finished: {ran} ran, {skipped} skipped (metrics.json existed); results in {root}")
        print(f"rmsim: collect them with: python -m experiments.collect {root}")
