"""The simulated fleet: a fleet file (regions x capacity types x GPU products) -> Node objects.

Owns: the fleet file schema and the pure rendering of simulated (KWOK-managed) Nodes.
Must not: talk to the API server (the cluster module creates what this renders).

Nodes carry what real GPU nodes carry, so the operator cannot tell the difference:
`topology.kubernetes.io/region|zone`, a capacity-type marker in one of the label conventions of
DESIGN.md, `nvidia.com/gpu.product|memory|count` labels (as NVIDIA's GPU feature discovery
writes them), `nvidia.com/gpu` capacity, and spot/GPU taints. The annotation
`kwok.x-k8s.io/node: fake` hands a node to KWOK; nothing else is managed by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tidal.api.labels import (
    AKS_SCALESET_PRIORITY,
    EKS_CAPACITY_TYPE,
    GKE_SPOT,
    GPU_RESOURCE,
    KARPENTER_CAPACITY_TYPE,
    KWOK_NODE,
    LABEL_CAPACITY_TYPE,
    LABEL_SIMULATED,
    NODE_ARCH,
    NODE_GPU_COUNT,
    NODE_GPU_MEMORY_MIB,
    NODE_GPU_PRESENT,
    NODE_GPU_PRODUCT,
    NODE_HOSTNAME,
    NODE_INSTANCE_TYPE,
    NODE_OS,
    NODE_REGION,
    NODE_TTL,
    NODE_ZONE,
)

DEFAULT_FLEET = Path(__file__).parent / "data" / "fleet.yaml"

LabelStyle = Literal["tidal", "karpenter", "eks", "gke", "aks"]

# How each convention marks spot capacity: (label key, spot value, reserved value or None when
# the convention marks only spot nodes), plus the taint its spot nodes carry.
_SPOT_LABELS: dict[str, tuple[str, str, str | None]] = {
    "tidal": (LABEL_CAPACITY_TYPE, "spot", "reserved"),
    "karpenter": (KARPENTER_CAPACITY_TYPE, "spot", "on-demand"),
    "eks": (EKS_CAPACITY_TYPE, "SPOT", "ON_DEMAND"),
    "gke": (GKE_SPOT, "true", None),
    "aks": (AKS_SCALESET_PRIORITY, "spot", None),
}
_SPOT_TAINTS: dict[str, dict[str, str]] = {
    style: {"key": key, "value": spot, "effect": "NoSchedule"}
    for style, (key, spot, _reserved) in _SPOT_LABELS.items()
}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class GpuShape(_Model):
    product: str = Field(description="product is the nvidia.com/gpu.product label value")
    memory_mib: int = Field(gt=0, alias="memoryMiB", description="memoryMiB: nvidia.com/gpu.memory")
    count: int = Field(gt=0, le=64, description="count is the node's nvidia.com/gpu capacity")


class NodeGroup(_Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    regions: list[str] = Field(min_length=1)
    nodes_per_region: int = Field(default=1, ge=1, le=2000)
    capacity_type: Literal["spot", "reserved"] = "reserved"
    label_style: LabelStyle = "tidal"
    gpu: GpuShape | None = None
    cpu: str = "64"
    memory: str = "512Gi"
    pods: str = "110"
    labels: dict[str, str] = Field(default_factory=dict)


class Fleet(_Model):
    node_groups: list[NodeGroup] = Field(min_length=1)


def load(path: Path) -> Fleet:
    raw = yaml.safe_load(path.read_text())
    return Fleet.model_validate(raw)


def render_nodes(fleet: Fleet) -> list[dict[str, Any]]:
    """Every Node the fleet describes, named `<group>-<region>-<n>`, zones round-robin a/b/c."""
    nodes: list[dict[str, Any]] = []
    for group in fleet.node_groups:
        for region in group.regions:
            for index in range(group.nodes_per_region):
                nodes.append(_render_node(group, region, index))
    return nodes


def _render_node(group: NodeGroup, region: str, index: int) -> dict[str, Any]:
    name = f"{group.name}-{region}-{index}"
    zone = f"{region}{'abc'[index % 3]}"
    labels = {
        NODE_HOSTNAME: name,
        NODE_OS: "linux",
        NODE_ARCH: "amd64",
        NODE_INSTANCE_TYPE: f"sim.{group.name}",
        NODE_REGION: region,
        NODE_ZONE: zone,
        "type": "kwok",
        LABEL_SIMULATED: "true",
    }
    key, spot_value, reserved_value = _SPOT_LABELS[group.label_style]
    if group.capacity_type == "spot":
        labels[key] = spot_value
    elif reserved_value is not None:
        labels[key] = reserved_value
    taints: list[dict[str, str]] = []
    resources = {"cpu": group.cpu, "memory": group.memory, "pods": group.pods}
    if group.gpu is not None:
        labels[NODE_GPU_PRESENT] = "true"
        labels[NODE_GPU_PRODUCT] = group.gpu.product
        labels[NODE_GPU_MEMORY_MIB] = str(group.gpu.memory_mib)
        labels[NODE_GPU_COUNT] = str(group.gpu.count)
        resources[GPU_RESOURCE] = str(group.gpu.count)
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    if group.capacity_type == "spot":
        taints.append(dict(_SPOT_TAINTS[group.label_style]))
    labels.update(group.labels)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_NODE: "fake", NODE_TTL: "0"},
        },
        "spec": {"taints": taints},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
        },
    }
