"""The fleet as the planner sees it: Node and Pod objects (wire dicts, as the API server returns
them) -> a `FleetSnapshot` of `NodeInfo`.

Owns: the cluster conventions of DESIGN.md "Cluster conventions the operator reads" — which
labels mark a node spot, where its region, zone and GPU shape come from, how many GPUs its pods
hold, which taints a spot or a reserved replica tolerates — and nothing else.

Must not: decide anything (that is `placement.planner`), read the clock (`now` is a parameter),
or talk to the API server (the controller lists or indexes the objects and passes them in).

The conventions here must agree with the Deployments `tidal.render.inference` builds: a node this
module calls spot must be one the spot Deployment's required affinity selects, and a taint this
module calls tolerated must be one the replicas' tolerations tolerate. Otherwise the planner
counts capacity the scheduler will never use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from tidal.api import telemetry
from tidal.placement.model import CapacityType, EndpointPods, FleetSnapshot, NodeInfo, Taint

__all__ = [
    "GPU_RESOURCE",
    "GPU_TAINT_KEY",
    "SPOT_MARKERS",
    "blocking_taints",
    "capacity_type",
    "endpoint_pods",
    "gpu_requests_by_node",
    "is_gpu_taint",
    "is_spot_taint",
    "node_info",
    "pod_gpu_request",
    "snapshot",
]

LABEL_REGION: Final = "topology.kubernetes.io/region"
LABEL_ZONE: Final = "topology.kubernetes.io/zone"
LABEL_GPU_PRODUCT: Final = "nvidia.com/gpu.product"
LABEL_GPU_MEMORY_MIB: Final = "nvidia.com/gpu.memory"
GPU_RESOURCE: Final = "nvidia.com/gpu"
# The NVIDIA device plugin / GPU operator taints GPU nodes with this key so CPU pods stay off;
# every replica tolerates it (any value) with effect NoSchedule.
GPU_TAINT_KEY: Final = "nvidia.com/gpu"

# Every label (key, value) that marks a node spot. Each cloud that taints its spot nodes uses the
# same key=value as the taint (AKS always; GKE, Karpenter and EKS when the admin asks), so the same
# pairs are the NoSchedule taints spot replicas tolerate. GKE's older preemptible VMs are spot in
# all but name. Values compare exactly, as the scheduler compares them.
SPOT_MARKERS: Final[tuple[tuple[str, str], ...]] = (
    ("tidal.dev/capacity-type", "spot"),
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("cloud.google.com/gke-spot", "true"),
    ("cloud.google.com/gke-preemptible", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
)
_SPOT_MARKER_SET: Final = frozenset(SPOT_MARKERS)

_BLOCKING_EFFECTS: Final = frozenset({"NoSchedule", "NoExecute"})
# Pods in these phases have released their devices; the kubelet and the scheduler no longer
# count them against the node.
_TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})

_WHOLE = re.compile(r"^[0-9]+$")
_SUFFIXES: Final[dict[str, Decimal]] = {
    "m": Decimal("0.001"),
    "k": Decimal(1000),
    "M": Decimal(1000) ** 2,
    "G": Decimal(1000) ** 3,
    "Ki": Decimal(1024),
    "Mi": Decimal(1024) ** 2,
    "Gi": Decimal(1024) ** 3,
}


def capacity_type(labels: Mapping[str, str]) -> CapacityType:
    """Spot when any convention marks the node spot; reserved otherwise (no marker = reserved).

    Conflicting markers (say `tidal.dev/capacity-type: reserved` beside `karpenter.sh/capacity-type:
    spot`) resolve to spot: the cloud can reclaim the node whatever a label claims, and a
    reserved baseline on reclaimable capacity is exactly the failure `minReservedReplicas`
    exists to prevent. Calling a reserved node spot only costs some cheap capacity.
    """
    if any(labels.get(key) == value for key, value in SPOT_MARKERS):
        return CapacityType.SPOT
    return CapacityType.RESERVED


def is_spot_taint(taint: Taint) -> bool:
    """A cloud's (or Tidal's) spot taint, which spot replicas tolerate and reserved ones do not."""
    return taint.effect == "NoSchedule" and (taint.key, taint.value) in _SPOT_MARKER_SET


def is_gpu_taint(taint: Taint) -> bool:
    """The GPU nodes' taint, which every replica tolerates."""
    return taint.effect == "NoSchedule" and taint.key == GPU_TAINT_KEY


def blocking_taints(node: NodeInfo, capacity: CapacityType) -> tuple[Taint, ...]:
    """The node's NoSchedule/NoExecute taints a replica of `capacity` does not tolerate.

    Any of them makes the node unusable to that replica: a cordon (`node.kubernetes.io/
    unschedulable`), a not-ready or unreachable node, a spot interruption notice
    (`aws-node-termination-handler/spot-itn`, `karpenter.sh/disrupted`), or a spot taint on a
    node a reserved replica would use. PreferNoSchedule never blocks.
    """
    return tuple(
        taint
        for taint in node.taints
        if taint.effect in _BLOCKING_EFFECTS
        and not is_gpu_taint(taint)
        and not (capacity is CapacityType.SPOT and is_spot_taint(taint))
    )


def node_info(node: Mapping[str, Any], gpu_requested: int, now: datetime) -> NodeInfo:
    """One Node object as the planner sees it.

    `gpu_requested` is what `gpu_requests_by_node` counted for this node. Telemetry older than
    `tidal.api.telemetry.STALE_AFTER_SECONDS` at `now`, garbled, or of an unknown version is
    None (unknown); the planner judges staleness again at its own `now`.
    """
    metadata = _mapping(node.get("metadata"))
    spec = _mapping(node.get("spec"))
    status = _mapping(node.get("status"))
    labels = {str(k): str(v) for k, v in _mapping(metadata.get("labels")).items()}
    annotations = _mapping(metadata.get("annotations"))
    raw_telemetry = annotations.get(telemetry.ANNOTATION)
    return NodeInfo(
        name=str(metadata.get("name", "")),
        region=labels.get(LABEL_REGION) or None,
        zone=labels.get(LABEL_ZONE) or None,
        capacity_type=capacity_type(labels),
        labels=labels,
        gpu_product=labels.get(LABEL_GPU_PRODUCT) or None,
        gpu_memory_mib=_optional_int(labels.get(LABEL_GPU_MEMORY_MIB)),
        gpu_allocatable=_count(_mapping(status.get("allocatable")).get(GPU_RESOURCE)),
        gpu_requested=max(0, gpu_requested),
        taints=_taints(spec.get("taints")),
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
    spec = _mapping(pod.get("spec"))
    app = sum(_container_gpus(c) for c in _sequence(spec.get("containers")))
    sidecars = 0
    init_peak = 0
    for container in _sequence(spec.get("initContainers")):
        gpus = _container_gpus(container)
        if _mapping(container).get("restartPolicy") == "Always":
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
        node_name = _mapping(pod.get("spec")).get("nodeName")
        if not node_name or _mapping(pod.get("status")).get("phase") in _TERMINAL_PHASES:
            continue
        gpus = pod_gpu_request(pod)
        if gpus:
            requests[str(node_name)] = requests.get(str(node_name), 0) + gpus
    return dict(sorted(requests.items()))


def endpoint_pods(pods: Iterable[Mapping[str, Any]]) -> EndpointPods:
    """The planner's view of one endpoint's own pods (the caller selects them by label)."""
    materialized = list(pods)
    keys = frozenset(
        (str(meta.get("namespace", "")), str(meta.get("name", "")))
        for meta in (_mapping(p.get("metadata")) for p in materialized)
        if meta.get("name")
    )
    return EndpointPods(gpus_by_node=gpu_requests_by_node(materialized), keys=keys)


def snapshot(
    nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]], now: datetime
) -> FleetSnapshot:
    """Every Node with the GPUs its pods request, sorted by name so equal clusters compare equal."""
    requests = gpu_requests_by_node(pods)
    infos = []
    for node in nodes:
        name = str(_mapping(node.get("metadata")).get("name", ""))
        infos.append(node_info(node, requests.get(name, 0), now))
    return FleetSnapshot(nodes=tuple(sorted(infos, key=lambda n: n.name)), observed_at=now)


def _container_gpus(container: object) -> int:
    resources = _mapping(_mapping(container).get("resources"))
    requests = _mapping(resources.get("requests"))
    if GPU_RESOURCE in requests:
        return _count(requests[GPU_RESOURCE])
    return _count(_mapping(resources.get("limits")).get(GPU_RESOURCE))


def _taints(raw: object) -> tuple[Taint, ...]:
    taints = []
    for item in _sequence(raw):
        taint = _mapping(item)
        if taint.get("key"):
            taints.append(
                Taint(
                    key=str(taint["key"]),
                    value=str(taint.get("value") or ""),
                    effect=str(taint.get("effect") or ""),
                )
            )
    return tuple(taints)


def _ready(conditions: object) -> bool:
    # No Ready condition means the kubelet never reported: not a node to place on.
    return any(
        _mapping(c).get("type") == "Ready" and _mapping(c).get("status") == "True"
        for c in _sequence(conditions)
    )


def _count(value: object) -> int:
    """A whole-number quantity (extended resources are integers); malformed counts as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if not isinstance(value, str):
        return 0
    text = value.strip()
    if _WHOLE.match(text):
        return int(text)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            number, factor = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, factor = text, Decimal(1)
    try:
        amount = Decimal(number) * factor
    except InvalidOperation:
        return 0
    return max(0, int(amount)) if amount.is_finite() else 0


def _optional_int(value: str | None) -> int | None:
    if value is None or not _WHOLE.match(value.strip()):
        return None
    return int(value.strip())


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []
