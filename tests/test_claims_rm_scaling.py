"""Claim of the named experiment rm_scaling (Gao et al. 2022's reward-model size and data axes): its sanity sweep
reproduces the claim; its check fails on tables where one part of the claim does not hold, on tables of shuffled
outcomes, and (``make faults``) on the sanity sweep of a simulator that ignores ``reward_model.dim`` or whose
teacher's labels are shuffled."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import catalog
from experiments.catalog.rm_scaling import DIM, N
from tests.claims import breaks_accepted, sanity, shuffles_accepted

NAME = "rm_scaling"
pytestmark = pytest.mark.xdist_group(NAME)  # one worker runs its sanity sweep (make test: --dist loadgroup)
OUTCOMES = ["oracle_return", "proxy_return", "kl_to_reference"]
#: Three tests at p < 0.01 at once: a check that accepted random outcomes with probability q >= 0.3 would accept at
#: least one of 10 shuffles with probability 97%.
SHUFFLES = 10


def _outcomes_of(t, column: str, value):
    """The table with every row given the outcomes of the row with ``column = value`` and the same other
    configuration, seed and path step: ``column`` no longer matters."""
    key = [c for c in (DIM, N, "seed", "step") if c != column]
    src = t[t[column] == value].set_index(key)
    out = t.copy()
    idx = t[key].apply(tuple, axis=1)
    for col in [*OUTCOMES, "reference_return", "optimal_return", "reference_proxy_return"]:
        out[col] = src.loc[list(idx), col].to_numpy()
    return out


# Tables in which one part of the claim does not hold, made from the real sanity table.
def _labels_do_not_help(t):  # every N behaves like the fewest labels
    return _outcomes_of(t, N, t[N].min())


def _capacity_does_not_matter(t):  # every capacity behaves like the full model
    return _outcomes_of(t, DIM, 0)


def _small_model_improves_alike(t):  # the smallest model gains from labels as much as the full one
    out = t.copy()
    smallest = min(d for d in t[DIM].unique() if d > 0)
    full = _outcomes_of(t, DIM, 0)
    rows = (t[DIM] == smallest).to_numpy()
    out.loc[rows, OUTCOMES] = full.loc[rows, OUTCOMES].to_numpy()
    return out


BREAKS = [_labels_do_not_help, _capacity_does_not_matter, _small_model_improves_alike]


@pytest.fixture
def table(tables):
    held, t = tables(NAME)
    assert held
    return t


def test_sanity_sweep_reproduces_the_claim_and_the_check_can_fail(table):
    catalog.get(NAME).check(table)
    assert breaks_accepted(NAME, table, BREAKS) == []


def test_check_fails_on_shuffled_outcomes(table):
    passed = shuffles_accepted(NAME, table, OUTCOMES, SHUFFLES)
    assert passed == [], f"{NAME}: the check accepts shuffled outcomes (shuffle seeds {passed})"


@pytest.mark.fault
def test_rm_scaling_fails_when_the_capacity_is_ignored(monkeypatch, tmp_path):
    """The fault: the reward model is fitted with one parameter per feature whatever ``reward_model.dim`` says (the
    argument dropped on its way to the fit)."""
    import sim.proxy
    from sim.reward_models import fit_reward_model

    def full_capacity(*args, **kwargs):
        kwargs.pop("dim", None)
        return fit_reward_model(*args[:13], **kwargs)  # the 14th positional argument is dim

    monkeypatch.setattr(sim.proxy, "fit_reward_model", full_capacity)
    held, t = sanity(NAME, tmp_path)
    assert not held


@pytest.mark.fault
def test_rm_scaling_fails_when_the_labels_are_shuffled(monkeypatch, tmp_path):
    """The fault: the teacher's preference labels are permuted across pairs (labels no longer follow returns)."""
    from sim.feedback.teachers import Teacher

    prefer = Teacher.prefer

    def shuffled(self, returns, myopic, i, j, rng):
        y, kept = prefer(self, returns, myopic, i, j, rng)
        return np.random.default_rng(0).permutation(y), kept

    monkeypatch.setattr(Teacher, "prefer", shuffled)
    held, t = sanity(NAME, tmp_path)
    assert not held
