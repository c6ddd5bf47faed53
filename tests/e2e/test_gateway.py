"""The gateway against a real API server: routing to the pods the operator created, streaming,
holding at zero ready replicas with the wake annotation, and the admission policy that confines
the gateway's ServiceAccount.

The gateway runs as a process authenticated as its own ServiceAccount (manifests/gateway RBAC
and policy applied), so every list, watch and annotation here also proves its permissions are
enough and no more. Simulated model servers stand in for the engines (tests/e2e/gateway.py).
The wake -> scale up -> cold start path needs the operator's scaling wiring and lives in
test_scale_to_zero.py.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import REPO, Operator, wait_for
from tests.e2e.gateway import (
    FakeReplicas,
    GatewayProcess,
    install_access,
    post,
    remove_access,
    token_kubeconfig,
)
from tests.e2e.kube import Kube, KubectlError
from tests.fakes.model_server import Behaviour
from tidal.api.labels import LAST_REQUEST_TIME, WAKE_REQUESTED_AT
from tidal.api.wire import parse_time

SAMPLE: dict[str, Any] = yaml.safe_load(
    (REPO / "manifests/samples/inferenceendpoint-llama.yaml").read_text()
)
# Held requests give up after this long; short so the 503 test is quick, long enough for the
# hold test to start a server after seeing the wake annotation.
BUDGET_SECONDS = 12


@pytest.fixture(scope="module")
def stack(
    kube: Kube, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, FakeReplicas]]:
    workdir = tmp_path_factory.mktemp("gateway")
    install_access(kube)
    replicas = FakeReplicas(kube, workdir / "pod-addresses.json")
    gateway = None
    try:
        kubeconfig = token_kubeconfig(kube, workdir)
        gateway = GatewayProcess.start(
            kubeconfig,
            replicas.map_file,
            workdir / "gateway.log",
            f"--cold-start-budget={BUDGET_SECONDS}",
            "--last-request-interval=1",
        )
        yield gateway, replicas
    finally:
        if gateway is not None:
            gateway.stop()
        replicas.close()
        remove_access(kube)


@pytest.fixture
def gateway(
    stack: tuple[GatewayProcess, FakeReplicas], request: pytest.FixtureRequest
) -> Iterator[GatewayProcess]:
    yield stack[0]
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(f"\n===== gateway log (tail) =====\n{stack[0].tail()}", file=sys.stderr)


@pytest.fixture
def replicas(stack: tuple[GatewayProcess, FakeReplicas]) -> Iterator[FakeReplicas]:
    yield stack[1]
    stack[1].forget_all()  # this test's pods go with its namespace; their IPs will be reused


def _endpoint(name: str, model: str, **scaling: int) -> dict[str, Any]:
    obj = copy.deepcopy(SAMPLE)
    obj["metadata"] = {"name": name}
    obj["spec"]["model"] = {"name": model}
    obj["spec"]["scaling"] = scaling or {"minReplicas": 1, "maxReplicas": 1}
    return obj


def _create(kube: Kube, namespace: str, name: str, model: str, pods: int = 1) -> None:
    kube.apply(_endpoint(name, model, minReplicas=pods, maxReplicas=pods), namespace)
    wait_for(
        f"{pods} Running pod(s) of {name}",
        lambda: len(FakeReplicas.running_pods_of(kube, namespace, name)) >= pods or None,
        timeout=120,
    )


def _routable(gateway: GatewayProcess, namespace: str, name: str, ready: int) -> bool:
    endpoint = gateway.inflight()["endpoints"].get(f"{namespace}/{name}")
    return endpoint is not None and endpoint["readyReplicas"] == ready


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


def test_requests_are_balanced_over_the_pods_the_operator_created(
    kube: Kube, namespace: str, operator: Operator, gateway: GatewayProcess, replicas: FakeReplicas
) -> None:
    model = f"{namespace}/chat"
    _create(kube, namespace, "chat", model, pods=2)
    servers = replicas.serve(namespace, "chat", Behaviour(model=model, ttft_seconds=0.2))
    assert len(servers) == 2
    wait_for("both pods routable", lambda: _routable(gateway, namespace, "chat", 2), 30)

    results: list[tuple[int, bytes]] = []

    def call() -> None:
        status, _, body = post(gateway.url + "/v1/chat/completions", _chat(model, max_tokens=3))
        results.append((status, body))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [status for status, _ in results] == [200] * 8
    assert json.loads(results[0][1])["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
    assert sorted(s.requests for s in servers) == [4, 4]
    with urllib.request.urlopen(gateway.url + "/v1/models", timeout=10) as answer:
        listing = json.load(answer)
    assert {"id": model, "endpoints": [f"{namespace}/chat"]}.items() <= next(
        m for m in listing["data"] if m["id"] == model
    ).items()
    last = wait_for(
        "the last-request-time annotation",
        lambda: (
            (kube.get("inferenceendpoint", "chat", namespace) or {})["metadata"]
            .get("annotations", {})
            .get(LAST_REQUEST_TIME)
        ),
        timeout=30,
    )
    assert parse_time(last) is not None
    assert f'tidal_gateway_generated_tokens_total{{tidal_endpoint="{namespace}/chat"}} 24.0' in (
        gateway.metrics()
    )


def test_a_stream_arrives_token_by_token_through_the_gateway(
    kube: Kube, namespace: str, operator: Operator, gateway: GatewayProcess, replicas: FakeReplicas
) -> None:
    model = f"{namespace}/stream"
    _create(kube, namespace, "stream", model)
    replicas.serve(namespace, "stream", Behaviour(model=model, tokens_per_second=8))
    wait_for("the pod routable", lambda: _routable(gateway, namespace, "stream", 1), 30)
    request = urllib.request.Request(
        gateway.url + "/v1/chat/completions",
        data=json.dumps(_chat(model, stream=True, max_tokens=6)).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )

    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        for raw in answer:
            line = raw.decode().strip()
            if line.startswith("data: "):
                arrivals.append((time.monotonic() - started, line[6:]))

    assert arrivals[-1][1] == "[DONE]"
    tokens = [(t, json.loads(d)["choices"][0]["delta"].get("content")) for t, d in arrivals[:-1]]
    assert [c for _, c in tokens] == ["", "tok0", " tok1", " tok2", " tok3", " tok4", " tok5"]
    # Six tokens at 8/s: the last arrives ~0.6 s after the first unless something buffers.
    assert tokens[-1][0] - tokens[1][0] >= 0.45


def test_an_unknown_model_is_a_404_json_error(gateway: GatewayProcess) -> None:
    status, headers, body = post(gateway.url + "/v1/chat/completions", _chat("no/such-model"))

    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "model_not_found"


def test_at_zero_ready_replicas_a_request_asks_for_a_wake_and_is_held_until_one_serves(
    kube: Kube, namespace: str, operator: Operator, gateway: GatewayProcess, replicas: FakeReplicas
) -> None:
    model = f"{namespace}/sleepy"
    _create(kube, namespace, "sleepy", model)  # Running, but no server yet: not routable
    wait_for(
        "the endpoint known to the gateway", lambda: _routable(gateway, namespace, "sleepy", 0)
    )
    answer: dict[str, Any] = {}

    def call() -> None:
        started = time.monotonic()
        answer["result"] = post(gateway.url + "/v1/chat/completions", _chat(model), timeout=60)
        answer["seconds"] = time.monotonic() - started

    caller = threading.Thread(target=call)
    caller.start()
    try:
        wake = wait_for(
            "the wake annotation written by the gateway",
            lambda: (
                (kube.get("inferenceendpoint", "sleepy", namespace) or {})["metadata"]
                .get("annotations", {})
                .get(WAKE_REQUESTED_AT)
            ),
            timeout=BUDGET_SECONDS - 4,
        )
        held = gateway.inflight()["endpoints"][f"{namespace}/sleepy"]
        assert held["held"] == 1
        assert held["wakeRequestedAt"] == wake
        assert "result" not in answer

        replicas.serve(namespace, "sleepy", Behaviour(model=model))  # the replica "became ready"
        caller.join(timeout=30)
    finally:
        caller.join(timeout=BUDGET_SECONDS + 30)

    status, _, body = answer["result"]
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"]
    assert answer["seconds"] < BUDGET_SECONDS
    assert parse_time(wake) is not None
    assert gateway.inflight()["endpoints"][f"{namespace}/sleepy"]["held"] == 0
    waits = f'outcome="forwarded",tidal_endpoint="{namespace}/sleepy"'
    assert f"tidal_gateway_cold_start_wait_seconds_count{{{waits}}} 1.0" in gateway.metrics()


def test_past_the_cold_start_budget_a_held_request_gets_503_and_retry_after(
    kube: Kube, namespace: str, operator: Operator, gateway: GatewayProcess
) -> None:
    model = f"{namespace}/never"
    _create(kube, namespace, "never", model)
    wait_for("the endpoint known to the gateway", lambda: _routable(gateway, namespace, "never", 0))

    started = time.monotonic()
    status, headers, body = post(gateway.url + "/v1/chat/completions", _chat(model), timeout=60)

    assert status == 503
    assert BUDGET_SECONDS <= time.monotonic() - started < BUDGET_SECONDS + 10
    assert int(headers["Retry-After"]) > 0
    assert json.loads(body)["error"]["code"] == "cold_start_timeout"


def test_the_policy_lets_the_gateway_write_only_its_two_annotations(
    kube: Kube, namespace: str, operator: Operator, stack: tuple[GatewayProcess, FakeReplicas]
) -> None:
    kube.apply(_endpoint("guarded", f"{namespace}/guarded"), namespace)
    with tempfile.TemporaryDirectory() as tmp:
        as_gateway = Kube(token_kubeconfig(kube, Path(tmp), "10m"), kube.kubectl)

        def patch(body: dict[str, Any], *extra: str) -> str:
            return as_gateway.run(
                "patch", "ie", "guarded", "-n", namespace, "--type=merge", "-p", json.dumps(body),
                *extra,
            )  # fmt: skip

        def annotations(values: dict[str, str]) -> dict[str, Any]:
            return {"metadata": {"annotations": values}}

        patch(annotations({WAKE_REQUESTED_AT: "2026-03-01T12:00:00.250Z"}))
        patch(annotations({LAST_REQUEST_TIME: "2026-03-01T12:00:01Z"}))

        refusals: dict[str, Callable[[], object]] = {
            "another annotation": lambda: patch(annotations({"e2e/other": "x"})),
            "a bad time": lambda: patch(annotations({WAKE_REQUESTED_AT: "soon"})),
            "a label": lambda: patch({"metadata": {"labels": {"e2e/x": "1"}}}),
            "the spec": lambda: patch({"spec": {"scaling": {"maxReplicas": 1, "minReplicas": 0}}}),
            "the status (RBAC)": lambda: patch({"status": {"url": "x"}}, "--subresource=status"),
            "deleting (RBAC)": lambda: as_gateway.run(
                "delete", "ie", "guarded", "-n", namespace, "--dry-run=server"
            ),
            "another kind (RBAC)": lambda: as_gateway.run(
                "annotate", "namespace", namespace, "e2e/x=1"
            ),
        }
        messages = {}
        for what, attempt in refusals.items():
            with pytest.raises(KubectlError) as refused:
                attempt()
            messages[what] = refused.value.stderr

    for what in ("another annotation",):
        assert "may only change the tidal.dev/wake-requested-at" in messages[what], messages
    assert "must be RFC3339 UTC times" in messages["a bad time"]
    assert "may not change an InferenceEndpoint's spec, labels" in messages["a label"]
    assert "may not change an InferenceEndpoint's spec, labels" in messages["the spec"]
    for what in ("the status (RBAC)", "deleting (RBAC)", "another kind (RBAC)"):
        assert "forbidden" in messages[what].lower(), messages[what]
    obj = kube.get("inferenceendpoint", "guarded", namespace)
    assert obj is not None
    assert obj["metadata"]["annotations"][WAKE_REQUESTED_AT] == "2026-03-01T12:00:00.250Z"
    assert "e2e/other" not in obj["metadata"]["annotations"]
    assert "e2e/x" not in obj["metadata"].get("labels", {})
