"""E2E: the elastic fleet. Real Karpenter (its KWOK cloud provider) launches GPU nodes for
Pending pods, consolidates them away, runs out of spot capacity and loses nodes to spot
interruptions, on a local control plane of its own (not the suite's shared cluster).

Plain Deployments, not Tidal's: these tests check the simulated cloud the operator will be
tested against. Assertions are on the API server's objects (NodeClaims, Nodes, Pods, Events).
When a test fails, Karpenter's log tail, the NodeClaims and the namespace's Events are printed.
Each test asks for a GPU, capacity type and region no earlier test's node offers, so a node that
an earlier test emptied (and Karpenter has not consolidated yet) never takes its pod.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO, wait_for
from tests.e2e.elastic import elastic_cluster
from tests.e2e.kube import Kube, condition
from tidal.api.labels import (
    GPU_RESOURCE,
    KARPENTER_CAPACITY_TYPE,
    KARPENTER_DISRUPTED_TAINT,
    KARPENTER_GPU_COUNT,
    KARPENTER_GPU_MANUFACTURER,
    KARPENTER_GPU_MEMORY_MIB,
    KARPENTER_GPU_NAME,
    KARPENTER_NODEPOOL,
    NODE_INSTANCE_TYPE,
    NODE_REGION,
    NODE_ZONE,
    SIMULATED_STARTUP,
    SIMULATED_TERMINATION_TIME,
)
from tidal.devcluster import cluster, karpenter

# Short, so that an emptied node goes within seconds rather than the fleet file's 30 s.
CONSOLIDATE_AFTER = "5s"
# Longer than any wait below for readiness, so that a pod Ready in seconds proves its own
# annotation won over the cluster's default.
DEFAULT_STARTUP_SECONDS = 30.0


@dataclass
class Elastic:
    workdir: Path
    kube: Kube
    state: cluster.ClusterState


@pytest.fixture(scope="module")
def elastic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elastic]:
    with elastic_cluster(
        tmp_path_factory,
        consolidate_after=CONSOLIDATE_AFTER,
        startup_seconds=DEFAULT_STARTUP_SECONDS,
    ) as (workdir, kube, state):
        yield Elastic(workdir, kube, state)


@pytest.fixture
def namespace(elastic: Elastic, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"elastic-{uuid.uuid4().hex[:6]}"
    elastic.kube.run("create", "namespace", name)
    try:
        yield name
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            _dump(elastic, name)
        # Foreground: the pods are gone before the next test looks at nodes.
        elastic.kube.run("delete", "deployments", "--all", "-n", name, "--wait=true", check=False)
        elastic.kube.run("delete", "namespace", name, "--wait=false", check=False)


def _dump(elastic: Elastic, namespace: str) -> None:
    log = elastic.workdir / "logs" / "karpenter.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
    print(f"\n===== karpenter log (tail) =====\n{tail}", file=sys.stderr)
    claims = elastic.kube.run("get", "nodeclaims", "-o", "wide", check=False)
    print(f"===== nodeclaims =====\n{claims}", file=sys.stderr)
    nodes = elastic.kube.run("get", "nodes", "-L", f"{KARPENTER_CAPACITY_TYPE},{NODE_REGION}")
    print(f"===== nodes =====\n{nodes}", file=sys.stderr)
    events = elastic.kube.run(
        "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False
    )
    print(f"===== events in {namespace} =====\n{events}", file=sys.stderr)


def _gpu_deployment(
    name: str, capacity: str, region: str, gpu: str = "l4", startup: str | None = None
) -> dict[str, Any]:
    """One replica wanting one GPU of `gpu` on `capacity` in `region`, as a user would write it
    for Karpenter on EKS."""
    annotations = {SIMULATED_STARTUP: startup} if startup else {}
    requirements = [
        {"key": KARPENTER_CAPACITY_TYPE, "operator": "In", "values": [capacity]},
        {"key": NODE_REGION, "operator": "In", "values": [region]},
        {"key": KARPENTER_GPU_NAME, "operator": "In", "values": [gpu]},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {
                    "tolerations": [
                        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": requirements}]
                            }
                        }
                    },
                    "containers": [
                        {
                            "name": "model",
                            "image": "registry.example/model-server:1",
                            "resources": {"limits": {GPU_RESOURCE: "1"}},
                        }
                    ],
                },
            },
        },
    }


def _pod(kube: Kube, namespace: str, app: str) -> dict[str, Any] | None:
    pods = [
        p
        for p in kube.list("pods", namespace, selector=f"app={app}")
        if not p["metadata"].get("deletionTimestamp")
    ]
    return pods[0] if pods else None


def _bound(kube: Kube, namespace: str, app: str) -> str | None:
    pod = _pod(kube, namespace, app)
    return pod["spec"].get("nodeName") if pod else None


def _claims(kube: Kube, pool: str, region: str) -> set[str]:
    return {
        c["metadata"]["name"]
        for c in kube.list("nodeclaims", namespace=None, selector=f"{KARPENTER_NODEPOOL}={pool}")
        if (c["metadata"].get("labels") or {}).get(NODE_REGION) == region
        or any(
            r["key"] == NODE_REGION and region in r.get("values", [])
            for r in c["spec"].get("requirements", [])
        )
    }


def _karpenter_events(kube: Kube, namespace: str, pod: str) -> list[str]:
    events = json.loads(
        kube.run(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.name={pod}",
            "-o",
            "json",
        )
    )["items"]
    return [
        f"{e['reason']}: {e['message']}"
        for e in events
        if (e.get("source") or {}).get("component") == "karpenter"
        or e.get("reportingComponent") == "karpenter"
    ]


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_the_elastic_cluster_starts_without_gpu_nodes(elastic: Elastic) -> None:
    nodes = elastic.kube.nodes()

    assert nodes, "the CPU nodes are missing"
    assert [n for n, o in nodes.items() if GPU_RESOURCE in o["status"]["allocatable"]] == []
    assert elastic.kube.list("nodeclaims", namespace=None) == []
    pools = {p["metadata"]["name"]: p for p in elastic.kube.list("nodepools", namespace=None)}
    assert set(pools) == {"gpu-spot", "gpu-on-demand"}
    for pool in pools.values():
        assert pool["spec"]["disruption"]["consolidateAfter"] == CONSOLIDATE_AFTER
        wait_for(
            f"NodePool {pool['metadata']['name']} Ready",
            lambda p=pool["metadata"]["name"]: (
                (condition(elastic.kube.get("nodepool", p), "Ready") or {}).get("status") == "True"
            ),
            timeout=30,
        )
    assert cluster.alive(elastic.state.pids[karpenter.PROCESS])


def test_a_pending_gpu_pod_gets_a_spot_node_then_loads_its_model(
    elastic: Elastic, namespace: str
) -> None:
    kube = elastic.kube
    kube.apply(_gpu_deployment("l4", "spot", "eu-west-1", startup="5s"), namespace)

    claim = wait_for(
        "a spot NodeClaim in eu-west-1",
        lambda: _claims(kube, "gpu-spot", "eu-west-1"),
        timeout=60,
    )
    node_name = wait_for("the pod bound to a node", lambda: _bound(kube, namespace, "l4"))
    node = kube.get("node", node_name)
    assert node is not None
    labels = node["metadata"]["labels"]
    assert labels[KARPENTER_CAPACITY_TYPE] == "spot"
    assert labels[KARPENTER_NODEPOOL] == "gpu-spot"
    assert labels[NODE_REGION] == "eu-west-1"
    assert labels[NODE_ZONE] in ("eu-west-1a", "eu-west-1b")
    assert labels[NODE_INSTANCE_TYPE] == "g6.xlarge"
    assert {
        k: labels[k]
        for k in (
            KARPENTER_GPU_NAME,
            KARPENTER_GPU_MANUFACTURER,
            KARPENTER_GPU_COUNT,
            KARPENTER_GPU_MEMORY_MIB,
        )
    } == {
        KARPENTER_GPU_NAME: "l4",
        KARPENTER_GPU_MANUFACTURER: "nvidia",
        KARPENTER_GPU_COUNT: "1",
        KARPENTER_GPU_MEMORY_MIB: "23034",
    }
    assert node["status"]["allocatable"][GPU_RESOURCE] == "1"
    assert {"key": GPU_RESOURCE, "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node_name in {
        c["status"].get("nodeName")
        for c in kube.list("nodeclaims", namespace=None)
        if c["metadata"]["name"] in claim
    }

    # Containers started, model loading: Running but not Ready, then Ready ~5 s after.
    def running() -> bool:
        pod = _pod(kube, namespace, "l4")
        ready = condition(pod, "Ready")
        return bool(pod and pod["status"].get("phase") == "Running" and ready)

    wait_for("the pod Running", running, timeout=60, interval=0.25)
    pod = _pod(kube, namespace, "l4")
    assert pod is not None
    ready_now = (condition(pod, "Ready") or {}).get("status")
    assert ready_now == "False", "the pod was Ready as soon as it ran: no simulated loading"
    assert (condition(pod, "ContainersReady") or {}).get("status") == "False"
    assert all(s["started"] and not s["ready"] for s in pod["status"]["containerStatuses"])

    def ready() -> dict[str, Any] | None:
        pod = _pod(kube, namespace, "l4")
        ok = (condition(pod, "Ready") or {}).get("status") == "True"
        return pod if ok else None

    pod = wait_for("the pod Ready after its 5 s start-up", ready, timeout=20, interval=0.25)
    became_ready = condition(pod, "Ready")
    assert became_ready is not None
    loading = _stamp(became_ready["lastTransitionTime"]) - _stamp(pod["status"]["startTime"])
    assert 4 <= loading <= 8, f"Ready {loading:.0f}s after it started, not ~5 s"


def test_spot_capacity_running_out_leaves_spot_pods_pending_but_not_on_demand(
    elastic: Elastic, namespace: str
) -> None:
    kube = elastic.kube
    before = _claims(kube, "gpu-spot", "eu-west-1")
    karpenter.set_spot(
        elastic.workdir, "eu-west-1", available=False, bind_to_parent=True, progress=print
    )
    try:
        state = cluster.load_state(elastic.workdir)
        assert state is not None
        assert set(state.unavailable_spot["eu-west-1"]) == {
            "p5.48xlarge",
            "p4de.24xlarge",
            "g6.xlarge",
        }
        kube.apply(_gpu_deployment("spot", "spot", "eu-west-1", gpu="a100"), namespace)
        pod = wait_for("the spot pod", lambda: _pod(kube, namespace, "spot"))
        # Karpenter looked at the pod and found no offering for it.
        events = wait_for(
            "Karpenter's FailedScheduling event on the spot pod",
            lambda: [
                e
                for e in _karpenter_events(kube, namespace, pod["metadata"]["name"])
                if e.startswith("FailedScheduling")
            ],
            timeout=30,
        )
        assert "no instance type had enough resources or had a required offering" in events[0]

        kube.apply(_gpu_deployment("on-demand", "on-demand", "eu-west-1", gpu="a100"), namespace)
        node_name = wait_for(
            "the on-demand pod bound", lambda: _bound(kube, namespace, "on-demand"), timeout=60
        )
        node = kube.get("node", node_name)
        assert node is not None
        assert node["metadata"]["labels"][KARPENTER_CAPACITY_TYPE] == "on-demand"
        assert node["metadata"]["labels"][NODE_REGION] == "eu-west-1"
        # Karpenter had many rounds (a batch is at most 2 s) to launch spot; it did not.
        assert _bound(kube, namespace, "spot") is None
        assert _claims(kube, "gpu-spot", "eu-west-1") <= before
    finally:
        karpenter.set_spot(
            elastic.workdir, "eu-west-1", available=True, bind_to_parent=True, progress=print
        )

    node_name = wait_for(
        "the spot pod bound once spot is back", lambda: _bound(kube, namespace, "spot"), timeout=60
    )
    node = kube.get("node", node_name)
    assert node is not None
    assert node["metadata"]["labels"][KARPENTER_CAPACITY_TYPE] == "spot"
    assert node["metadata"]["labels"][NODE_REGION] == "eu-west-1"


def test_an_emptied_node_is_consolidated_away(elastic: Elastic, namespace: str) -> None:
    kube = elastic.kube
    kube.apply(_gpu_deployment("brief", "spot", "us-east-1", gpu="h100"), namespace)
    node_name = wait_for("the pod bound", lambda: _bound(kube, namespace, "brief"), timeout=60)

    kube.run("delete", "deployment", "brief", "-n", namespace, "--wait=true")
    emptied = time.monotonic()

    # ~30 s alone; nodes earlier tests emptied go first, one per ~15 s disruption round.
    wait_for(f"node {node_name} consolidated", lambda: kube.get("node", node_name) is None, 150)
    print(f"consolidated {time.monotonic() - emptied:.1f}s after it emptied")
    assert not _claims(kube, "gpu-spot", "us-east-1") & {node_name}


def test_a_spot_interruption_taints_at_once_and_takes_the_node_after_the_notice(
    elastic: Elastic, namespace: str
) -> None:
    kube = elastic.kube
    kube.apply(_gpu_deployment("victim", "spot", "us-east-1"), namespace)
    node_name = wait_for("the pod bound", lambda: _bound(kube, namespace, "victim"), timeout=60)

    began = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tidal.cli",
            "dev",
            "interrupt",
            node_name,
            "--notice",
            "5",
            "--workdir",
            str(elastic.workdir),
        ],
        check=True,
        cwd=REPO,
        timeout=30,
    )
    returned = time.monotonic() - began
    node = kube.get("node", node_name)

    assert returned < 5, f"the command blocked for {returned:.1f}s instead of returning at once"
    assert node is not None, "the node went before its notice was over"
    assert {"key": KARPENTER_DISRUPTED_TAINT, "effect": "NoSchedule"} in [
        {k: t[k] for k in ("key", "effect")} for t in node["spec"]["taints"]
    ]
    assert SIMULATED_TERMINATION_TIME in node["metadata"]["annotations"]
    state = cluster.load_state(elastic.workdir)
    assert state is not None
    helper = state.helpers[f"reclaim-{node_name}"]

    wait_for(f"node {node_name} gone", lambda: kube.get("node", node_name) is None, timeout=20)
    gone = time.monotonic() - began
    print(f"interrupted node gone {gone:.1f}s after the notice")
    assert gone < 5 + 10
    assert node_name not in {
        c["status"].get("nodeName") for c in kube.list("nodeclaims", namespace=None)
    }
    # The replica comes back on a node Karpenter launched for it.
    replacement = wait_for(
        "the replica rescheduled",
        lambda: (n := _bound(kube, namespace, "victim")) and n != node_name and n,
        timeout=60,
    )
    assert replacement != node_name
    wait_for("the helper finished", lambda: not cluster.helper_alive(helper), timeout=15)
