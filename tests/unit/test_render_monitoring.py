"""The PodMonitor of an InferenceEndpoint, tested as a whole object and against the Deployment
and Service it must agree with (which pods are the replicas, which container port serves
metrics); and the plain Prometheus scrape configs docs/operations.md gives, held to the same
pods, ports and labels as the PodMonitors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidal.api.endpoint import InferenceEndpoint
from tidal.api.labels import CapacityType
from tidal.render.endpoint import Share, render_deployment, render_service
from tidal.render.monitoring import (
    OWN_LABELS,
    POD_MONITOR_API_VERSION,
    POD_MONITOR_KIND,
    render_pod_monitor,
)

UID = "0b6f1a1e-3c59-4b53-9a57-1d2f3e4a5b6c"


def make_ie(engine: str = "VLLM", **runtime: Any) -> InferenceEndpoint:
    body_runtime: dict[str, Any] = {"engine": engine, **runtime}
    if engine == "Custom":
        body_runtime.setdefault("image", "registry.example/engine:1")
    model: dict[str, Any] = {"name": "meta-llama/Llama-3.1-8B-Instruct"}
    if engine == "Triton":
        model["uri"] = "s3://models/llama"  # Triton serves a model repository, not a Hub repo
    return InferenceEndpoint.model_validate(
        {
            "metadata": {"name": "chat", "namespace": "ml", "uid": UID, "generation": 1},
            "spec": {
                "model": model,
                "runtime": body_runtime,
                "residency": {"regions": ["eu-west-1"]},
            },
        }
    )


def expected(port: str) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": "chat",
            "namespace": "ml",
            "labels": {
                "app.kubernetes.io/name": "tidal-inference",
                "app.kubernetes.io/instance": "chat",
                "app.kubernetes.io/managed-by": "tidal",
                "tidal.dev/endpoint": "chat",
            },
            "ownerReferences": [
                {
                    "apiVersion": "tidal.dev/v1alpha1",
                    "kind": "InferenceEndpoint",
                    "name": "chat",
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "tidal-inference",
                    "tidal.dev/endpoint": "chat",
                }
            },
            "podMetricsEndpoints": [{"port": port, "path": "/metrics"}],
        },
    }


@pytest.mark.parametrize(
    ("engine", "port"),
    [
        # vLLM and TGI serve /metrics on their HTTP port; Triton on its own metrics port.
        ("VLLM", "http"),
        ("TGI", "http"),
        ("Triton", "metrics"),
    ],
)
def test_an_engine_with_known_metrics_gets_this_whole_pod_monitor(engine: str, port: str) -> None:
    assert render_pod_monitor(make_ie(engine)) == expected(port)


def test_a_custom_engine_gets_none_its_metrics_being_unknown() -> None:
    assert render_pod_monitor(make_ie("Custom")) is None


def test_extra_labels_are_added_and_never_replace_tidals() -> None:
    monitor = render_pod_monitor(
        make_ie(), {"release": "kube-prometheus-stack", "tidal.dev/endpoint": "other"}
    )
    assert monitor is not None
    assert monitor["metadata"]["labels"] == {
        **expected("http")["metadata"]["labels"],
        "release": "kube-prometheus-stack",
    }


def test_the_kinds_coordinates_agree_with_the_rendered_object() -> None:
    monitor = render_pod_monitor(make_ie())
    assert monitor is not None
    assert (monitor["apiVersion"], monitor["kind"]) == (POD_MONITOR_API_VERSION, POD_MONITOR_KIND)
    assert set(monitor["metadata"]["labels"]) == set(OWN_LABELS)


@pytest.mark.parametrize("engine", ["VLLM", "TGI", "Triton"])
@pytest.mark.parametrize("port", [8000, 9000])
def test_it_selects_both_deployments_replicas_and_names_a_port_they_declare(
    engine: str, port: int
) -> None:
    ie = make_ie(engine, port=port)
    monitor = render_pod_monitor(ie)
    assert monitor is not None
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector == render_service(ie)["spec"]["selector"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for capacity_type in CapacityType:
        template = render_deployment(ie, capacity_type, Share(replicas=1, regions=("eu-west-1",)))[
            "spec"
        ]["template"]
        assert selector.items() <= template["metadata"]["labels"].items()
        (container,) = template["spec"]["containers"]
        names = [p["name"] for p in container["ports"]]
        assert endpoint["port"] in names
        assert len(names) == len(set(names))


def test_only_triton_declares_a_port_beyond_http_its_metrics_port_8002() -> None:
    def ports(ie: InferenceEndpoint) -> list[dict[str, Any]]:
        deployment = render_deployment(ie, CapacityType.SPOT, Share(1, ("eu-west-1",)))
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        result: list[dict[str, Any]] = container["ports"]
        return result

    http = {"name": "http", "containerPort": 8000, "protocol": "TCP"}
    assert ports(make_ie("VLLM")) == [http]
    assert ports(make_ie("TGI")) == [http]
    assert ports(make_ie("Custom")) == [http]
    assert ports(make_ie("Triton")) == [
        http,
        {"name": "metrics", "containerPort": 8002, "protocol": "TCP"},
    ]


# --- the documented scrape configs for Prometheus without Prometheus Operator ------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_scrape_configs() -> dict[str, dict[str, Any]]:
    """The jobs of the `scrape_configs` block in docs/operations.md, by job name."""
    text = DOCS.read_text()
    match = re.search(r"^```yaml\n(scrape_configs:\n.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert match is not None, "docs/operations.md has no ```yaml scrape_configs: block"
    jobs = yaml.safe_load(match.group(1))["scrape_configs"]
    return {job["job_name"]: job for job in jobs}


def _rules(job: dict[str, Any], action: str) -> dict[tuple[str, ...], str]:
    return {
        tuple(rule["source_labels"]): rule["regex"]
        for rule in job["relabel_configs"]
        if rule.get("action") == action
    }


def _targets(job: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    return {
        rule["target_label"]: tuple(rule["source_labels"])
        for rule in job["relabel_configs"]
        if "target_label" in rule
    }


def test_the_documented_inference_job_scrapes_what_the_pod_monitor_does() -> None:
    job = documented_scrape_configs()["tidal-inference"]
    monitor = render_pod_monitor(make_ie("VLLM"))
    assert monitor is not None
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    keep = _rules(job, "keep")
    assert keep == {
        (
            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
            "__meta_kubernetes_pod_labelpresent_tidal_dev_endpoint",
        ): f"{selector['app.kubernetes.io/name']};true",
        ("__meta_kubernetes_pod_container_port_name",): endpoint["port"],
    }
    assert render_pod_monitor(make_ie("TGI")) == monitor  # TGI: the same port and path
    assert job.get("metrics_path", "/metrics") == endpoint["path"]
    assert not job.get("honor_labels")
    # The labels the SLO queries select on, from the pod's own metadata.
    assert _targets(job)["namespace"] == ("__meta_kubernetes_namespace",)
    assert _targets(job)["pod"] == ("__meta_kubernetes_pod_name",)


@pytest.mark.parametrize(
    ("job_name", "component", "port", "honor"),
    [("tidal-gateway", "gateway", "admin", False), ("tidal-operator", "operator", "metrics", True)],
)
def test_the_documented_component_jobs_scrape_what_the_shipped_pod_monitors_do(
    job_name: str, component: str, port: str, honor: bool
) -> None:
    job = documented_scrape_configs()[job_name]
    shipped = yaml.safe_load(
        (DOCS.parents[1] / "manifests" / "monitoring" / f"{component}.yaml").read_text()
    )
    (endpoint,) = shipped["spec"]["podMetricsEndpoints"]
    assert shipped["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
    assert endpoint["port"] == port
    assert _rules(job, "keep") == {
        (
            "__meta_kubernetes_pod_label_app_kubernetes_io_component",
            "__meta_kubernetes_pod_container_port_name",
        ): f"{component};{port}",
    }
    assert bool(job.get("honor_labels")) is honor is bool(endpoint.get("honorLabels"))
    assert _targets(job)["namespace"] == ("__meta_kubernetes_namespace",)
    assert _targets(job)["pod"] == ("__meta_kubernetes_pod_name",)
