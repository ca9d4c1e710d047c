"""Plot any sweep: ``python -m experiments.plot <sweep dir> [more dirs] --x KEY --y METRIC [--hue KEY] [--col KEY]``.

The named experiments draw their own figures; this draws one for an ad-hoc sweep. It reads the runs the way
``experiments.collect`` does (one row per finished run: the overridden config keys, e.g. ``agent.beta``, ``seed``,
then every metric) and plots the mean of ``--y`` over the runs at each ``--x`` with its 95% bootstrap confidence
interval, one line (or set of points) per value of ``--hue`` and one panel per value of ``--col``:

* a numeric config key as ``--x`` (``agent.beta``): a line with a shaded CI band per hue value, each run a faint dot;
* a categorical ``--x`` (``agent``, ``agent.name``, a bool): points with CI error bars, hue values side by side;
* a metric as ``--x`` (``kl_to_reference``): runs differ in x, so each run is one point (no mean, no CI).

Runs that share x, hue and col are pooled: usually the seeds. A config key that is none of ``--x``, ``--hue``,
``--col`` but varies among the runs of one point is pooled too, with a warning naming it. An axis is logarithmic
when all its values are > 0 and span a factor >= 100 (``--logx``/``--no-logx`` and ``--logy``/``--no-logy`` force
it). Axis labels are the column names, with units where known (returns and gaps in reward units, KL in nats); the
title names the quantities, the settings that do not vary (``env=tiny, agent=soft_planner, ...``) and the number of
runs behind each point. Runs without a value of ``--x`` or ``--y`` are left out, with a warning.

``--curves`` plots the learning curves (``curve.csv``) instead: ``--x`` is a curve column (default ``step``), ``--y``
a curve column (``oracle_return``, ``proxy_return``, ``kl_to_reference``, or a path column such as ``beta``), and
``--hue``/``--col`` are run config keys. The runs of a line (one per hue and col value, usually the seeds) are
aligned by checkpoint (the k-th row of each ``curve.csv`` in step order, cut to the shortest run); the line is the
seed-mean x against the mean y with its 95% bootstrap CI.

The figure is written as PNG and PDF (atomically; the PDF without a creation date) to
``<first sweep dir>/plot_<y>_vs_<x>[_by_<hue>][_per_<col>].png`` (``plot_curve_...`` with ``--curves``), or to
``--out`` (a ``.png``/``.pdf`` suffix is replaced, an existing directory gets the default name), and both paths are
printed. Bad input (a missing directory, no finished runs, an unknown column, a non-numeric ``--y``) exits with
status 2 and a one-line message naming the flag. In a notebook::

    from experiments.collect import load_table
    from experiments.plot import plot_sweep
    fig = plot_sweep(load_table("results/sweeps/adhoc/my-sweep"), "agent.beta", "oracle_return", hue="env")
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.catalog.common import axes, line_ci, mean_ci, plt, summarize
from experiments.collect import load_curves, load_table, run_row
from experiments.io import CURVE_COLUMNS, write_figure

#: Run metrics that describe the run's setup rather than measure it (shown in the title when they do not vary).
SETUP_METRICS = ("agent", "pipeline", "oracle", "corruption")
#: Columns that locate a run, never a setting.
LOCATION = ("sweep_dir", "run_dir")
LOG_SPAN = 100.0  # an axis is logarithmic when its values are all > 0 and max / min >= this
PANEL = (5.0, 3.8)  # inches per panel
LEGEND_WIDTH = 1.4  # inches added for the legend outside the panels


class PlotError(ValueError):
    """Bad input to a plot; the message starts with the flag it concerns (``--x: ...``)."""


# --------------------------------------------------------------------------------------------- columns
def unit(column: str) -> str:
    """The unit of a metric, or ``""`` when it has none we know.

    >>> unit("oracle_return"), unit("kl_to_reference"), unit("agent.beta")
    ('reward units', 'nats', '')
    """
    name = column.removeprefix("metric.")
    if name == "wall_time_s":
        return "s"
    if name.startswith("kl"):
        return "nats"
    if name == "normalized_gap":
        return "fraction of optimal - reference"
    if name.startswith("rm_accuracy"):
        return "fraction"
    if "return" in name or name == "gap":
        return "reward units"
    return ""


def label(column: str) -> str:
    """An axis label: the column name, with its unit in parentheses when it has one."""
    u = unit(column)
    return f"{column} ({u})" if u else column


def _fmt(value: object) -> str:
    if isinstance(value, float | np.floating):
        return "(unset)" if np.isnan(value) else f"{float(value):g}"
    if value is None or value is pd.NA:
        return "(unset)"
    return str(value)


def _runs(df: pd.DataFrame) -> list[tuple[str, str]]:
    if not set(LOCATION) <= set(df.columns):
        return []
    return list(df[list(LOCATION)].drop_duplicates().itertuples(index=False, name=None))


def config_columns(df: pd.DataFrame) -> list[str]:
    """The columns that describe a run's setup: its overridden config keys (read from each run's
    ``.hydra/overrides.yaml``), then the descriptive metrics (``agent``, ``pipeline``, ``oracle``, ``corruption``).

    A table without readable run directories falls back to the dotted column names (``agent.beta``) and ``env``.
    """
    keys: dict[str, None] = {}
    for root, run_dir in _runs(df):
        path = Path(root) / run_dir
        if (path / ".hydra" / "overrides.yaml").exists():
            keys.update(dict.fromkeys(k for k in run_row(path, Path(root), metrics={}) if k not in LOCATION))
    if not keys:
        keys = dict.fromkeys(c for c in df.columns if ("." in c and not c.startswith("metric.")) or c == "env")
    keys.update(dict.fromkeys(SETUP_METRICS))
    return [c for c in keys if c in df.columns]


def curve_columns(curves: pd.DataFrame) -> list[str]:
    """The columns of the runs' ``curve.csv`` files (their headers), or :data:`CURVE_COLUMNS` when unreadable."""
    cols: dict[str, None] = {}
    for root, run_dir in _runs(curves):
        path = Path(root) / run_dir / "curve.csv"
        if path.exists():
            cols.update(dict.fromkeys(pd.read_csv(path, nrows=0).columns))
    return [c for c in (cols or CURVE_COLUMNS) if c in curves.columns]


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _listing(columns: Iterable[str]) -> str:
    return ", ".join(columns)


def _require(df: pd.DataFrame, flag: str, column: str | None, allowed: list[str], why: str = "") -> None:
    """Raise :class:`PlotError` naming ``flag`` unless ``column`` is None or one of ``allowed`` (``why``: what
    ``column`` is when it is in the table but not allowed)."""
    if column is None or column in allowed:
        return
    if column in df.columns:
        raise PlotError(f"{flag}: {column} is {why}; available: {_listing(allowed)}")
    near = difflib.get_close_matches(column, allowed, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise PlotError(f"{flag}: no column {column!r}{hint}; available: {_listing(allowed)}")


def _require_numeric(df: pd.DataFrame, flag: str, column: str, allowed: list[str], why: str = "") -> None:
    numeric = [c for c in allowed if _numeric(df[c])]
    _require(df, flag, column, allowed, why)
    if not _numeric(df[column]):
        raise PlotError(f"{flag}: {column} is not numeric ({df[column].dtype}); numeric columns: {_listing(numeric)}")


def _warn(message: str) -> None:
    print(f"rmsim: warning: {message}", file=sys.stderr)


def _drop_missing(df: pd.DataFrame, column: str, what: str) -> pd.DataFrame:
    missing = df[column].isna()
    if missing.any():
        _warn(f"{int(missing.sum())} {what} have no {column}; left out")
    return df[~missing]


def _pooled(df: pd.DataFrame, setup: list[str], by: list[str], what: str) -> None:
    """Warn about setup columns that vary among the runs pooled into one ``what`` (point or line: the runs that share
    the values of ``by``): they are averaged as if they were seeds."""
    for c in setup:
        if c in by or c == "seed" or c.startswith("metric."):
            continue
        distinct = df.groupby(by, dropna=False)[c].nunique(dropna=False).max() if by else df[c].nunique(dropna=False)
        if distinct > 1:
            values = df[c].drop_duplicates()
            shown = ", ".join(_fmt(v) for v in values.iloc[:5]) + (", ..." if len(values) > 5 else "")
            _warn(f"{c} varies ({shown}) within a plotted {what}: its runs are pooled (add --hue {c} or --col {c}?)")


def _constants(df: pd.DataFrame, setup: list[str], used: set[str]) -> list[str]:
    """``["env=tiny", "agent=soft_planner", ...]``: the setup columns that take one value."""
    parts = []
    for c in setup:
        if c in used or c == "seed" or c.startswith("metric."):
            continue
        values = df[c].drop_duplicates()
        if len(values) == 1 and not pd.isna(values.iloc[0]):
            parts.append(f"{c}={_fmt(values.iloc[0])}")
    return parts


def _log(flag: str, column: str, values: np.ndarray, force: bool | None) -> bool:
    """Whether an axis is logarithmic: forced by ``--logx``/``--logy``, else all values > 0 spanning >= 100x."""
    v = values[np.isfinite(values)]
    if force is False or v.size == 0:
        return False
    positive = bool((v > 0).all())
    if force:
        if not positive:
            raise PlotError(f"{flag}: {column} has values <= 0 (min {v.min():g}); a log axis cannot show them")
        return True
    return positive and v.max() / v.min() >= LOG_SPAN


def _palette(values: list, numeric: bool) -> list:
    if numeric and len(values) > 1:  # ordered values: a sequential map (viridis without its pale yellow end)
        return list(plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(values))))
    return [f"C{i % 10}" for i in range(len(values))]


def _levels(df: pd.DataFrame, column: str | None) -> list:
    if column is None:
        return [None]
    values = df[column].drop_duplicates().tolist()
    try:
        return sorted(values, key=lambda v: (pd.isna(v), v))
    except TypeError:
        return sorted(values, key=lambda v: (pd.isna(v), str(v)))


def _select(df: pd.DataFrame, column: str | None, value) -> pd.DataFrame:
    if column is None:
        return df
    if pd.isna(value):
        return df[df[column].isna()]
    return df[df[column] == value]


def _figure(df: pd.DataFrame, col: str | None, hue: str | None):
    """``(figure, panels, col values)``: one panel per ``col`` value, the y axis shared, room for a legend."""
    cols = _levels(df, col)
    n = len(cols)
    extra = LEGEND_WIDTH if hue is not None else 0.0
    ax = axes(n, width=PANEL[0] + extra / n, height=PANEL[1])
    panels = [ax] if n == 1 else list(ax)
    for a in panels[1:]:
        a.sharey(panels[0])
    for a, v in zip(panels, cols, strict=True):
        if col is not None:
            a.set_title(f"{col} = {_fmt(v)}", fontsize=10)
        a.grid(True, alpha=0.3, lw=0.5)
    return panels[0].figure, panels, cols


def _finish(fig, panels, x: str, y: str, hue: str | None, logx: bool, logy: bool, title: list) -> None:
    for a in panels:
        a.set_xlabel(label(x))
        if logx:
            a.set_xscale("log")
        if logy:
            a.set_yscale("log")
    panels[0].set_ylabel(label(y))
    for a in panels[1:]:
        a.tick_params(labelleft=False)
    if hue is not None:
        handles, labels = panels[0].get_legend_handles_labels()
        seen = dict(zip(labels, handles, strict=True))
        for a in panels[1:]:
            for h, lab in zip(*a.get_legend_handles_labels(), strict=True):
                seen.setdefault(lab, h)
        fig.legend(list(seen.values()), list(seen), title=hue, loc="outside right center", fontsize=9, title_fontsize=9)
    width = max(40, int((fig.get_size_inches()[0] - (LEGEND_WIDTH if hue is not None else 0)) * 12))
    fig.suptitle("\n".join(_wrap(line, width) for line in title if line), fontsize=9)


def _wrap(parts: str | list[str], width: int) -> str:
    """Lines of at most ``width`` characters, broken between the items of ``parts`` (a list) or between words."""
    if isinstance(parts, str):
        return textwrap.fill(parts, width=width)
    lines = [""]
    for p in parts:
        if lines[-1] and len(lines[-1]) + 2 + len(p) > width:
            lines[-1] += ","
            lines.append(p)
        else:
            lines[-1] += (", " if lines[-1] else "") + p
    return "\n".join(lines)


def _per_point(counts: list[int], what: str) -> str:
    counts = [c for c in counts if c > 0]
    if not counts:
        return ""
    lo, hi = min(counts), max(counts)
    n = f"{lo}" if lo == hi else f"{lo}-{hi}"
    if hi == 1:
        return f"one run per {what} (no CI)"
    return f"mean and 95% bootstrap CI over {n} runs per {what}"


# --------------------------------------------------------------------------------------------- sweeps
def plot_sweep(
    table: pd.DataFrame,
    x: str,
    y: str,
    hue: str | None = None,
    col: str | None = None,
    logx: bool | None = None,
    logy: bool | None = None,
):
    """One figure of a sweep: the mean of ``y`` against ``x`` with 95% bootstrap CIs over the pooled runs.

    Args:
        table: one row per run, as :func:`experiments.collect.load_table` gives.
        x: a config key (numeric: lines with CI bands; otherwise points with error bars) or a metric (one point per
            run).
        y: a numeric column (usually a metric).
        hue: a column whose values get one colour each.
        col: a column whose values get one panel each.
        logx: force a log (True) or linear (False) x axis; None decides from the data.
        logy: the same for the y axis.

    Returns:
        The matplotlib Figure (registered with pyplot: close it with ``plt.close(fig)``).

    Raises:
        PlotError: an unknown column, a non-numeric ``y``, or a forced log axis over values <= 0.
    """
    columns = list(table.columns)
    _require(table, "--x", x, columns)
    _require_numeric(table, "--y", y, columns)
    _require(table, "--hue", hue, columns)
    _require(table, "--col", col, columns)
    setup = config_columns(table)
    df = _drop_missing(table, y, "runs")
    if df.empty:
        raise PlotError(f"--y: no run has a value of {y}")
    numeric_x = _numeric(df[x])
    per_run = x not in setup and numeric_x and x != "seed"  # a metric: runs differ in x
    if numeric_x:
        df = _drop_missing(df, x, "runs")
        if df.empty:
            raise PlotError(f"--x: no run has a value of {x}")
    elif logx:
        raise PlotError(f"--logx: {x} is categorical ({df[x].dtype}); a log axis needs numbers")
    used = {x, y} | {c for c in (hue, col) if c is not None}
    if not per_run:
        _pooled(df, setup, [c for c in (x, hue, col) if c is not None], "point")
    log_x = numeric_x and _log("--logx", x, df[x].to_numpy(dtype=float), logx)
    log_y = _log("--logy", y, df[y].to_numpy(dtype=float), logy)

    fig, panels, cols = _figure(df, col, hue)
    hues = _levels(df, hue)
    colors = dict(zip(map(_fmt, hues), _palette(hues, hue is not None and _numeric(df[hue])), strict=True))
    categories = [] if numeric_x else [_fmt(v) for v in _levels(df, x)]
    position = {c: i for i, c in enumerate(categories)}
    dodge = 0.5 / max(len(hues), 1)
    counts: list[int] = []
    for a, cv in zip(panels, cols, strict=True):
        panel = _select(df, col, cv)
        for i, hv in enumerate(hues):
            g = _select(panel, hue, hv)
            if g.empty:
                continue
            name = _fmt(hv) if hue is not None else y
            color = colors[_fmt(hv)]
            if per_run:
                a.scatter(g[x], g[y], s=14, color=color, label=name, alpha=0.8)
                counts.append(1)
                continue
            if numeric_x:
                s = summarize(g, x, y)
                line_ci(a, s[x].to_numpy(dtype=float), s, name, color=color)
                a.scatter(g[x], g[y], s=5, color=color, alpha=0.35, lw=0, zorder=1)
            else:
                keys = g[x].map(_fmt)
                s = summarize(g.assign(_x=keys), "_x", y)
                pos = s["_x"].map(position).to_numpy(dtype=float) + (i - (len(hues) - 1) / 2) * dodge
                err = np.vstack([s["mean"] - s["lo"], s["hi"] - s["mean"]])
                a.errorbar(pos, s["mean"], yerr=err, fmt="o", ms=5, capsize=3, color=color, label=name)
                off = pd.Series(pos, index=s["_x"].to_numpy())
                a.scatter(keys.map(off), g[y], s=5, color=color, alpha=0.35, lw=0, zorder=1)
            counts += s["n"].tolist()
        if not numeric_x:
            a.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 4 else 0)
            a.set_xlim(-0.5, len(categories) - 0.5)
    constants = _constants(df, setup, used)
    note = _per_point(counts, "point") if not per_run else "one point per run"
    _finish(fig, panels, x, y, hue, log_x, log_y, [f"{y} vs {x}", constants, note])
    return fig


# --------------------------------------------------------------------------------------------- curves
def _aligned(g: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, pd.DataFrame]:
    """The runs of ``g`` aligned by checkpoint: seed-mean x and the summary (mean, lo, hi, n) of y at each one."""
    by = list(LOCATION) if set(LOCATION) <= set(g.columns) else ["seed"]
    runs = [r.sort_values("step") if "step" in r.columns else r for _, r in g.groupby(by, sort=True)]
    k = min(len(r) for r in runs)
    xs = np.array([r[x].to_numpy(dtype=float)[:k] for r in runs])
    ys = np.array([r[y].to_numpy(dtype=float)[:k] for r in runs])
    rows = [dict(zip(("mean", "lo", "hi"), mean_ci(ys[:, j]), strict=True)) for j in range(k)]
    summary = pd.DataFrame(rows).assign(n=np.isfinite(ys).sum(axis=0))
    return np.nanmean(xs, axis=0), summary


def plot_curves(
    curves: pd.DataFrame,
    x: str = "step",
    y: str = "oracle_return",
    hue: str | None = None,
    col: str | None = None,
    logx: bool | None = None,
    logy: bool | None = None,
):
    """Learning curves: per hue and col value, the mean curve of ``y`` against ``x`` with its 95% bootstrap CI.

    Args:
        curves: one row per curve point, as :func:`experiments.collect.load_curves` gives.
        x: a numeric curve column (``step``, or e.g. ``kl_to_reference`` for a frontier).
        y: a numeric curve column.
        hue: a run config key whose values get one colour each.
        col: a run config key whose values get one panel each.
        logx: force a log (True) or linear (False) x axis; None decides from the data.
        logy: the same for the y axis.

    Returns:
        The matplotlib Figure (registered with pyplot: close it with ``plt.close(fig)``).

    Raises:
        PlotError: an unknown or non-numeric ``x``/``y``, a ``hue``/``col`` that is not a run column, or a forced log
            axis over values <= 0.
    """
    inside = curve_columns(curves)
    outside = [c for c in curves.columns if c not in inside]
    run_level = "a run column, not a curve.csv column (plot it without --curves)"
    _require_numeric(curves, "--x", x, inside, run_level)
    _require_numeric(curves, "--y", y, inside, run_level)
    _require(curves, "--hue", hue, outside, "a curve.csv column; a hue must be a run column")
    _require(curves, "--col", col, outside, "a curve.csv column; panels must be a run column")
    setup = config_columns(curves)
    df = _drop_missing(_drop_missing(curves, y, "curve points"), x, "curve points")
    if df.empty:
        raise PlotError(f"--y: no curve point has both {x} and {y}")
    _pooled(df, setup, [c for c in (hue, col) if c is not None], "line")
    log_x = _log("--logx", x, df[x].to_numpy(dtype=float), logx)
    log_y = _log("--logy", y, df[y].to_numpy(dtype=float), logy)

    fig, panels, cols = _figure(df, col, hue)
    hues = _levels(df, hue)
    colors = _palette(hues, hue is not None and _numeric(df[hue]))
    counts: list[int] = []
    for a, cv in zip(panels, cols, strict=True):
        panel = _select(df, col, cv)
        for hv, color in zip(hues, colors, strict=True):
            g = _select(panel, hue, hv)
            if g.empty:
                continue
            xs, s = _aligned(g, x, y)
            line_ci(a, xs, s, _fmt(hv) if hue is not None else y, color=color)
            counts += s["n"].tolist()
    constants = _constants(df, setup, {c for c in (hue, col) if c is not None})
    note = _per_point(counts, "checkpoint")
    _finish(fig, panels, x, y, hue, log_x, log_y, [f"learning curves: {y} vs {x}", constants, note])
    return fig


# --------------------------------------------------------------------------------------------- command line
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", name)


def default_name(x: str, y: str, hue: str | None, col: str | None, curves: bool) -> str:
    """``plot[_curve]_<y>_vs_<x>[_by_<hue>][_per_<col>]`` (no suffix).

    >>> default_name("agent.beta", "oracle_return", "env", None, False)
    'plot_oracle_return_vs_agent.beta_by_env'
    """
    name = f"plot{'_curve' if curves else ''}_{y}_vs_{x}"
    name += f"_by_{hue}" if hue else ""
    name += f"_per_{col}" if col else ""
    return _safe(name)


def output_paths(out: str | None, first_dir: str, name: str) -> tuple[Path, Path]:
    """The PNG and PDF paths: ``--out`` (its ``.png``/``.pdf`` suffix replaced; a directory gets ``name``), else
    ``name`` in the first sweep directory."""
    if out is None or Path(out).is_dir():
        stem = Path(out or first_dir) / name
    else:
        stem = Path(out)
        stem = stem.with_suffix("") if stem.suffix.lower() in (".png", ".pdf") else stem
    return stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.plot",
        description=__doc__.replace("``", ""),
        epilog=(
            "examples:\n"
            "  python -m experiments.plot results/sweeps/adhoc/my-sweep --x agent.beta --y oracle_return\n"
            "  python -m experiments.plot DIR --x agent.beta --y kl_to_reference --hue env --col corruption\n"
            "  python -m experiments.plot DIR --x agent --y gap               # categorical x: points + error bars\n"
            "  python -m experiments.plot DIR --curves --y oracle_return --hue agent.beta"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="+", metavar="sweep_dir", help="sweep (or run) directories; their runs are pooled")
    p.add_argument(
        "--x",
        metavar="KEY",
        help="x axis: a config key (agent.beta: a line per hue with a CI band; agent: points with error bars) or a "
        "metric (one point per run); with --curves a curve column (default: step)",
    )
    p.add_argument(
        "--y",
        metavar="METRIC",
        required=True,
        help="a numeric metric (oracle_return, gap, kl_to_reference, ...); with --curves a curve column",
    )
    p.add_argument("--hue", metavar="KEY", help="a column (config key) whose values get one colour each")
    p.add_argument("--col", metavar="KEY", help="a column (config key) whose values get one panel each")
    p.add_argument(
        "--curves",
        action="store_true",
        help="plot learning curves (curve.csv): --x and --y are curve columns (step, oracle_return, proxy_return, "
        "kl_to_reference), the runs of a line are averaged checkpoint by checkpoint",
    )
    p.add_argument(
        "--logx",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force a log (--logx) or linear (--no-logx) x axis (default: log when all x > 0 and max/min >= 100)",
    )
    p.add_argument("--logy", action=argparse.BooleanOptionalAction, default=None, help="the same for the y axis")
    p.add_argument(
        "--out",
        metavar="PATH",
        help="figure path: writes <out>.png and <out>.pdf (a .png/.pdf suffix is replaced; a directory gets the "
        "default name). Default: <first sweep dir>/plot_<y>_vs_<x>[_by_<hue>][_per_<col>].png and .pdf",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad input)."""
    args = parser().parse_args(argv)
    x = args.x or ("step" if args.curves else None)
    try:
        if x is None:
            raise PlotError("--x: required (a config key such as agent.beta, or a metric); only --curves has a default")
        missing = [d for d in args.dirs if not Path(d).is_dir()]
        if missing:
            raise PlotError(f"sweep_dir: no such directory: {missing[0]}")
        try:
            data = load_curves(args.dirs) if args.curves else load_table(args.dirs)
        except FileNotFoundError as e:
            raise PlotError(f"{'--curves' if args.curves else 'sweep_dir'}: {e}") from None
        draw = plot_curves if args.curves else plot_sweep
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # means of empty checkpoints are NaN, and left out
            fig = draw(data, x, args.y, hue=args.hue, col=args.col, logx=args.logx, logy=args.logy)
    except PlotError as e:
        print(f"rmsim: {e}", file=sys.stderr)
        return 2
    png, pdf = output_paths(args.out, args.dirs[0], default_name(x, args.y, args.hue, args.col, args.curves))
    write_figure(png, fig, dpi=150)
    write_figure(pdf, fig)
    plt.close(fig)
    n = data[list(LOCATION)].drop_duplicates().shape[0] if set(LOCATION) <= set(data.columns) else len(data)
    print(f"rmsim: plotted {n} runs -> {png} and {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
