"""`spec.podTemplate` on a real API server and scheduler: a toleration lets replicas onto GPU nodes
tainted as AKS taints its GPU pools (`sku=gpu:NoSchedule`), and nothing else does.

The module brings its own reserved H100 node in a region of its own (the default fleet stays as
the other modules expect it, see `fleet_ops`), taints it with kubectl, and restricts an endpoint
to that region and to reserved capacity, so that node is the only one its replica may use.
Without the override the scheduler leaves the replica Pending on the taint and the planner does
not count the node either; adding the toleration rolls the replica (the override is part of the
pod template) and it binds there. Every assertion reads what the API server holds: the pods and
their nodes and conditions, the Deployment's template, the endpoint's status.

(The refusal of an override that conflicts with what Tidal owns needs the admission webhooks:
tests/e2e/test_admission.py.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Operator, wait_for
from tests.e2e.fleet_ops import extra_nodes, extra_region_nodes, names
from tests.e2e.kube import Kube, condition
from tidal.api.labels import TEMPLATE_HASH

# A region no other module uses: its one node is this module's alone.
REGION = "australia-east"
H100 = "NVIDIA-H100-80GB-HBM3"
TAINT = "sku=gpu:NoSchedule"
SKU_GPU = {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
# Long enough for several reconciles (5 s in the e2e operator) and scheduling attempts.
HOLD_SECONDS = 15


@pytest.fixture(scope="module")
def tainted_node(kube: Kube, operator: Operator) -> Iterator[str]:
    """One reserved H100 node in `REGION`, tainted `sku=gpu:NoSchedule` by kubectl."""
    with extra_nodes(kube, extra_region_nodes(REGION, reserved=1, spot=0)) as nodes:
        (name,) = names(nodes)
        kube.run("taint", "node", name, TAINT)
        try:
            yield name
        finally:
            kube.run("taint", "node", name, f"{TAINT}-", check=False)


def _endpoint(name: str, pod_template: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "gpu": {"count": 1, "products": [H100]},
        "capacity": {"policy": "ReservedOnly"},
        "residency": {"regions": [REGION]},
        "scaling": {"minReplicas": 1, "maxReplicas": 1},
    }
    if pod_template is not None:
        spec["podTemplate"] = pod_template
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": name},
        "spec": spec,
    }


def _pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        pod
        for pod in kube.list("pods", namespace, selector=f"tidal.dev/endpoint={name}")
        if not pod["metadata"].get("deletionTimestamp")
    ]


def _unschedulable_on_a_taint(pod: dict[str, Any]) -> str | None:
    """The scheduler's message when it left `pod` Pending, some nodes for a taint it does not
    tolerate (the scheduler counts reasons, it does not name taints; the one node the
    endpoint's affinity admits carries only the GPU taint, which replicas tolerate, and sku)."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
            and "untolerated taint" in (cond.get("message") or "")
        ):
            return str(cond["message"])
    return None


def _placed(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    obj = kube.get("inferenceendpoint", name, namespace) or {}
    generation = (obj.get("metadata") or {}).get("generation")
    if (obj.get("status") or {}).get("observedGeneration") != generation:
        return None
    return condition(obj, "Placed")


def test_a_toleration_override_lets_replicas_onto_tainted_gpu_nodes(
    kube: Kube, namespace: str, tainted_node: str
) -> None:
    kube.apply(_endpoint("tolerant"), namespace)

    # Without the override: Pending on the taint, and the planner does not count the node.
    pending = wait_for(
        "the replica left Pending by the scheduler on an untolerated taint",
        lambda: [p for p in _pods(kube, namespace, "tolerant") if _unschedulable_on_a_taint(p)],
        timeout=120,
    )
    placed = wait_for(
        "Placed=False: no usable capacity",
        lambda: (c := _placed(kube, namespace, "tolerant")) and c["status"] == "False" and c,
        timeout=60,
    )
    assert placed["reason"] == "InsufficientCapacity", placed
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        bound = [p["spec"].get("nodeName") for p in _pods(kube, namespace, "tolerant")]
        assert not any(bound), f"a replica was bound without the toleration: {bound}"
        time.sleep(1)

    # With it: the template changes (a roll), the replica binds to the tainted node.
    patch = {"spec": {"podTemplate": {"spec": {"tolerations": [SKU_GPU]}}}}
    kube.run(
        "patch", "inferenceendpoint", "tolerant", "-n", namespace,
        "--type=merge", "-p", json.dumps(patch),
    )  # fmt: skip

    def running_on_the_node() -> list[dict[str, Any]]:
        pods = _pods(kube, namespace, "tolerant")
        running = [
            p
            for p in pods
            if p["spec"].get("nodeName") == tainted_node
            and (p.get("status") or {}).get("phase") == "Running"
        ]
        return running if len(pods) == len(running) == 1 else []

    (pod,) = wait_for("the replica Running on the tainted node", running_on_the_node, timeout=180)
    deployment = kube.get("deployment", "tolerant-reserved", namespace)
    assert deployment is not None
    template = deployment["spec"]["template"]
    tolerations = template["spec"]["tolerations"]
    assert SKU_GPU in tolerations
    # Tidal's own toleration of the GPU taint is still there: the override adds, never replaces.
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert (
        pod["metadata"]["annotations"][TEMPLATE_HASH]
        == (deployment["metadata"]["annotations"][TEMPLATE_HASH])
    )
    assert (
        pod["metadata"]["annotations"][TEMPLATE_HASH]
        != pending[0]["metadata"]["annotations"][TEMPLATE_HASH]
    )
    placed = wait_for(
        "Placed=True once the planner counts the tolerated node",
        lambda: (c := _placed(kube, namespace, "tolerant")) and c["status"] == "True" and c,
        timeout=60,
    )
    assert placed["reason"] == "Placed"
    status = (kube.get("inferenceendpoint", "tolerant", namespace) or {})["status"]
    assert status["placement"]["nodes"] == [tainted_node]
