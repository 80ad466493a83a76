#!/usr/bin/env bash
# Starts a throwaway SLURM cluster on this machine: munge, MariaDB, slurmdbd, slurmctld and N slurmd
# (node 0 on the host, nodes 1..N-1 in network namespaces), all state under DIR, which must be new or
# empty. On success DIR/env.sh holds the client settings (source it); on failure everything started is
# stopped again and one line on stderr says why. Needs root and the packages that .ci/run installs.
# Usage: start.sh DIR [--nodes N] [--cpus C] [--conf 'Key=Value']...
# Exit status: 0 up, 1 failed, 2 cannot run on this machine (not root, programs missing).
#   --cpus  CPUs each node offers (default: this machine's count; may be higher to run more jobs)
#   --conf  an extra slurm.conf line (repeatable)
set -euo pipefail
prog=start.sh
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"

usage="usage: start.sh DIR [--nodes N] [--cpus C] [--conf 'Key=Value']..."
dir='' nodes=1 cpus=$(nproc) conf=()
while (($#)); do
    case $1 in
    --nodes | --cpus | --conf)
        (($# >= 2)) || die "$1 needs a value; $usage"
        case $1 in
        --nodes) nodes=$2 ;;
        --cpus) cpus=$2 ;;
        --conf) conf+=("$2") ;;
        esac
        shift 2
        ;;
    -*) die "unknown option '$1'; $usage" ;;
    *)
        [[ -z $dir ]] || die "one DIR only; $usage"
        dir=$1
        shift
        ;;
    esac
done
[[ -n $dir ]] || die "$usage"
[[ $nodes =~ ^[1-9][0-9]?$ ]] || die "--nodes must be 1..99, got '$nodes'"
[[ $cpus =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive integer, got '$cpus'"
cannot_run() {
    echo "$prog: $*" >&2
    exit 2
}
((EUID == 0)) || cannot_run "must run as root (it runs the daemons as root and creates network namespaces)"
need=(python3 flock mungekey munged munge unmunge mariadb-install-db mariadbd mariadb mariadb-admin
    slurmdbd slurmctld slurmd sacctmgr scontrol sinfo sacct squeue scancel)
((nodes == 1)) || need+=(ip nsenter unshare mount hostname)
missing=()
for program in "${need[@]}"; do
    command -v "$program" >/dev/null || missing+=("$program")
done
((${#missing[@]} == 0)) || cannot_run "missing programs: ${missing[*]} (apt-get install slurmctld slurmd slurm-client munge slurmdbd mariadb-server iproute2)"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
[[ -z $(ls -A "$dir") ]] || die "$dir is not empty (a cluster there? stop it with: $here/stop.sh $dir)"
((${#dir} <= 80)) || die "$dir is too long a path for the unix sockets under it (80 characters at most)"
touch "$dir/.attnsweep-testcluster" # stop.sh removes only what a directory with this mark holds

fail() {
    "$here/stop.sh" --keep-logs "$dir" >/dev/null 2>&1 9>&- || true
    [[ -z ${1:-} ]] || echo "$prog: $1" >&2
    exit 1
}
trap 'fail "interrupted; stopped what had started (logs: $dir/log/)"' INT TERM

exec 9>>"$lockfile"
flock -w 300 9 || fail "another cluster start has held $lockfile for 300 s"
mkdir "$dir/pids"
env "$marker=$dir" python3 "$here/keeper.py" "$dir/pids/keeper.pid" \
    "$here/launch.sh" "$dir" "$nodes" "$cpus" "${conf[@]}" 9>&- || fail
