"""Claims of the named experiments
overoptimization, kl_penalty, regressional_control, scale_overoptimization, phase_transition:
each sanity sweep reproduces its claim, and its check fails on a table where the claim does not hold."""

from __future__ import annotations

import pytest

from experiments import catalog
from tests.claims import sanity

NAMES = ("overoptimization", "kl_penalty", "regressional_control", "scale_overoptimization", "phase_transition")


# For each experiment, a table in which its claim does not hold, made from the real sanity table.
def _break_overoptimization(t):
    return t.assign(oracle_return=t["proxy_return"] + t["reference_return"])  # oracle = proxy: no peak


def _break_kl_penalty(t):
    beta = t["agent.beta"].astype(float)
    return t.assign(oracle_return=t["oracle_return"] + 20.0 * beta * t["kl_to_reference"])  # the penalty now helps


def _break_regressional_control(t):
    last = t.groupby(["agent.name", "seed"])["step"].transform("max") == t["step"]
    return t.assign(oracle_return=t["oracle_return"] - 5.0 * last)  # a collapse at the end of every path


def _break_scale_overoptimization(t):
    return t.assign(oracle_return=t["proxy_return"] + t["reference_return"])  # oracle = proxy: no peak


def _break_phase_transition(t):
    return t.assign(oracle_return=t["proxy_return"])  # the oracle follows the proxy: no collapse anywhere


BREAK = {name: globals()[f"_break_{name}"] for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_sanity_sweep_reproduces_the_claim_and_the_check_can_fail(name, tmp_path):
    held, table = sanity(name, tmp_path)
    assert held
    with pytest.raises(AssertionError):
        catalog.get(name).check(BREAK[name](table))
