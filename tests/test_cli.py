"""End-to-end runs of the command line (subprocess), and config composition without running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from experiments.config import CLIConfig, validate_object
from sim.agents import AGENTS
from sim.config import Config

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {
    "optimal_return",
    "oracle_return",
    "gap",
    "normalized_gap",
    "reference_return",
    "proxy_return",
    "kl_to_reference",
    "seed",
    "wall_time_s",
}
ARRAY_KEYS = {"next_state", "initial_dist", "oracle_reward", "proxy_reward", "policy", "ref_policy"}


def run_cli(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _run_dir(tmp_path: Path, name: str = "run") -> str:
    return f"hydra.run.dir={tmp_path / name}"


def test_default_run_writes_contract_metrics(tmp_path):
    proc = run_cli(_run_dir(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "gap" in proc.stdout and "most likely outputs" in proc.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert CONTRACT_KEYS <= metrics.keys()
    assert metrics["gap"] >= 0 and metrics["kl_to_reference"] >= 0
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists()


def _recompute(a: dict[str, np.ndarray]) -> dict[str, float]:
    """Every exact metric from arrays.npz alone, by a generic reverse-topological pass over next_state.

    Independent of sim.solvers: it only assumes that a child's index is larger than its parent's.
    """
    nxt, rho, r_star, r_hat, pi, ref = (
        a[k] for k in ("next_state", "initial_dist", "oracle_reward", "proxy_reward", "policy", "ref_policy")
    )
    S = nxt.shape[0]

    def cont(V):
        return np.where(nxt >= 0, V[np.maximum(nxt, 0)], 0.0)

    V_opt = np.zeros(S)
    V_pi = {k: np.zeros(S) for k in ("star", "hat", "ref")}
    kl_to_go = np.zeros(S)
    for s in reversed(range(S)):
        V_opt[s] = np.max(r_star[s] + np.where(nxt[s] >= 0, V_opt[np.maximum(nxt[s], 0)], 0))
    for _ in range(1):
        for s in reversed(range(S)):
            c = np.where(nxt[s] >= 0, 1, 0)
            ch = np.maximum(nxt[s], 0)
            V_pi["star"][s] = pi[s] @ (r_star[s] + c * V_pi["star"][ch])
            V_pi["hat"][s] = pi[s] @ (r_hat[s] + c * V_pi["hat"][ch])
            V_pi["ref"][s] = ref[s] @ (r_star[s] + c * V_pi["ref"][ch])
            logratio = np.where(pi[s] > 0, np.log(np.where(pi[s] > 0, pi[s], 1) / ref[s]), 0)
            kl_to_go[s] = pi[s] @ (logratio + c * kl_to_go[ch])
    return {
        "optimal_return": rho @ V_opt,
        "oracle_return": rho @ V_pi["star"],
        "proxy_return": rho @ V_pi["hat"],
        "reference_return": rho @ V_pi["ref"],
        "kl_to_reference": rho @ kl_to_go,
    }


def test_arrays_alone_reproduce_every_metric(tmp_path):
    proc = run_cli(
        _run_dir(tmp_path),
        "env=tiny",
        "oracle=nonlinear",
        "env.reference=softmax",
        "save_arrays=true",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "run" / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    assert set(arrays) == ARRAY_KEYS
    S, A = arrays["next_state"].shape
    assert arrays["next_state"].dtype.kind == "i" and arrays["initial_dist"].shape == (S,)
    assert all(arrays[k].shape == (S, A) for k in ARRAY_KEYS - {"next_state", "initial_dist"})
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    again = _recompute(arrays)
    for key, value in again.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    assert metrics["gap"] == pytest.approx(again["optimal_return"] - again["oracle_return"], abs=1e-9)


def test_same_seed_bit_identical_and_agent_change_keeps_world(tmp_path):
    """A run alone in its process, and the same config as a job of a sweep (after another job in that process):
    bit-identical arrays. Another agent setting draws the same world; another seed another."""
    world = ["env.reference=softmax", "oracle=nonlinear", "save_arrays=true"]
    proc = run_cli(_run_dir(tmp_path, "a"), *world, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", f"hydra.sweep.dir={sweep}", *world, "agent.beta=0.5,0.1", "seed=0,1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    dirs = {"a": tmp_path / "a"}
    for name, beta, seed in (("b", 0.1, 0), ("c", 0.5, 0), ("d", 0.1, 1)):  # 0.1: the default agent's beta
        dirs[name] = sweep / f"agent.beta={beta},env.reference=softmax,oracle=nonlinear,save_arrays=True,seed={seed}"
    runs = {}
    for name, d in dirs.items():
        with np.load(d / "arrays.npz") as z:
            runs[name] = {k: z[k] for k in z.files}
    for k in ARRAY_KEYS:
        np.testing.assert_array_equal(runs["a"][k], runs["b"][k])
    for k in ("oracle_reward", "ref_policy"):  # another agent setting draws the same world
        np.testing.assert_array_equal(runs["a"][k], runs["c"][k])
    assert not np.array_equal(runs["a"]["policy"], runs["c"]["policy"])
    assert not np.array_equal(runs["a"]["oracle_reward"], runs["d"]["oracle_reward"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("env.vocab_size=1", "env.vocab_size"),
        ("env.horizon=0", "env.horizon"),
        ("env.n_prompts=0", "env.n_prompts"),
        ("env.horizon=20", "env.horizon"),
        ("agent.beta=0", "agent.beta"),
        ("agent.beta=-1", "agent.beta"),
        ("oracle.kind=cubic", "oracle.kind"),
        ("oracle.templates=[unigram,foo]", "oracle.templates"),
        ("env.reference=gpt", "env.reference"),
        ("corruption.noise.sigma=-1", "corruption.noise.sigma"),
        ("corruption.noise.levels=1", "corruption.noise.levels"),
        ("corruption.sparsity.budget=0", "corruption.sparsity.budget"),
        ("corruption.misspec.angle=4", "corruption.misspec.angle"),
        ("corruption.misspec.omit=[trigram]", "corruption.misspec.omit"),
        ("feedback.n=0", "feedback.n"),
        ("feedback.flip=1.5", "feedback.flip"),
        ("feedback.myopia=0", "feedback.myopia"),
        ("feedback.prompt_coverage=0", "feedback.prompt_coverage"),
        ("reward_model.prior_scale=0", "reward_model.prior_scale"),
        ("reward_model.templates=[bogus]", "reward_model.templates"),
        ("pipeline=magic", "pipeline"),
    ],
)
def test_bad_config_fails_before_work_naming_the_key(override, key, capsys):
    """The command line's own check before hydra runs anything (in this process: a subprocess per value would cost
    seconds each; the test below runs the real command once)."""
    from experiments.run import prevalidate

    with pytest.raises(SystemExit) as exit_:
        prevalidate([override])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert key in err and "allowed" in err


def test_a_bad_config_on_the_command_line_exits_2_before_any_work(tmp_path):
    proc = run_cli(_run_dir(tmp_path), "agent.beta=-1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "agent.beta" in proc.stderr and "allowed" in proc.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_type_error_and_unknown_key_fail(tmp_path):
    for override in ("env.horizon=abc", "env.bogus=1"):
        proc = run_cli(_run_dir(tmp_path), override, cwd=tmp_path)
        assert proc.returncode != 0
        assert "horizon" in proc.stderr or "bogus" in proc.stderr


def test_corrupted_run_reports_proxy_return_and_stores_proxy_reward(tmp_path):
    proc = run_cli(
        _run_dir(tmp_path),
        "env=tiny",
        "corruption=misweighted",
        "agent=exact_planner",
        "save_arrays=true",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["corruption"] == "misspec.angle=0.6"
    with np.load(tmp_path / "run" / "arrays.npz") as z:
        assert not np.array_equal(z["proxy_reward"], z["oracle_reward"])
        assert metrics["proxy_return"] == pytest.approx(_recompute(dict(z))["proxy_return"], abs=1e-9)
    assert metrics["proxy_return"] != metrics["oracle_return"]


RLHF_KEYS = {"rm_accuracy_in_dist", "rm_accuracy_shifted", "reward_distance", "n_feedback"}


def test_rlhf_run_reports_reward_model_metrics(tmp_path):
    proc = run_cli(
        _run_dir(tmp_path),
        "pipeline=rlhf",
        "env=tiny",
        "feedback=mistake",
        "feedback.n=300",
        "save_arrays=true",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rm_accuracy_in_dist" in proc.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (CONTRACT_KEYS | RLHF_KEYS) <= metrics.keys()
    assert metrics["n_feedback"] == 300 and 0 <= metrics["reward_distance"] <= 1
    with np.load(tmp_path / "run" / "arrays.npz") as z:
        again = _recompute(dict(z))
    assert metrics["proxy_return"] == pytest.approx(again["proxy_return"], abs=1e-9)


def test_direct_run_has_no_reward_model_metrics(tmp_path):
    assert run_cli(_run_dir(tmp_path), "env=tiny", cwd=tmp_path).returncode == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert not (RLHF_KEYS & metrics.keys())


def test_learning_agent_writes_its_curve(tmp_path):
    proc = run_cli(_run_dir(tmp_path), "env=tiny", "agent=q_learning", "agent.steps=2000", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import pandas as pd

    curve = pd.read_csv(tmp_path / "run" / "curve.csv")
    assert list(curve.columns) == ["step", "oracle_return", "proxy_return", "kl_to_reference"]
    assert curve["step"].is_monotonic_increasing and curve["step"].iloc[-1] >= 2000


def test_rerun_into_same_dir_skips(tmp_path):
    assert run_cli(_run_dir(tmp_path), "env=tiny", cwd=tmp_path).returncode == 0
    before = (tmp_path / "run" / "metrics.json").read_text()
    proc = run_cli(_run_dir(tmp_path), "env=tiny", cwd=tmp_path)
    assert proc.returncode == 0 and "skipped" in proc.stdout
    assert (tmp_path / "run" / "metrics.json").read_text() == before


def test_multirun_sweep(tmp_path):
    proc = run_cli(
        "-m",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "env=tiny",
        "agent.beta=0.1,1",
        "seed=0,1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    found = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/metrics.json"))
    assert len(found) == 4
    assert "agent.beta=0.1,env=tiny,seed=0" in found


def test_hydra_mode_set_on_the_command_line_still_sweeps(tmp_path):
    """experiments.run spares hydra the composition that only reads hydra.mode (None in every rmsim config), but
    not when the command line sets it: ``hydra.mode=MULTIRUN`` without ``-m`` sweeps."""
    proc = run_cli("hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path / 'sweep'}", "env=tiny", "seed=0,1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/metrics.json")) == [
        "env=tiny,seed=0",
        "env=tiny,seed=1",
    ]


def test_no_config_sets_hydra_mode():
    """What experiments.run.skip_mode_composition relies on: no file under configs/ sets ``hydra.mode`` (a config
    that did would be run in that mode only when named on the command line... or not at all: hydra reads it first)."""
    from omegaconf import OmegaConf

    files = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(files) > 40
    setting = [f for f in files if "mode" in ((OmegaConf.to_container(OmegaConf.load(f)) or {}).get("hydra") or {})]
    assert not setting


# ------------------------------------------------------------- composition
CONFIG_DIR = ROOT / "configs"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["env", "oracle", "corruption", "feedback", "reward_model", "agent"])
def test_every_group_option_composes_and_validates(group):
    needs = {("agent", "dpo"): ["pipeline=rlhf"], ("agent", "ipo"): ["pipeline=rlhf"]}  # they learn from preferences
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for option in _options(group):
            if group == "agent" and not AGENTS[option].available:  # an optional extra (make test-sb3 covers it)
                continue
            extra = needs.get((group, option), [])
            cfg = compose(config_name="config", overrides=[f"{group}={option}", *extra])
            obj = validate_object(cfg)
            assert isinstance(obj, CLIConfig) and isinstance(obj, Config), obj
            if extra:  # and without them the registry refuses it, saying why
                refused = validate_object(compose(config_name="config", overrides=[f"{group}={option}"]))
                assert isinstance(refused, str) and option in refused and "pipeline=rlhf" in refused


def test_env_presets_are_ordered_by_size():
    from sim.worlds.enumerated import enumerated_size

    sizes = []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for option in ("tiny", "small", "medium"):
            e = compose(config_name="config", overrides=[f"env={option}"]).env
            sizes.append(enumerated_size(e.n_prompts, e.vocab_size, e.horizon, e.eos))
    assert sizes == sorted(sizes) and sizes[0] < 100 and sizes[-1] > 100_000


def test_an_agent_registered_in_a_test_runs_on_both_world_kinds_through_the_cli_code_path(tmp_path):
    """Adding an agent is one module: register it, and the command line's own path (compose, validate, run, write)
    accepts ``agent.name=<it>`` on an enumerated and on a compressed world."""
    from experiments.run import execute, write_outputs
    from sim.agents import AGENTS, AgentResult, register

    @register("toy_greedy_half", keys=())
    def toy(ctx, cfg):
        """Half the soft optimum at beta = 1, half the greedy policy, row by row."""
        soft, greedy = ctx.world.soft_policy(ctx.proxy, 1.0), ctx.world.greedy_policy(ctx.proxy)
        from sim.worlds import LevelPolicy

        return AgentResult(LevelPolicy(ctx.world, lambda t: 0.5 * soft.level(t) + 0.5 * greedy.level(t)))

    try:
        results = {}
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            for compressed in ("false", "true"):
                cfg = compose(
                    config_name="config", overrides=["agent.name=toy_greedy_half", f"env.compressed={compressed}"]
                )
                config = validate_object(cfg)
                assert isinstance(config, CLIConfig), config
                out = tmp_path / compressed
                write_outputs(out, config, execute(config))
                results[compressed] = json.loads((out / "metrics.json").read_text())
        for m in results.values():
            assert m["agent"] == "toy_greedy_half" and 0 < m["normalized_gap"] < 1
        for key in ("optimal_return", "oracle_return", "kl_to_reference"):  # the same world, solved two ways
            assert results["false"][key] == pytest.approx(results["true"][key], rel=1e-9)
        assert results["true"]["world"] == "markov" and results["false"]["world"] == "enumerated"
    finally:
        del AGENTS["toy_greedy_half"]
