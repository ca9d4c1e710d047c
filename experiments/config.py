"""The command line's config: a run's :class:`sim.config.Config` plus the keys that only the command line reads."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

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

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.scale in ("paper", "sanity"), "scale", self.scale, "paper or sanity")


ConfigStore.instance().store(name="base_config", node=CLIConfig)


def validate_object(cfg: DictConfig) -> CLIConfig | str:
    """The checked :class:`CLIConfig`, or the error message naming the key, the value and the allowed range.

    Checks the schema (types, ranges) and then, before any work, everything the registries know: the agent and
    what it can do, the world kind's capabilities, names of templates, families and references, sizes.
    """
    try:
        config = OmegaConf.to_object(cfg)
        check_run(config)  # type: ignore[arg-type]
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
        if not isinstance(cause, ConfigError):
            raise
        return str(cause)
