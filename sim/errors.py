"""Errors: bad input (:class:`ConfigError`, naming the key) and a run whose results cannot be trusted
(:class:`RunError`)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is out of its allowed range.

    Args:
        field: the dotted config key, e.g. ``"env.vocab_size"``.
        value: the offending value.
        allowed: a human-readable description of the allowed range, e.g. ``">= 2"``.
    """

    def __init__(self, field: str, value: object, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field} = {value!r} is invalid: allowed {allowed}")


def check(condition: bool, field: str, value: object, allowed: str) -> None:
    """Raise :class:`ConfigError` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, value, allowed)


class RunError(RuntimeError):
    """A run produced something that must not be recorded as a result (a non-finite metric, an optimiser that
    diverged). The message says what and, where it can, which key to change."""
