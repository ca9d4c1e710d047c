"""Mutation testing of rmsim's core with mutmut 3: each module against the test files that cover it.

Usage (``make mutation`` runs every module of :data:`MODULES` with ``JOBS`` workers, default 2)::

    .venv/bin/python tools/mutation.py                          # every module, 2 workers
    .venv/bin/python tools/mutation.py -j 1 sim/oracle.py       # some modules (their results are merged)
    .venv/bin/python tools/mutation.py --list                   # the module table: module -> test files
    .venv/bin/python tools/mutation.py --survivors sim/oracle.py  # the diff of every survivor of a module's last run
    .venv/bin/python tools/mutation.py --rescore                # re-apply tests/mutation_equivalents.txt only
    .venv/bin/python tools/mutation.py --retest sim/oracle.py   # re-check only the last run's survivors (new tests)
    .venv/bin/python tools/mutation.py --sample 0.5 sim/oracle.py  # a seeded random half of the module's mutants

For each module the driver snapshots the working tree (``sim/``, ``tests/``, ``experiments/``, ``configs/``,
``hydra_plugins/``) into ``mutants/<module>/`` with a ``[tool.mutmut]`` section naming that module alone
(``only_mutate``) and its test files (``pytest_add_cli_args_test_selection``), and runs ``mutmut run`` there. mutmut
copies that snapshot again into ``mutants/<module>/mutants/`` and mutates only the copy, so nothing under ``sim/``
is ever touched. mutmut records which selected tests reach each function and runs, per mutant, only those (with
``-x``, a CPU-time limit of ``(expected test time + 2 s) x 5`` and hypothesis's derandomised ``ci`` profile).

Mutants listed in ``tests/mutation_equivalents.txt`` (``<mutant id>  # reason``, one a line) are excluded from the
score. The score is ``(killed + timed out) / (tested - equivalent)``: a mutant that no selected test reaches
("no tests") counts as a survivor; ``tested`` is every generated mutant, or with ``--sample f`` a seeded random
fraction ``f`` of them (the others are "not checked"). ``--retest`` re-runs only the survivors of a module's last
run, in its ``mutants/<module>/`` copy with the test files refreshed (the module's source must be unchanged).
Results go to ``results/mutation.json`` (one entry per module, merged with the entries of modules not run this
time), with the surviving mutants' ids and one-line diffs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "mutants"
RESULTS = ROOT / "results" / "mutation.json"
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.txt"
#: further equivalents files read with it (``tests/mutation_equivalents_<area>.txt``: one per area, so that runs on
#: different modules can list their equivalents side by side without editing one file)
EQUIVALENTS_MORE = "mutation_equivalents_*.txt"
#: what a module's tests need besides ``sim/`` (copied into each module's snapshot)
ALSO_COPY = ["tests", "experiments", "configs", "hydra_plugins"]

#: module -> the test files that cover it (files that do not exist yet are skipped, with a note)
MODULES: dict[str, list[str]] = {
    # worlds: exact solving (backward induction, the soft optimum), evaluation, sampling, the two layouts.
    # tests/test_markov.py is left out (about 25 s per mutant that survives the others: hours per module); the pins
    # of tests/test_pins_worlds.py check the Markov world against the tree instead
    "sim/worlds/base.py": [
        "tests/test_mdp.py",
        "tests/test_solvers.py",
        "tests/test_blocks.py",
        "tests/test_env.py",
        "tests/test_pins_worlds.py",
    ],
    "sim/worlds/enumerated.py": [
        "tests/test_mdp.py",
        "tests/test_solvers.py",
        "tests/test_blocks.py",
        "tests/test_pins_worlds.py",
    ],
    "sim/worlds/markov.py": [
        "tests/test_markov_env.py",
        "tests/test_blocks.py",
        "tests/test_pins_worlds.py",
    ],
    "sim/features.py": [
        "tests/test_oracle.py",
        "tests/test_markov.py",
        "tests/test_pins_features.py",
    ],
    "sim/oracle.py": [
        "tests/test_oracle.py",
        "tests/test_solvers.py",
        "tests/test_markov.py",
        "tests/test_pins_oracle.py",
    ],
    "sim/reference.py": [
        "tests/test_solvers.py",
        "tests/test_markov.py",
        "tests/test_pins_oracle.py",
    ],
    "sim/build.py": [
        "tests/test_blocks.py",
        "tests/test_env.py",
        "tests/test_corruption.py",
        "tests/test_markov.py",
        "tests/test_pins_build.py",
    ],
    "sim/goodhart.py": ["tests/test_goodhart.py", "tests/test_pins_agents.py", "tests/test_pins_goodhart.py"],
    "sim/metrics.py": [
        "tests/test_score.py",
        "tests/test_corruption.py",
        "tests/test_feedback.py",
        "tests/test_pins_metrics.py",
    ],
    "sim/corruption/channel.py": [
        "tests/test_corruption.py",
        "tests/test_markov_env.py",
        "tests/test_env.py",
        "tests/test_heavy_tails.py",
        "tests/test_pins_corruption.py",
    ],
    "sim/corruption/misspec.py": [
        "tests/test_corruption.py",
        "tests/test_markov.py",
        "tests/test_pins_corruption.py",
    ],
    "sim/corruption/noise.py": [
        "tests/test_corruption.py",
        "tests/test_heavy_tails.py",
        "tests/test_pins_corruption.py",
    ],
    "sim/feedback/teachers.py": [
        "tests/test_feedback.py",
        "tests/test_markov.py",
        "tests/test_pins_feedback.py",
    ],
    "sim/feedback/datasets.py": [
        "tests/test_feedback.py",
        "tests/test_reward_models.py",
        "tests/test_pins_feedback.py",
    ],
    "sim/feedback/active.py": [
        "tests/test_active_queries.py",
        "tests/test_pins_feedback.py",
        "tests/test_pins_active.py",
    ],
    "sim/reward_models/fit.py": [
        "tests/test_reward_models.py",
        "tests/test_pins_reward_models.py",
    ],
    "sim/reward_models/model.py": [
        "tests/test_reward_models.py",
        "tests/test_markov.py",
        "tests/test_pins_reward_models.py",
    ],
    # agents' update rules
    # base and linear against their pins alone: a mutant that never ends a training loop is stopped only by the
    # CPU-time limit, minutes per mutant under the convergence tests of test_agents.py and test_ppo.py
    "sim/agents/base.py": ["tests/test_pins_agents.py"],
    "sim/agents/planners.py": ["tests/test_agents.py", "tests/test_pins_agents.py"],
    "sim/agents/tabular.py": ["tests/test_agents.py", "tests/test_pins_agents.py"],
    "sim/agents/linear.py": ["tests/test_pins_agents.py"],
    "sim/agents/rl_free.py": ["tests/test_agents.py", "tests/test_markov.py", "tests/test_pins_agents.py"],
    "sim/agents/ppo.py": ["tests/test_ppo.py", "tests/test_pins_agents.py"],
    "sim/rlhf.py": [
        "tests/test_reward_models.py",
        "tests/test_feedback.py",
        "tests/test_markov.py",
        "tests/test_pins_rlhf.py",
    ],
}

#: mutmut exit code -> our category ("killed" includes a crash of the test process)
CATEGORY = {
    1: "killed",
    3: "killed",
    -11: "killed",
    -9: "killed",
    0: "survived",
    5: "no_tests",
    33: "no_tests",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    36: "timeout",
    None: "not_checked",
}

_EQUIV_LINE = re.compile(r"^(?P<id>\S+)\s+#\s*(?P<reason>\S.*)$")


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def load_equivalents(path: Path = EQUIVALENTS) -> dict[str, str]:
    """``{mutant id: reason}`` from the equivalents file and the ``mutation_equivalents_*.txt`` files beside it (blank
    lines and ``#`` comment lines skipped)."""
    out: dict[str, str] = {}
    for more in [path, *sorted(path.parent.glob(EQUIVALENTS_MORE))]:
        out.update(_read_equivalents(more))
    return out


def _read_equivalents(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _EQUIV_LINE.match(line)
        if m is None:
            raise SystemExit(f"{path}:{n}: expected '<mutant id>  # reason', got {line!r}")
        out[m["id"]] = m["reason"]
    return out


def toml_list(xs: list[str]) -> str:
    return "[" + ", ".join(json.dumps(x) for x in xs) + "]"


def undecorate_registered(source: str) -> str:
    """``source`` with each module-level function decorated by ``@register(...)`` alone written as the plain function
    followed by ``name = register(...)(name)``: the same module to Python (that is what a decorator does, and
    ``sim.agents.base.register`` returns the function), but mutmut, which leaves decorated functions alone, then
    mutates the registered agents' bodies too. Other decorated functions are left as they are."""
    import libcst as cst

    module = cst.parse_module(source)
    body: list = []
    for stmt in module.body:
        dec = stmt.decorators[0].decorator if isinstance(stmt, cst.FunctionDef) and len(stmt.decorators) == 1 else None
        if isinstance(dec, cst.Call) and isinstance(dec.func, cst.Name) and dec.func.value == "register":
            name = stmt.name.value
            body.append(stmt.with_changes(decorators=[], leading_lines=stmt.decorators[0].leading_lines))
            call = cst.Call(func=dec, args=[cst.Arg(cst.Name(name))])
            body.append(cst.SimpleStatementLine([cst.Assign(targets=[cst.AssignTarget(cst.Name(name))], value=call)]))
        else:
            body.append(stmt)
    return module.with_changes(body=body).code


def prepared(module: str) -> str:
    """The source of ``module`` as mutmut is given it (:func:`undecorate_registered`)."""
    return undecorate_registered((ROOT / module).read_text())


def snapshot(module: str, tests: list[str], workdir: Path) -> None:
    """A fresh copy of the working tree in ``workdir`` whose pyproject.toml runs mutmut on ``module`` alone (the
    module as :func:`prepared` gives it)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in ["sim", *ALSO_COPY]:
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, workdir / name, ignore=ignore)
    (workdir / module).write_text(prepared(module))
    text = (ROOT / "pyproject.toml").read_text()
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)  # ours replaces any committed section
    text += f"""
[tool.mutmut]
source_paths = ["sim"]
only_mutate = [{json.dumps(module)}]
also_copy = {toml_list(ALSO_COPY)}
pytest_add_cli_args_test_selection = {toml_list(tests)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"]
timeout_multiplier = 5.0
timeout_constant = 2.0
use_git_change_detection = false
"""
    (workdir / "pyproject.toml").write_text(text)


def read_results(workdir: Path, module: str) -> dict[str, str]:
    """``{mutant id: category}`` from mutmut's meta file of ``module``."""
    meta = workdir / "mutants" / (module + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {k: CATEGORY.get(v, "suspicious") for k, v in codes.items()}


def diffs(workdir: Path, names: list[str]) -> dict[str, str]:
    """The ``-``/``+`` lines of each mutant's diff (mutmut's own), read in ``workdir``."""
    if not names:
        return {}
    code = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant\n"
        "out = {}\n"
        "for n in json.load(sys.stdin):\n"
        "    try:\n"
        "        d = get_diff_for_mutant(n, path=find_mutant(n).path)\n"
        "    except Exception as e:\n"
        "        d = f'(no diff: {e})'\n"
        "    out[n] = d\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, input=json.dumps(names), capture_output=True, text=True
    )
    if r.returncode != 0:
        return {n: "(no diff)" for n in names}
    out = {}
    for n, d in json.loads(r.stdout).items():
        lines = [x for x in d.splitlines() if x[:1] in "-+" and not x.startswith(("---", "+++"))]
        out[n] = " | ".join(x.strip() if len(x) < 200 else x.strip()[:200] + "..." for x in lines)
    return out


def score(results: dict[str, str], equivalents: dict[str, str]) -> dict:
    """Counts and the score of one module's results, equivalents excluded."""
    equiv = sorted(k for k in results if k in equivalents and results[k] != "not_checked")
    rest = {k: v for k, v in results.items() if k not in equivalents and v != "not_checked"}
    count = {c: sum(v == c for v in rest.values()) for c in ("killed", "timeout", "survived", "no_tests")}
    other = len(rest) - sum(count.values())
    counted = len(rest)
    detected = count["killed"] + count["timeout"]
    return {
        "generated": len(results),
        "tested": len(rest) + len(equiv),
        "not_checked": sum(v == "not_checked" for v in results.values()),
        "killed": count["killed"],
        "survived": count["survived"] + count["no_tests"] + other,
        "no_tests": count["no_tests"],
        "timed_out": count["timeout"],
        "other": other,
        "equivalent": len(equiv),
        "score": round(detected / counted, 4) if counted else None,
        "equivalent_but_killed": [k for k in equiv if results[k] in ("killed", "timeout")],
        "survivors": sorted(k for k, v in rest.items() if v not in ("killed", "timeout")),
    }


def mutant_names(workdir: Path, module: str) -> list[str]:
    """Every mutant id mutmut generates for ``module`` (computed in ``workdir``, whose config mutmut reads)."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from mutmut.mutation.file_mutation import mutate_file_contents\n"
        "from mutmut.utils.format_utils import get_mutant_name\n"
        "p = Path(sys.argv[1])\n"
        "print(json.dumps([get_mutant_name(p, n) for n in mutate_file_contents(str(p), p.read_text()).mutant_names]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, module], cwd=workdir, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def sample_names(names: list[str], fraction: float, seed: int = 0) -> list[str]:
    """A seeded simple random sample of ``round(fraction * len(names))`` mutant ids (in their original order)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    k = max(1, round(fraction * len(names)))
    return [names[i] for i in np.sort(rng.choice(len(names), size=k, replace=False))]


def run_module(module: str, jobs: int, verbose: bool, sample: float = 1.0, tests: list[str] | None = None) -> dict:
    """Run mutmut on ``module`` against its test files (``tests``, default the module table's)."""
    listed = MODULES[module] if tests is None else tests
    tests = [t for t in listed if (ROOT / t).exists()]
    missing = [t for t in listed if not (ROOT / t).exists()]
    workdir = WORK / slug(module)
    snapshot(module, tests, workdir)
    chosen = sample_names(mutant_names(workdir, module), sample) if sample < 1 else []
    env = dict(os.environ, CI="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    mutmut = Path(sys.executable).with_name("mutmut")
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    log = workdir / "mutmut.log"
    with log.open("w") as f:
        proc = subprocess.run(
            [str(mutmut), "run", "--max-children", str(jobs), *chosen],
            cwd=workdir,
            env=env,
            stdout=None if verbose else f,
            stderr=subprocess.STDOUT if not verbose else None,
        )
    wall = time.monotonic() - t0
    results = read_results(workdir, module)
    entry = {
        "tests": tests,
        "missing_tests": missing,
        "wall_time_s": round(wall, 1),
        "load_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "jobs": jobs,
        "sample": sample,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "mutmut_exit_code": proc.returncode,
        "results": results,
    }
    if proc.returncode != 0 or not results:
        tail = log.read_text().splitlines()[-15:] if log.exists() else []
        entry["error"] = "\n".join(tail)
    return entry


def retest_module(
    module: str,
    previous: dict,
    equivalents: dict[str, str],
    jobs: int,
    verbose: bool,
    complete: bool = False,
    tests: list[str] | None = None,
) -> dict:
    """Re-run only the last run's survivors of ``module`` (equivalents excluded) against the current tests.

    Reuses ``mutants/<module>/`` (the mutated copy of the last full run): the test files are refreshed and
    ``mutmut run <survivor ids>`` re-checks those mutants alone; every other verdict of the last run is kept. With
    ``complete`` the mutants a sampled run left unchecked are run too (the module is then tested in full). Valid
    only while the module's source is unchanged since that run (else a full run is needed, and this says so).
    """
    workdir = WORK / slug(module)
    if not (workdir / "mutants" / (module + ".meta")).exists():
        raise SystemExit(f"{module}: no previous run in {workdir}; run it in full first")
    if (workdir / module).read_text() != prepared(module):
        raise SystemExit(f"{module}: the source changed since its last run; run it in full again")
    names = [
        k
        for k, v in previous["results"].items()
        if v not in ("killed", "timeout") and (complete or v != "not_checked") and k not in equivalents
    ]
    listed = MODULES[module] if tests is None else tests
    tests = [t for t in listed if (ROOT / t).exists()]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in ALSO_COPY:  # fresh tests (mutmut copies them on into its own mutants/ again)
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, workdir / name, ignore=ignore, dirs_exist_ok=True)
    for src in (ROOT / "sim").rglob("*.py"):  # the other modules as they are now (the mutated one is unchanged)
        rel = src.relative_to(ROOT)
        if rel.as_posix() != module:
            for dst in (workdir / rel, workdir / "mutants" / rel):
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    text = (workdir / "pyproject.toml").read_text()
    text = re.sub(
        r"(?m)^pytest_add_cli_args_test_selection = .*$",
        lambda _: f"pytest_add_cli_args_test_selection = {toml_list(tests)}",
        text,
    )
    (workdir / "pyproject.toml").write_text(text)
    entry = {k: v for k, v in previous.items() if k in ("wall_time_s", "load_1min", "jobs", "sample", "finished")}
    entry.update(tests=tests, missing_tests=[t for t in listed if t not in tests], results=dict(previous["results"]))
    if not names:
        entry.update(retested=0, mutmut_exit_code=0)
        return entry
    env = dict(os.environ, CI="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    mutmut = Path(sys.executable).with_name("mutmut")
    t0 = time.monotonic()
    log = workdir / "mutmut-retest.log"
    with log.open("w") as f:
        proc = subprocess.run(
            [str(mutmut), "run", "--max-children", str(jobs), *names],
            cwd=workdir,
            env=env,
            stdout=None if verbose else f,
            stderr=subprocess.STDOUT if not verbose else None,
        )
    now = read_results(workdir, module)
    entry["results"].update({k: now[k] for k in names if k in now})
    entry.update(
        retested=len(names),
        retest_wall_time_s=round(time.monotonic() - t0, 1),
        retest_finished=datetime.now(UTC).isoformat(timespec="seconds"),
        mutmut_exit_code=proc.returncode,
    )
    if proc.returncode != 0:
        entry["error"] = "\n".join(log.read_text().splitlines()[-15:])
    return entry


def summarise(entry: dict, equivalents: dict[str, str], workdir: Path | None) -> dict:
    """The JSON entry of a module: counts, score, survivors with diffs, equivalents excluded."""
    s = score(entry["results"], equivalents)
    survivor_diffs = diffs(workdir, s["survivors"]) if workdir is not None and workdir.exists() else {}
    out = {k: v for k, v in entry.items() if k not in ("results", "listed_equivalent_but_killed")}
    out.update({k: v for k, v in s.items() if k not in ("survivors", "equivalent_but_killed")})
    out["survivors"] = {k: survivor_diffs.get(k, "") for k in s["survivors"]}
    out["equivalents"] = {k: equivalents[k] for k in sorted(entry["results"]) if k in equivalents}
    if s["equivalent_but_killed"]:
        out["listed_equivalent_but_killed"] = s["equivalent_but_killed"]
    out["results"] = entry["results"]
    return out


def load_json() -> dict:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"modules": {}}


def write_json(data: dict, equivalents: dict[str, str]) -> None:
    known = {k for m in data["modules"].values() for k in m.get("results", {})}
    stale = sorted(
        k for k in equivalents if k not in known and any(k.startswith(slug(m) + ".") for m in data["modules"])
    )
    order = {m: i for i, m in enumerate(MODULES)}
    data["modules"] = dict(sorted(data["modules"].items(), key=lambda kv: order.get(kv[0], len(order))))
    data["stale_equivalents"] = stale
    data["source_changed_since_run"] = source_changed(list(data["modules"]))
    data["score_rule"] = (
        "(killed + timed_out) / (tested - equivalent); 'no tests' mutants count as survived; with --sample, "
        "tested is the seeded sample and the rest is 'not_checked'"
    )
    data["tool"] = f"mutmut {mutmut_version()}"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False) + "\n")
    tmp.replace(RESULTS)


def source_changed(modules: list[str]) -> list[str]:
    """The modules whose source differs from the copy their last run mutated (``mutants/<module>/``): their scores
    describe older code and need a full run again. A module without that copy is not listed (nothing to compare)."""
    out = []
    for module in modules:
        copy = WORK / slug(module) / module
        if copy.exists() and (ROOT / module).exists() and copy.read_text() != prepared(module):
            out.append(module)
    return out


def mutmut_version() -> str:
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        return version("mutmut")
    return "?"


def table(data: dict, modules: list[str] | None = None) -> str:
    head = ("module", "generated", "tested", "killed", "survived", "timeout", "equiv", "score", "wall s")
    rows = [f"{head[0]:28s} " + " ".join(f"{h:>9s}" for h in head[1:])]
    for name, m in data["modules"].items():
        if modules and name not in modules:
            continue
        sc = "-" if m.get("score") is None else f"{100 * m['score']:.1f}%"
        cells = [m.get(k, 0) for k in ("generated", "tested", "killed", "survived", "timed_out", "equivalent")]
        cells[1] = m.get("tested", cells[0])
        rows.append(f"{name:28s} " + " ".join(f"{c:9d}" for c in cells) + f" {sc:>9s} {m.get('wall_time_s', 0):9.0f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="modules to run (default: all of the module table)")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="mutmut workers (default 2)")
    ap.add_argument("--list", action="store_true", help="print the module table and exit")
    ap.add_argument("--survivors", action="store_true", help="print the survivors of the modules' last run")
    ap.add_argument("--rescore", action="store_true", help="re-apply the equivalents file to the stored results")
    ap.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="test a seeded random fraction of each module's mutants (default 1: all); the rest are 'not checked'",
    )
    ap.add_argument(
        "--retest", action="store_true", help="re-run only the survivors of the modules' last run (tests refreshed)"
    )
    ap.add_argument(
        "--complete", action="store_true", help="with --retest: also run the mutants a sampled run left unchecked"
    )
    ap.add_argument(
        "--tests",
        nargs="+",
        metavar="FILE",
        help="with one module: run it against these test files instead of the module table's (recorded in the json)",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="show mutmut's output")
    args = ap.parse_args(argv)
    modules = args.modules or list(MODULES)
    if args.tests and len(modules) != 1:
        ap.error("--tests needs exactly one module")
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        ap.error(f"not in the module table: {unknown} (known: {list(MODULES)})")
    if args.list:
        for m in modules:
            print(f"{m}: {' '.join(MODULES[m])}")
        return 0
    equivalents = load_equivalents()
    data = load_json()
    if args.survivors:
        for m in modules:
            for k, d in data["modules"].get(m, {}).get("survivors", {}).items():
                print(f"{k}: {d}")
        return 0
    if args.rescore:
        for name, m in data["modules"].items():
            workdir = WORK / slug(name)
            data["modules"][name] = summarise(m, equivalents, workdir)
        write_json(data, equivalents)
        print(table(data))
        return 0
    failed = False
    if args.retest:
        for m in modules:
            if m not in data["modules"]:
                continue
            entry = retest_module(
                m, data["modules"][m], equivalents, args.jobs, args.verbose, args.complete, args.tests
            )
            if args.complete:
                entry["sample"] = 1.0
            data = load_json()
            data["modules"][m] = summarise(entry, equivalents, WORK / slug(m))
            write_json(data, equivalents)
            failed |= "error" in entry
            print(table(data, [m]).splitlines()[-1], flush=True)
        return 1 if failed else 0
    for m in modules:
        listed = args.tests or MODULES[m]
        print(f"mutation: {m} against {' '.join(t for t in listed if (ROOT / t).exists())}", flush=True)
        entry = run_module(m, args.jobs, args.verbose, args.sample, args.tests)
        data = load_json()  # merge with what other invocations wrote meanwhile
        data["modules"][m] = summarise(entry, equivalents, WORK / slug(m))
        write_json(data, equivalents)
        if "error" in entry:
            failed = True
            print(f"mutation: {m}: mutmut failed (exit {entry['mutmut_exit_code']}):\n{entry['error']}", flush=True)
        print(table(data, [m]).splitlines()[-1], flush=True)
    print(table(data, modules))
    if data.get("source_changed_since_run"):
        print(f"changed since their last run (run them again): {' '.join(data['source_changed_since_run'])}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
