"""Named experiments (the bsuite shape): each module here pairs with ``configs/experiment/<name>.yaml``.

A module defines ``TABLE`` (``"runs"``: one row per run, or ``"curves"``: one row per learning-curve point),
``CLAIM`` (one sentence), ``plot(table, ax=None)`` (means with 95% bootstrap confidence intervals over seeds;
it creates its own figure when ``ax`` is None and returns the axes it drew on) and ``check(table)``, which
asserts the claim with a statistical test and raises ``AssertionError`` (with the numbers) when it fails.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = (
    "label_noise",
    "feedback_budget",
    "reward_sparsity",
    "misspecification",
    "overoptimization",
    "regressional_control",
    "goodhart_prevalence",
    "rlhf_vs_rlfree",
    "tabular_vs_linear",
    "scale_overoptimization",
    "pessimism",
    "deterministic_preferences",
    "ranking_efficiency",
    "kl_penalty",
    "phase_transition",
    "early_stopping",
    "heavy_tails",
    "heavy_tails_scale",
    "ensembles",
    "active_queries",
    "rm_scaling",
)


def get(name: str) -> ModuleType:
    """The catalog module of experiment ``name``."""
    if name not in NAMES:
        raise KeyError(f"unknown experiment {name!r}; choose from {list(NAMES)}")
    return importlib.import_module(f"experiments.catalog.{name}")
