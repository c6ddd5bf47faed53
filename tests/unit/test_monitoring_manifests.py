"""manifests/monitoring/: the PodMonitors shipped for the operator, the gateway and the GPU agent,
read as data against the workloads they scrape. A real API server judges them against Prometheus
Operator's own CRD schema in tests/e2e/test_monitoring.py."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
MONITORING = MANIFESTS / "monitoring"

Obj = dict[str, Any]

# Each shipped PodMonitor, the workload it scrapes (kind, name), and whether the series it
# scrapes carry a `namespace` of their own that must win over the target's (honorLabels).
SCRAPED = {
    "tidal-operator": (("Deployment", "tidal-operator"), True),
    "tidal-gateway": (("Deployment", "tidal-gateway"), False),
    "tidal-agent": (("DaemonSet", "tidal-agent"), True),
}


def _load(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def _monitors() -> dict[str, Obj]:
    found: dict[str, Obj] = {}
    for path in sorted(MONITORING.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in _load(path):
                found[doc["metadata"]["name"]] = doc
    return found


@functools.cache
def _workloads() -> dict[tuple[str, str], Obj]:
    """Every Deployment and DaemonSet the base installs, by (kind, name)."""
    found: dict[tuple[str, str], Obj] = {}
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        if {"samples", "monitoring"} & set(path.relative_to(MANIFESTS).parts):
            continue
        for doc in _load(path):
            if doc.get("kind") in {"Deployment", "DaemonSet"}:
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _kustomization() -> Obj:
    loaded = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_kustomization_lists_every_file_and_keeps_labels_out_of_selectors() -> None:
    files = {p.name for p in MONITORING.glob("*.yaml")} - {"kustomization.yaml"}
    kustomization = _kustomization()
    assert set(kustomization["resources"]) == files
    assert "namespace" not in kustomization  # the agent's lives in tidal-agent
    (labels,) = kustomization["labels"]
    assert not labels.get("includeSelectors")


def test_there_is_one_pod_monitor_per_component() -> None:
    assert set(_monitors()) == set(SCRAPED)
    for monitor in _monitors().values():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["kind"] == "PodMonitor"


@pytest.mark.parametrize("name", sorted(SCRAPED))
def test_each_selects_exactly_its_workloads_pods_in_their_namespace(name: str) -> None:
    monitor = _monitors()[name]
    workload_id, _ = SCRAPED[name]
    workload = _workloads()[workload_id]
    assert monitor["metadata"]["namespace"] == workload["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert set(monitor["spec"]["selector"]) == {"matchLabels"}
    selected = [
        key
        for key, obj in _workloads().items()
        if obj["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        and selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert selected == [workload_id]


@pytest.mark.parametrize("name", sorted(SCRAPED))
def test_each_scrapes_metrics_on_a_port_its_pods_name(name: str) -> None:
    monitor = _monitors()[name]
    workload_id, honor = SCRAPED[name]
    pod = _workloads()[workload_id]["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", ())}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"
    assert endpoint.get("honorLabels", False) is honor


def test_the_operator_is_scraped_on_the_port_it_serves_metrics_on() -> None:
    (endpoint,) = _monitors()["tidal-operator"]["spec"]["podMetricsEndpoints"]
    (container,) = _workloads()[("Deployment", "tidal-operator")]["spec"]["template"]["spec"][
        "containers"
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert env["TIDAL_METRICS_PORT"] == str(ports[endpoint["port"]])


def test_the_gateway_is_scraped_on_its_admin_port_where_metrics_are() -> None:
    (endpoint,) = _monitors()["tidal-gateway"]["spec"]["podMetricsEndpoints"]
    (container,) = _workloads()[("Deployment", "tidal-gateway")]["spec"]["template"]["spec"][
        "containers"
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert env["TIDAL_GATEWAY_ADMIN_LISTEN"].rpartition(":")[2] == str(ports[endpoint["port"]])


def test_the_agent_is_scraped_where_it_serves_metrics() -> None:
    (endpoint,) = _monitors()["tidal-agent"]["spec"]["podMetricsEndpoints"]
    (container,) = _workloads()[("DaemonSet", "tidal-agent")]["spec"]["template"]["spec"][
        "containers"
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    address = next(a for a in container["args"] if a.startswith("--metrics-address="))
    assert address.rpartition(":")[2] == str(ports[endpoint["port"]])
