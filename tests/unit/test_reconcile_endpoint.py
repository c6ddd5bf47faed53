"""The InferenceEndpoint reconcile as a pure function: whole Outcomes for table cases, and replay.

Each case builds an endpoint as the API server would hold it and a `World` as the runtime would
observe it, calls `decide` at a fixed `now`, and compares the whole Outcome in a readable form:
children as `Kind/name=replicas`, pods to delete, annotations written, the status conditions and
replica counts, and the Events. No cluster, no clock, no module state.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tidal.api.labels import (
    KARPENTER_DO_NOT_DISRUPT,
    LABEL_CAPACITY_TYPE,
    LABEL_ENDPOINT,
    POD_DELETION_COST,
    RENDER_HASH,
    SPOT_LOST_SINCE,
    UTILIZATION_HISTORY,
    CapacityType,
)
from tidal.api.wire import format_time
from tidal.cost import DEFAULT_CATALOG
from tidal.placement import history
from tidal.placement.budget import ReclaimPrior
from tidal.placement.model import (
    FleetSnapshot,
    History,
    NodeInfo,
    ProvisionablePool,
    Taint,
    UtilizationSample,
)
from tidal.reconcile.endpoint import (
    Memory,
    Outcome,
    PodRef,
    Settings,
    World,
    best_effort,
    confirmed_lost,
    decide,
    suspected_lost_nodes,
    unapplied,
    unscheduled_spot_pod,
)
from tidal.reconcile.world import Inputs, Measured
from tidal.slo import Measurement

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
H100 = "NVIDIA-H100-80GB-HBM3"
SETTINGS = Settings(spot_pending_seconds=180, spot_return_after_seconds=300)


def node(name: str, region: str, capacity: CapacityType, *, ready: bool = True) -> NodeInfo:
    return NodeInfo(
        name=name,
        region=region,
        zone=f"{region}a",
        capacity_type=capacity,
        gpu_product=H100,
        gpu_memory_mib=81559,
        gpu_allocatable=8,
        ready=ready,
    )


FLEET = FleetSnapshot(
    nodes=(
        node("spot-eu", "eu-west-1", CapacityType.SPOT),
        node("reserved-eu", "eu-west-1", CapacityType.RESERVED),
        node("spot-us", "us-east-1", CapacityType.SPOT),
    ),
    observed_at=NOW,
)


def endpoint(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {
            "name": "chat",
            "namespace": "ml",
            "uid": "u-1",
            "generation": 1,
            "annotations": {},
        },
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "gpu": {"count": 1, "products": [H100]},
            "residency": {"regions": ["eu-west-1"]},
            "scaling": {"minReplicas": 2, "maxReplicas": 2},
            # Spot mechanics are what most of these tests are about: Auto's interruption
            # budget would keep two replicas in one spot pool on reserved (tested apart).
            "capacity": {"policy": "SpotPreferred"},
            **spec,
        },
    }


def pod(name: str, node_name: str, capacity: str, *, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "labels": {LABEL_ENDPOINT: "chat", LABEL_CAPACITY_TYPE: capacity},
        },
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "engine", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        },
    }


def world(**changes: Any) -> World:
    inputs = changes.pop("inputs", Inputs(fleet=FLEET))
    return World(
        inputs=inputs,
        settings=SETTINGS,
        catalog=DEFAULT_CATALOG,
        prices_source="built-in default prices",
        **changes,
    )


def view(outcome: Outcome) -> dict[str, Any]:
    """The whole Outcome, compactly: what a reader checks by eye."""
    status = dict(outcome.status or {})
    return {
        "children": [
            f"{c['kind']}/{c['metadata']['name']}={c.get('spec', {}).get('replicas')}"
            for c in outcome.children
        ],
        "delete": [ref.name for ref in outcome.delete_pods],
        "annotations": sorted(outcome.annotations),
        "replicas": status.get("replicas"),
        "conditions": {
            c["type"]: f"{c['status']}/{c['reason']}" for c in status.get("conditions") or []
        },
        "events": [f"{e.type}/{e.reason}" for e in outcome.events],
    }


def applied(raw: Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
    """`raw` after the controller carried out `outcome` (status and annotations patched)."""
    after = copy.deepcopy(dict(raw))
    metadata = after.setdefault("metadata", {})
    annotations = dict(metadata.get("annotations") or {})
    for key, value in outcome.annotations.items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    metadata["annotations"] = annotations
    if outcome.status is not None:
        after["status"] = {**(after.get("status") or {}), **outcome.status}
    return after


# --- table cases: whole outcomes ---------------------------------------------------------------


def test_a_new_endpoint_gets_its_spot_deployment_and_service_and_a_first_status() -> None:
    # Both replicas on spot, and the reserved Deployment is not created until it first runs a
    # replica.
    outcome = decide(endpoint(), world(), Memory(), NOW)
    assert view(outcome) == {
        "children": [
            "Deployment/chat-spot=2",
            "Service/chat=None",
            "PodDisruptionBudget/chat=None",
        ],
        "delete": [],
        "annotations": [],
        "replicas": {"desired": 2, "ready": 0, "spot": 2, "reserved": 0},
        "conditions": {
            "Ready": "False/ReplicasNotReady",
            "Placed": "False/Scheduling",
            "ResidencyCompliant": "True/AllReplicasInAllowedRegions",
            "WithinBudget": "True/NoBudget",
        },
        "events": [
            "Normal/CreatedDeployment",
            "Normal/CreatedService",
            "Normal/CreatedPodDisruptionBudget",
        ],
    }
    assert outcome.status is not None
    assert outcome.status["placement"]["reason"].startswith("2 spot, 0 reserved in eu-west-1")
    assert outcome.memory == Memory(history=outcome.memory.history)


def test_an_invalid_spec_writes_only_ready_false_and_applies_nothing() -> None:
    raw = endpoint(scaling={"minReplicas": 3, "maxReplicas": 2})
    assert view(decide(raw, world(), Memory(), NOW)) == {
        "children": [],
        "delete": [],
        "annotations": [],
        "replicas": None,
        "conditions": {"Ready": "False/InvalidSpec"},
        "events": ["Warning/InvalidSpec"],
    }


def test_a_pod_template_overriding_what_tidal_owns_is_an_invalid_spec_naming_the_field() -> None:
    # What the reconcile reports when no webhook refused it (webhooks off, or the operator down).
    raw = endpoint(
        podTemplate={"spec": {"nodeSelector": {"topology.kubernetes.io/region": "us-east-1"}}}
    )
    outcome = decide(raw, world(), Memory(), NOW)
    assert view(outcome) == {
        "children": [],
        "delete": [],
        "annotations": [],
        "replicas": None,
        "conditions": {"Ready": "False/InvalidSpec"},
        "events": ["Warning/InvalidSpec"],
    }
    assert outcome.status is not None
    (ready,) = outcome.status["conditions"]
    assert ready["message"] == (
        'spec.podTemplate.spec.nodeSelector["topology.kubernetes.io/region"]: Tidal owns the '
        "region (spec.residency.regions)"
    )


def test_a_pod_template_goes_into_both_deployments() -> None:
    toleration = {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
    raw = endpoint(
        podTemplate={"spec": {"tolerations": [toleration]}},
        capacity={"policy": "SpotPreferred", "minReservedReplicas": 1},
    )
    outcome = decide(raw, world(), Memory(), NOW)
    deployments = [c for c in outcome.children if c["kind"] == "Deployment"]
    assert len(deployments) == 2
    for child in deployments:
        assert toleration in child["spec"]["template"]["spec"]["tolerations"]


def test_an_endpoint_being_deleted_is_left_alone() -> None:
    raw = endpoint()
    raw["metadata"]["deletionTimestamp"] = "2026-12-01T11:59:00Z"
    assert decide(raw, world(), Memory(), NOW) == Outcome()


def test_a_world_change_waits_for_the_spec_change_to_be_handled_first() -> None:
    raw = endpoint()
    raw["status"] = {"observedGeneration": 0}
    assert decide(raw, world(require_observed=True), Memory(), NOW) == Outcome()
    raw["status"] = {"observedGeneration": 1}
    assert decide(raw, world(require_observed=True), Memory(), NOW).status is not None


def test_nothing_is_written_twice_once_the_world_matches_the_decision() -> None:
    raw = endpoint()
    first = decide(raw, world(), Memory(), NOW)
    children = tuple(first.children)
    deployments = tuple(c for c in children if c["kind"] == "Deployment")
    services = tuple(c for c in children if c["kind"] == "Service")
    pdbs = tuple(c for c in children if c["kind"] == "PodDisruptionBudget")
    settled = world(
        inputs=Inputs(fleet=FLEET, deployments=deployments, services=services, pdbs=pdbs)
    )
    second = decide(applied(raw, first), settled, first.memory, NOW + timedelta(seconds=1))
    assert view(second)["children"] == []
    assert second.status is None
    assert second.events == ()
    # A forced refresh re-applies every child (drift repair) and still writes no status.
    forced = decide(
        applied(raw, first), dataclasses.replace(settled, force_apply=True), first.memory, NOW
    )
    assert [c["metadata"]["name"] for c in forced.children] == [
        c["metadata"]["name"] for c in children
    ]


def test_a_child_scaled_by_hand_is_reapplied_although_its_stamp_is_the_same() -> None:
    raw = endpoint()
    first = decide(raw, world(), Memory(), NOW)
    deployments = [copy.deepcopy(c) for c in first.children if c["kind"] == "Deployment"]
    deployments[0]["spec"]["replicas"] = 7
    services = tuple(c for c in first.children if c["kind"] == "Service")
    pdbs = tuple(c for c in first.children if c["kind"] == "PodDisruptionBudget")
    settled = world(
        inputs=Inputs(fleet=FLEET, deployments=tuple(deployments), services=services, pdbs=pdbs)
    )
    again = decide(applied(raw, first), settled, first.memory, NOW)
    assert [c["metadata"]["name"] for c in again.children] == [deployments[0]["metadata"]["name"]]
    assert (
        again.children[0]["metadata"]["annotations"][RENDER_HASH]
        == (deployments[0]["metadata"]["annotations"][RENDER_HASH])
    )


NEW_CHILDREN = [
    "Normal/CreatedDeployment",
    "Normal/CreatedService",
    "Normal/CreatedPodDisruptionBudget",
]


def test_a_replica_outside_the_allowed_regions_is_deleted_and_reported() -> None:
    stray = pod("chat-spot-1-a", "spot-us", "spot")
    outcome = decide(endpoint(), world(inputs=Inputs(fleet=FLEET, pods=(stray,))), Memory(), NOW)
    assert outcome.delete_pods == (PodRef("chat-spot-1-a", "uid-chat-spot-1-a"),)
    assert view(outcome) == {
        "children": [
            "Deployment/chat-spot=2",
            "Service/chat=None",
            "PodDisruptionBudget/chat=None",
        ],
        "delete": ["chat-spot-1-a"],
        "annotations": [],
        "replicas": {"desired": 2, "ready": 0, "spot": 2, "reserved": 0},
        "conditions": {
            "Ready": "False/PodsOutsideAllowedRegions",
            "Placed": "False/Scheduling",
            "ResidencyCompliant": "False/PodsOutsideAllowedRegions",
            "WithinBudget": "True/NoBudget",
        },
        "events": [*NEW_CHILDREN, "Warning/PodsOutsideAllowedRegions"],
    }


def test_a_replica_on_a_lost_spot_node_is_deleted_only_once_the_api_server_confirms_it() -> None:
    lost_fleet = FleetSnapshot(
        nodes=(
            node("spot-eu", "eu-west-1", CapacityType.SPOT, ready=False),
            node("reserved-eu", "eu-west-1", CapacityType.RESERVED),
        ),
        observed_at=NOW,
    )
    inputs = Inputs(fleet=lost_fleet, pods=(pod("chat-spot-1-a", "spot-eu", "spot"),))
    assert suspected_lost_nodes(inputs) == {"spot-eu"}
    moved = {
        "children": [
            "Deployment/chat-reserved=2",
            "Service/chat=None",
            "PodDisruptionBudget/chat=None",
        ],
        "annotations": [SPOT_LOST_SINCE],
        "replicas": {"desired": 2, "ready": 0, "spot": 0, "reserved": 2},
        "conditions": {
            "Ready": "False/ReplicasNotReady",
            "Placed": "False/Scheduling",
            "ResidencyCompliant": "True/AllReplicasInAllowedRegions",
            "WithinBudget": "True/NoBudget",
        },
    }
    # Suspected only: the replicas move to reserved, the stranded one is left to the API
    # server's own verdict (and still counts where it runs).
    unconfirmed = decide(endpoint(), world(inputs=inputs), Memory(), NOW)
    assert view(unconfirmed) == {
        **moved,
        "delete": [],
        "events": [*NEW_CHILDREN, "Normal/PlacementChanged"],
    }
    confirmed = decide(
        endpoint(), world(inputs=inputs, lost_nodes=frozenset({"spot-eu"})), Memory(), NOW
    )
    assert confirmed.delete_pods == (PodRef("chat-spot-1-a", "uid-chat-spot-1-a"),)
    assert view(confirmed) == {
        **moved,
        "delete": ["chat-spot-1-a"],
        "events": [*NEW_CHILDREN, "Warning/ReplicasOnLostNodes"],
    }


def test_only_a_deleted_or_not_ready_spot_node_is_confirmed_lost() -> None:
    def raw_node(name: str, *, ready: bool, spot: bool) -> dict[str, Any]:
        labels = {"topology.kubernetes.io/region": "eu-west-1"}
        if spot:
            labels["karpenter.sh/capacity-type"] = "spot"
        return {
            "metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        }

    nodes = {
        "gone": None,
        "spot-down": raw_node("spot-down", ready=False, spot=True),
        "spot-up": raw_node("spot-up", ready=True, spot=True),
        "reserved-down": raw_node("reserved-down", ready=False, spot=False),
    }
    assert confirmed_lost(nodes, NOW) == {"gone", "spot-down"}


def test_a_spot_loss_episode_is_remembered_in_an_annotation() -> None:
    # A spot pod pending past the threshold: spot is lost.
    pending = pod("chat-spot-1-a", "", "spot")
    pending["spec"].pop("nodeName")
    pending["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastTransitionTime": (NOW - timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ],
    }
    pending["metadata"]["creationTimestamp"] = (NOW - timedelta(seconds=600)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    raw = endpoint(capacity={"policy": "SpotPreferred"})
    outcome = decide(raw, world(inputs=Inputs(fleet=FLEET, pods=(pending,))), Memory(), NOW)
    # One spot replica is stuck: it moves to reserved, the episode is remembered.
    assert outcome.annotations[SPOT_LOST_SINCE] == "2026-12-01T12:00:00Z"
    assert outcome.status is not None
    assert outcome.status["replicas"] == {"desired": 2, "ready": 0, "spot": 1, "reserved": 1}


def test_a_capacity_type_keeps_its_deployment_at_zero_once_it_has_one() -> None:
    # The spot Deployment exists from earlier; now everything must be reserved.
    spot = {"kind": "Deployment", "metadata": {"name": "chat-spot"}, "spec": {"replicas": 1}}
    raw = endpoint(capacity={"policy": "ReservedOnly"})
    outcome = decide(raw, world(inputs=Inputs(fleet=FLEET, deployments=(spot,))), Memory(), NOW)
    assert view(outcome)["children"] == [
        "Deployment/chat-spot=0",
        "Deployment/chat-reserved=2",
        "Service/chat=None",
        "PodDisruptionBudget/chat=None",
    ]


def test_a_flawed_namespace_policy_is_named_in_the_placement_reason() -> None:
    inputs = Inputs(fleet=FLEET, namespace_policy="eu-west-1,EU")
    outcome = decide(endpoint(), world(inputs=inputs), Memory(), NOW)
    assert outcome.placement is not None
    assert "; namespace annotation tidal.dev/allowed-regions" in outcome.placement.reason
    assert outcome.placement.allowed_regions == ("eu-west-1",)


def _sample(minute: int) -> UtilizationSample:
    return UtilizationSample(
        time=datetime(2026, 12, 1, 11, minute, tzinfo=UTC), utilization_percent=50, replicas=1
    )


def test_the_utilization_history_reaches_its_annotation_once_per_bucket() -> None:
    one = History(samples=(_sample(0),))
    assert decide(endpoint(), world(), Memory(history=History()), NOW).annotations == {}
    first = decide(endpoint(), world(), Memory(history=one), NOW)
    assert first.annotations == {UTILIZATION_HISTORY: history.dumps(one)}
    stored = endpoint()
    stored["metadata"]["annotations"] = {UTILIZATION_HISTORY: history.dumps(one)}
    # Merged into the same 5-minute bucket: kept in memory, not written.
    same_bucket = history.append(one, _sample(2))
    assert len(same_bucket.samples) == 1
    kept = decide(stored, world(), Memory(history=same_bucket), NOW)
    assert kept.annotations == {}
    assert kept.memory == Memory(history=same_bucket)
    # A new bucket: written.
    next_bucket = history.append(same_bucket, _sample(6))
    written = decide(stored, world(), Memory(history=next_bucket), NOW)
    assert written.annotations == {UTILIZATION_HISTORY: history.dumps(next_bucket)}


def test_service_levels_price_the_running_replicas_and_judge_the_last_measurement() -> None:
    raw = endpoint(slo={"p95LatencyMs": 1000}, cost={"maxHourlyUSD": "5"})
    running = (pod("chat-spot-1-a", "spot-eu", "spot"), pod("chat-spot-1-b", "spot-eu", "spot"))
    inputs = Inputs(fleet=FLEET, pods=running)
    unmeasured = decide(raw, world(inputs=inputs), Memory(), NOW)
    assert unmeasured.levels is not None
    assert unmeasured.levels.slo is None
    assert unmeasured.levels.cost.hourly_usd == "7.58"  # 2 x $3.79 (spot H100, eu-west-1)
    assert unmeasured.levels.within_budget.reason == "OverBudget"
    assert "prices: built-in default prices" in (unmeasured.levels.cost.basis or "")

    taken = NOW - timedelta(seconds=20)
    measurement = Measurement(
        window_seconds=300, p95_latency_seconds=1.5, tokens_per_second=1000.0, source="vllm"
    )
    measured = world(inputs=inputs, measured=Measured(measurement, taken))
    outcome = decide(raw, measured, Memory(), NOW)
    assert view(outcome)["conditions"]["SLOMet"] == "False/LatencyAboveTarget"
    assert "Warning/SLOMissed" in view(outcome)["events"]
    assert outcome.status is not None
    assert outcome.status["slo"]["p95LatencyMs"] == 1500
    assert outcome.status["slo"]["evaluatedTime"] == "2026-12-01T11:59:40Z"
    assert outcome.status["cost"]["perMillionTokensUSD"] == "2.11"  # $7.58/h over 3.6M tokens/h


# --- replay: no hidden clock or state ------------------------------------------------------------


def _run(raw: dict[str, Any], worlds: Sequence[World], start: datetime) -> list[Outcome]:
    outcomes = []
    memory = Memory()
    for step, observed in enumerate(worlds):
        outcome = decide(raw, observed, memory, start + timedelta(seconds=15 * step))
        outcomes.append(outcome)
        raw = applied(raw, outcome)
        memory = outcome.memory
    return outcomes


_nodes = st.lists(
    st.builds(
        node,
        name=st.sampled_from(["a", "b", "c", "d"]),
        region=st.sampled_from(["eu-west-1", "us-east-1"]),
        capacity=st.sampled_from(list(CapacityType)),
        ready=st.booleans(),
    ),
    max_size=4,
    unique_by=lambda n: n.name,
)


@settings(max_examples=40, deadline=None)
@given(
    fleets=st.lists(_nodes, min_size=1, max_size=5),
    policy=st.sampled_from(["Auto", "SpotPreferred", "SpotOnly", "ReservedOnly"]),
    replicas=st.integers(min_value=1, max_value=4),
    sample=st.booleans(),
)
def test_a_recorded_sequence_of_observations_replays_to_identical_outcomes(
    fleets: list[list[NodeInfo]], policy: str, replicas: int, sample: bool
) -> None:
    raw = endpoint(
        capacity={"policy": policy}, scaling={"minReplicas": replicas, "maxReplicas": replicas}
    )
    worlds = [
        world(
            inputs=Inputs(fleet=FleetSnapshot(nodes=tuple(nodes), observed_at=NOW)),
            sample_history=sample,
        )
        for nodes in fleets
    ]
    assert _run(raw, worlds, NOW) == _run(raw, worlds, NOW)


# --- elastic capacity ---------------------------------------------------------------------------


def pending_spot_pod(name: str, since: datetime) -> dict[str, Any]:
    unbound = pod(name, "", "spot", ready=False)
    del unbound["spec"]["nodeName"]
    unbound["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ],
    }
    return unbound


SPOT_NODEPOOL = ProvisionablePool("NodePool gpu-spot", CapacityType.SPOT)
ON_DEMAND_NODEPOOL = ProvisionablePool("NodePool gpu-on-demand", CapacityType.RESERVED)


def test_from_zero_gpu_nodes_the_replicas_are_created_for_the_autoscaler() -> None:
    empty = Inputs(fleet=FleetSnapshot(observed_at=NOW))
    stuck = view(decide(endpoint(), world(inputs=empty), Memory(), NOW))
    assert stuck["children"] == [
        "Service/chat=None",
        "PodDisruptionBudget/chat=None",
    ]  # nothing fits, nothing asks for a node
    assert stuck["conditions"]["Placed"] == "False/NoFittingGPU"

    elastic = world(inputs=empty, nodepools=(SPOT_NODEPOOL, ON_DEMAND_NODEPOOL))
    outcome = decide(endpoint(), elastic, Memory(), NOW)
    assert view(outcome)["children"] == [
        "Deployment/chat-spot=2",
        "Service/chat=None",
        "PodDisruptionBudget/chat=None",
    ]
    assert outcome.status is not None
    assert (
        "2 spot to be provisioned by NodePool gpu-spot" in (outcome.status["placement"]["reason"])
    )


def test_a_spot_replica_waiting_for_its_node_is_not_lost_until_the_provision_timeout() -> None:
    # Four minutes Pending: past the 180 s of a fixed fleet, well within the 600 s it takes to
    # provision a GPU node.
    waiting = (
        pending_spot_pod("chat-spot-a", NOW - timedelta(minutes=4)),
        pending_spot_pod("chat-spot-b", NOW - timedelta(minutes=4)),
    )
    empty = FleetSnapshot(observed_at=NOW)
    raw = endpoint()
    raw["status"] = {"replicas": {"desired": 2, "spot": 2, "reserved": 0}}
    pools = {"nodepools": (SPOT_NODEPOOL, ON_DEMAND_NODEPOOL)}
    inputs = Inputs(fleet=empty, pods=waiting)
    patient = decide(raw, world(inputs=inputs, **pools), Memory(), NOW)
    assert patient.placement is not None
    assert (patient.placement.spot, patient.placement.reserved) == (2, 0)
    assert SPOT_LOST_SINCE not in patient.annotations

    later = NOW + timedelta(minutes=7)  # eleven minutes Pending: provisioning failed
    lost = decide(raw, world(inputs=inputs, **pools), Memory(), later)
    assert lost.placement is not None
    assert (lost.placement.spot, lost.placement.reserved) == (0, 2)
    assert lost.annotations.get(SPOT_LOST_SINCE) is not None


def karpenter_event(reason: str, message: str, component: str = "karpenter") -> dict[str, Any]:
    return {
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "lastTimestamp": "2026-12-01T11:59:30Z",
    }


def test_a_spot_replica_the_autoscaler_cannot_provision_for_is_lost_at_once() -> None:
    waiting = (
        pending_spot_pod("chat-spot-a", NOW - timedelta(seconds=20)),
        pending_spot_pod("chat-spot-b", NOW - timedelta(seconds=10)),
    )
    inputs = Inputs(fleet=FleetSnapshot(observed_at=NOW), pods=waiting)
    assert unscheduled_spot_pod(inputs) == PodRef("chat-spot-a", "uid-chat-spot-a")
    raw = endpoint()
    raw["status"] = {"replicas": {"desired": 2, "spot": 2, "reserved": 0}}
    pools = {"nodepools": (SPOT_NODEPOOL, ON_DEMAND_NODEPOOL)}

    # The default scheduler's FailedScheduling only says no node fits now: still waiting.
    scheduler = karpenter_event("FailedScheduling", "0/3 nodes are available", "default-scheduler")
    waiting_world = world(inputs=inputs, spot_pod_events=(scheduler,), **pools)
    kept = decide(raw, waiting_world, Memory(), NOW)
    assert kept.placement is not None
    assert (kept.placement.spot, kept.placement.reserved) == (2, 0)

    refused = karpenter_event(
        "FailedScheduling",
        "Failed to schedule pod, all available instance types exceed limits for nodepool",
    )
    lost = decide(raw, world(inputs=inputs, spot_pod_events=(refused,), **pools), Memory(), NOW)
    assert lost.placement is not None
    assert (lost.placement.spot, lost.placement.reserved) == (0, 2)
    assert "2 spot pods cannot be provisioned (FailedScheduling: Failed to schedule pod" in (
        lost.placement.reason
    )
    assert lost.annotations.get(SPOT_LOST_SINCE) is not None
    assert "Warning/SpotCapacityLost" in view(lost)["events"]


# --- interruption with notice: make before break -------------------------------------------------


def test_a_replica_on_a_node_given_notice_serves_until_its_replacement_is_ready() -> None:
    disrupted = Taint("karpenter.sh/disrupted", "", "NoSchedule")
    leaving_node = dataclasses.replace(
        node("spot-eu", "eu-west-1", CapacityType.SPOT), taints=(disrupted,)
    )
    other = node("spot-eu-2", "eu-west-1", CapacityType.SPOT)
    fleet = FleetSnapshot(nodes=(leaving_node, other), observed_at=NOW)
    spot = {"kind": "Deployment", "metadata": {"name": "chat-spot"}, "spec": {"replicas": 2}}
    raw = endpoint(capacity={"policy": "SpotOnly"})
    raw["status"] = {"replicas": {"desired": 2, "spot": 2, "reserved": 0}}
    serving = (pod("chat-spot-a", "spot-eu", "spot"), pod("chat-spot-b", "spot-eu-2", "spot"))

    noticed = decide(
        raw, world(inputs=Inputs(fleet, deployments=(spot,), pods=serving)), Memory(), NOW
    )
    # The replacement starts at once; the leaving replica keeps serving and is marked to go
    # first; evictions (Karpenter's drain) wait for 2 Ready replicas elsewhere.
    assert view(noticed)["children"][0] == "Deployment/chat-spot=3"
    assert view(noticed)["delete"] == []
    assert noticed.pod_annotations == (
        (PodRef("chat-spot-a", "uid-chat-spot-a"), {POD_DELETION_COST: "-1000"}),
    )
    assert "Normal/ReplacingLeavingReplicas" in view(noticed)["events"]
    (pdb,) = [c for c in noticed.children if c["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 2

    # The replacement is Ready: the surge ends, and the ReplicaSet removes the marked replica.
    marked = copy.deepcopy(serving[0])
    marked["metadata"]["annotations"] = {POD_DELETION_COST: "-1000"}
    replaced = (marked, serving[1], pod("chat-spot-c", "spot-eu-2", "spot"))
    surged = dict(spot, spec={"replicas": 3})
    done = decide(
        raw, world(inputs=Inputs(fleet, deployments=(surged,), pods=replaced)), Memory(), NOW
    )
    assert view(done)["children"][0] == "Deployment/chat-spot=2"
    assert done.pod_annotations == ()
    assert "Normal/ReplacingLeavingReplicas" not in view(done)["events"]


def test_a_replica_is_protected_from_the_autoscaler_only_while_its_model_loads() -> None:
    loading = pod("chat-spot-a", "spot-eu", "spot", ready=False)
    loaded = pod("chat-spot-b", "spot-eu", "spot")
    for replica in (loading, loaded):
        replica["metadata"]["annotations"] = {KARPENTER_DO_NOT_DISRUPT: "true"}
    outcome = decide(endpoint(), world(inputs=Inputs(FLEET, pods=(loading, loaded))), Memory(), NOW)
    assert outcome.pod_annotations == (
        (PodRef("chat-spot-b", "uid-chat-spot-b"), {KARPENTER_DO_NOT_DISRUPT: None}),
    )
    (deployment, *_) = outcome.children
    template = deployment["spec"]["template"]["metadata"]["annotations"]
    assert template[KARPENTER_DO_NOT_DISRUPT] == "true"


# --- the PodMonitor (where Prometheus Operator's kind is served) ------------------------------


def _settled(children: Sequence[Mapping[str, Any]], *, kinds: Sequence[str] = ()) -> Inputs:
    """The indexes once `children` were applied, leaving out the kinds named in `kinds`."""

    def of(kind: str) -> tuple[dict[str, Any], ...]:
        return tuple(dict(c) for c in children if c["kind"] == kind and kind not in kinds)

    return Inputs(
        fleet=FLEET,
        deployments=of("Deployment"),
        services=of("Service"),
        pdbs=of("PodDisruptionBudget"),
        pod_monitors=of("PodMonitor"),
    )


def test_a_pod_monitor_is_among_the_children_only_where_its_kind_is_served() -> None:
    without = decide(endpoint(), world(), Memory(), NOW)
    assert "PodMonitor/chat=None" not in view(without)["children"]

    served = decide(endpoint(), world(pod_monitors=True), Memory(), NOW)
    assert view(served)["children"] == [
        "Deployment/chat-spot=2",
        "Service/chat=None",
        "PodDisruptionBudget/chat=None",
        "PodMonitor/chat=None",
    ]
    assert view(served)["events"][:4] == [*NEW_CHILDREN, "Normal/CreatedPodMonitor"]
    (monitor,) = [c for c in served.children if c["kind"] == "PodMonitor"]
    assert monitor["metadata"]["annotations"][RENDER_HASH]
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics"}]
    # The PodMonitor changes nothing else the reconcile decides.
    assert dataclasses.replace(served, children=without.children, events=without.events) == (
        without
    )


def test_a_deleted_pod_monitor_is_applied_again_and_a_present_one_left_alone() -> None:
    raw = endpoint()
    first = decide(raw, world(pod_monitors=True), Memory(), NOW)
    later = NOW + timedelta(seconds=1)

    settled = decide(
        applied(raw, first),
        world(inputs=_settled(first.children), pod_monitors=True),
        first.memory,
        later,
    )
    assert view(settled)["children"] == []

    deleted = world(inputs=_settled(first.children, kinds=["PodMonitor"]), pod_monitors=True)
    again = decide(applied(raw, first), deleted, first.memory, later)
    assert view(again)["children"] == ["PodMonitor/chat=None"]
    assert view(again)["events"] == ["Normal/CreatedPodMonitor"]

    edited = [copy.deepcopy(c) for c in first.children]
    for child in edited:
        if child["kind"] == "PodMonitor":
            child["metadata"]["annotations"][RENDER_HASH] = "edited-by-hand"
    repaired = decide(
        applied(raw, first), world(inputs=_settled(edited), pod_monitors=True), first.memory, later
    )
    assert view(repaired)["children"] == ["PodMonitor/chat=None"]

    forced = world(inputs=_settled(first.children), pod_monitors=True, force_apply=True)
    assert (
        "PodMonitor/chat=None"
        in view(decide(applied(raw, first), forced, first.memory, later))["children"]
    )


def test_without_its_kind_an_existing_pod_monitor_is_neither_applied_nor_deleted() -> None:
    raw = endpoint()
    first = decide(raw, world(pod_monitors=True), Memory(), NOW)
    gone = world(inputs=_settled(first.children), force_apply=True)
    outcome = decide(applied(raw, first), gone, first.memory, NOW + timedelta(seconds=1))
    assert [c["kind"] for c in outcome.children] == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]
    assert outcome.delete_pods == ()


def test_an_engine_whose_metrics_are_unknown_gets_no_pod_monitor() -> None:
    raw = endpoint(runtime={"engine": "Custom", "image": "registry.example/engine:1"})
    outcome = decide(raw, world(pod_monitors=True), Memory(), NOW)
    assert [c["kind"] for c in outcome.children] == [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]


def test_the_pod_monitor_carries_the_labels_the_operator_is_told_to_add() -> None:
    settings = dataclasses.replace(SETTINGS, pod_monitor_labels={"release": "monitoring"})
    served = dataclasses.replace(world(pod_monitors=True), settings=settings)
    outcome = decide(endpoint(), served, Memory(), NOW)
    (monitor,) = [c for c in outcome.children if c["kind"] == "PodMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "monitoring"
    assert monitor["metadata"]["labels"][LABEL_ENDPOINT] == "chat"


def test_only_the_pod_monitor_is_best_effort_and_a_failed_one_is_not_told_as_created() -> None:
    outcome = decide(endpoint(), world(pod_monitors=True), Memory(), NOW)
    assert [best_effort(c) for c in outcome.children] == [False, False, False, True]
    failed = [c for c in outcome.children if best_effort(c)]
    told = unapplied(outcome, failed)
    assert [f"{e.type}/{e.reason}" for e in told.events] == [
        f"{e.type}/{e.reason}" for e in outcome.events if e.reason != "CreatedPodMonitor"
    ]
    assert dataclasses.replace(told, events=outcome.events) == outcome


def test_auto_keeps_what_one_spot_pool_would_take_on_reserved_and_says_why() -> None:
    # Two replicas in eu-west-1, one spot pool there: losing it would leave nothing for 1.33
    # saturations of load, far over the default 0.01% budget.
    raw = endpoint(capacity={"policy": "Auto"})
    outcome = decide(raw, world(), Memory(), NOW)
    assert view(outcome)["replicas"] == {"desired": 2, "ready": 0, "spot": 0, "reserved": 2}
    assert outcome.status is not None
    assert outcome.status["placement"]["reason"].startswith(
        "0 spot, 2 reserved in eu-west-1: Auto within interruption budget 0.01%: 2 reserved for "
        "load 1.33 (what 2 replicas are sized for), recovery 660s (detection 60s + start 600s "
        "assumed); any replica on spot would "
        "cost more (riskiest pool eu-west-1/"
    )
    # Both regions allowed: spot spread over them, one region's loss is carried by the other.
    raw = endpoint(
        capacity={"policy": "Auto"},
        residency={"regions": ["eu-west-1", "us-east-1"]},
        scaling={"minReplicas": 4, "maxReplicas": 4},
    )
    outcome = decide(raw, world(), Memory(), NOW)
    assert view(outcome)["replicas"] == {"desired": 4, "ready": 0, "spot": 2, "reserved": 2}
    spot = next(c for c in outcome.children if c["metadata"]["name"] == "chat-spot")
    assert spot["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["maxSkew"] == 1
    # A generous budget is SpotPreferred.
    raw = endpoint(capacity={"policy": "Auto", "interruptionBudgetPercent": "100"})
    assert view(decide(raw, world(), Memory(), NOW))["replicas"]["spot"] == 2


def test_autos_recovery_is_the_endpoints_measured_cold_start() -> None:
    raw = endpoint(capacity={"policy": "Auto", "interruptionBudgetPercent": "0.1"})
    slow = decide(raw, world(), Memory(), NOW)
    assert slow.status is not None
    assert "recovery 660s" in slow.status["placement"]["reason"]
    raw["status"] = {"lastColdStartSeconds": 12.5}
    fast = decide(raw, world(), Memory(), NOW)
    assert fast.status is not None
    assert (
        "recovery 72.5s (detection 60s + cold start 12.5s measured)"
        in (fast.status["placement"]["reason"])
    )
    # A replica start, measured on every start and not only on a wake, comes first.
    raw["status"] = {"lastColdStartSeconds": 12.5, "lastReplicaStartSeconds": 300}
    replica = decide(raw, world(), Memory(), NOW)
    assert replica.status is not None
    assert (
        "recovery 360s (detection 60s + replica start 300s measured)"
        in (replica.status["placement"]["reason"])
    )


def test_autos_recovery_takes_the_clusters_interruption_notice_off() -> None:
    raw = endpoint(capacity={"policy": "Auto", "interruptionBudgetPercent": "0.1"})
    raw["status"] = {"lastReplicaStartSeconds": 300}
    settings = dataclasses.replace(world().settings, reclaim_prior=ReclaimPrior(notice_seconds=120))
    outcome = decide(raw, dataclasses.replace(world(), settings=settings), Memory(), NOW)
    assert outcome.status is not None
    assert (
        "recovery 240s (detection 60s + replica start 300s measured - notice 120s)"
        in (outcome.status["placement"]["reason"])
    )


def started_pod(name: str, *, created: datetime, ready_after: float) -> dict[str, Any]:
    """A Ready reserved replica created at `created`, Ready `ready_after` seconds later."""
    started = pod(name, "reserved-eu", "reserved")
    started["metadata"]["creationTimestamp"] = format_time(created)
    ready_at = created + timedelta(seconds=ready_after)
    started["status"]["conditions"][0]["lastTransitionTime"] = format_time(ready_at)
    return started


def test_a_ready_replica_measures_the_replica_start_into_status() -> None:
    raw = endpoint(capacity={"policy": "Auto"})
    first = decide(raw, world(), Memory(), NOW)
    assert first.status is not None
    assert "lastReplicaStartSeconds" not in first.status  # nothing Ready yet: left as it is
    pods = [
        started_pod("chat-reserved-a", created=NOW - timedelta(seconds=400), ready_after=250),
        started_pod("chat-reserved-b", created=NOW - timedelta(seconds=200), ready_after=95),
        # Restarted: its Ready time measures the restart, not the start.
        started_pod("chat-reserved-c", created=NOW - timedelta(seconds=90), ready_after=5),
    ]
    pods[2]["status"]["containerStatuses"] = [{"name": "engine", "restartCount": 1}]
    outcome = decide(raw, world(inputs=Inputs(fleet=FLEET, pods=tuple(pods))), Memory(), NOW)
    assert outcome.status is not None
    # The newest to become Ready (b, 105 s ago) says what a replacement costs now.
    assert outcome.status["lastReplicaStartSeconds"] == 95
