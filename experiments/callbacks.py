"""Hydra callbacks: validate every job of a sweep before any runs, and report what a sweep ran, skipped and failed.

Validation composes the config once per distinct choice of config groups (``env=tiny``, ``+experiment=...``) and
applies each job's other overrides to a copy, so a 720-job sweep is checked completely in seconds (composing each
job through hydra takes 0.1-0.8 s). Every job goes through the same checks as a single run
(:func:`experiments.config.validate_object`), strict about unknown keys.

At the end of a sweep, the counts are this invocation's own: a job that another sweep into the same directory is
running or has finished is not counted as run here.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments import parse_overrides
from experiments.io import read_metrics

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: The environment variable that tells a job which sweep invocation launched it (set by :class:`SweepCallback`).
SWEEP_ID = "RMSIM_SWEEP_ID"
#: Files a job leaves in its directory: who ran it, and why it failed.
RAN_BY, FAILED = ".rmsim_ran_by", "failed.txt"


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override lists of every job of the sweep: ``hydra.sweeper.params`` then the command line."""
    params = config.hydra.sweeper.get("params") or {}
    strings = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(strings)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def _task_overrides(job: list[str]) -> list[str]:
    return [o for o in job if not o.lstrip("+~").startswith("hydra.")]


def config_groups() -> set[str]:
    """The config groups (``env``, ``agent``, ``experiment``, ``hydra/launcher``, ...)."""
    return {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*") if p.is_dir()}


def _chooses_group(o, groups: set[str]) -> bool:
    return o.key_or_group in groups or o.get_key_element().lstrip("+~") in groups


def share_composition(cache: dict, overrides: list[str], groups: set[str], composed: DictConfig) -> None:
    """Let a sweep's own composition (``composed``, of the sweep's command-line ``overrides``, with or without its
    ``hydra`` node) serve :func:`job_config` for the jobs that choose the same config groups: hydra composes the same
    config for them, and each of them sets the sweep's value overrides again (a sweep's jobs repeat its overrides)."""
    key = tuple(o.input_line for o in parse_overrides(overrides) if _chooses_group(o, groups))
    shared = composed.copy()
    with open_dict(shared):
        shared.pop("hydra", None)
    cache.setdefault(key, pickle.dumps(shared))


def job_config(name: str, overrides: list[str], cache: dict, groups: set[str]) -> DictConfig:
    """A job's composed config: hydra composes the config groups it selects (once per distinct selection, cached),
    then its value overrides are applied to a copy, exactly as hydra would apply them. ``cache`` keeps each
    composition pickled: unpickling makes the job's deep copy five times faster than ``DictConfig.copy()`` (1.5 vs
    7 ms; the same config, flags and validation, checked on 1,828 jobs of the named experiments).

    Raises:
        Exception: hydra's or OmegaConf's own error for an override they reject (unknown key, wrong type).
    """
    parsed = parse_overrides(overrides)
    selects = [o for o in parsed if _chooses_group(o, groups)]
    values = [o for o in parsed if o not in selects]
    key = tuple(o.input_line for o in selects)
    if key not in cache:
        cache[key] = pickle.dumps(compose(config_name=name, overrides=list(key)))
    cfg = pickle.loads(cache[key])
    for o in values:
        k = o.key_or_group
        if o.is_delete():
            raise ValueError(f"{o.input_line}: deleting a key is not supported in rmsim configs")
        value = o.value()
        merge = isinstance(value, dict)  # hydra merges a dict value into the node it overrides
        if o.is_add() or o.is_force_add():  # an unknown key is added, then refused by validate_object, naming it
            with open_dict(cfg):
                OmegaConf.update(cfg, k, value, merge=merge, force_add=True)
        else:
            OmegaConf.update(cfg, k, value, merge=merge)
    return cfg


def job_run_config(name: str, job: list[str], cache: dict, groups: set[str]):
    """A job's validated run config (:class:`experiments.config.CLIConfig`), or why it is invalid (a string), from
    its overrides (hydra's own among them are ignored); compositions are shared through ``cache``."""
    from experiments.config import validate_object

    task = _task_overrides(job)
    try:
        return validate_object(job_config(name, task, cache, groups), task)
    except Exception as e:  # noqa: BLE001  (an override hydra or OmegaConf rejects)
        return f"{' '.join(task)}: {e}"


def validate_jobs(config: DictConfig) -> tuple[int, str | None]:
    """Validate every job's config (all of them, whatever their number).

    Returns:
        ``(n_jobs, error)``: the first error as ``"<overrides>: <message>"``, or None.
    """
    from experiments.config import validate_object

    jobs = sweep_jobs(config)
    name = config.hydra.job.config_name
    cache: dict = {}
    groups = config_groups()
    checked: dict[tuple[str, ...], str | None] = {}
    for job in jobs:
        overrides = _task_overrides(job)
        key = tuple(sorted(overrides))
        if key in checked:
            continue
        try:
            cfg = job_config(name, overrides, cache, groups)
        except Exception as e:  # noqa: BLE001  (an override hydra or OmegaConf rejects)
            return len(jobs), f"{' '.join(overrides)}: {e}"
        result = validate_object(cfg, overrides)  # the overrides: save_arrays=2, env.eos=yes are read as typed
        if isinstance(result, str):
            return len(jobs), f"{' '.join(overrides)}: {result}"
        checked[key] = None
    return len(jobs), None


def blocked_job_dir(config: DictConfig) -> Path | None:
    """A job directory of the sweep that a file (not a directory) occupies, or None: hydra would die creating it
    (``FileExistsError``) after the jobs before it had run. Only rmsim's directory scheme is checked (every job's
    directory name holds ``seed=``), and only when such a file exists."""
    root = Path(config.hydra.sweep.dir)
    if not root.is_dir():
        return None
    files = {p.name for p in root.iterdir() if "seed=" in p.name and not p.is_dir()}
    if not files:
        return None
    from hydra_plugins.rmsim_sweeper.resuming_sweeper import SUBDIR, job_subdir

    if OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir") != SUBDIR:
        return None
    od = config.hydra.job.config.override_dirname
    for job in sweep_jobs(config):
        sub = job_subdir(job, list(od.exclude_keys), od.item_sep, od.kv_sep, config.get("seed"))
        if sub in files:
            return root / sub
    return None


class SweepCallback(Callback):
    """Validate a whole sweep up front; at its end, say how many jobs this invocation ran, skipped and failed."""

    def __init__(self) -> None:
        self.start = 0.0
        self.sweep_id = ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.time()
        t0 = time.perf_counter()
        n, error = validate_jobs(config)
        if error is not None:
            print(f"rmsim: invalid config in the sweep (nothing was run): {error}", file=sys.stderr)
            sys.exit(2)
        blocked = blocked_job_dir(config)
        if blocked is not None:
            print(f"rmsim: {blocked} is a file where a job's directory goes: move it away (nothing was run)",
                  file=sys.stderr)  # fmt: skip
            sys.exit(2)
        self.sweep_id = os.environ[SWEEP_ID] = uuid.uuid4().hex
        print(
            f"rmsim: {n} jobs validated in {time.perf_counter() - t0:.1f}s; sweep dir {config.hydra.sweep.dir}",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        ran, failed = [], []
        for marker in sorted(root.glob(f"**/{RAN_BY}")):  # the jobs this invocation started
            d = marker.parent
            if marker.read_text().strip() == self.sweep_id:
                (ran if isinstance(read_metrics(d / "metrics.json"), dict) else failed).append(d)
        n_jobs = len(sweep_jobs(config))
        skipped = max(n_jobs - len(ran) - len(failed), 0)
        print(f"rmsim: sweep finished: {len(ran)} ran, {skipped} skipped, {len(failed)} failed; results in {root}")
        for d in failed:
            why = (d / FAILED).read_text().strip().splitlines() if (d / FAILED).is_file() else ["no metrics.json"]
            print(f"rmsim: failed: {d.relative_to(root)}: {why[0] if why else ''}", file=sys.stderr)
        print(f"rmsim: collect them with: python -m experiments.collect {root}")
        if failed:
            print("rmsim: re-run the same command to retry the failed and missing jobs only", file=sys.stderr)
            sys.exit(1)
