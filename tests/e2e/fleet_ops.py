"""Changing the simulated fleet from e2e tests: add, remove and heat up nodes, and read what a
node is (region, capacity type, GPU product) the way an operator of the cluster would.

The suite shares one cluster, so tests leave the default fleet (`devcluster/data/fleet.yaml`)
alone and bring their own nodes in a region of their own (`extra_region_nodes`), removing them
afterwards. Nodes are rendered by the same `tidal.devcluster.fleet.render_nodes` that builds the
default fleet, so they look exactly like it (labels, taints, `nvidia.com/gpu` capacity) and KWOK
manages them.

Capacity types are read here independently of the operator's own reading (no import from
`tidal.placement`): a test that reused the operator's classifier would share its bugs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from tests.e2e.conftest import wait_for
from tests.e2e.kube import Kube
from tidal.api.labels import (
    GPU_TELEMETRY,
    LABEL_CAPACITY_TYPE,
    NODE_REGION,
    SIMULATED_GPU_UTILIZATION,
    SPOT_MARKERS,
)
from tidal.devcluster.fleet import Fleet, GpuShape, NodeGroup, render_nodes

H100 = GpuShape(product="NVIDIA-H100-80GB-HBM3", memory_mib=81559, count=8)

# The clouds' spot markers (DESIGN.md "Cluster conventions"): label key -> the value meaning spot.
_SPOT_MARKERS = {key: value for key, value in SPOT_MARKERS if key != LABEL_CAPACITY_TYPE}


def labels(node: dict[str, Any]) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def capacity_type(node: dict[str, Any]) -> str:
    """Spot or reserved: Tidal's own label wins, else any cloud's spot marker, else reserved."""
    node_labels = labels(node)
    explicit = node_labels.get(LABEL_CAPACITY_TYPE)
    if explicit in ("spot", "reserved"):
        return explicit
    spot = any(node_labels.get(key) == value for key, value in _SPOT_MARKERS.items())
    return "spot" if spot else "reserved"


def region(node: dict[str, Any]) -> str | None:
    return labels(node).get(NODE_REGION)


def extra_region_nodes(region_name: str, *, reserved: int, spot: int) -> list[dict[str, Any]]:
    """H100x8 nodes in `region_name`, named like the default fleet's
    (`h100-reserved-<region>-<n>`, `h100-spot-<region>-<n>`, spot ones tainted)."""
    counts: tuple[tuple[Literal["reserved", "spot"], int], ...] = (
        ("reserved", reserved),
        ("spot", spot),
    )
    groups = [
        NodeGroup(
            name=f"h100-{kind}",
            regions=[region_name],
            nodes_per_region=count,
            capacity_type=kind,
            gpu=H100,
            cpu="192",
            memory="2Ti",
        )
        for kind, count in counts
        if count
    ]
    return render_nodes(Fleet(node_groups=groups))


def names(nodes: Iterable[dict[str, Any]]) -> list[str]:
    return [n["metadata"]["name"] for n in nodes]


def _ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    not_ready_taint = any(
        t.get("key") == "node.kubernetes.io/not-ready"
        for t in (node.get("spec") or {}).get("taints") or []
    )
    return ready and not not_ready_taint


def add_nodes(kube: Kube, nodes: list[dict[str, Any]], timeout: float = 60) -> None:
    """Create the nodes that do not exist yet (status included, as `cluster.create_nodes` does)
    and wait until KWOK has made every one of them Ready."""
    existing = kube.nodes()
    fresh = [n for n in nodes if n["metadata"]["name"] not in existing]
    if fresh:
        kube.run(
            "create",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": fresh}),
        )
    wanted = set(names(nodes))

    def all_ready() -> bool:
        current = kube.nodes()
        return all(name in current and _ready(current[name]) for name in wanted)

    wait_for(f"nodes {sorted(wanted)} Ready", all_ready, timeout=timeout)


def delete_nodes(kube: Kube, node_names: Iterable[str]) -> None:
    """Delete the nodes (as a cloud does when it reclaims spot capacity); absent ones are fine."""
    listed = list(node_names)
    if listed:
        kube.run("delete", "node", *listed, "--ignore-not-found", "--wait=true")


@contextmanager
def extra_nodes(kube: Kube, nodes: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The nodes exist (and are Ready) for the block, and are gone after it, whatever happened."""
    try:
        add_nodes(kube, nodes)
        yield nodes
    finally:
        delete_nodes(kube, names(nodes))


def telemetry_utilization(node: dict[str, Any]) -> float | None:
    """Mean GPU utilization in the node's `tidal.dev/gpu-telemetry` annotation, if any."""
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(GPU_TELEMETRY)
    if not raw:
        return None
    gpus = json.loads(raw).get("gpus") or []
    known = [g["utilizationPercent"] for g in gpus if g.get("utilizationPercent") is not None]
    return sum(known) / len(known) if known else None


def set_simulated_utilization(kube: Kube, node_name: str, percent: int | None) -> None:
    """Make the simulated agent report `percent` for every GPU of the node (None: back to the
    scenario's curve).

    The agent rewrites the telemetry annotation every second, so a hand-written one would not
    last; its override annotation is how a test makes a node hot."""
    if percent is None:
        kube.run("annotate", "node", node_name, f"{SIMULATED_GPU_UTILIZATION}-", check=False)
    else:
        kube.run(
            "annotate", "node", node_name, f"{SIMULATED_GPU_UTILIZATION}={percent}", "--overwrite"
        )
