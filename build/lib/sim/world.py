"""A world: the text-MDP, its oracle, its reference policy and the reward channel the learner sees.

One builder serves the experiment runner and the gymnasium environments, so ``gymnasium.make`` with
``world_seed=k`` draws exactly the world of ``python -m experiments.run seed=k`` with the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import EnvConfig, OracleConfig
from sim.corruption import (
    CorruptionConfig,
    MisspecConfig,
    NoiseConfig,
    RewardChannel,
    SparsityConfig,
    build_channel,
)
from sim.errors import ConfigError
from sim.mdp import TextMDP
from sim.oracle import Oracle, make_oracle
from sim.reference import make_reference

#: Independent random streams spawned from a run's seed, in this fixed order.
STREAMS = ("reference", "oracle", "corruption", "feedback", "agent")


def seed_streams(seed: int) -> dict[str, np.random.SeedSequence]:
    """One child ``SeedSequence`` per stream, so changing (say) the agent never changes the world."""
    return dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS)), strict=True))


@dataclass(eq=False)
class World:
    """Everything fixed before learning starts.

    Attributes:
        mdp: the text-MDP.
        oracle: the true reward.
        ref_policy: pi_ref (S, A).
        channel: the (possibly corrupted) reward the learner receives.
    """

    mdp: TextMDP
    oracle: Oracle
    ref_policy: np.ndarray
    channel: RewardChannel


def build_world(
    env: EnvConfig, oracle: OracleConfig, corruption: CorruptionConfig | None = None, seed: int = 0
) -> World:
    """Build a world from validated configs; each part draws from its own stream of ``seed``."""
    streams = seed_streams(seed)
    mdp = TextMDP(env.n_prompts, env.vocab_size, env.horizon, env.eos)
    ref = make_reference(mdp, env.reference, np.random.default_rng(streams["reference"]), env.ref_temperature)
    orc = make_oracle(mdp, oracle.kind, oracle.form, streams["oracle"], **oracle_kwargs(oracle))
    channel = build_channel(mdp, orc, corruption, streams["corruption"])
    return World(mdp=mdp, oracle=orc, ref_policy=ref, channel=channel)


def oracle_kwargs(oracle: OracleConfig) -> dict:
    """The keyword arguments of :func:`sim.oracle.make_oracle` (and its compressed twin) from the config."""
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


def corruption_from_dict(d: dict | CorruptionConfig | None) -> CorruptionConfig:
    """A :class:`CorruptionConfig` from nested dicts such as ``{"noise": {"sigma": 0.5}}``."""
    if d is None or isinstance(d, CorruptionConfig):
        return d or CorruptionConfig()
    unknown = set(d) - {"sparsity", "noise", "misspec"}
    if unknown:
        raise ConfigError("corruption", sorted(unknown), "keys among sparsity, noise, misspec")
    return CorruptionConfig(
        sparsity=SparsityConfig(**d.get("sparsity", {})),
        noise=NoiseConfig(**d.get("noise", {})),
        misspec=MisspecConfig(**d.get("misspec", {})),
    )
