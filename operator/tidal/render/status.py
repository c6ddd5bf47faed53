"""The InferenceEndpoint status Tidal writes, computed from what the reconcile observed.

Pure: the controller lists the children (Deployments, their Pods, the Nodes they run on), hands
them here as an `Observed` snapshot together with the placement decision and `now`, and patches
the returned dict into `.status` as is. Conditions are upserted into the list the object already
has, so conditions owned by other decisions (SLOMet, WithinBudget, ...) survive. No IO, no clock,
no Kopf, no kubernetes client.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tidal.api.common import PLACED, READY, Condition, PlacementStatus, set_condition
from tidal.api.inference import InferenceEndpoint, ReplicasStatus
from tidal.render.inference import CapacityType, deployment_name, endpoint_url

__all__ = [
    "INVALID_SPEC",
    "Observed",
    "failed_status",
    "format_time",
    "parse_conditions",
    "scheduled_nodes",
    "summarize",
]

INVALID_SPEC = "InvalidSpec"

Object = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Observed:
    """An endpoint's children as the API server returned them (wire-form dicts)."""

    deployments: Sequence[Object] = ()
    pods: Sequence[Object] = ()
    # Node name -> its topology.kubernetes.io/region; nodes gone or unlabelled are absent.
    node_regions: Mapping[str, str] = dataclasses.field(default_factory=dict)


def format_time(moment: datetime) -> str:
    """RFC3339 in UTC with second precision, as Kubernetes writes condition times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_conditions(status: Object | None) -> list[Condition]:
    """The conditions already on the object; entries that no longer parse are dropped."""
    raw = (status or {}).get("conditions") or []
    conditions: list[Condition] = []
    for entry in raw if isinstance(raw, list) else []:
        try:
            conditions.append(Condition.model_validate(entry))
        except ValidationError:
            continue
    return conditions


def scheduled_nodes(pods: Iterable[Object]) -> list[str]:
    """Names of the nodes the live pods are bound to (the nodes worth reading)."""
    return sorted({_node(pod) for pod in pods if _live(pod) and _node(pod)})


def summarize(
    ie: InferenceEndpoint,
    *,
    desired: int,
    spot: int,
    reserved: int,
    reason: str,
    observed: Observed,
    generation: int | None,
    conditions: Sequence[Condition],
    now: str,
) -> dict[str, Any]:
    """The status patch for an endpoint whose children were just applied and observed.

    `spot`/`reserved` are the decided shares (what the Deployments are asked to run); `ready` is
    observed: replicas on the current pod template that pass their readiness probes.
    """
    name = ie.metadata["name"]
    ready_by_type = {
        capacity_type: _ready_replicas(observed.deployments, deployment_name(name, capacity_type))
        for capacity_type in ("spot", "reserved")
    }
    ready = sum(ready_by_type.values())
    live_pods = [pod for pod in observed.pods if _live(pod)]
    ready_nodes = sorted({_node(pod) for pod in live_pods if _node(pod) and _pod_ready(pod)})
    regions = sorted({observed.node_regions[n] for n in ready_nodes if n in observed.node_regions})

    shares: dict[CapacityType, int] = {"spot": spot, "reserved": reserved}
    detail = ", ".join(f"{ct} {ready_by_type[ct]}/{shares[ct]}" for ct in ("spot", "reserved"))
    ready_condition = Condition(
        type=READY,
        status="True" if ready >= desired else "False",
        reason="ReplicasReady" if ready >= desired else "ReplicasNotReady",
        message=f"{ready}/{desired} replicas ready ({detail})",
        observed_generation=generation,
    )
    conditions = set_condition(conditions, ready_condition, now)
    conditions = set_condition(conditions, _placed(live_pods, desired, observed, generation), now)

    return {
        "observedGeneration": generation,
        "replicas": ReplicasStatus(
            desired=desired, ready=ready, spot=spot, reserved=reserved
        ).to_wire(),
        "placement": PlacementStatus(regions=regions, nodes=ready_nodes, reason=reason).to_wire(),
        "url": endpoint_url(ie),
        "conditions": [condition.to_wire() for condition in conditions],
    }


def failed_status(
    *,
    reason: str,
    message: str,
    generation: int | None,
    conditions: Sequence[Condition],
    now: str,
) -> dict[str, Any]:
    """The status patch when the endpoint cannot be reconciled (e.g. reason InvalidSpec).

    Only Ready and observedGeneration change: the replica counts still describe what runs.
    """
    condition = Condition(
        type=READY,
        status="False",
        reason=reason,
        message=message,
        observed_generation=generation,
    )
    updated = set_condition(conditions, condition, now)
    return {
        "observedGeneration": generation,
        "conditions": [c.to_wire() for c in updated],
    }


def _placed(
    live_pods: Sequence[Object], desired: int, observed: Observed, generation: int | None
) -> Condition:
    scheduled = [pod for pod in live_pods if _node(pod)]
    if len(scheduled) >= desired:
        regions = sorted(
            {
                observed.node_regions[_node(p)]
                for p in scheduled
                if _node(p) in observed.node_regions
            }
        )
        where = f" in {', '.join(regions)}" if regions else ""
        return Condition(
            type=PLACED,
            status="True",
            reason="Scheduled",
            message=f"{len(scheduled)}/{desired} replicas scheduled{where}",
            observed_generation=generation,
        )
    unschedulable = [msg for pod in live_pods if (msg := _unschedulable(pod)) is not None]
    if unschedulable:
        return Condition(
            type=PLACED,
            status="False",
            reason="Unschedulable",
            message=(
                f"{len(scheduled)}/{desired} replicas scheduled; {len(unschedulable)} cannot be: "
                f"{unschedulable[0]}"
            ),
            observed_generation=generation,
        )
    return Condition(
        type=PLACED,
        status="False",
        reason="Scheduling",
        message=f"{len(scheduled)}/{desired} replicas scheduled",
        observed_generation=generation,
    )


def _ready_replicas(deployments: Sequence[Object], name: str) -> int:
    """Ready replicas of the Deployment `name` that run its current pod template.

    During a rollout `readyReplicas` still counts the old pods; counting them would report an
    endpoint Ready on the previous spec (e.g. still in the region it is moving out of). Old pods
    are assumed ready, so mid-rollout this errs low, and it is exact once the rollout is done.
    """
    for deployment in deployments:
        metadata = deployment.get("metadata") or {}
        if metadata.get("name") != name:
            continue
        status = deployment.get("status") or {}
        generation = metadata.get("generation")
        observed = status.get("observedGeneration")
        if generation is not None and (observed is None or int(observed) < int(generation)):
            return 0  # the Deployment controller has not acted on the latest spec yet
        ready = int(status.get("readyReplicas") or 0)
        old = max(0, int(status.get("replicas") or 0) - int(status.get("updatedReplicas") or 0))
        return max(0, ready - old)
    return 0


def _live(pod: Object) -> bool:
    """Not being deleted and not finished: a pod that still counts as a replica."""
    metadata = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not metadata.get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


def _node(pod: Object) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _pod_condition(pod: Object, type_: str) -> Object | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return None


def _pod_ready(pod: Object) -> bool:
    condition = _pod_condition(pod, "Ready")
    return condition is not None and condition.get("status") == "True"


def _unschedulable(pod: Object) -> str | None:
    condition = _pod_condition(pod, "PodScheduled")
    if (
        condition
        and condition.get("status") == "False"
        and condition.get("reason") == "Unschedulable"
    ):
        return str(condition.get("message") or "Unschedulable")
    return None
