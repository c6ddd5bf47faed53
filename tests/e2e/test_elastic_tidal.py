"""E2E: Tidal on the elastic fleet, where GPU nodes exist only when a real node autoscaler
(Karpenter with its KWOK cloud provider) launches them for Pending pods, as on EKS.

A cluster of its own (not the suite's shared static one) starts with CPU nodes only; Tidal's
operator runs against it. Simulated replicas take `STARTUP` seconds to become Ready (model
loading, the KWOK stage's delay). The operator is told the cluster's conventions as a user would
(`CONVENTIONS`, the `tidal-capacity` ConfigMap): Karpenter's spot marker only, and GPUs named by
instance type (the AKS/generic profile), so Karpenter must provision for `node.kubernetes.io/
instance-type` requirements; the `karpenter-aws` profile is exercised against Karpenter by
`make bench-elastic` and `make demo FLEET=elastic`. Assertions are on what the API server holds:
the endpoints' status and Events, the pods, the nodes Karpenter made (their capacity type,
region, NodePool, instance type).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Operator, install_crds, wait_for
from tests.e2e.elastic import elastic_cluster
from tests.e2e.gateway import FakeReplicas, GatewayProcess, install_access, post, token_kubeconfig
from tests.e2e.kube import Kube, condition
from tests.fakes.model_server import Behaviour
from tidal.api.labels import (
    GPU_RESOURCE,
    KARPENTER_CAPACITY_TYPE,
    KARPENTER_NODEPOOL,
    NODE_INSTANCE_TYPE,
    NODE_REGION,
)
from tidal.devcluster import karpenter

# How long a simulated replica loads before it is Ready.
STARTUP = 3
# Shorter than the default 600 s, so the timeout path is not what these tests wait for.
PROVISION_TIMEOUT = 120

Node = dict[str, Any]
Pod = dict[str, Any]

# The instance types of the elastic fleet (operator/tidal/devcluster/data/elastic.yaml).
INSTANCE_TYPES = {
    "p5.48xlarge": {"gpuProduct": "NVIDIA-H100-80GB-HBM3", "gpuCount": 8, "gpuMemoryMiB": 81559},
    "p4de.24xlarge": {"gpuProduct": "NVIDIA-A100-SXM4-80GB", "gpuCount": 8, "gpuMemoryMiB": 81920},
    "g6.xlarge": {"gpuProduct": "NVIDIA-L4", "gpuCount": 1, "gpuMemoryMiB": 23034},
}
CONVENTIONS = {
    "spotMarkers": [{"key": KARPENTER_CAPACITY_TYPE, "value": "spot"}],
    "gpuLabelProfile": "instance-type",
    "instanceTypes": INSTANCE_TYPES,
}


@dataclass
class Elastic:
    workdir: Path
    kube: Kube
    operator: Operator
    gateway: GatewayProcess
    replicas: FakeReplicas


@pytest.fixture(scope="module")
def elastic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elastic]:
    with elastic_cluster(tmp_path_factory, consolidate_after="5s", startup_seconds=STARTUP) as (
        workdir,
        kube,
        _state,
    ):
        install_crds(kube)
        install_access(kube)
        replicas = FakeReplicas(kube, workdir / "pod-addresses.json")
        gateway = GatewayProcess.start(
            token_kubeconfig(kube, workdir),
            replicas.map_file,
            workdir / "gateway.log",
            "--cold-start-budget=300",
            "--last-request-interval=1",
        )
        operator = Operator(
            kube,
            workdir / "operator.log",
            env={
                "TIDAL_SPOT_PROVISION_TIMEOUT_SECONDS": str(PROVISION_TIMEOUT),
                "TIDAL_CAPACITY_REFRESH_SECONDS": "2",
                "TIDAL_GATEWAY_URL": gateway.admin_url,
                "TIDAL_SCALE_DOWN_STABILIZATION_SECONDS": "5",
                "TIDAL_LOAD_STALE_AFTER_SECONDS": "15",
            },
        )
        kube.run("create", "namespace", operator.namespace)
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "tidal-capacity",
                    "labels": {"app.kubernetes.io/part-of": "tidal"},
                },
                "data": {"conventions.yaml": yaml.safe_dump(CONVENTIONS)},
            },
            operator.namespace,
        )
        operator.start()
        try:
            yield Elastic(workdir, kube, operator, gateway, replicas)
        finally:
            operator.stop()
            gateway.stop()
            replicas.close()


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
        elastic.kube.run("delete", "inferenceendpoints", "--all", "-n", name, check=False)
        elastic.replicas.forget_all()
        elastic.kube.run("delete", "namespace", name, "--wait=false", check=False)


def _dump(elastic: Elastic, namespace: str) -> None:
    print(f"\n===== operator log (tail) =====\n{elastic.operator.tail(80)}", file=sys.stderr)
    log = elastic.workdir / "logs" / "karpenter.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
    print(f"===== karpenter log (tail) =====\n{tail}", file=sys.stderr)
    for what in ("nodeclaims", "nodes"):
        listing = elastic.kube.run("get", what, "-o", "wide", check=False)
        print(f"===== {what} =====\n{listing}", file=sys.stderr)
    events = elastic.kube.run(
        "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False
    )
    print(f"===== events in {namespace} =====\n{events}", file=sys.stderr)


def _endpoint(
    name: str,
    *,
    policy: str,
    region: str,
    replicas: int = 2,
    gpu: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", **(model or {})},
            "gpu": gpu or {"count": 1},
            "capacity": {"policy": policy},
            "residency": {"regions": [region]},
            "scaling": {"minReplicas": replicas, "maxReplicas": replicas},
        },
    }


def _labels(node: Node) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def _gpu_nodes(kube: Kube) -> dict[str, Node]:
    return {
        name: node
        for name, node in kube.nodes().items()
        if int((node.get("status") or {}).get("allocatable", {}).get(GPU_RESOURCE, "0")) > 0
    }


def _ready(pod: Pod) -> bool:
    return bool((condition(pod, "Ready") or {}).get("status") == "True")


def _live_pods(kube: Kube, namespace: str, name: str) -> list[Pod]:
    return [
        pod
        for pod in kube.list("pods", namespace, selector=f"tidal.dev/endpoint={name}")
        if not pod["metadata"].get("deletionTimestamp")
    ]


def _settled_on(
    kube: Kube, namespace: str, name: str, replicas: int, on: Callable[[Node], bool]
) -> list[Node] | None:
    """The nodes of the endpoint's replicas once it is Ready with exactly `replicas` Ready
    pods, every one on a node for which `on` holds; else None."""
    endpoint = kube.get("inferenceendpoint", name, namespace)
    if (condition(endpoint, "Ready") or {}).get("status") != "True":
        return None
    pods = _live_pods(kube, namespace, name)
    if len(pods) != replicas or not all(_ready(pod) for pod in pods):
        return None
    nodes = kube.nodes()
    hosts = [nodes.get(pod["spec"].get("nodeName", "")) for pod in pods]
    if any(host is None or not on(host) for host in hosts):
        return None
    return [host for host in hosts if host is not None]


def _karpenter(capacity: str, region: str) -> Callable[[Node], bool]:
    def check(node: Node) -> bool:
        labels = _labels(node)
        return (
            labels.get(KARPENTER_CAPACITY_TYPE) == capacity
            and labels.get(NODE_REGION) == region
            and KARPENTER_NODEPOOL in labels
        )

    return check


def _events(kube: Kube, namespace: str, reason: str) -> list[str]:
    listed = kube.list("events", namespace)
    return [str(e.get("message", "")) for e in listed if e.get("reason") == reason]


def test_spot_preferred_from_zero_gpu_nodes_lands_on_karpenter_spot_nodes(
    elastic: Elastic, namespace: str
) -> None:
    kube = elastic.kube
    assert _gpu_nodes(kube) == {}, "the elastic fleet starts without GPU nodes"
    kube.apply(_endpoint("chat", policy="SpotPreferred", region="eu-west-1"), namespace)
    reasons: list[str] = []

    def settled() -> list[Node] | None:
        status = (kube.get("inferenceendpoint", "chat", namespace) or {}).get("status") or {}
        reasons.append(str((status.get("placement") or {}).get("reason", "")))
        return _settled_on(kube, namespace, "chat", 2, _karpenter("spot", "eu-west-1"))

    nodes = wait_for("2 Ready replicas on Karpenter spot nodes in eu-west-1", settled, 180)
    assert {_labels(n)[KARPENTER_NODEPOOL] for n in nodes} == {"gpu-spot"}
    # Every replica start is measured from its pod (creation to Ready: Karpenter launching the
    # node, then the simulated model load), not only a wake from zero: Auto's recovery reads it.
    started = wait_for(
        "status.lastReplicaStartSeconds",
        lambda: ((kube.get("inferenceendpoint", "chat", namespace) or {}).get("status") or {}).get(
            "lastReplicaStartSeconds"
        ),
        30,
    )
    assert STARTUP <= float(started) <= 180, started
    assert any("spot to be provisioned by NodePool gpu-spot" in r for r in reasons), reasons
    # The replicas waited for nodes that were launching: that is no spot loss.
    assert _events(kube, namespace, "SpotCapacityLost") == []


def test_reserved_only_lands_on_on_demand_nodes_only(elastic: Elastic, namespace: str) -> None:
    kube = elastic.kube
    kube.apply(_endpoint("steady", policy="ReservedOnly", region="us-east-1"), namespace)
    nodes = wait_for(
        "2 Ready replicas on Karpenter on-demand nodes in us-east-1",
        lambda: _settled_on(kube, namespace, "steady", 2, _karpenter("on-demand", "us-east-1")),
        180,
    )
    assert {_labels(n)[KARPENTER_NODEPOOL] for n in nodes} == {"gpu-on-demand"}


def test_spot_out_of_capacity_moves_to_on_demand_naming_it_and_back_make_before_break(
    elastic: Elastic, namespace: str
) -> None:
    kube = elastic.kube
    region = "us-east-1"
    karpenter.set_spot(elastic.workdir, region, available=False, progress=lambda _: None)
    try:
        kube.apply(_endpoint("bursty", policy="SpotPreferred", region=region), namespace)
        wait_for(
            "2 Ready replicas on on-demand once Karpenter says it cannot launch spot",
            lambda: _settled_on(kube, namespace, "bursty", 2, _karpenter("on-demand", region)),
            PROVISION_TIMEOUT,
        )
        lost = _events(kube, namespace, "SpotCapacityLost")
        assert lost, "the move to on-demand is announced"
        assert any("cannot be provisioned" in m and "FailedScheduling" in m for m in lost), lost
    finally:
        karpenter.set_spot(elastic.workdir, region, available=True, progress=lambda _: None)

    # Spot is back: after the hysteresis the replicas return to spot, make before break.
    fewest = 2
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready = sum(1 for pod in _live_pods(kube, namespace, "bursty") if _ready(pod))
        fewest = min(fewest, ready)
        if _settled_on(kube, namespace, "bursty", 2, _karpenter("spot", region)):
            break
        time.sleep(0.5)
    else:
        pytest.fail("the replicas did not return to spot within 240 s")
    assert fewest >= 2, f"only {fewest} Ready replicas at one point while moving back to spot"
    assert _events(kube, namespace, "SpotCapacityReturned")


def test_an_interruption_with_notice_never_leaves_fewer_ready_replicas_than_desired(
    elastic: Elastic, namespace: str
) -> None:
    kube = elastic.kube
    kube.apply(_endpoint("steady-spot", policy="SpotOnly", region="eu-west-1"), namespace)
    nodes = wait_for(
        "2 Ready replicas on spot",
        lambda: _settled_on(kube, namespace, "steady-spot", 2, _karpenter("spot", "eu-west-1")),
        180,
    )
    victim = str(nodes[0]["metadata"]["name"])
    notice = 30  # longer than a node launch plus the replica's STARTUP
    karpenter.interrupt(elastic.workdir, victim, notice, progress=lambda _: None)
    fewest = 2
    deadline = time.monotonic() + notice + 120
    while time.monotonic() < deadline:
        pods = _live_pods(kube, namespace, "steady-spot")
        fewest = min(fewest, sum(1 for pod in pods if _ready(pod)))
        gone = victim not in kube.nodes()
        on_victim = [p for p in pods if p["spec"].get("nodeName") == victim]
        settled = _settled_on(kube, namespace, "steady-spot", 2, _karpenter("spot", "eu-west-1"))
        if gone and not on_victim and settled:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the endpoint did not settle on spot again after the interruption")
    assert fewest >= 2, f"only {fewest} Ready replicas at one point during the interruption"
    assert _events(kube, namespace, "ReplacingLeavingReplicas")


def test_a_gpu_product_is_required_by_instance_type_a_label_a_node_has_before_it_exists(
    elastic: Elastic, namespace: str
) -> None:
    kube = elastic.kube
    spec = _endpoint(
        "sized",
        policy="ReservedOnly",
        region="eu-west-1",
        replicas=1,
        gpu={"count": 1, "products": ["NVIDIA-L4"]},
        model={"weightsGiB": 8},
    )
    kube.apply(spec, namespace)
    (node,) = wait_for(
        "1 Ready replica on a Karpenter L4 on-demand node",
        lambda: _settled_on(kube, namespace, "sized", 1, _karpenter("on-demand", "eu-west-1")),
        180,
    )
    assert _labels(node)[NODE_INSTANCE_TYPE] == "g6.xlarge"
    deployment = kube.get("deployment", "sized-reserved", namespace)
    assert deployment is not None
    template = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms = template["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    # Reserved: one term, no marker says spot (only Karpenter's, as the conventions say).
    (term,) = terms
    expressions = term["matchExpressions"]
    assert {"key": NODE_INSTANCE_TYPE, "operator": "In", "values": ["g6.xlarge"]} in expressions
    assert {"key": KARPENTER_CAPACITY_TYPE, "operator": "NotIn", "values": ["spot"]} in expressions
    keys = {e["key"] for e in expressions}
    assert not any(key.startswith(("nvidia.com/", "karpenter.k8s.aws/")) for key in keys)


def test_scaled_to_zero_the_gpu_node_goes_and_a_request_brings_a_new_one_and_is_served(
    elastic: Elastic, namespace: str
) -> None:
    kube = elastic.kube
    model = f"{namespace}/wake"
    elastic.replicas.follow(namespace, "wake", Behaviour(model=model))
    # The gateway routes by the model name clients send.
    spec = _endpoint(
        "wake", policy="SpotPreferred", region="us-east-1", replicas=1, model={"name": model}
    )
    spec["spec"]["scaling"] = {
        "minReplicas": 0,
        "maxReplicas": 2,
        # Long enough for the first replica's node to launch and its model to load.
        "idleSecondsBeforeScaleToZero": 30,
        "targetInFlightRequests": 2,
    }
    kube.apply(spec, namespace)
    hosts: set[str] = set()

    def asleep() -> bool:
        """Scaled to zero, and every node its replicas ran on consolidated away."""
        hosts.update(
            str(pod["spec"]["nodeName"])
            for pod in _live_pods(kube, namespace, "wake")
            if pod["spec"].get("nodeName")
        )
        endpoint = kube.get("ie", "wake", namespace)
        return bool(
            (condition(endpoint, "ScaledToZero") or {}).get("status") == "True"
            and not _live_pods(kube, namespace, "wake")
            and hosts
            and not hosts & set(kube.nodes())
        )

    wait_for("scaled to zero and its GPU node consolidated away", asleep, 240)
    # A request wakes it: the gateway holds it while Karpenter launches a node and the replica
    # loads, then serves it.
    status, _, body = post(
        elastic.gateway.url + "/v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": "hello"}]},
        timeout=300,
    )
    assert status == 200, body
    (after,) = wait_for(
        "the woken replica Ready on a new spot node",
        lambda: _settled_on(kube, namespace, "wake", 1, _karpenter("spot", "us-east-1")),
        120,
    )
    assert after["metadata"]["name"] not in hosts
    woke = _events(kube, namespace, "WokeUp")
    assert any("to a node" in message for message in woke), woke
