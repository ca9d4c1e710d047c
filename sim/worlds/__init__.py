"""World kinds: one interface (:class:`sim.worlds.base.World`), two implementations.

``env.compressed`` picks the kind: the enumerated tree (``false``) or the compressed Markov world (``true``). Each
kind says, before any work, which settings it can carry (:func:`check`): a refusal names the key and why.
"""

from __future__ import annotations

from sim.worlds.base import LevelPolicy, Rows, Sequences, SequenceSource, Table, World
from sim.worlds.enumerated import EnumeratedWorld, enumerated_size, sequence_count
from sim.worlds.markov import FactoredReward, MarkovWorld

__all__ = [
    "EnumeratedWorld",
    "FactoredReward",
    "LevelPolicy",
    "MarkovWorld",
    "Rows",
    "SequenceSource",
    "Sequences",
    "Table",
    "World",
    "bigram_uses",
    "check",
    "kind_of",
    "make_world",
    "n_states",
    "sequence_total",
]

KINDS = {"enumerated": EnumeratedWorld, "markov": MarkovWorld}


def kind_of(env) -> str:
    """The world kind an :class:`sim.config.EnvConfig` asks for."""
    return "markov" if env.compressed else "enumerated"


def n_states(env, track_last_token: bool = True) -> float:
    """The number of states of the world ``env`` asks for, in closed form (nothing is built)."""
    if not env.compressed:
        return enumerated_size(env.n_prompts, env.vocab_size, env.horizon, env.eos)
    b = env.vocab_size - 1 if env.eos else env.vocab_size
    per_level = env.n_prompts * b if (track_last_token and env.horizon > 1) else env.n_prompts
    return float(env.n_prompts + (env.horizon - 1) * per_level)


def sequence_total(env) -> float | None:
    """The number of complete sequences of the world ``env`` asks for, where that world lists them, else None."""
    if env.compressed:
        return None
    return sequence_count(env.n_prompts, env.vocab_size, env.horizon, env.eos)


def make_world(env, track_last_token: bool = True) -> World:
    """An empty world (no reference yet) of the kind and size ``env`` asks for."""
    if env.compressed:
        return MarkovWorld(env.n_prompts, env.vocab_size, env.horizon, env.eos, track_last_token)
    return EnumeratedWorld(env.n_prompts, env.vocab_size, env.horizon, env.eos)


def bigram_uses(cfg, agent_templates=()) -> list[tuple[str, object]]:
    """The settings of a run that need the last token, as ``(key, value)``."""
    uses = []
    if cfg.env.reference == "bigram":
        uses.append(("env.reference", "bigram"))
    kinds = [k.strip() for k in cfg.oracle.kind.split("+")]
    if "stutter" in kinds:
        uses.append(("oracle.kind", cfg.oracle.kind))
    if ("linear" in kinds or "nonlinear" in kinds) and "bigram" in cfg.oracle.templates:
        uses.append(("oracle.templates", "bigram"))
    if cfg.pipeline == "rlhf" and cfg.reward_model.name == "linear" and "bigram" in cfg.reward_model.templates:
        uses.append(("reward_model.templates", "bigram"))
    if cfg.pipeline == "rlhf" and cfg.feedback.stutter_free:  # the filter reads the token just written
        uses.append(("feedback.stutter_free", True))
    if "bigram" in agent_templates:
        uses.append(("agent.templates", "bigram"))
    return uses


def check(cfg, agent_templates=()) -> None:
    """What the chosen world kind can carry (:meth:`World.check_config`), checked before anything is allocated.

    Args:
        cfg: a :class:`sim.config.Config`.
        agent_templates: the feature templates the agent will use.

    Raises:
        ConfigError: naming the key that must change.
    """
    KINDS[kind_of(cfg.env)].check_config(cfg, tuple(agent_templates))
