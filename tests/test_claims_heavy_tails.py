"""Claims of the named experiments heavy_tails (Kwa et al. 2024, catastrophic Goodhart; one error per sequence on an
enumerated world) and heavy_tails_scale (the same check; one error per state and token on a compressed world): each
sanity sweep reproduces the claim; the check fails on tables where one part of the claim does not hold, on tables of
shuffled outcomes, and (``make faults``) on the sanity sweep of a simulator whose noise ignores
``corruption.noise.dist``."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import catalog
from experiments.catalog.heavy_tails import tails
from tests.claims import breaks_accepted, grouped, sanity, shuffles_accepted

#: Both experiments share heavy_tails' check; each one's tests stay on one xdist worker (make test: --dist loadgroup).
NAMES = ["heavy_tails", "heavy_tails_scale"]
#: What each run measured (configuration columns, seeds, betas and the world's constants stay with their rows).
OUTCOMES = ["oracle_return", "proxy_return", "kl_to_reference"]
#: The check needs five tests at p < 0.01 at once: a check that accepted random outcomes with probability q >= 0.3
#: would accept at least one of 10 shuffles with probability 1 - 0.7^10 = 97%.
SHUFFLES = 10


def _like_the_gaussian(t, which, columns):
    """The table with the rows of the tails ``which`` (a boolean mask over tails) given the gaussian's outcomes of the
    same seed and beta: those tails now behave like light-tailed error."""
    tl = tails(t)
    key = ["seed", "beta"]
    light = t[tl["dist"] == "gaussian"].set_index(key)[columns]
    out = t.copy()
    rows = which(tl).to_numpy()
    idx = t.loc[rows, key].apply(tuple, axis=1)
    out.loc[rows, columns] = light.loc[list(idx)].to_numpy()
    return out


# Tables in which one part of the claim does not hold, made from the real sanity table.
def _heavy_keeps_the_oracle_gain(t):  # heavy-tailed error gains as much oracle return as gaussian error
    return _like_the_gaussian(t, lambda tl: tl["heavy"], ["oracle_return", "reference_return", "optimal_return"])


def _heavy_proxy_does_not_run_away(t):  # the proxy rises no more than under gaussian error
    return _like_the_gaussian(t, lambda tl: tl["heavy"], ["proxy_return", "reference_proxy_return", "kl_to_reference"])


def _variance_not_tail_matters(t):  # the equal-variance heavy tails (t, df > 2) behave like the gaussian
    return _like_the_gaussian(
        t, lambda tl: (tl["dist"] == "student_t") & (tl["index"] > 2), ["oracle_return", "proxy_return"]
    )


def _gaussian_gains_nothing(t):  # light-tailed error loses its oracle gain too
    g = (tails(t)["dist"] == "gaussian").to_numpy()
    return t.assign(oracle_return=np.where(g, t["reference_return"], t["oracle_return"]))


BREAKS = [_heavy_keeps_the_oracle_gain, _heavy_proxy_does_not_run_away, _variance_not_tail_matters,
          _gaussian_gains_nothing]  # fmt: skip


@pytest.fixture(params=grouped(NAMES))
def name(request):
    return request.param


@pytest.fixture
def table(tables, name):
    held, t = tables(name)
    assert held
    return t


def test_sanity_sweep_reproduces_the_claim_and_the_check_can_fail(name, table):
    catalog.get(name).check(table)
    assert breaks_accepted(name, table, BREAKS) == []


def test_check_fails_on_shuffled_outcomes(name, table):
    passed = shuffles_accepted(name, table, OUTCOMES, SHUFFLES)
    assert passed == [], f"{name}: the check accepts shuffled outcomes (shuffle seeds {passed})"


@pytest.mark.fault
def test_heavy_tails_fails_when_the_noise_ignores_its_distribution(name, monkeypatch, tmp_path):
    """The fault: every fixed error is drawn gaussian whatever ``corruption.noise.dist`` says (a dropped argument)."""
    import sim.corruption.channel as channel

    monkeypatch.setattr(channel, "fixed_errors", lambda rng, n, sigma, *args: rng.normal(0.0, sigma, size=n))
    held, t = sanity(name, tmp_path)
    heavy = tails(t)["heavy"].to_numpy()
    assert t.loc[heavy, "proxy_return"].max() < 1e3 and not held
