"""The cluster as every reconcile sees it: Kopf indexes over Nodes, GPU pods, Namespaces,
VectorCollections, the endpoints themselves, the endpoints' own children (Deployments,
Services, pods), the Managed collections' children (StatefulSets, Services,
PodDisruptionBudgets, PersistentVolumeClaims, pods) and the cluster's StorageClasses (whether a
collection's volumes can bind).

Kopf keeps each index in memory from its own watch and hands it to every handler as a keyword
argument named by the index id, so a reconcile reads the whole fleet without one API call:
500 nodes and 1,000 endpoints cost one watch per kind, not a GET per node per reconcile, and an
endpoint's children are read from memory rather than with three LISTs per reconcile (the API
server's cost as much as the operator's: at 1,000 endpoints those LISTs were most of both). Kopf
also holds every other handler back until all indexes have been filled from the initial
listing, so no reconcile ever plans against an empty fleet (which would scale everything to 0).

Indexes run before the handlers of the same watch event, so a reconcile triggered by a child's
event sees that event. They can lag the reconcile's own writes by a watch round trip; the
reconcile is level-based, and the child's watch event triggers the next one.

Owns: the index handlers (what each stores, kept small: a parsed `NodeInfo` per node, a few
fields per GPU pod, the fields of each child the reconcile reads), and the pure readers that
turn index contents into a reconcile's inputs (`capture` for an endpoint, `capture_collection`
for a collection) or into the endpoints a change affects.
Must not: call the API server, decide anything, or be read from another thread: indexes change
on the event loop, so `capture` runs there and the blocking reconcile gets the frozen result.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from tidal.api.collection import PLURAL as COLLECTIONS_PLURAL
from tidal.api.common import GROUP, VERSION
from tidal.api.endpoint import PLURAL
from tidal.api.labels import (
    ALLOWED_REGIONS,
    DEFAULT_STORAGE_CLASS,
    LABEL_COLLECTION,
    LABEL_ENDPOINT,
    LABEL_MANAGED_BY,
    MANAGER,
)
from tidal.api.wire import as_mapping, is_terminated, node_name
from tidal.cost import PriceCatalog
from tidal.placement import fleet
from tidal.placement.model import FleetSnapshot, NodeInfo
from tidal.reconcile import collection as collection_reconcile
from tidal.reconcile.world import Inputs
from tidal.runtime.services import services

__all__ = [
    "ALL",
    "CHILD_DEPLOYMENTS",
    "CHILD_PDBS",
    "CHILD_PODS",
    "CHILD_SERVICES",
    "COLLECTIONS",
    "COLLECTION_CLAIMS",
    "COLLECTION_PDBS",
    "COLLECTION_PODS",
    "COLLECTION_SERVICES",
    "COLLECTION_STATEFULSETS",
    "ENDPOINTS",
    "GPU_PODS",
    "NAMESPACE_POLICIES",
    "NODES",
    "STORAGE_CLASSES",
    "CollectionEntry",
    "EndpointEntry",
    "FleetMemo",
    "GpuPod",
    "Inputs",
    "capture",
    "capture_collection",
    "child_entry",
    "collection_regions",
    "endpoints_in_namespace",
    "endpoints_on_node",
    "fleet_snapshot",
    "gpu_pod_entry",
    "of_handler",
    "storage_class_info",
]

# Index ids: also the names of the keyword arguments Kopf passes to every handler.
NODES: Final = "tidal_nodes"
GPU_PODS: Final = "tidal_gpu_pods"
NAMESPACE_POLICIES: Final = "tidal_namespace_policies"
COLLECTIONS: Final = "tidal_collections"
ENDPOINTS: Final = "tidal_endpoints"
CHILD_DEPLOYMENTS: Final = "tidal_child_deployments"
CHILD_SERVICES: Final = "tidal_child_services"
CHILD_PODS: Final = "tidal_child_pods"
CHILD_PDBS: Final = "tidal_child_pdbs"
COLLECTION_STATEFULSETS: Final = "tidal_collection_statefulsets"
COLLECTION_SERVICES: Final = "tidal_collection_services"
COLLECTION_PDBS: Final = "tidal_collection_pdbs"
COLLECTION_CLAIMS: Final = "tidal_collection_claims"
COLLECTION_PODS: Final = "tidal_collection_pods"
STORAGE_CLASSES: Final = "tidal_storage_classes"
ALL: Final = (
    NODES,
    GPU_PODS,
    NAMESPACE_POLICIES,
    COLLECTIONS,
    ENDPOINTS,
    CHILD_DEPLOYMENTS,
    CHILD_SERVICES,
    CHILD_PODS,
    CHILD_PDBS,
    COLLECTION_STATEFULSETS,
    COLLECTION_SERVICES,
    COLLECTION_PDBS,
    COLLECTION_CLAIMS,
    COLLECTION_PODS,
    STORAGE_CLASSES,
)
# What marks an endpoint's children (the selector `render.endpoint.child_labels` builds).
_CHILDREN: Final[Mapping[str, Any]] = {
    LABEL_MANAGED_BY: MANAGER,
    LABEL_ENDPOINT: kopf.PRESENT,
}
# What marks a Managed collection's children and its pods (`render.collection.child_labels`;
# the StatefulSet's claim template carries them onto its PersistentVolumeClaims).
_COLLECTION_CHILDREN: Final[Mapping[str, Any]] = {
    LABEL_MANAGED_BY: MANAGER,
    LABEL_COLLECTION: kopf.PRESENT,
}

# The fields of each child kind that a reconcile reads (`observation`, `render.status`,
# `render.events`, `render.endpoint.keep_preferences`, `placement.fleet`); the rest of each
# object (a rendered pod template is most of a Deployment) is not kept. True keeps the whole
# value; a list shape applies to every item.
_Shape = Mapping[str, Any]
_METADATA: Final[_Shape] = {
    key: True
    for key in (
        "name",
        "namespace",
        "uid",
        "generation",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "labels",
        "annotations",
        "ownerReferences",
    )
}
_DEPLOYMENT: Final[_Shape] = {
    "apiVersion": True,
    "kind": True,
    "metadata": _METADATA,
    "spec": {"replicas": True, "template": {"metadata": True, "spec": {"affinity": True}}},
    "status": True,
}
_SERVICE: Final[_Shape] = {"apiVersion": True, "kind": True, "metadata": _METADATA}
# What a collection's reconcile reads of its StatefulSet: the render stamp and replicas (change
# Events), the volume size it was created with, and its status.
_STATEFULSET: Final[_Shape] = {
    "apiVersion": True,
    "kind": True,
    "metadata": _METADATA,
    "spec": {"replicas": True, "volumeClaimTemplates": [{"spec": {"resources": True}}]},
    "status": True,
}
# What a collection's reconcile reads of its volumes: whether they bound, and to which class.
_CLAIM: Final[_Shape] = {
    "metadata": _METADATA,
    "spec": {"storageClassName": True},
    "status": {"phase": True},
}
_CONTAINER: Final[_Shape] = {"name": True, "resources": True, "restartPolicy": True}
_POD: Final[_Shape] = {
    "apiVersion": True,
    "kind": True,
    "metadata": _METADATA,
    "spec": {"nodeName": True, "containers": [_CONTAINER], "initContainers": [_CONTAINER]},
    "status": {
        "phase": True,
        "conditions": True,
        "podIP": True,
        "startTime": True,
        # A restarted container makes the Ready time a restart's, not the replica's start
        # (`api.wire.start_seconds`).
        "containerStatuses": [{"name": True, "restartCount": True}],
    },
}


@dataclasses.dataclass(frozen=True)
class GpuPod:
    """A pod bound to a node and holding GPUs there; `endpoint` when Tidal runs it."""

    namespace: str
    name: str
    gpus: int
    endpoint: str | None = None


@dataclasses.dataclass(frozen=True)
class CollectionEntry:
    """A VectorCollection's name, residency regions and uid."""

    name: str
    regions: tuple[str, ...]
    uid: str = ""


@dataclasses.dataclass(frozen=True)
class EndpointEntry:
    """An InferenceEndpoint's name, the VectorCollection it pairs with (if any), its uid, its
    `spec.runtime.engine` as written (what the periodic refresh needs) and its desired
    replicas (what its collection's hibernation needs)."""

    name: str
    collection: str | None = None
    uid: str = ""
    engine: str | None = None
    # `status.replicas.desired` as last written (a serving one keeps its collection awake).
    desired: int = 0


# --- index handlers (run on the event loop, for every watch event; keep them cheap) ----------
# Returning {} rather than None matters: None leaves the object's previous entries in place.


@kopf.index("", "v1", "nodes", id=NODES)
async def index_nodes(body: kopf.Body, name: str, **_: Any) -> dict[str, NodeInfo]:
    """Each Node as the planner sees it; GPUs requested are filled in from `GPU_PODS` later.

    Telemetry is parsed here, once per change rather than per reconcile; the planner judges its
    staleness again at its own `now`. Labels are read by the cluster's conventions, fixed at
    start-up before any watch (`tidal.runtime.capacity`).
    """
    return {name: fleet.node_info(body, 0, datetime.now(UTC), services.capacity.conventions)}


@kopf.index("", "v1", "pods", id=GPU_PODS)
async def index_gpu_pods(body: kopf.Body, **_: Any) -> dict[str, GpuPod]:
    """Pods that hold GPUs on a node, by node name (the scheduler's accounting, see
    `placement.fleet.gpu_requests_by_node`)."""
    return gpu_pod_entry(body)


@kopf.index("", "v1", "namespaces", id=NAMESPACE_POLICIES)
async def index_namespace_policies(body: kopf.Body, name: str, **_: Any) -> dict[str, str]:
    """The raw `tidal.dev/allowed-regions` of each Namespace that has one."""
    value = body.metadata.annotations.get(ALLOWED_REGIONS)
    return {} if value is None else {name: str(value)}


@kopf.index(GROUP, VERSION, COLLECTIONS_PLURAL, id=COLLECTIONS)
async def index_collections(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[str, CollectionEntry]:
    """Each VectorCollection's regions, by namespace."""
    if namespace is None:
        return {}
    entry = CollectionEntry(
        name=name, regions=collection_regions(body), uid=str(body.metadata.uid or "")
    )
    return {namespace: entry}


@kopf.index(GROUP, VERSION, PLURAL, id=ENDPOINTS)
async def index_endpoints(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[str, EndpointEntry]:
    """Each InferenceEndpoint, its paired collection, uid and engine, by namespace."""
    if namespace is None:
        return {}
    spec = as_mapping(body.get("spec"))
    ref = as_mapping(spec.get("vectorCollectionRef")).get("name")
    engine = as_mapping(spec.get("runtime")).get("engine")
    desired = as_mapping(as_mapping(body.get("status")).get("replicas")).get("desired")
    return {
        namespace: EndpointEntry(
            name=name,
            collection=str(ref) if ref else None,
            uid=str(body.metadata.uid or ""),
            engine=str(engine) if engine is not None else None,
            desired=desired if isinstance(desired, int) else 0,
        )
    }


@kopf.index("apps", "v1", "deployments", id=CHILD_DEPLOYMENTS, labels=_CHILDREN)
async def index_child_deployments(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Each endpoint's Deployments, by (namespace, endpoint)."""
    return child_entry(body, _DEPLOYMENT)


@kopf.index("", "v1", "services", id=CHILD_SERVICES, labels=_CHILDREN)
async def index_child_services(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Each endpoint's Service, by (namespace, endpoint)."""
    return child_entry(body, _SERVICE)


@kopf.index("", "v1", "pods", id=CHILD_PODS, labels=_CHILDREN)
async def index_child_pods(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Each endpoint's pods (every phase: the reconcile tells live from finished), by
    (namespace, endpoint)."""
    return child_entry(body, _POD)


@kopf.index("policy", "v1", "poddisruptionbudgets", id=CHILD_PDBS, labels=_CHILDREN)
async def index_child_pdbs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Each endpoint's PodDisruptionBudget, by (namespace, endpoint)."""
    return child_entry(body, _SERVICE)


@kopf.index("apps", "v1", "statefulsets", id=COLLECTION_STATEFULSETS, labels=_COLLECTION_CHILDREN)
async def index_collection_statefulsets(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Each Managed collection's StatefulSet, by (namespace, collection)."""
    return child_entry(body, _STATEFULSET, LABEL_COLLECTION)


@kopf.index("", "v1", "services", id=COLLECTION_SERVICES, labels=_COLLECTION_CHILDREN)
async def index_collection_services(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Each Managed collection's Services, by (namespace, collection)."""
    return child_entry(body, _SERVICE, LABEL_COLLECTION)


@kopf.index("policy", "v1", "poddisruptionbudgets", id=COLLECTION_PDBS, labels=_COLLECTION_CHILDREN)
async def index_collection_pdbs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Each Managed collection's PodDisruptionBudget, by (namespace, collection)."""
    return child_entry(body, _SERVICE, LABEL_COLLECTION)


@kopf.index("", "v1", "persistentvolumeclaims", id=COLLECTION_CLAIMS, labels=_COLLECTION_CHILDREN)
async def index_collection_claims(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Each Managed collection's volumes (name, class, phase), by (namespace, collection)."""
    return child_entry(body, _CLAIM, LABEL_COLLECTION)


@kopf.index("storage.k8s.io", "v1", "storageclasses", id=STORAGE_CLASSES)
async def index_storage_classes(
    body: kopf.Body, name: str, **_: Any
) -> dict[str, collection_reconcile.StorageClassInfo]:
    """Each StorageClass: the cluster's default or not, and when it binds."""
    return {name: storage_class_info(body)}


def storage_class_info(obj: Mapping[str, Any]) -> collection_reconcile.StorageClassInfo:
    """A StorageClass as a collection's reconcile reads it."""
    annotations = as_mapping(as_mapping(obj.get("metadata")).get("annotations"))
    return collection_reconcile.StorageClassInfo(
        default=str(annotations.get(DEFAULT_STORAGE_CLASS, "")).lower() == "true",
        wait_for_consumer=obj.get("volumeBindingMode") == "WaitForFirstConsumer",
    )


@kopf.index("", "v1", "pods", id=COLLECTION_PODS, labels=_COLLECTION_CHILDREN)
async def index_collection_pods(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    """Each Managed collection's engine pods, by (namespace, collection)."""
    return child_entry(body, _POD, LABEL_COLLECTION)


# --- pure readers ---------------------------------------------------------------------------


def gpu_pod_entry(pod: Mapping[str, Any]) -> dict[str, GpuPod]:
    """The `GPU_PODS` entry of one pod: {node: GpuPod} while it holds GPUs there, else {}."""
    metadata = as_mapping(pod.get("metadata"))
    node = node_name(pod)
    if not node or is_terminated(pod):
        return {}
    gpus = fleet.pod_gpu_request(pod)
    if not gpus:
        return {}
    endpoint = as_mapping(metadata.get("labels")).get(LABEL_ENDPOINT)
    return {
        node: GpuPod(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            gpus=gpus,
            endpoint=str(endpoint) if endpoint else None,
        )
    }


def child_entry(
    obj: Mapping[str, Any], shape: Mapping[str, Any], owner_label: str = LABEL_ENDPOINT
) -> dict[tuple[str, str], Any]:
    """The child-index entry of one of an endpoint's (or, by `owner_label`, a collection's)
    children: {(namespace, owner): the fields `shape` keeps}; {} without the owner label."""
    metadata = as_mapping(obj.get("metadata"))
    owner = as_mapping(metadata.get("labels")).get(owner_label)
    if not owner:
        return {}
    return {(str(metadata.get("namespace", "")), str(owner)): _pruned(obj, shape)}


def _pruned(value: Any, shape: Any) -> Any:
    """A plain copy of `value` with only what `shape` names (see `_DEPLOYMENT`)."""
    if shape is True:
        return _plain(value)
    if isinstance(shape, list):
        return [_pruned(item, shape[0]) for item in value] if isinstance(value, list) else None
    if not isinstance(value, Mapping):
        return None
    return {key: _pruned(value[key], inner) for key, inner in shape.items() if key in value}


def _plain(value: Any) -> Any:
    """A deep copy made of dicts and lists (Kopf's bodies are read-only views)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def collection_regions(collection: Mapping[str, Any]) -> tuple[str, ...]:
    """A VectorCollection's `spec.residency.regions` (empty when unreadable: it then allows
    nothing, which keeps a paired endpoint out of every region rather than in any)."""
    regions = as_mapping(as_mapping(collection.get("spec")).get("residency")).get("regions")
    return tuple(str(r) for r in regions) if isinstance(regions, list) else ()


class FleetMemo:
    """What the previous snapshot was built from. An unchanged node keeps its `NodeInfo` object
    and an unchanged fleet its tuple, from one snapshot to the next: building one costs a pass
    over the index rather than a copy and a sort of every node, and whatever the planner derives
    from a node object can be kept with it. Event loop only, like the indexes."""

    def __init__(self) -> None:
        # node name -> (the index's NodeInfo, the GPUs its pods hold, the NodeInfo with them)
        self.nodes: dict[str, tuple[NodeInfo, int, NodeInfo]] = {}
        self.ordered: tuple[NodeInfo, ...] = ()


# The memo `capture` builds every reconcile's snapshot with.
_FLEET_MEMO: Final = FleetMemo()


def fleet_snapshot(
    nodes: Mapping[str, Iterable[NodeInfo]],
    gpu_pods: Mapping[str, Iterable[GpuPod]],
    now: datetime,
    memo: FleetMemo | None = None,
) -> FleetSnapshot:
    """The fleet from the two indexes: every node with the GPUs its pods hold, sorted by name.

    With a `memo`, nodes and tuples unchanged since the memo's last snapshot are reused (equal
    either way; only object identity differs).
    """
    previous = memo.nodes if memo is not None else {}
    current: dict[str, tuple[NodeInfo, int, NodeInfo]] = {}
    for name, entries in nodes.items():
        requested = sum(pod.gpus for pod in gpu_pods.get(name, ()))
        for info in entries:
            seen = previous.get(info.name)
            if seen is not None and seen[0] is info and seen[1] == requested:
                built = seen[2]
            elif requested:
                built = dataclasses.replace(info, gpu_requested=requested)
            else:
                built = info
            current[info.name] = (info, requested, built)
    ordered = tuple(current[name][2] for name in sorted(current))
    if memo is not None:
        if len(ordered) == len(memo.ordered) and all(map(operator.is_, ordered, memo.ordered)):
            ordered = memo.ordered
        memo.nodes, memo.ordered = current, ordered
    return FleetSnapshot(nodes=ordered, observed_at=now)


def capture(
    indexes: Mapping[str, Any], namespace: str, now: datetime, endpoint: str | None = None
) -> Inputs:
    """Freeze what a reconcile of an endpoint in `namespace` needs from the indexes; with
    `endpoint`, its children too.

    `indexes` are the handler's keyword arguments (an index missing from them reads as empty,
    which only unit tests without Kopf do).
    """
    policies: Mapping[str, Collection[str]] = indexes.get(NAMESPACE_POLICIES) or {}
    collections: Mapping[str, Iterable[CollectionEntry]] = indexes.get(COLLECTIONS) or {}
    policy = next(iter(policies.get(namespace, ())), None)

    def children(index_id: str) -> tuple[dict[str, Any], ...]:
        if endpoint is None:
            return ()
        index: Mapping[tuple[str, str], Iterable[dict[str, Any]]] = indexes.get(index_id) or {}
        return tuple(index.get((namespace, endpoint), ()))

    return Inputs(
        fleet=fleet_snapshot(
            indexes.get(NODES) or {}, indexes.get(GPU_PODS) or {}, now, _FLEET_MEMO
        ),
        namespace_policy=policy,
        collections={entry.name: entry.regions for entry in collections.get(namespace, ())},
        deployments=children(CHILD_DEPLOYMENTS),
        services=children(CHILD_SERVICES),
        pods=children(CHILD_PODS),
        pdbs=children(CHILD_PDBS),
    )


def capture_collection(
    indexes: Mapping[str, Any],
    namespace: str,
    name: str,
    catalog: PriceCatalog,
) -> collection_reconcile.World:
    """Freeze what a reconcile of collection `name` needs from the indexes: the namespace's
    policy, the desired replicas of the endpoints paired with it and (Managed) its children,
    pods and the regions of their nodes; priced with `catalog`. Runs on the event loop, like
    `capture` (an External collection has no children: those parts read as empty)."""
    policies: Mapping[str, Collection[str]] = indexes.get(NAMESPACE_POLICIES) or {}
    endpoints: Mapping[str, Iterable[EndpointEntry]] = indexes.get(ENDPOINTS) or {}
    world = collection_reconcile.World(
        catalog=catalog,
        namespace_policy=next(iter(policies.get(namespace, ())), None),
        paired_desired=tuple(
            entry.desired for entry in endpoints.get(namespace, ()) if entry.collection == name
        ),
        region_label=services.capacity.conventions.region_label,
    )

    def children(index_id: str) -> tuple[dict[str, Any], ...]:
        index: Mapping[tuple[str, str], Iterable[dict[str, Any]]] = indexes.get(index_id) or {}
        return tuple(index.get((namespace, name), ()))

    statefulsets = [s for s in children(COLLECTION_STATEFULSETS) if _name(s) == name]
    claims = children(COLLECTION_CLAIMS)
    classes: Mapping[str, Iterable[collection_reconcile.StorageClassInfo]] = (
        indexes.get(STORAGE_CLASSES) or {}
    )
    pods = children(COLLECTION_PODS)
    nodes: Mapping[str, Iterable[NodeInfo]] = indexes.get(NODES) or {}
    regions = {}
    for node in {node_name(pod) for pod in pods if node_name(pod)}:
        info = next(iter(nodes.get(node, ())), None)
        if info is not None and info.region:
            regions[node] = info.region
    return dataclasses.replace(
        world,
        statefulset=statefulsets[0] if statefulsets else None,
        services=children(COLLECTION_SERVICES),
        pdbs=children(COLLECTION_PDBS),
        pods=pods,
        claims=tuple(sorted(_name(claim) for claim in claims)),
        volumes=claims,
        # Absent when the index is not there (a handler without it): then not judged.
        storage_classes=(
            {key: next(iter(infos)) for key, infos in classes.items() if infos}
            if STORAGE_CLASSES in indexes
            else None
        ),
        node_regions=regions,
    )


def of_handler(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The indexes among a Kopf handler's keyword arguments (live objects, read later too)."""
    return {key: kwargs[key] for key in ALL if key in kwargs}


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


def _name(obj: Mapping[str, Any]) -> str:
    return str(as_mapping(obj.get("metadata")).get("name", ""))
