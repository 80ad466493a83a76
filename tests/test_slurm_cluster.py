"""The local SLURM test cluster (slurm/testcluster/): real daemons, real jobs, sacct and submitit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit

from slurm_cluster import SCRIPTS, SlurmCluster, require_slurm_or_skip, start_cluster, stop_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]  # starts its own clusters


def sbatch(cluster: SlurmCluster, *args: str) -> str:
    return cluster.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0]


def sacct_field(cluster: SlurmCluster, job_id: str, field: str) -> str:
    return cluster.run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", field).stdout.strip()


def wait_for(what: str, check, timeout_s: float = 60):
    """Polls `check()` until it returns something truthy (jobs and accounting lag a little)."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.3)
    return value


def final_state(cluster: SlurmCluster, job_id: str) -> str:
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    return wait_for(
        f"job {job_id} to end", lambda: (s := sacct_field(cluster, job_id, "State")).startswith(ended) and s
    )


def test_sbatch_jobs_end_in_sacct_with_their_state(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "ok.out"
    ok = sbatch(slurm_cluster, "-o", str(out), "--wrap", "echo ran on $SLURMD_NODENAME")
    bad = sbatch(slurm_cluster, "-o", str(tmp_path / "bad.out"), "--wrap", "exit 3")
    assert final_state(slurm_cluster, ok) == "COMPLETED"
    assert final_state(slurm_cluster, bad) == "FAILED"
    assert sacct_field(slurm_cluster, bad, "ExitCode") == "3:0"
    assert out.read_text() == f"ran on {slurm_cluster.nodes[0]}\n"


def test_submitit_job_returns_its_value_and_a_cancelled_one_reads_cancelled(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)  # submitit runs sbatch/sacct/scancel with os.environ
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(
        slurm_partition=slurm_cluster.partition, timeout_min=5, cpus_per_task=1, slurm_signal_delay_s=30
    )

    def double_where(x: int) -> tuple[int, str]:  # nested: pickled by value, the job needs no test module
        import socket

        return 2 * x, socket.gethostname()

    assert executor.submit(double_where, 21).result() == (42, slurm_cluster.nodes[0])

    sleeper = executor.submit(time.sleep, 600)
    wait_for("the sleeper to run", lambda: sleeper.get_info(mode="force").get("State") == "RUNNING")
    sleeper.cancel()
    state = wait_for(
        "sacct to report the cancellation",
        lambda: (s := sleeper.watcher.get_state(sleeper.job_id, mode="force")).startswith("CANCELLED") and s,
    )
    assert state.startswith("CANCELLED")


# One task per node reports where it ran: node name, host name, the IPv4 addresses its network
# namespace has, and what the node names resolve to there.
TASK = """
import json, os, socket, subprocess, sys
links = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, check=True).stdout)
print(json.dumps({
    "node": os.environ["SLURMD_NODENAME"],
    "hostname": socket.gethostname(),
    "addrs": sorted(a["local"] for link in links for a in link["addr_info"]),
    "resolves": {name: socket.gethostbyname(name) for name in sys.argv[1:]},
}))
"""


def config(cluster: SlurmCluster) -> dict[str, str]:
    """The running slurmctld's settings (`scontrol show config`)."""
    lines = cluster.run("scontrol", "show", "config").stdout.splitlines()
    return {key.strip(): value.strip() for key, _, value in (line.partition(" = ") for line in lines)}


def test_two_node_job_runs_one_task_on_each_node_address(
    slurm_cluster_2nodes: SlurmCluster, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    cluster = slurm_cluster_2nodes
    assert cluster.nodes == ["node0", "node1"]
    first, second = cluster.nodes
    subnet = cluster.node_addrs[first].rsplit(".", 1)[0]
    assert subnet.startswith("10.77.")
    assert [cluster.node_addrs[first], cluster.node_addrs[second]] == [f"{subnet}.1", f"{subnet}.2"]

    task = tmp_path / "task.py"
    task.write_text(TASK)
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nsrun -o {tmp_path}/task-%t.json {sys.executable} {task} {first} {second}\n")
    job = sbatch(cluster, "-N", "2", "--ntasks-per-node=1", "-o", str(tmp_path / "job.out"), str(script))
    assert final_state(cluster, job) == "COMPLETED", (tmp_path / "job.out").read_text()
    # the job's record names both nodes (once slurmctld has sent its final update)
    wait_for("sacct to list both nodes", lambda: sacct_field(cluster, job, "NodeList") == "node[0-1]", 15)

    reports = {r["node"]: r for r in (json.loads(p.read_text()) for p in tmp_path.glob("task-*.json"))}
    assert set(reports) == {first, second}
    for node, report in reports.items():
        assert report["hostname"] == node
        assert cluster.node_addrs[node] in report["addrs"]
        assert report["resolves"] == cluster.node_addrs  # node names resolve as on a real cluster
    # node 1 has a network namespace of its own: loopback and its node address, nothing of the host
    assert reports[second]["addrs"] == sorted(["127.0.0.1", cluster.node_addrs[second]])

    # the session's one-node cluster runs beside it without sharing a name, port or node
    one, two = config(slurm_cluster), config(cluster)
    for key in ("ClusterName", "SlurmctldPort", "SlurmdPort", "AccountingStoragePort", "StateSaveLocation"):
        assert one[key] != two[key], key
    assert not set(slurm_cluster.nodes) & set(cluster.nodes)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def live_pids() -> set[int]:
    """Every process that runs (zombies only wait for their parent to read their status)."""
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return {pid for pid in pids if (stat := proc_stat(pid)) and stat[0] != "Z"}


def descendants(root: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for pid in live_pids():
        if stat := proc_stat(pid):
            children.setdefault(stat[1], set()).add(pid)
    found, queue = set(), [root]
    while queue:
        for child in children.get(queue.pop(), ()):
            found.add(child)
            queue.append(child)
    return found


def test_stop_leaves_no_process_namespace_or_state_behind(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    cluster = start_cluster(directory, nodes=2)
    try:
        pids_file = tmp_path / "job.pids"
        # like a submitit job: ignores SIGTERM, and has a child of its own
        sbatch(cluster, "-o", "/dev/null", "--wrap", f"trap '' TERM; sleep 600 & echo $$ $! > {pids_file}; wait")
        job_pids = wait_for("the job to start", lambda: pids_file.exists() and pids_file.read_text().split())
        keeper = int((directory / "pids" / "keeper.pid").read_text())
        tree = descendants(keeper) | {keeper}
        daemons = {int(p.read_text()) for p in (directory / "pids").glob("*.pid")}
        assert len(daemons) == 7  # keeper, munged, mariadbd, slurmdbd, slurmctld, 2 slurmd
        assert daemons | {int(p) for p in job_pids} <= tree
        network = (directory / "netns.list").read_text().split()[1::2]
        spool = (directory / "spool").resolve()  # a short folder outside DIR (slurmd's socket paths)
        assert spool.is_dir() and directory not in spool.parents
    finally:
        stop_cluster(directory)

    assert not tree & live_pids()
    assert not directory.exists() and not spool.exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for name in network:
        assert f" {name}:" not in links and f" {name}@" not in links and name not in namespaces.split()
    assert stop_cluster(directory).returncode == 0  # safe to run twice


def test_failed_start_stops_what_it_had_started(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    # slurmctld cannot parse this line: the start fails after munge, MariaDB and slurmdbd are up
    proc = subprocess.run(
        [SCRIPTS / "start.sh", directory, "--conf", "NoSuchOption=1"], capture_output=True, text=True, timeout=180
    )
    if proc.returncode == 2:
        require_slurm_or_skip(proc.stderr.strip())
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1 and "NoSuchOption" in proc.stderr, proc.stderr
    assert (directory / "log" / "slurmdbd.log").exists()  # it got that far; logs stay for the reason
    assert not (directory / "pids").exists() and not (directory / "env.sh").exists()
    mark = f"ATTNSWEEP_TESTCLUSTER={directory}".encode()
    for pid in live_pids():
        try:
            assert mark not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"), f"pid {pid} left running"
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "--nodes must be 1..99, got '0'"),
        (["--nodes"], "--nodes needs a value"),
        (["--cpus", "two"], "--cpus must be a positive integer, got 'two'"),
        (["--frobnicate"], "unknown option '--frobnicate'"),
    ],
)
def test_start_rejects_bad_arguments_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([SCRIPTS / "start.sh", tmp_path / "c", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"start.sh: {message}") and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_start_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    proc = subprocess.run([SCRIPTS / "start.sh", tmp_path], capture_output=True, text=True, timeout=30)
    if proc.returncode == 2:
        require_slurm_or_skip(proc.stderr.strip())
    assert proc.returncode == 1 and "is not empty" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
