"""The GPU telemetry agent against a real API server.

On the embedded cluster, `tidal dev up` (the `kube` fixture) already runs one simulated agent
for every KWOK GPU node; against an `E2E_KUBECONFIG` cluster this module starts one itself.
The tests assert on what the API server holds: every GPU node's `tidal.dev/gpu-telemetry`
annotation, its reaction to the override annotation, pod attribution, and, with the DaemonSet's
manifests applied, that the ValidatingAdmissionPolicy confines the agent's ServiceAccount to the
telemetry annotation of its own Node.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import processes
from tests.e2e.conftest import REPO, wait_for
from tests.e2e.kube import Kube, KubectlError
from tidal.api.labels import GPU_TELEMETRY, SIMULATED_GPU_UTILIZATION, SPOT_MARKERS
from tidal.api.telemetry import GpuTelemetry, parse
from tidal.devcluster import cluster as devcluster

# The keys of every spot taint, each tolerated whatever its value.
SPOT_TAINTS = tuple(dict.fromkeys(key for key, _value in SPOT_MARKERS))


@dataclass
class SimulatedAgent:
    metrics_url: str
    log: Path

    def tail(self, lines: int = 80) -> str:
        if not self.log.exists():
            return "(no agent log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def agent(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedAgent]:
    state = devcluster.load_state(kube.workdir) if kube.workdir else None
    if state is not None and "tidal-agent" in state.pids:
        yield SimulatedAgent(
            f"http://127.0.0.1:{state.ports['tidal-agent']}/metrics",
            kube.workdir / "logs" / "tidal-agent.log" if kube.workdir else Path("/nonexistent"),
        )
        return
    # A cluster we did not start: run the simulated agent ourselves, as `tidal dev up` would.
    log = tmp_path_factory.mktemp("agent") / "tidal-agent.log"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = dict(os.environ, KUBECONFIG=str(kube.kubeconfig), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "tidal.cli", "agent", "--simulate", "--all-nodes"]
    command += ["--interval=1", "--window=5", f"--metrics-address=127.0.0.1:{port}"]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        yield SimulatedAgent(f"http://127.0.0.1:{port}/metrics", log)
    finally:
        processes.stop(proc, timeout=20)


@pytest.fixture
def dump_on_failure(
    kube: Kube, agent: SimulatedAgent, request: pytest.FixtureRequest
) -> Iterator[None]:
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(f"\n===== simulated agent log (tail) =====\n{agent.tail()}", file=sys.stderr)
        nodes = kube.run("get", "nodes", "-L", "nvidia.com/gpu.present", check=False)
        print(f"===== nodes =====\n{nodes}", file=sys.stderr)


def _gpu_nodes(kube: Kube) -> dict[str, dict[str, Any]]:
    return {
        name: node
        for name, node in kube.nodes().items()
        if node["metadata"].get("labels", {}).get("nvidia.com/gpu.present") == "true"
    }


def _telemetry(kube: Kube, node: str) -> GpuTelemetry | None:
    obj = kube.get("node", node)
    raw = ((obj or {}).get("metadata") or {}).get("annotations", {}).get(GPU_TELEMETRY)
    return parse(raw, now=datetime.now(UTC))


def _hot_node(kube: Kube) -> str:
    """A spot H100 node, last in name order, so the other suites' first choices stay cool."""
    names = sorted(n for n in _gpu_nodes(kube) if n.startswith("h100-spot-"))
    return names[-1] if names else sorted(_gpu_nodes(kube))[-1]


# --- every node annotated --------------------------------------------------------------------


@pytest.mark.usefixtures("dump_on_failure")
def test_every_gpu_node_carries_fresh_simulated_telemetry(kube: Kube) -> None:
    gpu_nodes = _gpu_nodes(kube)
    assert gpu_nodes

    def all_fresh() -> dict[str, GpuTelemetry] | None:
        docs = {name: doc for name in gpu_nodes if (doc := _telemetry(kube, name)) is not None}
        return docs if len(docs) == len(gpu_nodes) else None

    docs: dict[str, GpuTelemetry] = wait_for("telemetry on every GPU node", all_fresh, 90)

    for name, doc in docs.items():
        node = gpu_nodes[name]
        labels = node["metadata"]["labels"]
        assert doc.source == "simulated", name
        assert doc.error is None
        assert len(doc.gpus) == int(node["status"]["allocatable"]["nvidia.com/gpu"]), name
        assert {g.product for g in doc.gpus} == {labels["nvidia.com/gpu.product"]}, name
        assert {g.memory_total_mib for g in doc.gpus} == {int(labels["nvidia.com/gpu.memory"])}
        assert doc.utilization_percent is not None
        assert (datetime.now(UTC) - doc.time).total_seconds() < 120
    for name, node in kube.nodes().items():
        if name not in gpu_nodes:
            assert GPU_TELEMETRY not in node["metadata"].get("annotations", {}), name


@pytest.mark.usefixtures("dump_on_failure")
def test_setting_a_node_hot_then_cold_shows_in_its_annotation(kube: Kube) -> None:
    node = _hot_node(kube)

    def utilization() -> float | None:
        doc = _telemetry(kube, node)
        return None if doc is None else doc.utilization_percent

    try:
        kube.run("annotate", "node", node, f"{SIMULATED_GPU_UTILIZATION}=95", "--overwrite")
        started = time.monotonic()
        wait_for(f"{node} hot (>= 90 %)", lambda: (utilization() or 0) >= 90, 90, 1)
        hot_after = time.monotonic() - started

        kube.run("annotate", "node", node, f"{SIMULATED_GPU_UTILIZATION}=0", "--overwrite")
        wait_for(
            f"{node} cold (<= 5 %)", lambda: (u := utilization()) is not None and u <= 5, 90, 1
        )
    finally:
        kube.run("annotate", "node", node, f"{SIMULATED_GPU_UTILIZATION}-", check=False)

    # Refresh (3 s) + window (5 s) + publish interval: well inside a minute.
    assert hot_after < 60
    others = [n for n in _gpu_nodes(kube) if n != node]
    assert all(
        (d := _telemetry(kube, n)) is None or (d.utilization_percent or 0) < 90 for n in others
    )


@pytest.mark.usefixtures("dump_on_failure")
def test_a_pod_requesting_gpus_appears_in_its_nodes_attribution(kube: Kube) -> None:
    node = sorted(n for n in _gpu_nodes(kube) if n.startswith("h100-reserved-"))[0]
    namespace = f"e2e-agent-{uuid.uuid4().hex[:6]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-user", "namespace": namespace},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]
            + [{"key": key, "operator": "Exists"} for key in SPOT_TAINTS],
            "containers": [
                {
                    "name": "model",
                    "image": "registry.invalid/model-server:1",
                    "resources": {"limits": {"nvidia.com/gpu": "2"}},
                }
            ],
        },
    }
    kube.run("create", "namespace", namespace)
    try:
        kube.apply(pod, namespace)

        def attributed() -> Any:
            doc = _telemetry(kube, node)
            found = [
                p
                for p in (doc.pods if doc else [])
                if (p.namespace, p.name) == (namespace, "gpu-user")
            ]
            return found[0] if found else None

        usage = wait_for(f"{namespace}/gpu-user in {node}'s telemetry", attributed, 90, 1)
        created = kube.get("pod", "gpu-user", namespace)
        assert created is not None
        assert usage.uid == created["metadata"]["uid"]
        assert len(usage.gpu_indexes) == 2
        assert usage.utilization_source == "process-samples"
        assert usage.utilization_percent is not None
        assert (usage.memory_used_mib or 0) > 0
    finally:
        kube.run("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.usefixtures("dump_on_failure")
def test_metrics_use_dcgm_names_for_every_gpu_node(kube: Kube, agent: SimulatedAgent) -> None:
    def scrape() -> str | None:
        try:
            with urllib.request.urlopen(agent.metrics_url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return None

    text = wait_for("the agent's /metrics", scrape, 60)

    for name in _gpu_nodes(kube):
        assert f'Hostname="{name}"' in text
    for family in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE"):
        assert f"# TYPE {family} gauge" in text
    assert "tidal_agent_publishes_total{" in text


# --- the DaemonSet's manifests and the admission policy ---------------------------------------


def _token_kubeconfig(kube: Kube, token: str, directory: Path) -> Path:
    config = yaml.safe_load(kube.kubeconfig.read_text())
    (cluster,) = config["clusters"]
    path = directory / "agent.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "agent", "user": {"token": token}}],
                "contexts": [
                    {"name": "agent", "context": {"cluster": cluster["name"], "user": "agent"}}
                ],
                "current-context": "agent",
            }
        )
    )
    return path


def _telemetry_patch(kube: Kube, node: str) -> str:
    """A valid, fresh document for `node`: what its agent would write."""
    doc = _telemetry(kube, node) or GpuTelemetry(time=datetime.now(UTC), source="simulated")
    doc = doc.model_copy(update={"time": datetime.now(UTC).replace(microsecond=0)})
    return json.dumps({"metadata": {"annotations": {GPU_TELEMETRY: doc.to_annotation()}}})


def _refusal(attempt: Callable[[], object]) -> str | None:
    """The API server's refusal of `attempt`, or None when it was allowed."""
    try:
        attempt()
    except KubectlError as err:
        return err.stderr
    return None


@pytest.fixture
def installed_agent(kube: Kube) -> Iterator[None]:
    # The GPU Operator / container toolkit provides this RuntimeClass on real clusters; the
    # RuntimeClass admission plugin refuses pods that name a missing one. Ours only if missing.
    created = kube.get("runtimeclass", "nvidia") is None
    if created:
        runtime = {"metadata": {"name": "nvidia"}, "handler": "nvidia"}
        kube.apply({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", **runtime})
    kube.run("apply", "--server-side", "-k", str(REPO / "manifests" / "agent"))
    try:
        yield
    finally:
        kube.run("delete", "-k", str(REPO / "manifests" / "agent"), "--wait=false", check=False)
        if created:
            kube.run("delete", "runtimeclass", "nvidia", "--wait=false", check=False)


@pytest.mark.usefixtures("dump_on_failure", "installed_agent")
def test_the_daemonset_lands_on_every_gpu_node_and_the_policy_confines_it(kube: Kube) -> None:
    gpu_nodes = _gpu_nodes(kube)

    def scheduled() -> list[dict[str, Any]] | None:
        pods = kube.list("pods", "tidal-agent", selector="app.kubernetes.io/component=agent")
        bound = [p for p in pods if p["spec"].get("nodeName")]
        return bound if len(bound) == len(gpu_nodes) else None

    pods = wait_for("an agent pod on every GPU node", scheduled, 120, 1)
    assert {p["spec"]["nodeName"] for p in pods} == set(gpu_nodes)
    pod = sorted(pods, key=lambda p: p["spec"]["nodeName"])[0]
    own, other = pod["spec"]["nodeName"], sorted(set(gpu_nodes) - {pod["spec"]["nodeName"]})[0]

    token = kube.run(
        "create",
        "token",
        "tidal-agent",
        "-n",
        "tidal-agent",
        "--bound-object-kind=Pod",
        f"--bound-object-name={pod['metadata']['name']}",
        "--duration=10m",
    ).strip()
    unbound = kube.run(
        "create", "token", "tidal-agent", "-n", "tidal-agent", "--duration=10m"
    ).strip()
    with tempfile.TemporaryDirectory() as tmp:
        as_agent = Kube(_token_kubeconfig(kube, token, Path(tmp)), kube.kubectl)
        (Path(tmp) / "unbound").mkdir()
        as_unbound = Kube(_token_kubeconfig(kube, unbound, Path(tmp) / "unbound"), kube.kubectl)

        # RBAC and the policy take effect a moment after they are created (informers).
        probe = ("annotate", "node", own, "e2e/probe=1", "--dry-run=server")
        wait_for(
            "the admission policy in force",
            lambda: "may only change" in (_refusal(lambda: as_agent.run(*probe)) or ""),
            60,
            1,
        )
        # Its own node's telemetry annotation: allowed.
        own_patch = ("patch", "node", own, "--type=merge", "-p", _telemetry_patch(kube, own))
        wait_for(
            f"the agent allowed to write {own}'s telemetry",
            lambda: _refusal(lambda: as_agent.run(*own_patch)) is None,
            60,
            1,
        )

        refusals: dict[str, Callable[[], object]] = {
            "another node": lambda: as_agent.run(
                "patch", "node", other, "--type=merge", "-p", _telemetry_patch(kube, other)
            ),
            "another annotation": lambda: as_agent.run("annotate", "node", own, "e2e/x=1"),
            "a label": lambda: as_agent.run("label", "node", own, "e2e/x=1"),
            "a taint": lambda: as_agent.run("taint", "node", own, "e2e/x=1:NoSchedule"),
            "a token bound to no pod": lambda: as_unbound.run(
                "patch", "node", own, "--type=merge", "-p", _telemetry_patch(kube, own)
            ),
            "deleting a node (RBAC)": lambda: as_agent.run(
                "delete", "node", own, "--dry-run=server"
            ),
        }
        messages = {}
        for what, attempt in refusals.items():
            with pytest.raises(KubectlError) as refused:
                attempt()
            messages[what] = refused.value.stderr

    # The API server type-checks the policy's CEL against the Node schema and reports warnings.
    def type_checked() -> dict[str, Any] | None:
        policy = kube.get("validatingadmissionpolicy", "tidal-agent-own-node-telemetry") or {}
        status: dict[str, Any] = policy.get("status") or {}
        return status if "typeChecking" in status else None

    status = wait_for("the policy's type check", type_checked, 60)
    assert not status["typeChecking"].get("expressionWarnings")
    assert "may only write the Node it runs on" in messages["another node"]
    assert (
        "may only change the tidal.dev/gpu-telemetry annotation" in messages["another annotation"]
    )
    assert "may not change a Node's labels" in messages["a label"]
    assert "may not change a Node's labels" in messages["a taint"]
    assert "no node in its token" in messages["a token bound to no pod"]
    assert "forbidden" in messages["deleting a node (RBAC)"].lower()
    node = kube.get("node", own)
    assert node is not None
    assert "e2e/x" not in node["metadata"].get("labels", {})
    assert "e2e/x" not in node["metadata"].get("annotations", {})
