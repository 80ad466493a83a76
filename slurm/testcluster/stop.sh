#!/usr/bin/env bash
# Stops the test cluster that start.sh started in DIR: cancels its jobs, stops each daemon by the pid
# in its pid file, SIGKILLs whatever is left of the cluster's process tree (by pid), deletes the
# network namespaces and links it made, and removes DIR. Safe to run twice or on a half-started one.
# Usage: stop.sh [--keep-logs] DIR
set -uo pipefail
prog=stop.sh
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"

keep_logs=0
[[ ${1:-} == --keep-logs ]] && keep_logs=1 && shift
(($# == 1)) || die "usage: stop.sh [--keep-logs] DIR"
[[ -f $1/.attnsweep-testcluster ]] || exit 0 # nothing of ours there (or stopped already)
dir=$(cd "$1" && pwd -P)
export SLURM_CONF=$dir/etc/slurm.conf
grace_s=15 # > KillWait in slurm.conf: steps that ignore SIGTERM get their SIGKILL from slurmd

# descendants PID: the live processes below PID, by the parent links in /proc.
descendants() {
    local -A kids=()
    local stat pid state ppid queue=("$1")
    for stat in /proc/[0-9]*/stat; do
        read -r line <"$stat" 2>/dev/null || continue
        pid=${stat#/proc/} pid=${pid%/stat}
        read -r state ppid _ <<<"${line##*) }"
        [[ $state == Z || $pid == "$$" ]] || kids[$ppid]+=" $pid"
    done
    while ((${#queue[@]})); do
        for pid in ${kids[${queue[0]}]:-}; do
            echo "$pid"
            queue+=("$pid")
        done
        queue=("${queue[@]:1}")
    done
}

# 1. Cancel the jobs while slurmctld runs, and give their steps the grace period to end.
ctld=$(pid_from "$dir/pids/slurmctld.pid")
if [[ -n $ctld ]] && is_ours "$ctld" "$dir"; then
    mapfile -t jobs < <(timeout 10 squeue -h -o %A 2>/dev/null)
    if ((${#jobs[@]})); then
        timeout 10 scancel "${jobs[@]}" 2>/dev/null
        deadline=$((SECONDS + grace_s))
        while [[ -n $(timeout 10 squeue -h -o %A 2>/dev/null) ]] && ((SECONDS < deadline)); do
            sleep 0.5
        done
    fi
fi

# 2. SIGTERM each daemon by its pid file (nodes first, munge last), then wait for them to exit.
stopping=()
for pidfile in "$dir"/pids/slurmd-*.pid "$dir"/pids/{slurmctld,slurmdbd,mariadbd,munged}.pid; do
    pid=$(pid_from "$pidfile")
    if [[ -n $pid ]] && is_ours "$pid" "$dir"; then
        kill -TERM "$pid" 2>/dev/null
        stopping+=("$pid")
    fi
done
deadline=$((SECONDS + 10))
for pid in "${stopping[@]}"; do
    while is_ours "$pid" "$dir" && ((SECONDS < deadline)); do sleep 0.2; done
done

# 3. SIGKILL what is left: the keeper's descendants (slurmstepd, job processes, stuck daemons).
keeper=$(pid_from "$dir/pids/keeper.pid")
if [[ -n $keeper ]] && is_ours "$keeper" "$dir"; then
    for _ in 1 2 3 4 5; do # again, in case a dying process had just forked
        mapfile -t left < <(descendants "$keeper")
        ((${#left[@]})) || break
        kill -KILL "${left[@]}" 2>/dev/null
        sleep 0.2
    done
    kill -KILL "$keeper" 2>/dev/null
fi
for pidfile in "$dir"/pids/*.pid; do # daemons whose keeper was already gone
    pid=$(pid_from "$pidfile")
    [[ -n $pid ]] && is_ours "$pid" "$dir" && kill -KILL "$pid" 2>/dev/null
done

# 4. Network namespaces and links that launch.sh listed (only names of the form it makes).
if [[ -f $dir/netns.list ]]; then
    while read -r kind name; do
        [[ $name =~ ^asw[0-9]+(br|n[0-9]+|h[0-9]+)$ ]] || continue
        case $kind in
        netns) ip netns del "$name" 2>/dev/null ;;
        link) ip link show "$name" >/dev/null 2>&1 && ip link del "$name" 2>/dev/null ;;
        esac
    done < <(sort -r "$dir/netns.list") # "netns" lines before "link" lines
fi

# 5. State (the spool is the folder that launch.sh linked).
spool=$(readlink "$dir/spool") && [[ $(basename "$spool") == asw-spool.* ]] && rm -rf "$spool"
rm -rf "$dir"/{etc,pids,munge,db,state,spool} "$dir/netns.list" "$dir"/env.sh*
if ((keep_logs)); then
    rm -f "$dir/.attnsweep-testcluster"
    rmdir "$dir/log" "$dir" 2>/dev/null # only when empty
else
    rm -rf "$dir/log" "$dir/.attnsweep-testcluster"
    rmdir "$dir" 2>/dev/null
fi
exit 0
