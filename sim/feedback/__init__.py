"""Simulated human feedback: teachers and datasets over any world's sequences."""

from __future__ import annotations

from sim.feedback.active import QUERY_RULES, QueryModel, check_query, collect_active
from sim.feedback.datasets import (
    FeedbackData,
    collect,
    covered_prompts,
    preference_accuracy,
    sample_items,
    stutter_free,
)
from sim.feedback.teachers import Teacher, make_teacher

__all__ = [
    "QUERY_RULES",
    "FeedbackData",
    "QueryModel",
    "Teacher",
    "check_query",
    "collect",
    "collect_active",
    "covered_prompts",
    "make_teacher",
    "preference_accuracy",
    "sample_items",
    "stutter_free",
]
