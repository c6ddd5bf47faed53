"""Kopf handlers for VectorCollection: parse -> observe -> decide -> apply -> status.

One level-based reconcile serves every trigger (create, update, resume, a periodic refresh from
`tidal.runtime.refresh`, and changes of a Managed collection's StatefulSet). Each run:

1. parses the collection and reads the namespace's residency policy;
2. talks to the engine (External: always; Managed: while its pods run) through the driver
   interface in `tidal.clients.vectorengine`: creates the collection or applies in place what
   changed, and reads back vectors, measured size and query activity;
3. decides activity and hibernation (`tidal.scaling.vector`), the cold-tier offload, sizing
   (`tidal.sizing`), residency (`tidal.residency.vector`) and cost (`tidal.cost`);
4. applies a Managed engine's StatefulSet, Services and PodDisruptionBudget with server-side
   apply, keeping an existing StatefulSet's volume claim template (immutable in Kubernetes);
5. writes the whole status and posts an Event for each transition.

Handlers are sync (the kubernetes client and the engine drivers block) and return nothing.
Connection secrets are read only when `engine.connectionSecretRef` names one, and never logged
or written into status or events. Prices come from the operator's one price cache
(`tidal.runtime.services`), so the `tidal-pricing` ConfigMap is read when due, not on every
reconcile, and a refused one keeps the last good prices.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import kopf
from pydantic import ValidationError

from tidal.api.common import (
    API_VERSION,
    GROUP,
    PROVISIONED,
    READY,
    VERSION,
    Condition,
    Event,
    PlacementStatus,
    set_condition,
)
from tidal.api.inference import KIND as ENDPOINT_KIND
from tidal.api.labels import LABEL_COLLECTION, LABEL_MANAGED_BY, LAST_REQUEST_TIME, MANAGER, WAKE
from tidal.api.parsing import parse_object
from tidal.api.vector import (
    KIND,
    PLURAL,
    ColdTierStatus,
    MeasuredUsage,
    VectorCollection,
    VectorCollectionStatus,
    VectorEngineMode,
    VectorEngineType,
)
from tidal.api.wire import (
    format_time,
    format_time_compact,
    is_deleting,
    is_ready,
    node_name,
    parse_time,
    quantity_int,
)
from tidal.clients import kube, vectorkube
from tidal.clients.engines import connect
from tidal.clients.vectorengine import (
    CollectionState,
    Connection,
    EngineRejectedError,
    EngineUnavailableError,
    write_snapshot,
)
from tidal.cost import PriceCatalog, VectorFootprint, VectorState, vector_collection_cost
from tidal.errors import PermanentError, TidalError
from tidal.render.events import apply_events
from tidal.render.vector import (
    SECRET_API_KEY,
    SECRET_PASSWORD_KEY,
    EngineCollection,
    ManagedPlan,
    StatusParts,
    child_labels,
    engine_collection,
    managed_url,
    redact_url,
    render_pdb,
    render_peer_service,
    render_service,
    render_statefulset,
    summarize,
    vector_events,
)
from tidal.residency.policy import namespace_policy
from tidal.residency.vector import Residency, residency, residency_condition
from tidal.runtime import indexes as idx
from tidal.runtime import refresh as resync
from tidal.runtime import settings as tidal_settings
from tidal.runtime.errors import kopf_errors
from tidal.runtime.objects import controlling_owner, post_events
from tidal.runtime.services import services
from tidal.scaling.vector import (
    Signals,
    hibernation,
    observe_activity,
    snapshot_due,
)
from tidal.sizing import estimate, pod_resources

__all__ = ["child_statefulset_changed", "reconcile_collection"]

Raw = dict[str, Any]

INVALID_SPEC: Final = "InvalidSpec"
APPLY_REJECTED: Final = "ApplyRejected"
_SHARED_BUFFERS_FRACTION: Final = 4


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf_errors
def reconcile_collection(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Bring a collection (and a Managed engine) in line with its spec; write its status."""
    namespace, name = body.metadata.namespace, body.metadata.name
    if namespace is None or name is None:
        return
    _sync(namespace, name, logger, only_when_observed=False)


def _refresh_targets(indexes: Mapping[str, Any]) -> list[resync.Target]:
    return resync.targets_of(indexes.get(idx.COLLECTIONS) or {})


# The threads collection refreshes block in. Their engine calls can wait on an unreachable
# database for seconds; in asyncio's shared default pool they would hold up the inference
# controller's quick calls (gateway polls, price reads) queued behind them.
_refreshers: Final = concurrent.futures.ThreadPoolExecutor(
    max_workers=4, thread_name_prefix="tidal-collection-refresh"
)


async def _refresh(target: resync.Target, _indexes: Mapping[str, Any]) -> None:
    """A collection's periodic refresh (measured size, idleness, engine state, drift): the same
    reconcile, in a thread of its own pool (the engine clients block). Not a Kopf timer: see
    `resync`."""
    call = functools.partial(
        contextvars.copy_context().run,
        functools.partial(
            _sync, target.namespace, target.name, _refresh_logger, only_when_observed=False
        ),
    )
    await asyncio.get_running_loop().run_in_executor(_refreshers, call)


# Started with the inference controller's ticker, by its watch handlers (`resync.start`).
resync.register(KIND, tidal_settings.RECONCILE_INTERVAL_SECONDS, _refresh_targets, _refresh)
_refresh_logger: Final = logging.getLogger("tidal.controllers.collection")


@kopf.on.event(
    "apps",
    "v1",
    "statefulsets",
    labels={LABEL_MANAGED_BY: MANAGER, LABEL_COLLECTION: kopf.PRESENT},
)
@kopf_errors
def child_statefulset_changed(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Refresh the owning collection when its StatefulSet changes (pods ready, or deleted)."""
    namespace = body.metadata.namespace
    owner = _owner(body)
    if namespace is None or owner is None:
        return
    _sync(namespace, owner, logger, only_when_observed=True)


def _sync(namespace: str, name: str, logger: kopf.Logger, *, only_when_observed: bool) -> None:
    """Reconcile one collection from its latest stored state, serialized per collection."""
    with _lock(namespace, name):
        raw = kube.get_object(API_VERSION, KIND, namespace, name)
        if raw is None or is_deleting(raw):
            return
        before = raw.get("status") or {}
        generation = (raw.get("metadata") or {}).get("generation")
        if only_when_observed and before.get("observedGeneration") != generation:
            return
        status, events = _reconcile(raw, logger)
        _post(raw, logger, events)
        if any(before.get(key) != value for key, value in status.items()):
            kube.patch_status(API_VERSION, KIND, namespace, name, status)


_locks_guard = threading.Lock()
_locks: dict[tuple[str, str], threading.Lock] = {}


@contextlib.contextmanager
def _lock(namespace: str, name: str) -> Iterator[None]:
    with _locks_guard:
        lock = _locks.setdefault((namespace, name), threading.Lock())
    with lock:
        yield


@dataclass
class _EngineOutcome:
    state: CollectionState | None
    provisioned: Condition
    events: list[Event]


def _reconcile(raw: Raw, logger: kopf.Logger) -> tuple[dict[str, Any], list[Event]]:
    metadata = raw.get("metadata") or {}
    namespace, name = metadata["namespace"], metadata["name"]
    generation = metadata.get("generation")
    before = raw.get("status") or {}
    conditions = _conditions(before)
    now = datetime.now(UTC)
    stamp = format_time(now)

    try:
        vc = _parse(raw)
        want = engine_collection(vc)
    except PermanentError as exc:
        status = _failed(INVALID_SPEC, str(exc), generation, conditions, stamp)
        return status, vector_events(before, status)
    spec = vc.spec
    previous = _previous_status(before)
    managed = spec.engine.mode is VectorEngineMode.Managed

    # --- observe ------------------------------------------------------------------------------
    ns = kube.get_object("v1", "Namespace", None, namespace) or {}
    allowed = residency(
        spec.residency.regions, namespace_policy((ns.get("metadata") or {}).get("annotations"))
    )
    existing = kube.get_object("apps/v1", "StatefulSet", namespace, name) if managed else None
    pods = kube.list_pods(namespace, child_labels(name)) if managed else []
    ready_pods = [p for p in pods if _pod_ready(p)]
    running = (not managed) or bool(ready_pods)
    engine_events: list[Event] = []
    outcome = (
        _engine_sync(vc, want, generation)
        if running
        else _EngineOutcome(
            None,
            _condition(
                PROVISIONED, "False", "EngineNotRunning", "the engine has no ready pod", generation
            ),
            [],
        )
    )
    state = outcome.state
    engine_events += outcome.events

    annotations = metadata.get("annotations") or {}
    signals = Signals(
        created=parse_time(metadata.get("creationTimestamp")) or now,
        last_request_annotation=annotations.get(LAST_REQUEST_TIME),
        wake_annotation=annotations.get(WAKE),
        engine_queries=state.query_count if state else None,
        engine_last_query_time=state.last_query_time if state else None,
        paired_endpoint_serving=_paired_endpoint_serving(namespace, name),
    )

    # --- decide -------------------------------------------------------------------------------
    activity, woke = observe_activity(previous.activity, signals, now)
    decision = hibernation(spec, activity, now, managed=managed, generation=generation)
    was_hibernated = _hibernated(before)
    if decision.hibernated and not was_hibernated:
        activity = activity.model_copy(update={"hibernated_time": stamp})
    if woke:
        logger.info("Wake requested collection=%s/%s", namespace, name)

    cold = previous.cold_tier
    going_down = decision.hibernated and not was_hibernated
    if state is not None and snapshot_due(spec, activity, cold, now, hibernating=going_down):
        cold, snapshot_events = _offload(vc, want, spec.storage.cold_tier, now, cold)
        engine_events += snapshot_events

    points = spec.expected_vectors if spec.expected_vectors is not None else previous.vectors
    sized = estimate(spec, points)
    resources = pod_resources(spec, estimate(spec, spec.expected_vectors or 0))

    # --- apply --------------------------------------------------------------------------------
    apply_events_: list[Event] = []
    replicas = decision.replicas if allowed.allowed else 0
    volume = _existing_volume(existing) or spec.storage.size or resources.volume
    if managed:
        plan = ManagedPlan(
            replicas=replicas,
            regions=allowed.allowed,
            cpu=resources.cpu,
            memory=resources.memory,
            volume=volume,
            shared_buffers=(
                f"{resources.memory_bytes // _SHARED_BUFFERS_FRACTION // (1 << 20)}MB"
                if spec.engine.type is VectorEngineType.PGVector
                else None
            ),
        )
        labels = child_labels(name)
        try:
            children = [
                render_statefulset(vc, plan),
                render_service(vc),
                render_peer_service(vc),
                render_pdb(vc),
            ]
            before_children = [
                *([existing] if existing else []),
                *kube.list_objects("v1", "Service", namespace, labels),
                *kube.list_objects("policy/v1", "PodDisruptionBudget", namespace, labels),
            ]
            for child in children:
                kube.apply(child)
            apply_events_ = apply_events(before_children, children)
        except PermanentError as exc:
            status = _failed(APPLY_REJECTED, str(exc), generation, conditions, stamp)
            return status, vector_events(before, status) + engine_events
        pods = kube.list_pods(namespace, labels)
        ready_pods = [p for p in pods if _pod_ready(p)]

    # --- status -------------------------------------------------------------------------------
    hibernated_condition = decision.condition
    if managed and decision.hibernated:
        claims = kube.list_objects("v1", "PersistentVolumeClaim", namespace, child_labels(name))
        kept = sorted(str((c.get("metadata") or {}).get("name")) for c in claims)
        if kept:
            hibernated_condition = hibernated_condition.model_copy(
                update={"message": f"{hibernated_condition.message} ({', '.join(kept)})"}
            )
    node_regions = _node_regions(pods) if managed else {}
    live = [p for p in pods if node_name(p) and not is_deleting(p)]
    pod_regions = (
        {p["metadata"]["name"]: node_regions.get(node_name(p), "unknown") for p in live}
        if managed
        else None
    )
    residency_cond = residency_condition(allowed, pod_regions=pod_regions, generation=generation)
    placement = _placement(allowed, ready_pods, node_regions, managed=managed)
    catalog = _catalog()
    cost_state = VectorState.HIBERNATED if decision.hibernated else VectorState.SERVING
    footprint = (
        VectorFootprint(
            memory_bytes=resources.memory_bytes * spec.replicas,
            disk_bytes=quantity_int(volume) * spec.replicas,
            replicas=spec.replicas,
            cpu_cores_per_replica=resources.cpu_cores,
            tier=spec.storage.tier,
            state=cost_state,
            memory_reduction_factor=sized.memory_reduction_factor,
        )
        if managed
        else VectorFootprint(
            memory_bytes=sized.memory_bytes,
            disk_bytes=sized.disk_bytes,
            replicas=spec.replicas,
            cpu_cores_per_replica=resources.cpu_cores,
            tier=spec.storage.tier,
            state=cost_state,
            memory_reduction_factor=sized.memory_reduction_factor,
        )
    )
    provisioned = outcome.provisioned
    if decision.hibernated and state is None:
        provisioned = _carried(conditions, PROVISIONED) or provisioned
    parts = StatusParts(
        generation=generation,
        endpoint=_endpoint(vc),
        collection=state.location if state else previous.collection,
        vectors=state.vectors if state else previous.vectors,
        estimate=sized.to_status(),
        measured=(
            MeasuredUsage(memory_bytes=state.memory_bytes, disk_bytes=state.disk_bytes)
            if state and (state.memory_bytes is not None or state.disk_bytes is not None)
            else previous.measured
        ),
        cost=vector_collection_cost(footprint, catalog),
        placement=placement,
        activity=activity,
        cold_tier=cold,
        provisioned=provisioned,
        residency=residency_cond,
        hibernated=hibernated_condition,
        pods=(len(ready_pods), replicas) if managed else None,
    )
    status = summarize(parts, conditions, stamp)
    logger.debug(
        "Reconciled VectorCollection vectors=%s replicas=%s hibernated=%s",
        parts.vectors,
        replicas,
        decision.hibernated,
    )
    return status, apply_events_ + engine_events + vector_events(before, status)


# --- engine -------------------------------------------------------------------------------------


def _engine_sync(
    vc: VectorCollection, want: EngineCollection, generation: int | None
) -> _EngineOutcome:
    """Create/update the collection in the engine and read it back; failures become the
    Provisioned condition (the reconcile goes on: status is still worth writing)."""
    try:
        connection = _connection(vc)
        engine = connect(vc.spec.engine.type, connection)
        try:
            state = engine.sync(want)
        finally:
            engine.close()
    except EngineRejectedError as exc:
        return _EngineOutcome(
            None, _condition(PROVISIONED, "False", "EngineRejected", str(exc), generation), []
        )
    except (EngineUnavailableError, PermanentError) as exc:
        reason = "EngineUnreachable" if isinstance(exc, EngineUnavailableError) else "BadConnection"
        return _EngineOutcome(
            None, _condition(PROVISIONED, "False", reason, str(exc), generation), []
        )
    events: list[Event] = []
    engine_name = vc.spec.engine.type.value
    if state.created:
        events.append(
            Event(
                "Normal", "CreatedCollection", f"Created {engine_name} collection {state.location}"
            )
        )
    if state.applied:
        events.append(
            Event("Normal", "UpdatedCollection", f"Applied in place: {'; '.join(state.applied)}")
        )
    if state.unapplied:
        condition = _condition(
            PROVISIONED,
            "False",
            "ConfigDrift",
            f"{state.location} differs from the spec: {'; '.join(state.unapplied)}",
            generation,
        )
    else:
        condition = _condition(
            PROVISIONED,
            "True",
            "CollectionProvisioned",
            f"{engine_name} collection {state.location} matches the spec",
            generation,
        )
    return _EngineOutcome(state, condition, events)


def _connection(vc: VectorCollection) -> Connection:
    """The engine's URL and credentials: from the spec, the referenced Secret, or the Managed
    Service. The Secret is read only when referenced."""
    engine = vc.spec.engine
    namespace = vc.metadata["namespace"]
    secret: Mapping[str, str] = {}
    if engine.connection_secret_ref is not None:
        found = vectorkube.get_secret_data(namespace, engine.connection_secret_ref.name)
        if found is None:
            raise PermanentError(
                f"Secret {engine.connection_secret_ref.name} (engine.connectionSecretRef) not found"
            )
        secret = found
    if engine.mode is VectorEngineMode.Managed:
        url = managed_url(vc)
    else:
        url = engine.url or secret.get("url") or secret.get("uri") or ""
        if not url:
            secret_name = engine.connection_secret_ref.name if engine.connection_secret_ref else ""
            raise PermanentError(f"Secret {secret_name} has neither key url nor uri")
    return Connection(
        url=url, api_key=secret.get(SECRET_API_KEY), password=secret.get(SECRET_PASSWORD_KEY)
    )


def _offload(
    vc: VectorCollection,
    want: EngineCollection,
    cold_tier: Any,
    now: datetime,
    previous: ColdTierStatus | None,
) -> tuple[ColdTierStatus | None, list[Event]]:
    """Write one snapshot to the cold tier; a failure is a Warning, never a failed reconcile."""
    key = f"{vc.metadata['namespace']}/{vc.metadata['name']}/{format_time_compact(now)}"
    try:
        engine = connect(vc.spec.engine.type, _connection(vc))
        try:
            uri, size = write_snapshot(engine, want, cold_tier.object_store_uri, key)
        finally:
            engine.close()
    except TidalError as exc:
        return previous, [Event("Warning", "SnapshotFailed", str(exc))]
    status = ColdTierStatus(
        last_snapshot_uri=uri, last_snapshot_time=format_time(now), last_snapshot_bytes=size
    )
    return status, [Event("Normal", "SnapshotOffloaded", f"Wrote {size} bytes to {uri}")]


# --- observations ---------------------------------------------------------------------------


def _paired_endpoint_serving(namespace: str, name: str) -> bool:
    """Whether an InferenceEndpoint referencing this collection runs replicas."""
    for endpoint in kube.list_objects(API_VERSION, ENDPOINT_KIND, namespace, {}):
        ref = (endpoint.get("spec") or {}).get("vectorCollectionRef") or {}
        if ref.get("name") != name:
            continue
        desired = ((endpoint.get("status") or {}).get("replicas") or {}).get("desired")
        if isinstance(desired, int) and desired > 0:
            return True
    return False


def _node_regions(pods: Sequence[Raw]) -> dict[str, str]:
    return vectorkube.node_regions(node_name(p) for p in pods if node_name(p))


def _placement(
    allowed: Residency, ready_pods: Sequence[Raw], node_regions: Mapping[str, str], *, managed: bool
) -> PlacementStatus:
    if not managed:
        return PlacementStatus(
            regions=list(allowed.allowed),
            nodes=[],
            reason="External engine; regions as declared (Tidal cannot see where it runs)",
        )
    nodes = sorted({node_name(p) for p in ready_pods if node_name(p)})
    regions = sorted({node_regions[n] for n in nodes if n in node_regions})
    allowed_text = ", ".join(allowed.allowed) or "none"
    return PlacementStatus(
        regions=regions,
        nodes=nodes,
        reason=f"CPU nodes in the allowed regions ({allowed_text}), one pod per node preferred",
    )


def _catalog() -> PriceCatalog:
    """The prices in use, after reading the ConfigMap again if that is due: the defaults
    without one, the last good ones while it does not parse or cannot be read."""
    return services.pricing.refresh().catalog


# --- small helpers ------------------------------------------------------------------------------


def _parse(raw: Raw) -> VectorCollection:
    return parse_object(VectorCollection, raw)


def _previous_status(before: Mapping[str, Any]) -> VectorCollectionStatus:
    """The status Tidal wrote last; parts that no longer parse are dropped, not fatal."""
    try:
        return VectorCollectionStatus.model_validate(
            {k: v for k, v in before.items() if k != "conditions"}
        )
    except ValidationError:
        return VectorCollectionStatus()


def _conditions(status: Mapping[str, Any]) -> list[Condition]:
    conditions: list[Condition] = []
    for entry in status.get("conditions") or []:
        try:
            conditions.append(Condition.model_validate(entry))
        except ValidationError:
            continue
    return conditions


def _carried(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def _hibernated(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Hibernated" and c.get("status") == "True"
        for c in status.get("conditions") or []
        if isinstance(c, Mapping)
    )


def _condition(
    type_: str, status: str, reason: str, message: str, generation: int | None
) -> Condition:
    return Condition.model_validate(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
        }
    )


def _failed(
    reason: str, message: str, generation: int | None, conditions: list[Condition], now: str
) -> dict[str, Any]:
    ready = _condition(READY, "False", reason, message, generation)
    return {
        "observedGeneration": generation,
        "conditions": [c.to_wire() for c in set_condition(conditions, ready, now)],
    }


def _endpoint(vc: VectorCollection) -> str | None:
    if vc.spec.engine.mode is VectorEngineMode.Managed:
        return managed_url(vc)
    if vc.spec.engine.url:
        return redact_url(vc.spec.engine.url)
    return None  # in a Secret: the URL may carry credentials


def _existing_volume(statefulset: Raw | None) -> str | None:
    """The volume size an existing StatefulSet was created with (its claim template is
    immutable, so Tidal keeps it; growing volumes is done on the PVCs)."""
    for template in ((statefulset or {}).get("spec") or {}).get("volumeClaimTemplates") or []:
        size = (((template.get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
            "storage"
        )
        if size:
            return str(size)
    return None


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return is_ready(pod) and not is_deleting(pod)


def _owner(body: kopf.Body) -> str | None:
    return controlling_owner(body.metadata, KIND)


def _post(raw: Raw, logger: kopf.Logger, events: list[Event]) -> None:
    post_events(raw, logger, events, "collection")
