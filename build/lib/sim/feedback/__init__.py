"""Simulated human feedback: complete sequences, teachers, datasets."""

from __future__ import annotations

from sim.feedback.datasets import FeedbackData, collect, covered_prompts, preference_accuracy, sampling_probs
from sim.feedback.sequences import Sequences, SequenceSampler
from sim.feedback.teachers import Teacher, make_teacher

__all__ = [
    "FeedbackData",
    "SequenceSampler",
    "Sequences",
    "Teacher",
    "collect",
    "covered_prompts",
    "make_teacher",
    "preference_accuracy",
    "sampling_probs",
]
