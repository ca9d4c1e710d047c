"""Record (or compare) the golden set: ``python -m tests.golden.record [--compare] [case ...]``.

Every case runs in-process through the same code the command line uses (compose the hydra config, validate it,
run it, write ``metrics.json`` and ``curve.csv`` with the CLI's writers).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

import experiments  # noqa: F401  (single-threaded BLAS, resolvers)
from experiments.run import execute, validate_object, write_outputs
from tests.golden.cases import CASES

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
CONFIGS = HERE.parents[1] / "configs"
IGNORED = {"wall_time_s"}


def run_case(overrides: list[str], out: Path) -> None:
    """Run one case into ``out`` (``metrics.json``, ``curve.csv``)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    config = validate_object(cfg)
    if isinstance(config, str):
        raise ValueError(config)
    write_outputs(out, config, execute(config))


def _close(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def differences(golden: Path, fresh: Path) -> list[str]:
    """What differs between a recorded run and a fresh one (empty when they agree)."""
    out = []
    g = json.loads((golden / "metrics.json").read_text())
    f = json.loads((fresh / "metrics.json").read_text())
    for key, value in g.items():
        if key in IGNORED:
            continue
        if key not in f:
            out.append(f"metrics.json: {key} missing")
        elif not _close(value, f[key]):
            out.append(f"metrics.json: {key} = {f[key]!r}, golden {value!r}")
    gc, fc = _csv(golden / "curve.csv"), _csv(fresh / "curve.csv")
    if len(gc) != len(fc):
        out.append(f"curve.csv: {len(fc)} rows, golden {len(gc)}")
    for i, (gr, fr) in enumerate(zip(gc, fc, strict=False)):
        for key, value in gr.items():
            if key not in fr:
                out.append(f"curve.csv row {i}: {key} missing")
            elif not _close(float(value), float(fr[key])):
                out.append(f"curve.csv row {i}: {key} = {fr[key]}, golden {value}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--compare", action="store_true", help="compare with the recorded runs instead of recording")
    args = parser.parse_args(argv)
    names = args.cases or list(CASES)
    bad = 0
    for name in names:
        t0 = time.perf_counter()
        if args.compare:
            with tempfile.TemporaryDirectory() as tmp:
                run_case(CASES[name], Path(tmp))
                diff = differences(RUNS / name, Path(tmp))
            bad += bool(diff)
            status = "ok" if not diff else "DIFFERS\n    " + "\n    ".join(diff[:10])
        else:
            target = RUNS / name
            for old in target.glob("*"):
                old.unlink()
            run_case(CASES[name], target)
            status = "recorded"
        print(f"{name:<36} {time.perf_counter() - t0:6.2f}s {status}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
