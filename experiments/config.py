"""The command line's config: a run's :class:`sim.config.Config` plus the keys that only the command line reads."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import re
import typing
from dataclasses import dataclass, fields, is_dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments import parse_overrides
from sim.config import Config
from sim.errors import ConfigError, check
from sim.run import check as check_run


@dataclass
class CLIConfig(Config):
    """One run of the command line."""

    name: str = "adhoc"
    """The experiment's name: sweeps are written to results/sweeps/<name>/<timestamp>/."""
    scale: str = "paper"
    """paper or sanity (named experiments shrink at sanity scale)."""
    save_arrays: bool = False
    """Write arrays.npz: every [S, A] table of the run (enumerated worlds)."""
    max_memory_gb: float | None = None
    """Refuse, before any work, a run whose estimated peak memory is above this (default: 80% of what is free)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.scale in ("paper", "sanity"), "scale", self.scale, "paper or sanity")
        check(
            isinstance(self.name, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*", self.name) is not None,
            "name",
            self.name,
            "one directory name of letters, digits and _ . + = - (sweeps go to results/sweeps/<name>/; name=../x "
            "would write outside results/)",
        )
        check(
            self.max_memory_gb is None or (0 < self.max_memory_gb < float("inf")),
            "max_memory_gb",
            self.max_memory_gb,
            "null (80% of the free memory) or a finite number of GB > 0",
        )


ConfigStore.instance().store(name="base_config", node=CLIConfig)

#: Keys that do not change a run's results: a sweep resumed under another memory limit is the same sweep.
NOT_RESULTS = ("max_memory_gb",)


def config_digest(config: CLIConfig) -> str:
    """A fingerprint of everything that decides a run's results: the first 16 hex digits of the SHA-256 of the
    validated config as sorted JSON, without :data:`NOT_RESULTS`. ``metrics.json`` records it (``config_digest``), so
    a finished run whose job's config has changed since (an edited experiment file, a new default) is recognised as
    stale instead of being resumed as finished."""
    record = dataclasses.asdict(config)
    for key in NOT_RESULTS:
        record.pop(key, None)
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def is_stale(record: dict, config: CLIConfig) -> bool:
    """Whether a finished run's ``metrics.json`` (``record``) was computed for another config than ``config``. A
    record without a digest (written before digests existed) is taken as current."""
    return "config_digest" in record and record["config_digest"] != config_digest(config)


def memory_limit_gb(setting: float | None) -> float:
    """``max_memory_gb``, or by default 80% of the memory free now (``MemAvailable`` in /proc/meminfo)."""
    if setting is not None:
        return setting
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return 0.8 * float(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    from sim.resources import default_limit_gb

    return default_limit_gb()


@functools.cache
def _type_hints(schema: type) -> dict[str, object]:
    """``typing.get_type_hints`` of a schema dataclass, evaluated once per process (its string annotations compile
    each time: about half of validating a job's config). Read it; do not modify it."""
    return typing.get_type_hints(schema)


def unknown_keys(cfg: DictConfig, schema: type = CLIConfig, prefix: str = "") -> list[tuple[str, object, str]]:
    """Keys of ``cfg`` that the schema does not have (``+foo=1`` and ``+agent.bta=1`` add them without complaint),
    as ``(key, value, hint)``."""
    names = {f.name: f for f in fields(schema)}
    hints = _type_hints(schema)
    out = []
    for key in cfg:
        if key == "hydra":
            continue
        path = f"{prefix}{key}"
        if key not in names:
            near = difflib.get_close_matches(str(key), list(names), n=1)
            value = OmegaConf.select(cfg, str(key), throw_on_missing=False)
            out.append((path, value, f"; did you mean {prefix}{near[0]}?" if near else ""))
            continue
        sub = hints[key]
        if is_dataclass(sub) and isinstance(cfg[key], DictConfig):
            out += unknown_keys(cfg[key], sub, f"{path}.")
    return out


def bool_keys(schema: type = CLIConfig, prefix: str = "") -> set[str]:
    """The dotted keys whose type is ``bool``."""
    hints = _type_hints(schema)
    out: set[str] = set()
    for f in fields(schema):
        t = hints[f.name]
        if t is bool:
            out.add(prefix + f.name)
        elif is_dataclass(t):
            out |= bool_keys(t, f"{prefix}{f.name}.")
    return out


BOOL_KEYS = bool_keys()


def check_overrides(overrides: list[str]) -> None:
    """What hydra lets through but rmsim refuses: a boolean key given anything but true or false (hydra reads
    ``save_arrays=2`` as true).

    Raises:
        ConfigError: naming the key.
    """
    for o in parse_overrides(overrides):
        key = o.key_or_group.lstrip("+~")
        if key in BOOL_KEYS and not o.is_sweep_override():
            value = o.value()
            check(isinstance(value, bool), key, value, "true or false")
        elif key in BOOL_KEYS:
            for value in o.sweep_iterator():
                check(isinstance(value, bool), key, value, "true or false")


def validate_object(cfg: DictConfig, overrides: list[str] | None = None) -> CLIConfig | str:
    """The checked :class:`CLIConfig`, or the error message naming the key, the value and the allowed range.

    Checks the schema (no unknown keys, types, ranges; booleans only true or false when ``overrides`` are given) and
    then, before any work, everything the registries know: the agent and what it can do, the world kind's
    capabilities, names of templates, families and references, sizes.
    """
    try:
        extra = unknown_keys(cfg)
        if extra:
            key, value, hint = extra[0]
            raise ConfigError(key, value, f"only the keys of rmsim's schema (there is no {key}{hint})")
        if overrides:
            check_overrides(overrides)
        config = OmegaConf.to_object(cfg)
        check_run(config, memory_limit_gb(config.max_memory_gb))  # type: ignore[arg-type, union-attr]
        check(
            not config.save_arrays or not config.env.compressed,  # type: ignore[union-attr]
            "save_arrays",
            True,
            "false on a compressed world (env.compressed=true): its states are never enumerated",
        )
        return config  # type: ignore[return-value]
    except ConfigError as e:
        return str(e)
    except OmegaConfBaseException as e:  # a ConfigError raised inside a dataclass arrives wrapped
        cause = e.__cause__ or e.__context__
        if isinstance(cause, ConfigError):
            return str(cause)
        # OmegaConf's own refusal, e.g. an interpolation that does not resolve (agent.beta=${oc.env:HOME}): name the key
        key = str(getattr(e, "full_key", None) or "config")
        raw = _raw(cfg, key)
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        return str(ConfigError(key, raw, f"a value that resolves to the key's type ({why})"))


def _raw(cfg: DictConfig, key: str) -> object:
    """The unresolved value of ``key`` (an interpolation's text), or None."""
    node = cfg
    try:
        for part in key.split("."):  # OmegaConf's public API would resolve what we want to show raw
            node = node._get_node(part)  # type: ignore[union-attr]  # noqa: SLF001
        return node._value()  # type: ignore[union-attr]  # noqa: SLF001
    except (OmegaConfBaseException, AttributeError, KeyError, TypeError):
        return None


#: Delivery settings a learner receives; in the rlhf pipeline the agent learns from the reward model instead.
DELIVERY = ("corruption.sparsity.mode", "corruption.sparsity.chunk", "corruption.noise.sigma", "corruption.noise.drop")
#: Settings of active query selection: they apply only with an active ``feedback.query``.
QUERY_KEYS = ("feedback.query_rounds", "feedback.query_pool", "feedback.query_ensemble")
#: The tail index each heavy-tailed error law reads.
TAIL_INDEX = {"corruption.noise.df": "student_t", "corruption.noise.alpha": "pareto"}


def inapplicable(config: CLIConfig, overrides: list[str]) -> list[str]:
    """One line per override that cannot change this run (a sweep over agents stays legal: these are warnings).

    Args:
        config: the validated config.
        overrides: the run's overrides (``key=value`` strings; group choices such as ``agent=dpo`` are not judged).
    """
    from sim.agents import agent_spec

    spec = agent_spec(config.agent.name)
    out = []
    for o in parse_overrides(overrides):
        key = o.key_or_group.lstrip("+~")
        head, _, rest = key.partition(".")
        if not rest:
            continue
        if head == "agent" and rest not in (*spec.keys, "name"):
            reads = ", ".join(f"agent.{k}" for k in spec.keys) or "no agent.* key"
            out.append(f"{key} does not apply to agent={config.agent.name} (it reads {reads})")
        elif head in ("feedback", "reward_model") and config.pipeline != "rlhf":
            out.append(f"{key} does not apply to pipeline={config.pipeline} (only pipeline=rlhf has feedback)")
        elif key in ("reward_model.objective", "reward_model.uwo_lambda") and config.reward_model.ensemble < 2:
            out.append(f"{key} does not apply to reward_model.ensemble={config.reward_model.ensemble} (a single model: "
                       "every objective is the model itself)")  # fmt: skip
        elif key in QUERY_KEYS and config.feedback.query == "random":
            out.append(f"{key} does not apply to feedback.query=random (the source's own pairs are labelled)")
        elif key == "feedback.query_ensemble" and config.feedback.query != "disagreement":
            out.append(f"{key} does not apply to feedback.query={config.feedback.query} (only disagreement fits an "
                       "ensemble)")  # fmt: skip
        elif key in TAIL_INDEX and config.corruption.noise.dist != TAIL_INDEX[key]:
            out.append(f"{key} does not apply to corruption.noise.dist={config.corruption.noise.dist} (only "
                       f"{TAIL_INDEX[key]} reads it)")  # fmt: skip
        elif config.pipeline == "rlhf" and (key in DELIVERY or (head == "corruption" and rest == "sparsity.budget")):
            out.append(f"{key} does not apply to pipeline=rlhf (it shapes how a learner is paid; here the agent learns "
                       "from the reward model, and the annotators judge expected returns)")  # fmt: skip
    return out


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> CLIConfig:
    """The command line's validated config for a list of override strings, e.g. ``["env=medium", "seed=3"]``: the
    same config ``python -m experiments.run env=medium seed=3`` runs (for gymnasium envs and notebooks).

    Raises:
        ConfigError: naming the key, for a value out of range (hydra's own errors for an unknown preset).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from experiments.callbacks import CONFIGS

    overrides = list(overrides)
    if GlobalHydra.instance().is_initialized():  # inside a hydra app or another initialize: compose directly
        cfg = compose(config_name="config", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    checked = validate_object(cfg, overrides)
    if isinstance(checked, str):
        key, _, rest = checked.partition(" = ")
        raise ConfigError(key, rest.partition(" is invalid")[0], rest.partition("allowed ")[2] or checked)
    return checked
