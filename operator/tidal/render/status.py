"""The InferenceEndpoint status Tidal writes, computed from what the reconcile decided and observed.

Pure: the reconcile hands over the placement decision (`Decision`), the residency check
(`ResidencyReport`), the children as listed (`Observed`) and `now`, and gets the typed
`InferenceEndpointStatus`; its `to_patch()` is what the controller merge-patches into `.status`
(the one way either kind writes status). Conditions are upserted into the list the object
already has, so conditions owned by other decisions (SLOMet, WithinBudget, ...) survive. No IO,
no clock, no Kopf, no kubernetes client, no import of the sibling decision packages (`placement`,
`residency`): the controller translates their results into the small types here.

Conditions written here:
- `Placed`: False with the planner's reason (`NoAllowedRegion`, `NoFittingGPU`,
  `InsufficientCapacity`, ...) when it could not place every replica; else True (`Placed`) once
  every replica is bound to a node, False `Unschedulable` (the scheduler's message) or
  `Scheduling` until then.
- `ResidencyCompliant`: False `PodsOutsideAllowedRegions` naming the pods, else True
  `AllReplicasInAllowedRegions`.
- `Ready`: True `ReplicasReady` only when Placed and ResidencyCompliant are True and every
  desired replica is ready; otherwise False with the planner's reason, `PodsOutsideAllowedRegions`
  or `ReplicasNotReady`.
- With scale to zero (`Scaling`, from `tidal.scaling.autoscale`): the `ScaledToZero` condition,
  `scaledToZeroTime`, `lastRequestTime`, `lastColdStartSeconds`. `Ready` stays True while the
  endpoint is scaled to zero (reason `ScaledToZero`) or waking (`Waking`): the gateway holds
  requests and wakes it, so it accepts traffic, as a Knative Service at zero stays Ready. And
  replicas added for load beyond the spec's floor (max(1, minReplicas)) do not make it NotReady
  while they start: the floor's replicas serve.
- `lastReplicaStartSeconds`: the newest Ready replica's time from creation to Ready (a pod
  whose containers restarted is not counted); left as it is while no replica measures one.
- `ModelCached` (endpoints with `model.cache`; `tidal.render.cache`): True `Filled` with the
  bytes and seconds of the fill, False `Filling` or `FillFailed`; while False, `Ready` is False
  with the same reason and message (no replica runs until the cache is filled).
- `SLOMet` and `WithinBudget`, as `tidal.slo` and `tidal.cost` decided them (`ServiceLevels`),
  next to the `status.slo` and `status.cost` blocks they judge. Those blocks are written whole,
  a value that became unknown as an explicit null, so a JSON merge patch removes it instead of
  leaving the last known number behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar

from tidal.api.collection import VectorCollectionStatus
from tidal.api.common import (
    MODEL_CACHED,
    PLACED,
    READY,
    RESIDENCY_COMPLIANT,
    Condition,
    PlacementStatus,
    set_condition,
)
from tidal.api.endpoint import (
    EndpointCostStatus,
    EndpointSLOStatus,
    InferenceEndpoint,
    InferenceEndpointStatus,
    ReplicasStatus,
)
from tidal.api.labels import LABEL_CAPACITY_TYPE, TEMPLATE_HASH, CapacityType
from tidal.api.wire import (
    is_deleting,
    is_ready,
    is_terminated,
    node_name,
    pod_condition,
    start_seconds,
)
from tidal.render.endpoint import deployment_name, endpoint_url

__all__ = [
    "ALL_REPLICAS_IN_ALLOWED_REGIONS",
    "APPLY_REJECTED",
    "INVALID_SPEC",
    "PODS_OUTSIDE_ALLOWED_REGIONS",
    "Decision",
    "Observed",
    "ResidencyReport",
    "Scaling",
    "ServiceLevels",
    "failed_status",
    "status_changed",
    "summarize",
]

INVALID_SPEC: Final = "InvalidSpec"
# The API server refused a rendered child (HTTP 400/422) although the spec parsed.
APPLY_REJECTED: Final = "ApplyRejected"
PODS_OUTSIDE_ALLOWED_REGIONS: Final = "PodsOutsideAllowedRegions"
ALL_REPLICAS_IN_ALLOWED_REGIONS: Final = "AllReplicasInAllowedRegions"
REPLICAS_READY: Final = "ReplicasReady"
REPLICAS_NOT_READY: Final = "ReplicasNotReady"

Object = Mapping[str, Any]
# The status of either kind (`failed_status` serves both).
StatusT = TypeVar("StatusT", InferenceEndpointStatus, VectorCollectionStatus)


@dataclasses.dataclass(frozen=True)
class Observed:
    """An endpoint's children as the API server returned them (wire-form dicts)."""

    deployments: Sequence[Object] = ()
    pods: Sequence[Object] = ()
    # Node name -> its topology.kubernetes.io/region; nodes gone or unlabelled are absent.
    node_regions: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Decision:
    """The placement decision, as status reports it: the shares and the planner's verdict."""

    desired: int
    spot: int
    reserved: int
    # One line: why this mix (status.placement.reason, and the Placed message).
    reason: str
    placed: bool = True
    placed_reason: str = "Placed"


@dataclasses.dataclass(frozen=True)
class ResidencyReport:
    """The residency check: the allowed regions and, when replicas run outside them, one line
    naming them. `excluded_regions`: regions the spec asks for that a policy removed."""

    allowed_regions: tuple[str, ...]
    violation: str | None = None
    excluded_regions: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ServiceLevels:
    """What the endpoint costs and achieves: `status.cost`, `status.slo` and their conditions.

    `slo`/`slo_met` are None until the first measurement: neither is written then (an absent
    condition already says "not known yet").
    """

    cost: EndpointCostStatus
    within_budget: Condition
    slo: EndpointSLOStatus | None = None
    slo_met: Condition | None = None


@dataclasses.dataclass(frozen=True)
class Scaling:
    """The scale-to-zero state to report: the `ScaledToZero` condition and its times.

    `floor`: the replicas the spec itself asks for (max(1, minReplicas)); replicas beyond it
    were added for load. A None time leaves that status field as it is.
    """

    condition: Condition
    floor: int
    scaled_to_zero_time: str | None = None
    last_request_time: str | None = None
    last_cold_start_seconds: float | None = None


SCALED_TO_ZERO_REASON: Final = "ScaledToZero"
WAKING_REASON: Final = "Waking"


def summarize(
    ie: InferenceEndpoint,
    *,
    decision: Decision,
    residency: ResidencyReport,
    observed: Observed,
    generation: int | None,
    conditions: Sequence[Condition],
    now: str,
    levels: ServiceLevels | None = None,
    scaling: Scaling | None = None,
    cache: Condition | None = None,
) -> InferenceEndpointStatus:
    """The status of an endpoint whose children were just applied and observed.

    `cache`: the ModelCached condition of an endpoint with `model.cache` (`tidal.render.cache`);
    until it is True no replica runs, and Ready says why with its reason (Filling, FillFailed).

    `spot`/`reserved` are the decided shares (what the Deployments are asked to run); `ready` is
    observed: replicas on the current pod template that pass their readiness probes.
    """
    name = ie.metadata["name"]
    desired = decision.desired
    ready_by_type = {
        capacity_type: _ready_replicas(
            observed.deployments, observed.pods, deployment_name(name, capacity_type), capacity_type
        )
        for capacity_type in CapacityType
    }
    ready = sum(ready_by_type.values())
    live_pods = [pod for pod in observed.pods if _live(pod)]
    ready_nodes = sorted({node_name(pod) for pod in live_pods if node_name(pod) and is_ready(pod)})
    regions = sorted({observed.node_regions[n] for n in ready_nodes if n in observed.node_regions})

    placed = _placed(decision, live_pods, observed, generation)
    compliant = _residency(residency, live_pods, generation)
    shares = {CapacityType.SPOT: decision.spot, CapacityType.RESERVED: decision.reserved}
    detail = ", ".join(f"{ct} {ready_by_type[ct]}/{shares[ct]}" for ct in CapacityType)
    counts = f"{ready}/{desired} replicas ready ({detail})"
    if not decision.placed:
        ready_condition = _condition(
            READY, "False", decision.placed_reason, decision.reason, generation
        )
    elif compliant.status != "True":
        ready_condition = _condition(
            READY, "False", PODS_OUTSIDE_ALLOWED_REGIONS, compliant.message, generation
        )
    elif scaling is not None and desired == 0 and scaling.condition.status == "True":
        message = f"{scaling.condition.message}; the gateway wakes it on the next request"
        ready_condition = _condition(READY, "True", SCALED_TO_ZERO_REASON, message, generation)
    elif scaling is not None and ready == 0 and scaling.condition.reason == WAKING_REASON:
        message = f"{scaling.condition.message}; the gateway holds requests meanwhile"
        ready_condition = _condition(READY, "True", WAKING_REASON, message, generation)
    elif ready >= desired and placed.status == "True":
        ready_condition = _condition(READY, "True", REPLICAS_READY, counts, generation)
    elif scaling is not None and 0 < scaling.floor < desired and ready >= scaling.floor:
        message = f"{counts}; {desired - scaling.floor} more starting for load"
        ready_condition = _condition(READY, "True", REPLICAS_READY, message, generation)
    else:
        # Deployments count a replica ready until its pod is gone; the pods tell when one is not.
        message = counts if placed.status == "True" else f"{counts}; {placed.message}"
        ready_condition = _condition(READY, "False", REPLICAS_NOT_READY, message, generation)
    if cache is None:
        # No cache (or no longer one): a ModelCached left from when there was one says nothing.
        conditions = [c for c in conditions if c.type != MODEL_CACHED]
    for condition in (*_with_cache(ready_condition, cache, generation), placed, compliant):
        conditions = set_condition(conditions, condition, now)
    known: dict[str, Any] = {}
    if scaling is not None:
        conditions = set_condition(conditions, scaling.condition, now)
        times = {
            "last_request_time": scaling.last_request_time,
            "scaled_to_zero_time": scaling.scaled_to_zero_time,
            "last_cold_start_seconds": scaling.last_cold_start_seconds,
        }
        # Left unset, not null, while unknown: the merge patch keeps what status holds.
        known.update({key: value for key, value in times.items() if value is not None})
    known.update(_newest_start(live_pods))
    if levels is not None:
        conditions = set_condition(conditions, levels.within_budget, now)
        known["cost"] = levels.cost
        if levels.slo is not None and levels.slo_met is not None:
            conditions = set_condition(conditions, levels.slo_met, now)
            known["slo"] = levels.slo

    return InferenceEndpointStatus(
        observed_generation=generation,
        replicas=ReplicasStatus(
            desired=desired, ready=ready, spot=decision.spot, reserved=decision.reserved
        ),
        placement=PlacementStatus(
            regions=regions, nodes=ready_nodes, reason=decision.reason or None
        ),
        url=endpoint_url(ie),
        conditions=list(conditions),
        **known,
    )


def failed_status(
    kind: type[StatusT],
    *,
    reason: str,
    message: str,
    generation: int | None,
    conditions: Sequence[Condition],
    now: str,
) -> StatusT:
    """The status (of either kind) when the object cannot be reconciled (e.g. InvalidSpec).

    Only Ready and observedGeneration are set: the rest (replica counts, what the engine
    reported) still describes what runs, and the merge patch leaves it as it is.
    """
    condition = Condition(
        type=READY,
        status="False",
        reason=reason,
        message=message,
        observed_generation=generation,
    )
    updated = set_condition(conditions, condition, now)
    return kind.model_validate({"observedGeneration": generation, "conditions": updated})


def _with_cache(
    ready: Condition, cache: Condition | None, generation: int | None
) -> tuple[Condition, ...]:
    """Ready, and ModelCached when the endpoint has a cache. Nothing runs until the weights are
    on the volume: while they are not, that (not the replica counts) is why it is not Ready."""
    if cache is None:
        return (ready,)
    if cache.status != "True":
        ready = _condition(READY, "False", cache.reason, cache.message, generation)
    return (ready, cache)


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


def _placed(
    decision: Decision, live_pods: Sequence[Object], observed: Observed, generation: int | None
) -> Condition:
    if not decision.placed:
        return _condition(PLACED, "False", decision.placed_reason, decision.reason, generation)
    desired = decision.desired
    scheduled = [pod for pod in live_pods if node_name(pod)]
    if len(scheduled) >= desired:
        return _condition(
            PLACED,
            "True",
            "Placed",
            f"{len(scheduled)}/{desired} replicas scheduled: {decision.reason}",
            generation,
        )
    unschedulable = [msg for pod in live_pods if (msg := _unschedulable(pod)) is not None]
    if unschedulable:
        return _condition(
            PLACED,
            "False",
            "Unschedulable",
            f"{len(scheduled)}/{desired} replicas scheduled; {len(unschedulable)} cannot be: "
            f"{unschedulable[0]}",
            generation,
        )
    return _condition(
        PLACED, "False", "Scheduling", f"{len(scheduled)}/{desired} replicas scheduled", generation
    )


def _residency(
    report: ResidencyReport, live_pods: Sequence[Object], generation: int | None
) -> Condition:
    allowed = ", ".join(report.allowed_regions) or "none"
    if report.violation is not None:
        message = (
            f"{report.violation}; deleting them so their Deployments replace them in {allowed}"
        )
        return _condition(
            RESIDENCY_COMPLIANT, "False", PODS_OUTSIDE_ALLOWED_REGIONS, message, generation
        )
    running = sum(1 for pod in live_pods if node_name(pod))
    message = f"{running} scheduled replicas, all in allowed regions ({allowed})"
    if report.excluded_regions:
        message += (
            f"; requested {', '.join(report.excluded_regions)} not allowed by policy, never used"
        )
    return _condition(
        RESIDENCY_COMPLIANT, "True", ALL_REPLICAS_IN_ALLOWED_REGIONS, message, generation
    )


def _ready_replicas(
    deployments: Sequence[Object], pods: Sequence[Object], name: str, capacity_type: CapacityType
) -> int:
    """Ready replicas of the Deployment `name` that run its current pod template.

    Counting replicas of a previous template would report an endpoint Ready on the previous
    spec (e.g. still in the region it is moving out of). The Deployment's `TEMPLATE_HASH`, which
    its pods carry too, says which pods run the current template, at once, whereas the
    Deployment's own counts lag until its controller has observed the change. A Deployment
    without the hash (written by an older Tidal) is read from its status: old pods are then
    assumed ready, so mid-rollout this errs low, and it is exact once the rollout is done.
    """
    for deployment in deployments:
        metadata = deployment.get("metadata") or {}
        if metadata.get("name") != name:
            continue
        current = (metadata.get("annotations") or {}).get(TEMPLATE_HASH)
        if current is not None:
            return sum(
                1
                for pod in pods
                if _live(pod)
                and is_ready(pod)
                and _label(pod, LABEL_CAPACITY_TYPE) == capacity_type
                and ((pod.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH)
                == current
            )
        status = deployment.get("status") or {}
        generation = metadata.get("generation")
        observed = status.get("observedGeneration")
        if generation is not None and (observed is None or int(observed) < int(generation)):
            return 0  # the Deployment controller has not acted on the latest spec yet
        ready = int(status.get("readyReplicas") or 0)
        old = max(0, int(status.get("replicas") or 0) - int(status.get("updatedReplicas") or 0))
        return max(0, ready - old)
    return 0


def _label(obj: Object, key: str) -> str | None:
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(key)
    return str(value) if value is not None else None


def _newest_start(pods: Sequence[Object]) -> dict[str, float]:
    """`last_replica_start_seconds`: the start of the replica that became Ready last
    (`start_seconds`), to 0.1 s; the newest says most about what a replacement costs now (a
    warm node pool, a cached image). Empty while none is measured: status keeps the last."""
    started = [measured for measured in map(start_seconds, pods) if measured is not None]
    return {"last_replica_start_seconds": round(max(started)[1], 1)} if started else {}


def _live(pod: Object) -> bool:
    """Not being deleted and not finished: a pod that still counts as a replica."""
    return not is_deleting(pod) and not is_terminated(pod)


def _unschedulable(pod: Object) -> str | None:
    condition = pod_condition(pod, "PodScheduled")
    if (
        condition
        and condition.get("status") == "False"
        and condition.get("reason") == "Unschedulable"
    ):
        return str(condition.get("message") or "Unschedulable")
    return None


def status_changed(before: Object | None, status: Object) -> bool:
    """Whether merge-patching `status` onto `before` would change what the API server stores
    (a null field in the patch is an absent one, so it does not count as a change)."""
    return any(
        _without_nulls((before or {}).get(key)) != _without_nulls(value)
        for key, value in status.items()
    )


def _without_nulls(value: Any) -> Any:
    """`value` as the API server stores it after a merge patch: null fields are absent."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
