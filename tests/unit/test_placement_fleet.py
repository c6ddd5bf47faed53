"""Node and Pod objects as the API server returns them -> the fleet snapshot the planner reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidal.api.labels import GPU_TELEMETRY, CapacityType
from tidal.api.podtemplate import PodSpecOverrides, Toleration
from tidal.api.telemetry import GpuSample, GpuTelemetry
from tidal.devcluster.fleet import Fleet, render_nodes
from tidal.placement.fleet import (
    blocking_taints,
    capacity_type,
    endpoint_pods,
    gpu_requests_by_node,
    is_gpu_taint,
    is_spot_taint,
    node_info,
    pod_gpu_request,
    selects,
    snapshot,
    tolerates,
    untolerated,
)
from tidal.placement.model import NodeInfo, Taint

NOW = datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
SPOT, RESERVED = CapacityType.SPOT, CapacityType.RESERVED


def make_node(
    name: str = "n1",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    allocatable: dict[str, Any] | None = None,
    taints: list[dict[str, str]] | None = None,
    conditions: list[dict[str, str]] | None = None,
    unschedulable: bool | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": taints or []}
    if unschedulable is not None:
        spec["unschedulable"] = unschedulable
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": spec,
        "status": {
            "allocatable": allocatable if allocatable is not None else {},
            "conditions": conditions
            if conditions is not None
            else [{"type": "Ready", "status": "True"}],
        },
    }


def make_pod(
    name: str = "p",
    *,
    node: str | None = "n1",
    gpus: int | str | None = 1,
    phase: str = "Running",
    deleting: bool = False,
    namespace: str = "default",
    via: str = "limits",
) -> dict[str, Any]:
    resources: dict[str, Any] = {} if gpus is None else {via: {"nvidia.com/gpu": gpus}}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-29T15:59:00Z"
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": resources}]}
    if node is not None:
        spec["nodeName"] = node
    return {"metadata": metadata, "spec": spec, "status": {"phase": phase}}


def telemetry_at(time: datetime, *utilization: float) -> str:
    doc = GpuTelemetry(
        time=time,
        gpus=[GpuSample(index=i, utilization_percent=u) for i, u in enumerate(utilization)],
    )
    return doc.to_annotation()


# --- capacity type -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, RESERVED),
        ({"tidal.dev/capacity-type": "spot"}, SPOT),
        ({"tidal.dev/capacity-type": "reserved"}, RESERVED),
        ({"karpenter.sh/capacity-type": "spot"}, SPOT),
        ({"karpenter.sh/capacity-type": "on-demand"}, RESERVED),
        ({"karpenter.sh/capacity-type": "reserved"}, RESERVED),
        ({"eks.amazonaws.com/capacityType": "SPOT"}, SPOT),
        ({"eks.amazonaws.com/capacityType": "ON_DEMAND"}, RESERVED),
        ({"cloud.google.com/gke-spot": "true"}, SPOT),
        ({"cloud.google.com/gke-spot": "false"}, RESERVED),
        ({"cloud.google.com/gke-preemptible": "true"}, SPOT),
        ({"kubernetes.azure.com/scalesetpriority": "spot"}, SPOT),
        ({"kubernetes.azure.com/scalesetpriority": "regular"}, RESERVED),
        # Label values compare exactly, as the scheduler compares them for the affinity.
        ({"eks.amazonaws.com/capacityType": "spot"}, RESERVED),
        ({"tidal.dev/capacity-type": "Spot"}, RESERVED),
        # Unrelated labels mark nothing.
        ({"topology.kubernetes.io/region": "spot"}, RESERVED),
    ],
)
def test_capacity_type_follows_every_label_convention(
    labels: dict[str, str], expected: CapacityType
) -> None:
    assert capacity_type(labels) is expected


@pytest.mark.parametrize(
    "labels",
    [
        {"tidal.dev/capacity-type": "reserved", "karpenter.sh/capacity-type": "spot"},
        {"tidal.dev/capacity-type": "reserved", "cloud.google.com/gke-spot": "true"},
        {"karpenter.sh/capacity-type": "on-demand", "eks.amazonaws.com/capacityType": "SPOT"},
        {"tidal.dev/capacity-type": "spot", "karpenter.sh/capacity-type": "on-demand"},
    ],
)
def test_conflicting_markers_make_a_node_spot_because_the_cloud_can_reclaim_it(
    labels: dict[str, str],
) -> None:
    assert capacity_type(labels) is SPOT


@pytest.mark.parametrize("style", ["tidal", "karpenter", "eks", "gke", "aks"])
def test_every_simulated_label_style_reads_back_as_its_capacity_type(style: str) -> None:
    fleet = Fleet.model_validate(
        {
            "nodeGroups": [
                {
                    "name": f"{kind}-{style}",
                    "regions": ["eu-west-1"],
                    "capacityType": kind,
                    "labelStyle": style,
                    "gpu": {"product": "NVIDIA-L4", "memoryMiB": 23034, "count": 4},
                }
                for kind in ("spot", "reserved")
            ]
        }
    )
    infos = {n.name: n for n in snapshot(render_nodes(fleet), [], NOW).nodes}
    spot, reserved = infos[f"spot-{style}-eu-west-1-0"], infos[f"reserved-{style}-eu-west-1-0"]
    assert (spot.capacity_type, reserved.capacity_type) == (SPOT, RESERVED)
    # The spot taint each cloud puts on its spot nodes is tolerated by spot replicas only.
    assert blocking_taints(spot, SPOT) == ()
    assert [t.key for t in blocking_taints(spot, RESERVED)] == [
        t.key for t in spot.taints if is_spot_taint(t)
    ]
    assert blocking_taints(reserved, RESERVED) == ()


# --- taints --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("taint", "spot_taint", "gpu_taint"),
    [
        (Taint("karpenter.sh/capacity-type", "spot", "NoSchedule"), True, False),
        (Taint("eks.amazonaws.com/capacityType", "SPOT", "NoSchedule"), True, False),
        (Taint("cloud.google.com/gke-spot", "true", "NoSchedule"), True, False),
        (Taint("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"), True, False),
        (Taint("tidal.dev/capacity-type", "spot", "NoSchedule"), True, False),
        # Spot replicas tolerate the spot taints as NoSchedule only.
        (Taint("kubernetes.azure.com/scalesetpriority", "spot", "NoExecute"), False, False),
        (Taint("karpenter.sh/capacity-type", "on-demand", "NoSchedule"), False, False),
        (Taint("nvidia.com/gpu", "present", "NoSchedule"), False, True),
        (Taint("nvidia.com/gpu", "", "NoSchedule"), False, True),
        (Taint("nvidia.com/gpu", "present", "NoExecute"), False, False),
        (Taint("node.kubernetes.io/unschedulable", "", "NoSchedule"), False, False),
    ],
)
def test_spot_and_gpu_taints_are_told_apart_by_key_value_and_effect(
    taint: Taint, spot_taint: bool, gpu_taint: bool
) -> None:
    assert (is_spot_taint(taint), is_gpu_taint(taint)) == (spot_taint, gpu_taint)


@pytest.mark.parametrize(
    ("taint", "blocks_spot", "blocks_reserved"),
    [
        (Taint("nvidia.com/gpu", "present", "NoSchedule"), False, False),
        (Taint("cloud.google.com/gke-spot", "true", "NoSchedule"), False, True),
        (Taint("example.com/dedicated", "team-a", "NoSchedule"), True, True),
        (Taint("node.kubernetes.io/not-ready", "", "NoExecute"), True, True),
        (Taint("aws-node-termination-handler/spot-itn", "x", "NoSchedule"), True, True),
        (Taint("karpenter.sh/disrupted", "", "NoSchedule"), True, True),
        (Taint("example.com/soft", "", "PreferNoSchedule"), False, False),
    ],
)
def test_blocking_taints_are_the_hard_taints_a_replica_does_not_tolerate(
    taint: Taint, blocks_spot: bool, blocks_reserved: bool
) -> None:
    node = NodeInfo(name="n", region="r", zone=None, capacity_type=SPOT, taints=(taint,))
    assert (bool(blocking_taints(node, SPOT)), bool(blocking_taints(node, RESERVED))) == (
        blocks_spot,
        blocks_reserved,
    )


# --- node_info -----------------------------------------------------------------------------------


def test_node_info_reads_region_zone_gpu_shape_taints_and_readiness() -> None:
    node = make_node(
        "h100-spot-eu-west-1-0",
        labels={
            "topology.kubernetes.io/region": "eu-west-1",
            "topology.kubernetes.io/zone": "eu-west-1a",
            "karpenter.sh/capacity-type": "spot",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/gpu.memory": "81559",
        },
        allocatable={"cpu": "192", "nvidia.com/gpu": "8"},
        taints=[
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        ],
        unschedulable=True,
    )
    info = node_info(node, 3, NOW)
    assert info == NodeInfo(
        name="h100-spot-eu-west-1-0",
        region="eu-west-1",
        zone="eu-west-1a",
        capacity_type=SPOT,
        labels=node["metadata"]["labels"],
        gpu_product="NVIDIA-H100-80GB-HBM3",
        gpu_memory_mib=81559,
        gpu_allocatable=8,
        gpu_requested=3,
        taints=(
            Taint("nvidia.com/gpu", "present", "NoSchedule"),
            Taint("node.kubernetes.io/unschedulable", "", "NoSchedule"),
        ),
        ready=True,
        unschedulable=True,
        telemetry=None,
    )
    assert info.gpu_free == 5


def test_a_cpu_node_without_labels_is_a_reserved_node_with_nothing_known() -> None:
    info = node_info(make_node("cpu"), 0, NOW)
    assert (info.region, info.zone, info.gpu_product, info.gpu_memory_mib) == (None,) * 4
    assert (info.capacity_type, info.gpu_allocatable, info.gpu_free) == (RESERVED, 0, 0)


@pytest.mark.parametrize(
    ("conditions", "ready"),
    [
        ([{"type": "Ready", "status": "True"}], True),
        ([{"type": "Ready", "status": "False"}], False),
        ([{"type": "Ready", "status": "Unknown"}], False),
        ([{"type": "MemoryPressure", "status": "False"}], False),
        ([], False),  # the kubelet never reported
    ],
)
def test_only_a_ready_true_condition_makes_a_node_ready(
    conditions: list[dict[str, str]], ready: bool
) -> None:
    assert node_info(make_node(conditions=conditions), 0, NOW).ready is ready


@pytest.mark.parametrize(
    ("allocatable", "expected"),
    [
        ({"nvidia.com/gpu": "8"}, 8),
        ({"nvidia.com/gpu": 4}, 4),
        ({"nvidia.com/gpu": "2k"}, 2000),
        ({"nvidia.com/gpu": "1000m"}, 1),
        ({"nvidia.com/gpu": "0"}, 0),
        ({"nvidia.com/gpu": "eight"}, 0),
        ({"nvidia.com/gpu": True}, 0),
        ({}, 0),
    ],
)
def test_allocatable_gpus_parse_as_whole_quantities_and_garbage_as_none(
    allocatable: dict[str, Any], expected: int
) -> None:
    assert node_info(make_node(allocatable=allocatable), 0, NOW).gpu_allocatable == expected


@pytest.mark.parametrize(("raw", "expected"), [("81559", 81559), ("80GB", None), ("", None)])
def test_gpu_memory_label_is_mib_or_unknown(raw: str, expected: int | None) -> None:
    info = node_info(make_node(labels={"nvidia.com/gpu.memory": raw}), 0, NOW)
    assert info.gpu_memory_mib == expected


@pytest.mark.parametrize(
    ("annotation", "known"),
    [
        (telemetry_at(NOW - timedelta(seconds=10), 42.0), True),
        (telemetry_at(NOW - timedelta(seconds=120), 42.0), True),
        (telemetry_at(NOW - timedelta(seconds=121), 42.0), False),
        ("{not json", False),
        (json.dumps({"schemaVersion": 2, "time": "2026-11-29T16:00:00Z"}), False),
    ],
)
def test_telemetry_is_read_from_the_annotation_and_stale_or_garbled_is_unknown(
    annotation: str, known: bool
) -> None:
    info = node_info(make_node(annotations={GPU_TELEMETRY: annotation}), 0, NOW)
    assert (info.telemetry is not None) is known


# --- pods ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}]}, 2),
        ({"containers": [{"resources": {"requests": {"nvidia.com/gpu": "1"}}}]}, 1),
        # A request wins over the limit (the API server keeps them equal for extended resources).
        (
            {
                "containers": [
                    {
                        "resources": {
                            "requests": {"nvidia.com/gpu": 1},
                            "limits": {"nvidia.com/gpu": 1},
                        }
                    }
                ]
            },
            1,
        ),
        ({"containers": [{"resources": {"limits": {"cpu": "4"}}}]}, 0),
        ({"containers": [{"name": "no-resources"}]}, 0),
        (
            {
                "containers": [
                    {"resources": {"limits": {"nvidia.com/gpu": 1}}},
                    {"resources": {"limits": {"nvidia.com/gpu": 2}}},
                ]
            },
            3,
        ),
        # An ordinary init container runs alone: the pod needs the larger of the two phases.
        (
            {
                "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": 4}}}],
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": 1}}}],
            },
            4,
        ),
        # A sidecar (restartable init container) runs alongside the app containers.
        (
            {
                "initContainers": [
                    {"restartPolicy": "Always", "resources": {"limits": {"nvidia.com/gpu": 1}}}
                ],
                "containers": [{"resources": {"limits": {"nvidia.com/gpu": 2}}}],
            },
            3,
        ),
        ({}, 0),
    ],
)
def test_a_pods_gpu_request_is_computed_as_the_scheduler_does(
    spec: dict[str, Any], expected: int
) -> None:
    assert pod_gpu_request({"spec": spec}) == expected


def test_gpu_requests_sum_per_node_over_bound_pods_that_have_not_terminated() -> None:
    pods = [
        make_pod("a", node="n1", gpus=2),
        make_pod("b", node="n1", gpus=1, via="requests"),
        make_pod("c", node="n2", gpus=4, phase="Pending"),  # bound, still starting: holds them
        make_pod("d", node="n2", gpus=1, deleting=True),  # terminating: still holds them
        make_pod("e", node="n3", gpus=8, phase="Succeeded"),
        make_pod("f", node="n3", gpus=8, phase="Failed"),
        make_pod("g", node=None, gpus=8, phase="Pending"),  # not scheduled: holds nothing
        make_pod("h", node="n4", gpus=None),
    ]
    assert gpu_requests_by_node(pods) == {"n1": 3, "n2": 5}


def test_snapshot_puts_each_nodes_requests_on_it_and_sorts_nodes_by_name() -> None:
    nodes = [
        make_node("b", allocatable={"nvidia.com/gpu": "8"}),
        make_node("a", allocatable={"nvidia.com/gpu": "8"}),
    ]
    fleet = snapshot(nodes, [make_pod(node="b", gpus=3), make_pod(node="x", gpus=1)], NOW)
    assert [(n.name, n.gpu_requested, n.gpu_free) for n in fleet.nodes] == [
        ("a", 0, 8),
        ("b", 3, 5),
    ]
    assert fleet.observed_at == NOW


def test_snapshot_of_the_same_objects_in_any_order_is_equal() -> None:
    nodes = [make_node(name) for name in ("c", "a", "b")]
    pods = [make_pod("p1", node="a"), make_pod("p2", node="b", gpus=2)]
    assert snapshot(nodes, pods, NOW) == snapshot(nodes[::-1], pods[::-1], NOW)


def test_endpoint_pods_holds_the_pods_keys_and_their_gpus_per_node() -> None:
    own = endpoint_pods(
        [
            make_pod("llama-spot-1", node="n1", gpus=2, namespace="ml"),
            make_pod("llama-spot-2", node=None, gpus=2, namespace="ml"),
            make_pod("llama-reserved-1", node="n2", gpus=2, namespace="ml", phase="Failed"),
        ]
    )
    assert own.gpus_by_node == {"n1": 2}
    assert own.keys == {("ml", "llama-spot-1"), ("ml", "llama-spot-2"), ("ml", "llama-reserved-1")}


# --- what an endpoint's spec.podTemplate adds: tolerations, node requirements ------------------


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        ({"key": "sku", "value": "gpu"}, Taint("sku", "gpu", "NoSchedule"), True),
        ({"key": "sku", "value": "gpu"}, Taint("sku", "cpu", "NoSchedule"), False),
        ({"key": "sku", "operator": "Exists"}, Taint("sku", "", "NoExecute"), True),
        (
            {"key": "sku", "operator": "Exists", "effect": "NoSchedule"},
            Taint("sku", "gpu", "NoExecute"),
            False,
        ),
        ({"operator": "Exists"}, Taint("anything", "x", "NoSchedule"), True),
        ({"operator": "Exists", "effect": "NoExecute"}, Taint("a", "x", "NoSchedule"), False),
        ({"key": "other", "operator": "Exists"}, Taint("sku", "gpu", "NoSchedule"), False),
    ],
)
def test_a_toleration_matches_a_taint_as_the_scheduler_does(
    toleration: dict[str, Any], taint: Taint, tolerated: bool
) -> None:
    assert tolerates(Toleration.model_validate(toleration), taint) is tolerated
    blocking = untolerated((taint,), CapacityType.RESERVED, [Toleration.model_validate(toleration)])
    assert (blocking == ()) is tolerated


def _overrides(**pod_spec: Any) -> PodSpecOverrides:
    return PodSpecOverrides.model_validate(pod_spec)


def _required(*expressions: dict[str, Any]) -> PodSpecOverrides:
    term = {"matchExpressions": list(expressions)}
    required = {"nodeSelectorTerms": [term]}
    return _overrides(
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    )


@pytest.mark.parametrize(
    ("overrides", "labels", "selected"),
    [
        (None, {}, True),
        (_overrides(), {}, True),
        (_overrides(nodeSelector={"pool": "a"}), {"pool": "a", "x": "y"}, True),
        (_overrides(nodeSelector={"pool": "a"}), {"pool": "b"}, False),
        (_overrides(nodeSelector={"pool": "a"}), {}, False),
        (_required({"key": "pool", "operator": "NotIn", "values": ["a"]}), {}, True),
        (_required({"key": "pool", "operator": "NotIn", "values": ["a"]}), {"pool": "a"}, False),
        (_required({"key": "pool", "operator": "Exists"}), {"pool": ""}, True),
        (_required({"key": "pool", "operator": "DoesNotExist"}), {"pool": ""}, False),
        (_required({"key": "rank", "operator": "Lt", "values": ["3"]}), {"rank": "2"}, True),
        (_required({"key": "rank", "operator": "Lt", "values": ["3"]}), {"rank": "3"}, False),
        (_required({"key": "rank", "operator": "Gt", "values": ["3"]}), {"rank": "x"}, False),
        (_required({"key": "rank", "operator": "Gt", "values": ["-1"]}), {}, False),
        (
            _required(
                {"key": "pool", "operator": "In", "values": ["a", "b"]},
                {"key": "rank", "operator": "Gt", "values": ["1"]},
            ),
            {"pool": "b", "rank": "2"},
            True,
        ),
    ],
)
def test_the_pod_templates_node_requirements_select_nodes_as_the_scheduler_does(
    overrides: PodSpecOverrides | None, labels: dict[str, str], selected: bool
) -> None:
    assert selects(overrides, labels) is selected
