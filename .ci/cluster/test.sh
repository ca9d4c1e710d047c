#!/usr/bin/env bash
# make cluster-test: a real one-node SLURM cluster (.ci/cluster/slurm.sh), and tests/test_cluster.py run on it.
# Skips (exit 0) only where it cannot run: not root, or no apt-get to install the packages. Anything else that
# goes wrong fails. The daemons are stopped at the end, unless RMSIM_KEEP_CLUSTER=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
CLUSTER=.ci/cluster/slurm.sh
start=$SECONDS

if [[ $(id -u) != 0 ]]; then
    echo "cluster-test: SKIPPED: needs root, to install SLURM's packages and run its daemons (running as $(id -un))"
    exit 0
fi
if ! command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null; then
    echo "cluster-test: SKIPPED: needs apt-get (Debian or Ubuntu) to install SLURM, munge and MariaDB"
    exit 0
fi

t=$SECONDS
$CLUSTER install
install_s=$((SECONDS - t))

if [[ ${RMSIM_KEEP_CLUSTER:-0} == 1 ]]; then
    echo "cluster-test: RMSIM_KEEP_CLUSTER=1: the cluster stays up; stop it with: $CLUSTER down"
else
    trap '$CLUSTER down' EXIT
fi
t=$SECONDS
$CLUSTER up
up_s=$((SECONDS - t))
eval "$($CLUSTER env)"

# the sweeps and the launcher's logs stay in $basetemp after the run (emptied at the start of the next one)
basetemp=${RMSIM_SLURM_DIR:-/tmp/rmsim-slurm}-test
RMSIM_CLUSTER_TEST=1 timeout 600 "$PY" -m pytest -p no:cacheprovider -s -v --basetemp="$basetemp" tests/test_cluster.py
echo "cluster-test: passed in $((SECONDS - start)) s (packages $install_s s, cluster up $up_s s)"
