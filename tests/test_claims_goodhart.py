"""Claim of the named experiment early_stopping (Karwowski et al. 2023's early-stopping rule): its sanity sweep
reproduces the claim; its check fails on tables where the claim does not hold, on tables of shuffled outcomes, and
(``make faults``) on the sanity sweep of a simulator whose rule never stops."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import catalog
from tests.claims import sanity, shuffles_accepted

NAME = "early_stopping"
pytestmark = pytest.mark.xdist_group(NAME)  # one worker runs its sanity sweep (make test: --dist loadgroup)
#: What each run measured along its path (the stop and the measured angle stay with their runs).
OUTCOMES = ["oracle_return", "proxy_return", "kl_to_reference", "step_angle"]
#: The check needs two tests at p < 0.01 at once: see tests/test_claims_misspec_learners.py.
SHUFFLES = 10


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The experiment is looked up through ``catalog.NAMES`` (a no-op once it is listed there)."""
    if NAME not in catalog.NAMES:
        monkeypatch.setattr(catalog, "NAMES", (*catalog.NAMES, NAME))


@pytest.fixture
def table(tables):
    """The sanity sweep, run once per worker process: ``(held, table)``."""
    return tables(NAME)


def _stopped_at_the_end(t):
    """The rule's stop moved to the path's last point: the stopped outcome is the unstopped one."""
    keys = ["corruption.misspec.angle", "agent.early_stop_angle", "seed"]
    return t.assign(early_stop_step=t.groupby(keys)["step"].transform("max"))


def _free_stopping(t):
    """Stopping costs nothing: the path's oracle return is flat after the stop (at its best value)."""
    out = t.copy()
    keys = ["corruption.misspec.angle", "agent.early_stop_angle", "seed"]
    best = out.groupby(keys)["oracle_return"].transform("max")
    return out.assign(oracle_return=np.where(out["step"] >= out["early_stop_step"], best, out["oracle_return"]))


def test_sanity_sweep_reproduces_the_claim_and_the_check_can_fail(table):
    held, t = table
    assert held
    s = catalog.get(NAME).statistics(t)
    assert s["avoided"] >= 7 and s["made"] == 0 and s["cost"] > 10 * s["drop_avoided"]
    for broken in (_stopped_at_the_end, _free_stopping):
        with pytest.raises(AssertionError):
            catalog.get(NAME).check(broken(t))


def test_check_fails_on_shuffled_outcomes(table):
    _, t = table
    passed = shuffles_accepted(NAME, t, OUTCOMES, SHUFFLES)
    assert passed == [], f"{NAME}: the check accepts shuffled outcomes (shuffle seeds {passed})"


@pytest.mark.fault
def test_early_stopping_fails_when_the_rule_never_stops(monkeypatch, tmp_path):
    import sim.goodhart

    monkeypatch.setattr(sim.goodhart, "stop_index", lambda angles, bound: len(angles))  # the angle bound ignored
    held, t = sanity(NAME, tmp_path)
    assert (t["early_stop_step"] == t["step"].max()).all() and not held
