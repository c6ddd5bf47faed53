"""The fleet as the planner sees it: Node and Pod objects (wire dicts, as the API server returns
them) -> a `FleetSnapshot` of `NodeInfo`.

Owns: the cluster conventions of DESIGN.md "Cluster conventions the operator reads" — which
labels mark a node spot, where its region, zone and GPU shape come from, how many GPUs its pods
hold, which taints a spot or a reserved replica tolerates (Tidal's own tolerations and those an
endpoint's `spec.podTemplate` adds), which nodes that override's node requirements admit — and
nothing else. The keys and the spot markers themselves are `tidal.api.labels`', shared with
`tidal.render.endpoint`.

Must not: decide anything (that is `placement.planner`), read the clock (`now` is a parameter),
or talk to the API server (the controller lists or indexes the objects and passes them in).

The conventions here must agree with the Deployments `tidal.render.endpoint` builds: a node this
module calls spot must be one the spot Deployment's required affinity selects, and a taint this
module calls tolerated must be one the replicas' tolerations tolerate, and a node it says an
override admits must be one the merged affinity admits (`tidal.render.podtemplate`). Otherwise
the planner counts capacity the scheduler will never use, or misses capacity it would use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from tidal.api import telemetry
from tidal.api.conventions import DEFAULT_CONVENTIONS, Conventions
from tidal.api.labels import (
    AWS_SPOT_INTERRUPTION_TAINT,
    GKE_IMPENDING_TERMINATION_TAINT,
    GPU_RESOURCE,
    GPU_TELEMETRY,
    KARPENTER_DISRUPTED_TAINT,
    CapacityType,
)
from tidal.api.podtemplate import (
    NodeSelectorOperator,
    NodeSelectorRequirement,
    PodSpecOverrides,
    Toleration,
    TolerationOperator,
)
from tidal.api.wire import as_list, as_mapping, is_terminated, node_name, quantity_int
from tidal.placement.model import EndpointPods, FleetSnapshot, NodeInfo, Taint

__all__ = [
    "blocking_taints",
    "capacity_type",
    "endpoint_pods",
    "gpu_requests_by_node",
    "interruption_noticed",
    "is_gpu_taint",
    "is_spot_taint",
    "node_info",
    "pod_gpu_request",
    "read_taint",
    "selects",
    "snapshot",
    "spot_reclaimed",
    "tolerates",
    "untolerated",
]

_BLOCKING_EFFECTS: Final = frozenset({"NoSchedule", "NoExecute"})

_WHOLE = re.compile(r"^[0-9]+$")


def capacity_type(
    labels: Mapping[str, str], conventions: Conventions = DEFAULT_CONVENTIONS
) -> CapacityType:
    """Spot when any convention marks the node spot; reserved otherwise (no marker = reserved).

    Conflicting markers (say `tidal.dev/capacity-type: reserved` beside `karpenter.sh/capacity-type:
    spot`) resolve to spot: the cloud can reclaim the node whatever a label claims, and a
    reserved baseline on reclaimable capacity is exactly the failure `minReservedReplicas`
    exists to prevent. Calling a reserved node spot only costs some cheap capacity.
    """
    return conventions.capacity_type(labels)


def is_spot_taint(taint: Taint) -> bool:
    """A cloud's (or Tidal's) spot taint, which spot replicas tolerate and reserved ones do not."""
    marked = taint.marks_spot
    if marked is None:
        marked = DEFAULT_CONVENTIONS.marks_spot(taint.key, taint.value)
    return taint.effect == "NoSchedule" and marked


def is_gpu_taint(taint: Taint) -> bool:
    """The GPU nodes' taint, which every replica tolerates."""
    # The NVIDIA device plugin / GPU operator taints GPU nodes with the resource's name.
    return taint.effect == "NoSchedule" and taint.key == GPU_RESOURCE


def blocking_taints(
    node: NodeInfo, capacity: CapacityType, tolerations: Iterable[Toleration] = ()
) -> tuple[Taint, ...]:
    """The node's NoSchedule/NoExecute taints a replica of `capacity` does not tolerate.

    Any of them makes the node unusable to that replica: a cordon (`node.kubernetes.io/
    unschedulable`), a not-ready or unreachable node, a spot interruption notice
    (`aws-node-termination-handler/spot-itn`, `karpenter.sh/disrupted`), or a spot taint on a
    node a reserved replica would use. PreferNoSchedule never blocks. `tolerations`: those the
    endpoint's `spec.podTemplate` adds to every replica (AKS's `sku=gpu:NoSchedule`, say).
    """
    return untolerated(node.taints, capacity, tolerations)


# Taints that announce a node is about to go: Karpenter disrupting it (consolidation, drift,
# a spot interruption it received), a termination handler's spot notice.
_NOTICE_TAINTS: Final = frozenset(
    {KARPENTER_DISRUPTED_TAINT, AWS_SPOT_INTERRUPTION_TAINT, GKE_IMPENDING_TERMINATION_TAINT}
)


def interruption_noticed(node: NodeInfo) -> bool:
    """Whether a Ready node has been given notice: tainted by an interruption or disruption
    handler, or cordoned (a drain follows). Its replicas still serve, and should be replaced
    before they stop: make before break."""
    return node.ready and (
        node.unschedulable or any(taint.key in _NOTICE_TAINTS for taint in node.taints)
    )


def spot_reclaimed(node: NodeInfo) -> bool:
    """Whether a spot node is being reclaimed, as Auto's interruption budget counts it
    (`runtime.reclaims`): tainted by an interruption or disruption notice, or not Ready (a
    spot node that stops reporting has almost always been taken). Karpenter's disruption taint
    also marks consolidation: counting it errs towards reserved, the budget's safe side."""
    if node.capacity_type is not CapacityType.SPOT:
        return False
    return not node.ready or any(taint.key in _NOTICE_TAINTS for taint in node.taints)


def untolerated(
    taints: Iterable[Taint], capacity: CapacityType, tolerations: Iterable[Toleration] = ()
) -> tuple[Taint, ...]:
    """Of `taints`, the NoSchedule/NoExecute ones a replica of `capacity` does not tolerate:
    neither Tidal's own tolerations (the GPU taint; spot taints on spot replicas) nor the
    endpoint's extra `tolerations` cover them."""
    extra = tuple(tolerations)
    return tuple(
        taint
        for taint in taints
        if taint.effect in _BLOCKING_EFFECTS
        and not is_gpu_taint(taint)
        and not (capacity is CapacityType.SPOT and is_spot_taint(taint))
        and not any(tolerates(t, taint) for t in extra)
    )


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """Whether `toleration` tolerates `taint`, as the scheduler judges it: the effect matches
    (empty: any), the key matches (empty, with Exists: any), and with Equal (the default) the
    value too."""
    if toleration.effect is not None and toleration.effect.value != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.effective_operator is TolerationOperator.Exists:
        return True
    return (toleration.value or "") == taint.value


def selects(overrides: PodSpecOverrides | None, labels: Mapping[str, str]) -> bool:
    """Whether a node with `labels` satisfies the node requirements an endpoint's
    `spec.podTemplate` adds to its replicas (its nodeSelector, and one of its required node
    affinity terms), as the scheduler judges them; True when it adds none. Tidal's own
    requirements (capacity type, region, GPU) are judged elsewhere: the override may not name
    those labels."""
    if overrides is None:
        return True
    if any(labels.get(key) != value for key, value in overrides.node_selector.items()):
        return False
    affinity = overrides.affinity.node_affinity if overrides.affinity else None
    required = affinity.required_during_scheduling_ignored_during_execution if affinity else None
    if required is None:
        return True
    return any(
        all(_holds(e, labels) for e in term.match_expressions)
        for term in required.node_selector_terms
    )


def _holds(requirement: NodeSelectorRequirement, labels: Mapping[str, str]) -> bool:
    value = labels.get(requirement.key)
    op = requirement.operator
    if op is NodeSelectorOperator.In:
        return value is not None and value in requirement.values
    if op is NodeSelectorOperator.NotIn:
        return value is None or value not in requirement.values
    if op is NodeSelectorOperator.Exists:
        return value is not None
    if op is NodeSelectorOperator.DoesNotExist:
        return value is None
    # Gt / Lt: both sides integers, else the node does not match (as the scheduler decides).
    if value is None or not re.fullmatch(r"-?[0-9]+", value):
        return False
    bound = int(requirement.values[0])
    return int(value) > bound if op is NodeSelectorOperator.Gt else int(value) < bound


def node_info(
    node: Mapping[str, Any],
    gpu_requested: int,
    now: datetime,
    conventions: Conventions = DEFAULT_CONVENTIONS,
) -> NodeInfo:
    """One Node object as the planner sees it, read by the cluster's `conventions`.

    `gpu_requested` is what `gpu_requests_by_node` counted for this node. Telemetry older than
    `tidal.api.telemetry.STALE_AFTER_SECONDS` at `now`, garbled, or of an unknown version is
    None (unknown); the planner judges staleness again at its own `now`.
    """
    metadata = as_mapping(node.get("metadata"))
    spec = as_mapping(node.get("spec"))
    status = as_mapping(node.get("status"))
    labels = {str(k): str(v) for k, v in as_mapping(metadata.get("labels")).items()}
    # GFD's labels, else those the cloud's autoscaler puts on a node before it exists.
    product, memory = conventions.gpu_of(labels)
    annotations = as_mapping(metadata.get("annotations"))
    raw_telemetry = annotations.get(GPU_TELEMETRY)
    return NodeInfo(
        name=str(metadata.get("name", "")),
        region=labels.get(conventions.region_label) or None,
        zone=labels.get(conventions.zone_label) or None,
        capacity_type=conventions.capacity_type(labels),
        labels=labels,
        gpu_product=product,
        gpu_memory_mib=memory,
        gpu_allocatable=quantity_int(as_mapping(status.get("allocatable")).get(GPU_RESOURCE)),
        gpu_requested=max(0, gpu_requested),
        taints=_taints(spec.get("taints"), conventions),
        ready=_ready(status.get("conditions")),
        unschedulable=bool(spec.get("unschedulable", False)),
        telemetry=telemetry.parse(raw_telemetry if isinstance(raw_telemetry, str) else None, now),
    )


def pod_gpu_request(pod: Mapping[str, Any]) -> int:
    """nvidia.com/gpu the pod holds on its node, computed as the scheduler does.

    A container's request for an extended resource defaults to its limit. The pod needs the sum
    over its containers and restartable init containers (sidecars, which run alongside), or the
    largest single ordinary init container plus the sidecars started before it, if that is more.
    """
    spec = as_mapping(pod.get("spec"))
    app = sum(_container_gpus(c) for c in as_list(spec.get("containers")))
    sidecars = 0
    init_peak = 0
    for container in as_list(spec.get("initContainers")):
        gpus = _container_gpus(container)
        if as_mapping(container).get("restartPolicy") == "Always":
            sidecars += gpus
        else:
            init_peak = max(init_peak, sidecars + gpus)
    return max(app + sidecars, init_peak)


def gpu_requests_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """nvidia.com/gpu requested per node by pods bound there that have not terminated.

    Pods being deleted (deletionTimestamp set) still count: their containers keep the devices
    until the kubelet has stopped them, and the scheduler keeps counting them until the object
    is gone, so planning on those GPUs would leave replicas Pending. Succeeded and Failed pods
    have released theirs. Unbound (Pending, unscheduled) pods hold nothing yet.
    """
    requests: dict[str, int] = {}
    for pod in pods:
        node = node_name(pod)
        if not node or is_terminated(pod):
            continue
        gpus = pod_gpu_request(pod)
        if gpus:
            requests[node] = requests.get(node, 0) + gpus
    return dict(sorted(requests.items()))


def endpoint_pods(pods: Iterable[Mapping[str, Any]]) -> EndpointPods:
    """The planner's view of one endpoint's own pods (the caller selects them by label)."""
    materialized = list(pods)
    keys = frozenset(
        (str(meta.get("namespace", "")), str(meta.get("name", "")))
        for meta in (as_mapping(p.get("metadata")) for p in materialized)
        if meta.get("name")
    )
    return EndpointPods(gpus_by_node=gpu_requests_by_node(materialized), keys=keys)


def snapshot(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    now: datetime,
    conventions: Conventions = DEFAULT_CONVENTIONS,
) -> FleetSnapshot:
    """Every Node with the GPUs its pods request, sorted by name so equal clusters compare equal."""
    requests = gpu_requests_by_node(pods)
    infos = []
    for node in nodes:
        name = str(as_mapping(node.get("metadata")).get("name", ""))
        infos.append(node_info(node, requests.get(name, 0), now, conventions))
    return FleetSnapshot(nodes=tuple(sorted(infos, key=lambda n: n.name)), observed_at=now)


def _container_gpus(container: object) -> int:
    resources = as_mapping(as_mapping(container).get("resources"))
    requests = as_mapping(resources.get("requests"))
    if GPU_RESOURCE in requests:
        return quantity_int(requests[GPU_RESOURCE])
    return quantity_int(as_mapping(resources.get("limits")).get(GPU_RESOURCE))


def read_taint(conventions: Conventions, key: str, value: str, effect: str) -> Taint:
    """A taint, marked spot where the cluster's conventions say its key=value marks spot."""
    return Taint(key, value, effect, marks_spot=conventions.marks_spot(key, value))


def _taints(raw: object, conventions: Conventions) -> tuple[Taint, ...]:
    taints = []
    for item in as_list(raw):
        taint = as_mapping(item)
        if taint.get("key"):
            taints.append(
                read_taint(
                    conventions,
                    str(taint["key"]),
                    str(taint.get("value") or ""),
                    str(taint.get("effect") or ""),
                )
            )
    return tuple(taints)


def _ready(conditions: object) -> bool:
    # No Ready condition means the kubelet never reported: not a node to place on.
    return any(
        as_mapping(c).get("type") == "Ready" and as_mapping(c).get("status") == "True"
        for c in as_list(conditions)
    )
