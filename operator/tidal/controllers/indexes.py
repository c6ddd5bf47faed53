"""The cluster as every InferenceEndpoint reconcile sees it: Kopf indexes over Nodes, GPU pods,
Namespaces, VectorCollections and the endpoints themselves.

Kopf keeps each index in memory from its own watch and hands it to every handler as a keyword
argument named by the index id, so a reconcile reads the whole fleet without one API call:
500 nodes and 1,000 endpoints cost one watch per kind, not a GET per node per reconcile. Kopf
also holds every other handler back until all indexes have been filled from the initial
listing, so no reconcile ever plans against an empty fleet (which would scale everything to 0).

Owns: the index handlers (what each stores, kept small: a parsed `NodeInfo` per node, a few
fields per GPU pod), and the pure readers that turn index contents into planner inputs
(`capture`) or into the endpoints a change affects. Must not: call the API server, decide
anything, or be read from another thread: indexes change on the event loop, so `capture` runs
there and the blocking reconcile gets the frozen result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from tidal.api.common import GROUP, VERSION
from tidal.api.inference import PLURAL
from tidal.api.vector import PLURAL as COLLECTIONS_PLURAL
from tidal.placement import fleet
from tidal.placement.model import FleetSnapshot, NodeInfo
from tidal.render.inference import LABEL_ENDPOINT
from tidal.residency.policy import ALLOWED_REGIONS_ANNOTATION

__all__ = [
    "COLLECTIONS",
    "ENDPOINTS",
    "GPU_PODS",
    "NAMESPACE_POLICIES",
    "NODES",
    "CollectionEntry",
    "EndpointEntry",
    "GpuPod",
    "Inputs",
    "capture",
    "collection_regions",
    "endpoints_in_namespace",
    "endpoints_on_node",
    "fleet_snapshot",
    "gpu_pod_entry",
]

# Index ids: also the names of the keyword arguments Kopf passes to every handler.
NODES: Final = "tidal_nodes"
GPU_PODS: Final = "tidal_gpu_pods"
NAMESPACE_POLICIES: Final = "tidal_namespace_policies"
COLLECTIONS: Final = "tidal_collections"
ENDPOINTS: Final = "tidal_endpoints"

_TERMINAL: Final = frozenset({"Succeeded", "Failed"})


@dataclasses.dataclass(frozen=True)
class GpuPod:
    """A pod bound to a node and holding GPUs there; `endpoint` when Tidal runs it."""

    namespace: str
    name: str
    gpus: int
    endpoint: str | None = None


@dataclasses.dataclass(frozen=True)
class CollectionEntry:
    """A VectorCollection's name and residency regions."""

    name: str
    regions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class EndpointEntry:
    """An InferenceEndpoint's name and the VectorCollection it pairs with, if any."""

    name: str
    collection: str | None = None


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What the indexes said when a reconcile started: the fleet, the namespace's raw policy
    annotation (None: no policy) and its collections' regions by name."""

    fleet: FleetSnapshot
    namespace_policy: str | None = None
    collections: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def collection_regions(self, name: str | None) -> frozenset[str] | None:
        """The paired collection's regions; None without a pairing or when it does not exist
        (DESIGN.md: the intersection applies when the collection exists)."""
        if name is None or name not in self.collections:
            return None
        return frozenset(self.collections[name])


# --- index handlers (run on the event loop, for every watch event; keep them cheap) ----------
# Returning {} rather than None matters: None leaves the object's previous entries in place.


@kopf.index("", "v1", "nodes", id=NODES)
async def index_nodes(body: kopf.Body, name: str, **_: Any) -> dict[str, NodeInfo]:
    """Each Node as the planner sees it; GPUs requested are filled in from `GPU_PODS` later.

    Telemetry is parsed here, once per change rather than per reconcile; the planner judges its
    staleness again at its own `now`.
    """
    return {name: fleet.node_info(body, 0, datetime.now(UTC))}


@kopf.index("", "v1", "pods", id=GPU_PODS)
async def index_gpu_pods(body: kopf.Body, **_: Any) -> dict[str, GpuPod]:
    """Pods that hold GPUs on a node, by node name (the scheduler's accounting, see
    `placement.fleet.gpu_requests_by_node`)."""
    return gpu_pod_entry(body)


@kopf.index("", "v1", "namespaces", id=NAMESPACE_POLICIES)
async def index_namespace_policies(body: kopf.Body, name: str, **_: Any) -> dict[str, str]:
    """The raw `tidal.dev/allowed-regions` of each Namespace that has one."""
    value = body.metadata.annotations.get(ALLOWED_REGIONS_ANNOTATION)
    return {} if value is None else {name: str(value)}


@kopf.index(GROUP, VERSION, COLLECTIONS_PLURAL, id=COLLECTIONS)
async def index_collections(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[str, CollectionEntry]:
    """Each VectorCollection's regions, by namespace."""
    if namespace is None:
        return {}
    return {namespace: CollectionEntry(name=name, regions=collection_regions(body))}


@kopf.index(GROUP, VERSION, PLURAL, id=ENDPOINTS)
async def index_endpoints(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[str, EndpointEntry]:
    """Each InferenceEndpoint and its paired collection, by namespace."""
    if namespace is None:
        return {}
    ref = _mapping(_mapping(body.get("spec")).get("vectorCollectionRef")).get("name")
    return {namespace: EndpointEntry(name=name, collection=str(ref) if ref else None)}


# --- pure readers ---------------------------------------------------------------------------


def gpu_pod_entry(pod: Mapping[str, Any]) -> dict[str, GpuPod]:
    """The `GPU_PODS` entry of one pod: {node: GpuPod} while it holds GPUs there, else {}."""
    metadata = _mapping(pod.get("metadata"))
    node = _mapping(pod.get("spec")).get("nodeName")
    if not node or _mapping(pod.get("status")).get("phase") in _TERMINAL:
        return {}
    gpus = fleet.pod_gpu_request(pod)
    if not gpus:
        return {}
    endpoint = _mapping(metadata.get("labels")).get(LABEL_ENDPOINT)
    return {
        str(node): GpuPod(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            gpus=gpus,
            endpoint=str(endpoint) if endpoint else None,
        )
    }


def collection_regions(collection: Mapping[str, Any]) -> tuple[str, ...]:
    """A VectorCollection's `spec.residency.regions` (empty when unreadable: it then allows
    nothing, which keeps a paired endpoint out of every region rather than in any)."""
    regions = _mapping(_mapping(collection.get("spec")).get("residency")).get("regions")
    return tuple(str(r) for r in regions) if isinstance(regions, list) else ()


def fleet_snapshot(
    nodes: Mapping[str, Iterable[NodeInfo]],
    gpu_pods: Mapping[str, Iterable[GpuPod]],
    now: datetime,
) -> FleetSnapshot:
    """The fleet from the two indexes: every node with the GPUs its pods hold, sorted by name."""
    infos = []
    for name, entries in nodes.items():
        requested = sum(pod.gpus for pod in gpu_pods.get(name, ()))
        for info in entries:
            infos.append(dataclasses.replace(info, gpu_requested=requested) if requested else info)
    return FleetSnapshot(nodes=tuple(sorted(infos, key=lambda n: n.name)), observed_at=now)


def capture(indexes: Mapping[str, Any], namespace: str, now: datetime) -> Inputs:
    """Freeze what a reconcile of an endpoint in `namespace` needs from the indexes.

    `indexes` are the handler's keyword arguments (an index missing from them reads as empty,
    which only unit tests without Kopf do).
    """
    policies: Mapping[str, Collection[str]] = indexes.get(NAMESPACE_POLICIES) or {}
    collections: Mapping[str, Iterable[CollectionEntry]] = indexes.get(COLLECTIONS) or {}
    policy = next(iter(policies.get(namespace, ())), None)
    return Inputs(
        fleet=fleet_snapshot(indexes.get(NODES) or {}, indexes.get(GPU_PODS) or {}, now),
        namespace_policy=policy,
        collections={entry.name: entry.regions for entry in collections.get(namespace, ())},
    )


def endpoints_on_node(gpu_pods: Mapping[str, Iterable[GpuPod]], node: str) -> set[tuple[str, str]]:
    """(namespace, endpoint) of every endpoint with a pod bound to `node`."""
    return {(pod.namespace, pod.endpoint) for pod in gpu_pods.get(node, ()) if pod.endpoint}


def endpoints_in_namespace(
    endpoints: Mapping[str, Iterable[EndpointEntry]],
    namespace: str,
    *,
    collection: str | None = None,
) -> set[tuple[str, str]]:
    """(namespace, endpoint) of the namespace's endpoints; only those paired with `collection`
    when it is given."""
    return {
        (namespace, entry.name)
        for entry in endpoints.get(namespace, ())
        if collection is None or entry.collection == collection
    }


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
