"""Session fixtures that run the local SLURM test cluster of `slurm/testcluster/`.

`slurm_cluster` (one node) and `slurm_cluster_2nodes` (two nodes, each with its own network address)
yield a `SlurmCluster`. Talk to it with `cluster.run("sbatch", ...)`, or merge `cluster.env` into a
subprocess's environment; submitit runs `sbatch`/`sacct` with `os.environ`, so set it there
(`monkeypatch.setenv`). A finalizer stops the cluster also when tests fail. Where the cluster cannot
run (not root, programs missing) the tests skip with the reason, unless `ATTNSWEEP_REQUIRE_SLURM=1`
(set by `.ci/run`) turns that into a failure, so a broken install never passes as skipped.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "slurm" / "testcluster"
START_TIMEOUT_S = 180
CANNOT_RUN = 2  # start.sh's exit status for "not root / programs missing"


@dataclass(frozen=True)
class SlurmCluster:
    dir: Path
    env: dict[str, str]  # client settings (SLURM_CONF): merge into a subprocess's environment
    partition: str
    nodes: list[str]  # node names, in order
    node_addrs: dict[str, str]  # node name -> the address its slurmd and jobs use

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Runs a SLURM client command against this cluster; raises when it fails."""
        return _run_client(self.env, args, timeout)

    def queued(self) -> set[str]:
        """Ids of the jobs (array tasks and their array job too) still queued or running."""
        return set(self.run("squeue", "-h", "-o", "%i %A").stdout.split())


def _run_client(env: dict[str, str], args: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env={**os.environ, **env}, capture_output=True, text=True, check=True, timeout=timeout
    )


def require_slurm_or_skip(reason: str) -> None:
    if os.environ.get("ATTNSWEEP_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM test cluster required (ATTNSWEEP_REQUIRE_SLURM=1) but {reason}")
    pytest.skip(f"SLURM test cluster cannot run here: {reason}")


def start_cluster(directory: Path, nodes: int = 1, cpus: int | None = None) -> SlurmCluster:
    """Starts a cluster in `directory` (new or empty); skips or fails with start.sh's reason.
    `cpus`: what each node declares (default: this machine's), more to run more jobs at once."""
    cmd = [str(SCRIPTS / "start.sh"), str(directory), "--nodes", str(nodes), *(["--cpus", str(cpus)] if cpus else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_cluster(directory)
        pytest.fail(f"{shlex.join(cmd)} did not finish in {START_TIMEOUT_S}s")
    if proc.returncode == CANNOT_RUN:
        require_slurm_or_skip(proc.stderr.strip())
    if proc.returncode != 0:
        pytest.fail(f"{shlex.join(cmd)} failed: {proc.stderr.strip()}")
    env = dict(_read_exports(directory / "env.sh"))
    listing = _run_client(env, ("sinfo", "-h", "-N", "-o", "%N %o %R"), 60).stdout.split()
    names, addrs, partitions = listing[0::3], listing[1::3], set(listing[2::3])
    assert len(names) == nodes and len(partitions) == 1, f"unexpected sinfo listing: {listing}"
    return SlurmCluster(directory, env, partitions.pop(), names, dict(zip(names, addrs)))


def stop_cluster(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / "stop.sh"), str(directory)], capture_output=True, text=True, timeout=120, check=True
    )


def _read_exports(env_sh: Path) -> Iterator[tuple[str, str]]:
    """The `export NAME=VALUE` lines of env.sh (values shell-quoted)."""
    for line in env_sh.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            name, _, value = words[1].partition("=")
            yield name, value


def _running_cluster(tmp_path_factory: pytest.TempPathFactory, nodes: int, cpus: int | None = None
                     ) -> Iterator[SlurmCluster]:
    directory = tmp_path_factory.mktemp(f"slurm{nodes}n")
    try:
        yield start_cluster(directory, nodes, cpus)
    finally:
        stop_cluster(directory)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    yield from _running_cluster(tmp_path_factory, nodes=1)


@pytest.fixture(scope="session")
def slurm_cluster_2nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    yield from _running_cluster(tmp_path_factory, nodes=2)


@pytest.fixture(scope="session")
def slurm_cluster_wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """One node that declares 40 CPUs: room for the driver tests' dozens of stand-in jobs at once."""
    yield from _running_cluster(tmp_path_factory, nodes=1, cpus=40)
