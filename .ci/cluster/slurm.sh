#!/usr/bin/env bash
# A one-node SLURM cluster from Debian's packages, for tests and for trying the slurm launcher by hand.
#
#   .ci/cluster/slurm.sh install   apt-get install the packages that are missing (needs root)
#   .ci/cluster/slurm.sh up        start the cluster, or reuse it if it is already running and healthy
#   .ci/cluster/slurm.sh down      cancel its jobs and stop every daemon it started
#   .ci/cluster/slurm.sh status    what is running
#   .ci/cluster/slurm.sh env       the line to eval so that sinfo, sbatch and hydra's slurm launcher use it
#
# Everything (configs, munge key, state, database, logs, pid files) lives in $RMSIM_SLURM_DIR
# (default /tmp/rmsim-slurm); nothing under /etc is touched. All daemons run as root except munged (as munge),
# with no systemd: munged, then MariaDB and slurmdbd (accounting: submitit needs a working `sacct` to see that a
# job was cancelled, otherwise it waits for its result forever), then slurmctld and slurmd.
# Ports: slurmctld 6817, slurmd 6818, slurmdbd 6819, MariaDB 6830 (127.0.0.1 only).
set -euo pipefail

DIR=${RMSIM_SLURM_DIR:-/tmp/rmsim-slurm}
CLUSTER=rmsim
PARTITION=debug
DB_PORT=6830
PORTS=(6817 6818 6819 "$DB_PORT")
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server-core mariadb-client-core)
BINARIES=(munged munge slurmctld slurmd sinfo squeue sbatch scancel sacct sacctmgr scontrol slurmdbd mariadbd
          mariadb-install-db)
# pid file and process name (/proc/<pid>/comm) of each daemon, in start order
DAEMONS=(munged slurmdbd mariadbd slurmctld slurmd)
PID_munged=$DIR/munge/munged.pid
PID_mariadbd=$DIR/db/mariadbd.pid
PID_slurmdbd=$DIR/run/slurmdbd.pid
PID_slurmctld=$DIR/run/slurmctld.pid
PID_slurmd=$DIR/run/slurmd.pid
export SLURM_CONF=$DIR/slurm.conf

say() { echo "slurm.sh: $*"; }
die() { echo "slurm.sh: ERROR: $*" >&2; exit 1; }

need_root() { [[ $(id -u) == 0 ]] || die "must run as root (the daemons run as root and munged as munge)"; }

missing_binaries() {
    local b
    for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null || echo "$b"; done
}

cmd_install() {
    need_root
    local missing
    missing=$(missing_binaries | tr '\n' ' ')
    if [[ -z $missing ]]; then
        say "packages already installed ($(slurmctld -V))"
        return
    fi
    command -v apt-get >/dev/null || die "missing $missing and no apt-get to install them"
    say "installing ${PACKAGES[*]} (missing: $missing)"
    local t0=$SECONDS policy=/usr/sbin/policy-rc.d made_policy=
    if [[ ! -e $policy ]]; then  # keep the packages' maintainer scripts from starting daemons with /etc configs
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local rc=0
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; } ||
        rc=$?
    [[ -n $made_policy ]] && rm -f "$policy"
    [[ $rc == 0 ]] || die "apt-get failed (exit $rc)"
    missing=$(missing_binaries | tr '\n' ' ')
    [[ -z $missing ]] || die "still missing after apt-get install: $missing"
    say "installed in $((SECONDS - t0)) s ($(slurmctld -V))"
}

# ---- processes ---------------------------------------------------------------------------------------------

# the pid of a daemon of ours, if it is running (the pid file's process must still carry the daemon's name)
daemon_pid() {
    local var=PID_$1 pid
    [[ -r ${!var} ]] || return 1
    pid=$(tr -dc 0-9 <"${!var}")
    [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$1" ]] || return 1
    # a zombie (exited, not yet reaped by whoever started it) is not running
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    echo "$pid"
}

wait_gone() {  # wait_gone <pid> <seconds>
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -d /proc/$1 && $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]] || return 0
        sleep 0.1
    done
    return 1
}

stop_daemon() {
    local pid
    pid=$(daemon_pid "$1") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 20; then
        say "$1 ($pid) ignored SIGTERM for 20 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || die "could not stop $1 (pid $pid)"
    fi
    say "stopped $1 ($pid)"
}

cmd_down() {
    need_root
    if daemon_pid slurmctld >/dev/null; then
        local jobs
        jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
        if [[ -n ${jobs// /} ]]; then
            say "cancelling the jobs still queued or running: $jobs"
            # shellcheck disable=SC2086
            scancel $jobs || true
            local i
            for ((i = 0; i < 200; i++)); do [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break; sleep 0.1; done
        fi
    fi
    local d
    for d in slurmd slurmctld slurmdbd mariadbd munged; do stop_daemon "$d"; done
}

logs() {
    local f
    for f in "$DIR"/log/*.log "$DIR"/munge/munged.log "$DIR"/db/mariadbd.err; do
        [[ -s $f ]] || continue
        echo "---- tail of $f"
        tail -n 25 "$f"
    done >&2
}

fail() { logs; die "$*"; }

wait_for() {  # wait_for <seconds> <what> <command...>: poll the command every 0.2 s until it succeeds
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "$what not ready after $secs s"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- configuration -----------------------------------------------------------------------------------------

node_line() {  # this machine as slurmd sees it: NodeName=<host> CPUs=... RealMemory=...
    slurmd -C | head -n 1
}

write_slurm_conf() {  # write_slurm_conf <file>
    local node name
    node=$(node_line)
    [[ $node == NodeName=* ]] || die "unexpected output of slurmd -C: $node"
    name=${node%% *}
    name=${name#NodeName=}
    cat >"$1" <<EOF
# written by .ci/cluster/slurm.sh: a one-node cluster on $name
ClusterName=$CLUSTER
SlurmctldHost=$name(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$PID_slurmctld
SlurmdPidFile=$PID_slurmd
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# a cancelled job gets SIGTERM, then SIGKILL this many seconds later (submitit ignores SIGTERM)
KillWait=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
# the munge socket for talking to slurmdbd
AccountingStoragePass=$DIR/munge/munge.socket
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$name Default=YES MaxTime=INFINITE State=UP
EOF
}

write_slurmdbd_conf() {  # write_slurmdbd_conf <file> <database password>
    cat >"$1" <<EOF
# written by .ci/cluster/slurm.sh
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$PID_slurmdbd
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$2
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$1"
}

# ---- up ----------------------------------------------------------------------------------------------------

healthy() {
    local d
    [[ -d $DIR ]] || return 1
    for d in "${DAEMONS[@]}"; do daemon_pid "$d" >/dev/null || return 1; done
    [[ -r $SLURM_CONF ]] || return 1
    # the machine and the scripts still give the same slurm.conf
    write_slurm_conf "$DIR/slurm.conf.new" && cmp -s "$DIR/slurm.conf.new" "$SLURM_CONF" || return 1
    node_ready && accounting_ready
}

node_ready() { [[ $(sinfo -h -p "$PARTITION" -o %t 2>/dev/null) =~ ^(idle|mix|alloc)$ ]]; }
accounting_ready() { [[ $(sacctmgr -n -P list cluster format=cluster 2>/dev/null) == *"$CLUSTER"* ]]; }

cmd_up() {
    need_root
    local missing
    missing=$(missing_binaries | tr '\n' ' ')
    [[ -z $missing ]] || die "missing $missing: run '$0 install' first"
    if healthy; then
        say "reusing the cluster already running in $DIR ($(sinfo -h -o '%n %t' | head -n 1))"
        return
    fi
    local t0=$SECONDS
    cmd_down  # whatever is left of an earlier cluster in $DIR
    local p
    for p in "${PORTS[@]}"; do
        port_free "$p" || die "port $p on 127.0.0.1 is in use by a process this script did not start (another SLURM or database?)"
    done
    # a fresh start: job ids, controller state and the accounting database must agree, so none is kept
    [[ $DIR == /?*/?* ]] || die "RMSIM_SLURM_DIR=$DIR: give an absolute directory of its own, e.g. /tmp/rmsim-slurm"
    if [[ -d $DIR && ! -e $DIR/.rmsim-slurm && -n $(ls -A "$DIR") ]]; then
        die "$DIR is not empty and was not made by this script; not deleting it (set RMSIM_SLURM_DIR)"
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"/{state,spool,log,run}
    touch "$DIR/.rmsim-slurm"
    chmod 755 "$DIR"

    # munge: a fresh 1024-byte key, readable by munge only; the socket directory must be world-searchable
    install -d -m 755 -o munge -g munge "$DIR/munge"
    install -d -m 700 -o munge -g munge "$DIR/munge/etc"
    dd if=/dev/urandom of="$DIR/munge/etc/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$DIR/munge/etc/munge.key"
    chmod 400 "$DIR/munge/etc/munge.key"
    runuser -u munge -- munged --key-file="$DIR/munge/etc/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$PID_munged" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/etc/munged.seed" ||
        fail "munged did not start"
    wait_for 10 "munged" bash -c "munge -n -S '$DIR/munge/munge.socket' | unmunge -S '$DIR/munge/munge.socket'"

    # MariaDB for slurmdbd, on 127.0.0.1 only, with a random password for slurmdbd's user
    local pass
    pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    mkdir -p "$DIR/db"
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/db/data" --auth-root-authentication-method=normal \
        --skip-test-db >"$DIR/db/install.log" 2>&1 || { cat "$DIR/db/install.log" >&2; fail "mariadb-install-db failed"; }
    cat >"$DIR/db/init.sql" <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
    chmod 600 "$DIR/db/init.sql"
    setsid -f mariadbd --no-defaults --user=root --datadir="$DIR/db/data" --socket="$DIR/db/mariadbd.sock" \
        --pid-file="$PID_mariadbd" --log-error="$DIR/db/mariadbd.err" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --skip-name-resolve --init-file="$DIR/db/init.sql" --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1
    wait_for 30 "MariaDB" test -S "$DIR/db/mariadbd.sock"

    write_slurmdbd_conf "$DIR/slurmdbd.conf" "$pass"  # slurmdbd reads it from the directory of $SLURM_CONF
    write_slurm_conf "$SLURM_CONF"
    slurmdbd || fail "slurmdbd did not start"
    wait_for 30 "slurmdbd" grep -q "slurmdbd version .* started" "$DIR/log/slurmdbd.log"
    slurmctld || fail "slurmctld did not start"
    slurmd || fail "slurmd did not start"
    wait_for 30 "the node (see sinfo)" node_ready
    wait_for 30 "accounting (the cluster registered with slurmdbd)" accounting_ready
    say "up in $((SECONDS - t0)) s: $(node_line | cut -d' ' -f1,2,7), partition $PARTITION, accounting on; $DIR"
}

cmd_status() {
    local d pid
    for d in "${DAEMONS[@]}"; do
        if pid=$(daemon_pid "$d"); then say "$d running ($pid)"; else say "$d not running"; fi
    done
    if daemon_pid slurmctld >/dev/null; then sinfo; squeue; fi
}

case ${1:-} in
    install) cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *)
        sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
