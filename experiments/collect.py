"""Runs -> one tidy table: ``python -m experiments.collect <sweep dir> [more dirs] [--out DIR]``.

One row per finished run (a directory with ``metrics.json``): the run's overridden config keys as columns
(from hydra's ``.hydra/overrides.yaml``, typed by YAML), then every metric. Written as ``table.parquet`` and
``table.csv`` (atomically) into the first sweep directory, or ``--out``. In a notebook::

    from experiments.collect import load_table
    df = load_table("results/sweeps/adhoc/2026-11-25_17-04-43")
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import yaml

from experiments import parse_overrides
from experiments.io import SUPERSEDED, atomic_write, read_metrics


def _value(text: str) -> object:
    """An override's value, typed as hydra types it (``inf``/``nan`` are floats there, not YAML strings)."""
    if text.strip().lower() in ("inf", "+inf", "-inf", "nan", ".inf", "-.inf", ".nan"):
        return float(text.strip().lower().replace(".", ""))
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return v if isinstance(v, str | int | float | bool) or v is None else str(v)


def _override_columns(item: str) -> list[tuple[str, object]]:
    """The columns of one override as hydra parses it: ``key=value``; a dict value (``corruption.misspec={angle:0.4}``)
    also gives a column per leaf (``corruption.misspec.angle`` = 0.4) beside its text; a list becomes its text."""
    try:
        (override,) = parse_overrides([item])
    except Exception:  # not hydra's grammar (e.g. written by hand): the text after '=' typed by YAML
        key, _, value = item.partition("=")
        return [(key.lstrip("+~"), _value(value))]
    if override.is_delete():
        return []
    key, value = override.key_or_group, override.value()
    if isinstance(value, dict):
        return [(key, item.partition("=")[2]), *_leaves(key, value)]
    return [(key, value if isinstance(value, str | int | float | bool) or value is None else str(value))]


def _leaves(prefix: str, value: dict) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in value.items():
        if isinstance(v, dict):
            out += _leaves(f"{prefix}.{k}", v)
        else:
            out.append((f"{prefix}.{k}", v if isinstance(v, str | int | float | bool) or v is None else str(v)))
    return out


#: libyaml's safe loader where PyYAML was built with it (the same documents, ~10x faster), else the Python one.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _consistent(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns keep NaN/inf as floats (``metrics.json`` spells them "inf"/"-inf"); columns that really mix
    numbers and strings become strings, so the table is a valid parquet file."""
    for col in [c for c in df.columns if df[c].dtype.kind == "O"]:
        values = df[col].dropna()
        numeric = values.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool) or v in NONFINITE)
        if len(values) and numeric.all() and values.map(lambda v: not isinstance(v, str)).any():
            df[col] = df[col].map(lambda v: NONFINITE.get(v, v) if isinstance(v, str) else v).astype(float)
            continue
        kinds = {type(v) for v in values}
        if len(kinds) > 1 and str in kinds:
            df[col] = df[col].map(lambda v: v if v is None or (isinstance(v, float) and v != v) else str(v))
    return df


def run_row(run_dir: Path, root: Path, metrics: dict | None = None) -> dict[str, object]:
    """The row of one run: ``sweep_dir``, ``run_dir``, its overrides, then its metrics.

    A config key and a metric can share a name (``corruption=misweighted`` is a preset, the metric ``corruption``
    describes the settings): the config keeps the name and the metric becomes ``metric.<name>``.
    """
    row: dict[str, object] = {
        "sweep_dir": str(root),
        "run_dir": str(run_dir.relative_to(root)) if run_dir != root else ".",
    }
    for item in _overrides(run_dir / ".hydra" / "overrides.yaml"):
        for key, value in _override_columns(str(item)):
            if not key.startswith("hydra."):
                row[key] = value
    record = metrics if metrics is not None else json.loads((run_dir / "metrics.json").read_text())
    for key, value in record.items():  # a list or dict metric is kept as its JSON text (a cell holds a scalar)
        value = json.dumps(value) if isinstance(value, list | dict) else value
        row[f"metric.{key}" if key in row else key] = value
    return row


def _overrides(path: Path) -> list:
    """The override strings of hydra's ``overrides.yaml``; a damaged file is named, and its columns left out."""
    if not path.exists():
        return []
    try:
        items = yaml.load(path.read_text(), Loader=_SAFE_LOADER)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        print(f"rmsim: warning: {path}: unreadable ({type(e).__name__}); its override columns are left out",
              file=sys.stderr)  # fmt: skip
        return []
    if items is not None and not isinstance(items, list):
        print(f"rmsim: warning: {path}: not a list of overrides; its override columns are left out", file=sys.stderr)
        return []
    return items or []


def sweep_roots(dirs: str | Path | Iterable[str | Path]) -> list[Path]:
    """The directories to read runs from: each must exist; one given twice, or inside another, is read once."""
    roots = [Path(dirs)] if isinstance(dirs, str | Path) else [Path(d) for d in dirs]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"no such sweep directory: {root}")
    unique: dict[Path, Path] = {}
    for root in roots:  # the same directory given twice (or one inside another) is read once
        unique.setdefault(root.resolve(), root)
    return [r for key, r in unique.items() if not any(key != o and o in key.parents for o in unique)]


def finished_runs(roots: list[Path]) -> list[tuple[Path, Path, dict]]:
    """``(run_dir, root, metrics)`` of every run with a valid ``metrics.json``; damaged ones are named and skipped."""
    out = []
    for root in roots:
        # os.walk (not glob) also lists a dangling symlink, so that it is named; it follows no symlinked directory.
        # A run's superseded/ holds the results of its config before a change: not runs of this sweep.
        found = []
        for d, ds, fs in os.walk(root):
            ds[:] = [x for x in ds if x != SUPERSEDED]
            if "metrics.json" in {*fs, *ds}:
                found.append(Path(d) / "metrics.json")
        for p in sorted(found):
            record = read_metrics(p)
            if isinstance(record, str):
                print(f"rmsim: warning: skipping {p}: {record}", file=sys.stderr)
                continue
            out.append((p.parent, root, record))
    return out


def load_table(dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Every finished run below ``dirs`` as a DataFrame (one row per run)."""
    roots = sweep_roots(dirs)
    return runs_table(finished_runs(roots), roots)


def runs_table(runs: list[tuple[Path, Path, dict]], roots: list[Path]) -> pd.DataFrame:
    """:func:`load_table` of the runs :func:`finished_runs` found below ``roots``."""
    rows = [run_row(run_dir, root, record) for run_dir, root, record in runs]
    if not rows:
        raise FileNotFoundError(f"no finished runs (metrics.json) below {', '.join(map(str, roots))}")
    return _consistent(pd.DataFrame(rows))


def load_curves(dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Every learning curve below ``dirs`` in long form: one row per curve point, with its run's columns."""
    roots = sweep_roots(dirs)
    return curves_table(finished_runs(roots), roots)


def curves_table(runs: list[tuple[Path, Path, dict]], roots: list[Path]) -> pd.DataFrame:
    """:func:`load_curves` of the runs :func:`finished_runs` found below ``roots``."""
    frames = []
    for run_dir, root, record in runs:
        p = run_dir / "curve.csv"
        if p.exists():
            row = run_row(run_dir, root, record)
            curve = pd.read_csv(p)
            # the run's columns beside its curve's, at once (a column at a time costs ~0.4 ms each, ~40 per run)
            extra = {key: value for key, value in row.items() if key not in curve.columns}
            frames.append(pd.concat([curve, pd.DataFrame(extra, index=curve.index)], axis=1))
    if not frames:
        raise FileNotFoundError(f"no finished learning curves (curve.csv) below {', '.join(map(str, roots))}")
    return _consistent(pd.concat(frames, ignore_index=True))


def write_table(df: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    """Write ``table.parquet`` and ``table.csv`` into ``out`` atomically."""
    parquet, csv = out / "table.parquet", out / "table.csv"
    atomic_write(parquet, lambda fh: df.to_parquet(fh, index=False), "wb")
    atomic_write(csv, lambda fh: df.to_csv(fh, index=False), "w")
    return parquet, csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="sweep (or run) directories to collect")
    parser.add_argument("--out", help="where to write table.parquet and table.csv (default: the first directory)")
    args = parser.parse_args(argv)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        print(f"rmsim: --out {args.out} is a file: give a directory (made if missing)", file=sys.stderr)
        return 2
    try:
        df = load_table(args.dirs)
    except FileNotFoundError as e:
        print(f"rmsim: {e}", file=sys.stderr)
        return 2
    parquet, csv = write_table(df, Path(args.out or args.dirs[0]))
    print(f"rmsim: {len(df)} runs x {df.shape[1]} columns -> {parquet} and {csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
