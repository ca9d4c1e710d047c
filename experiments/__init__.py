"""Command-line experiments: hydra entry point, tables and figures. ``sim`` stays free of all of this."""

import os

# Multi-threaded BLAS makes small linear algebra several times slower on a 2-core machine.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
