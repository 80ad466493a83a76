#!/usr/bin/env bash
# Brings a test cluster up in DIR. start.sh runs it under keeper.py (so every daemon stays in one
# process tree) while holding the lock that keeps port and subnet choices unique on this machine.
# Usage: launch.sh DIR NODES CPUS [SLURM_CONF_LINE...]
set -Eeuo pipefail
prog=start.sh
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
# any other failing command still ends in one line (the outermost shell reports it)
trap '((BASHPID == $$)) || exit 1; die "unexpected failure at launch.sh line $LINENO: $BASH_COMMAND"' ERR

dir=$1 nodes=$2 cpus=$3
shift 3
extra_conf=("$@")
wait_s=60
export SLURM_CONF=$dir/etc/slurm.conf
host=$(hostname -s)
sock=$dir/munge/munge.socket.2
mkdir -p "$dir"/{etc,pids,log,munge,db,state}
chmod 700 "$dir/etc" "$dir/munge"
# slurmd names a job step's socket <spool>/<node>_<job id>.<step id>, and a socket path longer than
# 107 characters cannot be made (the job fails to launch): the spool is a short folder of its own,
# which DIR/spool links to (stop.sh removes both)
spool=$(mktemp -d /tmp/asw-spool.XXXXXX)
ln -s "$spool" "$dir/spool"

# stamp TEXT: a timed line in log/start.log, to see where a start spends its time.
stamp() { echo "$(date +%T.%3N) $*" >>"$dir/log/start.log"; }

# run_logged NAME CMD...: run CMD with its output in log/NAME.log; on failure die quoting the log.
run_logged() {
    local log=$dir/log/$1.log
    stamp "run ${*:2:2}"
    "${@:2}" </dev/null >>"$log" 2>&1 || die "$1: '${*:2:2}' failed: $(log_tail "$log") (log: $log)"
}

# wait_up "DAEMON..." CHECK...: poll CHECK until it passes; fail at once when a DAEMON has died.
wait_up() {
    local daemon pid deadline=$((SECONDS + wait_s))
    until "${@:2}" >/dev/null 2>&1; do
        for daemon in $1; do
            pid=$(pid_from "$dir/pids/$daemon.pid")
            if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
                die "$daemon exited while starting: $(log_tail "$dir/log/$daemon.log") (log: $dir/log/$daemon.log)"
            fi
        done
        ((SECONDS < deadline)) || die "$2 still failing after ${wait_s}s (logs: $dir/log/)"
        sleep 0.2
    done
    stamp "ready: ${*:2}"
}

# free_port VAR: a TCP port no socket on this machine uses, below the kernel's ephemeral range (an
# outgoing connection cannot grab it before our daemon binds it), not handed out already.
taken=" "
free_port() {
    local low _ port
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    for _ in {1..500}; do
        port=$((10000 + RANDOM % (low - 10000)))
        [[ $taken == *" $port "* ]] && continue
        grep -q ":$(printf %04X "$port") " /proc/net/tcp /proc/net/tcp6 2>/dev/null && continue
        taken+="$port "
        printf -v "$1" %d "$port"
        return 0
    done
    die "no free TCP port in 10000-$low"
}

# listening PORT: some socket of this network namespace listens on PORT.
listening() {
    grep -qE ":$(printf %04X "$1") [0-9A-F]+:0000 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# --- network: node 0 on the host; nodes 1..N-1 in namespaces on a bridge of one private /24 -------
record() { echo "$1 $2" >>"$dir/netns.list"; }  # stop.sh deletes what is listed here

pick_slot() {  # the first 10.77.K.0/24 that no address, route, bridge or namespace here uses
    local k
    for k in $(seq 0 254); do
        ip link show "asw${k}br" >/dev/null 2>&1 && continue
        compgen -G "/run/netns/asw${k}n*" >/dev/null && continue
        [[ -n $(ip -4 route show match "10.77.$k.1" | grep -v '^default') ]] && continue
        slot=$k
        return 0
    done
    die "no free /24 in 10.77.0.0/16 for the node namespaces"
}

setup_network() {
    local i ns veth br
    pick_slot
    br=asw${slot}br
    record link "$br"
    run_logged network ip link add "$br" type bridge
    run_logged network ip addr add "10.77.$slot.1/24" dev "$br"
    run_logged network ip link set "$br" up
    for ((i = 1; i < nodes; i++)); do
        ns=asw${slot}n$i veth=asw${slot}h$i
        record netns "$ns"
        record link "$veth"
        run_logged network ip netns add "$ns"
        run_logged network ip link add "$veth" type veth peer name "$ns"
        run_logged network ip link set "$ns" netns "$ns"
        run_logged network ip link set "$veth" master "$br" up
        # nsenter, not `ip netns exec`: that remounts /sys, which slurmd cannot live with
        run_logged network nsenter --net="/run/netns/$ns" ip addr add "10.77.$slot.$((i + 1))/24" dev "$ns"
        run_logged network nsenter --net="/run/netns/$ns" ip link set "$ns" up
        run_logged network nsenter --net="/run/netns/$ns" ip link set lo up
    done
}

# --- daemons --------------------------------------------------------------------------------------
munge_works() { munge -n -S "$sock" | unmunge -S "$sock"; }

start_munge() {
    run_logged munged mungekey --create --keyfile="$dir/munge/munge.key"
    run_logged munged munged --force --socket="$sock" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/pids/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
    wait_up munged munge_works
}

start_mariadb() {
    local opts=(--no-defaults --user=root --datadir="$dir/db" --skip-name-resolve --innodb-log-file-size=8M)
    db_pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    run_logged mariadbd mariadb-install-db "${opts[@]}" --auth-root-authentication-method=socket --skip-test-db
    mariadbd "${opts[@]}" --socket="$dir/db/mysqld.sock" --port="$db_port" --bind-address=127.0.0.1 \
        --pid-file="$dir/pids/mariadbd.pid" --log-error="$dir/log/mariadbd.log" \
        --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=0 </dev/null >>"$dir/log/mariadbd.log" 2>&1 &
    echo $! >"$dir/pids/mariadbd.pid"
    wait_up mariadbd mariadb-admin --no-defaults --socket="$dir/db/mysqld.sock" ping
    run_logged mariadbd mariadb --no-defaults --socket="$dir/db/mysqld.sock" -u root -e \
        "CREATE DATABASE slurm_acct_db; CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

write_configs() {
    local i mem
    mem=$(slurmd -C | grep -o 'RealMemory=[0-9]*' | cut -d= -f2)
    # slurmdbd finds its config beside slurm.conf; it holds a password: mode 600
    (umask 077 && cat >"$dir/etc/slurmdbd.conf") <<CONF
AuthType=auth/munge
AuthInfo=socket=$sock
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$db_pass
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/pids/slurmdbd.pid
CONF
    {
        cat <<CONF
ClusterName=$cluster
SlurmctldHost=$host($ctld_addr)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
AuthInfo=socket=$sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$spool/%n
SlurmctldPidFile=$dir/pids/slurmctld.pid
SlurmdPidFile=$dir/pids/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
# no cgroups needed: track processes by parent pid, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
# for connections to slurmdbd, munge's socket is named here, not by AuthInfo
AccountingStoragePass=$sock
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# every node claims the whole machine; CPUs may be set above the real count (--cpus)
SlurmdParameters=config_overrides
DefMemPerCPU=$((mem / cpus))
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
# short enough for tests: SIGKILL 5 s after SIGTERM; a node whose slurmd died is DOWN after 20 s
KillWait=5
SlurmdTimeout=20
# job ids of clusters running side by side differ (their controller ports do): ids seed per-job
# choices such as submitit's DDP port, and node 0 of every cluster shares the host's network
FirstJobId=$((ctld_port * 1000))
CONF
        printf '%s\n' "${extra_conf[@]}"
        for ((i = 0; i < nodes; i++)); do
            echo "NodeName=${names[i]} NodeHostname=${names[i]} NodeAddr=${addrs[i]} CPUs=$cpus RealMemory=$mem State=UNKNOWN"
        done
        echo "PartitionName=$partition Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    } >"$SLURM_CONF"
}

start_slurmd() {  # start_slurmd INDEX
    local name=${names[$1]} netns=()
    if ((nodes == 1)); then
        run_logged "slurmd-$name" slurmd -f "$SLURM_CONF" -N "$name"
        return
    fi
    if (($1 > 0)); then netns=(nsenter --net="/run/netns/asw${slot}n$1"); fi
    run_logged "slurmd-$name" "${netns[@]}" unshare --uts --mount -- \
        "$here/in_node.sh" "$name" "$dir/etc/hosts" slurmd -f "$SLURM_CONF" -N "$name"
}

all_idle() { [[ $(sinfo -h -N -o %t | grep -cx idle) -eq $nodes ]]; }
sacct_answers() {  # without slurmdbd, sacct "answers" that accounting is disabled
    local out
    out=$(sacct -n -X 2>&1) && [[ $out != *disabled* ]]
}

# --- main -----------------------------------------------------------------------------------------
cluster=$(basename "$dir" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '_')
cluster=asw_${cluster:0:24}
partition=debug
free_port db_port
free_port dbd_port
free_port ctld_port
free_port slurmd_port
names=() addrs=()
if ((nodes == 1)); then
    # the host's own name resolves (to 127.0.0.1), so jobs can use the node list as addresses
    names=("$host") addrs=(127.0.0.1) ctld_addr=127.0.0.1
else
    setup_network
    ctld_addr=10.77.$slot.1
    echo "127.0.0.1 localhost" >"$dir/etc/hosts"
    for ((i = 0; i < nodes; i++)); do
        names+=("node$i") addrs+=("10.77.$slot.$((i + 1))")
        echo "${addrs[i]} node$i" >>"$dir/etc/hosts"
    done
    echo "$ctld_addr $host" >>"$dir/etc/hosts" # the controller's host, as the nodes reach it
fi

start_munge
start_mariadb
write_configs
run_logged slurmdbd slurmdbd
wait_up slurmdbd listening "$dbd_port"
run_logged sacctmgr sacctmgr -i add cluster "$cluster"
run_logged slurmctld slurmctld -f "$SLURM_CONF"
wait_up slurmctld scontrol ping
slurmds=()
for ((i = 0; i < nodes; i++)); do
    start_slurmd "$i"
    slurmds+=("slurmd-${names[i]}")
done
wait_up "slurmctld ${slurmds[*]}" all_idle
wait_up slurmdbd sacct_answers

printf 'export SLURM_CONF=%q\n' "$SLURM_CONF" >"$dir/env.sh.tmp"
mv "$dir/env.sh.tmp" "$dir/env.sh"
echo "SLURM test cluster $cluster is up: ${names[*]} (partition $partition). Use it: source $dir/env.sh"
