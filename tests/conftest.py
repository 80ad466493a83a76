"""Shared pytest fixtures. The SLURM test cluster's live in slurm_cluster.py."""

import pytest

from slurm_cluster import slurm_cluster, slurm_cluster_2nodes, slurm_cluster_wide  # noqa: F401  (fixtures)

SLURM_FIXTURES = {"slurm_cluster", "slurm_cluster_2nodes", "slurm_cluster_wide"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a test that uses the cluster is a `slurm` test, so `-m "not slurm"` leaves it out
    for item in items:
        if SLURM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slurm)
