"""The Kopf indexes every reconcile reads, and the pure readers over them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import kopf

from tidal.controllers.indexes import (
    COLLECTIONS,
    GPU_PODS,
    NAMESPACE_POLICIES,
    NODES,
    CollectionEntry,
    EndpointEntry,
    GpuPod,
    Inputs,
    capture,
    collection_regions,
    endpoints_in_namespace,
    endpoints_on_node,
    fleet_snapshot,
    gpu_pod_entry,
    index_endpoints,
    index_namespace_policies,
    index_nodes,
)
from tidal.placement.model import CapacityType, NodeInfo

NOW = datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC)


def pod(
    name: str,
    node: str | None,
    gpus: int,
    *,
    phase: str = "Running",
    endpoint: str | None = None,
) -> dict[str, Any]:
    labels = {"tidal.dev/endpoint": endpoint} if endpoint else {}
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": resources}]}
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"name": name, "namespace": "ml", "labels": labels},
        "spec": spec,
        "status": {"phase": phase},
    }


def test_a_bound_gpu_pod_is_indexed_under_its_node() -> None:
    assert gpu_pod_entry(pod("p", "n1", 2, endpoint="chat")) == {
        "n1": GpuPod(namespace="ml", name="p", gpus=2, endpoint="chat")
    }
    assert gpu_pod_entry(pod("q", "n1", 1)) == {"n1": GpuPod(namespace="ml", name="q", gpus=1)}


def test_pods_holding_no_gpus_on_a_node_leave_the_index() -> None:
    # {} (not None) is what makes Kopf drop a pod's earlier entry.
    assert gpu_pod_entry(pod("cpu", "n1", 0)) == {}
    assert gpu_pod_entry(pod("pending", None, 1)) == {}
    assert gpu_pod_entry(pod("done", "n1", 1, phase="Succeeded")) == {}
    assert gpu_pod_entry(pod("failed", "n1", 1, phase="Failed")) == {}


def info(name: str, capacity: CapacityType = CapacityType.SPOT) -> NodeInfo:
    return NodeInfo(
        name=name, region="eu-west-1", zone=None, capacity_type=capacity, gpu_allocatable=8
    )


def test_the_snapshot_adds_up_the_gpus_pods_hold_on_each_node() -> None:
    nodes = {"b": [info("b")], "a": [info("a", CapacityType.RESERVED)], "c": [info("c")]}
    pods = {
        "a": [GpuPod("ml", "p1", 2), GpuPod("ml", "p2", 3)],
        "b": [GpuPod("ml", "p3", 8)],
        "gone": [GpuPod("ml", "p4", 1)],
    }
    snapshot = fleet_snapshot(nodes, pods, NOW)
    assert [(n.name, n.gpu_requested, n.gpu_free) for n in snapshot.nodes] == [
        ("a", 5, 3),
        ("b", 8, 0),
        ("c", 0, 8),
    ]
    assert snapshot.observed_at == NOW


def test_capture_freezes_the_namespaces_policy_and_collections() -> None:
    indexes = {
        NODES: {"a": [info("a")]},
        GPU_PODS: {},
        NAMESPACE_POLICIES: {"ml": ["eu-west-1"], "other": ["us-east-1"]},
        COLLECTIONS: {
            "ml": [CollectionEntry("docs", ("eu-west-1", "eu-central-1"))],
            "other": [CollectionEntry("docs", ("us-east-1",))],
        },
    }
    inputs = capture(indexes, "ml", NOW)
    assert [n.name for n in inputs.fleet.nodes] == ["a"]
    assert inputs.namespace_policy == "eu-west-1"
    assert inputs.collection_regions("docs") == frozenset({"eu-west-1", "eu-central-1"})
    # No pairing, or a collection that does not exist: no constraint from it.
    assert inputs.collection_regions(None) is None
    assert inputs.collection_regions("missing") is None
    assert capture(indexes, "third", NOW).namespace_policy is None


def test_capture_without_indexes_is_an_empty_world() -> None:
    assert capture({}, "ml", NOW) == Inputs(fleet=fleet_snapshot({}, {}, NOW))


def test_a_node_change_concerns_the_endpoints_with_pods_there() -> None:
    pods = {
        "n1": [
            GpuPod("ml", "chat-spot-1", 1, "chat"),
            GpuPod("ml", "chat-spot-2", 1, "chat"),
            GpuPod("ai", "rag-spot-1", 1, "rag"),
            GpuPod("ml", "training", 8),
        ],
        "n2": [GpuPod("ml", "other-1", 1, "other")],
    }
    assert endpoints_on_node(pods, "n1") == {("ml", "chat"), ("ai", "rag")}
    assert endpoints_on_node(pods, "n3") == set()


def test_a_namespace_or_collection_change_concerns_its_endpoints() -> None:
    endpoints = {
        "ml": [EndpointEntry("chat", "docs"), EndpointEntry("rag", "wiki"), EndpointEntry("x")],
        "ai": [EndpointEntry("chat", "docs")],
    }
    assert endpoints_in_namespace(endpoints, "ml") == {("ml", "chat"), ("ml", "rag"), ("ml", "x")}
    assert endpoints_in_namespace(endpoints, "ml", collection="docs") == {("ml", "chat")}
    assert endpoints_in_namespace(endpoints, "none") == set()


def test_an_unreadable_collection_allows_no_region() -> None:
    assert collection_regions({"spec": {"residency": {"regions": ["eu-west-1"]}}}) == ("eu-west-1",)
    assert collection_regions({"spec": {"residency": {}}}) == ()
    assert collection_regions({}) == ()


def body(raw: dict[str, Any]) -> kopf.Body:
    return kopf.Body(raw)  # type: ignore[arg-type]  # a plain dict is a RawBody at runtime


def test_the_index_handlers_store_small_parsed_entries() -> None:
    node = {
        "metadata": {
            "name": "n1",
            "labels": {
                "topology.kubernetes.io/region": "eu-west-1",
                "tidal.dev/capacity-type": "spot",
            },
        },
        "status": {
            "allocatable": {"nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    (entry,) = asyncio.run(index_nodes(body(node), name="n1")).values()
    assert (entry.name, entry.region, entry.capacity_type, entry.gpu_allocatable) == (
        "n1",
        "eu-west-1",
        CapacityType.SPOT,
        8,
    )

    annotated = {
        "metadata": {"name": "ml", "annotations": {"tidal.dev/allowed-regions": "eu-west-1"}}
    }
    assert asyncio.run(index_namespace_policies(body(annotated), name="ml")) == {"ml": "eu-west-1"}
    assert asyncio.run(index_namespace_policies(body({"metadata": {"name": "x"}}), name="x")) == {}

    endpoint = {"metadata": {"name": "chat"}, "spec": {"vectorCollectionRef": {"name": "docs"}}}
    assert asyncio.run(index_endpoints(body(endpoint), namespace="ml", name="chat")) == {
        "ml": EndpointEntry("chat", "docs")
    }
    assert asyncio.run(index_endpoints(body(endpoint), namespace=None, name="chat")) == {}
