"""Claim of the named experiment active_queries (entropy selection needs fewer labels than random selection): its
sanity sweep reproduces the claim; its check fails on tables where one part of the claim does not hold, on tables of
shuffled outcomes, and (``make faults``) on the sanity sweep of a simulator whose selection ignores its scores."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import catalog
from tests.claims import breaks_accepted, sanity, shuffles_accepted

NAME = "active_queries"
pytestmark = pytest.mark.xdist_group(NAME)  # one worker runs its sanity sweep (make test: --dist loadgroup)
#: What each run measured (the rule, N and seed stay with their rows).
OUTCOMES = ["normalized_gap", "gap", "oracle_return", "reward_distance"]
#: The check needs two tests at p < 0.01 at once (random's gap falls with N; entropy's efficiency exceeds 1.3): a
#: check that accepted random outcomes with probability q >= 0.3 would accept one of 10 shuffles with probability 97%.
SHUFFLES = 10


def _as(t, rule, source):
    """The table with ``rule``'s outcomes replaced by ``source``'s of the same seed and N."""
    key = ["seed", "feedback.n"]
    src = t[t["feedback.query"] == source].set_index(key)[OUTCOMES]
    out = t.copy()
    rows = (t["feedback.query"] == rule).to_numpy()
    idx = list(t.loc[rows, key].apply(tuple, axis=1))
    out.loc[rows, OUTCOMES] = src.loc[idx].to_numpy()
    return out


# Tables in which one part of the claim does not hold, made from the real sanity table.
def _entropy_is_random(t):  # entropy selection does exactly what random selection does
    return _as(t, "entropy", "random")


def _entropy_and_random_swapped(t):  # entropy selection is the worse one
    out = _as(t, "entropy", "random")
    rnd = (t["feedback.query"] == "random").to_numpy()
    out.loc[rnd, OUTCOMES] = _as(t, "random", "entropy").loc[rnd, OUTCOMES]
    return out


def _random_does_not_learn(t):  # random selection's gap does not fall with N: there is no curve to compare with
    first = t[t["feedback.n"] == t["feedback.n"].min()].set_index(["seed", "feedback.query"])["normalized_gap"]
    idx = list(t[["seed", "feedback.query"]].apply(tuple, axis=1))
    rnd = (t["feedback.query"] == "random").to_numpy()
    return t.assign(normalized_gap=np.where(rnd, first.loc[idx].to_numpy(), t["normalized_gap"]))


def _entropy_gains_a_little(t):  # entropy needs only 10% fewer labels than random: below the claimed effect
    out = _as(t, "entropy", "random")
    rows = out["feedback.query"] == "entropy"
    return out.assign(normalized_gap=np.where(rows, 0.97 * out["normalized_gap"], out["normalized_gap"]))


BREAKS = [_entropy_is_random, _entropy_and_random_swapped, _random_does_not_learn, _entropy_gains_a_little]


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
def test_active_queries_fails_when_selection_ignores_its_scores(monkeypatch, tmp_path):
    """The fault: the scorer returns zeros (a rule whose uncertainty is never computed), so every active round labels
    the first candidates the source drew, which is random selection again."""
    import sim.feedback.active as active

    monkeypatch.setattr(active.QueryModel, "scores", lambda self, query, data, Z, ensemble, rng: np.zeros(Z.shape[0]))
    held, t = sanity(NAME, tmp_path)
    assert set(t["feedback.query"]) == {"random", "entropy"} and not held
