"""The Kopf indexes every reconcile reads, and the pure readers over them."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import pytest
from tests.unit.test_render_endpoint import make_ie

from tidal.api.labels import DEFAULT_STORAGE_CLASS, TEMPLATE_HASH, CapacityType
from tidal.api.wire import start_seconds
from tidal.cost import DEFAULT_CATALOG
from tidal.placement.fleet import endpoint_pods
from tidal.placement.model import FleetSnapshot, NodeInfo
from tidal.reconcile import observation as obs
from tidal.reconcile.collection import StorageClassInfo
from tidal.render.collection import render_statefulset
from tidal.render.endpoint import (
    Share,
    keep_preferences,
    render_deployment,
    stamp,
)
from tidal.render.events import apply_events
from tidal.residency import checks
from tidal.runtime.indexes import (
    CHILD_DEPLOYMENTS,
    CHILD_PODS,
    COLLECTION_CLAIMS,
    COLLECTION_PDBS,
    COLLECTION_PODS,
    COLLECTION_SERVICES,
    COLLECTION_STATEFULSETS,
    COLLECTIONS,
    ENDPOINTS,
    GPU_PODS,
    NAMESPACE_POLICIES,
    NODES,
    STORAGE_CLASSES,
    CollectionEntry,
    EndpointEntry,
    FleetMemo,
    GpuPod,
    Inputs,
    capture,
    capture_collection,
    collection_regions,
    endpoints_in_namespace,
    endpoints_on_node,
    fleet_snapshot,
    gpu_pod_entry,
    index_child_deployments,
    index_child_pods,
    index_child_services,
    index_collection_claims,
    index_collection_statefulsets,
    index_endpoints,
    index_namespace_policies,
    index_nodes,
    storage_class_info,
)

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
    return kopf.Body(cast(kopf.RawBody, raw))  # a plain dict is a RawBody at runtime


# `@kopf.index` types a handler as Kopf's whole callback protocol (every keyword, any result);
# ours take the few keywords they read and return the index entry.
_Handler = Callable[..., Coroutine[Any, Any, dict[Any, Any]]]


def indexed(
    handler: Callable[..., object],
    raw: dict[str, Any],
    *,
    name: str = "",
    namespace: str | None = None,
) -> dict[Any, Any]:
    """What an index handler stores for one object, called with the keywords Kopf passes."""
    return asyncio.run(cast(_Handler, handler)(body=body(raw), name=name, namespace=namespace))


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
    (entry,) = indexed(index_nodes, node, name="n1").values()
    assert (entry.name, entry.region, entry.capacity_type, entry.gpu_allocatable) == (
        "n1",
        "eu-west-1",
        CapacityType.SPOT,
        8,
    )

    annotated = {
        "metadata": {"name": "ml", "annotations": {"tidal.dev/allowed-regions": "eu-west-1"}}
    }
    assert indexed(index_namespace_policies, annotated, name="ml") == {"ml": "eu-west-1"}
    assert indexed(index_namespace_policies, {"metadata": {"name": "x"}}, name="x") == {}

    endpoint = {
        "metadata": {"name": "chat", "uid": "u-1"},
        "spec": {"vectorCollectionRef": {"name": "docs"}, "runtime": {"engine": "SGLang"}},
    }
    assert indexed(index_endpoints, endpoint, namespace="ml", name="chat") == {
        "ml": EndpointEntry("chat", "docs", uid="u-1", engine="SGLang")
    }
    assert indexed(index_endpoints, endpoint, namespace=None, name="chat") == {}


# --- the endpoints' own children -------------------------------------------------------------


def _live_deployment(ie_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A rendered Deployment as the API server returns it: defaults, managed fields, status."""
    rendered = stamp(
        render_deployment(
            make_ie(ie_spec),
            CapacityType.SPOT,
            Share(replicas=2, regions=("eu-west-1",), preferred_nodes=(("n1", 90),)),
        )
    )
    live = copy.deepcopy(rendered)
    live["metadata"].update(
        uid="d-uid",
        generation=3,
        resourceVersion="42",
        managedFields=[{"manager": "tidal", "fieldsV1": {"f:spec": {}}}],
    )
    live["spec"]["strategy"] = {"type": "RollingUpdate"}
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["status"] = {"observedGeneration": 3, "replicas": 2, "readyReplicas": 1}
    return live


def _live_pod(name: str, node: str | None, *, ready: bool, template_hash: str) -> dict[str, Any]:
    conditions = [{"type": "PodScheduled", "status": "True" if node else "False"}]
    if ready:
        conditions.append(
            {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-31T11:59:00Z"}
        )
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "server",
                "image": "vllm/vllm-openai",
                "args": ["--model", "m"],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
            }
        ],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"{name}-uid",
            "creationTimestamp": "2025-01-31T11:58:00Z",
            "labels": {
                "app.kubernetes.io/managed-by": "tidal",
                "tidal.dev/endpoint": "chat",
                "tidal.dev/capacity-type": "spot",
            },
            "annotations": {TEMPLATE_HASH: template_hash},
            "managedFields": [{"manager": "kube-scheduler"}],
        },
        "spec": spec,
        "status": {
            "phase": "Running" if ready else "Pending",
            "conditions": conditions,
            "podIP": "10.0.0.1" if node else None,
            "containerStatuses": [{"name": "server", "ready": ready, "image": "x" * 200}],
        },
    }


def _pruned(obj: dict[str, Any], index: Callable[..., object]) -> dict[str, Any]:
    (entry,) = indexed(index, obj).values()
    return dict(entry)


def test_a_child_is_indexed_under_its_endpoint_without_what_no_reconcile_reads() -> None:
    live = _live_deployment()
    entry = indexed(index_child_deployments, live)
    assert list(entry) == [("ml", "chat")]
    kept = entry[("ml", "chat")]
    assert kept["metadata"]["annotations"] == live["metadata"]["annotations"]
    assert kept["status"] == live["status"]
    assert kept["spec"]["template"]["spec"] == {
        "affinity": live["spec"]["template"]["spec"]["affinity"]
    }
    assert "managedFields" not in kept["metadata"]
    assert "strategy" not in kept["spec"]

    pod_entry = _pruned(_live_pod("p", "n1", ready=True, template_hash="t"), index_child_pods)
    assert pod_entry["spec"] == {
        "nodeName": "n1",
        "containers": [{"name": "server", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
    }
    assert set(pod_entry["status"]) == {"phase", "conditions", "podIP", "containerStatuses"}
    # Of the containers' statuses only what says a replica restarted (its image is not kept).
    assert pod_entry["status"]["containerStatuses"] == [{"name": "server"}]

    service = {"kind": "Service", "metadata": {"name": "chat", "namespace": "ml", "labels": {}}}
    assert indexed(index_child_services, service) == {}


def test_pruned_children_read_the_same_as_whole_ones() -> None:
    """Every reader a reconcile applies to its children answers the same on the index entries."""
    live = _live_deployment()
    template_hash = live["metadata"]["annotations"][TEMPLATE_HASH]
    pods = [
        _live_pod("ready", "n1", ready=True, template_hash=template_hash),
        _live_pod("old", "n2", ready=True, template_hash="previous"),
        _live_pod("pending", None, ready=False, template_hash=template_hash),
    ]
    pods[1]["status"]["containerStatuses"][0]["restartCount"] = 2
    kept_deployment = _pruned(live, index_child_deployments)
    kept_pods = [_pruned(p, index_child_pods) for p in pods]
    fleet = FleetSnapshot(
        nodes=tuple(
            NodeInfo(name=n, region="eu-west-1", zone=None, capacity_type=CapacityType.SPOT)
            for n in ("n1", "n2")
        )
    )
    later = datetime(2025, 1, 31, 12, 30, tzinfo=UTC)
    rendered = stamp(
        render_deployment(make_ie(), CapacityType.SPOT, Share(replicas=3, regions=("eu-west-1",)))
    )
    for whole, kept in ((live, kept_deployment), (pods, kept_pods)):
        assert _readings(whole, kept, rendered, fleet, later)


def _readings(
    whole: Any, kept: Any, rendered: dict[str, Any], fleet: FleetSnapshot, now: datetime
) -> bool:
    if isinstance(whole, dict):  # a Deployment
        key = ("Deployment", whole["metadata"]["name"])
        assert keep_preferences(rendered, whole) == keep_preferences(rendered, kept)
        assert obs.differs(rendered, {key: whole}) == obs.differs(rendered, {key: kept})
        assert apply_events([whole], [rendered]) == apply_events([kept], [rendered])
        assert obs.current_replicas([whole], "chat") == obs.current_replicas([kept], "chat")
        return True
    assert [p["metadata"]["name"] for p in obs.own_pods(kept)] == [
        p["metadata"]["name"] for p in obs.own_pods(whole)
    ]
    assert obs.serving_replicas(whole, fleet) == obs.serving_replicas(kept, fleet)
    assert obs.pending_spot_pods(whole, now, 60) == obs.pending_spot_pods(kept, now, 60)
    assert obs.placed_replicas(whole, fleet) == obs.placed_replicas(kept, fleet)
    assert obs.first_ready_time(whole) == obs.first_ready_time(kept)
    starts = [start_seconds(p) for p in kept]
    assert [start_seconds(p) for p in whole] == starts
    assert starts[0] is not None
    assert starts[0][1] == 60.0
    assert starts[1:] == [None, None]  # the restarted one and the pending one are not measured
    assert obs.lost_node_pods(whole, fleet) == [] == obs.lost_node_pods(kept, fleet)
    assert endpoint_pods(whole) == endpoint_pods(kept)
    assert checks.violations(whole, {"n1": "eu-west-1", "n2": "us-east-1"}, {"eu-west-1"}) == (
        checks.violations(kept, {"n1": "eu-west-1", "n2": "us-east-1"}, {"eu-west-1"})
    )
    return True


def test_capture_hands_an_endpoint_its_own_children_only() -> None:
    chat = {"metadata": {"name": "chat-spot"}}
    other = {"metadata": {"name": "other-spot"}}
    indexes = {
        CHILD_DEPLOYMENTS: {("ml", "chat"): [chat], ("ml", "other"): [other]},
        CHILD_PODS: {("ml", "chat"): [{"metadata": {"name": "p"}}]},
    }
    inputs = capture(indexes, "ml", NOW, "chat")
    assert inputs.deployments == (chat,)
    assert inputs.services == ()
    assert [p["metadata"]["name"] for p in inputs.pods] == ["p"]
    assert capture(indexes, "ml", NOW).deployments == ()
    assert capture(indexes, "elsewhere", NOW, "chat").deployments == ()


def test_a_memo_keeps_unchanged_nodes_and_fleets_as_the_same_objects() -> None:
    def info(name: str) -> NodeInfo:
        return NodeInfo(name=name, region="eu-west-1", zone=None, capacity_type=CapacityType.SPOT)

    n1, n2 = info("n1"), info("n2")
    nodes = {"n2": [n2], "n1": [n1]}
    pods = {"n1": [GpuPod(namespace="ml", name="p", gpus=2)]}
    memo = FleetMemo()
    first = fleet_snapshot(nodes, pods, NOW, memo)
    assert first == fleet_snapshot(nodes, pods, NOW)  # the memo changes identity, never content
    assert [n.name for n in first.nodes] == ["n1", "n2"]
    assert first.nodes[0].gpu_requested == 2

    again = fleet_snapshot(nodes, pods, NOW, memo)
    assert again.nodes is first.nodes

    # n2 changed (a new object from its watch event): n1's object survives, n2's is the new one.
    n2_changed = dataclasses.replace(n2, ready=False)
    changed = fleet_snapshot({"n1": [n1], "n2": [n2_changed]}, pods, NOW, memo)
    assert changed.nodes[0] is first.nodes[0]
    assert changed.nodes[1] is n2_changed

    # n1's pods changed: its GPUs are recounted.
    fewer = fleet_snapshot({"n1": [n1], "n2": [n2_changed]}, {}, NOW, memo)
    assert fewer.nodes[0] is n1
    assert fewer.nodes[0].gpu_requested == 0


# --- the Managed collections' children ---------------------------------------------------------


def test_a_collections_statefulset_is_indexed_with_what_its_reconcile_reads() -> None:
    from tests.unit.test_render_collection import QDRANT, QDRANT_PLAN

    rendered = stamp(render_statefulset(QDRANT, QDRANT_PLAN))
    live = copy.deepcopy(rendered)
    live["status"] = {"readyReplicas": 1}
    ((key, entry),) = indexed(index_collection_statefulsets, live).items()
    assert key == (rendered["metadata"]["namespace"], QDRANT.metadata["name"])
    # The render stamp and replicas (change Events), the volume size, the status.
    assert entry["metadata"]["annotations"] == rendered["metadata"]["annotations"]
    assert entry["spec"]["replicas"] == rendered["spec"]["replicas"]
    template = entry["spec"]["volumeClaimTemplates"][0]
    assert template["spec"]["resources"]["requests"]["storage"] == QDRANT_PLAN.volume
    assert entry["status"] == {"readyReplicas": 1}
    assert "template" not in entry["spec"]  # the pod template: never read, not kept
    assert apply_events([entry], [rendered]) == []

    claim = {
        "metadata": {"name": "data-docs-0", "namespace": "rag", "labels": live_labels()},
        "spec": {"storageClassName": "gp3", "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending", "capacity": {}},
    }
    # Whether it bound and to which class (`reconcile.collection.volume_condition`).
    assert indexed(index_collection_claims, claim) == {
        ("rag", "docs"): {
            "metadata": {"name": "data-docs-0", "namespace": "rag", "labels": live_labels()},
            "spec": {"storageClassName": "gp3"},
            "status": {"phase": "Pending"},
        }
    }
    assert indexed(index_collection_claims, {"metadata": {"name": "x", "labels": {}}}) == {}


def live_labels() -> dict[str, str]:
    return {"tidal.dev/managed-by": "tidal", "tidal.dev/collection": "docs"}


def test_capture_collection_freezes_its_policy_pairings_children_and_node_regions() -> None:
    def child(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}}

    engine_pod = {"metadata": {"name": "docs-0"}, "spec": {"nodeName": "cpu-1"}}
    unscheduled = {"metadata": {"name": "docs-1"}, "spec": {}}
    indexes = {
        NAMESPACE_POLICIES: {"rag": ["eu-west-1"]},
        ENDPOINTS: {
            "rag": [
                EndpointEntry("chat", "docs", desired=2),
                EndpointEntry("idle", "docs", desired=0),
                EndpointEntry("other", "faq", desired=5),
            ]
        },
        COLLECTION_STATEFULSETS: {("rag", "docs"): [child("docs")], ("rag", "faq"): [child("faq")]},
        COLLECTION_SERVICES: {("rag", "docs"): [child("docs"), child("docs-peers")]},
        COLLECTION_PDBS: {("rag", "docs"): [child("docs")]},
        COLLECTION_CLAIMS: {("rag", "docs"): [child("data-docs-1"), child("data-docs-0")]},
        COLLECTION_PODS: {("rag", "docs"): [engine_pod, unscheduled]},
        NODES: {
            "cpu-1": [NodeInfo("cpu-1", "eu-west-1", None, CapacityType.RESERVED)],
            "cpu-2": [NodeInfo("cpu-2", "us-east-1", None, CapacityType.RESERVED)],
        },
    }
    world = capture_collection(indexes, "rag", "docs", DEFAULT_CATALOG)
    assert world.namespace_policy == "eu-west-1"
    assert world.paired_desired == (2, 0)
    assert world.statefulset == child("docs")
    assert [s["metadata"]["name"] for s in world.services] == ["docs", "docs-peers"]
    assert len(world.pdbs) == 1
    assert world.claims == ("data-docs-0", "data-docs-1")
    assert [p["metadata"]["name"] for p in world.pods] == ["docs-0", "docs-1"]
    assert world.node_regions == {"cpu-1": "eu-west-1"}
    assert world.catalog is DEFAULT_CATALOG

    assert world.storage_classes is None  # not indexed here: not judged
    assert [c["metadata"]["name"] for c in world.volumes] == ["data-docs-1", "data-docs-0"]
    with_classes = {**indexes, STORAGE_CLASSES: {"gp3": [StorageClassInfo(default=True)]}}
    classes = capture_collection(with_classes, "rag", "docs", DEFAULT_CATALOG).storage_classes
    assert classes == {"gp3": StorageClassInfo(default=True)}
    no_classes = {**indexes, STORAGE_CLASSES: {}}
    assert capture_collection(no_classes, "rag", "docs", DEFAULT_CATALOG).storage_classes == {}

    external = capture_collection(indexes, "rag", "external", DEFAULT_CATALOG)
    assert (external.statefulset, external.pods, external.claims) == (None, (), ())
    assert capture_collection({}, "rag", "docs", DEFAULT_CATALOG).paired_desired == ()


def test_an_endpoints_desired_replicas_are_indexed_for_its_collection() -> None:
    endpoint = {
        "metadata": {"name": "chat", "uid": "u-1"},
        "spec": {"vectorCollectionRef": {"name": "docs"}},
        "status": {"replicas": {"desired": 3}},
    }
    (entry,) = indexed(index_endpoints, endpoint, namespace="rag", name="chat").values()
    assert (entry.collection, entry.desired) == ("docs", 3)


@pytest.mark.parametrize(
    ("storage_class", "expected"),
    [
        (
            {"metadata": {"annotations": {DEFAULT_STORAGE_CLASS: "true"}}},
            StorageClassInfo(default=True),
        ),
        (
            {"metadata": {"annotations": {DEFAULT_STORAGE_CLASS: "false"}}},
            StorageClassInfo(),
        ),
        (
            {"metadata": {}, "volumeBindingMode": "WaitForFirstConsumer"},
            StorageClassInfo(wait_for_consumer=True),
        ),
        ({"metadata": {}, "volumeBindingMode": "Immediate"}, StorageClassInfo()),
    ],
)
def test_a_storage_class_is_indexed_as_default_or_not_and_by_when_it_binds(
    storage_class: dict[str, Any], expected: StorageClassInfo
) -> None:
    assert storage_class_info(storage_class) == expected
