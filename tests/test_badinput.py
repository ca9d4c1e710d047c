"""Defects found by the bad-input sweep (``tools/badinput.py``, #15), one test each with the exact input.

Each input used to end in a traceback, or to run and record something wrong; now it is refused before any work with
rmsim's message naming the key. The sweep itself (several hundred inputs, each in its own process) is a tool, not a
test: ``.venv/bin/python tools/badinput.py`` writes ``results/badinput.json``.
"""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import sim  # (registers the gymnasium ids)
from experiments.config import validate_object
from sim.config import MAX_TOL, PRIOR_RANGE, RewardModelConfig
from sim.errors import ConfigError
from tests.test_cli import ROOT

CONFIGS = ROOT / "configs"
RLHF = ("env=tiny", "pipeline=rlhf", "feedback.n=200", "feedback.n_eval=200")


def _validate(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return validate_object(compose(config_name="config", overrides=list(overrides)), list(overrides))


def _refused(result, key: str) -> str:
    assert isinstance(result, str), "accepted"
    assert result.startswith(f"{key} = "), result
    return result


@pytest.mark.parametrize("override", ["reward_model.prior_scale=1e-300", "reward_model.prior_scale=1e300"])
def test_the_prior_scales_reported_in_issue_15_are_refused(override):
    # were ZeroDivisionError (1e-300 squares to 0) and OverflowError (1e300 squared) in bt_objective
    assert "[1e-06, 1e+06]" in _refused(_validate(*RLHF, override), "reward_model.prior_scale")


def test_prior_and_rating_scales_that_square_to_zero_or_overflow_are_refused():
    # reward_model.rating_sigma=1e-300 / 1e300 with feedback=ratings: ZeroDivisionError / OverflowError in fit_ratings
    for key in ("prior_scale", "rating_sigma"):
        for value in (1e-300, 1e300, 0.999e-6, 1.001e6):
            with pytest.raises(ConfigError) as err:
                RewardModelConfig(**{key: value})
            assert err.value.field == f"reward_model.{key}"
        for value in PRIOR_RANGE:
            RewardModelConfig(**{key: value})


def test_the_ends_of_the_prior_range_fit_and_give_finite_results():
    """s and sigma at both ends of their range, on the fits they enter (BT, ratings, Laplace pessimism)."""
    from experiments.config import compose_config
    from sim.run import CORE_METRICS, run

    lo, hi = PRIOR_RANGE
    for extra in (
        (f"reward_model.prior_scale={lo:g}", "reward_model.pessimism=1"),
        ("feedback=ratings", f"reward_model.prior_scale={hi:g}", f"reward_model.rating_sigma={lo:g}"),
    ):
        metrics = run(compose_config([*RLHF, *extra])).metrics
        assert all(math.isfinite(metrics[k]) for k in CORE_METRICS), extra


def test_a_tolerance_that_leaves_the_reward_model_unfitted_is_refused():
    # reward_model.tol=1e300 used to stop L-BFGS at theta = 0 and record accuracy 0.5 with a proxy identically 0
    assert f"(0, {MAX_TOL:g}]" in _refused(_validate(*RLHF, "reward_model.tol=1e300"), "reward_model.tol")
    assert RewardModelConfig(tol=MAX_TOL).tol == MAX_TOL


@pytest.mark.parametrize(
    "override",
    ["agent.beta=${oc.env:HOME}", "agent.beta=${agent.nonexistent}"],
)
def test_an_interpolation_that_does_not_resolve_names_its_key(override):
    # each used to escape as an OmegaConf exception (a traceback, exit 1)
    result = _refused(_validate("env=tiny", override), "agent.beta")
    assert override.partition("=")[2] in result  # the raw text the user typed


@pytest.mark.parametrize("name", ["../../escape", ""])
def test_an_experiment_name_that_is_not_one_directory_name_is_refused(name):
    # sweeps go to results/sweeps/<name>/: name=../../escape wrote outside results/
    _refused(_validate("env=tiny", f"name='{name}'"), "name")


@pytest.mark.parametrize(
    "kwargs, key",
    [({"n_prompts": True}, "env.n_prompts"), ({"eos": "yes"}, "env.eos"), ({"horizon": 2.5}, "env.horizon")],
)
def test_gym_env_keyword_arguments_of_the_wrong_type_are_refused(kwargs, key):
    # gym.make(..., n_prompts=True) built a 1-prompt world; eos="yes" an EOS world: both silently
    with pytest.raises(ConfigError) as err:
        gym.make("rmsim/TextMDP-v0", **{"n_prompts": 2, "vocab_size": 4, "horizon": 3, **kwargs})
    assert err.value.field == key


# ------------------------------------------------------------------------------ the remaining defects of the sweep
def _sweep_config(*overrides: str):
    """A sweep's composed config, as the sweep callback receives it (``hydra.overrides.task`` = the command line)."""
    from omegaconf import open_dict

    cfg = compose(config_name="config", overrides=["env=tiny"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.overrides.task = ["env=tiny", *overrides]
    return cfg


def test_feedback_sigma_and_annotators_beyond_their_range_are_refused():
    # sigma=1e300: OverflowError in reward_distance; annotators=1e12: a hang drawing each annotator's weights
    from sim.config import FeedbackConfig

    for kwargs, key in (({"sigma": 1e300}, "feedback.sigma"), ({"annotators": 10**12}, "feedback.annotators")):
        with pytest.raises(ConfigError) as err:
            FeedbackConfig(**kwargs)
        assert err.value.field == key
    assert "feedback.n=200" in str(_refused(_validate(*RLHF, "feedback.annotators=1000000000000"),
                                             "feedback.annotators"))  # fmt: skip
    assert FeedbackConfig(sigma=1e6, annotators=1000, n=1000).annotators == 1000  # the ends of the ranges are legal


def test_reward_distance_of_enormous_returns_is_finite():
    # scale**2 of a float near 1e300 raised OverflowError; scale * scale is inf, and the distance stays defined
    from sim.metrics import reward_distance

    big = np.array([1e300, -1e300, 5e299, 0.0])
    d = reward_distance(big, big[::-1].copy(), np.ones(4), np.zeros(4, dtype=np.int64))
    assert math.isfinite(d) and 0 <= d <= 1


@pytest.mark.parametrize("extra", [("feedback.equal=1e300",), ("feedback.n=1", "feedback.equal=100")])
def test_a_tie_threshold_that_makes_every_label_a_tie_is_refused(extra):
    # every label 1/2: the fit stayed at theta = 0 (accuracy 0.5, proxy identically 0) and was recorded as finished
    from experiments.config import compose_config
    from sim.run import run

    with pytest.raises(ConfigError) as err:
        run(compose_config([*RLHF, *extra]))
    assert err.value.field == "feedback.equal" and "unequal" in str(err.value)


@pytest.mark.parametrize("override, key", [("save_arrays=false,2", "save_arrays"), ("env.eos=true,yes", "env.eos")])
def test_a_sweep_value_that_is_not_a_boolean_is_refused_before_launch(override, key):
    # validate_jobs did not pass the job's overrides: 2 and 'yes' were read as true and job 1 ran before job 2 failed
    from experiments.callbacks import validate_jobs

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        n, error = validate_jobs(_sweep_config(override))
    assert n == 2 and error is not None and f"{key} = " in error and "true or false" in error


@pytest.mark.parametrize(
    "argv, named",
    [
        (["~agent.beta"], "agent.beta"),
        (["agent.beta"], "agent.beta"),
        (["-m", "seed="], "seed"),
        (["-m", "seed=0,,1"], "seed=0,,1"),
        (["-m", "seed=choice()"], "seed=choice()"),
        (["-m", "hydra/launcher=bogus"], "hydra/launcher/bogus"),
    ],
)
def test_malformed_overrides_get_rmsims_exit_code_and_name_the_override(argv, named, capsys):
    # each exited 1 with hydra's own error (and its HYDRA_FULL_ERROR hint)
    from experiments.run import prevalidate

    with pytest.raises(SystemExit) as exit_:
        prevalidate(["env=tiny", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("rmsim: invalid config: ") and named in err


def test_a_well_formed_sweep_and_hydras_own_flags_pass_prevalidation():
    from experiments.run import prevalidate

    assert prevalidate(["-m", "env=tiny", "agent.beta=0.1,0.2", "seed=range(0,3)", "hydra.sweep.dir=/x"]) is None
    assert prevalidate(["--cfg", "job", "agent.beta"]) is None  # hydra's business: it prints its own message


def test_omit_outside_project_to_is_refused_before_work():
    # passed validation (omit was checked against the oracle's templates) and failed at run time in every job
    _refused(_validate("env=tiny", "corruption.misspec.project_to=[position]", "corruption.misspec.omit=[unigram]"),
             "corruption.misspec.omit")  # fmt: skip
    ok = _validate("env=tiny", "corruption.misspec.project_to=[unigram,position]", "corruption.misspec.omit=[unigram]")
    assert not isinstance(ok, str), ok


@pytest.mark.parametrize(
    "overrides, key",
    [
        (("env.n_prompts=1000000000000",), "env.n_prompts"),  # was blamed on env.vocab_size
        (("env.vocab_size=2", "env.horizon=1000000000000"), "env.horizon"),
        (("env.vocab_size=100000",), "env.vocab_size"),
        (("pipeline=rlhf", "reward_model.ensemble=1000000000000"), "reward_model.ensemble"),  # blamed on templates
        (("env=large", "env.n_prompts=1000000000"), "env.n_prompts"),  # blamed on env.vocab_size
        (("env=large", "agent=exact_planner", "env.horizon=1000000"), "env.horizon"),  # blamed on env.vocab_size
        (("pipeline=rlhf", "feedback.n_eval=1000000000"), "feedback.n_eval"),  # hung
        (("agent=q_learning", "agent.batch=1000000000000"), "agent.batch"),  # MemoryError
        (("env.compressed=true", "agent=best_of_n", "agent.samples=1000000000000"), "agent.samples"),  # MemoryError
        (("agent=best_of_n", "agent.samples=1000000000000"), "agent.samples"),  # MemoryError (enumerated world)
    ],
)
def test_a_size_too_large_names_the_key_that_makes_it_so(overrides, key):
    _refused(_validate("env=tiny", "max_memory_gb=8", *overrides), key)


@pytest.mark.parametrize(
    "kwargs, key", [({"horizon": 10**12}, "env.horizon"), ({"n_prompts": 10**12}, "env.n_prompts")]
)
def test_a_markov_env_too_large_for_memory_is_refused_before_allocating(kwargs, key):
    # env_setup checked memory only with pipeline=rlhf: both were a MemoryError
    with pytest.raises(ConfigError) as err:
        gym.make("rmsim/MarkovText-v0", **kwargs)
    assert err.value.field == key


def _finished_run(path, metrics: dict | None = None, overrides: str = "- seed=0\n"):
    from experiments.io import REQUIRED_METRICS

    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(overrides)
    record = {k: 1.0 for k in REQUIRED_METRICS} | (metrics or {})
    (path / "metrics.json").write_text(json.dumps(record))


def test_damaged_metrics_and_overrides_are_named_and_skipped(tmp_path, capsys):
    from experiments.collect import load_table
    from experiments.io import read_metrics

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)  # was a RecursionError out of json.loads
    assert "RecursionError" in read_metrics(deep)
    _finished_run(tmp_path / "s" / "a", {"extra": [1, 2, {"a": None}], "env": {"x": 1}}, ": [ garbage\n\t- x")
    _finished_run(tmp_path / "s" / "b")
    (tmp_path / "s" / "c").mkdir()
    (tmp_path / "s" / "c" / "metrics.json").symlink_to(tmp_path / "nowhere.json")  # was skipped without a word
    table = load_table(tmp_path / "s")
    err = capsys.readouterr().err
    assert "overrides.yaml: unreadable" in err and "dangling symlink" in err
    assert len(table) == 2 and "seed" not in table.set_index("run_dir").loc["a"].dropna()  # the garbage left out
    row = table.set_index("run_dir").loc["a"]  # a list or dict metric: its JSON text (was "unhashable type")
    assert json.loads(row["extra"]) == [1, 2, {"a": None}] and json.loads(row["env"]) == {"x": 1}


def test_collect_out_pointing_at_a_file_is_refused(tmp_path, capsys):
    from experiments.collect import main

    _finished_run(tmp_path / "s" / "a")
    (tmp_path / "file.txt").write_text("x")
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "file.txt")]) == 2  # was FileExistsError
    assert "file.txt is a file" in capsys.readouterr().err


def test_a_metrics_json_that_is_a_directory_is_cleared_or_refused_before_the_run(tmp_path):
    # was IsADirectoryError after the run, when its result was written
    from experiments.io import make_room, read_metrics

    (tmp_path / "a" / "metrics.json").mkdir(parents=True)
    assert "IsADirectoryError" in read_metrics(tmp_path / "a" / "metrics.json")  # reported as damage on resume
    assert make_room(tmp_path / "a" / "metrics.json") is None and not (tmp_path / "a" / "metrics.json").exists()
    (tmp_path / "b" / "metrics.json" / "x").mkdir(parents=True)  # not empty: nothing is deleted, the run refused
    assert "not empty" in make_room(tmp_path / "b" / "metrics.json")
    assert (tmp_path / "b" / "metrics.json" / "x").is_dir()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metrics.json").symlink_to(tmp_path / "nowhere.json")
    assert read_metrics(tmp_path / "c" / "metrics.json") == "metrics.json is a dangling symlink"
    assert make_room(tmp_path / "c" / "metrics.json") is None  # the atomic write replaces the link


TINY = {"n_prompts": 2, "vocab_size": 4, "horizon": 3}


@pytest.mark.parametrize("action", [-1, 4, 1.5, float("nan"), np.array([1, 2]), None, "a"])
def test_an_action_outside_the_vocabulary_is_refused_naming_it(action):
    # -1 silently took the last token; 4 was an IndexError; nan, 'a', None, [1, 2] gave numpy's own errors
    env = gym.make("rmsim/TextMDP-v0", **TINY)
    env.reset(seed=0)
    with pytest.raises((ValueError, TypeError), match="action"):
        env.step(action)
    assert env.step(np.float64(2.0))[0] is not None and env.step(np.array([1]))[0] is not None  # integral: legal


@pytest.mark.parametrize("actions", [[-1, 1], [4, 1], [np.nan, 1.0], [1.5, 1.0], [1], ["a", "b"]])
def test_a_vector_env_refuses_actions_outside_the_vocabulary(actions):
    # [-1, 1] silently took the last token; [4, 1] and [nan, 1] were IndexErrors
    envs = gym.make_vec("rmsim/TextMDP-v0", num_envs=2, vectorization_mode="vector_entry_point", **TINY)
    envs.reset(seed=0)
    with pytest.raises((ValueError, TypeError), match="action"):
        envs.step(np.array(actions))
    assert envs.step(np.array([[1.0, 2.0]]))[1].shape == (2,)  # integral floats of the right size are legal


def test_env_arguments_of_the_wrong_kind_are_refused():
    from gymnasium.error import ResetNeeded

    for kwargs, key in [
        ({"config": {"bogus": 1}}, "bogus"),  # was accepted and ignored
        ({"config": "env=tiny"}, "config"),  # was "dictionary update sequence element #0"
        ({"world_seed": -1}, "world_seed"),  # was numpy's "expected non-negative integer"
        ({"render_mode": "bogus"}, "render_mode"),  # not a render mode at all
    ]:
        with pytest.raises(ConfigError) as err:
            gym.make("rmsim/TextMDP-v0", **{**TINY, **kwargs})
        assert err.value.field == key
    for n in (2.5, "a", 10**12):  # 2.5 was accepted; 10**12 a MemoryError
        with pytest.raises(ConfigError) as err:
            gym.make_vec("rmsim/TextMDP-v0", num_envs=n, vectorization_mode="vector_entry_point", **TINY)
        assert err.value.field == "num_envs"
    with pytest.warns(UserWarning, match="render_mode='rgb_array' is not supported"):  # what SB3 asks for by default
        assert gym.make("rmsim/TextMDP-v0", render_mode="rgb_array", **TINY).unwrapped.render_mode is None
    env = gym.make("rmsim/TextMDP-v0", **TINY).unwrapped
    env.reset(seed=0)
    env.step(0)  # EOS ends the episode
    with pytest.raises(ResetNeeded):  # gymnasium's own error (was a bare RuntimeError, still one)
        env.step(1)


@pytest.mark.parametrize(
    "policy, kwargs, match",
    [
        (lambda obs: np.full(len(obs), 1.5), {}, "integers"),  # was scored as action 1
        (lambda obs: 1, {}, "shape"),  # one action broadcast to every state
        (lambda obs: np.full((len(obs), 5), 0.2), {}, "shape"),
        (lambda obs: np.full((1, 4), 0.25), {}, "shape"),
        (np.full((10, 4), "a", dtype=object), {}, "dtype"),
        ("uniform", {"obs_mode": "bogus"}, "obs_mode"),  # was accepted for a table
        ("uniform", {"mc_episodes": 1}, "mc_episodes"),  # a NaN interval
        ("uniform", {"mc_episodes": -1}, "mc_episodes"),  # was blamed on num_envs
        ("uniform", {"mc_episodes": 2.5}, "mc_episodes"),
        ("uniform", {"mc_episodes": 10**12}, "mc_episodes"),  # hung
        ("uniform", {"mc_episodes": 10, "seed": -1}, "seed"),
    ],
)
def test_score_refuses_what_it_cannot_score_naming_it(policy, kwargs, match):
    env = gym.make("rmsim/TextMDP-v0", **TINY)
    world = env.unwrapped.world
    if isinstance(policy, str):
        policy = np.full((world.n_states, world.n_actions), 1 / world.n_actions)
    with pytest.raises((ValueError, TypeError), match=match):
        sim.score(policy, env, **kwargs)


def test_an_optimisation_pressure_path_of_too_many_points_is_refused():
    # agent.path=true agent.checkpoints=100000: 100000 solves of the world (killed at the sweep's 60 s limit)
    from sim.build import MAX_PATH_CHECKPOINTS

    _refused(_validate("env=tiny", "agent.path=true", "agent.checkpoints=100000"), "agent.checkpoints")
    assert not isinstance(_validate("env=tiny", "agent.path=true", f"agent.checkpoints={MAX_PATH_CHECKPOINTS}"), str)
    assert not isinstance(_validate("env=tiny", "agent=q_learning", "agent.checkpoints=100000"), str)  # no path


def test_a_file_where_a_sweeps_job_directory_goes_is_found_before_launch(tmp_path):
    # hydra died with FileExistsError creating that job's directory, after the jobs before it had run
    from omegaconf import open_dict

    from experiments.callbacks import blocked_job_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = _sweep_config("agent=exact_planner", "seed=0,1")
        with open_dict(cfg):
            cfg.hydra.sweep.dir = str(tmp_path)
        assert blocked_job_dir(cfg) is None
        (tmp_path / "agent=exact_planner,env=tiny,seed=1").write_text("a file")
        assert blocked_job_dir(cfg) == tmp_path / "agent=exact_planner,env=tiny,seed=1"
