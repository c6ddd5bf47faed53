"""Kubernetes access for the node agent: read Nodes and the pods bound to them, write the
telemetry annotation on a Node.

Owns: the agent's few API calls (`list_gpu_nodes`, `list_pods_on_node`, `list_bound_pods`,
`annotate_node`), made through `kube.request`, so the connection, timeouts and the translation
of failures into `tidal.errors` are the same as the controllers'. Must not:
decide anything (what to write and when is the agent's), or let client exceptions escape: every
failure leaves as a `tidal.errors` exception.

Objects travel as wire-form JSON dicts, as in `kube.py`. Pod lists use field selectors
(`spec.nodeName=<node>`), so a DaemonSet agent on each of N nodes lists only its own pods, and
node patches are JSON merge patches of one annotation, the only change the agent's
ValidatingAdmissionPolicy (manifests/agent) admits. Every function blocks: call it through
`asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidal.api.labels import NODE_GPU_PRESENT
from tidal.clients import kube

__all__ = [
    "annotate_node",
    "connect",
    "list_bound_pods",
    "list_gpu_nodes",
    "list_pods_on_node",
]

Object = dict[str, Any]


def connect() -> None:
    """Load the configuration (`$KUBECONFIG`, else in-cluster, else ~/.kube/config)."""
    kube.load_config()


def list_gpu_nodes() -> list[Object]:
    """Every Node labelled `nvidia.com/gpu.present=true`."""
    return _items("/api/v1/nodes", [("labelSelector", f"{NODE_GPU_PRESENT}=true")])


def list_pods_on_node(node: str) -> list[Object]:
    """Pods bound to `node`, in every namespace (finished ones included; the caller filters)."""
    return _items("/api/v1/pods", [("fieldSelector", f"spec.nodeName={node}")])


def list_bound_pods() -> list[Object]:
    """Pods bound to any node (the simulated all-nodes agent groups them by `spec.nodeName`)."""
    return _items("/api/v1/pods", [("fieldSelector", "spec.nodeName!=")])


def annotate_node(node: str, annotations: Mapping[str, str | None]) -> None:
    """Merge-patch these annotations onto `node` (None removes one)."""
    kube.request(
        "PATCH",
        f"/api/v1/nodes/{node}",
        body={"metadata": {"annotations": dict(annotations)}},
        content_type="application/merge-patch+json",
    )


# --- internals -------------------------------------------------------------------------------


def _items(path: str, query: list[tuple[str, str]]) -> list[Object]:
    items: list[Object] = kube.request("GET", path, query).get("items") or []
    return items
