"""The first reconcile, end to end: an InferenceEndpoint becomes GPU pods in its regions."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import REPO, wait_for
from tests.e2e.kube import Kube, condition

SAMPLE: dict[str, Any] = yaml.safe_load(
    (REPO / "manifests/samples/inferenceendpoint-llama.yaml").read_text()
)


def _endpoint(name: str, **spec_overrides: Any) -> dict[str, Any]:
    obj = copy.deepcopy(SAMPLE)
    obj["metadata"] = {"name": name}
    obj["spec"].update(spec_overrides)
    return obj


def _ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    obj = kube.get("inferenceendpoint", name, namespace)
    ready = condition(obj, "Ready")
    if obj is None or ready is None or ready["status"] != "True":
        return None
    status = obj["status"]
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    if ready.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    return obj


def _running_pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    pods = kube.list("pods", namespace, selector=f"tidal.dev/endpoint={name}")
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def test_sample_endpoint_runs_on_gpu_nodes_of_its_region(kube: Kube, namespace: str) -> None:
    kube.apply(_endpoint("llama"), namespace)

    obj = wait_for("llama Ready=True at its generation", lambda: _ready(kube, namespace, "llama"))

    pods = wait_for("a Running pod", lambda: _running_pods(kube, namespace, "llama"))
    nodes = kube.nodes()
    for pod in pods:
        node = nodes[pod["spec"]["nodeName"]]
        assert node["metadata"]["labels"]["topology.kubernetes.io/region"] == "eu-west-1"
        assert int(node["status"]["allocatable"].get("nvidia.com/gpu", "0")) >= 1
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
    status = obj["status"]
    assert status["replicas"]["desired"] == 1
    assert status["replicas"]["ready"] == 1
    assert status["replicas"]["spot"] + status["replicas"]["reserved"] == 1
    assert status["url"].startswith(f"http://llama.{namespace}.svc")
    service = kube.get("service", "llama", namespace)
    assert service is not None
    assert service["spec"]["selector"]["tidal.dev/endpoint"] == "llama"
    owners = {
        d["metadata"]["name"]: d["metadata"]["ownerReferences"][0]["uid"]
        for d in kube.list("deployments", namespace, selector="tidal.dev/endpoint=llama")
    }
    # One Deployment per capacity type that runs a replica; an unused type gets none.
    running = {f"llama-{kind}" for kind in ("spot", "reserved") if status["replicas"][kind]}
    assert set(owners) == running
    assert set(owners.values()) == {obj["metadata"]["uid"]}
    # No finalizer: deleting an endpoint never waits on the operator (refreshes are not Kopf
    # timers, which would put one on every object).
    assert not obj["metadata"].get("finalizers")


def test_update_moves_and_resizes_the_children(kube: Kube, namespace: str) -> None:
    # SpotPreferred first, so there are spot replicas to move (Auto's interruption budget keeps
    # a small single-region endpoint on reserved).
    kube.apply(_endpoint("mover", capacity={"policy": "SpotPreferred"}), namespace)
    wait_for("mover Ready", lambda: _ready(kube, namespace, "mover"))
    before = kube.get("inferenceendpoint", "mover", namespace)
    assert before is not None
    assert before["status"]["replicas"]["spot"] > 0

    kube.apply(
        _endpoint(
            "mover",
            residency={"regions": ["us-east-1"]},
            scaling={"minReplicas": 3, "maxReplicas": 4},
            capacity={"policy": "ReservedOnly"},
        ),
        namespace,
    )

    def moved() -> list[dict[str, Any]] | None:
        if _ready(kube, namespace, "mover") is None:
            return None
        pods = _running_pods(kube, namespace, "mover")
        return pods if len(pods) == 3 else None

    pods = wait_for("3 running pods after the update", moved)
    nodes = kube.nodes()
    for pod in pods:
        labels = nodes[pod["spec"]["nodeName"]]["metadata"]["labels"]
        assert labels["topology.kubernetes.io/region"] == "us-east-1"
        assert labels.get("tidal.dev/capacity-type") == "reserved"
    spot = kube.get("deployment", "mover-spot", namespace)
    assert spot is not None
    assert spot["spec"]["replicas"] == 0
    obj = kube.get("inferenceendpoint", "mover", namespace)
    assert obj is not None
    assert obj["status"]["replicas"] == {"desired": 3, "ready": 3, "spot": 0, "reserved": 3}
    assert obj["status"]["placement"]["regions"] == ["us-east-1"]


DRAIN = 12


def test_scale_down_waits_for_the_drain(kube: Kube, namespace: str) -> None:
    """A replica scaled away leaves routing at once (it is being deleted) and stays until its
    drain is over: its preStop sleep of `runtime.drainSeconds`, played by the local cluster as
    a kubelet would, before the pod is gone."""
    two = {"minReplicas": 2, "maxReplicas": 2}
    runtime = {"engine": "VLLM", "drainSeconds": DRAIN}
    kube.apply(_endpoint("drainer", scaling=two, runtime=runtime), namespace)
    wait_for(
        "2 Ready replicas",
        lambda: (
            len(_running_pods(kube, namespace, "drainer")) == 2
            and _ready(kube, namespace, "drainer")
        ),
    )
    (spec,) = {
        str(p["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"])
        for p in _running_pods(kube, namespace, "drainer")
    }
    assert spec == str(DRAIN)

    kube.apply(
        _endpoint("drainer", scaling={"minReplicas": 1, "maxReplicas": 1}, runtime=runtime),
        namespace,
    )

    def leaving() -> dict[str, Any] | None:
        pods = kube.list("pods", namespace, selector="tidal.dev/endpoint=drainer")
        return next((p for p in pods if p["metadata"].get("deletionTimestamp")), None)

    pod = wait_for("a replica being deleted", leaving, 60)
    name = pod["metadata"]["name"]
    # Draining: half the drain later it is still there, being deleted (out of the Service's
    # and the gateway's routing); without the preStop sleep it would be gone within a poll.
    time.sleep(DRAIN / 2)
    still = kube.get("pod", name, namespace)
    assert still is not None, f"{name} was gone before its drain was over"
    assert still["metadata"].get("deletionTimestamp")
    wait_for(f"{name} gone after its drain", lambda: kube.get("pod", name, namespace) is None, 60)
    wait_for("1 running replica", lambda: len(_running_pods(kube, namespace, "drainer")) == 1)


def test_delete_removes_every_child(kube: Kube, namespace: str) -> None:
    kube.apply(_endpoint("doomed"), namespace)
    wait_for("doomed Ready", lambda: _ready(kube, namespace, "doomed"))

    kube.run("delete", "inferenceendpoint", "doomed", "-n", namespace, "--wait=true")

    def gone() -> bool:
        selector = "tidal.dev/endpoint=doomed"
        return not any(
            kube.list(kind, namespace, selector=selector)
            for kind in ("deployments", "services", "pods")
        )

    wait_for("children garbage-collected", gone)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(lambda s: s["model"].pop("name"), "spec.model.name", id="missing-model-name"),
        pytest.param(
            lambda s: s.update(scaling={"minReplicas": 5, "maxReplicas": 2}),
            "minReplicas",
            id="cel-min-above-max",
        ),
        pytest.param(
            lambda s: s.update(capacity={"policy": "Cheapest"}),
            "spec.capacity.policy",
            id="unknown-policy",
        ),
        pytest.param(
            lambda s: s.update(capacity={"maxSpotPercent": 150}),
            "spec.capacity.maxSpotPercent",
            id="percent-out-of-range",
        ),
        pytest.param(
            lambda s: s.update(residency={"regions": []}),
            "spec.residency.regions",
            id="no-regions",
        ),
    ],
)
def test_invalid_endpoint_is_rejected_naming_the_field(
    kube: Kube, namespace: str, mutate: Any, expected: str
) -> None:
    obj = _endpoint("bad")
    mutate(obj["spec"])

    accepted, message = kube.try_apply(obj, namespace)

    assert not accepted, f"the API server accepted an invalid endpoint: {message}"
    assert expected in message
    assert kube.get("inferenceendpoint", "bad", namespace) is None


def test_unknown_policy_error_lists_the_allowed_values(kube: Kube, namespace: str) -> None:
    obj = _endpoint("bad-policy", capacity={"policy": "Cheapest"})

    accepted, message = kube.try_apply(obj, namespace)

    assert not accepted
    for allowed in ("Auto", "SpotPreferred", "SpotOnly", "ReservedOnly"):
        assert allowed in message


def test_explain_shows_field_descriptions(kube: Kube, crds: None) -> None:
    text = kube.run("explain", "inferenceendpoint.spec.capacity")

    assert "maxSpotPercent" in text
    assert "minReservedReplicas" in text
    assert "policy is" in text


def test_manifests_pass_a_server_side_dry_run(kube: Kube, crds: None, tmp_path: Path) -> None:
    # A dry run cannot create the namespaces its other objects live in: create them for real.
    rendered = yaml.safe_load_all(kube.run("kustomize", str(REPO / "manifests")))
    for doc in rendered:
        if doc and doc["kind"] == "Namespace":
            kube.run("create", "namespace", doc["metadata"]["name"], check=False)

    base = kube.run("apply", "--dry-run=server", "-k", str(REPO / "manifests"))
    samples = kube.run("apply", "--dry-run=server", "-k", str(REPO / "manifests/samples"))

    assert "deployment.apps/tidal-operator" in base
    assert "clusterrole.rbac.authorization.k8s.io/tidal-operator" in base
    assert "configmap/tidal-pricing" in base
    assert "inferenceendpoint.tidal.dev/llama" in samples
    assert "vectorcollection.tidal.dev/" in samples
