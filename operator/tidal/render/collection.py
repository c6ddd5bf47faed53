"""Builders for a VectorCollection: the engine-side collection, the Managed engine's children, and
the status Tidal writes.

- `engine_collection(vc)` is what the engine driver creates or updates (name, dimension, metric,
  HNSW, quantization, shards, replication, on-disk tier), independent of the engine.
- `render_statefulset`, `render_service`, `render_peer_service`, `render_pdb` build a Managed
  engine's children in wire form, ready for server-side apply: a StatefulSet (engine image, one
  volume per pod from a claim template, CPU/memory requests from the estimate, required node
  affinity on the allowed regions and on nodes without GPUs, anti-affinity across replicas), a
  ClusterIP Service for clients, a headless Service for the pods' stable names (Qdrant peers), and
  a PodDisruptionBudget.
- `render_credentials` builds the Secret a Managed engine's generated password or API key lives
  in (`credentials_secret_name`), from a value the caller generated: nothing here is random.
- `summarize` assembles the status from decisions made elsewhere (sizing, cost, residency,
  hibernation, the measured SLO) and what was observed; `vector_events` derives the Events of a
  status change.

Pure: no IO, no clock, no Kopf. Sibling decision packages (sizing, cost, residency, scaling) are
not imported: the controller passes their results in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from tidal.api.collection import (
    KIND,
    ColdTierStatus,
    CollectionActivityStatus,
    CollectionCostStatus,
    CollectionSLOStatus,
    MeasuredUsage,
    Metric,
    SizingEstimate,
    StorageTier,
    VectorCollection,
    VectorCollectionStatus,
    VectorEngineMode,
    VectorEngineType,
    VectorQuantization,
)
from tidal.api.common import (
    HIBERNATED,
    PROVISIONED,
    READY,
    RESIDENCY_COMPLIANT,
    Condition,
    Event,
    PlacementStatus,
    set_condition,
)
from tidal.api.labels import (
    LABEL_COLLECTION,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGER,
    NODE_GPU_PRESENT,
    NODE_HOSTNAME,
    NODE_REGION,
)
from tidal.errors import PermanentError
from tidal.render.owners import owner_reference

__all__ = [
    "BINARY_OVERSAMPLING",
    "MANAGED_DATABASE",
    "MANAGED_PG_USER",
    "CollectionState",
    "EngineCollection",
    "ManagedPlan",
    "StatusParts",
    "child_labels",
    "condition_of",
    "credentials_key",
    "credentials_secret_name",
    "engine_collection",
    "engine_collection_name",
    "generates_credentials",
    "managed_url",
    "pg_identifier",
    "redact_url",
    "render_credentials",
    "render_pdb",
    "render_peer_service",
    "render_service",
    "render_statefulset",
    "search_oversampling",
    "summarize",
    "vector_events",
]

Object = dict[str, Any]

APP_NAME: Final = "tidal-vector"

CONTAINER_NAME: Final = "engine"
VOLUME_NAME: Final = "data"
MANAGED_DATABASE: Final = "tidal"
MANAGED_PG_USER: Final = "postgres"
# Keys Tidal reads from engine.connectionSecretRef (and writes into a generated Secret).
SECRET_PASSWORD_KEY: Final = "password"
SECRET_API_KEY: Final = "apiKey"
# A Managed engine without engine.connectionSecretRef: the Secret Tidal generates once.
CREDENTIALS_SUFFIX: Final = "-credentials"

# Binary quantization with rescore: candidates fetched through the 1-bit index per result
# wanted, then re-ranked with the original vectors (both engines; Qdrant recommends 2-4).
BINARY_OVERSAMPLING: Final = 4

QDRANT_HTTP_PORT: Final = 6333
QDRANT_GRPC_PORT: Final = 6334
QDRANT_P2P_PORT: Final = 6335
QDRANT_STORAGE: Final = "/qdrant/storage"
PG_PORT: Final = 5432
PG_DATA_MOUNT: Final = "/var/lib/postgresql/data"
# Startup probes: 120 x 5 s = 10 minutes to load collections / replay WAL before liveness applies.
_STARTUP_FAILURES: Final = 120
_PG_READY: Final = ("pg_isready", "-U", MANAGED_PG_USER, "-h", "127.0.0.1")
SHM_VOLUME: Final = "dshm"
# The default images' users: Qdrant's -unprivileged image (uid 1000), the postgres image's postgres.
_RUN_AS: Final[Mapping[VectorEngineType, int]] = {
    VectorEngineType.Qdrant: 1000,
    VectorEngineType.PGVector: 999,
}

# scheme://[user[:password]@]host[:port][/path][?query][#fragment]
_URL = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:(?P<user>[^:@/?#]*)(?::[^@/?#]*)?@)?"
    r"(?P<host>[^/?#@]*)(?P<path>/[^?#]*)?(?:\?[^#]*)?(?:#.*)?$"
)
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# StatefulSet pods are named <name>-<ordinal> and carry it as a label value (63 characters).
_MAX_NAME = 52
# PostgreSQL silently truncates identifiers to 63 bytes; longer names get a hash suffix instead.
_PG_MAX_IDENTIFIER = 63


@dataclasses.dataclass(frozen=True)
class EngineCollection:
    """The collection as the engine should hold it (what drivers create and compare)."""

    name: str
    dimension: int
    metric: Metric
    m: int
    ef_construct: int
    ef_search: int | None
    quantization: VectorQuantization
    rescore: bool
    shards: int
    replicas: int
    on_disk: bool


@dataclasses.dataclass(frozen=True)
class CollectionState:
    """What `sync` did and what the engine reports afterwards.

    `unapplied` lists declared settings the engine holds differently and that cannot be changed
    in place (so the collection is not provisioned as declared). Sizes and activity are None
    where the engine does not report them.
    """

    created: bool
    applied: tuple[str, ...]
    unapplied: tuple[str, ...]
    location: str
    vectors: int | None
    health: str | None = None
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    # Vectors and payloads as the engine counts them, without indexes (Qdrant telemetry).
    data_bytes: int | None = None
    query_count: int | None = None
    last_query_time: datetime | None = None
    engine_version: str | None = None


@dataclasses.dataclass(frozen=True)
class ManagedPlan:
    """Decisions the Managed children are rendered from (made by sizing, residency, scaling)."""

    replicas: int
    regions: Sequence[str]
    cpu: str
    memory: str
    volume: str
    # PostgreSQL's shared_buffers (a quarter of the pod's memory, the usual starting point).
    shared_buffers: str | None = None
    # The node label naming a node's region (the cluster's conventions, `tidal.api.conventions`).
    region_label: str = NODE_REGION


# --- names ----------------------------------------------------------------------------------


def engine_collection_name(namespace: str, name: str) -> str:
    """`<namespace>_<name>`: unique across namespaces sharing an External engine.

    Namespaces are DNS labels (no `_` or `.`), so the first `_` separates the two; dots in the
    name become `_` so the name is also a plain SQL identifier.
    """
    return f"{namespace}_{name.replace('.', '_')}"


def pg_identifier(name: str) -> str:
    """`name` as a PostgreSQL identifier of at most 63 bytes, deterministic and collision-safe.

    Longer names keep a readable prefix and end in 8 hex digits of their SHA-256.
    """
    if len(name.encode()) <= _PG_MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: _PG_MAX_IDENTIFIER - 9]}_{digest}"


def child_labels(name: str) -> dict[str, str]:
    """Labels selecting every child of collection `name` (and its pods)."""
    return {LABEL_MANAGED_BY: MANAGER, LABEL_COLLECTION: name}


def managed_url(vc: VectorCollection) -> str:
    """The in-cluster URL of a Managed engine (no credentials)."""
    name, namespace = _name(vc), _namespace(vc)
    host = f"{name}.{namespace}.svc.cluster.local"
    if vc.spec.engine.type is VectorEngineType.PGVector:
        return f"postgresql://{MANAGED_PG_USER}@{host}:{PG_PORT}/{MANAGED_DATABASE}"
    return f"http://{host}:{QDRANT_HTTP_PORT}"


def redact_url(url: str) -> str:
    """`url` without a password, query or fragment (status and events never carry secrets).

    A regular expression rather than urllib: decision modules import no IO-adjacent modules.
    """
    match = _URL.match(url)
    if match is None:
        return "(unparseable URL)"
    user = f"{match['user']}@" if match["user"] else ""
    return f"{match['scheme']}://{user}{match['host']}{match['path'] or ''}"


def search_oversampling(want: EngineCollection) -> int | None:
    """The oversampling a query of `want` uses through its index (None: none): Binary with
    rescore fetches `BINARY_OVERSAMPLING` x the results wanted and re-ranks them exactly. What
    clients are told to use and what the SLO probe measures."""
    if want.quantization is VectorQuantization.Binary and want.rescore:
        return BINARY_OVERSAMPLING
    return None


def engine_collection(vc: VectorCollection) -> EngineCollection:
    """What the engine should hold for `vc`."""
    spec = vc.spec
    return EngineCollection(
        name=engine_collection_name(_namespace(vc), _name(vc)),
        dimension=spec.dimension,
        metric=spec.metric,
        m=spec.index.m,
        ef_construct=spec.index.ef_construct,
        ef_search=spec.index.ef_search,
        quantization=spec.quantization.type,
        rescore=spec.quantization.rescore,
        shards=spec.shards,
        replicas=spec.replicas,
        on_disk=spec.storage.tier is StorageTier.Disk,
    )


# --- Managed children ---------------------------------------------------------------------------


def render_statefulset(vc: VectorCollection, plan: ManagedPlan) -> Object:
    """The engine's StatefulSet running `plan.replicas` pods (0 = hibernated, volumes kept)."""
    if plan.replicas < 0:
        raise ValueError(f"replicas must not be negative, got {plan.replicas}")
    if plan.replicas > 0 and not plan.regions:
        raise ValueError("a running engine needs at least one allowed region")
    spec = vc.spec
    if spec.engine.mode is not VectorEngineMode.Managed:
        raise PermanentError("only Managed collections have a StatefulSet")
    engine = spec.engine.type
    if engine is VectorEngineType.PGVector and spec.replicas != 1:
        raise PermanentError(
            "Managed PGVector runs one PostgreSQL (replicas: 1): Tidal does not set up "
            "streaming replication; use External mode with an operator such as CloudNativePG"
        )
    name = _name(vc)
    labels = _labels(name)
    uid = _RUN_AS[engine]
    pod_spec: Object = {
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [_node_term(plan.regions, plan.region_label)]
                }
            },
            # Preferred, not required: a region with fewer CPU nodes than replicas still runs
            # them all, while a spread is kept wherever the nodes exist.
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": _selector(name)},
                            "topologyKey": NODE_HOSTNAME,
                        },
                    }
                ]
            },
        },
        "terminationGracePeriodSeconds": 60,
        "containers": [_container(vc, plan)],
        "volumes": _volumes(vc, plan),
    }
    claim_spec: Object = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": plan.volume}},
    }
    if spec.storage.storage_class_name:
        claim_spec["storageClassName"] = spec.storage.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": _namespace(vc),
            "labels": labels,
            "ownerReferences": [_owner_reference(vc)],
        },
        "spec": {
            "replicas": plan.replicas,
            "serviceName": _peer_service_name(name),
            # Waking from zero starts every pod at once; Qdrant peers join pod 0 themselves.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": _selector(name)},
            # Hibernation scales to zero: the volumes (the data) must survive it and deletion of
            # the collection alike; deleting data is a person's decision.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
            "volumeClaimTemplates": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": VOLUME_NAME, "labels": dict(labels)},
                    "spec": claim_spec,
                }
            ],
        },
    }


def _volumes(vc: VectorCollection, plan: ManagedPlan) -> list[Object]:
    volumes: list[Object] = [{"name": "tmp", "emptyDir": {}}]
    if vc.spec.engine.type is VectorEngineType.PGVector:
        # Memory-backed, so it counts against the memory limit: as much as shared_buffers.
        shm = plan.shared_buffers.replace("MB", "Mi") if plan.shared_buffers else "256Mi"
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm}})
    return volumes


def render_service(vc: VectorCollection) -> Object:
    """The ClusterIP Service clients use (`status.endpoint`)."""
    name = _name(vc)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _child_metadata(vc, name),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(name),
            "ports": _service_ports(vc, peers=False),
        },
    }


def render_peer_service(vc: VectorCollection) -> Object:
    """The headless Service giving pods stable DNS names (Qdrant's peer-to-peer bootstrap)."""
    name = _name(vc)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _child_metadata(vc, _peer_service_name(name)),
        "spec": {
            "clusterIP": "None",
            # Peers must find each other before they are ready, or a cluster never forms.
            "publishNotReadyAddresses": True,
            "selector": _selector(name),
            "ports": _service_ports(vc, peers=True),
        },
    }


def render_pdb(vc: VectorCollection) -> Object:
    """At most one engine pod voluntarily disrupted at a time (drains, upgrades)."""
    name = _name(vc)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _child_metadata(vc, name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(name)}},
    }


# --- credentials ------------------------------------------------------------------------------


def generates_credentials(vc: VectorCollection) -> bool:
    """Whether Tidal generates the engine's credentials: a Managed engine whose spec names no
    `engine.connectionSecretRef` (a user's Secret always wins)."""
    engine = vc.spec.engine
    return engine.mode is VectorEngineMode.Managed and engine.connection_secret_ref is None


def credentials_secret_name(vc: VectorCollection) -> str:
    """The Secret holding the engine's credentials: the one the spec names, else the generated
    `<name>-credentials`."""
    ref = vc.spec.engine.connection_secret_ref
    return ref.name if ref is not None else f"{_name(vc)}{CREDENTIALS_SUFFIX}"


def credentials_key(engine: VectorEngineType) -> str:
    """The Secret key an engine's credential is under: PostgreSQL's password, Qdrant's API key."""
    return SECRET_PASSWORD_KEY if engine is VectorEngineType.PGVector else SECRET_API_KEY


def render_credentials(vc: VectorCollection, value: str) -> Object:
    """The generated credentials Secret holding `value` (generated by the caller, once).

    Owned by the collection, so the garbage collector deletes it with the collection; created,
    never applied: an existing Secret is never overwritten, so the value is never rotated.
    """
    if not generates_credentials(vc):
        raise PermanentError("only a Managed collection without connectionSecretRef has one")
    if not value:
        raise ValueError("a generated credential must not be empty")
    name = _name(vc)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _child_metadata(vc, f"{name}{CREDENTIALS_SUFFIX}"),
        "type": "Opaque",
        "stringData": {credentials_key(vc.spec.engine.type): value},
    }


# --- status ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StatusParts:
    """Decisions and observations a collection's status is assembled from."""

    generation: int | None
    endpoint: str | None
    collection: str | None
    vectors: int | None
    estimate: SizingEstimate
    measured: MeasuredUsage | None
    cost: CollectionCostStatus | None
    placement: PlacementStatus
    activity: CollectionActivityStatus
    cold_tier: ColdTierStatus | None
    provisioned: Condition
    residency: Condition
    hibernated: Condition
    # Managed: (ready pods, desired pods); None for External.
    pods: tuple[int, int] | None
    engine_version: str | None = None
    # The cold tier's `Offloaded` condition (None: no cold tier, not written).
    offloaded: Condition | None = None
    # The measured SLO (`tidal.slo`) and its `SLOMet` condition (None: not written).
    slo: CollectionSLOStatus | None = None
    slo_condition: Condition | None = None
    # The generated credentials Secret's name (never its value); None: the user names one.
    credentials_secret: str | None = None


def summarize(
    parts: StatusParts, conditions: Sequence[Condition], now: str
) -> VectorCollectionStatus:
    """The status: every field Tidal owns (an unknown one as null, so the merge patch clears
    it), conditions upserted into the existing list.

    Ready is the summary: hibernated (by design not serving) is not ready; otherwise the
    collection must be provisioned in the engine, compliant, and (Managed) have its pods ready.
    """
    for condition in (
        parts.provisioned,
        parts.residency,
        parts.hibernated,
        parts.offloaded,
        parts.slo_condition,
    ):
        if condition is not None:
            conditions = set_condition(conditions, condition, now)
    conditions = set_condition(conditions, _ready(parts), now)
    return VectorCollectionStatus(
        observed_generation=parts.generation,
        endpoint=parts.endpoint,
        collection=parts.collection,
        vectors=parts.vectors,
        engine_version=parts.engine_version,
        credentials_secret_name=parts.credentials_secret,
        estimate=parts.estimate,
        measured=parts.measured,
        cost=parts.cost,
        slo=parts.slo,
        placement=parts.placement,
        activity=parts.activity,
        cold_tier=parts.cold_tier,
        conditions=list(conditions),
    )


def _ready(parts: StatusParts) -> Condition:
    def ready(status: bool, reason: str, message: str) -> Condition:
        return Condition(
            type=READY,
            status="True" if status else "False",
            reason=reason,
            message=message,
            observed_generation=parts.generation,
        )

    if parts.offloaded is not None and parts.offloaded.status == "True":
        return ready(False, "Offloaded", parts.offloaded.message)
    if parts.hibernated.status == "True":
        return ready(False, "Hibernated", parts.hibernated.message)
    if parts.residency.status == "False" and parts.residency.reason == "NoAllowedRegion":
        return ready(False, parts.residency.reason, parts.residency.message)
    if parts.provisioned.reason in _VOLUME_REASONS:
        # Pods wait for their volumes: the volume is the reason, and it deserves the Warning.
        return ready(False, parts.provisioned.reason, parts.provisioned.message)
    if parts.pods is not None:
        ready_pods, desired = parts.pods
        if ready_pods < desired:
            return ready(False, "PodsNotReady", f"{ready_pods}/{desired} engine pods ready")
    if parts.provisioned.status != "True":
        return ready(False, parts.provisioned.reason, parts.provisioned.message)
    vectors = f"{parts.vectors} vectors" if parts.vectors is not None else "collection"
    return ready(True, "CollectionReady", f"{vectors} in {parts.collection or 'the engine'}")


# Provisioned=False reasons about the volumes (`reconcile.collection.volume_condition`).
_VOLUME_REASONS: Final = frozenset({"NoStorageClass", "VolumePending"})
# Ready=False for these reasons is reported by its own event (or is routine start-up).
_QUIET_NOT_READY: Final = frozenset({"Hibernated", "Offloaded", "PodsNotReady", "EngineNotRunning"})


def vector_events(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[Event]:
    """Events for a collection's status moving from `before` to `after` (exactly once each)."""
    old = _conditions(before or {})
    new = _conditions(after)
    events: list[Event] = []

    ready, was_ready = new.get(READY), old.get(READY)
    if ready is not None and _moved(was_ready, ready):
        message = str(ready.get("message", ""))
        if ready.get("status") == "True":
            events.append(Event("Normal", "Ready", message))
        elif ready.get("reason") not in _QUIET_NOT_READY:
            events.append(Event("Warning", str(ready.get("reason", "NotReady")), message))

    hibernated, was = new.get(HIBERNATED), old.get(HIBERNATED)
    if hibernated is not None:
        now_on = hibernated.get("status") == "True"
        was_on = was is not None and was.get("status") == "True"
        if now_on and not was_on:
            events.append(Event("Normal", "Hibernated", str(hibernated.get("message", ""))))
        elif was_on and not now_on:
            events.append(Event("Normal", "Woke", str(hibernated.get("message", ""))))

    residency, was_residency = new.get(RESIDENCY_COMPLIANT), old.get(RESIDENCY_COMPLIANT)
    if (
        residency is not None
        and residency.get("status") == "False"
        and (
            was_residency is None
            or was_residency.get("status") != "False"
            or was_residency.get("reason") != residency.get("reason")
        )
    ):
        events.append(Event("Warning", "ResidencyViolation", str(residency.get("message", ""))))

    version, was_version = after.get("engineVersion"), (before or {}).get("engineVersion")
    if version and version != was_version:
        was_text = f" (was {was_version})" if was_version else ""
        events.append(Event("Normal", "EngineVersion", f"The engine is {version}{was_text}"))

    provisioned, was_provisioned = new.get(PROVISIONED), old.get(PROVISIONED)
    if (
        provisioned is not None
        and provisioned.get("status") == "True"
        and (was_provisioned is None or was_provisioned.get("status") != "True")
    ):
        events.append(Event("Normal", "Provisioned", str(provisioned.get("message", ""))))

    regions = _regions(after)
    old_regions = _regions(before or {})
    if regions and regions != old_regions and (after.get("placement") or {}).get("nodes"):
        was_text = f" (was {', '.join(old_regions)})" if old_regions else ""
        events.append(
            Event(
                "Normal", "PlacementChanged", f"Engine pods run in {', '.join(regions)}{was_text}"
            )
        )
    return events


def _moved(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    if old is None:
        return True
    if any(old.get(k) != new.get(k) for k in ("status", "reason")):
        return True
    # An invalid spec edited and still invalid deserves a fresh warning.
    return new.get("status") != "True" and old.get("observedGeneration") != new.get(
        "observedGeneration"
    )


def _regions(status: Mapping[str, Any]) -> list[str]:
    placement = status.get("placement")
    if not isinstance(placement, Mapping):
        return []
    return list(placement.get("regions") or [])


def condition_of(status: Mapping[str, Any] | None, type_: str) -> Condition | None:
    """A condition from a wire-form status, parsed; None when absent or unreadable."""
    for raw in (status or {}).get("conditions") or []:
        if isinstance(raw, Mapping) and raw.get("type") == type_:
            try:
                return Condition.model_validate(raw)
            except ValueError:
                return None
    return None


# --- parts ------------------------------------------------------------------------------------


def _name(vc: VectorCollection) -> str:
    name = vc.metadata.get("name")
    if not isinstance(name, str) or not name:
        raise PermanentError("metadata.name is missing")
    if vc.spec.engine.mode is VectorEngineMode.Managed and (
        len(name) > _MAX_NAME or not _DNS_1035_LABEL.match(name)
    ):
        raise PermanentError(
            f"metadata.name {name!r} must be a DNS-1035 label of at most {_MAX_NAME} characters "
            "for a Managed collection (it names the StatefulSet, its pods and Services)"
        )
    return name


def _namespace(vc: VectorCollection) -> str:
    namespace = vc.metadata.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise PermanentError("metadata.namespace is missing")
    return namespace


def _peer_service_name(name: str) -> str:
    return f"{name}-peers"


def _selector(name: str) -> dict[str, str]:
    return {LABEL_NAME: APP_NAME, LABEL_COLLECTION: name}


def _labels(name: str) -> dict[str, str]:
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: name,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_COLLECTION: name,
    }


def _child_metadata(vc: VectorCollection, child_name: str) -> Object:
    return {
        "name": child_name,
        "namespace": _namespace(vc),
        "labels": _labels(_name(vc)),
        "ownerReferences": [_owner_reference(vc)],
    }


def _owner_reference(vc: VectorCollection) -> Object:
    return owner_reference(KIND, _name(vc), vc.metadata)


def _node_term(regions: Sequence[str], region_label: str) -> Object:
    # A term with an empty `In` list is invalid; a hibernated engine (0 replicas) with no allowed
    # region still renders a valid template that can match nothing.
    region_values = list(regions) or ["none"]
    return {
        "matchExpressions": [
            {"key": region_label, "operator": "In", "values": region_values},
            # CPU nodes: GPU nodes are labelled by the GPU operator / the simulated fleet.
            {"key": NODE_GPU_PRESENT, "operator": "NotIn", "values": ["true"]},
        ]
    }


def _service_ports(vc: VectorCollection, *, peers: bool) -> list[Object]:
    if vc.spec.engine.type is VectorEngineType.PGVector:
        return [{"name": "postgres", "port": PG_PORT, "targetPort": "postgres", "protocol": "TCP"}]
    ports = [
        {"name": "http", "port": QDRANT_HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": QDRANT_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
    ]
    if peers:
        ports.append(
            {"name": "p2p", "port": QDRANT_P2P_PORT, "targetPort": "p2p", "protocol": "TCP"}
        )
    return ports


def _container(vc: VectorCollection, plan: ManagedPlan) -> Object:
    spec = vc.spec
    image = spec.engine.effective_image
    resources = {
        "requests": {"cpu": plan.cpu, "memory": plan.memory},
        # Memory limit = request: the estimate is what the collection is priced at, and an
        # engine outgrowing it should be visible (OOM) rather than silently starve neighbours.
        "limits": {"memory": plan.memory},
    }
    security = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.engine.type is VectorEngineType.PGVector:
        return _postgres_container(vc, plan, image, resources, security)
    return _qdrant_container(vc, image, resources, security)


def _qdrant_container(
    vc: VectorCollection, image: str | None, resources: Object, security: Object
) -> Object:
    name, namespace = _name(vc), _namespace(vc)
    env: list[Object] = [
        {"name": "QDRANT__STORAGE__STORAGE_PATH", "value": f"{QDRANT_STORAGE}/data"},
        {"name": "QDRANT__STORAGE__SNAPSHOTS_PATH", "value": f"{QDRANT_STORAGE}/snapshots"},
        {"name": "QDRANT__STORAGE__TEMP_PATH", "value": "/tmp"},
        {"name": "QDRANT__SERVICE__HTTP_PORT", "value": str(QDRANT_HTTP_PORT)},
        {"name": "QDRANT__SERVICE__GRPC_PORT", "value": str(QDRANT_GRPC_PORT)},
        {"name": "QDRANT__TELEMETRY_DISABLED", "value": "true"},
    ]
    # A user's Secret may hold no apiKey (an open Qdrant, as before Tidal generated keys); the
    # generated one always does, and the pod must not start open while it is missing.
    key_ref: Object = {"name": credentials_secret_name(vc), "key": SECRET_API_KEY}
    if not generates_credentials(vc):
        key_ref["optional"] = True
    env.append({"name": "QDRANT__SERVICE__API_KEY", "valueFrom": {"secretKeyRef": key_ref}})
    container: Object = {
        "name": CONTAINER_NAME,
        "image": image,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": QDRANT_HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": QDRANT_GRPC_PORT, "protocol": "TCP"},
            {"name": "p2p", "containerPort": QDRANT_P2P_PORT, "protocol": "TCP"},
        ],
        "resources": resources,
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # /livez answers once the process serves HTTP; loading large collections from the volume
        # happens behind /readyz, so liveness never kills a pod that is still loading.
        "startupProbe": {
            "httpGet": {"path": "/livez", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": _STARTUP_FAILURES,
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "securityContext": security,
        "volumeMounts": [
            {"name": VOLUME_NAME, "mountPath": QDRANT_STORAGE},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if vc.spec.replicas > 1:
        # Distributed mode: pod 0 starts the cluster, the others bootstrap from it. Each peer
        # announces its stable name from the headless Service.
        peers = f"{_peer_service_name(name)}.{namespace}.svc.cluster.local"
        script = (
            f'self="http://${{HOSTNAME}}.{peers}:{QDRANT_P2P_PORT}"; '
            'if [ "${HOSTNAME##*-}" = "0" ]; then exec ./entrypoint.sh --uri "$self"; fi; '
            f'exec ./entrypoint.sh --bootstrap "http://{name}-0.{peers}:{QDRANT_P2P_PORT}" '
            '--uri "$self"'
        )
        env.append({"name": "QDRANT__CLUSTER__ENABLED", "value": "true"})
        container["command"] = ["/bin/sh", "-c", script]
    return container


def _postgres_container(
    vc: VectorCollection,
    plan: ManagedPlan,
    image: str | None,
    resources: Object,
    security: Object,
) -> Object:
    args = ["-c", "max_connections=100"]
    if plan.shared_buffers:
        args += ["-c", f"shared_buffers={plan.shared_buffers}"]
    return {
        "name": CONTAINER_NAME,
        "image": image,
        "args": args,
        "env": [
            {"name": "POSTGRES_DB", "value": MANAGED_DATABASE},
            {"name": "POSTGRES_USER", "value": MANAGED_PG_USER},
            {
                "name": "POSTGRES_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": credentials_secret_name(vc),
                        "key": SECRET_PASSWORD_KEY,
                    }
                },
            },
            # A subdirectory: the volume's root may hold lost+found, which initdb refuses.
            {"name": "PGDATA", "value": f"{PG_DATA_MOUNT}/pgdata"},
        ],
        "ports": [{"name": "postgres", "containerPort": PG_PORT, "protocol": "TCP"}],
        "resources": resources,
        "readinessProbe": {
            "exec": {"command": list(_PG_READY)},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        # Crash recovery replays WAL before PostgreSQL accepts connections: up to 10 minutes
        # before liveness applies.
        "startupProbe": {
            "exec": {"command": list(_PG_READY)},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": _STARTUP_FAILURES,
        },
        "livenessProbe": {
            "exec": {"command": list(_PG_READY)},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "securityContext": security,
        "volumeMounts": [
            {"name": VOLUME_NAME, "mountPath": PG_DATA_MOUNT},
            {"name": "tmp", "mountPath": "/var/run/postgresql"},
            # PostgreSQL's dynamic shared memory (parallel queries and parallel HNSW builds);
            # the container runtime's default /dev/shm is 64 MiB.
            {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
        ],
    }


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    raw = status.get("conditions") or []
    return {c["type"]: c for c in raw if isinstance(c, Mapping) and "type" in c}
