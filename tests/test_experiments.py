"""Named experiments: every config composes at both scales, and every sanity sweep reproduces its claim."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments import catalog
from experiments.callbacks import sweep_jobs
from experiments.figures import figure_path, reproduce
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


@pytest.mark.parametrize("name", catalog.NAMES)
def test_sanity_sweep_reproduces_the_claim(name, tmp_path):
    assert reproduce(name, scale="sanity", check=True, jobs=1, results=tmp_path)
    png = figure_path(name, "sanity", tmp_path)
    assert png.exists() and png.with_suffix(".pdf").exists() and png.stat().st_size > 10_000
    table = pd.read_parquet(tmp_path / "sweeps" / name / "sanity" / "table.parquet")
    assert len(table) > 0 and "normalized_gap" in table.columns
