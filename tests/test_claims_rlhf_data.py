"""Claims of the named experiments
label_noise, feedback_budget, pessimism, ranking_efficiency, deterministic_preferences:
each sanity sweep reproduces its claim, and its check fails on a table where the claim does not hold."""

from __future__ import annotations

import pytest

from experiments import catalog
from tests.claims import sanity

NAMES = ("label_noise", "feedback_budget", "pessimism", "ranking_efficiency", "deterministic_preferences")


# For each experiment, a table in which its claim does not hold, made from the real sanity table.
def _break_label_noise(t):
    return t.assign(normalized_gap=-t["feedback.flip"])  # the gap now falls with epsilon


def _break_feedback_budget(t):
    return t.assign(gap_uncovered=t["gap_covered"] - 1.0)  # the gap no longer sits on uncovered prompts


def _break_pessimism(t):
    k = t["reward_model.pessimism"].astype(float)
    return t.assign(normalized_gap=t["normalized_gap"] + 0.1 * k)  # pessimism now costs gap everywhere


def _break_ranking_efficiency(t):
    swap = {"plackett_luce": "pairs", "pairs": "plackett_luce"}  # now the split fit looks better
    return t.assign(**{"reward_model.ranking_likelihood": t["reward_model.ranking_likelihood"].map(swap)})


def _break_deterministic_preferences(t):
    dpo = (t["agent.name"] if "agent.name" in t.columns else t["agent"]) == "dpo"
    return t.assign(kl_to_reference=t["kl_to_reference"].where(~dpo, t["kl_to_reference"] * t["beta"] ** -2))


BREAK = {name: globals()[f"_break_{name}"] for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_sanity_sweep_reproduces_the_claim_and_the_check_can_fail(name, tmp_path):
    held, table = sanity(name, tmp_path)
    assert held
    with pytest.raises(AssertionError):
        catalog.get(name).check(BREAK[name](table))
