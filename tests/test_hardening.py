"""Fault injection: each failure a careful user found (bad or extreme input, damaged files, concurrent sweeps) now
gives a clean error or correct behaviour. The commands are the ones in the report, run as a user would."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from experiments.collect import load_table
from experiments.config import CLIConfig, validate_object
from tests.test_cli import ROOT, run_cli

CONFIGS = ROOT / "configs"


def _validate(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return validate_object(compose(config_name="config", overrides=list(overrides)), list(overrides))


def _refused(result, key: str) -> None:
    assert isinstance(result, str), "accepted"
    assert result.startswith(f"{key} = "), result


# --------------------------------------------------------------------------------------- hangs and memory
def test_a_huge_horizon_is_refused_at_once():
    t0 = time.perf_counter()
    _refused(_validate("env.vocab_size=2", "env.horizon=1000000000000"), "env.horizon")
    assert time.perf_counter() - t0 < 5  # it used to hang summing a Python series


def test_an_over_large_vocabulary_is_blamed_on_the_vocabulary():
    _refused(_validate("env.vocab_size=100000"), "env.vocab_size")


@pytest.mark.parametrize(
    "overrides, key",
    [
        (("env=large", "env.vocab_size=1000000"), "env.reference"),  # its bigram table alone: 8000 GB
        (
            (
                "env=large",
                "env.vocab_size=1000000",
                "env.n_prompts=64",
                "env.reference=uniform",
                "oracle.templates=[unigram,position]",
            ),
            "env.vocab_size",
        ),  # fmt: skip
        (
            (
                "env.n_prompts=4",
                "env.vocab_size=11",
                "env.horizon=7",
                "pipeline=rlhf",
                "reward_model=tabular",
                "max_memory_gb=8",
            ),
            "reward_model.name",
        ),  # fmt: skip  (measured 15 GB before)
        (("env=tiny", "pipeline=rlhf", "feedback=rankings", "feedback.k=1000", "max_memory_gb=8"), "feedback.k"),
    ],
)
def test_runs_that_would_not_fit_in_memory_are_refused_before_any_allocation(overrides, key):
    result = _validate(*overrides)
    _refused(result, key)
    assert "GB" in result and ("max_memory_gb" in result or "bigram" in result)


def test_the_memory_limit_is_a_setting():
    assert isinstance(_validate("env=tiny", "pipeline=rlhf", "feedback=rankings", "feedback.k=1000",
                                "max_memory_gb=100"), CLIConfig)  # fmt: skip
    _refused(_validate("max_memory_gb=0"), "max_memory_gb")


# ------------------------------------------------------------------------------------ garbage as finished
@pytest.mark.parametrize("override", ["oracle.scale=inf", "reward_model.tol=inf", "agent.beta=inf", "agent.lr=nan"])
def test_non_finite_settings_are_refused(override):
    _refused(_validate(override), override.split("=")[0])


def test_a_run_with_non_finite_metrics_fails_and_records_nothing(tmp_path):
    proc = run_cli(f"hydra.run.dir={tmp_path / 'run'}", "agent.beta=1e-320", cwd=tmp_path)
    assert proc.returncode == 1
    assert "non-finite" in proc.stderr and "nothing was recorded" in proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert "non-finite" in (tmp_path / "run" / "failed.txt").read_text()
    assert "non-finite" in (tmp_path / "run" / "run.log").read_text()


def test_a_damaged_metrics_json_is_run_again_and_collect_names_it(tmp_path):
    sweep = ["-m", "env=tiny", "agent.beta=0.1,1", f"hydra.sweep.dir={tmp_path}"]
    assert run_cli(*sweep, cwd=tmp_path).returncode == 0
    damaged = tmp_path / "agent.beta=1,env=tiny,seed=0" / "metrics.json"
    damaged.write_text('{"gap": ')  # truncated by a crash of the disk, say
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.collect", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "skipping" in proc.stderr and str(damaged) in proc.stderr
    assert len(pd.read_csv(tmp_path / "table.csv")) == 1
    proc = run_cli(*sweep, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "unreadable metrics.json" in proc.stdout and "1 ran, 1 skipped, 0 failed" in proc.stdout
    assert json.loads(damaged.read_text())["gap"] >= 0


# ---------------------------------------------------------------------------------------------------- sweeps
def test_every_job_of_a_large_sweep_is_validated_before_any_runs(tmp_path):
    # 100 jobs, the bad ones last in the grid: the old sample-based check let 98 run before failing
    proc = run_cli("-m", "env=tiny", "seed=range(50)", "env.horizon=3,20", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and "nothing was run" in proc.stderr and "env.horizon" in proc.stderr
    assert list(tmp_path.glob("**/metrics.json")) == []


def test_a_failing_job_does_not_stop_the_sweep_and_a_rerun_retries_it(tmp_path):
    sweep = ["-m", "env=tiny", "pipeline=rlhf", "feedback.n=100", "feedback.skip=-5,100", f"hydra.sweep.dir={tmp_path}"]
    proc = run_cli(*sweep, cwd=tmp_path)
    assert proc.returncode == 1
    assert "1 ran, 0 skipped, 1 failed" in proc.stdout
    assert "feedback.skip=100" in proc.stderr and "a threshold that keeps some" in proc.stderr
    assert (tmp_path / "env=tiny,feedback.n=100,feedback.skip=100,pipeline=rlhf,seed=0" / "failed.txt").exists()
    proc = run_cli(*sweep, cwd=tmp_path)  # the finished job is skipped, the failed one tried again (and fails again)
    assert proc.returncode == 1 and "0 ran, 1 skipped, 1 failed" in proc.stdout


def test_a_long_override_list_gets_a_short_stable_job_directory(tmp_path):
    long = [f"oracle.{k}={v}" for k, v in (("n_pairs", 4), ("pair_scale", 1.0), ("seq_noise", 0.5),
                                           ("length_weight", 1.0), ("repetition_weight", 1.0))]  # fmt: skip
    extra = ["corruption.misspec.angle=0.3", "corruption.misspec.length_bias=0.25", "agent.path_max_beta=100.0"]
    sweep = ["-m", "env=tiny", *long, *extra, "corruption.noise.sigma=0.0,0.5", f"hydra.sweep.dir={tmp_path}"]
    proc = run_cli(*sweep, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    dirs = sorted(p.parent for p in tmp_path.glob("*/metrics.json"))
    assert len(dirs) == 2 and all(d.name.startswith("overrides-") and len(d.name) < 60 for d in dirs)
    assert "corruption.noise.sigma=0.5" in "".join((d / ".hydra" / "overrides.yaml").read_text() for d in dirs)
    proc = run_cli(*sweep, cwd=tmp_path)  # the sweeper finds them again
    assert "2 of 2 jobs already finished" in proc.stdout


def test_two_identical_sweeps_into_one_directory_compute_each_job_once(tmp_path):
    sweep = ["-m", "env=small", "agent=q_learning", "agent.steps=20000", "seed=0,1,2", f"hydra.sweep.dir={tmp_path}"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "experiments.run", *sweep]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ran = [int(o.split("sweep finished: ")[1].split(" ran")[0]) for o, _ in outs]
    assert sum(ran) == 3  # true counts: every job ran exactly once, in one of the two sweeps
    for d in tmp_path.glob("*seed=*"):
        assert (d / "run.log").read_text().count("running #") == 1


# ------------------------------------------------------------------------------- silently ignored input
@pytest.mark.parametrize(
    "override, key",
    [
        ("+agent.bta=1", "agent.bta"),
        ("+foo=1", "foo"),
        ("save_arrays=2", "save_arrays"),
        ("env.horizon=abc", "env.horizon"),
        ("env.eos=3", "env.eos"),
    ],  # fmt: skip
)
def test_unknown_keys_type_errors_and_non_booleans_exit_2_naming_the_key(tmp_path, override, key, capsys):
    """The command line's check before hydra runs anything, in this process (tests/test_cli.py runs the real command
    on such values: exit 2 and no run directory)."""
    from experiments.run import prevalidate

    with pytest.raises(SystemExit) as exit_:
        prevalidate([f"hydra.run.dir={tmp_path / 'run'}", override])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "rmsim: invalid config" in err and key in err
    assert not (tmp_path / "run").exists()


def test_unknown_keys_suggest_the_key_meant():
    assert "did you mean agent.beta?" in _validate("+agent.bta=1")


def test_settings_that_do_not_apply_are_warned_about(tmp_path):
    proc = run_cli(
        f"hydra.run.dir={tmp_path / 'run'}", "env=tiny", "agent=exact_planner", "agent.beta=3",
        "reward_model.pessimism=1", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning: agent.beta does not apply to agent=exact_planner" in proc.stderr
    assert "warning: reward_model.pessimism does not apply to pipeline=direct" in proc.stderr
    assert "agent.beta does not apply" in (tmp_path / "run" / "run.log").read_text()


@pytest.mark.parametrize("beta", ["200", "1e6"])
def test_documented_betas_are_accepted(beta):
    assert isinstance(_validate(f"agent.beta={beta}"), CLIConfig)


# ------------------------------------------------------------------------------------------------ results
def test_outputs_respect_the_umask(tmp_path):
    proc = run_cli(f"hydra.run.dir={tmp_path / 'run'}", "env=tiny", "agent=q_learning", "agent.steps=500",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name in ("metrics.json", "curve.csv"):
        mode = stat.S_IMODE((tmp_path / "run" / name).stat().st_mode)
        assert mode == 0o666 & ~_umask(), oct(mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_collect_keeps_preset_names_dedupes_and_names_the_sweep(tmp_path):
    sweep = ["-m", "env=tiny", "corruption=misweighted,none", f"hydra.sweep.dir={tmp_path}"]
    assert run_cli(*sweep, cwd=tmp_path).returncode == 0
    table = load_table([tmp_path, tmp_path, str(tmp_path) + "/"])
    assert len(table) == 2  # the same directory three times is read once
    assert set(table["corruption"]) == {"misweighted", "none"}  # the preset, not the metric's description
    assert set(table["metric.corruption"]) == {"misspec.angle=0.6", "none"}
    assert set(table["sweep_dir"]) == {str(tmp_path)}
    assert table["gap"].dtype.kind == "f"


def test_collect_keeps_an_infinite_metric_numeric(tmp_path):
    for i, gap in enumerate((1.0, "inf")):
        run = tmp_path / f"seed={i}"
        run.mkdir()
        record = dict.fromkeys(("optimal_return", "oracle_return", "reference_return", "proxy_return"), 1.0)
        (run / "metrics.json").write_text(json.dumps({**record, "gap": 0.0, "kl_to_reference": 0.1, "other": gap}))
    table = load_table(tmp_path)
    assert table["other"].dtype.kind == "f" and np.isinf(table["other"]).sum() == 1


def test_collect_gives_a_column_per_leaf_of_a_dict_override(tmp_path):
    overrides = {
        "a": ["corruption.misspec={angle:0.3926}", "seed=0", "+agent.beta=inf"],
        "b": ["corruption.misspec={omit:[unigram],length_bias:2}", "seed=1", "oracle.templates=[unigram,bigram]"],
        "c": ["corruption.misspec={}", "seed=2"],
    }
    for name, items in overrides.items():
        run = tmp_path / name
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in items))
        record = dict.fromkeys(("optimal_return", "oracle_return", "reference_return", "proxy_return"), 1.0)
        (run / "metrics.json").write_text(json.dumps({**record, "gap": 0.0, "kl_to_reference": 0.1}))
    table = load_table(tmp_path).set_index("run_dir")
    assert table.loc["a", "corruption.misspec.angle"] == 0.3926 and np.isnan(table.loc["b", "corruption.misspec.angle"])
    assert table.loc["b", "corruption.misspec.omit"] == "['unigram']"
    assert table.loc["b", "corruption.misspec.length_bias"] == 2
    assert table.loc["c", "corruption.misspec"] == "{}" and table.loc["a", "corruption.misspec"] == "{angle:0.3926}"
    assert np.isinf(table.loc["a", "agent.beta"]) and table["seed"].dtype.kind == "i"
    assert table.loc["b", "oracle.templates"] == "['unigram', 'bigram']"


# -------------------------------------------------------------------------------- the environment's threads
@pytest.mark.parametrize("overrides", [["pipeline=rlhf", "agent=dpo", "feedback.n=300"], ["pipeline=rlhf"]])
def test_results_do_not_depend_on_blas_threads(tmp_path, overrides):
    outputs = []
    for threads in ("1", "2"):
        out = tmp_path / threads
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "HYDRA_FULL_ERROR": "0"}
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.run", f"hydra.run.dir={out}", "save_arrays=true", *overrides],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        m = json.loads((out / "metrics.json").read_text())
        m.pop("wall_time_s")
        outputs.append((m, (out / "arrays.npz").read_bytes()))
    assert outputs[0][0] == outputs[1][0]
    assert outputs[0][1] == outputs[1][1]


def test_the_memory_estimate_counts_each_bigram_tables_kept_max_plus_screen():
    """A compressed world's bigram table (V + 1, V) is counted twice (it and a temporary) plus the max-plus screen a
    solved reward keeps (its column cache, at most 64 MiB, and ~12 x 256 bytes of candidates per token)."""
    from experiments.config import compose_config
    from sim.resources import estimate

    for V in (1000, 10_000):
        cfg = compose_config(["env=large", f"env.vocab_size={V}", "max_memory_gb=1000"])  # estimated, not run
        per = [sum(b for _, _, b in estimate(cfg, 1e5, None, n_bigram=k)) for k in (0, 1, 2)]
        table = 8.0 * (V + 1) * V
        one = 2 * table + min(table, 64 * 1024**2) + 12 * 256 * V
        assert per[1] - per[0] == pytest.approx(one) and per[2] - per[0] == pytest.approx(2 * one)
