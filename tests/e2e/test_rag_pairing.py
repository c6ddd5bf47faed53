"""RAG stays in-region: an endpoint paired with a VectorCollection runs only where it lives."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tests.e2e.conftest import REPO, wait_for
from tests.e2e.kube import Kube, condition

SAMPLE: dict[str, Any] = yaml.safe_load(
    (REPO / "manifests/samples/inferenceendpoint-llama.yaml").read_text()
)


def _collection(name: str, regions: list[str]) -> dict[str, Any]:
    # External mode with an address nothing listens on: the collection is not provisioned, but
    # its residency is what pairing reads, and no engine pod is involved.
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "VectorCollection",
        "metadata": {"name": name},
        "spec": {
            "engine": {"type": "Qdrant", "mode": "External", "url": "http://127.0.0.1:9"},
            "dimension": 384,
            "residency": {"regions": regions},
        },
    }


def _endpoint(name: str, collection: str, regions: list[str]) -> dict[str, Any]:
    obj = copy.deepcopy(SAMPLE)
    obj["metadata"] = {"name": name}
    obj["spec"]["residency"] = {"regions": regions}
    obj["spec"]["scaling"] = {"minReplicas": 2, "maxReplicas": 2}
    obj["spec"]["vectorCollectionRef"] = {"name": collection}
    return obj


def _running_regions(kube: Kube, namespace: str, name: str) -> list[str] | None:
    pods = [
        p
        for p in kube.list("pods", namespace, selector=f"tidal.dev/endpoint={name}")
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    if len(pods) != 2:
        return None
    nodes = kube.nodes()
    return sorted(
        nodes[p["spec"]["nodeName"]]["metadata"]["labels"]["topology.kubernetes.io/region"]
        for p in pods
    )


def test_a_paired_endpoint_runs_only_in_its_collections_regions(kube: Kube, namespace: str) -> None:
    kube.apply(_collection("kb", ["us-east-1"]), namespace)
    kube.apply(_endpoint("rag", "kb", ["eu-west-1", "us-east-1"]), namespace)

    def placed_in_us() -> dict[str, Any] | None:
        obj = kube.get("inferenceendpoint", "rag", namespace)
        ready = condition(obj, "Ready")
        if obj is None or ready is None or ready["status"] != "True":
            return None
        return obj if _running_regions(kube, namespace, "rag") == ["us-east-1"] * 2 else None

    obj = wait_for("rag Ready with both replicas in us-east-1", placed_in_us, timeout=180)

    assert obj["status"]["placement"]["regions"] == ["us-east-1"]


def test_moving_the_collection_moves_the_endpoint(kube: Kube, namespace: str) -> None:
    kube.apply(_collection("kb2", ["us-east-1"]), namespace)
    kube.apply(_endpoint("rag2", "kb2", ["eu-west-1", "us-east-1"]), namespace)
    wait_for(
        "rag2 in us-east-1",
        lambda: _running_regions(kube, namespace, "rag2") == ["us-east-1"] * 2,
        timeout=180,
    )

    # The collection's residency is not immutable; the endpoint follows the data.
    kube.apply(_collection("kb2", ["eu-west-1"]), namespace)

    wait_for(
        "rag2 moved to eu-west-1",
        lambda: _running_regions(kube, namespace, "rag2") == ["eu-west-1"] * 2,
        timeout=180,
    )
