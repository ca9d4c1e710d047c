"""Named experiments: every config composes at both scales, and every sanity sweep reproduces its claim."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import catalog
from experiments.callbacks import sweep_jobs
from experiments.config import validate_object  # noqa: F401  (registers the structured config)
from experiments.figures import nonfinite
from sim.config import Config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_named_experiment_has_a_config_and_a_catalog_module():
    yamls = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
    assert yamls == sorted(catalog.NAMES)
    for name in catalog.NAMES:
        module = catalog.get(name)
        assert module.TABLE in ("runs", "curves") and module.CLAIM
        assert callable(module.plot) and callable(module.check)


@pytest.mark.parametrize("name", catalog.NAMES)
def test_named_experiment_composes_at_both_scales_and_sanity_is_smaller(name):
    """The first and last job of each scale's sweep validate, composed as the sweep callback composes them (once per
    distinct choice of config groups: equal to hydra's own, test_a_large_sweep_is_validated_completely_and_fast)."""
    from experiments.callbacks import config_groups, job_config

    sizes, cache, groups = {}, {}, config_groups()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for scale in ("paper", "sanity"):
            cfg = compose(
                config_name="config", overrides=[f"+experiment={name}", f"scale={scale}"], return_hydra_config=True
            )
            OmegaConf.resolve(cfg)
            jobs = sweep_jobs(cfg)
            sizes[scale] = len(jobs)
            for job in (jobs[0], jobs[-1]):
                task = [o for o in job if not o.startswith("hydra.")]
                obj = OmegaConf.to_object(job_config("config", task, cache, groups))
                assert isinstance(obj, Config) and obj.name == name and obj.scale == scale
    assert sizes["sanity"] < sizes["paper"]


def test_launcher_presets_compose():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        slurm = compose(config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        assert slurm.hydra.launcher.array_parallelism == 64 and "submitit" in slurm.hydra.launcher._target_
        local = compose(config_name="config", overrides=["hydra/launcher=local"], return_hydra_config=True)
        assert "LocalLauncher" in local.hydra.launcher._target_
        joblib = compose(config_name="config", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
        assert "joblib" in joblib.hydra.launcher._target_.lower()


def test_non_finite_core_metrics_are_reported():
    table = pd.DataFrame({"oracle_return": [1.0, float("nan"), 2.0], "kl_to_reference": [0.1, 0.2, float("inf")]})
    assert nonfinite(table) == ["oracle_return (1 rows)", "kl_to_reference (1 rows)"]
    assert nonfinite(table.iloc[[0]]) == []


def test_a_large_sweep_is_validated_completely_and_fast():
    """All jobs (over 150) of the misspecification sweep are checked (one composition per distinct group choice),
    the same as composing each job through hydra, and a bad value in any one job is found."""
    import time

    from experiments.callbacks import config_groups, job_config, validate_jobs

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=misspecification"], return_hydra_config=True)
        t0 = time.perf_counter()
        assert validate_jobs(cfg) == (len(sweep_jobs(cfg)), None)
        assert len(sweep_jobs(cfg)) > 150 and time.perf_counter() - t0 < 60  # all of them, not a sample
        jobs = sweep_jobs(cfg)
        cache, groups = {}, config_groups()
        for job in (jobs[0], jobs[len(jobs) // 2], jobs[-1]):  # the fast path equals hydra's own composition
            task = [o for o in job if not o.startswith("hydra.")]
            fast, slow = job_config("config", task, cache, groups), compose(config_name="config", overrides=task)
            assert OmegaConf.to_container(fast, resolve=True) == OmegaConf.to_container(slow, resolve=True)
            assert OmegaConf.is_struct(fast) and OmegaConf.is_struct(slow)  # an unknown key is refused, not added
        bad = compose(
            config_name="config",
            overrides=["+experiment=rlhf_vs_rlfree", "feedback.myopia=0"],
            return_hydra_config=True,
        )
        n, error = validate_jobs(bad)
        assert n == len(sweep_jobs(bad)) and "feedback.myopia" in error


@pytest.mark.parametrize("name", ["rlhf_vs_rlfree", "tabular_vs_linear"])
def test_a_sweeps_own_composition_serves_its_jobs_as_their_own_would(name):
    """run_sweep_here lets the sweep's composition (hydra node and all) stand in for its jobs' shared choice of config
    groups: the jobs' configs are those composed from scratch, value for value and in the same order."""
    from experiments.callbacks import config_groups, job_config, share_composition

    groups = config_groups()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        command = [f"+experiment={name}", "scale=sanity", "seed=2"]
        cfg = compose(config_name="config", overrides=command, return_hydra_config=True)
        shared: dict = {}
        share_composition(shared, command, groups, cfg)
        assert "hydra" in cfg and len(shared) == 1  # the sweep's config is left whole
        jobs = sweep_jobs(cfg)
        fresh: dict = {}
        for job in (jobs[0], jobs[-1]):
            task = [o for o in job if not o.startswith("hydra.")]
            a, b = job_config("config", task, shared, groups), job_config("config", task, fresh, groups)
            assert OmegaConf.to_yaml(a) == OmegaConf.to_yaml(b)
        assert len(shared) == 1 and fresh.keys() == shared.keys()  # the shared one was used, not composed again


def test_experiments_side_by_side_each_report_and_their_failures_count(tmp_path, capsys):
    """``--parallel 2``: each experiment in its own process; both reports are printed and a failure is counted (here:
    no sweep results to draw from)."""
    from experiments import figures

    argv = ["label_noise", "feedback_budget", "--scale", "sanity", "--no-run", "--results", str(tmp_path)]
    assert figures.main([*argv, "--parallel", "2"]) == 1
    out = capsys.readouterr().out
    assert "label_noise (sanity)" in out and "feedback_budget (sanity)" in out


def test_the_sweeper_leaves_job_validation_to_rmsims_callback_only_when_it_is_configured(monkeypatch):
    """Hydra's per-batch check composes every job once more (half of a small sweep's time): rmsim's sweeper skips it
    when :class:`experiments.callbacks.SweepCallback` (which validated every job up front) is configured, and runs it
    otherwise."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from hydra_plugins.rmsim_sweeper.resuming_sweeper import ResumingSweeper

    calls = []
    monkeypatch.setattr(BasicSweeper, "validate_batch_is_legal", lambda self, batch: calls.append(batch))
    sweeper = ResumingSweeper()
    callback = {"sweep": {"_target_": "experiments.callbacks.SweepCallback"}}
    sweeper.config = OmegaConf.create({"hydra": {"callbacks": callback}})
    sweeper.validate_batch_is_legal([["seed=0"]])
    assert calls == []
    sweeper.config = OmegaConf.create({"hydra": {"callbacks": {}}})
    sweeper.validate_batch_is_legal([["seed=1"]])
    assert calls == [[["seed=1"]]]


def test_a_sweep_run_in_process_leaves_what_the_command_line_leaves(tmp_path):
    """``make sanity`` and ``make figures`` run sweeps without the CLI (``--runner here``, here in two forked
    workers): the same run directories, the same ``.hydra/config.yaml`` and ``overrides.yaml``, and the same metrics
    and curves (all but the wall time) as the contract command line."""
    import json
    import subprocess
    import sys

    from experiments.collect import load_curves, load_table
    from experiments.figures import reproduce, run_sweep_here, sweep_dir

    name, extra = "deterministic_preferences", ["seed=0"]  # the sweep's other axes, one seed: 4 jobs
    assert run_sweep_here(name, "sanity", tmp_path / "here", jobs=2, overrides=extra) == 4  # two forked workers
    here = sweep_dir(name, "sanity", tmp_path / "here")
    cli = tmp_path / "cli"
    cmd = [sys.executable, "-m", "experiments.run", "-m", f"+experiment={name}", "scale=sanity", *extra,
           f"hydra.sweep.dir={cli}"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    runs = sorted(p.name for p in here.iterdir() if p.is_dir())
    assert runs == sorted(p.name for p in cli.iterdir() if p.is_dir() and "seed=" in p.name) and len(runs) == 4
    for run in runs:
        for f in (".hydra/config.yaml", ".hydra/overrides.yaml", "curve.csv"):
            assert (here / run / f).exists() == (cli / run / f).exists()
            if (here / run / f).exists():
                assert (here / run / f).read_text() == (cli / run / f).read_text(), (run, f)
        a, b = (json.loads((d / run / "metrics.json").read_text()) for d in (here, cli))
        a.pop("wall_time_s"), b.pop("wall_time_s")
        assert a == b, run
    # what reproduce draws, checks and writes, from one read of the runs: the tables collect reads from disk
    ok, table = reproduce(name, "sanity", run=False, results=tmp_path / "here", draft=True)
    assert table is not None and len(table) > len(runs)  # the curves experiment's long table: points of 4 runs
    pd.testing.assert_frame_equal(table, load_curves(here))
    pd.testing.assert_frame_equal(pd.read_parquet(here / "table.parquet"), load_table(here))


def test_drawing_a_sweep_that_never_ran_says_so_without_a_traceback(tmp_path, capsys):
    from experiments import figures

    assert figures.main(["label_noise", "--scale", "sanity", "--no-run", "--results", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "no results to draw" in out.out and "without --no-run" in out.out and "Traceback" not in out.out + out.err


def test_config_yaml_is_the_text_omegaconf_writes():
    """``.hydra/config.yaml`` of a sweep run in process is emitted by libyaml (:func:`experiments.figures.config_yaml`):
    the same text as ``OmegaConf.to_yaml`` (what hydra writes) on strings that YAML would read as other types, YAML's
    indicators, quotes, escapes, long lines, and (through OmegaConf's own emitter) characters the two escape
    differently."""
    import random

    from experiments.figures import config_yaml

    rng = random.Random(0)
    ascii_chars = [chr(c) for c in range(128)]
    tricky = ["", "yes", "off", "null", "~", "1e3", ".inf", "0x1f", "1_000", "12:30", "2026-11-28", "a: b", "a #b",
              "- x", "? x", "x\ny", "x\n", "\ttab", "'q'", '"dq"', "a\\b", "\x07", "\x00", "word " * 40, "x" * 300,
              "é ü", "🙂", "\x85", "\U0001000c", "${by_scale:${scale},1,2}"]  # fmt: skip
    tricky += ["".join(rng.choice(ascii_chars) for _ in range(rng.randint(1, 12))) for _ in range(300)]
    configs = [{"k": v, "l": [v, {"m": v}], "n": {"x": v, "y": 1.5, "z": None, "e": []}} for v in tricky]
    configs += [{"a\rb": 1}, {"k\nx": 1}, {"🙂": "x"}]
    checked = 0
    for content in configs:
        try:
            cfg = OmegaConf.create(content)
        except Exception:  # noqa: BLE001  (a string OmegaConf cannot hold, e.g. a broken interpolation)
            continue
        assert config_yaml(cfg) == OmegaConf.to_yaml(cfg), content
        checked += 1
    assert checked > 250
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for name in ("rlhf_vs_rlfree", "heavy_tails", "misspecification"):
            cfg = compose(config_name="config", overrides=[f"+experiment={name}", "scale=sanity"])
            assert config_yaml(cfg) == OmegaConf.to_yaml(cfg)
