"""``python -m experiments.plot``: a small real sweep rendered, its files and axes checked, and bad input refused."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.catalog.common import plt
from experiments.collect import load_curves, load_table
from experiments.plot import main, plot_curves, plot_sweep

ROOT = Path(__file__).resolve().parents[1]
BETAS = (0.01, 1.0, 100.0)
pytestmark = pytest.mark.xdist_group("plot")  # one worker runs the sweeps below; the other need not wait for them


COMMANDS = {
    "planner": ["env=tiny", f"agent.beta={','.join(f'{b:g}' for b in BETAS)}", "seed=0,1"],
    "qlearning": ["env=tiny", "agent=q_learning", "agent.steps=300", "seed=0,1"],
}


def _run_sweeps(root: Path) -> None:
    """Run the sweeps of :data:`COMMANDS` into ``root``, at the same time."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "experiments.run", "-m", *overrides, f"hydra.sweep.dir={root / name}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, overrides in COMMANDS.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"the {name} sweep failed:\n{out[-2000:]}\n{err[-2000:]}"


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Path]:
    """Two small real sweeps: the soft planner over three betas (a numeric x spanning four decades) and tabular
    Q-learning (learning curves), each with two seeds. Under pytest-xdist the workers share one copy (the first
    runs it, the others wait for it), so ``make test -n 2`` runs the sweeps once."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent / "plot-sweeps"  # the session's directory, shared by workers
        root.mkdir(exist_ok=True)
    else:
        root = tmp_path_factory.mktemp("plot")
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            _run_sweeps(root)
            (root / "done").touch()
    return {name: root / name for name in COMMANDS}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _data_lines(ax):
    """The lines drawn with a label (the means), not the CI bands or the grid."""
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def _png_pdf(png: Path) -> None:
    pdf = png.with_suffix(".pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


# --------------------------------------------------------------------------------------------- the command
def test_the_command_writes_png_and_pdf_next_to_the_sweep(sweeps, capsys):
    assert main([str(sweeps["planner"]), "--x", "agent.beta", "--y", "oracle_return"]) == 0
    png = sweeps["planner"] / "plot_oracle_return_vs_agent.beta.png"
    _png_pdf(png)
    out, err = capsys.readouterr()
    assert str(png) in out and str(png.with_suffix(".pdf")) in out
    assert err == ""  # nothing pooled: seeds only


def test_out_chooses_the_path_and_hue_col_name_the_default(sweeps, tmp_path, capsys):
    out = tmp_path / "a" / "f.png"  # a directory that does not exist yet
    assert main([str(sweeps["planner"]), "--x", "agent.beta", "--y", "gap", "--out", str(out)]) == 0
    _png_pdf(tmp_path / "a" / "f.png")
    dirs = [str(sweeps["planner"]), str(sweeps["qlearning"])]
    assert main([*dirs, "--x", "agent.beta", "--y", "gap", "--hue", "seed", "--col", "agent"]) == 0
    _png_pdf(sweeps["planner"] / "plot_gap_vs_agent.beta_by_seed_per_agent.png")
    assert main([str(sweeps["qlearning"]), "--curves", "--y", "kl_to_reference"]) == 0
    _png_pdf(sweeps["qlearning"] / "plot_curve_kl_to_reference_vs_step.png")
    assert "plot_curve_kl_to_reference_vs_step.pdf" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------- the figures
def test_numeric_x_is_a_mean_line_with_a_ci_band_on_log_axes_where_values_span_decades(sweeps):
    table = load_table(sweeps["planner"])
    fig = plot_sweep(table, "agent.beta", "kl_to_reference")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "agent.beta" and ax.get_ylabel() == "kl_to_reference (nats)"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"  # beta 0.01..100; KL 4 nats down to ~1e-5
    (line,) = _data_lines(ax)
    means = table.groupby("agent.beta")["kl_to_reference"].mean()
    np.testing.assert_allclose(line.get_xdata(), BETAS)
    np.testing.assert_allclose(line.get_ydata(), means.loc[list(BETAS)].to_numpy())
    assert len(ax.collections) >= 1  # the CI band (and the runs' dots)
    title = fig._suptitle.get_text()
    assert "env=tiny" in title and "agent=soft_planner" in title and "over 2 runs per point" in title

    fig = plot_sweep(table, "agent.beta", "oracle_return")
    assert fig.axes[0].get_ylabel() == "oracle_return (reward units)" and fig.axes[0].get_yscale() == "linear"
    fig = plot_sweep(table, "agent.beta", "kl_to_reference", logx=False, logy=False)
    assert fig.axes[0].get_xscale() == "linear" and fig.axes[0].get_yscale() == "linear"


def test_hue_colours_lines_and_col_makes_panels(sweeps):
    table = load_table([sweeps["planner"], sweeps["qlearning"]])
    fig = plot_sweep(table, "seed", "oracle_return", hue="agent.beta", col="agent")
    panels = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in panels] == ["agent = q_learning", "agent = soft_planner"]
    assert [ln.get_label() for ln in _data_lines(panels[1])] == ["0.01", "1", "100"]
    assert panels[0].get_ylabel() == "oracle_return (reward units)"
    (legend,) = fig.legends
    assert legend.get_title().get_text() == "agent.beta"


def test_categorical_x_is_points_with_error_bars(sweeps, tmp_path):
    table = load_table([sweeps["planner"], sweeps["qlearning"]])
    fig = plot_sweep(table, "agent", "gap")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["q_learning", "soft_planner"]
    assert ax.get_xlabel() == "agent" and ax.get_ylabel() == "gap (reward units)" and ax.get_xscale() == "linear"
    assert len(ax.containers) == 1  # one errorbar set: no hue
    argv = [str(sweeps["planner"]), str(sweeps["qlearning"]), "--x", "agent", "--y", "gap"]
    assert main([*argv, "--out", str(tmp_path / "cat")]) == 0
    _png_pdf(tmp_path / "cat.png")


def test_curves_average_the_seeds_checkpoint_by_checkpoint(sweeps):
    curves = load_curves(sweeps["qlearning"])
    fig = plot_curves(curves, y="oracle_return")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "oracle_return (reward units)"
    (line,) = _data_lines(ax)
    runs = [g.sort_values("step") for _, g in curves.groupby("run_dir")]
    k = min(len(r) for r in runs)
    np.testing.assert_allclose(line.get_ydata(), np.mean([r["oracle_return"].to_numpy()[:k] for r in runs], axis=0))
    fig = plot_curves(curves, x="kl_to_reference", y="oracle_return", hue="seed")
    assert fig.axes[0].get_xlabel() == "kl_to_reference (nats)" and len(_data_lines(fig.axes[0])) == 2


def test_a_varying_key_left_out_of_the_plot_is_named(sweeps, capsys):
    assert main([str(sweeps["planner"]), "--x", "seed", "--y", "gap", "--out", str(sweeps["planner"] / "p")]) == 0
    assert "agent.beta varies" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- bad input
BAD = {
    "missing directory": (["{missing}", "--x", "agent.beta", "--y", "gap"], "sweep_dir"),
    "no finished runs": (["{empty}", "--x", "agent.beta", "--y", "gap"], "sweep_dir"),
    "no --x": (["{planner}", "--y", "gap"], "--x"),
    "unknown --x": (["{planner}", "--x", "agent.bta", "--y", "gap"], "--x"),
    "unknown --y": (["{planner}", "--x", "agent.beta", "--y", "gapp"], "--y"),
    "unknown --hue": (["{planner}", "--x", "agent.beta", "--y", "gap", "--hue", "nope"], "--hue"),
    "unknown --col": (["{planner}", "--x", "agent.beta", "--y", "gap", "--col", "nope"], "--col"),
    "non-numeric --y": (["{planner}", "--x", "agent.beta", "--y", "oracle"], "--y"),
    "log of negatives": (["{planner}", "--x", "agent.beta", "--y", "oracle_return", "--logy"], "--logy"),
    "log of categories": (["{planner}", "--x", "agent", "--y", "gap", "--logx"], "--logx"),
    "no curves": (["{planner}", "--curves", "--y", "oracle_return"], "--curves"),
    "run metric as a curve": (["{qlearning}", "--curves", "--y", "gap"], "--y"),
    "curve column as hue": (["{qlearning}", "--curves", "--y", "oracle_return", "--hue", "step"], "--hue"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_naming_the_flag(case, sweeps, tmp_path, capsys):
    argv, flag = BAD[case]
    (tmp_path / "empty").mkdir()
    where = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", **sweeps}
    assert main([*(a.format(**where) for a in argv), "--out", str(tmp_path / "fig")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rmsim: {flag}: ") and err.count("\n") == 1, err
    if case.startswith("unknown"):
        assert "available: " in err and "agent.beta" in err
    assert not list(tmp_path.glob("fig*"))  # no figure written
