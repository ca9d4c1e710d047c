"""The experiment runner end to end: sweeps, launchers, resume, tables, reproducibility (all via subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from experiments.collect import load_table
from tests.test_cli import ROOT, run_cli

SWEEP = ["-m", "env=tiny", "agent.beta=0.1,1", "seed=0,1"]


def _finished(root):
    return sorted(p.parent.name for p in root.glob("*/metrics.json"))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """:data:`SWEEP` run once from the command line: ``(its directory, the process)``. Read it; a test that changes
    or resumes the sweep takes a copy (:func:`_copy`). Its tests share one worker (``xdist_group``)."""
    root = tmp_path_factory.mktemp("swept") / "sweep"
    proc = run_cli(*SWEEP, f"hydra.sweep.dir={root}", cwd=root.parent)
    assert proc.returncode == 0, proc.stderr
    return root, proc


def _copy(swept, dest):
    """A copy of the finished :data:`SWEEP` in ``dest`` (file times kept, as if it had run there)."""
    shutil.copytree(swept[0], dest, dirs_exist_ok=True)
    return dest


@pytest.mark.xdist_group("swept")
def test_sweep_names_jobs_with_the_seed_last_and_reports_counts(swept):
    root, proc = swept
    assert _finished(root) == [
        "agent.beta=0.1,env=tiny,seed=0",
        "agent.beta=0.1,env=tiny,seed=1",
        "agent.beta=1,env=tiny,seed=0",
        "agent.beta=1,env=tiny,seed=1",
    ]
    assert "4 jobs validated" in proc.stdout and "4 ran, 0 skipped" in proc.stdout
    assert "[rmsim][INFO]" not in proc.stdout + proc.stderr  # logs go to the run's log file
    assert "running" in (root / "agent.beta=1,env=tiny,seed=0" / "run.log").read_text()


@pytest.mark.xdist_group("swept")
def test_interrupted_sweep_reruns_only_missing_jobs(swept, tmp_path):
    _copy(swept, tmp_path)
    # simulate an interruption: one job never finished, another left a half-written temporary file
    (tmp_path / "agent.beta=1,env=tiny,seed=1" / "metrics.json").unlink()
    (tmp_path / "agent.beta=1,env=tiny,seed=1" / ".metrics.json.x1y2.tmp").write_text('{"gap": ')
    kept = {n: (tmp_path / n / "metrics.json").stat().st_mtime_ns for n in _finished(tmp_path)}
    proc = run_cli(*SWEEP, f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 ran, 3 skipped" in proc.stdout
    # the sweeper does not even launch the finished jobs
    assert "3 of 4 jobs already finished" in proc.stdout and "Launching 1 jobs" in proc.stdout + proc.stderr
    assert proc.stdout.count("rmsim: skipped") == 0
    assert len(_finished(tmp_path)) == 4
    for name, mtime in kept.items():  # finished runs were not touched
        assert (tmp_path / name / "metrics.json").stat().st_mtime_ns == mtime


def test_resume_with_a_custom_subdir_falls_back_to_the_jobs_own_skip(tmp_path):
    custom = ["hydra.sweep.subdir=${hydra.job.num}"]
    assert run_cli(*SWEEP, *custom, f"hydra.sweep.dir={tmp_path}", cwd=tmp_path).returncode == 0
    (tmp_path / "3" / "metrics.json").unlink()
    proc = run_cli(*SWEEP, *custom, f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "already finished" not in proc.stdout  # the sweeper cannot tell where jobs live: it launches all
    assert proc.stdout.count("rmsim: skipped") == 3 and "1 ran, 3 skipped" in proc.stdout


def test_joblib_runs_a_sweep_in_parallel_workers_and_a_finished_one_launches_nothing(tmp_path):
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    first = run_cli(*SWEEP, *joblib, f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Joblib" in first.stdout + first.stderr and len(_finished(tmp_path)) == 4
    proc = run_cli(*SWEEP, *joblib, f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "4 of 4 jobs already finished" in proc.stdout and "0 ran, 4 skipped" in proc.stdout
    assert "Launching" not in proc.stdout + proc.stderr


def test_invalid_value_anywhere_in_a_sweep_stops_it_before_any_job(tmp_path):
    proc = run_cli("-m", "env=tiny", "agent.beta=0.1,-1", "seed=0,1", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "agent.beta" in proc.stderr and "nothing was run" in proc.stderr
    assert _finished(tmp_path) == []


def test_submitit_local_launcher(tmp_path):
    proc = run_cli("-m", "hydra/launcher=local", "env=tiny", "seed=0,1", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Submitit 'local'" in proc.stdout + proc.stderr
    assert _finished(tmp_path) == ["env=tiny,seed=0", "env=tiny,seed=1"]


@pytest.mark.xdist_group("swept")
def test_collect_writes_a_table_pandas_reads(swept, tmp_path):
    _copy(swept, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.collect", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(tmp_path / "table.parquet")
    assert len(df) == 4
    assert {"run_dir", "env", "agent.beta", "seed", "gap", "normalized_gap", "kl_to_reference"} <= set(df.columns)
    assert df["agent.beta"].dtype.kind == "f" and df["seed"].dtype.kind == "i"
    assert sorted(df["agent.beta"].tolist()) == [0.1, 0.1, 1.0, 1.0]
    csv = pd.read_csv(tmp_path / "table.csv")
    assert csv.shape == df.shape
    pd.testing.assert_frame_equal(load_table(tmp_path), df)


def test_collect_errors_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        load_table(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such sweep"):
        load_table(tmp_path / "missing")


def test_same_config_and_seed_give_identical_results(tmp_path):
    for name in ("a", "b"):
        args = [
            f"hydra.run.dir={tmp_path / name}",
            "pipeline=rlhf",
            "agent=q_learning",
            "agent.steps=3000",
            "env=tiny",
            "save_arrays=true",
        ]
        assert run_cli(*args, cwd=tmp_path).returncode == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b"))
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a == b
    assert (tmp_path / "a" / "arrays.npz").read_bytes() == (tmp_path / "b" / "arrays.npz").read_bytes()
    assert (tmp_path / "a" / "curve.csv").read_text() == (tmp_path / "b" / "curve.csv").read_text()


@pytest.mark.parametrize(
    "job",
    [
        ["env=tiny", "seed=3"],
        ["agent.beta=0.1", "env=tiny"],  # no seed: the config's
        ["+experiment=pessimism", "scale=sanity", "reward_model.pessimism=2", "feedback.sampler=expert", "seed=1"],
        ["oracle.templates=[unigram,position]", "corruption.misspec.angle=0.25", "seed=0"],
        ["feedback.rationality=inf", "agent=dpo", "pipeline=rlhf", "seed=2"],
    ],
)
def test_the_sweeper_predicts_the_directory_hydra_gives_a_job(job):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hydra_plugins.rmsim_sweeper.resuming_sweeper import SUBDIR, job_subdir
    from tests.test_cli import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=job, return_hydra_config=True)
        assert OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"] == SUBDIR
        od = cfg.hydra.job.config.override_dirname
        predicted = job_subdir(job, list(od.exclude_keys), od.item_sep, od.kv_sep, cfg.seed)
        assert predicted == cfg.hydra.sweep.subdir


@pytest.mark.xdist_group("swept")
def test_a_run_whose_config_changed_since_it_finished_runs_again_and_keeps_the_old_results(swept, tmp_path):
    """The same run directory with another config (here: a single run with a new beta; in a sweep, an edited
    experiment file) is not "finished": its old results move to ``superseded/0/`` and it runs again. A sweep re-runs
    exactly its stale jobs, and ``collect`` does not count superseded results as runs."""
    out = tmp_path / "one"
    assert run_cli("env=tiny", "agent.beta=1", f"hydra.run.dir={out}", cwd=tmp_path).returncode == 0
    first = json.loads((out / "metrics.json").read_text())
    proc = run_cli("env=tiny", "agent.beta=0.1", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "its config has changed since it ran" in proc.stderr and "skipped" not in proc.stdout
    second = json.loads((out / "metrics.json").read_text())
    assert second["config_digest"] != first["config_digest"] and second["kl_to_reference"] > first["kl_to_reference"]
    assert json.loads((out / "superseded" / "0" / "metrics.json").read_text()) == first
    again = run_cli("env=tiny", "agent.beta=0.1", f"hydra.run.dir={out}", cwd=tmp_path)
    assert "skipped" in again.stdout and not (out / "superseded" / "1").exists()  # the same config: finished

    sweep = _copy(swept, tmp_path / "sweep")
    job = sweep / "agent.beta=1,env=tiny,seed=1"
    record = json.loads((job / "metrics.json").read_text())
    (job / "metrics.json").write_text(json.dumps({**record, "config_digest": "0" * 16}))  # ran under another config
    proc = run_cli(*SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3 of 4 jobs already finished" in proc.stdout and "1 ran, 3 skipped" in proc.stdout
    assert json.loads((job / "metrics.json").read_text())["config_digest"] == record["config_digest"]
    assert (job / "superseded" / "0" / "metrics.json").is_file()
    assert len(load_table(sweep)) == 4
