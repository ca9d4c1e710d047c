"""Claim of the named experiment ``ensembles`` (Coste et al. 2023): its sanity sweep reproduces it; its check fails
on tables where the claim does not hold, on tables of shuffled outcomes, and (``make faults``) on the sanity sweep
of a simulator whose ensembles ignore their objective."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import catalog
from experiments.catalog.ensembles import per_seed
from tests.claims import sanity, shuffles_accepted

NAME = "ensembles"
pytestmark = pytest.mark.xdist_group(NAME)  # one worker runs its sanity sweep (make test: --dist loadgroup)
OUTCOMES = ["oracle_return", "proxy_return", "kl_to_reference"]
SHUFFLES = 10  # one Wilcoxon test at p < 0.01 with a minimum effect: random outcomes pass with probability < 1%


@pytest.fixture
def table(tables):
    held, table = tables(NAME)
    assert held, "the sanity sweep does not reproduce the claim"
    return table


def _conservative(t):
    return t["reward_model.ensemble"].astype(float).to_numpy() >= 2


def test_sanity_sweep_reproduces_the_claim_with_the_measured_effect(table):
    s = per_seed(table)
    w = s.pivot_table(index="seed", columns="variant", values="peak")
    assert (w["wco"] > w["single"]).mean() >= 0.75  # most worlds: the effect is not a few outliers


def test_the_check_fails_when_the_ensemble_is_no_better_than_a_single_model(table):
    single = table[~_conservative(table)]
    as_wco = single.assign(**{"reward_model.ensemble": 5, "reward_model.objective": "wco"})
    with pytest.raises(AssertionError, match="not reliably above"):
        catalog.get(NAME).check(pd.concat([single, as_wco]))  # WCO's paths are the single model's


def test_the_check_fails_when_the_gain_is_too_small_to_matter(table):
    # WCO's oracle returns pulled towards the single model's path point by point, leaving 1/10 of each difference
    s = table.sort_values(["seed", "step"])
    single = s[~_conservative(s)]
    wco = s[_conservative(s)].copy()
    wco["oracle_return"] = single["oracle_return"].to_numpy() + 0.1 * (
        wco["oracle_return"].to_numpy() - single["oracle_return"].to_numpy()
    )
    with pytest.raises(AssertionError):
        catalog.get(NAME).check(pd.concat([single, wco]))


def test_the_check_fails_on_shuffled_outcomes(table):
    passed = shuffles_accepted(NAME, table, OUTCOMES, SHUFFLES)
    assert passed == []


@pytest.mark.fault
def test_ensembles_fail_when_the_objective_is_ignored(monkeypatch, tmp_path):
    import sim.reward_models.model as model

    combine = model.combine
    monkeypatch.setattr(model, "combine", lambda preds, pool, objective, lam=1.0: combine(preds, pool, "mean", lam))
    held, table = sanity(NAME, tmp_path)
    s = per_seed(table)
    assert not held and np.isfinite(s["peak"]).all()
