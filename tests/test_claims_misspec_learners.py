"""Claims of the named experiments
misspecification, goodhart_prevalence, reward_sparsity, tabular_vs_linear, rlhf_vs_rlfree:
each sanity sweep reproduces its claim, and its check fails on a table where the claim does not hold."""

from __future__ import annotations

import pytest

from experiments import catalog
from tests.claims import sanity

NAMES = ("misspecification", "goodhart_prevalence", "reward_sparsity", "tabular_vs_linear", "rlhf_vs_rlfree")


# For each experiment, a table in which its claim does not hold, made from the real sanity table.
def _break_misspecification(t):
    return t.assign(gap=t["gap"] + 0.1)  # no longer 0 at alpha = 0


def _break_goodhart_prevalence(t):
    last = t.groupby(["corruption.misspec.angle", "seed"])["step"].transform("max") == t["step"]
    return t.assign(oracle_return=t["oracle_return"] - 5.0 * last)  # drops everywhere, also at alpha = 0


def _break_reward_sparsity(t):
    swap = {"none": "terminal", "terminal": "none"}
    return t.assign(**{"corruption.sparsity.mode": t["corruption.sparsity.mode"].map(swap)})


def _break_tabular_vs_linear(t):
    swap = {"q_learning": "linear_q", "linear_q": "q_learning"}
    return t.assign(**{"agent.name": t["agent.name"].map(swap)})


def _break_rlhf_vs_rlfree(t):
    return t[t["agent.name"] != "dpo"]  # a method missing


BREAK = {name: globals()[f"_break_{name}"] for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_sanity_sweep_reproduces_the_claim_and_the_check_can_fail(name, tmp_path):
    held, table = sanity(name, tmp_path)
    assert held
    with pytest.raises(AssertionError):
        catalog.get(name).check(BREAK[name](table))
