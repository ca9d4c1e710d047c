"""Shared machinery for the claim tests (``tests/test_claims_*.py``): run a named experiment's sanity sweep in this
process (so a test can inject a simulator fault with ``monkeypatch``), and break or shuffle its table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments import catalog
from experiments.figures import figure_path, nonfinite, reproduce


def sanity(name: str, results: Path) -> tuple[bool, pd.DataFrame]:
    """Run the sanity sweep of ``name`` in this process (under whatever the test patched), draw it, check its claim.

    Returns:
        ``(claim held, the experiment's table)``.
    """
    held, table = reproduce(name, scale="sanity", check=True, jobs=1, results=results, here=True, draft=True)
    png = figure_path(name, "sanity", results)
    assert png.exists() and png.stat().st_size > 5_000  # a draft: the figure code ran (make sanity draws it in full)
    assert nonfinite(table) == []
    return held, table


def claim_holds(name: str, table: pd.DataFrame) -> bool:
    """Whether ``check`` accepts the table."""
    try:
        catalog.get(name).check(table)
    except AssertionError:
        return False
    return True


def shuffled(table: pd.DataFrame, outcomes: list[str], seed: int) -> pd.DataFrame:
    """The table with its outcome columns permuted together across rows (configurations keep their columns): a table
    of random outcomes, on which no claim about how outcomes depend on the configuration should hold."""
    perm = np.random.default_rng(seed).permutation(len(table))
    out = table.copy()
    out[outcomes] = table[outcomes].to_numpy()[perm]
    return out


def grouped(names) -> list:
    """``names`` as parameters that keep every test of one experiment on one xdist worker (``--dist loadgroup``), so
    each sanity sweep runs once per worker (the ``tables`` cache) instead of once on each."""
    return [pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in names]


def breaks_accepted(name: str, table: pd.DataFrame, breaks) -> list[str]:
    """The names of the table breaks (functions ``table -> table`` in which one part of the claim does not hold) whose
    broken table the check of ``name`` accepts: should be none."""
    return [broken.__name__ for broken in breaks if claim_holds(name, broken(table))]


def shuffles_accepted(name: str, table: pd.DataFrame, outcomes: list[str], n: int) -> list[int]:
    """The seeds (of ``n``) whose shuffled table (:func:`shuffled`) the check of ``name`` accepts: should be none."""
    return [seed for seed in range(n) if claim_holds(name, shuffled(table, outcomes, seed))]


def evaluate_the_proxy_as_the_oracle(monkeypatch) -> None:
    """A simulator fault: agents' curves evaluate the proxy where they should evaluate the oracle."""
    from sim.agents.base import AgentContext

    def evaluate(self, policy):
        ev = self.world.evaluate(policy, {"proxy": self.proxy})
        return {"oracle_return": ev["proxy"], "proxy_return": ev["proxy"], "kl_to_reference": ev["kl_to_reference"]}

    monkeypatch.setattr(AgentContext, "evaluate", evaluate)
