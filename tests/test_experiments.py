"""Named experiments: every config composes at both scales, and every sanity sweep reproduces its claim."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import catalog
from experiments.callbacks import sweep_jobs
from experiments.figures import figure_path, nonfinite, reproduce, table_of
from experiments.run import validate  # noqa: F401  (registers the structured config)
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
    sizes = {}
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for scale in ("paper", "sanity"):
            cfg = compose(
                config_name="config", overrides=[f"+experiment={name}", f"scale={scale}"], return_hydra_config=True
            )
            OmegaConf.resolve(cfg)
            jobs = sweep_jobs(cfg)
            sizes[scale] = len(jobs)
            for job in (jobs[0], jobs[-1]):  # the first and last job of the sweep validate
                task = [o for o in job if not o.startswith("hydra.")]
                obj = OmegaConf.to_object(compose(config_name="config", overrides=task))
                assert isinstance(obj, Config) and obj.name == name
    assert sizes["sanity"] < sizes["paper"]


def test_launcher_presets_compose():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        slurm = compose(config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        assert slurm.hydra.launcher.array_parallelism == 64 and "submitit" in slurm.hydra.launcher._target_
        local = compose(config_name="config", overrides=["hydra/launcher=local"], return_hydra_config=True)
        assert "LocalLauncher" in local.hydra.launcher._target_
        joblib = compose(config_name="config", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
        assert "joblib" in joblib.hydra.launcher._target_.lower()


# For each experiment, a table in which its claim does not hold, made from the real sanity table.
def _break_label_noise(t):
    return t.assign(normalized_gap=-t["feedback.flip"])  # the gap now falls with epsilon


def _break_feedback_budget(t):
    return t.assign(gap_uncovered=t["gap_covered"] - 1.0)  # the gap no longer sits on uncovered prompts


def _break_reward_sparsity(t):
    swap = {"none": "terminal", "terminal": "none"}
    return t.assign(**{"corruption.sparsity.mode": t["corruption.sparsity.mode"].map(swap)})


def _break_misspecification(t):
    return t.assign(gap=t["gap"] + 0.1)  # no longer 0 at alpha = 0


def _break_overoptimization(t):
    return t.assign(oracle_return=t["proxy_return"] + t["reference_return"])  # oracle = proxy: no peak


def _break_regressional_control(t):
    last = t.groupby(["agent.name", "seed"])["step"].transform("max") == t["step"]
    return t.assign(oracle_return=t["oracle_return"] - 5.0 * last)  # a collapse at the end of every path


def _break_goodhart_prevalence(t):
    last = t.groupby(["corruption.misspec.angle", "seed"])["step"].transform("max") == t["step"]
    return t.assign(oracle_return=t["oracle_return"] - 5.0 * last)  # drops everywhere, also at alpha = 0


def _break_rlhf_vs_rlfree(t):
    return t[t["agent.name"] != "dpo"]  # a method missing


def _break_scale_overoptimization(t):
    return t.assign(oracle_return=t["proxy_return"] + t["reference_return"])  # oracle = proxy: no peak


def _break_tabular_vs_linear(t):
    swap = {"q_learning": "linear_q", "linear_q": "q_learning"}
    return t.assign(**{"agent.name": t["agent.name"].map(swap)})


def _break_pessimism(t):
    k = t["reward_model.pessimism"].astype(float)
    return t.assign(normalized_gap=t["normalized_gap"] + 0.1 * k)  # pessimism now costs gap everywhere


def _break_deterministic_preferences(t):
    dpo = (t["agent.name"] if "agent.name" in t.columns else t["agent"]) == "dpo"
    return t.assign(kl_to_reference=t["kl_to_reference"].where(~dpo, t["kl_to_reference"] * t["beta"] ** -2))


def _break_ranking_efficiency(t):
    swap = {"plackett_luce": "pairs", "pairs": "plackett_luce"}  # now the split fit looks better
    return t.assign(**{"reward_model.ranking_likelihood": t["reward_model.ranking_likelihood"].map(swap)})


def _break_kl_penalty(t):
    beta = t["agent.beta"].astype(float)
    return t.assign(oracle_return=t["oracle_return"] + 20.0 * beta * t["kl_to_reference"])  # the penalty now helps


def _break_phase_transition(t):
    return t.assign(oracle_return=t["proxy_return"])  # the oracle follows the proxy: no collapse anywhere


BREAK = {name: globals()[f"_break_{name}"] for name in catalog.NAMES}


@pytest.mark.parametrize("name", catalog.NAMES)
def test_sanity_sweep_reproduces_the_claim_and_the_check_can_fail(name, tmp_path):
    assert reproduce(name, scale="sanity", check=True, jobs=1, results=tmp_path)
    png = figure_path(name, "sanity", tmp_path)
    assert png.exists() and png.with_suffix(".pdf").exists() and png.stat().st_size > 10_000
    table = pd.read_parquet(tmp_path / "sweeps" / name / "sanity" / "table.parquet")
    assert len(table) > 0 and "normalized_gap" in table.columns
    # the claim must be falsifiable: on a table where it does not hold, check() fails
    full = table_of(name, "sanity", tmp_path)
    assert nonfinite(full) == []
    with pytest.raises(AssertionError):
        catalog.get(name).check(BREAK[name](full))


def test_non_finite_core_metrics_are_reported():
    table = pd.DataFrame({"oracle_return": [1.0, float("nan"), 2.0], "kl_to_reference": [0.1, 0.2, float("inf")]})
    assert nonfinite(table) == ["oracle_return (1 rows)", "kl_to_reference (1 rows)"]
    assert nonfinite(table.iloc[[0]]) == []


def test_large_sweep_validation_uses_shared_overrides():
    """Over 64 jobs, each varying override is composed with the overrides all jobs share (dpo needs rlhf)."""
    from experiments.callbacks import MAX_COMBINATIONS, validate_jobs

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=rlhf_vs_rlfree"], return_hydra_config=True)
        assert len(sweep_jobs(cfg)) > MAX_COMBINATIONS
        assert validate_jobs(cfg) == (72, None)
        bad = compose(
            config_name="config",
            overrides=["+experiment=rlhf_vs_rlfree", "feedback.myopia=0"],
            return_hydra_config=True,
        )
        n, error = validate_jobs(bad)
        assert n == 72 and "feedback.myopia" in error
