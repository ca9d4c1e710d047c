"""A sweep on a real SLURM cluster: launched through ``hydra/launcher=slurm``, one job cancelled mid-run with
``scancel``, the same command run again to resume, and ``experiments.collect`` giving the same table as the same
sweep run locally.

Needs a running cluster and ``SLURM_CONF``: ``make cluster-test`` brings up a one-node cluster
(``.ci/cluster/slurm.sh``) and runs this module with ``RMSIM_CLUSTER_TEST=1``; everywhere else it is skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("RMSIM_CLUSTER_TEST") != "1",
    reason="needs a SLURM cluster: `make cluster-test` brings one up (root and apt-get) and runs this",
)

ROOT = Path(__file__).resolve().parents[1]
FAST, SLOW = 20_000, 1_000_000  # Q-learning episodes on env=small: about 1 s and 8 s a job on one core
SWEEP = ["env=small", "agent=q_learning", f"agent.steps={FAST},{SLOW}", "seed=0,1"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
VICTIM = f"agent.steps={SLOW},agent=q_learning,env=small,seed=1"  # the job cancelled mid-run: the array's last
TIMEOUT = 240  # seconds, for any one command


def log(message: str) -> None:
    print(f"[cluster-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sh(*args: str, timeout: float = 30) -> str:
    """Run a command; its stdout. A failure fails the test with its output."""
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert p.returncode == 0, f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def sweep(sweep_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.run", "-m", *SWEEP, *extra, f"hydra.sweep.dir={sweep_dir}"]


def wait_until(what: str, predicate, timeout: float = 60, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def array_id(sweep_dir: Path) -> str | None:
    """The SLURM job id of the sweep's array, from submitit's folder (``.submitit/<id>`` is made at submission)."""
    folder = sweep_dir / ".submitit"
    ids = [p.name for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(ids, key=int) if ids else None  # the newest


def job_state(job: str) -> str:
    """``squeue``'s state of a queued or running job; empty once it has left the queue."""
    p = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return p.stdout.strip() if p.returncode == 0 else ""  # squeue fails on an id the controller has forgotten


def accounted_states(job: str) -> dict[str, str]:
    """``sacct``'s state of every task of an array (from the accounting database)."""
    out = sh("sacct", "-n", "-P", "-X", "-j", job, "-o", "JobID,State")
    return dict(line.split("|", 1) for line in out.splitlines() if line)


def collect(sweep_dir: Path) -> pd.DataFrame:
    """``python -m experiments.collect`` on the sweep, and the table it wrote, minus the timing column and the
    sweep directory each row came from (they differ between the two sweeps by construction)."""
    sh(sys.executable, "-m", "experiments.collect", str(sweep_dir), timeout=TIMEOUT)
    table = pd.read_parquet(sweep_dir / "table.parquet").drop(columns=["wall_time_s", "sweep_dir"])
    return table.sort_values("run_dir").reset_index(drop=True)


def test_slurm_sweep_cancel_resume_collect(tmp_path: Path) -> None:
    assert os.environ.get("SLURM_CONF"), "SLURM_CONF is not set: run this through `make cluster-test`"
    log(f"cluster: {sh('sinfo', '-h', '-o', '%P %t %c CPUs %m MB %N').strip()}")

    # 1. the reference: the same sweep run locally, two processes at a time
    t0 = time.monotonic()
    local = tmp_path / "local"
    sh(*sweep(local, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), timeout=TIMEOUT)
    log(f"local sweep: {time.monotonic() - t0:.1f} s")

    # 2. on the cluster, with one job cancelled while it runs
    t0 = time.monotonic()
    remote = tmp_path / "slurm"
    out1 = tmp_path / "slurm-first.log"
    with open(out1, "w") as fh:
        driver = subprocess.Popen(sweep(remote, *SLURM), stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    first = None

    def running() -> bool:
        """True while the launcher runs; its output in the failure if it ended early."""
        assert driver.poll() is None, f"the launcher exited {driver.returncode} early:\n{out1.read_text()}"
        return True

    try:
        first = wait_until("the sweep's job array to be submitted", lambda: running() and array_id(remote))
        listing = wait_until("hydra's job listing", lambda: re.findall(r"#(\d+) : (.*)", out1.read_text()))
        assert len(listing) == 4, listing
        index = [i for i, job in listing if f"agent.steps={SLOW}" in job and job.endswith("seed=1")]
        assert index == [str(len(listing) - 1)], f"expected the slow seed=1 job last: {listing}"
        victim = f"{first}_{index[0]}"
        run_log = remote / VICTIM / "run.log"
        # mid-run: SLURM has started it and the job has opened its run log (it then trains for several seconds)
        wait_until(f"job {victim} to run", lambda: running() and job_state(victim) == "RUNNING" and run_log.exists())
        sh("scancel", victim)
        log(f"submitted array {first}; cancelled {victim} ({VICTIM}) while it ran")
        rc = driver.wait(timeout=TIMEOUT)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        if first:
            subprocess.run(["scancel", first], capture_output=True)  # nothing left behind if this failed
    text = out1.read_text()
    assert rc != 0, f"the launcher did not report the cancelled job:\n{text}"
    assert re.search(rf"Job {victim} .*\n.*state: CANCELLED", text), f"no CANCELLED job {victim} in:\n{text}"
    assert not (remote / VICTIM / "metrics.json").exists(), "the cancelled job finished anyway: make it slower"
    finished = sorted(p.parent.name for p in remote.glob("*/metrics.json"))
    assert len(finished) == 3 and VICTIM not in finished, finished
    done = ["CANCELLED by 0", "COMPLETED", "COMPLETED", "COMPLETED"]
    wait_until("sacct to record the array", lambda: sorted(accounted_states(first).values()) == done, timeout=30)
    states = accounted_states(first)
    wait_until(f"array {first} to leave the queue", lambda: not job_state(first))
    log(f"first run: {time.monotonic() - t0:.1f} s, exit {rc}; sacct: {states}")

    # 3. the same command again: only the cancelled job is launched
    t0 = time.monotonic()
    p = subprocess.run(sweep(remote, *SLURM), capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    text = p.stdout + p.stderr
    (tmp_path / "slurm-resume.log").write_text(text)
    assert p.returncode == 0, f"the resumed sweep failed:\n{text}"
    assert "rmsim: 3 of 4 jobs already finished; not launching them" in text, text
    assert "rmsim: sweep finished: 1 ran, 3 skipped" in text, text
    second = array_id(remote)
    assert second != first, "the resumed job was not submitted to SLURM"
    wait_until(f"sacct to record array {second}", lambda: list(accounted_states(second).values()) == ["COMPLETED"])
    assert (remote / VICTIM / "metrics.json").exists()
    log(f"resumed run: {time.monotonic() - t0:.1f} s (array {second}: the cancelled job only)")

    # 4. the same table, but for the timing column
    expected, got = collect(local), collect(remote)
    assert len(got) == 4
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    log(f"collect: the slurm sweep's table equals the local sweep's ({got.shape[0]} runs x {got.shape[1]} columns)")
