"""Prometheus Operator's PodMonitor, end to end: the real CRD in the API server, an endpoint's
PodMonitor made and repaired by the running operator, and the SLO queries' label matchers held
against the labels a real Prometheus gives the targets.

The CRD is Prometheus Operator's own file (`tidal.devcluster.build.ensure_podmonitor_crd`, from
its Go module), installed by this module once the session's operator has started (so the first
PodMonitor also shows that a kind installed later is noticed: API discovery is re-read every
30 s), and removed after it when it was not there before.

No Prometheus Operator runs here (it would need the whole monitoring stack), so the scrape
config it would generate for the endpoint's PodMonitor is written out by `operator_job`, after
`generatePodMonitorConfig` in its `pkg/prometheus/promcfg.go` at the CRD's release, for exactly
the fields Tidal renders (the test fails if the PodMonitor uses any other). A real Prometheus
runs that job and the plain job docs/operations.md gives for clusters without Prometheus
Operator over the endpoint's real pods (as its Kubernetes discovery would find them, plus decoys
the jobs must drop), and the SLO queries' selector (`tidal.clients.prometheus.render_selector`)
must select exactly the endpoint's replicas in `up`, which every target has whether or not its
scrape succeeds (KWOK's pods serve nothing).
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import REPO, Operator, wait_for
from tests.e2e.kube import Kube, KubectlError
from tests.e2e.prometheus import PrometheusServer
from tests.unit.test_render_monitoring import documented_scrape_configs
from tidal.api.endpoint import Engine
from tidal.clients.prometheus import DEFAULT_TEMPLATES, render_selector
from tidal.devcluster import build

CRD = "podmonitors.monitoring.coreos.com"
H100 = "NVIDIA-H100-80GB-HBM3"
REGION = "eu-west-1"
REPLICAS = 2


@pytest.fixture(scope="module")
def podmonitor_crd(kube: Kube, operator: Operator) -> Iterator[bool]:
    """Prometheus Operator's PodMonitor CRD, installed once the operator runs (it read API
    discovery at start: the PodMonitors come from noticing the kind later); True when this
    module installed it (and so may remove it)."""
    # The whole log: in a full run the session operator's start is far above its last lines.
    wait_for(
        "the operator's start",
        lambda: "Started Tidal operator" in operator.log.read_text(errors="replace"),
    )
    existed = kube.get("crd", CRD) is not None
    path = build.ensure_podmonitor_crd()
    kube.run("apply", "--server-side", "--force-conflicts", "-f", str(path))
    kube.run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")
    yield not existed
    if not existed:
        kube.run("delete", "crd", CRD, "--wait=false", check=False)


# What the operator logs when the PodMonitor kind stops being served.
GONE = "podmonitors in monitoring.coreos.com/v1 is no longer served"


def _endpoint(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "runtime": {"engine": "VLLM"},
            "gpu": {"count": 1, "products": [H100]},
            "residency": {"regions": [REGION]},
            "scaling": {"minReplicas": REPLICAS, "maxReplicas": REPLICAS},
        },
    }


def _running_pods(kube: Kube, namespace: str, selector: str) -> list[dict[str, Any]]:
    return [
        pod
        for pod in kube.list("pods", namespace, selector=selector)
        if pod["status"].get("phase") == "Running"
        and pod["status"].get("podIP")
        and not pod["metadata"].get("deletionTimestamp")
    ]


def _selector(monitor: dict[str, Any]) -> str:
    labels = monitor["spec"]["selector"]["matchLabels"]
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


@pytest.fixture(scope="module")
def served(
    kube: Kube, operator: Operator, podmonitor_crd: bool, request: pytest.FixtureRequest
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """An endpoint running its replicas, in a namespace of this module's own, and its
    PodMonitor as the operator made it: (namespace, endpoint uid, PodMonitor)."""
    namespace = f"e2e-mon-{uuid.uuid4().hex[:6]}"
    kube.run("create", "namespace", namespace)
    failed_before = request.session.testsfailed
    try:
        kube.apply(_endpoint("chat"), namespace)
        endpoint = wait_for(
            "the endpoint", lambda: kube.get("inferenceendpoint", "chat", namespace)
        )
        # Discovery is re-read every 30 s: the CRD installed after the operator started is
        # noticed within that, and the next refresh of the endpoint applies its PodMonitor.
        monitor = wait_for(
            "the endpoint's PodMonitor",
            lambda: kube.get("podmonitor", "chat", namespace),
            timeout=120,
        )
        yield namespace, str(endpoint["metadata"]["uid"]), monitor
    finally:
        if request.session.testsfailed > failed_before:
            print(f"\n===== operator log (tail) =====\n{operator.tail()}")
            print(kube.run("get", "events,podmonitors,pods", "-n", namespace, check=False))
        kube.run("delete", "namespace", namespace, "--wait=false", check=False)


def test_an_endpoint_gets_a_pod_monitor_scraping_its_replicas_metrics(
    kube: Kube, served: tuple[str, str, dict[str, Any]]
) -> None:
    namespace, uid, monitor = served
    assert monitor["spec"]["selector"] == {
        "matchLabels": {"app.kubernetes.io/name": "tidal-inference", "tidal.dev/endpoint": "chat"}
    }
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics"}]
    labels = monitor["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "tidal"
    assert labels["tidal.dev/endpoint"] == "chat"
    (owner,) = monitor["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "InferenceEndpoint",
        "chat",
        uid,
        True,
    )
    shown = json.loads(
        kube.run(
            "get", "podmonitor", "chat", "-n", namespace, "-o", "json", "--show-managed-fields"
        )
    )
    assert {entry["manager"] for entry in shown["metadata"]["managedFields"]} == {"tidal"}
    assert {entry["operation"] for entry in shown["metadata"]["managedFields"]} == {"Apply"}

    # It selects exactly the endpoint's replicas, and each declares the port it names.
    selected = wait_for(
        f"{REPLICAS} Running replicas selected by the PodMonitor",
        lambda: (
            (pods := _running_pods(kube, namespace, _selector(monitor)))
            and len(pods) == REPLICAS
            and pods
        ),
    )
    own = kube.list("pods", namespace, selector="tidal.dev/endpoint=chat")
    assert {p["metadata"]["name"] for p in selected} <= {p["metadata"]["name"] for p in own}
    for pod in selected:
        ports = {port["name"] for c in pod["spec"]["containers"] for port in c.get("ports", ())}
        assert "http" in ports


def test_a_deleted_pod_monitor_is_made_again(
    kube: Kube, served: tuple[str, str, dict[str, Any]]
) -> None:
    namespace, _, monitor = served
    before = monitor["metadata"]["uid"]
    kube.run("delete", "podmonitor", "chat", "-n", namespace)

    def recreated() -> dict[str, Any] | None:
        current = kube.get("podmonitor", "chat", namespace)
        return current if current and current["metadata"]["uid"] != before else None

    again = wait_for("the PodMonitor made again", recreated, timeout=90)
    assert again["spec"] == monitor["spec"]


def operator_job(monitor: dict[str, Any], targets: str) -> dict[str, Any]:
    """The scrape config Prometheus Operator generates for `monitor` (one shard), its pod
    discovery replaced by the file `targets` (see `discovered`)."""
    spec = monitor["spec"]
    # What this translation covers; a field beyond it would change the generated config.
    assert set(spec) == {"selector", "podMetricsEndpoints"}
    assert set(spec["selector"]) == {"matchLabels"}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert set(endpoint) == {"port", "path"}
    namespace, name = monitor["metadata"]["namespace"], monitor["metadata"]["name"]
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        # filterRunning, on unless the PodMonitor turns it off.
        {
            "action": "drop",
            "source_labels": ["__meta_kubernetes_pod_phase"],
            "regex": "(Failed|Succeeded)",
        },
    ]
    for key, value in sorted(spec["selector"]["matchLabels"].items()):
        relabel.append(
            {
                "action": "keep",
                "source_labels": [
                    f"__meta_kubernetes_pod_label_{_sanitized(key)}",
                    f"__meta_kubernetes_pod_labelpresent_{_sanitized(key)}",
                ],
                "regex": f"({value});true",
            }
        )
    relabel += [
        {
            "action": "keep",
            "source_labels": ["__meta_kubernetes_pod_container_port_name"],
            "regex": endpoint["port"],
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{namespace}/{name}"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ]
    return {
        "job_name": f"podMonitor/{namespace}/{name}/0",
        "honor_labels": False,
        "file_sd_configs": [{"files": [targets]}],
        "metrics_path": endpoint["path"],
        "relabel_configs": relabel,
    }


def plain_job(targets: str) -> dict[str, Any]:
    """docs/operations.md's job for the model pods, its pod discovery replaced by the file
    `targets` (see `discovered`)."""
    job = copy.deepcopy(documented_scrape_configs()["tidal-inference"])
    (discovery,) = job.pop("kubernetes_sd_configs")
    assert discovery == {"role": "pod"}
    job["file_sd_configs"] = [{"files": [targets]}]
    return dict(job)


def _sanitized(label: str) -> str:
    """A label name as Prometheus's discovery makes it one (invalid characters become `_`)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def discovered(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Prometheus's Kubernetes discovery, role `pod`, finds for `pods`: one target per
    declared port of each container, at the pod's IP, with its `__meta_kubernetes_*` labels.

    Debian's Prometheus is built without Kubernetes discovery, so the test discovers the real
    pods itself and hands Prometheus these target groups through file-based discovery; the
    relabeling, the labels it produces and the PromQL run in Prometheus.
    """
    groups: list[dict[str, Any]] = []
    for pod in pods:
        metadata, status = pod["metadata"], pod["status"]
        labels = {
            "__meta_kubernetes_namespace": metadata["namespace"],
            "__meta_kubernetes_pod_name": metadata["name"],
            "__meta_kubernetes_pod_ip": status.get("podIP", ""),
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_node_name": pod["spec"].get("nodeName", ""),
            "__meta_kubernetes_pod_uid": metadata.get("uid", ""),
        }
        for key, value in (metadata.get("labels") or {}).items():
            labels[f"__meta_kubernetes_pod_label_{_sanitized(key)}"] = value
            labels[f"__meta_kubernetes_pod_labelpresent_{_sanitized(key)}"] = "true"
        for container in pod["spec"]["containers"]:
            for port in container.get("ports", ()):
                groups.append(
                    {
                        "targets": [f"{status.get('podIP', '')}:{port['containerPort']}"],
                        "labels": {
                            **labels,
                            "__meta_kubernetes_pod_container_name": container["name"],
                            "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                            "__meta_kubernetes_pod_container_port_number": str(
                                port["containerPort"]
                            ),
                            "__meta_kubernetes_pod_container_port_protocol": port.get(
                                "protocol", "TCP"
                            ),
                        },
                    }
                )
    return groups


def _decoys(replica: dict[str, Any]) -> list[dict[str, Any]]:
    """Pods a scrape of the endpoint must leave out although the SLO queries' pod regex would
    take them: one of the endpoint's pods that is no replica (a model-cache loader, say), and a
    replica's port that does not serve metrics."""
    loader = copy.deepcopy(replica)
    loader["metadata"]["name"] = "chat-spot-loader-0"
    loader["metadata"]["labels"] = {
        "app.kubernetes.io/name": "tidal-loader",
        "tidal.dev/endpoint": "chat",
    }
    extra = copy.deepcopy(replica)
    for container in extra["spec"]["containers"]:
        container["ports"] = [{"name": "debug", "containerPort": 6060, "protocol": "TCP"}]
    return [loader, extra]


def test_the_slo_queries_select_exactly_the_replicas_from_the_labels_their_targets_get(
    kube: Kube, served: tuple[str, str, dict[str, Any]], tmp_path: Path
) -> None:
    namespace, _, _ = served
    monitor = wait_for("the PodMonitor", lambda: kube.get("podmonitor", "chat", namespace))
    replicas = wait_for(
        f"{REPLICAS} Running replicas",
        lambda: (
            (pods := _running_pods(kube, namespace, "tidal.dev/endpoint=chat"))
            and len(pods) == REPLICAS
            and pods
        ),
    )
    names = {pod["metadata"]["name"] for pod in replicas}
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps(discovered([*replicas, *_decoys(replicas[0])])))
    jobs = {
        f"{namespace}/chat": operator_job(monitor, str(targets)),
        "tidal-inference": plain_job(str(targets)),
    }
    selector = render_selector(
        DEFAULT_TEMPLATES.engines[Engine.VLLM], namespace=namespace, name="chat"
    )
    server = PrometheusServer([], scrape_configs=list(jobs.values()))
    try:
        for job in jobs:
            # `up` exists for every target, scraped or not: its labels are the target's.
            series = wait_for(
                f"up{{job={job!r}}} for both replicas",
                lambda job=job: (
                    (found := server.query(f'up{{job="{job}"}}'))
                    and {s["metric"].get("pod") for s in found} == names
                    and found
                ),
                timeout=60,
            )
            assert len(series) == REPLICAS, series  # one target per replica, no decoy
            for one in series:
                assert one["metric"]["namespace"] == namespace
                assert one["metric"]["container"] == "engine"
            # The SLO queries' own matchers select exactly these series.
            matched = server.query(f'up{{job="{job}",{selector}}}')
            assert {s["metric"]["pod"] for s in matched} == names, (job, selector, matched)
        endpoint_labels = {
            s["metric"].get("endpoint") for s in server.query(f'up{{job="{namespace}/chat"}}')
        }
        assert endpoint_labels == {"http"}
    except BaseException:
        print(f"\n===== prometheus log =====\n{server.log()}")
        print(json.dumps(jobs, indent=1))
        raise
    finally:
        server.stop()


def test_the_operators_rbac_is_enough_to_apply_and_watch_pod_monitors_and_no_more(
    kube: Kube, served: tuple[str, str, dict[str, Any]]
) -> None:
    """The shipped ClusterRole's rules, bound to a ServiceAccount of its own, server-side apply
    the PodMonitor as the operator does and read it back; deleting one is refused."""
    namespace, _, monitor = served
    (clusterrole,) = yaml.safe_load_all((REPO / "manifests/rbac/clusterrole.yaml").read_text())
    rules = clusterrole["rules"]
    role = f"tidal-operator-e2e-{uuid.uuid4().hex[:6]}"
    account = f"system:serviceaccount:{namespace}:tidal-operator"
    kube.run("create", "serviceaccount", "tidal-operator", "-n", namespace)
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": rules,
        }
    )
    kube.run(
        "create",
        "rolebinding",
        role,
        "-n",
        namespace,
        f"--clusterrole={role}",
        f"--serviceaccount={namespace}:tidal-operator",
    )
    try:
        for verb in ("get", "list", "create", "patch"):
            assert wait_for(
                f"can-i {verb} podmonitors",
                lambda verb=verb: (
                    kube.run(
                        "auth",
                        "can-i",
                        verb,
                        "podmonitors.monitoring.coreos.com",
                        "-n",
                        namespace,
                        f"--as={account}",
                        check=False,
                    ).strip()
                    == "yes"
                ),
                timeout=30,
            )
        for verb in ("update", "delete", "watch"):
            answer = kube.run(
                "auth",
                "can-i",
                verb,
                "podmonitors.monitoring.coreos.com",
                "-n",
                namespace,
                f"--as={account}",
                check=False,
            )
            assert answer.strip() == "no", verb
        applied = {
            "apiVersion": monitor["apiVersion"],
            "kind": monitor["kind"],
            "metadata": {
                key: monitor["metadata"][key]
                for key in ("name", "namespace", "labels", "annotations", "ownerReferences")
            },
            "spec": monitor["spec"],
        }
        kube.run(
            "apply",
            "--server-side",
            "--field-manager=tidal",
            "--force-conflicts",
            f"--as={account}",
            "-f",
            "-",
            stdin=json.dumps(applied),
        )
        with pytest.raises(KubectlError, match="forbidden"):
            kube.run("delete", "podmonitor", "chat", "-n", namespace, f"--as={account}")
    finally:
        kube.run("delete", "clusterrole", role, check=False)


def test_the_shipped_pod_monitors_pass_a_server_side_dry_run(
    kube: Kube, podmonitor_crd: bool
) -> None:
    """manifests/monitoring/ against Prometheus Operator's own schema (a dry run cannot create
    the namespaces its objects live in: they are created for real, as the base's test does)."""
    for namespace in ("tidal-system", "tidal-agent"):
        kube.run("create", "namespace", namespace, check=False)
    applied = kube.run(
        "apply", "--server-side", "--dry-run=server", "-k", str(REPO / "manifests/monitoring")
    )
    for name in ("tidal-operator", "tidal-gateway", "tidal-agent"):
        assert f"podmonitor.monitoring.coreos.com/{name}" in applied


def test_the_operator_goes_on_when_the_crd_is_removed_under_it(
    kube: Kube,
    operator: Operator,
    podmonitor_crd: bool,
    served: tuple[str, str, dict[str, Any]],
) -> None:
    """Uninstalling the monitoring stack takes the PodMonitors with their CRD; the operator
    notices the kind is gone and keeps reconciling (a watch of the kind would have stopped
    it). Last in this module: it removes the CRD the module installed."""
    namespace, _, _ = served
    assert operator.proc is not None
    if podmonitor_crd:
        kube.run("delete", "crd", CRD, "--timeout=60s")
        wait_for(
            "the operator to notice the kind is gone",
            lambda: GONE in operator.log.read_text(errors="replace"),
            timeout=90,
        )
    kube.run(
        "patch",
        "inferenceendpoint",
        "chat",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"scaling": {"minReplicas": 1, "maxReplicas": 1}}}),
    )
    wait_for(
        "the endpoint scaled to 1 replica",
        lambda: (
            ((kube.get("inferenceendpoint", "chat", namespace) or {}).get("status") or {})
            .get("replicas", {})
            .get("desired")
            == 1
        ),
        timeout=90,
    )
    assert operator.proc.poll() is None, operator.tail()
