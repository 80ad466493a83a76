# Helpers shared by start.sh, launch.sh and stop.sh (sourced, not run).

# Every process start.sh launches carries this variable (value: the cluster's DIR). stop.sh kills a
# pid from a pid file only when it still carries it, so a stale pid file never hits a reused pid.
marker=ATTNSWEEP_TESTCLUSTER
# Held while a cluster starts, so two starts on one machine never pick the same ports or subnet.
lockfile=/tmp/attnsweep-testcluster.lock

die() {
    echo "$prog: $*" >&2
    exit 1
}

# is_ours PID DIR: PID is alive and belongs to the cluster in DIR.
is_ours() {
    [[ $1 =~ ^[0-9]+$ ]] && { tr '\0' '\n' <"/proc/$1/environ"; } 2>/dev/null | grep -qxF "$marker=$2"
}

# pid_from FILE: the pid a pid file names, or nothing.
pid_from() {
    if [[ -s $1 ]]; then tr -dc '0-9' <"$1"; fi
}

# log_tail FILE: the last two non-empty lines of a log on one line (SLURM logs the cause, then
# "fatal: ..."), for one-line error messages.
log_tail() {
    grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 2 | paste -sd '|' | sed 's/|/ | /' || true
}
