"""The elastic local cluster the elastic e2e modules start for themselves: CPU nodes only, and
real Karpenter (its KWOK cloud provider) launching GPU nodes for Pending pods."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.kube import Kube
from tidal.devcluster import cluster, fleet


@contextlib.contextmanager
def elastic_cluster(
    tmp_path_factory: pytest.TempPathFactory, *, consolidate_after: str, startup_seconds: float
) -> Iterator[tuple[Path, Kube, cluster.ClusterState]]:
    """Start the elastic fleet with Karpenter's `consolidateAfter` and the simulated replicas'
    default startup time; stop everything it started on the way out."""
    raw = yaml.safe_load(fleet.ELASTIC_FLEET.read_text())
    raw["karpenter"]["consolidateAfter"] = consolidate_after
    fleet_file = tmp_path_factory.mktemp("elastic-fleet") / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(raw))
    workdir = tmp_path_factory.mktemp("elastic-cluster")
    try:
        state = cluster.up(
            workdir, fleet_file, bind_to_parent=True, startup_seconds=startup_seconds
        )
        yield (
            workdir,
            Kube(state.kubeconfig, Path(state.bin_dir) / "kubectl", workdir=workdir),
            state,
        )
    finally:
        cluster.down(workdir)
