"""From what the InferenceEndpoint reconcile observed to what the planner and the builders take.

Owns the translations the handlers would otherwise inline, each a pure function so it can be
tested without Kopf or a cluster:
- the spot loss episode persisted in the endpoint's annotations (`SPOT_LOST_SINCE`,
  `SPOT_RECOVERED_SINCE`) and the previous decision read back from `status.replicas`;
- spot health: the endpoint's spot pods left unscheduled longer than the pending threshold;
- the endpoint's pods on lost nodes (gone from the fleet, or a NotReady spot node) that
  Kubernetes would leave in place for minutes;
- a `Placement` split into one `render.endpoint.Share` per Deployment (each gets the preferred
  and avoided nodes of its own capacity type only, so a spot node's telemetry never restarts
  the reserved replicas), and the hand-over between the two when replicas move (`handover`:
  make before break, so moving back to spot never leaves the endpoint without ready replicas);
- a fingerprint of a Node's placement-relevant fields, to tell changes that matter from the
  telemetry annotation ticking;
- the replicas that run now as `tidal.cost` prices them (`placed_replicas`: product, capacity
  type and region of each running pod's node, and the GPUs it holds), and whether an
  endpoint's service levels are due to be measured again (`measurement_due`).

Must not: do IO, read the clock or the environment, or know Kopf.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from tidal.api.conventions import DEFAULT_CONVENTIONS, Conventions
from tidal.api.endpoint import InferenceEndpointStatus
from tidal.api.labels import (
    GPU_RESOURCE,
    LABEL_CAPACITY_TYPE,
    LAST_REQUEST_TIME,
    RENDER_HASH,
    SPOT_LOST_SINCE,
    SPOT_RECOVERED_SINCE,
    UTILIZATION_HISTORY,
    WAKE_REQUESTED_AT,
    CapacityType,
)
from tidal.api.wire import (
    as_list,
    as_mapping,
    format_time,
    is_deleting,
    is_ready,
    is_terminated,
    node_name,
    parse_time,
    pod_condition,
    pod_phase,
)
from tidal.cost import PlacedReplica
from tidal.placement.fleet import interruption_noticed, pod_gpu_request
from tidal.placement.model import FleetSnapshot, Placement
from tidal.render.endpoint import Share, deployment_name

__all__ = [
    "SIGNAL_ANNOTATIONS",
    "STATE_ANNOTATIONS",
    "current_replicas",
    "differs",
    "episode",
    "episode_annotations",
    "first_ready",
    "first_ready_time",
    "gateway_admin_urls",
    "handover",
    "leaving_pods",
    "lost_node_pods",
    "measurement_due",
    "node_fingerprint",
    "own_pods",
    "pending_spot_pods",
    "placed_replicas",
    "previous_placement",
    "provision_failure",
    "serving_replicas",
    "shares",
    "unscheduled_spot_pods",
]

Object = Mapping[str, Any]

# Every annotation the controller keeps state in; Kopf's change detection ignores them. The spot
# loss episode (`Placement.spot_lost_since` / `spot_recovered_since`) is RFC 3339 UTC.
STATE_ANNOTATIONS: Final = (SPOT_LOST_SINCE, SPOT_RECOVERED_SINCE, UTILIZATION_HISTORY)

# The annotations the gateway writes for the operator (`tidal.api.signals`).
SIGNAL_ANNOTATIONS: Final = (WAKE_REQUESTED_AT, LAST_REQUEST_TIME)


def episode(annotations: Mapping[str, str] | None) -> tuple[datetime | None, datetime | None]:
    """(lost since, recovered since) as persisted; garbled values count as absent."""
    annotations = annotations or {}
    return parse_time(annotations.get(SPOT_LOST_SINCE)), parse_time(
        annotations.get(SPOT_RECOVERED_SINCE)
    )


def episode_annotations(
    placement: Placement, annotations: Mapping[str, str] | None
) -> dict[str, str | None]:
    """The annotation changes that persist `placement`'s episode (None removes one); empty when
    the stored values already say the same, so an unchanged episode is never rewritten."""
    annotations = annotations or {}
    wanted = {
        SPOT_LOST_SINCE: placement.spot_lost_since,
        SPOT_RECOVERED_SINCE: placement.spot_recovered_since,
    }
    changes: dict[str, str | None] = {}
    for key, moment in wanted.items():
        value = format_time(moment) if moment is not None else None
        if annotations.get(key) != value:
            changes[key] = value
    return changes


def previous_placement(status: InferenceEndpointStatus) -> Placement | None:
    """The decision the last reconcile wrote (`status.replicas`), as the planner reads it."""
    if "replicas" not in status.model_fields_set:
        return None
    replicas = status.replicas
    desired = replicas.desired or replicas.spot + replicas.reserved
    return Placement(
        desired=desired, spot=replicas.spot, reserved=replicas.reserved, allowed_regions=()
    )


def unscheduled_spot_pods(pods: Iterable[Object]) -> list[tuple[Object, datetime | None]]:
    """The endpoint's spot pods the scheduler could not bind (PodScheduled False), with since
    when (bound pods pulling images are no capacity problem)."""
    found: list[tuple[Object, datetime | None]] = []
    for pod in pods:
        labels = as_mapping(as_mapping(pod.get("metadata")).get("labels"))
        if labels.get(LABEL_CAPACITY_TYPE) != CapacityType.SPOT:
            continue
        if is_deleting(pod) or node_name(pod) or is_terminated(pod):
            continue
        condition = pod_condition(pod, "PodScheduled")
        if condition is None or condition.get("status") != "False":
            continue
        found.append((pod, parse_time(condition.get("lastTransitionTime"))))
    return found


def pending_spot_pods(
    pods: Iterable[Object],
    now: datetime,
    threshold_seconds: float,
    failed: Collection[str] = frozenset(),
) -> int:
    """The endpoint's unscheduled spot pods that count as spot loss: unscheduled for longer
    than `threshold_seconds`, or named in `failed` (a node autoscaler said it cannot provision
    a node for them)."""
    count = 0
    for pod, since in unscheduled_spot_pods(pods):
        name = as_mapping(pod.get("metadata")).get("name")
        late = since is not None and now - since > timedelta(seconds=threshold_seconds)
        if late or name in failed:
            count += 1
    return count


# What a node autoscaler says when it cannot bring a node for a pod: Karpenter's own
# FailedScheduling (the default scheduler's event of that reason only says no node fits *now*)
# and its InsufficientCapacityError (the cloud refused the launch).
_AUTOSCALER: Final = "karpenter"
_INSUFFICIENT_CAPACITY: Final = "InsufficientCapacityError"
_FAILED_SCHEDULING: Final = "FailedScheduling"


def provision_failure(events: Iterable[Object]) -> str | None:
    """The newest message of a node autoscaler saying it cannot provision for a pod, from the
    pod's Events; None when it has not said so."""
    newest: tuple[str, str] | None = None
    for event in events:
        reason = event.get("reason")
        source = as_mapping(event.get("source")).get("component") or event.get("reportingComponent")
        if not (
            reason == _INSUFFICIENT_CAPACITY
            or (reason == _FAILED_SCHEDULING and source == _AUTOSCALER)
        ):
            continue
        stamp = str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or as_mapping(event.get("metadata")).get("creationTimestamp")
            or ""
        )
        if newest is None or stamp >= newest[0]:
            newest = (stamp, f"{reason}: {event.get('message', '')}")
    return newest[1] if newest is not None else None


def lost_node_pods(pods: Iterable[Object], fleet: FleetSnapshot) -> list[tuple[Object, str]]:
    """The endpoint's live pods bound to a lost node, with why: the node is gone from the fleet,
    or it is a spot node that is not Ready.

    Kubernetes keeps such pods for minutes (the pod garbage collector's quarantine for a
    deleted node, the not-ready toleration for a NotReady one, 5 minutes by default), and their
    Deployment counts them meanwhile, so it creates no replacement. A NotReady reserved node is
    left to Kubernetes: it is usually a kubelet hiccup, while a spot node that stops reporting
    has almost always been reclaimed.
    """
    nodes = {node.name: node for node in fleet.nodes}
    lost: list[tuple[Object, str]] = []
    for pod in own_pods(pods):
        if not node_name(pod):
            continue
        node = nodes.get(node_name(pod))
        if node is None:
            lost.append((pod, "node gone"))
        elif not node.ready and node.capacity_type is CapacityType.SPOT:
            lost.append((pod, "spot node NotReady"))
    return lost


def leaving_pods(pods: Iterable[Object], fleet: FleetSnapshot) -> list[Object]:
    """The endpoint's live pods on nodes given an interruption notice
    (`placement.fleet.interruption_noticed`): they serve until their replacements are Ready."""
    noticed = {node.name for node in fleet.nodes if interruption_noticed(node)}
    return [pod for pod in own_pods(pods) if node_name(pod) in noticed]


def own_pods(pods: Iterable[Object]) -> list[Object]:
    """The pods that are replicas now: not being deleted and not finished."""
    return [pod for pod in pods if not is_deleting(pod) and not is_terminated(pod)]


def shares(
    placement: Placement, fleet: FleetSnapshot, conventions: Conventions = DEFAULT_CONVENTIONS
) -> dict[CapacityType, Share]:
    """One Share per Deployment: the placement's replicas, regions and memory floor, with the
    preferred and avoided nodes of that Deployment's capacity type, and the cluster's
    `conventions` (what the affinity's labels are)."""
    types = {node.name: node.capacity_type for node in fleet.nodes}
    result: dict[CapacityType, Share] = {}
    pairs = ((CapacityType.SPOT, placement.spot), (CapacityType.RESERVED, placement.reserved))
    for kind, replicas in pairs:
        result[kind] = Share(
            replicas=replicas,
            regions=tuple(placement.allowed_regions),
            preferred_nodes=tuple(
                (node, weight)
                for node, weight in placement.preferred_nodes
                if types.get(node) is kind
            ),
            avoided_nodes=tuple(n for n in placement.avoided_nodes if types.get(n) is kind),
            min_gpu_memory_mib=placement.min_gpu_memory_mib,
            conventions=conventions,
            spread_regions=placement.spread_spot and kind is CapacityType.SPOT,
        )
    return result


def handover(
    planned: Mapping[CapacityType, int],
    current: Mapping[CapacityType, int],
    ready: Mapping[CapacityType, int],
) -> dict[CapacityType, int]:
    """Replicas to ask each Deployment for while the plan moves replicas between them.

    `current`: what each Deployment is asked for now; `ready`: its replicas that serve now
    (`serving_replicas`). A Deployment the plan shrinks keeps, of its serving replicas, those
    the other one cannot serve yet (the plan's total minus the other's serving replicas), and
    shrinks step by step as they come up: make before break, so moving back to spot never
    leaves the endpoint without ready replicas. Replicas that do not serve (their spot node is
    gone) are not kept. The growing side gets its planned count at once. A plan that places
    nothing (total 0) takes effect at once: nothing may run where no region is allowed.
    """
    kinds = (CapacityType.SPOT, CapacityType.RESERVED)
    total = sum(planned.get(kind, 0) for kind in kinds)
    result: dict[CapacityType, int] = {}
    for kind, other in (kinds, kinds[::-1]):
        keep = min(current.get(kind, 0), ready.get(kind, 0), max(0, total - ready.get(other, 0)))
        result[kind] = max(planned.get(kind, 0), keep)
    return result


def current_replicas(deployments: Iterable[Object], endpoint: str) -> dict[CapacityType, int]:
    """What each of the endpoint's Deployments is asked for now (0 when it does not exist)."""
    listed = list(deployments)
    return {kind: _replicas_of(listed, deployment_name(endpoint, kind)) for kind in CapacityType}


def serving_replicas(pods: Iterable[Object], fleet: FleetSnapshot) -> dict[CapacityType, int]:
    """The endpoint's live, Ready pods per capacity type, on nodes that exist and are Ready.

    From the pods rather than the Deployments' counts, which still include a pod on a node
    that has just vanished.
    """
    ready_nodes = {node.name for node in fleet.nodes if node.ready}
    counts = dict.fromkeys(CapacityType, 0)
    for pod in own_pods(pods):
        kind = as_mapping(as_mapping(pod.get("metadata")).get("labels")).get(LABEL_CAPACITY_TYPE)
        if kind not in counts or node_name(pod) not in ready_nodes:
            continue
        if is_ready(pod):
            counts[CapacityType(kind)] += 1
    return counts


def node_fingerprint(node: Object) -> tuple[Any, ...]:
    """What about a Node can change a placement: labels, taints, cordon, readiness and GPUs.

    Annotations are left out on purpose: the agent rewrites the telemetry annotation every few
    seconds, and a node growing hot is picked up by the next reconcile tick, not a replan storm.
    """
    metadata = as_mapping(node.get("metadata"))
    spec = as_mapping(node.get("spec"))
    status = as_mapping(node.get("status"))
    labels = tuple(sorted((str(k), str(v)) for k, v in as_mapping(metadata.get("labels")).items()))
    taints = tuple(
        sorted(
            (str(t.get("key")), str(t.get("value") or ""), str(t.get("effect") or ""))
            for t in map(as_mapping, as_list(spec.get("taints")))
        )
    )
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in map(as_mapping, as_list(status.get("conditions")))
    )
    gpus = str(as_mapping(status.get("allocatable")).get(GPU_RESOURCE, ""))
    return labels, taints, bool(spec.get("unschedulable")), ready, gpus


def placed_replicas(pods: Iterable[Object], fleet: FleetSnapshot) -> list[PlacedReplica]:
    """The endpoint's Running pods as priced: the product, capacity type and region of the node
    each is bound to, and the GPUs it holds there.

    Running only: a pending pod costs nothing yet and a terminating one is being replaced. A pod
    on a node the fleet no longer lists is left out (its node is gone, and so is its bill).
    """
    nodes = {node.name: node for node in fleet.nodes}
    placed: list[PlacedReplica] = []
    for pod in own_pods(pods):
        if pod_phase(pod) != "Running":
            continue
        node = nodes.get(node_name(pod))
        if node is None:
            continue
        placed.append(
            PlacedReplica(
                product=node.gpu_product,
                capacity_type=node.capacity_type.value,
                region=node.region,
                gpu_count=pod_gpu_request(pod),
            )
        )
    return placed


def first_ready_time(pods: Iterable[Object]) -> datetime | None:
    """The earliest Ready transition among the live, Ready pods: when the first replica that
    serves now became ready (a cold start ends there, not when the operator next looks)."""
    return first_ready(pods)[0]


def first_ready(pods: Iterable[Object]) -> tuple[datetime | None, datetime | None]:
    """The Ready transition of the first live, Ready pod (as `first_ready_time`), and when that
    pod was bound to its node (its PodScheduled transition), each None when unknown."""
    found: list[tuple[datetime, datetime | None]] = []
    for pod in own_pods(pods):
        condition = pod_condition(pod, "Ready")
        if condition is not None and condition.get("status") == "True":
            moment = parse_time(condition.get("lastTransitionTime"))
            if moment is not None:
                bound = pod_condition(pod, "PodScheduled") or {}
                found.append((moment, parse_time(bound.get("lastTransitionTime"))))
    if not found:
        return None, None
    ready, scheduled = min(found, key=lambda pair: pair[0])
    return ready, scheduled


def gateway_admin_urls(pods: Iterable[Object], port: int) -> tuple[str, ...]:
    """The admin base URL of every live, Ready gateway pod with an IP, sorted."""
    urls = []
    for pod in own_pods(pods):
        ip = as_mapping(pod.get("status")).get("podIP")
        if is_ready(pod) and ip:
            host = f"[{ip}]" if ":" in str(ip) else str(ip)
            urls.append(f"http://{host}:{port}")
    return tuple(sorted(urls))


def measurement_due(last: datetime | None, now: datetime, interval_seconds: float) -> bool:
    """Whether an endpoint measured (or tried) at `last` should be measured again at `now`."""
    return last is None or (now - last).total_seconds() >= interval_seconds


def _replicas_of(deployments: Iterable[Object], name: str) -> int:
    for deployment in deployments:
        if as_mapping(deployment.get("metadata")).get("name") == name:
            try:
                return max(0, int(as_mapping(deployment.get("spec")).get("replicas") or 0))
            except (TypeError, ValueError):
                return 0
    return 0


def differs(child: Mapping[str, Any], existing: Mapping[tuple[Any, str], Object]) -> bool:
    """Whether applying `child` could change anything: it is missing, carries another stamp, or
    runs another replica count (`kubectl scale` leaves the stamp alone). Other hand edits are
    repaired by the periodic forced apply (`TIDAL_DRIFT_INTERVAL_SECONDS`)."""
    live = existing.get((child.get("kind"), str((child.get("metadata") or {}).get("name", ""))))
    if live is None:
        return True
    stamped = ((live.get("metadata") or {}).get("annotations") or {}).get(RENDER_HASH)
    if stamped != ((child.get("metadata") or {}).get("annotations") or {}).get(RENDER_HASH):
        return True
    wanted = (child.get("spec") or {}).get("replicas")
    return wanted is not None and wanted != (live.get("spec") or {}).get("replicas")
