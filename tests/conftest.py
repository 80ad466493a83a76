"""Shared pytest fixtures and the suite's order. The SLURM test cluster's fixtures live in slurm_cluster.py."""

import os

import pytest

from slurm_cluster import slurm_cluster, slurm_cluster_2nodes, slurm_cluster_wide  # noqa: F401  (fixtures)

SLURM_FIXTURES = {"slurm_cluster", "slurm_cluster_2nodes", "slurm_cluster_wide"}

# `make test` runs two pytest-xdist workers, each a module at a time (--dist loadfile). These modules
# take longest (`--durations`, 2 workers on 2 cores): they start first, so that no worker is left
# with one of them while the other has finished.
LONGEST_FIRST = ["test_plugins", "test_study_robust", "test_orchestrate_slurm", "test_stall", "test_executors_slurm",
                 "test_orchestrate", "test_models", "test_executors", "test_gpu_check", "test_scheduler",
                 "test_slurm_cluster", "test_study_lock", "test_study", "test_study_disk_full", "test_features_study"]

# Trainings of both workers share the cores: libgomp's default busy-wait would spin threads that have
# no core (two side-by-side trainings took 1.6x as long as with PASSIVE). Children inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The drivers the tests start notice a trial folder's change within 1 s and ask sacct every 5 s
# (pipelines/sweep/watcher.py: 5 s and 30 s on a cluster): the studies here last seconds.
os.environ.setdefault("ATTNSWEEP_FOLDER_POLL_S", "1")
os.environ.setdefault("ATTNSWEEP_SACCT_S", "5")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a test that uses the cluster is a `slurm` test, so `-m "not slurm"` leaves it out
    for item in items:
        if SLURM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slurm)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order
