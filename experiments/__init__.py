"""Command-line experiments: hydra entry point, tables and figures. ``sim`` stays free of all of this."""

import os
from functools import lru_cache

# Multi-threaded BLAS makes small linear algebra several times slower on a 2-core machine.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from omegaconf import OmegaConf  # noqa: E402

#: Longer job directory names are replaced by a hash (a file name may have at most 255 bytes).
MAX_SUBDIR = 200


def job_subdir(override_dirname: str, seed: object) -> str:
    """A sweep job's directory name: its overrides, then the seed last; a stable short hash of the overrides when
    that would be too long for a file name (the overrides themselves are in ``.hydra/overrides.yaml``)."""
    import hashlib

    name = f"{override_dirname},seed={seed}" if override_dirname else f"seed={seed}"
    if len(name.encode()) <= MAX_SUBDIR:
        return name
    digest = hashlib.sha256(override_dirname.encode()).hexdigest()[:16]
    return f"overrides-{digest},seed={seed}"


# registered wherever a job may run (the main process, joblib workers, submitit jobs all import this package)
OmegaConf.register_new_resolver("rmsim_subdir", job_subdir, replace=True)


def _by_scale(scale: str, paper: object, sanity: object) -> object:
    """``${by_scale:${scale},<paper value>,<sanity value>}``: a named experiment's setting at each scale."""
    if scale not in ("paper", "sanity"):
        raise ValueError(f"scale = {scale!r} is invalid: allowed paper or sanity")
    return paper if scale == "paper" else sanity


OmegaConf.register_new_resolver("by_scale", _by_scale, replace=True)


def parse_overrides(lines) -> list:
    """Hydra's parse of command-line overrides (``OverridesParser.parse_overrides``), each distinct line parsed once
    per process: the grammar costs about a millisecond per override, and a sweep's jobs repeat theirs in every check
    (composition, boolean keys, inapplicable settings, directory names). The parsed overrides are shared: read them,
    do not modify them."""
    return [_parse_override(line) for line in lines]


@lru_cache(maxsize=1 << 16)
def _parse_override(line: str):
    return _parser().parse_overrides([line])[0]


@lru_cache(maxsize=1)
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()
