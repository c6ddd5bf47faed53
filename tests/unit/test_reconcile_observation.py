"""What the reconcile observed, translated for the planner and the builders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidal.api.endpoint import InferenceEndpointStatus
from tidal.api.labels import (
    SPOT_LOST_SINCE,
    SPOT_RECOVERED_SINCE,
    UTILIZATION_HISTORY,
    CapacityType,
)
from tidal.api.parsing import read_status
from tidal.api.wire import format_time as stamp
from tidal.cost import PlacedReplica
from tidal.placement.model import FleetSnapshot, NodeInfo, Placement
from tidal.reconcile.observation import (
    STATE_ANNOTATIONS,
    current_replicas,
    episode,
    episode_annotations,
    first_ready_time,
    gateway_admin_urls,
    handover,
    lost_node_pods,
    measurement_due,
    node_fingerprint,
    own_pods,
    pending_spot_pods,
    placed_replicas,
    previous_placement,
    provision_failure,
    serving_replicas,
    shares,
)
from tidal.render.endpoint import Share

NOW = datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC)


# --- the spot loss episode ----------------------------------------------------------------------


def test_the_episode_round_trips_through_annotations() -> None:
    lost, recovered = NOW - timedelta(minutes=5), NOW - timedelta(minutes=1)
    placement = Placement(
        desired=3,
        spot=0,
        reserved=3,
        allowed_regions=("eu-west-1",),
        spot_lost_since=lost,
        spot_recovered_since=recovered,
    )
    changes = episode_annotations(placement, {})
    assert changes == {SPOT_LOST_SINCE: stamp(lost), SPOT_RECOVERED_SINCE: stamp(recovered)}
    stored = {k: v for k, v in changes.items() if v is not None}
    assert episode(stored) == (lost, recovered)
    # Unchanged: nothing to write, so a steady episode costs no API call per reconcile.
    assert episode_annotations(placement, stored) == {}


def test_an_ended_episode_removes_its_annotations() -> None:
    stored = {SPOT_LOST_SINCE: stamp(NOW), SPOT_RECOVERED_SINCE: stamp(NOW), "other": "x"}
    placement = Placement(desired=1, spot=1, reserved=0, allowed_regions=("eu-west-1",))
    assert episode_annotations(placement, stored) == {
        SPOT_LOST_SINCE: None,
        SPOT_RECOVERED_SINCE: None,
    }
    assert episode_annotations(placement, {"other": "x"}) == {}


def test_unreadable_episode_times_count_as_absent() -> None:
    assert episode({SPOT_LOST_SINCE: "garbage", SPOT_RECOVERED_SINCE: "2025-01-31T12:00:00"}) == (
        None,
        None,
    )
    assert episode({SPOT_LOST_SINCE: "2025-01-31T13:00:00+01:00"}) == (NOW, None)


def test_state_annotations_are_the_controllers_own() -> None:
    assert set(STATE_ANNOTATIONS) == {SPOT_LOST_SINCE, SPOT_RECOVERED_SINCE, UTILIZATION_HISTORY}
    assert all(key.startswith("tidal.dev/") for key in STATE_ANNOTATIONS)


# --- the previous decision ----------------------------------------------------------------------


def test_the_previous_decision_is_read_back_from_status_replicas() -> None:
    previous = previous_placement(
        read_status(
            InferenceEndpointStatus,
            {"replicas": {"desired": 3, "ready": 1, "spot": 2, "reserved": 1}},
        )
    )
    assert previous is not None
    assert (previous.desired, previous.spot, previous.reserved) == (3, 2, 1)


@pytest.mark.parametrize("status", [None, {}, {"replicas": "x"}, {"replicas": {"spot": "many"}}])
def test_no_readable_previous_decision_is_none(status: dict[str, Any] | None) -> None:
    assert previous_placement(read_status(InferenceEndpointStatus, status)) is None


# --- spot health --------------------------------------------------------------------------------


def pod(
    name: str,
    *,
    capacity: str = "spot",
    node: str | None = None,
    unscheduled_for: float | None = None,
    deleting: bool = False,
    phase: str = "Pending",
) -> dict[str, Any]:
    conditions = []
    if unscheduled_for is not None:
        since = NOW - timedelta(seconds=unscheduled_for)
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "lastTransitionTime": stamp(since),
            }
        )
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "ml",
        "uid": f"uid-{name}",
        "labels": {"tidal.dev/capacity-type": capacity},
    }
    if deleting:
        metadata["deletionTimestamp"] = stamp(NOW)
    return {
        "metadata": metadata,
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "conditions": conditions},
    }


def test_spot_pods_unscheduled_beyond_the_threshold_count_as_spot_trouble() -> None:
    pods = [
        pod("stuck", unscheduled_for=200),
        pod("fresh", unscheduled_for=10),
        pod("reserved", capacity="reserved", unscheduled_for=200),
        pod("bound", node="n1", phase="Running"),
        pod("unknown"),  # no PodScheduled condition yet: the scheduler has not looked
        pod("going", unscheduled_for=200, deleting=True),
        pod("failed", unscheduled_for=200, phase="Failed"),
    ]
    assert pending_spot_pods(pods, NOW, threshold_seconds=180) == 1
    assert pending_spot_pods(pods, NOW, threshold_seconds=5) == 2


# --- replicas on lost nodes ---------------------------------------------------------------------


def node(name: str, capacity: CapacityType, *, ready: bool = True) -> NodeInfo:
    return NodeInfo(name=name, region="eu-west-1", zone=None, capacity_type=capacity, ready=ready)


FLEET = FleetSnapshot(
    nodes=(
        node("spot-ok", CapacityType.SPOT),
        node("spot-down", CapacityType.SPOT, ready=False),
        node("reserved-down", CapacityType.RESERVED, ready=False),
        node("reserved-ok", CapacityType.RESERVED),
    )
)


def test_replicas_on_vanished_or_notready_spot_nodes_are_lost() -> None:
    pods = [
        pod("a", node="spot-ok", phase="Running"),
        pod("b", node="spot-down", phase="Running"),
        pod("c", node="gone", phase="Running"),
        pod("d", capacity="reserved", node="reserved-down", phase="Running"),
        pod("e", node="gone", phase="Running", deleting=True),
        pod("f", node="gone", phase="Succeeded"),
        pod("g"),
    ]
    lost = [(p["metadata"]["name"], why) for p, why in lost_node_pods(pods, FLEET)]
    assert lost == [("b", "spot node NotReady"), ("c", "node gone")]


def test_own_pods_are_the_live_ones() -> None:
    pods = [
        pod("a"),
        pod("b", deleting=True),
        pod("c", phase="Succeeded"),
        pod("d", phase="Failed"),
    ]
    assert [p["metadata"]["name"] for p in own_pods(pods)] == ["a"]


# --- shares -------------------------------------------------------------------------------------


def test_each_deployment_gets_only_its_own_capacity_types_node_preferences() -> None:
    placement = Placement(
        desired=3,
        spot=2,
        reserved=1,
        allowed_regions=("eu-west-1", "us-east-1"),
        preferred_nodes=(("spot-ok", 100), ("reserved-ok", 60), ("unknown", 50)),
        avoided_nodes=("spot-down", "reserved-down"),
        min_gpu_memory_mib=40960,
    )
    assert shares(placement, FLEET) == {
        "spot": Share(
            replicas=2,
            regions=("eu-west-1", "us-east-1"),
            preferred_nodes=(("spot-ok", 100),),
            avoided_nodes=("spot-down",),
            min_gpu_memory_mib=40960,
        ),
        "reserved": Share(
            replicas=1,
            regions=("eu-west-1", "us-east-1"),
            preferred_nodes=(("reserved-ok", 60),),
            avoided_nodes=("reserved-down",),
            min_gpu_memory_mib=40960,
        ),
    }


def test_a_refused_placement_shares_nothing_anywhere() -> None:
    placement = Placement(
        desired=2,
        spot=0,
        reserved=0,
        allowed_regions=(),
        placed=False,
        placed_reason="NoAllowedRegion",
    )
    for share in shares(placement, FLEET).values():
        assert share.replicas == 0
        assert share.regions == ()


# --- node fingerprints --------------------------------------------------------------------------


def node_object(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {
            "name": "n1",
            "labels": {"topology.kubernetes.io/region": "eu-west-1"},
            "annotations": {"tidal.dev/gpu-telemetry": "{}"},
            "resourceVersion": "1",
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"nvidia.com/gpu": "8"},
        },
    }
    for path, value in changes.items():
        target = obj
        *parents, last = path.split("__")
        for part in parents:
            target = target[part]
        target[last] = value
    return obj


def test_telemetry_and_bookkeeping_do_not_change_a_nodes_fingerprint() -> None:
    base = node_fingerprint(node_object())
    assert (
        node_fingerprint(node_object(metadata__annotations={"tidal.dev/gpu-telemetry": "{1}"}))
        == base
    )
    assert node_fingerprint(node_object(metadata__resourceVersion="2")) == base


@pytest.mark.parametrize(
    "changes",
    [
        {"metadata__labels": {"topology.kubernetes.io/region": "us-east-1"}},
        {"spec__taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]},
        {"spec__unschedulable": True},
        {"status__conditions": [{"type": "Ready", "status": "False"}]},
        {"status__allocatable": {"nvidia.com/gpu": "4"}},
    ],
)
def test_what_can_move_replicas_changes_a_nodes_fingerprint(changes: dict[str, Any]) -> None:
    assert node_fingerprint(node_object(**changes)) != node_fingerprint(node_object())


# --- hand-over between the Deployments --------------------------------------------------------


@pytest.mark.parametrize(
    ("planned", "current", "ready", "asked"),
    [
        # Moving back to spot: reserved keeps serving until spot replicas are up.
        pytest.param((3, 0), (0, 3), (0, 3), (3, 3), id="return-starts"),
        pytest.param((3, 0), (3, 3), (2, 3), (3, 1), id="return-halfway"),
        pytest.param((3, 0), (3, 1), (3, 1), (3, 0), id="return-done"),
        # Losing spot: spot replicas that no longer serve are not kept.
        pytest.param((0, 3), (3, 0), (0, 0), (0, 3), id="loss"),
        # Partly lost: what still serves stays until reserved is up.
        pytest.param((0, 3), (3, 0), (2, 0), (2, 3), id="partial-loss"),
        # Steady state and first creation: the plan as is.
        pytest.param((2, 1), (2, 1), (2, 1), (2, 1), id="steady"),
        pytest.param((2, 1), (0, 0), (0, 0), (2, 1), id="created"),
        # Nothing may run: no region allowed, no GPU fits.
        pytest.param((0, 0), (2, 1), (2, 1), (0, 0), id="refused"),
        # Scaling down needs no hand-over.
        pytest.param((1, 1), (2, 2), (2, 2), (1, 1), id="scale-down"),
    ],
)
def test_replicas_move_make_before_break(
    planned: tuple[int, int],
    current: tuple[int, int],
    ready: tuple[int, int],
    asked: tuple[int, int],
) -> None:
    def pair(values: tuple[int, int]) -> dict[Any, int]:
        return {"spot": values[0], "reserved": values[1]}

    assert handover(pair(planned), pair(current), pair(ready)) == pair(asked)


def test_current_replicas_come_from_the_endpoints_deployments() -> None:
    deployments = [
        {"metadata": {"name": "chat-spot"}, "spec": {"replicas": 2}},
        {"metadata": {"name": "other-reserved"}, "spec": {"replicas": 5}},
    ]
    assert current_replicas(deployments, "chat") == {"spot": 2, "reserved": 0}


def test_serving_replicas_are_ready_pods_on_ready_nodes() -> None:
    def ready_pod(name: str, capacity: str, node: str, ready: bool = True) -> dict[str, Any]:
        obj = pod(name, capacity=capacity, node=node, phase="Running")
        obj["status"]["conditions"] = [{"type": "Ready", "status": str(ready)}]
        return obj

    pods = [
        ready_pod("a", "spot", "spot-ok"),
        ready_pod("b", "spot", "spot-down"),  # its node stopped reporting
        ready_pod("c", "spot", "gone"),  # its node vanished
        ready_pod("d", "reserved", "reserved-ok"),
        ready_pod("e", "reserved", "reserved-ok", ready=False),
    ]
    assert serving_replicas(pods, FLEET) == {"spot": 1, "reserved": 1}


# --- what is priced, and when service levels are measured ----------------------------------------


def test_running_pods_are_priced_by_the_node_they_run_on() -> None:
    fleet = FleetSnapshot(
        nodes=(
            NodeInfo(
                name="spot-1",
                region="eu-west-1",
                zone=None,
                capacity_type=CapacityType.SPOT,
                gpu_product="NVIDIA-H100-80GB-HBM3",
            ),
            NodeInfo(
                name="reserved-1",
                region="us-east-1",
                zone=None,
                capacity_type=CapacityType.RESERVED,
            ),
        )
    )

    def gpu_pod(name: str, node: str | None, gpus: int, **kwargs: Any) -> dict[str, Any]:
        found = pod(name, node=node, **kwargs)
        found["spec"]["containers"] = [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]
        return found

    pods = [
        gpu_pod("a", "spot-1", 2, phase="Running"),
        gpu_pod("b", "reserved-1", 1, phase="Running"),
        gpu_pod("pending", None, 1),
        gpu_pod("bound-not-running", "spot-1", 1, phase="Pending"),
        gpu_pod("going", "spot-1", 1, phase="Running", deleting=True),
        gpu_pod("node-gone", "vanished", 1, phase="Running"),
    ]

    assert placed_replicas(pods, fleet) == [
        PlacedReplica("NVIDIA-H100-80GB-HBM3", "spot", "eu-west-1", 2),
        PlacedReplica(None, "reserved", "us-east-1", 1),
    ]


def test_measurements_are_due_after_the_interval_and_at_first() -> None:
    assert measurement_due(None, NOW, 30)
    assert not measurement_due(NOW - timedelta(seconds=29), NOW, 30)
    assert measurement_due(NOW - timedelta(seconds=30), NOW, 30)


def test_the_first_ready_time_is_the_earliest_ready_transition_of_a_live_pod() -> None:
    def ready_pod(name: str, since: datetime, **kwargs: Any) -> dict[str, Any]:
        found = pod(name, node="n1", phase="Running", **kwargs)
        found["status"]["conditions"] = [
            {"type": "Ready", "status": "True", "lastTransitionTime": stamp(since)}
        ]
        return found

    pods = [
        ready_pod("late", NOW),
        ready_pod("early", NOW - timedelta(seconds=9)),
        ready_pod("going", NOW - timedelta(seconds=60), deleting=True),
        pod("starting", node="n1", phase="Running"),
    ]
    assert first_ready_time(pods) == NOW - timedelta(seconds=9)
    assert first_ready_time([pod("starting", node="n1")]) is None


def test_gateway_admin_urls_are_the_ready_gateway_pods() -> None:
    def gateway(name: str, ip: str | None, *, ready: bool = True, **kwargs: Any) -> dict[str, Any]:
        found = pod(name, node="n1", phase="Running", **kwargs)
        found["status"]["conditions"] = [{"type": "Ready", "status": str(ready)}]
        if ip:
            found["status"]["podIP"] = ip
        return found

    pods = [
        gateway("b", "10.0.0.2"),
        gateway("a", "10.0.0.1"),
        gateway("v6", "fd00::1"),
        gateway("starting", "10.0.0.3", ready=False),
        gateway("no-ip", None),
        gateway("going", "10.0.0.4", deleting=True),
    ]
    assert gateway_admin_urls(pods, 9090) == (
        "http://10.0.0.1:9090",
        "http://10.0.0.2:9090",
        "http://[fd00::1]:9090",
    )


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], None),
        # The default scheduler only says no node fits now; that is what Karpenter acts on.
        ([{"reason": "FailedScheduling", "source": {"component": "default-scheduler"}}], None),
        ([{"reason": "Nominated", "source": {"component": "karpenter"}}], None),
        (
            [
                {
                    "reason": "FailedScheduling",
                    "message": "Failed to schedule pod, no instance type satisfied",
                    "source": {"component": "karpenter"},
                }
            ],
            "FailedScheduling: Failed to schedule pod, no instance type satisfied",
        ),
        (
            [
                {
                    "reason": "FailedScheduling",
                    "message": "old",
                    "source": {"component": "karpenter"},
                    "lastTimestamp": "2026-12-01T11:00:00Z",
                },
                {
                    "reason": "InsufficientCapacityError",
                    "message": "NodeClaim gpu-spot-x nominated for this pod failed to launch",
                    "reportingComponent": "karpenter",
                    "lastTimestamp": "2026-12-01T11:05:00Z",
                },
            ],
            "InsufficientCapacityError: NodeClaim gpu-spot-x nominated for this pod failed to "
            "launch",
        ),
    ],
)
def test_what_the_autoscaler_said_it_cannot_provision_is_read_from_the_pods_events(
    events: list[dict[str, Any]], expected: str | None
) -> None:
    assert provision_failure(events) == expected
