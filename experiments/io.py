"""Atomic writers: a file appears complete under its final name or not at all."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

#: The subdirectory of a run directory that keeps the results of its earlier config (``experiments.run.set_aside``).
SUPERSEDED = "superseded"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[Any]], None], mode: str) -> None:
    """Write ``path`` through a temporary file in its directory, then rename it into place.

    The file gets the permissions of a plainly created file (``0o666`` less the umask), so collaborators on a shared
    filesystem can read results (``mkstemp`` alone would give ``0o600``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


#: What a finished run's ``metrics.json`` must hold, finite (the contract's core metrics).
#: The columns every ``curve.csv`` has, in order; a run may add more (e.g. ``beta`` along a pressure path).
CURVE_COLUMNS = ("step", "oracle_return", "proxy_return", "kl_to_reference")
REQUIRED_METRICS = ("optimal_return", "oracle_return", "gap", "reference_return", "proxy_return", "kl_to_reference")


def read_metrics(path: Path) -> dict[str, Any] | str:
    """A finished run's metrics, or why ``path`` is not one (missing, unreadable, not a JSON object, a required
    metric missing or not a finite number)."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return "metrics.json is a dangling symlink" if Path(path).is_symlink() else "no metrics.json"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: [[[[...
        return f"unreadable metrics.json ({type(e).__name__}: {str(e)[:200]})"
    if not isinstance(record, dict):
        return "metrics.json is not a JSON object"
    for key in REQUIRED_METRICS:
        value = record.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            return f"metrics.json has no finite {key} ({value!r})"
    return record


def make_room(path: Path) -> str | None:
    """Make ``path`` writable for a result before the run: an empty directory there is removed; a non-empty one is
    left alone and the reason it cannot be written is returned (else None)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        try:
            path.rmdir()
        except OSError:
            return f"{path} is a directory that is not empty: move it away and re-run"
    return None


def write_json(path: Path, record: Mapping[str, Any]) -> None:
    """Write a flat JSON object atomically (NaN becomes null, so the file is strict JSON)."""
    clean = {k: _jsonable(v) for k, v in record.items()}
    atomic_write(path, lambda fh: fh.write(json.dumps(clean, indent=2, sort_keys=True) + "\n"), "w")


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda fh: fh.write(text), "w")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write rows as CSV atomically."""

    def write(fh: IO[str]) -> None:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    atomic_write(path, write, "w")


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a compressed ``.npz`` atomically."""
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays), "wb")


def write_figure(path: Path, fig: Any, **savefig_kwargs: Any) -> None:
    """Save a matplotlib figure atomically, in the format of ``path``'s suffix.

    PDFs carry no creation date, so the same figure gives the same bytes every time.
    """
    fmt = Path(path).suffix.lstrip(".")
    metadata = {"CreationDate": None} if fmt == "pdf" else None
    atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, metadata=metadata, **savefig_kwargs), "wb")
