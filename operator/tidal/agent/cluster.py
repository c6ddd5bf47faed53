"""The agent's view of the API server: the seam between the loop and `clients.nodes`.

Owns: the `Cluster` protocol the loop talks to (tests pass a plain in-memory implementation
instead of patching anything), its real implementation `KubeCluster`, and the pure conversion of
Pod objects into `PodRef`s. Must not: decide what to publish, or import kubernetes (it goes
through `tidal.clients.nodes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from tidal.api.labels import GPU_RESOURCE
from tidal.api.wire import is_terminated, node_name, quantity_int
from tidal.clients import nodes
from tidal.clients.nvml import PodRef

__all__ = ["Cluster", "KubeCluster", "gpu_request", "pod_ref"]

Object = dict[str, Any]


class Cluster(Protocol):
    def gpu_nodes(self) -> list[Object]:
        """Nodes labelled nvidia.com/gpu.present=true (the simulated all-nodes mode)."""
        ...

    def pods_on(self, node: str) -> list[Object]:
        """Pods bound to `node`."""
        ...

    def bound_pods(self) -> list[Object]:
        """Pods bound to any node."""
        ...

    def annotate(self, node: str, key: str, value: str) -> None:
        """Write one annotation on `node`; raises `tidal.errors.TidalError` on failure."""
        ...


class KubeCluster:
    """`Cluster` on the real API server (blocking; the loop calls it from a thread)."""

    def __init__(self) -> None:
        nodes.connect()

    def gpu_nodes(self) -> list[Object]:
        return nodes.list_gpu_nodes()

    def pods_on(self, node: str) -> list[Object]:
        return nodes.list_pods_on_node(node)

    def bound_pods(self) -> list[Object]:
        return nodes.list_bound_pods()

    def annotate(self, node: str, key: str, value: str) -> None:
        nodes.annotate_node(node, {key: value})


def gpu_request(pod: Mapping[str, Any]) -> int:
    """GPUs the pod's containers ask for (limits; the device plugin requires requests == limits)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        raw = (resources.get("limits") or {}).get(GPU_RESOURCE) or (
            resources.get("requests") or {}
        ).get(GPU_RESOURCE)
        total += quantity_int(raw)
    return total


def pod_ref(pod: Mapping[str, Any]) -> PodRef | None:
    """The pod as the agent needs it; None for a finished pod (its processes are gone)."""
    metadata = pod.get("metadata") or {}
    if is_terminated(pod) or not metadata.get("uid"):
        return None
    return PodRef(
        uid=str(metadata["uid"]),
        namespace=str(metadata.get("namespace") or "default"),
        name=str(metadata.get("name") or ""),
        node_name=node_name(pod) or None,
        gpus=gpu_request(pod),
        created=str(metadata.get("creationTimestamp") or ""),
        annotations=dict(metadata.get("annotations") or {}),
    )
