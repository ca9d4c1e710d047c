from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# the small worlds every exact test enumerates: (n_prompts, vocab_size, horizon, eos)
SMALL_WORLDS = [(2, 4, 3, True), (2, 3, 4, True), (2, 4, 3, False), (2, 3, 4, False), (1, 2, 5, True)]


@pytest.fixture(params=SMALL_WORLDS, ids=lambda w: "P{}V{}H{}{}".format(*w[:3], "eos" if w[3] else "noeos"))
def small_world(request):
    from sim.worlds import EnumeratedWorld

    return EnumeratedWorld(*request.param)


def random_policy(rng: np.random.Generator, shape: tuple[int, int], sharp: float = 1.0) -> np.ndarray:
    logits = rng.normal(size=shape) * sharp
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook (see the end of this one)
def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only with ``RMSIM_SLOW=1`` (they are minutes, not seconds); tests marked ``fault``
    (a named experiment's sweep under a simulator fault) only with ``RMSIM_FAULTS=1`` (``make faults``)."""
    for marker, var in (("slow", "RMSIM_SLOW"), ("fault", "RMSIM_FAULTS")):
        if os.environ.get(var) == "1":
            continue
        skip = pytest.mark.skip(reason=f"{marker}: set {var}=1 to run")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
    # ``--dist loadgroup`` sends the tests of one xdist_group to one worker by a ``@group`` suffix on their node ids.
    # pytest-xdist 3.8 writes it to ``item._nodeid``, which pytest 9 no longer reads (it keeps ``item._id``), so the
    # groups were silently ignored and each claims sanity sweep ran on both workers. Write the suffix where pytest 9
    # reads it (once; a later xdist will have done it already).
    if getattr(config.option, "loadgroup", False):
        from _pytest.nodeid import coerce_node_id

        for item in items:
            mark = item.get_closest_marker("xdist_group")
            if mark is not None and "@" not in item.nodeid.rsplit("]", 1)[-1] and hasattr(item, "_id"):
                item._id = coerce_node_id(f"{item.nodeid}@{mark.args[0] if mark.args else 'default'}")
        # the long files first (a claims group is one indivisible unit; the command-line tests start processes): the
        # run then ends on short tests, and neither worker waits for the other at the end (measured: 1.78 of 2 cores
        # busy with collection order, the tail being test_runner's sweeps)
        items.sort(key=lambda item: 0 if Path(str(item.fspath)).name.startswith(FIRST) else 1)


#: Test files scheduled first under xdist (the slowest units).
FIRST = ("test_claims_", "test_runner", "test_cli", "test_hardening", "test_experiments", "test_plot")


_SANITY: dict[str, tuple[bool, object]] = {}


@pytest.fixture(scope="session")
def tables(tmp_path_factory):
    """For the claims modules: each named experiment's sanity sweep, run once per worker process (a session cache: a
    module-scoped one is torn down whenever the worker switches modules; the tests of one experiment stay on one
    worker: ``xdist_group`` above): ``tables(name) -> (claim held, table)``."""
    from tests.claims import sanity

    def get(name: str):
        if name not in _SANITY:
            _SANITY[name] = sanity(name, tmp_path_factory.mktemp(name))
        return _SANITY[name]

    return get
