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
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import yaml

from experiments.io import atomic_write


def _value(text: str) -> object:
    """An override's value, typed as hydra types it (``inf``/``nan`` are floats there, not YAML strings)."""
    if text.strip().lower() in ("inf", "+inf", "-inf", "nan", ".inf", "-.inf", ".nan"):
        return float(text.strip().lower().replace(".", ""))
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return v if isinstance(v, str | int | float | bool) or v is None else str(v)


def _consistent(df: pd.DataFrame) -> pd.DataFrame:
    """Columns mixing numbers and strings become strings, so the table is a valid parquet file."""
    for col in [c for c in df.columns if df[c].dtype.kind == "O"]:
        kinds = {type(v) for v in df[col].dropna()}
        if len(kinds) > 1 and str in kinds:
            df[col] = df[col].map(lambda v: v if v is None or (isinstance(v, float) and v != v) else str(v))
    return df


def run_row(run_dir: Path, root: Path) -> dict[str, object]:
    """The row of one run: ``run_dir``, its overrides, its metrics."""
    row: dict[str, object] = {"run_dir": str(run_dir.relative_to(root)) if run_dir != root else "."}
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.exists():
        for item in yaml.safe_load(overrides.read_text()) or []:
            key, _, value = str(item).partition("=")
            key = key.lstrip("+~")
            if not key.startswith("hydra."):
                row[key] = _value(value)
    row.update(json.loads((run_dir / "metrics.json").read_text()))
    return row


def load_table(dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Every finished run below ``dirs`` as a DataFrame (one row per run)."""
    roots = [Path(dirs)] if isinstance(dirs, str | Path) else [Path(d) for d in dirs]
    rows = []
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"no such sweep directory: {root}")
        rows += [run_row(p.parent, root) for p in sorted(root.glob("**/metrics.json"))]
    if not rows:
        raise FileNotFoundError(f"no finished runs (metrics.json) below {', '.join(map(str, roots))}")
    return _consistent(pd.DataFrame(rows))


def load_curves(dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Every learning curve below ``dirs`` in long form: one row per curve point, with its run's columns."""
    roots = [Path(dirs)] if isinstance(dirs, str | Path) else [Path(d) for d in dirs]
    frames = []
    for root in roots:
        for p in sorted(root.glob("**/curve.csv")):
            if not (p.parent / "metrics.json").exists():
                continue  # an unfinished run
            row = run_row(p.parent, root)
            curve = pd.read_csv(p)
            for key, value in row.items():
                if key not in curve.columns:
                    curve[key] = value
            frames.append(curve)
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
