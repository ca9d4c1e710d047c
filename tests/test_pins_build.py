"""Pins of the setup builder (sim.build) against what it promises (mutation testing, issue #18).

``seed_streams`` is ``SeedSequence(seed).spawn(5)`` named in a fixed order; ``build_setup`` draws the reference, the
oracle and the channel each from its own stream; ``config_from`` merges nested mappings onto the schema's defaults
and refuses unknown keys by their dotted name; ``check_setup`` refuses what cannot be built, naming the key, and
says whether anything reads the last token.
"""

from __future__ import annotations

import numpy as np
import pytest

import sim.build as build_module  # its private helpers are pinned through the module
from sim.build import (
    CLI_KEYS,
    MAX_PATH_CHECKPOINTS,
    STREAMS,
    build_setup,
    check_setup,
    config_from,
    oracle_kwargs,
    seed_streams,
)
from sim.config import (
    AgentConfig,
    Config,
    CorruptionConfig,
    EnvConfig,
    MisspecConfig,
    NoiseConfig,
    OracleConfig,
    RewardModelConfig,
)
from sim.corruption import build_channel
from sim.errors import ConfigError
from sim.oracle import make_oracle
from sim.reference import make_reference
from sim.worlds import EnumeratedWorld, MarkovWorld


def _state(ss: np.random.SeedSequence) -> list[int]:
    return ss.generate_state(4).tolist()


def test_seed_streams_are_the_spawned_children_in_order():
    assert STREAMS == ("reference", "oracle", "corruption", "feedback", "agent")
    got = seed_streams(17)
    assert list(got) == list(STREAMS)
    kids = np.random.SeedSequence(17).spawn(5)
    assert [_state(got[k]) for k in STREAMS] == [_state(c) for c in kids]


def test_build_setup_draws_each_part_from_its_own_stream():
    env = EnvConfig(n_prompts=2, vocab_size=3, horizon=3, reference="softmax", ref_temperature=0.5)
    oracle = OracleConfig(kind="linear+length", templates=["unigram", "position"], scale=2.0, length_weight=0.5)
    corruption = CorruptionConfig(noise=NoiseConfig(sigma=0.3, mode="fixed"))
    setup = build_setup(env, oracle, corruption, seed=5)
    assert setup.reward_model is None
    world = EnumeratedWorld(2, 3, 3)
    streams = np.random.SeedSequence(5).spawn(5)
    ref = make_reference(world, "softmax", np.random.default_rng(streams[0]), 0.5)
    np.testing.assert_array_equal(setup.world.ref.values, ref.values)
    orc = make_oracle(world, "linear+length", "dense", streams[1], **oracle_kwargs(oracle))
    np.testing.assert_array_equal(setup.oracle.reward.values, orc.reward.values)
    channel = build_channel(world, orc, corruption, streams[2])
    np.testing.assert_array_equal(setup.channel.reward.values, channel.reward.values)
    assert not np.array_equal(channel.reward.values, orc.reward.values)  # the fixed error is really drawn
    # the defaults: seed 0, no corruption
    d = build_setup(env, oracle)
    s0 = np.random.SeedSequence(0).spawn(5)
    np.testing.assert_array_equal(
        d.world.ref.values, make_reference(world, "softmax", np.random.default_rng(s0[0]), 0.5).values
    )
    assert d.channel.exact


def test_build_setup_on_a_compressed_world_keeps_the_last_token_when_asked():
    env = EnvConfig(n_prompts=2, vocab_size=3, horizon=3, compressed=True)
    oracle = OracleConfig(kind="length")
    kept = build_setup(env, oracle)
    assert isinstance(kept.world, MarkovWorld) and kept.world.track
    assert not build_setup(env, oracle, track_last_token=False).world.track


def test_oracle_kwargs_passes_every_field():
    o = OracleConfig(
        templates=["prompt"], scale=1.5, n_pairs=7, pair_scale=0.25, seq_noise=0.125, target_length=3,
        length_weight=2.5, repetition_weight=0.75,
    )  # fmt: skip
    assert oracle_kwargs(o) == {
        "templates": ["prompt"],
        "scale": 1.5,
        "n_pairs": 7,
        "pair_scale": 0.25,
        "seq_noise": 0.125,
        "target_length": 3,
        "length_weight": 2.5,
        "repetition_weight": 0.75,
    }


class _ListLike:
    """A sequence that is neither a list nor a tuple (an OmegaConf ListConfig, say)."""

    def __init__(self, xs):
        self.xs = xs

    def __len__(self):
        return len(self.xs)

    def __getitem__(self, i):
        return self.xs[i]


def test_plain_and_merge():
    assert build_module._plain(EnvConfig(n_prompts=3))["n_prompts"] == 3
    assert build_module._plain(EnvConfig) is EnvConfig  # a class is not an instance
    assert build_module._plain({1: (2, [3, {"a": _ListLike([4, 5])}])}) == {"1": [2, [3, {"a": [4, 5]}]]}
    assert build_module._plain("abc") == "abc" and build_module._plain(2.5) == 2.5
    a = {"x": {"y": 1, "z": 2}, "w": 3, "v": {"u": 1}}
    assert build_module._merge(a, {"x": {"y": 5}, "w": {"q": 1}, "v": 4}) == {
        "x": {"y": 5, "z": 2},
        "w": {"q": 1},
        "v": 4,
    }
    assert a == {"x": {"y": 1, "z": 2}, "w": 3, "v": {"u": 1}}  # not changed in place


def test_config_from_merges_onto_the_defaults():
    assert config_from() == Config()
    cfg = config_from({"env": {"horizon": 3}, "seed": 4}, {"env": {"vocab_size": 5}, "oracle": {}, "pipeline": None})
    assert cfg.env == EnvConfig(horizon=3, vocab_size=5) and cfg.seed == 4 and cfg.pipeline == "direct"
    assert config_from(Config(seed=9), {"seed": 2}).seed == 2
    assert config_from(None, {"seed": 3}).seed == 3
    # the command line's own top-level keys are ignored there
    assert config_from({k: 1 for k in CLI_KEYS}) == Config()
    assert CLI_KEYS == {"name", "scale", "save_arrays", "max_memory_gb", "hydra"}
    assert config_from({"name": "x", "seed": 5, "hydra": {}}).seed == 5  # the keys after one are still read
    # an empty mapping or None in extra leaves the base as it is (even a bad one, refused by its name)
    _refused(lambda: config_from({"oracle": 3}, {"oracle": {}}), "oracle", 3, "a mapping of keys")


def _refused(fn, field, value, allowed=None):
    with pytest.raises(ConfigError) as err:
        fn()
    assert (err.value.field, err.value.value) == (field, value)
    if allowed is not None:
        assert err.value.allowed == allowed


def test_config_from_refusals_name_the_key():
    _refused(
        lambda: config_from(3),
        "config",
        3,
        "a sim.config.Config or a mapping of its keys (for the command line's presets and override strings pass "
        "experiments.config.compose_config([...]))",
    )
    names = sorted(f for f in EnvConfig.__dataclass_fields__)
    _refused(lambda: config_from({"env": {"size": 2}}), "env.size", 2, f"keys of EnvConfig: {names}")
    _refused(lambda: config_from({"env": {"name": 2}}), "env.name", 2)  # CLI keys only at the top
    _refused(lambda: config_from({"env": 3}), "env", 3, "a mapping of keys")
    _refused(lambda: config_from({"corruption": {"noise": [1]}}), "corruption.noise", [1], "a mapping of keys")
    _refused(lambda: build_module._build(Config, 4, ""), "config", 4, "a mapping of keys")


def _check(env=None, oracle=None, corruption=None, cfg=None, agent_templates=()):
    return check_setup(
        env or EnvConfig(), oracle or OracleConfig(), corruption or CorruptionConfig(), cfg, agent_templates
    )


def test_check_setup_refusals_name_the_key():
    _refused(lambda: _check(oracle=OracleConfig(kind="zipf")), "oracle.kind", "zipf")
    _refused(lambda: _check(oracle=OracleConfig(form="x")), "oracle.form", "x", "one of ['dense', 'sequence']")
    _refused(lambda: _check(oracle=OracleConfig(templates=["nope"])), "oracle.templates", "nope")
    _refused(
        lambda: _check(env=EnvConfig(reference="zipf")),
        "env.reference",
        "zipf",
        "one of ['uniform', 'softmax', 'eos_hazard', 'bigram']",
    )
    _refused(
        lambda: _check(env=EnvConfig(reference="eos_hazard", eos=False)),
        "env.reference",
        "eos_hazard",
        "eos_hazard needs env.eos=true",
    )
    assert _check(env=EnvConfig(reference="eos_hazard")) is True  # with EOS: accepted (bigram oracle template)
    assert _check(env=EnvConfig(reference="uniform", eos=False)) is True  # without EOS, other references are fine
    # omit: against the oracle's templates, or project_to's when there are some
    omit = CorruptionConfig(misspec=MisspecConfig(omit=["bigram"]))
    _check(corruption=omit)
    _refused(
        lambda: _check(oracle=OracleConfig(templates=["unigram", "position"]), corruption=omit),
        "corruption.misspec.omit",
        "bigram",
        "templates of the oracle's linear part ['unigram', 'position']",
    )
    proj = CorruptionConfig(misspec=MisspecConfig(omit=["bigram"], project_to=["unigram", "position"]))
    _refused(
        lambda: _check(corruption=proj),
        "corruption.misspec.omit",
        "bigram",
        "templates of the projection's (corruption.misspec.project_to) ['unigram', 'position']",
    )
    ok = CorruptionConfig(misspec=MisspecConfig(omit=["prompt"], project_to=["unigram", "prompt"]))
    _check(oracle=OracleConfig(templates=["unigram"]), corruption=ok)
    bad = CorruptionConfig(misspec=MisspecConfig(project_to=["unigram", "nope"]))
    _refused(lambda: _check(corruption=bad), "corruption.misspec.project_to", "nope")
    _refused(lambda: _check(agent_templates=("position", "nope")), "agent.templates", "nope")


def test_check_setup_caps_the_path_checkpoints_of_agents_that_draw_a_path():
    assert MAX_PATH_CHECKPOINTS == 1000

    def cfg(**kw):
        return Config(agent=AgentConfig(**kw))

    c = cfg(name="soft_planner", path=True, checkpoints=1001)
    _refused(
        lambda: _check(cfg=c),
        "agent.checkpoints",
        1001,
        "<= 1000 with agent.path=true (each point of the path is a solve of the whole world; a curve needs far fewer)",
    )
    _check(cfg=cfg(name="soft_planner", path=True, checkpoints=1000))
    _check(cfg=cfg(name="soft_planner", path=False, checkpoints=5000))
    _check(cfg=cfg(name="q_learning", path=True, checkpoints=5000))  # no path key: the setting is not read
    _check(cfg=cfg(name="no_such_agent", path=True, checkpoints=5000))  # refused elsewhere, by agent.name


def test_check_setup_says_whether_the_last_token_is_read():
    assert _check() is True  # the oracle's linear part has the bigram template
    plain = OracleConfig(templates=["unigram", "position"])
    assert _check(oracle=plain) is False
    assert _check(oracle=plain, agent_templates=("bigram",)) is True
    assert _check(env=EnvConfig(reference="bigram"), oracle=plain) is True
    # the whole config decides when given: an rlhf reward model with the bigram template reads it
    rm = Config(oracle=plain, pipeline="rlhf", reward_model=RewardModelConfig(templates=["bigram"]))
    assert _check(oracle=plain, cfg=rm) is True
    # the world kind's own check runs (a compressed world refuses a per-prefix family)
    env = EnvConfig(compressed=True)
    _refused(lambda: _check(env=env, oracle=OracleConfig(kind="nonlinear")), "oracle.kind", "nonlinear")
    assert _check(env=env, oracle=plain) is False
    # without a whole config, the one built from env, oracle and corruption is checked (the corruption too)
    exploit = CorruptionConfig(misspec=MisspecConfig(exploit=0.5))
    _refused(lambda: _check(env=env, oracle=plain, corruption=exploit), "corruption.misspec.exploit", 0.5)
    _check(oracle=plain, corruption=exploit)  # an enumerated world carries it
