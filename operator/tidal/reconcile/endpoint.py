"""The InferenceEndpoint reconcile as one pure function: `decide(raw, world, memory, now)`.

Everything an endpoint's reconcile decides is composed here and nowhere else: parse the spec,
scale (`tidal.scaling.autoscale`), plan spot/reserved (`tidal.placement`), render the children
(`tidal.render.endpoint`), hand replicas over make-before-break, enforce residency and delete
replicas stranded on lost nodes (`tidal.residency`), price and judge service levels
(`tidal.cost`, `tidal.slo`), and summarize status and Events (`tidal.render`). The controller
observes (`World`), calls `decide`, and carries out the `Outcome`: apply these children, delete
these pods, patch these annotations and this status, post these Events, keep this `Memory`.

Given the same object, world, memory and `now`, `decide` returns the same `Outcome`: it reads
no clock, no environment, no module state and does no IO, so a recorded sequence of
observations replays exactly (tests do).

What an endpoint remembers between reconciles, and where (status is otherwise an observation
that the next reconcile could rebuild from the world):

| memory                           | stored in                                                 |
|----------------------------------|-----------------------------------------------------------|
| spot loss episode began          | annotation `tidal.dev/spot-lost-since`                     |
| spot healthy again since         | annotation `tidal.dev/spot-recovered-since`                |
| GPU-utilization history (Auto)   | annotation `tidal.dev/gpu-utilization-history`, once per   |
|                                  | 5-minute bucket; samples within it in `Memory.history`     |
| the previous spot/reserved split | `status.replicas` (read back by `previous_placement`)     |
| scale-to-zero state machine      | condition `ScaledToZero`, `status.scaledToZeroTime`,       |
|                                  | `status.lastRequestTime`, `status.lastColdStartSeconds`    |
| when each condition last changed | `status.conditions[].lastTransitionTime`                   |

The gateway's `tidal.dev/wake-requested-at` and `tidal.dev/last-request-time` annotations are
signals from outside, read like the rest of the world, never written here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from tidal.api.common import SLO_MET, Event, get_condition
from tidal.api.conventions import DEFAULT_CONVENTIONS, Conventions
from tidal.api.endpoint import InferenceEndpoint, InferenceEndpointStatus
from tidal.api.labels import (
    KARPENTER_DO_NOT_DISRUPT,
    LABEL_CAPACITY_TYPE,
    POD_DELETION_COST,
    UTILIZATION_HISTORY,
    WAKE_REQUESTED_AT,
    CapacityType,
)
from tidal.api.parsing import parse_object, read_status
from tidal.api.signals import endpoint_key
from tidal.api.wire import format_time, format_time_ms, is_ready
from tidal.cost import PriceCatalog, budget_condition, endpoint_cost
from tidal.errors import PermanentError
from tidal.placement import fleet, history, planner, provisioning
from tidal.placement.budget import DEFAULT_PRIOR, ReclaimPrior, Reclaims
from tidal.placement.fleet import endpoint_pods
from tidal.placement.model import (
    Constraints,
    FleetSnapshot,
    History,
    Placement,
    ProvisionablePool,
    SpotHealth,
    SpotRisk,
)
from tidal.placement.provisioning import DeclaredPool
from tidal.reconcile import observation as obs
from tidal.reconcile.world import Inputs, Measured
from tidal.render.cache import CacheProgress, model_cache, progress
from tidal.render.endpoint import (
    CAPACITY_TYPES,
    deployment_name,
    keep_preferences,
    render_deployment,
    render_pdb,
    render_service,
    stamp,
)
from tidal.render.events import (
    apply_events,
    budget_events,
    leaving_event,
    lost_nodes_event,
    residency_event,
    spot_events,
    status_events,
)
from tidal.render.monitoring import POD_MONITOR_KIND, render_pod_monitor
from tidal.render.status import (
    APPLY_REJECTED,
    INVALID_SPEC,
    Decision,
    Observed,
    ResidencyReport,
    Scaling,
    ServiceLevels,
    failed_status,
    status_changed,
    summarize,
)
from tidal.residency import checks
from tidal.residency.policy import NamespacePolicy, parse
from tidal.scaling.autoscale import LoadSample, ScalingDecision, ScalingState, Tuning
from tidal.scaling.autoscale import decide as decide_replicas
from tidal.scaling.replicas import desired_replicas
from tidal.slo import evaluate, transition_event

__all__ = [
    "APPLY_REJECTED",
    "Load",
    "Memory",
    "Outcome",
    "PodRef",
    "Settings",
    "World",
    "best_effort",
    "cache_name",
    "confirmed_lost",
    "decide",
    "reclaimed_spot_nodes",
    "rejected",
    "suspected_lost_nodes",
    "unapplied",
    "unscheduled_spot_pod",
]

Raw = dict[str, Any]

# The deletion cost of a replica on a node given notice: below any other replica's (default 0).
LEAVING_DELETION_COST: Final = "-1000"
# status.placement.reason's and status.cost.basis's schema bound.
_REASON_MAX: Final = 1024


@dataclasses.dataclass(frozen=True)
class Load:
    """What the gateways report of one endpoint, and how the autoscaler reads it."""

    samples: tuple[LoadSample, ...]
    last_request_time: datetime | None
    tuning: Tuning


@dataclasses.dataclass(frozen=True)
class Settings:
    """The operator's tunables the decision uses (`TIDAL_SPOT_*`): how long a spot replica
    may stay unscheduled before it counts as loss (`spot_provision_timeout_seconds` where an
    autoscaler can provision spot, `spot_pending_seconds` elsewhere), and the hysteresis."""

    spot_pending_seconds: float
    spot_return_after_seconds: int
    spot_provision_timeout_seconds: float = 600.0
    # Auto's pessimistic prior on spot reclaims and recovery (`TIDAL_SPOT_RECLAIMS_PER_HOUR`,
    # `TIDAL_SPOT_RECLAIM_PRIOR_HOURS`, `TIDAL_SPOT_DETECTION_SECONDS`,
    # `TIDAL_COLD_START_SECONDS`, `TIDAL_SPOT_NOTICE_SECONDS`).
    reclaim_prior: ReclaimPrior = DEFAULT_PRIOR
    # What the cluster's node labels mean (`tidal-capacity` conventions.yaml): the region label,
    # the spot markers, the GPU labels a replica's required affinity names.
    conventions: Conventions = DEFAULT_CONVENTIONS
    # Extra labels on every PodMonitor (`TIDAL_POD_MONITOR_LABELS`), for a Prometheus whose
    # podMonitorSelector asks for one.
    pod_monitor_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class World:
    """Everything observed for one reconcile of one endpoint, frozen when it started.

    `lost_nodes`: nodes the API server itself confirmed gone or NotReady spot (the indexes may
    lag; `suspected_lost_nodes` says which to ask about). `nodepools` and `declared_pools`:
    what node autoscalers can still add (Karpenter NodePools; `tidal-capacity` pools, whose
    room `decide` counts against the fleet's nodes). `spot_pod_events`: the Events of the
    endpoint's longest-unscheduled spot pod (`unscheduled_spot_pod` names it): a node
    autoscaler that cannot provision for it says so there, and since every spot replica has the
    same template, what it says holds for all of them. `load` is None when no gateway is
    configured (no load-driven scaling, no scale to zero). `pod_monitors`: the API server serves
    Prometheus Operator's PodMonitor kind (and the operator may create them): each endpoint then
    gets one among its children; without it none is rendered and none is deleted (a PodMonitor
    left from before goes with its endpoint). `force_apply` re-applies every child (drift
    repair); `sample_history` adds a utilization sample (periodic refreshes only, so samples
    are evenly spaced); `require_observed` skips a spec whose generation the create/update
    handler has not acted on yet.
    """

    inputs: Inputs
    settings: Settings
    catalog: PriceCatalog
    prices_source: str
    load: Load | None = None
    measured: Measured | None = None
    lost_nodes: frozenset[str] = frozenset()
    nodepools: tuple[ProvisionablePool, ...] = ()
    declared_pools: tuple[DeclaredPool, ...] = ()
    spot_pod_events: tuple[Raw, ...] = ()
    # The endpoint's model cache (`cache_name` names it) as the API server holds it: its claim
    # and its loader Job (None: absent, or no cache).
    cache_claim: Raw | None = None
    cache_job: Raw | None = None
    # Spot reclaim episodes the operator has seen per pool, and how long it has watched
    # (`runtime.reclaims`): Auto's interruption budget reads them against its prior.
    reclaims: Mapping[str, Reclaims] = dataclasses.field(default_factory=dict)
    watched_hours: float = 0.0
    pod_monitors: bool = False
    force_apply: bool = False
    sample_history: bool = False
    require_observed: bool = False


@dataclasses.dataclass(frozen=True)
class Memory:
    """What this process keeps between reconciles of one endpoint: the utilization history
    with samples merged within the current bucket (None: read it from the annotation)."""

    history: History | None = None


@dataclasses.dataclass(frozen=True)
class PodRef:
    """A pod to delete, with its uid as a precondition (never a same-named successor)."""

    name: str
    uid: str | None


@dataclasses.dataclass(frozen=True)
class ScalingNote:
    """A replica-count change worth a log line: from -> to, why, and for a wake when it was
    requested (the controller logs the operator's share of the cold start once applied)."""

    endpoint: str
    before: int
    after: int
    reason: str
    woke: bool
    wake_requested_at: str | None = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the controller must do for one reconcile, in order: apply `children` (on a
    rejection, write `rejected(...)` instead and stop; a child `best_effort` names that fails
    is logged, left out of the Events with `unapplied`, and stops nothing), delete
    `delete_pods`, annotate the pods in `pod_annotations`, patch the endpoint's `annotations`,
    merge-patch `status` (the typed `InferenceEndpointStatus` as `to_patch()` writes it; None:
    nothing would change), post `events`, record `levels` in /metrics, keep `memory`."""

    children: tuple[Raw, ...] = ()
    delete_pods: tuple[PodRef, ...] = ()
    pod_annotations: tuple[tuple[PodRef, Mapping[str, str | None]], ...] = ()
    annotations: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    status: Mapping[str, Any] | None = None
    events: tuple[Event, ...] = ()
    memory: Memory = Memory()
    levels: ServiceLevels | None = None
    scaling: ScalingNote | None = None
    placement: Placement | None = None


def decide(raw: Raw, world: World, memory: Memory, now: datetime) -> Outcome:
    """The reconcile of endpoint `raw` (as the API server holds it now) in `world`."""
    metadata = raw.get("metadata") or {}
    before: Mapping[str, Any] = raw.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return Outcome(memory=memory)
    if world.require_observed and before.get("observedGeneration") != metadata.get("generation"):
        return Outcome(memory=memory)
    try:
        ie = parse_object(InferenceEndpoint, raw)
    except PermanentError as exc:
        return rejected(raw, INVALID_SPEC, str(exc), now, memory)
    # Status read once: the scaling state machine and the previous split live there.
    ie = ie.model_copy(update={"status": read_status(InferenceEndpointStatus, before)})
    generation = metadata.get("generation")
    annotations: dict[str, str] = dict(metadata.get("annotations") or {})
    conditions = ie.status.conditions
    inputs = world.inputs
    live = obs.own_pods(inputs.pods)
    cache = _cache(ie, world)

    scaled = _scale(ie, live, world, now)
    scaling = scaled[0] if scaled is not None else None
    desired = _desired(ie, scaling, cache)
    plan = _plan(ie, annotations, live, world, memory, now, desired)
    placement = _held(plan.placement, cache)
    existing = {
        (obj.get("kind"), _name_of(obj)): obj
        for obj in [*inputs.deployments, *inputs.services, *inputs.pdbs, *inputs.pod_monitors]
    }
    departures = _departures(placement, live, inputs.fleet)
    try:
        children = _render(
            ie, placement, inputs, existing, live, departures.surge, world.settings.conventions
        ) + _monitoring(ie, world)
    except PermanentError as exc:
        return rejected(raw, INVALID_SPEC, str(exc), now, memory)
    # The cache's claim, then its Job, created once each (never re-applied: immutable specs).
    stale = (
        *(cache.create if cache is not None else ()),
        *(child for child in children if world.force_apply or obs.differs(child, existing)),
    )
    events = apply_events(existing.values(), stale)
    # The Deployments as they will be once applied: what status counts replicas against.
    after = {**existing, **{(obj.get("kind"), _name_of(obj)): obj for obj in stale}}
    deployments = [obj for (kind, _), obj in after.items() if kind == "Deployment"]

    violation, deleted, enforced = _enforce(live, inputs, plan.allowed, world.lost_nodes)
    events += [*enforced, *departures.events]
    note = None
    if scaled is not None:
        events += [Event(e.type, e.reason, e.message) for e in scaled[0].events]
        note = _scaling_note(ie, annotations, *scaled)

    node_regions = {node.name: node.region for node in inputs.fleet.nodes if node.region}
    gone = {ref.name for ref in deleted}
    running = [pod for pod in live if _name_of(pod) not in gone]
    levels = _service_levels(ie, running, world)
    status = summarize(
        ie,
        decision=Decision(
            desired=placement.desired,
            spot=placement.spot,
            reserved=placement.reserved,
            reason=placement.reason,
            placed=placement.placed,
            placed_reason=placement.placed_reason,
        ),
        residency=ResidencyReport(
            allowed_regions=plan.allowed,
            violation=violation,
            excluded_regions=tuple(r for r in ie.spec.residency.regions if r not in plan.allowed),
        ),
        observed=Observed(deployments=deployments, pods=running, node_regions=node_regions),
        generation=generation,
        conditions=conditions,
        now=format_time(now),
        levels=levels,
        scaling=_scaling_report(ie, scaling),
        cache=cache.condition if cache is not None else None,
    ).to_patch()
    previous = plan.previous
    events += spot_events(
        before=(previous.spot, previous.reserved) if previous is not None else None,
        after=(placement.spot, placement.reserved),
        was_lost=plan.was_lost,
        lost=placement.spot_lost_since is not None,
        reason=placement.reason,
    )
    events += status_events(before, status)
    events += budget_events(before, status)
    if levels.slo_met is not None:
        slo_event = transition_event(get_condition(conditions, SLO_MET), levels.slo_met)
        if slo_event is not None:
            events.append(slo_event)
    changes = obs.episode_annotations(placement, annotations)
    changes.update(_history_changes(plan.history, annotations))
    return Outcome(
        children=stale,
        delete_pods=tuple(deleted),
        pod_annotations=(*departures.marks, *_loaded(live)),
        annotations=changes,
        status=status if status_changed(before, status) else None,
        events=tuple(events),
        memory=Memory(history=plan.history),
        levels=levels,
        scaling=note,
        placement=placement,
    )


def cache_name(raw: Raw) -> str | None:
    """The name of the model cache (claim and loader Job) endpoint `raw` uses; None without
    one or when the spec does not parse (the reconcile then reports InvalidSpec)."""
    try:
        ie = parse_object(InferenceEndpoint, raw)
        cache = model_cache(ie)
    except (PermanentError, ValueError):
        return None
    return cache.name if cache is not None else None


def rejected(
    raw: Raw, reason: str, message: str, now: datetime, memory: Memory = Memory()
) -> Outcome:
    """The outcome when the endpoint cannot be reconciled: an invalid spec (`InvalidSpec`) or a
    child the API server refused (`ApplyRejected`). Only Ready and observedGeneration change."""
    before = raw.get("status") or {}
    status = failed_status(
        InferenceEndpointStatus,
        reason=reason,
        message=message,
        generation=(raw.get("metadata") or {}).get("generation"),
        conditions=read_status(InferenceEndpointStatus, before).conditions,
        now=format_time(now),
    ).to_patch()
    return Outcome(
        status=status if status_changed(before, status) else None,
        events=tuple(status_events(before, status)),
        memory=memory,
    )


def best_effort(child: Mapping[str, Any]) -> bool:
    """Whether `child` may fail to apply without stopping the reconcile: the PodMonitor.

    Monitoring comes second to serving: a PodMonitor the API server refuses (its CRD removed
    since the runtime last looked, RBAC narrowed by hand) must never hold back replicas,
    residency enforcement or status. The next reconcile tries it again.
    """
    return child.get("kind") == POD_MONITOR_KIND


def unapplied(outcome: Outcome, failed: Sequence[Raw]) -> Outcome:
    """`outcome` once the `best_effort` children `failed` could not be applied: the Events
    saying they were created are dropped (nothing was, and the next try would say it again)."""
    untrue = set(apply_events((), failed))
    return dataclasses.replace(
        outcome, events=tuple(event for event in outcome.events if event not in untrue)
    )


def suspected_lost_nodes(inputs: Inputs) -> frozenset[str]:
    """The nodes the indexes say are lost that the endpoint's replicas still run on: the
    controller asks the API server about exactly these before deleting anything for them."""
    live = obs.own_pods(inputs.pods)
    return frozenset(_node_of(pod) for pod, _why in obs.lost_node_pods(live, inputs.fleet))


def reclaimed_spot_nodes(inputs: Inputs) -> tuple[tuple[str, str], ...]:
    """The spot nodes holding the endpoint's replicas that are being reclaimed
    (`placement.fleet.spot_reclaimed`), each with its spot pool (`region/product`, as the
    planner names pools): what the controller records for Auto's interruption budget
    (`runtime.reclaims`). A node already gone from the fleet has no pool to name and is left
    out; its notice or NotReady, seen first, counted it."""
    nodes = {node.name: node for node in inputs.fleet.nodes}
    found: dict[str, str] = {}
    for pod in obs.own_pods(inputs.pods):
        node = nodes.get(_node_of(pod))
        if node is None or node.region is None or not fleet.spot_reclaimed(node):
            continue
        found[node.name] = f"{node.region}/{node.gpu_product or 'unlabelled'}"
    return tuple(sorted(found.items()))


def unscheduled_spot_pod(inputs: Inputs) -> PodRef | None:
    """The endpoint's spot pod the scheduler has left unbound longest, if any: the controller
    reads its Events for `World.spot_pod_events` (one request, only while one waits)."""
    waiting = obs.unscheduled_spot_pods(inputs.pods)
    if not waiting:
        return None
    oldest, _since = min(
        waiting, key=lambda pair: (pair[1] is None, pair[1] or 0, _name_of(pair[0]))
    )
    return PodRef(name=_name_of(oldest), uid=(oldest.get("metadata") or {}).get("uid"))


def confirmed_lost(nodes: Mapping[str, Mapping[str, Any] | None], now: datetime) -> frozenset[str]:
    """Of the suspected nodes as the API server returned them (None: gone), those really
    lost: deleted, or a spot node that is not Ready."""
    lost = set()
    for name, node in nodes.items():
        if node is None:
            lost.add(name)
            continue
        info = fleet.node_info(node, 0, now)
        if not info.ready and info.capacity_type is CapacityType.SPOT:
            lost.add(name)
    return frozenset(lost)


# --- the steps ----------------------------------------------------------------------------------


def _cache(ie: InferenceEndpoint, world: World) -> CacheProgress | None:
    """The model cache's progress, when the endpoint has one.

    None also for a spec whose source cannot be cached: rendering the replicas refuses the same
    spec (`engines.cached_source`), and the reconcile reports that as InvalidSpec."""
    try:
        cache = model_cache(ie)
    except PermanentError:
        return None
    if cache is None:
        return None
    return progress(ie, cache, world.cache_claim, world.cache_job)


def _desired(
    ie: InferenceEndpoint, scaling: ScalingDecision | None, cache: CacheProgress | None
) -> int:
    """The replicas wanted: by load where a gateway reports it, else by the spec; none while
    the model cache is not filled (no replica may download)."""
    if cache is not None and not cache.filled:
        return 0
    return scaling.desired if scaling is not None else desired_replicas(ie.spec)


def _held(placement: Placement, cache: CacheProgress | None) -> Placement:
    """The placement whose reason says why no replica runs while the cache is not filled."""
    if cache is None or cache.filled:
        return placement
    held = f"replicas held at 0 until the model cache is filled: {cache.condition.message}"
    return dataclasses.replace(placement, reason=_clip(held, _REASON_MAX))


@dataclasses.dataclass(frozen=True)
class _Plan:
    placement: Placement
    # The regions residency allows (whether or not anything fits there).
    allowed: tuple[str, ...]
    previous: Placement | None
    was_lost: bool
    history: History


def _scale(
    ie: InferenceEndpoint,
    live: Sequence[Mapping[str, Any]],
    world: World,
    now: datetime,
) -> tuple[ScalingDecision, int] | None:
    """How many replicas, from load, idle time and wakes, and how many were asked for before;
    None without a gateway to tell."""
    load = world.load
    if load is None:
        return None
    first_ready, first_scheduled = obs.first_ready(live)
    if first_ready is not None:
        # Kubernetes stamps conditions to the second: the replica became ready within the
        # second after the stamp, and no later than now. The later bound never reports a cold
        # start shorter than it was (a fast start would otherwise read as 0 s).
        first_ready = min(first_ready + timedelta(seconds=1), now)
    state = ScalingState.observe(
        ie,
        ready_replicas=sum(obs.serving_replicas(live, world.inputs.fleet).values()),
        load=load.samples,
        gateway_last_request_time=load.last_request_time,
        first_ready_time=first_ready,
        first_scheduled_time=first_scheduled,
    )
    decision = decide_replicas(ie.spec.scaling, state, now, load.tuning)
    return decision, state.current_replicas


def _scaling_note(
    ie: InferenceEndpoint,
    annotations: Mapping[str, str],
    decision: ScalingDecision,
    before: int,
) -> ScalingNote | None:
    key = endpoint_key(str(ie.metadata["namespace"]), str(ie.metadata["name"]))
    if decision.desired == before and not decision.woke:
        return None
    return ScalingNote(
        endpoint=key,
        before=before,
        after=decision.desired,
        reason=decision.reason,
        woke=decision.woke,
        wake_requested_at=annotations.get(WAKE_REQUESTED_AT) if decision.woke else None,
    )


def _scaling_report(ie: InferenceEndpoint, decision: ScalingDecision | None) -> Scaling | None:
    if decision is None:
        return None
    spec = ie.spec.scaling
    return Scaling(
        condition=decision.condition,
        floor=min(max(1, spec.min_replicas), spec.effective_max_replicas),
        scaled_to_zero_time=_stamp(decision.scaled_to_zero_time),
        last_request_time=_stamp(decision.last_request_time),
        last_cold_start_seconds=decision.cold_start_seconds,
    )


def _stamp(moment: datetime | None) -> str | None:
    return format_time_ms(moment) if moment is not None else None


def _plan(
    ie: InferenceEndpoint,
    annotations: Mapping[str, str],
    live: Sequence[Mapping[str, Any]],
    world: World,
    memory: Memory,
    now: datetime,
    desired: int,
) -> _Plan:
    """The planner's inputs from what was observed, and its decision."""
    inputs = world.inputs
    fleet_now = dataclasses.replace(
        inputs.fleet,
        provisionable=provisioning.provisionable(
            world.nodepools, world.declared_pools, inputs.fleet.nodes
        ),
    )
    namespace = str(ie.metadata.get("namespace", ""))
    policy = parse(inputs.namespace_policy) if inputs.namespace_policy is not None else None
    ref = ie.spec.vector_collection_ref
    constraints = Constraints(
        namespace_regions=policy.regions if policy is not None else None,
        collection_regions=inputs.collection_regions(ref.name if ref is not None else None),
    )
    lost_since, recovered_since = obs.episode(annotations)
    # Where spot can be provisioned a spot replica waits for its node: minutes, not a loss.
    elastic = any(p.capacity_type is CapacityType.SPOT for p in fleet_now.provisionable)
    settings = world.settings
    patience = settings.spot_provision_timeout_seconds if elastic else settings.spot_pending_seconds
    # Karpenter saying it cannot provision for one spot replica says it for all (one template).
    failure = obs.provision_failure(world.spot_pod_events)
    failed = (
        {_name_of(pod) for pod, _ in obs.unscheduled_spot_pods(inputs.pods)} if failure else set()
    )
    spot_health = SpotHealth(
        pending_spot_pods=obs.pending_spot_pods(inputs.pods, now, patience, failed),
        pending_after_seconds=patience,
        provision_failure=failure,
        lost_since=lost_since,
        recovered_since=recovered_since,
        return_after_seconds=world.settings.spot_return_after_seconds,
    )
    utilization = (
        memory.history
        if memory.history is not None
        else history.loads(annotations.get(UTILIZATION_HISTORY))
    )
    if world.sample_history:
        keys = {(namespace, _name_of(pod)) for pod in live}
        # A pod's telemetry is on the node it runs on: only those nodes need reading.
        hosts = {_node_of(pod) for pod in live}
        nearby = FleetSnapshot(nodes=tuple(n for n in inputs.fleet.nodes if n.name in hosts))
        sample = history.sample_from_fleet(nearby, keys, now)
        if sample is not None:
            utilization = history.append(utilization, sample)
    previous = obs.previous_placement(ie.status)
    placement = planner.plan(
        ie.spec,
        fleet_now,
        utilization,
        now,
        desired=desired,
        constraints=constraints,
        spot_health=spot_health,
        previous=previous,
        own=endpoint_pods(live),
        risk=SpotRisk(
            prior=settings.reclaim_prior,
            reclaims=world.reclaims,
            watched_hours=world.watched_hours,
            last_cold_start_seconds=ie.status.last_cold_start_seconds,
            last_replica_start_seconds=ie.status.last_replica_start_seconds,
        ),
    )
    return _Plan(
        placement=_with_policy_error(placement, policy),
        allowed=planner.allowed_regions(ie.spec, constraints),
        previous=previous,
        was_lost=lost_since is not None,
        history=utilization,
    )


@dataclasses.dataclass(frozen=True)
class _Departures:
    """Make before break for replicas on nodes given notice: `surge`, the extra replicas per
    Deployment (their replacements); `marks`, the deletion cost to put on them; the Event."""

    surge: Mapping[CapacityType, int]
    marks: tuple[tuple[PodRef, Mapping[str, str | None]], ...]
    events: tuple[Event, ...]


def _departures(
    placement: Placement, live: Sequence[Mapping[str, Any]], fleet: FleetSnapshot
) -> _Departures:
    """Replicas on nodes given notice keep serving while their replacements start at once (the
    surge); once the replicas elsewhere that are Ready cover the desired count the surge ends,
    and the ReplicaSet removes the leaving ones first: they carry the lowest deletion cost."""
    leaving = obs.leaving_pods(live, fleet)
    if not leaving:
        return _Departures({}, (), ())
    marks = []
    for pod in leaving:
        metadata = pod.get("metadata") or {}
        if (metadata.get("annotations") or {}).get(POD_DELETION_COST) != LEAVING_DELETION_COST:
            ref = PodRef(_name_of(pod), metadata.get("uid"))
            marks.append((ref, {POD_DELETION_COST: LEAVING_DELETION_COST}))
    events = (leaving_event(f"{_name_of(p)} on {_node_of(p)}" for p in leaving),) if marks else ()
    names = {_name_of(pod) for pod in leaving}
    staying = [pod for pod in live if _name_of(pod) not in names]
    surge = dict.fromkeys(CapacityType, 0)
    if sum(obs.serving_replicas(staying, fleet).values()) < placement.desired:
        for pod in leaving:
            kind = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_CAPACITY_TYPE)
            if kind in surge:
                surge[CapacityType(kind)] += 1
    return _Departures(surge, tuple(marks), events)


def _loaded(
    live: Sequence[Mapping[str, Any]],
) -> tuple[tuple[PodRef, Mapping[str, str | None]], ...]:
    """Ready replicas still protected from the autoscaler's voluntary disruption: the
    protection is lifted (their model is loaded; consolidating their node now costs a move,
    not a load in progress)."""
    return tuple(
        (
            PodRef(_name_of(pod), (pod.get("metadata") or {}).get("uid")),
            {KARPENTER_DO_NOT_DISRUPT: None},
        )
        for pod in live
        if is_ready(pod)
        and ((pod.get("metadata") or {}).get("annotations") or {}).get(KARPENTER_DO_NOT_DISRUPT)
        == "true"
    )


def _render(
    ie: InferenceEndpoint,
    placement: Placement,
    inputs: Inputs,
    existing: Mapping[tuple[Any, str], Raw],
    live: Sequence[Mapping[str, Any]],
    surge: Mapping[CapacityType, int],
    conventions: Conventions,
) -> list[Raw]:
    """The children for `placement`, stamped, replicas handed over make-before-break (between
    the Deployments, and for replicas on nodes given notice: `surge`), and the
    PodDisruptionBudget that makes evictions wait for replacements too.

    A capacity type that has never run a replica gets no Deployment: an empty Deployment still
    costs the Deployment and ReplicaSet controllers a ReplicaSet and its status writes, which at
    1,000 endpoints doubled their work (docs/benchmarks.md). Once created, a Deployment stays,
    scaled to 0 when its share is, so the mix stays visible and coming back is a patch.
    """
    name = str(ie.metadata["name"])
    shares = obs.shares(placement, inputs.fleet, conventions)
    current = obs.current_replicas(
        [obj for (kind, _), obj in existing.items() if kind == "Deployment"], name
    )
    asked = obs.handover(
        {kind: shares[kind].replicas for kind in shares},
        current,
        obs.serving_replicas(live, inputs.fleet),
    )
    for kind, extra in surge.items():
        if extra:
            asked[kind] = max(asked[kind], shares[kind].replicas + extra)
    return [
        stamp(
            keep_preferences(
                render_deployment(
                    ie, kind, dataclasses.replace(shares[kind], replicas=asked[kind])
                ),
                existing.get(("Deployment", deployment_name(name, kind))),
            )
        )
        for kind in CAPACITY_TYPES
        if asked[kind] or ("Deployment", deployment_name(name, kind)) in existing
    ] + [stamp(render_service(ie)), stamp(render_pdb(ie, placement.desired))]


def _monitoring(ie: InferenceEndpoint, world: World) -> list[Raw]:
    """The endpoint's PodMonitor, stamped like every child, where the cluster serves the kind
    (none for an engine whose metrics Tidal does not know)."""
    if not world.pod_monitors:
        return []
    monitor = render_pod_monitor(ie, world.settings.pod_monitor_labels)
    return [stamp(monitor)] if monitor is not None else []


def _enforce(
    live: Sequence[Mapping[str, Any]],
    inputs: Inputs,
    allowed: tuple[str, ...],
    lost_nodes: frozenset[str],
) -> tuple[str | None, list[PodRef], list[Event]]:
    """The replicas to delete: those running outside the allowed regions and those stranded on
    nodes confirmed lost; their Deployments, whose affinity names only allowed, live capacity,
    replace them.

    Returns the residency violation (one line, None when compliant), the pods, and the Events.
    """
    node_regions = {node.name: node.region for node in inputs.fleet.nodes}
    events: list[Event] = []
    deleted: list[PodRef] = []
    outside = checks.violations(live, node_regions, set(allowed))
    violation = checks.describe(outside, allowed) if outside else None
    if violation is not None:
        events.append(residency_event(violation))
        deleted += [PodRef(found.pod, found.uid or None) for found in outside]
    gone = {ref.name for ref in deleted}
    stranded = [
        (pod, why)
        for pod, why in obs.lost_node_pods(live, inputs.fleet)
        if _name_of(pod) not in gone and _node_of(pod) in lost_nodes
    ]
    if stranded:
        events.append(
            lost_nodes_event(f"{_name_of(pod)} on {_node_of(pod)} ({why})" for pod, why in stranded)
        )
        deleted += [
            PodRef(_name_of(pod), (pod.get("metadata") or {}).get("uid")) for pod, _ in stranded
        ]
    return violation, deleted, events


def _service_levels(
    ie: InferenceEndpoint, pods: Sequence[Mapping[str, Any]], world: World
) -> ServiceLevels:
    """status.slo, status.cost and their conditions, from the latest measurement and the
    replicas running now."""
    generation = ie.metadata.get("generation")
    measured = world.measured
    measurement = measured.measurement if measured is not None else None
    cost = endpoint_cost(
        obs.placed_replicas(pods, world.inputs.fleet),
        measurement.tokens_per_second if measurement is not None else None,
        world.catalog,
        tokens_source=measurement.describe() if measurement is not None else None,
    )
    cost = cost.model_copy(
        update={"basis": _clip(_joined(cost.basis, f"prices: {world.prices_source}"), _REASON_MAX)}
    )
    within_budget = budget_condition(ie.spec.cost, cost, generation=generation)
    if measured is None:
        return ServiceLevels(cost=cost, within_budget=within_budget)
    slo, slo_met = evaluate(ie.spec.slo, measured.measurement, measured.at, generation=generation)
    if measured.error is not None:
        slo_met = slo_met.model_copy(
            update={"message": _clip(f"{slo_met.message}; cannot measure: {measured.error}")}
        )
    return ServiceLevels(cost=cost, within_budget=within_budget, slo=slo, slo_met=slo_met)


def _joined(basis: str | None, note: str) -> str:
    return f"{basis}; {note}" if basis else note


def _clip(text: str, limit: int = 4096) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _with_policy_error(placement: Placement, policy: NamespacePolicy | None) -> Placement:
    """The placement whose reason also says what was wrong with the namespace policy."""
    if policy is None or policy.error is None:
        return placement
    return dataclasses.replace(
        placement, reason=_clip(f"{placement.reason}; {policy.error}", _REASON_MAX)
    )


def _history_changes(current: History, annotations: Mapping[str, str]) -> dict[str, str | None]:
    """The history annotation to write: when a new bucket has begun since the stored one."""
    if not current.samples:
        return {}
    if _stored_bucket(annotations.get(UTILIZATION_HISTORY)) == _bucket(current):
        return {}
    return {UTILIZATION_HISTORY: history.dumps(current)}


@functools.lru_cache(maxsize=4096)
def _stored_bucket(raw: str | None) -> int | None:
    """The bucket of the newest sample the annotation holds (None: no sample). Cached by the
    annotation's text, so an unchanged annotation is parsed once, not on every reconcile: pure,
    so the cache changes no Outcome."""
    return history.newest_bucket(raw)


def _bucket(samples: History) -> int:
    newest = samples.samples[-1].time
    return int(newest.timestamp()) // history.HISTORY_BUCKET_SECONDS


def _name_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _node_of(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")
