"""From configs and one seed to a :class:`Setup`: the world with its reference, the oracle and the reward channel.

One builder serves the run path and the gymnasium environments, so ``gymnasium.make`` with ``world_seed=k`` draws
exactly the world of ``python -m experiments.run seed=k`` with the same settings.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any

import numpy as np

from sim.config import Config, CorruptionConfig, EnvConfig, OracleConfig
from sim.corruption import Channel, build_channel
from sim.errors import ConfigError
from sim.features import check_templates
from sim.oracle import FORMS, Oracle, make_oracle, parse_kind
from sim.reference import REFERENCES, make_reference
from sim.worlds import World, bigram_uses, make_world
from sim.worlds import check as check_world

#: Independent random streams spawned from a run's seed, in this fixed order.
STREAMS = ("reference", "oracle", "corruption", "feedback", "agent")


def seed_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """One child ``SeedSequence`` per stream, so changing (say) the agent never changes the world."""
    return dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS)), strict=True))


@dataclass(eq=False)
class Setup:
    """Everything fixed before learning starts.

    Attributes:
        world: the world, with ``world.ref`` = pi_ref.
        oracle: the true reward.
        channel: the (possibly corrupted) reward the learner receives.
        reward_model: the fitted :class:`sim.reward_models.RewardModel` when the channel pays one (an env built with
            ``pipeline=rlhf``, :func:`sim.proxy.learned_setup`); ``None`` otherwise.
    """

    world: World
    oracle: Oracle
    channel: Channel
    reward_model: Any = None


def _plain(x: Any) -> Any:
    """Nested mappings and sequences (dicts, OmegaConf configs, config dataclasses) as plain dicts and lists."""
    if is_dataclass(x) and not isinstance(x, type):
        return asdict(x)
    if hasattr(x, "items"):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple) or (hasattr(x, "__len__") and hasattr(x, "__getitem__") and not isinstance(x, str)):
        return [_plain(v) for v in x]
    return x


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


#: The command line's own top-level keys (``experiments.config.CLIConfig``'s, and hydra's node): accepted in a
#: mapping given to :func:`config_from`, and ignored there (they build no world). Any other unknown key is refused.
CLI_KEYS = frozenset({"name", "scale", "save_arrays", "max_memory_gb", "hydra"})


def config_from(config: Any = None, extra: dict | None = None) -> Config:
    """A validated :class:`sim.config.Config` from a Config, or its nested mapping (keys left out keep the command
    line's defaults, which are the schema's), with ``extra`` merged on top.

    Raises:
        ConfigError: naming an unknown key or a value out of range.
    """
    base = _plain(config if config is not None else {})
    if not isinstance(base, dict):
        raise ConfigError(
            "config", config, "a sim.config.Config or a mapping of its keys (for the command line's presets and "
            "override strings pass experiments.config.compose_config([...]))"
        )  # fmt: skip
    tree = _merge(base, {k: v for k, v in _plain(extra or {}).items() if v not in ({}, None)})
    return _build(Config, tree, "")


def _build(schema: type, tree: dict, prefix: str):
    if not isinstance(tree, dict):
        raise ConfigError(prefix.rstrip(".") or "config", tree, "a mapping of keys")
    hints = typing.get_type_hints(schema)
    names = {f.name for f in fields(schema)}
    kwargs = {}
    for key, value in tree.items():
        if key not in names:
            if schema is Config and key in CLI_KEYS:
                continue  # the command line's own keys (name, scale, save_arrays, ...) do not build a world
            raise ConfigError(f"{prefix}{key}", value, f"keys of {schema.__name__}: {sorted(names)}")
        sub = hints[key]
        kwargs[key] = _build(sub, value, f"{prefix}{key}.") if is_dataclass(sub) else value
    return schema(**kwargs)


def oracle_kwargs(oracle: OracleConfig) -> dict:
    """The keyword arguments of :func:`sim.oracle.make_oracle` from the config."""
    return {
        "templates": oracle.templates,
        "scale": oracle.scale,
        "n_pairs": oracle.n_pairs,
        "pair_scale": oracle.pair_scale,
        "seq_noise": oracle.seq_noise,
        "target_length": oracle.target_length,
        "length_weight": oracle.length_weight,
        "repetition_weight": oracle.repetition_weight,
    }


def build_setup(
    env: EnvConfig,
    oracle: OracleConfig,
    corruption: CorruptionConfig | None = None,
    seed: int = 0,
    track_last_token: bool = True,
) -> Setup:
    """Build the world, its reference, the oracle and the channel; each draws from its own stream of ``seed``.

    Args:
        track_last_token: for a compressed world, whether its states keep the last token (needed when anything
            reads it: a bigram reference, oracle, reward model or feature; see :func:`sim.worlds.bigram_uses`).
    """
    streams = seed_streams(seed)
    world = make_world(env, track_last_token)
    world.ref = make_reference(world, env.reference, np.random.default_rng(streams["reference"]), env.ref_temperature)
    orc = make_oracle(world, oracle.kind, oracle.form, streams["oracle"], **oracle_kwargs(oracle))
    channel = build_channel(world, orc, corruption, streams["corruption"])
    return Setup(world=world, oracle=orc, channel=channel)


#: The most points of an optimisation-pressure path (``agent.path=true``): each is a solve of the whole world.
MAX_PATH_CHECKPOINTS = 1000


def _agent_keys(name: str) -> tuple[str, ...]:
    from sim.agents import agent_spec  # the registry imports the agents, which import this module

    try:
        return tuple(agent_spec(name).keys)
    except ConfigError:  # an unknown agent is refused elsewhere, naming agent.name
        return ()


def check_setup(
    env: EnvConfig,
    oracle: OracleConfig,
    corruption: CorruptionConfig,
    cfg: Config | None = None,
    agent_templates: tuple[str, ...] = (),
) -> bool:
    """Validate what builds the world (names, the world kind's capabilities, sizes) before anything is allocated.

    Returns:
        Whether anything reads the last token (a compressed world then keeps it in its states).

    Raises:
        ConfigError: naming the key that must change.

    Args:
        cfg: the whole run's config, when there is one (its pipeline and reward model matter to a compressed world).
        agent_templates: the feature templates the agent will use.
    """
    cfg = cfg or Config(env=env, oracle=oracle, corruption=corruption)
    parse_kind(oracle.kind)
    if oracle.form not in FORMS:
        raise ConfigError("oracle.form", oracle.form, f"one of {list(FORMS)}")
    check_templates(oracle.templates, "oracle.templates")
    if env.reference not in REFERENCES:
        raise ConfigError("env.reference", env.reference, f"one of {list(REFERENCES)}")
    if env.reference == "eos_hazard" and not env.eos:
        raise ConfigError("env.reference", env.reference, "eos_hazard needs env.eos=true")
    m = corruption.misspec
    # omit acts after the projection: on project_to's templates when there are some, else on the oracle's
    kept, whose = (list(m.project_to), "the projection's (corruption.misspec.project_to)") if m.project_to else (
        list(oracle.templates), "the oracle's linear part")  # fmt: skip
    for name in m.omit:
        if name not in kept:
            raise ConfigError("corruption.misspec.omit", name, f"templates of {whose} {kept}")
    if m.project_to:
        check_templates(m.project_to, "corruption.misspec.project_to")
    if agent_templates:
        check_templates(agent_templates, "agent.templates")
    a = cfg.agent
    if a.path and a.checkpoints > MAX_PATH_CHECKPOINTS and "path" in _agent_keys(a.name):
        raise ConfigError(
            "agent.checkpoints",
            a.checkpoints,
            f"<= {MAX_PATH_CHECKPOINTS} with agent.path=true (each point of the path is a solve of the whole world; "
            "a curve needs far fewer)",
        )
    check_world(cfg, agent_templates)
    return bool(bigram_uses(cfg, agent_templates))
