"""The VectorCollection reconcile as pure functions: what to ask the engine, then `decide`.

A collection's reconcile needs two engine round trips whose results its status reports (the
collection as the engine holds it after creating or updating it; the snapshot just offloaded),
so the decisions come in three pure steps, and the controller makes every call between them:

1. `target(raw)`: the collection the engine should hold and where the engine is (None: the
   spec is invalid, and `decide` says so). A Managed engine without
   `engine.connectionSecretRef` gets generated credentials (`target.generated`): the controller
   reads that Secret and, when it is absent, creates it once from `credentials_secret(raw,
   value)` with a value it generated (never here: decisions are not random), and records a
   `CredentialsReport`. `volume_events_due(world, now)`: the claim Pending too long whose
   Events to read (the controller records them in `World.claim_events`).
   `sync_due(target, world)`: whether to sync the engine now (External:
   always; Managed: while an engine pod is ready). The controller syncs and records what the
   engine reported (`EngineReport`) in the `World`.
2. The cold tier. `restore_due(raw, world, now)`: the verified snapshot to restore now (an
   offloaded collection used again: a wake, a request, a serving paired endpoint; or a new
   `tidal.dev/restore-requested-at` while the engine's collection is absent or empty). The
   controller restores it (then syncs again) and records a `RestoreReport`.
   `snapshot_due(raw, world, now)`: the snapshot to write now (before hibernating, after
   `afterIdleDays` idle, or on a new `tidal.dev/offload-requested-at`) and whether the engine's
   copy is then deleted (`evict`: idle days or a request, never the hibernation snapshot). The
   controller uploads it, verifies it, deletes the engine's copy only then, and records a
   `SnapshotReport`. While offloaded (`is_offloaded`) the engine is not synced: a sync would
   create an empty collection in its place.
   `probe_due(raw, world, now, ...)`: whether to measure the SLO now (targets set, the engine
   synced and holding vectors, and the last measurement older than the interval or of an older
   generation). The controller has the driver query a sample through the index and exactly
   and records a `ProbeReport`.
3. `decide(raw, world, memory, now) -> Outcome`: activity and hibernation
   (`tidal.scaling.collection`), sizing (`tidal.sizing`), residency (`tidal.residency.collection`),
   cost (`tidal.cost`), the measured SLO (`tidal.slo`), why a Managed engine's volumes do not
   bind (`volume_condition`: no StorageClass, or Pending past a grace period), the Managed
   children (`tidal.render.collection`), the whole status and the Events. The controller applies the
   children (a refusal: `rejected(...)` instead), patches status and posts the Events.

Every step reads no clock, no environment, no module state and does no IO: the same object,
world and `now` give the same answers, so a recorded sequence of observations replays exactly.

What a collection remembers between reconciles, and where (all of it in the object; the
process keeps nothing, so `Memory` is empty and passes through):

| memory                                  | stored in                                          |
|-----------------------------------------|----------------------------------------------------|
| last activity, its source               | `status.activity.lastActivityTime`, `.source`      |
| the engine's query counter last seen    | `status.activity.engineQueries`                    |
| the wake request already acted on       | `status.activity.wakeRequest`                      |
| when it hibernated                      | `status.activity.hibernatedTime`                   |
| hibernated or not                       | condition `Hibernated`                             |
| the last SLO measurement, when, of      | `status.slo` (evaluatedTime, observedGeneration)   |
| which generation                        |                                                    |
| the last cold-tier snapshot             | `status.coldTier` (uri, time, bytes, sha256,       |
|                                         | vectors)                                           |
| offloaded (the engine's copy deleted)   | `status.coldTier.offloadedTime` (set: offloaded)   |
| the offload/restore requests acted on   | `status.coldTier.offloadRequest`, `.restoreRequest`|
| what the engine last reported (kept     | `status.collection`, `status.vectors`,             |
| while it cannot be asked)               | `status.measured`, condition `Provisioned`         |
| the generated credentials (never        | the Secret `<name>-credentials` (created once,     |
| rotated)                                | owned by the collection); status names it only     |
| the volume size the engine was created  | the StatefulSet's volume claim template            |
| with (immutable)                        |                                                    |
| when each condition last changed        | `status.conditions[].lastTransitionTime`           |

The annotations `tidal.dev/wake-requested-at` (the wake convention both kinds share; the older
`tidal.dev/wake` is still honoured), `tidal.dev/last-request-time`,
`tidal.dev/offload-requested-at` and `tidal.dev/restore-requested-at` are signals from outside,
read like the rest of the world, never written here.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from tidal.api.collection import (
    ColdTierStatus,
    CollectionActivityStatus,
    CollectionSLOStatus,
    MeasuredUsage,
    VectorCollection,
    VectorCollectionStatus,
    VectorEngineMode,
    VectorEngineType,
)
from tidal.api.common import (
    HIBERNATED,
    OFFLOADED,
    PROVISIONED,
    SLO_MET,
    Condition,
    ConditionStatus,
    Event,
    PlacementStatus,
    get_condition,
)
from tidal.api.labels import (
    LAST_REQUEST_TIME,
    NODE_REGION,
    OFFLOAD_REQUESTED_AT,
    RESTORE_REQUESTED_AT,
    WAKE,
    WAKE_REQUESTED_AT,
)
from tidal.api.parsing import parse_object, read_status
from tidal.api.wire import (
    format_time,
    format_time_compact,
    is_deleting,
    is_ready,
    node_name,
    parse_time,
    quantity_int,
)
from tidal.cost import PriceCatalog, VectorFootprint, VectorState, vector_collection_cost
from tidal.errors import PermanentError
from tidal.render.collection import (
    SECRET_API_KEY,
    SECRET_PASSWORD_KEY,
    CollectionState,
    EngineCollection,
    ManagedPlan,
    StatusParts,
    credentials_key,
    credentials_secret_name,
    engine_collection,
    generates_credentials,
    managed_url,
    redact_url,
    render_credentials,
    render_pdb,
    render_peer_service,
    render_service,
    render_statefulset,
    summarize,
    vector_events,
)
from tidal.render.events import apply_events
from tidal.render.status import (
    APPLY_REJECTED,
    INVALID_SPEC,
    failed_status,
    status_changed,
)
from tidal.residency.collection import Residency, residency, residency_condition
from tidal.residency.policy import NamespacePolicy
from tidal.residency.policy import parse as parse_policy
from tidal.scaling import collection as scaling
from tidal.sizing import estimate, pod_resources
from tidal.slo import (
    RecallProbe,
    collection_condition,
    collection_transition_event,
    measured_status,
    requested,
)

__all__ = [
    "APPLY_REJECTED",
    "VOLUME_PENDING_GRACE_SECONDS",
    "Address",
    "CredentialsReport",
    "EngineFailure",
    "EngineReport",
    "Memory",
    "Outcome",
    "Probe",
    "ProbeReport",
    "Restore",
    "RestoreReport",
    "Snapshot",
    "SnapshotReport",
    "StorageClassInfo",
    "Target",
    "World",
    "address",
    "credentials_secret",
    "decide",
    "due",
    "eviction_refused",
    "is_offloaded",
    "probe_due",
    "rejected",
    "restore_due",
    "snapshot_due",
    "sync_due",
    "target",
    "volume_condition",
    "volume_events_due",
]

Raw = dict[str, Any]

# PostgreSQL's shared_buffers: a quarter of the pod's memory, the usual starting point.
_SHARED_BUFFERS_FRACTION: Final = 4
_DAY: Final = 86400
# The SLO is recall@10.
PROBE_K: Final = 10
# A claim of an existing StorageClass may take a while to provision (a cloud disk, a slow CSI
# driver); Pending longer than this is reported.
VOLUME_PENDING_GRACE_SECONDS: Final = 300
NO_STORAGE_CLASS: Final = "NoStorageClass"
VOLUME_PENDING: Final = "VolumePending"
CREDENTIALS_MISSING: Final = "CredentialsMissing"


# --- what the controller asks and observes ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """The collection the engine should hold, and where to reach the engine: `url` (None: the
    Secret's `url` or `uri` key) and the Secret `secret` holding credentials (None: none)."""

    want: EngineCollection
    engine: VectorEngineType
    managed: bool
    url: str | None
    secret: str | None
    # `secret` is the Secret Tidal generates (Managed without engine.connectionSecretRef), and
    # `key` the key its credential is under.
    generated: bool = False
    key: str = SECRET_API_KEY


@dataclasses.dataclass(frozen=True)
class Address:
    """Where the engine is and the credentials to use (never logged: repr hides secrets)."""

    url: str
    api_key: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)


class EngineFailure(enum.StrEnum):
    """Why the engine could not be synced; the value is the `Provisioned` condition's reason."""

    REJECTED = "EngineRejected"  # the engine refused the declared collection
    UNREACHABLE = "EngineUnreachable"  # cannot connect, timed out, 5xx: temporary
    BAD_CONNECTION = "BadConnection"  # the Secret or URL cannot be used


@dataclasses.dataclass(frozen=True)
class EngineReport:
    """The result of one sync: the state, or why there is none."""

    state: CollectionState | None = None
    failure: EngineFailure | None = None
    message: str = ""


@dataclasses.dataclass(frozen=True)
class CredentialsReport:
    """The generated credentials Secret as the controller found it: `created` on this reconcile
    (it was absent); `create_failed`: the API server refused to create it (its answer);
    `missing_key`: it exists without the key the engine needs (Tidal never overwrites a
    Secret). Never the value. `error` is what the collection's condition says of it."""

    name: str
    created: bool = False
    create_failed: str | None = None
    missing_key: str | None = None

    @property
    def error(self) -> str | None:
        """Why the Secret cannot be used, for `Provisioned=False CredentialsMissing`."""
        if self.create_failed is not None:
            return (
                f"Secret {self.name} could not be created ({self.create_failed}); grant the "
                "operator create on Secrets (manifests/rbac/secrets-creator.yaml) or name one "
                "in engine.connectionSecretRef"
            )
        if self.missing_key is not None:
            return (
                f"Secret {self.name} (generated by Tidal) has no key {self.missing_key}; delete "
                "it and Tidal generates a new one (an initialised PostgreSQL keeps its old "
                "password)"
            )
        return None


@dataclasses.dataclass(frozen=True)
class StorageClassInfo:
    """What a reconcile needs of one StorageClass: whether it is the cluster's default, and
    whether it binds only once a pod is scheduled (`WaitForFirstConsumer`)."""

    default: bool = False
    wait_for_consumer: bool = False


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A cold-tier snapshot to write: `want` under `<base_uri>/<key>`; with `evict`, the
    engine's copy is deleted once the upload verified; `request`: the offload annotation value
    it answers (None: not requested)."""

    want: EngineCollection
    base_uri: str
    key: str
    secret: str | None = None
    evict: bool = False
    request: str | None = None


@dataclasses.dataclass(frozen=True)
class SnapshotReport:
    """The snapshot written and verified (`uri`, `size` bytes, `sha256`, `vectors`; `evicted`:
    the engine's copy was then deleted), or why not (`error`: the engine keeps its data)."""

    uri: str | None = None
    size: int | None = None
    error: str | None = None
    sha256: str | None = None
    vectors: int | None = None
    evicted: bool = False
    request: str | None = None


@dataclasses.dataclass(frozen=True)
class Restore:
    """A verified snapshot to load into the engine: `uri` with its `sha256` and `vectors`;
    `request`: the restore annotation value it answers (None: a wake)."""

    want: EngineCollection
    uri: str
    sha256: str | None
    vectors: int | None
    secret: str | None = None
    request: str | None = None


@dataclasses.dataclass(frozen=True)
class RestoreReport:
    """The restore done (`vectors` now in the engine, in `seconds`), or why not (`error`)."""

    vectors: int | None = None
    seconds: float | None = None
    error: str | None = None
    request: str | None = None


@dataclasses.dataclass(frozen=True)
class Probe:
    """An SLO measurement to take: `sample` stored vectors of `want`, top `k`."""

    want: EngineCollection
    sample: int
    k: int = PROBE_K


@dataclasses.dataclass(frozen=True)
class ProbeReport:
    """The probe's answers (`probe`), or why there are none (`error`)."""

    probe: RecallProbe | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class World:
    """Everything observed for one reconcile of one collection (the controller reads it from
    the operator's indexes, `tidal.runtime.indexes.capture_collection`).

    `namespace_policy`: the Namespace's raw `tidal.dev/allowed-regions` (None: no policy).
    `statefulset`, `services`, `pdbs`, `pods`, `claims` (PersistentVolumeClaim names),
    `volumes` (the claims: name, creationTimestamp, spec.storageClassName, status.phase) and
    `node_regions` (node -> region of the pods' nodes): a Managed engine's children; empty for
    External. `storage_classes`: the cluster's StorageClasses by name (None: not observed).
    `claim_events`: the Events about a claim, by claim name (read when `volume_events_due`
    asks).
    `credentials`: the generated credentials Secret as found (None: none generated).
    `paired_desired`: the desired replicas of each InferenceEndpoint paired with this
    collection (a serving one keeps it awake). `engine`: the sync's result (None: not synced,
    the engine does not run). `snapshot`: the cold-tier snapshot written on this reconcile, if
    one was due; `restore`: the restore done on this reconcile, if one was due; `probe`: the SLO
    probe taken on this reconcile, if one was due. `region_label`: the node label naming a
    region (the cluster's conventions).
    """

    catalog: PriceCatalog
    namespace_policy: str | None = None
    statefulset: Raw | None = None
    services: tuple[Raw, ...] = ()
    pdbs: tuple[Raw, ...] = ()
    pods: tuple[Raw, ...] = ()
    claims: tuple[str, ...] = ()
    volumes: tuple[Raw, ...] = ()
    storage_classes: Mapping[str, StorageClassInfo] | None = None
    claim_events: Mapping[str, tuple[Raw, ...]] = dataclasses.field(default_factory=dict)
    credentials: CredentialsReport | None = None
    node_regions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    paired_desired: tuple[int, ...] = ()
    engine: EngineReport | None = None
    snapshot: SnapshotReport | None = None
    restore: RestoreReport | None = None
    probe: ProbeReport | None = None
    region_label: str = NODE_REGION


@dataclasses.dataclass(frozen=True)
class Memory:
    """What the process keeps between reconciles of a collection: nothing (the module docstring
    tables what the object itself remembers)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the controller must do for one reconcile, in order: apply `children` (on a
    rejection, `rejected(raw, APPLY_REJECTED, ..., outcome)` instead), merge-patch `status` (the
    typed `VectorCollectionStatus` as `to_patch()` writes it; None: nothing would change), post
    `events`, keep `memory`. `woke`, `replicas`, `vectors` and
    `hibernated` are for the log."""

    children: tuple[Raw, ...] = ()
    status: Mapping[str, Any] | None = None
    events: tuple[Event, ...] = ()
    memory: Memory = Memory()
    # The engine's and cold tier's Events, kept when the children are refused.
    engine_events: tuple[Event, ...] = ()
    woke: bool = False
    replicas: int | None = None
    vectors: int | None = None
    hibernated: bool = False


# --- the steps ----------------------------------------------------------------------------------


def due(raw: Raw, *, require_observed: bool = False) -> bool:
    """Whether to reconcile `raw` at all: not while it is being deleted, and (for a change of a
    child) not before the create/update handler has acted on its generation."""
    if is_deleting(raw):
        return False
    generation = (raw.get("metadata") or {}).get("generation")
    observed = (raw.get("status") or {}).get("observedGeneration")
    return not require_observed or observed == generation


def target(raw: Raw) -> Target | None:
    """The engine collection `raw` declares and where its engine is; None for an invalid spec."""
    try:
        vc = _parse(raw)
        want = engine_collection(vc)
    except PermanentError:
        return None
    engine = vc.spec.engine
    managed = engine.mode is VectorEngineMode.Managed
    generated = generates_credentials(vc)
    ref = engine.connection_secret_ref
    return Target(
        want=want,
        engine=engine.type,
        managed=managed,
        url=managed_url(vc) if managed else engine.url,
        secret=credentials_secret_name(vc) if generated else (ref.name if ref else None),
        generated=generated,
        key=credentials_key(engine.type),
    )


def credentials_secret(raw: Raw, value: str) -> Raw:
    """The generated credentials Secret of `raw` holding `value`, for the controller to create
    (once: an existing one is kept). `value` comes from the caller's random source."""
    return render_credentials(_parse(raw), value)


def address(target: Target, secret: Mapping[str, str] | None) -> Address:
    """The engine's URL and credentials from the target and its Secret's data (None: the
    referenced Secret does not exist). PermanentError when they cannot be used."""
    data: Mapping[str, str] = {}
    if target.secret is not None:
        if secret is None:
            source = "generated by Tidal" if target.generated else "engine.connectionSecretRef"
            raise PermanentError(f"Secret {target.secret} ({source}) not found")
        data = secret
    url = target.url or data.get("url") or data.get("uri") or ""
    if not url:
        raise PermanentError(f"Secret {target.secret or ''} has neither key url nor uri")
    return Address(
        url=url, api_key=data.get(SECRET_API_KEY), password=data.get(SECRET_PASSWORD_KEY)
    )


def sync_due(target: Target, world: World) -> bool:
    """Whether to sync the engine now: External always, Managed while one of its pods is ready."""
    return not target.managed or any(_pod_ready(pod) for pod in world.pods)


def eviction_refused(
    name: str, snapshot_uri: str, snapshot_vectors: int | None, now_holds: int | None
) -> str | None:
    """Why the engine's copy must not be deleted after a verified snapshot (None: it may be):
    writes that reached the engine after the snapshot would be lost with it, so the count the
    engine holds now must equal the snapshot's."""
    if snapshot_vectors is None or now_holds != snapshot_vectors:
        return (
            f"{name} holds {now_holds} vectors, the snapshot {snapshot_uri} {snapshot_vectors}: "
            "written to meanwhile, not deleted"
        )
    return None


def is_offloaded(raw: Raw) -> bool:
    """Whether the engine's copy was deleted after a verified offload (not restored since)."""
    cold = read_status(VectorCollectionStatus, raw.get("status")).cold_tier
    return cold is not None and cold.offloaded_time is not None


def snapshot_due(raw: Raw, world: World, now: datetime) -> Snapshot | None:
    """The cold-tier snapshot to write before deciding, if one is due: on a new
    `tidal.dev/offload-requested-at`, right before the engine hibernates, or once the
    collection has been idle for `afterIdleDays`. Only after a sync that reached the engine
    (so it is up and holds the data), never while offloaded."""
    found = target(raw)
    if found is None or world.engine is None or world.engine.state is None:
        return None
    vc = _parse(raw)
    cold_tier = vc.spec.storage.cold_tier
    if cold_tier is None or is_offloaded(raw):
        return None
    previous = read_status(VectorCollectionStatus, raw.get("status"))
    key = f"{vc.metadata['namespace']}/{vc.metadata['name']}/{format_time_compact(now)}"
    secret = cold_tier.credentials_secret_ref.name if cold_tier.credentials_secret_ref else None
    base = Snapshot(want=found.want, base_uri=cold_tier.object_store_uri, key=key, secret=secret)
    request = _new_request(raw, OFFLOAD_REQUESTED_AT, previous.cold_tier, "offload_request")
    if request is not None:
        return dataclasses.replace(base, evict=True, request=request)
    life = _life(vc, raw, previous, world, now)
    going_down = life.decision.hibernated and not life.was_hibernated
    if not scaling.snapshot_due(
        vc.spec, life.activity, previous.cold_tier, now, hibernating=going_down
    ):
        return None
    idle_days = scaling.idle_seconds(life.activity, now) >= cold_tier.after_idle_days * _DAY
    return dataclasses.replace(base, evict=idle_days)


def restore_due(raw: Raw, world: World, now: datetime) -> Restore | None:
    """The verified snapshot to restore before deciding, if one is due: an offloaded collection
    woken (a new wake request, whenever it came), used again since it was offloaded (a newer
    request time, a serving paired endpoint) or asked to (`tidal.dev/restore-requested-at`);
    or, on that request only, a
    collection the engine holds empty or not at all (its last sync reported 0 vectors). A
    Managed engine needs a ready pod first."""
    found = target(raw)
    if found is None:
        return None
    vc = _parse(raw)
    cold_tier = vc.spec.storage.cold_tier
    previous = read_status(VectorCollectionStatus, raw.get("status"))
    cold = previous.cold_tier
    if cold_tier is None or cold is None or cold.last_snapshot_uri is None:
        return None
    if found.managed and not any(_pod_ready(pod) for pod in world.pods):
        return None
    request = _new_request(raw, RESTORE_REQUESTED_AT, cold, "restore_request")
    secret = cold_tier.credentials_secret_ref.name if cold_tier.credentials_secret_ref else None
    restore = Restore(
        want=found.want,
        uri=cold.last_snapshot_uri,
        sha256=cold.last_snapshot_sha256,
        vectors=cold.last_snapshot_vectors,
        secret=secret,
        request=request,
    )
    if cold.offloaded_time is not None:
        life = _life(vc, raw, previous, world, now)
        if request is not None or life.woke:
            # A new wake request is a use whatever its time: status times are to the second,
            # and a wake in the second of the offload is not later than it by them.
            return restore
        used = parse_time(life.activity.last_activity_time)
        offloaded = parse_time(cold.offloaded_time)
        return restore if used and offloaded and used > offloaded else None
    state = world.engine.state if world.engine is not None else None
    if request is not None and state is not None and not state.vectors:
        return restore
    return None


def probe_due(
    raw: Raw, world: World, now: datetime, *, interval_seconds: float, sample: int
) -> Probe | None:
    """The SLO probe to take now, if one is due: `spec.slo` sets a target, this reconcile's
    sync reached the engine and it holds vectors, and the last measurement is at least
    `interval_seconds` old or was taken under another generation (a changed spec is measured at
    once). Never while offloaded (the engine holds nothing) or hibernated (not synced)."""
    found = target(raw)
    if found is None or is_offloaded(raw):
        return None
    state = world.engine.state if world.engine is not None else None
    if state is None or not state.vectors:
        return None
    vc = _parse(raw)
    if not requested(vc.spec.slo):
        return None
    last = read_status(VectorCollectionStatus, raw.get("status")).slo
    generation = (raw.get("metadata") or {}).get("generation")
    if last is not None and last.observed_generation == generation:
        evaluated = parse_time(last.evaluated_time)
        if evaluated is not None and (now - evaluated).total_seconds() < interval_seconds:
            return None
    return Probe(want=found.want, sample=sample)


def _new_request(raw: Raw, key: str, cold: ColdTierStatus | None, field: str) -> str | None:
    """The annotation `key`'s value when set and not yet acted upon (recorded in `field`)."""
    value = ((raw.get("metadata") or {}).get("annotations") or {}).get(key)
    if not value:
        return None
    return None if cold is not None and getattr(cold, field) == value else str(value)


def decide(raw: Raw, world: World, memory: Memory, now: datetime) -> Outcome:
    """The reconcile of collection `raw` (as the API server holds it now) in `world`."""
    metadata = raw.get("metadata") or {}
    generation = metadata.get("generation")
    before: Mapping[str, Any] = raw.get("status") or {}
    # Status read once: what the engine last reported and the activity it remembers.
    previous = read_status(VectorCollectionStatus, before)
    stamp = format_time(now)
    try:
        vc = _parse(raw)
        engine_collection(vc)
    except PermanentError as exc:
        return rejected(raw, INVALID_SPEC, str(exc), now, memory=memory)
    spec = vc.spec
    managed = spec.engine.mode is VectorEngineMode.Managed
    allowed = residency(spec.residency.regions, _policy(world.namespace_policy))

    state = world.engine.state if world.engine is not None else None
    engine_events, provisioned = _engine(vc, world.engine, generation)
    life = _life(vc, raw, previous, world, now)
    decision, activity = life.decision, life.activity

    cold, offloaded, offload_condition = _cold_tier(vc, raw, previous, world, stamp)
    in_cold_tier = cold is not None and cold.offloaded_time is not None
    if in_cold_tier and state is None:
        provisioned = _condition(
            "False",
            "Offloaded",
            f"in the cold tier ({cold.last_snapshot_uri if cold else ''}); a wake or "
            f"{RESTORE_REQUESTED_AT} restores it",
            generation,
        )

    slo, slo_condition = _slo(
        vc, previous, world, generation, now, hibernated=decision.hibernated, offloaded=in_cold_tier
    )
    engine_events += [*offloaded, *_slo_event(previous, slo_condition)]

    points = spec.expected_vectors if spec.expected_vectors is not None else previous.vectors
    sized = estimate(spec, points)
    resources = pod_resources(spec, estimate(spec, spec.expected_vectors or 0))
    replicas = decision.replicas if allowed.allowed else 0
    volume = _existing_volume(world.statefulset) or spec.storage.size or resources.volume

    children: tuple[Raw, ...] = ()
    change_events: list[Event] = []
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
            region_label=world.region_label,
        )
        try:
            children = (
                render_statefulset(vc, plan),
                render_service(vc),
                render_peer_service(vc),
                render_pdb(vc),
            )
        except PermanentError as exc:
            kept = Outcome(memory=memory, engine_events=tuple(engine_events))
            return rejected(raw, APPLY_REJECTED, str(exc), now, kept)
        existing = [*([world.statefulset] if world.statefulset else []), *world.services]
        change_events = apply_events([*existing, *world.pdbs], children)

    hibernated = decision.condition
    if managed and decision.hibernated and world.claims:
        hibernated = hibernated.model_copy(
            update={"message": f"{hibernated.message} ({', '.join(sorted(world.claims))})"}
        )
    if state is None:
        provisioned = _unreached(
            vc, previous, world, now, provisioned, hibernated=decision.hibernated
        )
    pods = [pod for pod in world.pods if managed]
    ready_pods = [pod for pod in pods if _pod_ready(pod)]
    live = [pod for pod in pods if node_name(pod) and not is_deleting(pod)]
    pod_regions = (
        {pod["metadata"]["name"]: world.node_regions.get(node_name(pod), "unknown") for pod in live}
        if managed
        else None
    )
    footprint = VectorFootprint(
        memory_bytes=resources.memory_bytes * spec.replicas if managed else sized.memory_bytes,
        disk_bytes=quantity_int(volume) * spec.replicas if managed else sized.disk_bytes,
        replicas=spec.replicas,
        cpu_cores_per_replica=resources.cpu_cores,
        tier=spec.storage.tier,
        state=(
            VectorState.COLD
            if in_cold_tier
            else VectorState.HIBERNATED
            if decision.hibernated
            else VectorState.SERVING
        ),
        memory_reduction_factor=sized.memory_reduction_factor,
    )
    parts = StatusParts(
        generation=generation,
        endpoint=_endpoint(vc),
        collection=state.location if state else previous.collection,
        vectors=state.vectors if state else previous.vectors,
        estimate=sized.to_status(),
        measured=(_measured(state) if state else None) or previous.measured,
        cost=vector_collection_cost(footprint, world.catalog),
        placement=_placement(allowed, ready_pods, world.node_regions, managed=managed),
        activity=activity,
        cold_tier=cold,
        provisioned=provisioned,
        residency=residency_condition(allowed, pod_regions=pod_regions, generation=generation),
        hibernated=hibernated,
        pods=(len(ready_pods), replicas) if managed else None,
        engine_version=state.engine_version if state else previous.engine_version,
        offloaded=offload_condition,
        slo=slo,
        slo_condition=slo_condition,
        credentials_secret=credentials_secret_name(vc) if generates_credentials(vc) else None,
    )
    status = summarize(parts, previous.conditions, stamp).to_patch()
    return Outcome(
        children=children,
        status=status if status_changed(before, status) else None,
        events=(
            *_credentials_events(world.credentials),
            *change_events,
            *engine_events,
            *vector_events(before, status),
        ),
        memory=memory,
        engine_events=tuple(engine_events),
        woke=life.woke,
        replicas=replicas,
        vectors=parts.vectors,
        hibernated=decision.hibernated,
    )


def rejected(
    raw: Raw,
    reason: str,
    message: str,
    now: datetime,
    outcome: Outcome | None = None,
    *,
    memory: Memory = Memory(),
) -> Outcome:
    """The outcome when the collection cannot be reconciled: an invalid spec (`InvalidSpec`) or
    a child the API server refused (`ApplyRejected`, replacing `outcome`, whose engine Events
    still happened). Only Ready and observedGeneration change."""
    before = raw.get("status") or {}
    status = failed_status(
        VectorCollectionStatus,
        reason=reason,
        message=message,
        generation=(raw.get("metadata") or {}).get("generation"),
        conditions=read_status(VectorCollectionStatus, before).conditions,
        now=format_time(now),
    ).to_patch()
    kept = outcome.engine_events if outcome is not None else ()
    return Outcome(
        status=status if status_changed(before, status) else None,
        events=(*vector_events(before, status), *kept),
        memory=outcome.memory if outcome is not None else memory,
    )


# --- parts --------------------------------------------------------------------------------------


def _cold_tier(
    vc: VectorCollection,
    raw: Raw,
    previous: VectorCollectionStatus,
    world: World,
    stamp: str,
) -> tuple[ColdTierStatus | None, list[Event], Condition | None]:
    """`status.coldTier` after this reconcile's snapshot and restore, their Events, and the
    `Offloaded` condition (None: no cold tier). A failed upload is a Warning and an
    `Offloaded=False UploadFailed` condition; the engine keeps its data."""
    cold = previous.cold_tier
    events: list[Event] = []
    failure: tuple[str, str] | None = None
    report = world.snapshot
    if report is not None:
        cold, event, failure = _snapshot_outcome(cold, report, stamp)
        events += event
    restore = world.restore
    if restore is not None:
        base = cold or ColdTierStatus()
        if restore.error is not None:
            events.append(Event("Warning", "RestoreFailed", restore.error))
            failure = ("RestoreFailed", restore.error)
            cold = base.model_copy(
                update={"restore_request": restore.request or base.restore_request}
            )
        else:
            seconds = round(restore.seconds or 0.0, 3)
            cold = base.model_copy(
                update={
                    "offloaded_time": None,
                    "restored_time": stamp,
                    "last_restore_seconds": seconds,
                    "restore_request": restore.request or base.restore_request,
                }
            )
            events.append(
                Event(
                    "Normal",
                    "Restored",
                    f"Restored {restore.vectors} vectors from {base.last_snapshot_uri} in "
                    f"{seconds:.1f}s",
                )
            )
    else:
        cold, refused = _refused_restore(raw, cold, world)
        events += refused
    generation = (raw.get("metadata") or {}).get("generation")
    return cold, events, _offloaded_condition(vc, previous, cold, report, failure, generation)


def _snapshot_outcome(
    cold: ColdTierStatus | None, report: SnapshotReport, stamp: str
) -> tuple[ColdTierStatus | None, list[Event], tuple[str, str] | None]:
    base = cold or ColdTierStatus()
    if report.error is not None or report.uri is None or report.size is None:
        failed = (base.failed_snapshots or 0) + 1
        retry = scaling.snapshot_retry_seconds(failed)
        message = (
            f"{report.error or 'no snapshot written'}; the engine keeps the data "
            f"({failed} failed in a row; the next automatic snapshot in {retry:.0f}s)"
        )
        update: dict[str, object] = {"failed_snapshots": failed, "last_failure_time": stamp}
        if report.request is not None:
            update["offload_request"] = report.request
        cold = base.model_copy(update=update)
        return cold, [Event("Warning", "SnapshotFailed", message)], ("UploadFailed", message)
    cold = base.model_copy(
        update={
            "last_snapshot_uri": report.uri,
            "last_snapshot_time": stamp,
            "last_snapshot_bytes": report.size,
            "last_snapshot_sha256": report.sha256,
            "last_snapshot_vectors": report.vectors,
            "offloaded_time": stamp if report.evicted else None,
            "offload_request": report.request or base.offload_request,
            "failed_snapshots": None,
            "last_failure_time": None,
        }
    )
    events = [
        Event(
            "Normal",
            "SnapshotOffloaded",
            f"Wrote {report.size} bytes to {report.uri} (size and SHA-256 verified)",
        )
    ]
    if report.evicted:
        events.append(
            Event(
                "Normal",
                "Offloaded",
                f"Deleted the engine's copy ({report.vectors} vectors) after verifying "
                f"{report.uri}",
            )
        )
    return cold, events, None


def _refused_restore(
    raw: Raw, cold: ColdTierStatus | None, world: World
) -> tuple[ColdTierStatus | None, list[Event]]:
    """A new restore request that `restore_due` did not act on: refused once, with why."""
    request = _new_request(raw, RESTORE_REQUESTED_AT, cold, "restore_request")
    state = world.engine.state if world.engine is not None else None
    if request is None or (cold is not None and cold.offloaded_time is not None):
        return cold, []
    if cold is None or cold.last_snapshot_uri is None:
        why = "there is no verified snapshot in the cold tier"
    elif state is None:
        return cold, []  # the engine was not reached: decide again when it is
    elif state.vectors:
        why = (
            f"{state.location} holds {state.vectors} vectors; a restore only fills an absent "
            "or empty collection"
        )
    else:
        return cold, []
    base = cold or ColdTierStatus()
    return base.model_copy(update={"restore_request": request}), [
        Event("Warning", "RestoreRefused", f"{RESTORE_REQUESTED_AT}={request}: {why}")
    ]


def _offloaded_condition(
    vc: VectorCollection,
    previous: VectorCollectionStatus,
    cold: ColdTierStatus | None,
    report: SnapshotReport | None,
    failure: tuple[str, str] | None,
    generation: int | None,
) -> Condition | None:
    in_cold_tier = cold is not None and cold.offloaded_time is not None
    if vc.spec.storage.cold_tier is None and not in_cold_tier:
        return None

    def offloaded(status: ConditionStatus, reason: str, message: str) -> Condition:
        return Condition(
            type=OFFLOADED,
            status=status,
            reason=reason,
            message=message,
            observed_generation=generation,
        )

    if in_cold_tier and cold is not None:
        if failure is not None:
            return offloaded("True", failure[0], failure[1])
        return offloaded(
            "True",
            "InColdTier",
            f"{cold.last_snapshot_vectors} vectors in {cold.last_snapshot_uri} (SHA-256 "
            "verified); the engine's copy was deleted",
        )
    if failure is not None:
        return offloaded("False", failure[0], failure[1])
    kept = get_condition(previous.conditions, OFFLOADED)
    if report is None and kept is not None and kept.reason == "UploadFailed":
        return kept  # until a snapshot succeeds
    last = (
        f"; last verified snapshot {cold.last_snapshot_uri}"
        if cold and cold.last_snapshot_uri
        else ""
    )
    return offloaded("False", "InEngine", f"the engine holds the data{last}")


@dataclasses.dataclass(frozen=True)
class _Life:
    """Activity (with the hibernation stamped in), whether this observation woke the
    collection, whether it was hibernated, and whether it hibernates now."""

    activity: CollectionActivityStatus
    woke: bool
    was_hibernated: bool
    decision: scaling.Hibernation


def _life(
    vc: VectorCollection, raw: Raw, previous: VectorCollectionStatus, world: World, now: datetime
) -> _Life:
    metadata = raw.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    report = world.engine
    state = report.state if report is not None else None
    signals = scaling.Signals(
        created=parse_time(metadata.get("creationTimestamp")) or now,
        last_request_annotation=annotations.get(LAST_REQUEST_TIME),
        # One wake convention for both kinds; the older `tidal.dev/wake` is still honoured.
        wake_annotation=annotations.get(WAKE_REQUESTED_AT) or annotations.get(WAKE),
        engine_queries=state.query_count if state else None,
        engine_last_query_time=state.last_query_time if state else None,
        paired_endpoint_serving=any(desired > 0 for desired in world.paired_desired),
    )
    activity, woke = scaling.observe_activity(previous.activity, signals, now)
    managed = vc.spec.engine.mode is VectorEngineMode.Managed
    decision = scaling.hibernation(
        vc.spec, activity, now, managed=managed, generation=metadata.get("generation")
    )
    hibernated = get_condition(previous.conditions, HIBERNATED)
    was_hibernated = hibernated is not None and hibernated.status == "True"
    if decision.hibernated and not was_hibernated:
        activity = activity.model_copy(update={"hibernated_time": format_time(now)})
    return _Life(activity=activity, woke=woke, was_hibernated=was_hibernated, decision=decision)


def _slo_event(previous: VectorCollectionStatus, condition: Condition) -> list[Event]:
    event = collection_transition_event(get_condition(previous.conditions, SLO_MET), condition)
    return [event] if event is not None else []


def _slo(
    vc: VectorCollection,
    previous: VectorCollectionStatus,
    world: World,
    generation: int | None,
    now: datetime,
    *,
    hibernated: bool,
    offloaded: bool,
) -> tuple[CollectionSLOStatus | None, Condition]:
    """`status.slo` and the `SLOMet` condition: from this reconcile's probe, else the last
    measurement judged against the current targets, else why there is none."""
    slo = vc.spec.slo
    if not requested(slo):
        return None, collection_condition(slo, None, basis="", generation=generation)
    report = world.probe
    if report is not None:
        if report.error is not None or report.probe is None:
            failed = CollectionSLOStatus(
                evaluated_time=format_time(now), observed_generation=generation
            )
            why = f"the probe failed: {report.error or 'no answer'}"
            return failed, collection_condition(slo, failed, basis=why, generation=generation)
        measured = measured_status(report.probe, now).model_copy(
            update={"observed_generation": generation}
        )
        if not report.probe.queries:
            why = "no stored vector could be sampled"
            return measured, collection_condition(slo, measured, basis=why, generation=generation)
        basis = (
            f"{len(report.probe.queries)} stored vectors queried at {format_time(now)}: "
            f"{report.probe.method}, compared with exact search"
        )
        return measured, collection_condition(slo, measured, basis=basis, generation=generation)
    last = previous.slo
    kept = get_condition(previous.conditions, SLO_MET)
    if kept is not None and kept.observed_generation == generation and last is not None:
        return last, kept  # nothing new: the targets and the measurement are unchanged
    if last is not None and last.sample_size:
        basis = f"{last.sample_size} stored vectors queried at {last.evaluated_time}"
        if last.observed_generation != generation:
            basis += f" under generation {last.observed_generation}; measured again when it serves"
        return last, collection_condition(slo, last, basis=basis, generation=generation)
    state = world.engine.state if world.engine is not None else None
    if offloaded:
        why = "the collection is in the cold tier; measured after a restore"
    elif hibernated:
        why = "the collection is hibernated; measured when it serves again"
    elif state is None:
        why = "the engine was not reached"
    elif not state.vectors:
        why = "the collection holds no vectors yet"
    else:
        why = "not measured yet"
    return last, collection_condition(slo, None, basis=why, generation=generation)


def _engine(
    vc: VectorCollection, report: EngineReport | None, generation: int | None
) -> tuple[list[Event], Condition]:
    """The Events of a sync and the `Provisioned` condition it earns (a failure is a condition,
    never a failed reconcile: status is still worth writing)."""
    if report is None:
        return [], _condition(
            "False", "EngineNotRunning", "the engine has no ready pod", generation
        )
    state = report.state
    if state is None:
        reason = report.failure or EngineFailure.UNREACHABLE
        return [], _condition("False", reason.value, report.message, generation)
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
            "False",
            "ConfigDrift",
            f"{state.location} differs from the spec: {'; '.join(state.unapplied)}",
            generation,
        )
    else:
        condition = _condition(
            "True",
            "CollectionProvisioned",
            f"{engine_name} collection {state.location} matches the spec",
            generation,
        )
    return events, condition


def volume_condition(
    world: World, now: datetime, generation: int | None, storage_class: str | None
) -> Condition | None:
    """`Provisioned=False` when a Managed engine's volume cannot bind, else None.

    `NoStorageClass`: a Pending claim names a StorageClass that does not exist, or names none
    while the cluster has no default (EKS from 1.30 installs none), so it waits for a
    provisioner that will never come. `VolumePending`: a claim of an existing class Pending
    longer than `VOLUME_PENDING_GRACE_SECONDS`, with the last Event about it
    (`world.claim_events`, read when `volume_events_due` asked); a class that binds only for a
    scheduled pod waits for that pod, which is the pods' story, not the volume's.
    `storage_class` is the spec's `storage.storageClassName`, named in the message."""
    found = _volume_problem(world, now, storage_class)
    if found is None:
        return None
    reason, _, message = found
    return _condition("False", reason, message, generation)


def volume_events_due(world: World, now: datetime) -> tuple[tuple[str, str | None], ...]:
    """The claims (name, uid) whose Events to read before deciding: the one `VolumePending`
    reports, so its message can carry the provisioner's last word."""
    found = _volume_problem(world, now, None)
    if found is None or found[0] != VOLUME_PENDING:
        return ()
    for claim in world.volumes:
        metadata = claim.get("metadata") or {}
        if metadata.get("name") == found[1]:
            uid = metadata.get("uid")
            return ((found[1], str(uid) if uid else None),)
    return ()


def _volume_problem(
    world: World, now: datetime, storage_class: str | None
) -> tuple[str, str, str] | None:
    """(reason, claim, message) of the first Pending claim that cannot bind, or None."""
    pending = sorted(
        (claim for claim in world.volumes if _claim_phase(claim) == "Pending"),
        key=lambda claim: str((claim.get("metadata") or {}).get("name", "")),
    )
    classes = world.storage_classes
    if not pending or classes is None:
        return None
    scheduled = any(node_name(pod) for pod in world.pods)
    existing = ", ".join(sorted(classes)) or "none"
    declared = f"{storage_class!r}" if storage_class else "unset"
    for claim in pending:
        name = str((claim.get("metadata") or {}).get("name", ""))
        wanted = (claim.get("spec") or {}).get("storageClassName")
        if not wanted and not any(info.default for info in classes.values()):
            return (
                NO_STORAGE_CLASS,
                name,
                f"PersistentVolumeClaim {name} is Pending: storage.storageClassName is "
                f"{declared} and the cluster has no default StorageClass (StorageClasses: "
                f"{existing}); set storage.storageClassName to one of them, or mark one default",
            )
        if wanted and wanted not in classes:
            return (
                NO_STORAGE_CLASS,
                name,
                f"PersistentVolumeClaim {name} is Pending: storage.storageClassName {wanted!r} "
                f"names no StorageClass (StorageClasses: {existing}); create it, or a "
                "PersistentVolume of that class, or change storage.storageClassName",
            )
        info = classes.get(str(wanted)) if wanted else None
        if info is not None and info.wait_for_consumer and not scheduled:
            continue
        created = parse_time((claim.get("metadata") or {}).get("creationTimestamp"))
        waited = (now - created).total_seconds() if created is not None else 0.0
        if waited >= VOLUME_PENDING_GRACE_SECONDS:
            last = _last_event(world.claim_events.get(name, ()))
            why = f"last Event: {last}" if last else f"kubectl describe pvc {name} says why"
            return (
                VOLUME_PENDING,
                name,
                f"PersistentVolumeClaim {name} (StorageClass {wanted or 'default'}) has been "
                f"Pending for {int(waited)}s; {why}",
            )
    return None


def _last_event(events: Sequence[Mapping[str, Any]]) -> str | None:
    """`reason: message` of the most recent Event (by its last time seen), or None."""

    def seen(event: Mapping[str, Any]) -> str:
        metadata = event.get("metadata") or {}
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or metadata.get("creationTimestamp")
            or ""
        )

    if not events:
        return None
    latest = max(events, key=seen)
    return f"{latest.get('reason', 'Event')}: {latest.get('message', '')}".strip()


def _claim_phase(claim: Mapping[str, Any]) -> str | None:
    if is_deleting(claim):
        return None
    phase = (claim.get("status") or {}).get("phase")
    return str(phase) if phase else None


def _unreached(
    vc: VectorCollection,
    previous: VectorCollectionStatus,
    world: World,
    now: datetime,
    provisioned: Condition,
    *,
    hibernated: bool,
) -> Condition:
    """`Provisioned` when the engine was not reached: kept from before while hibernated; for a
    Managed engine, a volume that cannot bind or credentials that cannot be used say why
    better than "no ready pod"."""
    generation = provisioned.observed_generation
    if hibernated:
        provisioned = get_condition(previous.conditions, PROVISIONED) or provisioned
    if vc.spec.engine.mode is not VectorEngineMode.Managed:
        return provisioned
    volumes = volume_condition(world, now, generation, vc.spec.storage.storage_class_name)
    if volumes is not None:
        return volumes
    report = world.credentials
    if report is not None and report.error is not None:
        return _condition("False", CREDENTIALS_MISSING, report.error, generation)
    return provisioned


def _credentials_events(report: CredentialsReport | None) -> list[Event]:
    """The Event of a generated Secret: its name, never its value."""
    if report is None or not report.created:
        return []
    return [
        Event(
            "Normal",
            "GeneratedCredentials",
            f"Generated Secret {report.name} with the engine's credentials (kept for the "
            "collection's life, never rotated)",
        )
    ]


def _measured(state: CollectionState) -> MeasuredUsage | None:
    """`status.measured` from what the engine reported (None: it reported no size)."""
    sizes = (state.memory_bytes, state.disk_bytes, state.data_bytes)
    if all(size is None for size in sizes):
        return None
    return MeasuredUsage(
        memory_bytes=state.memory_bytes, disk_bytes=state.disk_bytes, data_bytes=state.data_bytes
    )


def _policy(value: str | None) -> NamespacePolicy:
    return parse_policy(value) if value is not None else NamespacePolicy()


def _placement(
    allowed: Residency,
    ready_pods: Sequence[Mapping[str, Any]],
    node_regions: Mapping[str, str],
    *,
    managed: bool,
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


def _parse(raw: Raw) -> VectorCollection:
    return parse_object(VectorCollection, raw)


def _condition(status: str, reason: str, message: str, generation: int | None) -> Condition:
    return Condition(
        type=PROVISIONED,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
    )


def _endpoint(vc: VectorCollection) -> str | None:
    if vc.spec.engine.mode is VectorEngineMode.Managed:
        return managed_url(vc)
    if vc.spec.engine.url:
        return redact_url(vc.spec.engine.url)
    return None  # in a Secret: the URL may carry credentials


def _existing_volume(statefulset: Mapping[str, Any] | None) -> str | None:
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
