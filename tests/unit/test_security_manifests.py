"""Every workload Tidal installs runs hardened: non-root, read-only root filesystem, no privilege
escalation, no added capabilities. Read from the YAML under manifests/, whatever it holds (the
operator, the GPU agent and the gateway must be among it). Also the optional peering manifests
and the webhook Service.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob"}
# Workloads that must exist: a rename or removal should fail here, not silently skip.
REQUIRED = {
    ("Deployment", "tidal-operator"),
    ("DaemonSet", "tidal-agent"),
    ("Deployment", "tidal-gateway"),
}

Obj = dict[str, Any]


def _objects() -> Iterator[tuple[Path, Obj]]:
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        if "samples" in path.parts:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                yield path, doc


def _workloads() -> list[Obj]:
    return [doc for _, doc in _objects() if doc["kind"] in WORKLOAD_KINDS]


def _pod_spec(workload: Obj) -> Obj:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: Obj = spec["template"]["spec"]
    return pod


def _containers(workload: Obj) -> Iterator[tuple[str, Obj]]:
    pod = _pod_spec(workload)
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(field) or []:
            yield (
                f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}",
                container,
            )


WORKLOADS = _workloads()
CONTAINERS = [pair for workload in WORKLOADS for pair in _containers(workload)]


def test_the_required_workloads_are_found() -> None:
    found = {(w["kind"], w["metadata"]["name"]) for w in WORKLOADS}
    assert found >= REQUIRED


@pytest.mark.parametrize(("where", "container"), CONTAINERS, ids=[w for w, _ in CONTAINERS])
def test_container_runs_as_non_root(where: str, container: Obj) -> None:
    workload = next(
        w for w in WORKLOADS if where.startswith(f"{w['kind']}/{w['metadata']['name']}/")
    )
    pod_security = _pod_spec(workload).get("securityContext") or {}
    security = container.get("securityContext") or {}
    non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
    user = security.get("runAsUser", pod_security.get("runAsUser"))
    assert non_root is True, where
    assert user is None or user > 0, where


@pytest.mark.parametrize(("where", "container"), CONTAINERS, ids=[w for w, _ in CONTAINERS])
def test_container_root_filesystem_is_read_only(where: str, container: Obj) -> None:
    assert (container.get("securityContext") or {}).get("readOnlyRootFilesystem") is True, where


@pytest.mark.parametrize(("where", "container"), CONTAINERS, ids=[w for w, _ in CONTAINERS])
def test_container_cannot_escalate_or_add_capabilities(where: str, container: Obj) -> None:
    security = container.get("securityContext") or {}
    assert security.get("allowPrivilegeEscalation") is False, where
    assert security.get("privileged", False) is False, where
    capabilities = security.get("capabilities") or {}
    assert capabilities.get("drop") == ["ALL"], where
    assert not capabilities.get("add"), where


@pytest.mark.parametrize("workload", WORKLOADS, ids=[w["metadata"]["name"] for w in WORKLOADS])
def test_no_workload_mounts_the_host_filesystem(workload: Obj) -> None:
    volumes = _pod_spec(workload).get("volumes") or []
    assert not [v["name"] for v in volumes if "hostPath" in v]


def test_operator_serves_webhooks_through_the_webhook_service() -> None:
    objects = [doc for _, doc in _objects()]
    (service,) = [
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "tidal-webhook"
    ]
    (operator,) = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "tidal-operator"
    ]
    pod = operator["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert service["metadata"]["namespace"] == operator["metadata"]["namespace"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 443
    assert ports[port["targetPort"]] == int(env["TIDAL_WEBHOOK_PORT"]) == 9443
    assert env["TIDAL_WEBHOOKS"] == "1"
    assert env["TIDAL_WEBHOOK_SERVICE"] == "$(TIDAL_NAMESPACE)/tidal-webhook"
    names = [e["name"] for e in container["env"]]
    # $(VAR) expands only variables defined earlier in the list.
    assert names.index("TIDAL_NAMESPACE") < names.index("TIDAL_WEBHOOK_SERVICE")


def test_peering_crds_define_both_kopf_peering_kinds() -> None:
    crds = {
        doc["spec"]["names"]["kind"]: doc
        for path, doc in _objects()
        if "peering" in path.parts and doc["kind"] == "CustomResourceDefinition"
    }
    assert set(crds) == {"ClusterKopfPeering", "KopfPeering"}
    assert crds["ClusterKopfPeering"]["spec"]["scope"] == "Cluster"
    assert crds["KopfPeering"]["spec"]["scope"] == "Namespaced"
    for crd in crds.values():
        assert crd["spec"]["group"] == "kopf.dev"
        (version,) = crd["spec"]["versions"]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
