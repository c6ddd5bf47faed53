"""Scale to zero and wake on the first request, end to end (issue 6).

An endpoint with `minReplicas: 0` idles to zero; a request through the gateway writes the wake
annotation, is held, and succeeds once a replica is ready; `lastColdStartSeconds` is set; six
concurrent streams raise the replica count from the gateway's in-flight load and it falls back
after they stop. The operator polls `GET <gateway admin>/internal/inflight`
(`TIDAL_GATEWAY_URLS`), reconciles at once when `tidal.dev/wake-requested-at` changes, and at
least every `TIDAL_RECONCILE_INTERVAL_SECONDS` (5 here).

This module restarts the session's operator with `TIDAL_GATEWAY_URL` and short stabilization
windows, and restores it afterwards, so no other test sees a different operator.

`TIDAL_E2E_WAKE_BACKGROUND=N` (default 0) first gives the operator N other endpoints to manage
(minReplicas 0, idle, so scaled to zero; refreshed every 5 s here), all scaled to zero before
the tests: issue #9 measures the operator's share of a wake "at 100 endpoints" with
`TIDAL_E2E_WAKE_BACKGROUND=100 pytest tests/e2e/test_scale_to_zero.py -s -k wakes`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
import time
from collections.abc import Iterator
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
from tests.e2e.kube import Kube, condition
from tests.fakes.model_server import Behaviour
from tidal.api.labels import WAKE_REQUESTED_AT

SAMPLE: dict[str, Any] = yaml.safe_load(
    (REPO / "manifests/samples/inferenceendpoint-llama.yaml").read_text()
)
IDLE_SECONDS = 10
OPERATOR_ENV = {
    "TIDAL_SCALE_DOWN_STABILIZATION_SECONDS": "5",
    "TIDAL_LOAD_STALE_AFTER_SECONDS": "15",
}


@pytest.fixture(scope="module")
def scaling_stack(
    kube: Kube, crds: None, operator: Operator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, FakeReplicas]]:
    workdir = tmp_path_factory.mktemp("scale-to-zero")
    install_access(kube)
    replicas = FakeReplicas(kube, workdir / "pod-addresses.json")
    gateway = GatewayProcess.start(
        token_kubeconfig(kube, workdir),
        replicas.map_file,
        workdir / "gateway.log",
        "--cold-start-budget=120",
        "--last-request-interval=1",
    )
    saved = {k: os.environ.get(k) for k in ("TIDAL_GATEWAY_URL", *OPERATOR_ENV)}
    os.environ.update(TIDAL_GATEWAY_URL=gateway.admin_url, **OPERATOR_ENV)
    operator.stop()
    operator.start()
    try:
        yield gateway, replicas
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        operator.stop()
        operator.start()
        gateway.stop()
        replicas.close()
        remove_access(kube)


BACKGROUND_NAMESPACE = "e2e-wake-background"


@pytest.fixture(scope="module", autouse=True)
def background(kube: Kube, scaling_stack: tuple[GatewayProcess, FakeReplicas]) -> Iterator[int]:
    """`TIDAL_E2E_WAKE_BACKGROUND` other endpoints, all scaled to zero (none by default)."""
    count = int(os.environ.get("TIDAL_E2E_WAKE_BACKGROUND") or 0)
    if not count:
        yield 0
        return
    kube.run("create", "namespace", BACKGROUND_NAMESPACE)
    items = [
        {
            **_endpoint(f"bg-{i:03d}", "meta-llama/Llama-3.1-8B-Instruct"),
            "metadata": {"name": f"bg-{i:03d}", "namespace": BACKGROUND_NAMESPACE},
        }
        for i in range(count)
    ]
    kube.run(
        "create", "-f", "-", stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": items})
    )
    try:
        wait_for(
            f"{count} background endpoints scaled to zero",
            lambda: all(
                _scaled_to_zero(kube, BACKGROUND_NAMESPACE, f"bg-{i:03d}") for i in range(count)
            ),
            timeout=600,
        )
        yield count
    finally:
        kube.run("delete", "namespace", BACKGROUND_NAMESPACE, "--wait=false", check=False)


def _endpoint(name: str, model: str) -> dict[str, Any]:
    obj = copy.deepcopy(SAMPLE)
    obj["metadata"] = {"name": name}
    obj["spec"]["model"] = {"name": model}
    obj["spec"]["scaling"] = {
        "minReplicas": 0,
        "maxReplicas": 3,
        "idleSecondsBeforeScaleToZero": IDLE_SECONDS,
        "targetInFlightRequests": 2,
    }
    return obj


def _status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    obj = kube.get("inferenceendpoint", name, namespace) or {}
    return dict(obj.get("status") or {})


def _scaled_to_zero(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    obj = kube.get("inferenceendpoint", name, namespace)
    cond = condition(obj, "ScaledToZero")
    status = (obj or {}).get("status") or {}
    pods = FakeReplicas.running_pods_of(kube, namespace, name)
    if cond and cond["status"] == "True" and status.get("scaledToZeroTime") and not pods:
        return status
    return None


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            inside = line[len(name) + 1 : line.index("}")]
            if wanted <= set(inside.split(",")):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


@pytest.fixture(autouse=True)
def _fresh_replicas(scaling_stack: tuple[GatewayProcess, FakeReplicas]) -> Iterator[None]:
    yield
    scaling_stack[1].forget_all()


def test_an_idle_endpoint_scales_to_zero_and_the_first_request_wakes_it(
    kube: Kube,
    namespace: str,
    operator: Operator,
    scaling_stack: tuple[GatewayProcess, FakeReplicas],
    background: int,
) -> None:
    gateway, replicas = scaling_stack
    model = f"{namespace}/wake"
    replicas.follow(namespace, "wake", Behaviour(model=model))
    kube.apply(_endpoint("wake", model), namespace)

    asleep = wait_for(
        "ScaledToZero=True with no Running pod",
        lambda: _scaled_to_zero(kube, namespace, "wake"),
        timeout=IDLE_SECONDS + 90,
    )
    assert asleep["replicas"]["desired"] == 0

    answer: dict[str, Any] = {}

    def call() -> None:
        answer["result"] = post(gateway.url + "/v1/chat/completions", _chat(model), timeout=150)

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(
        "the wake annotation",
        lambda: (
            (kube.get("ie", "wake", namespace) or {})["metadata"].get("annotations") or {}
        ).get(WAKE_REQUESTED_AT),
        timeout=30,
    )
    caller.join(timeout=150)

    status, _, body = answer["result"]
    assert status == 200, body
    # Held, then forwarded: the gateway's cold-start histogram counts exactly that request.
    # (Asserting `held == 1` while it waits would race the wake: here a replica is ready
    # within about a second.)
    held = _metric(
        gateway.metrics(),
        "tidal_gateway_cold_start_wait_seconds_count",
        tidal_endpoint=f"{namespace}/wake",
        outcome="forwarded",
    )
    assert held == 1, gateway.metrics()
    waited = _metric(
        gateway.metrics(),
        "tidal_gateway_cold_start_wait_seconds_sum",
        tidal_endpoint=f"{namespace}/wake",
        outcome="forwarded",
    )
    woke = wait_for(
        "lastColdStartSeconds",
        lambda: (
            _status(kube, namespace, "wake").get("lastColdStartSeconds") is not None
            and _status(kube, namespace, "wake")
        ),
        timeout=60,
    )
    assert woke["lastColdStartSeconds"] > 0
    scaled = condition(kube.get("ie", "wake", namespace), "ScaledToZero")
    assert scaled is not None
    assert scaled["status"] == "False"
    events = kube.run("get", "events", "-n", namespace, "-o", "json")
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"ScaledToZero", "Waking", "WokeUp"} <= reasons
    # The numbers behind a wake (shown with -s): the operator's share is wake annotation ->
    # Deployment scaled up, from its log line; the request's hold is the gateway's.
    shares = re.findall(r"operator_share_seconds=([0-9.]+)", operator.tail(2000))
    print(
        f"wake: held {waited:.2f}s at the gateway, lastColdStartSeconds "
        f"{woke['lastColdStartSeconds']}, operator's share {shares[-1] if shares else '?'}s"
        f" (with {background} other endpoints managed)"
    )
    assert shares, "the operator logs its share of the wake"


def test_concurrent_load_adds_replicas_and_they_fall_back_after_it_stops(
    kube: Kube, namespace: str, scaling_stack: tuple[GatewayProcess, FakeReplicas]
) -> None:
    gateway, replicas = scaling_stack
    model = f"{namespace}/busy"
    replicas.follow(namespace, "busy", Behaviour(model=model, tokens_per_second=10))
    obj = _endpoint("busy", model)
    obj["spec"]["scaling"]["idleSecondsBeforeScaleToZero"] = 600  # this test is about load
    kube.apply(obj, namespace)
    wait_for(
        "one replica routable",
        lambda: (
            (gateway.inflight()["endpoints"].get(f"{namespace}/busy") or {}).get("readyReplicas")
            == 1
        ),
        timeout=120,
    )

    # Six 30 s streams against targetInFlightRequests 2: the operator should want 3 replicas.
    stop = time.monotonic() + 30
    callers = [
        threading.Thread(
            target=post,
            args=(gateway.url + "/v1/chat/completions", _chat(model, stream=True, max_tokens=300)),
            kwargs={"timeout": 120},
        )
        for _ in range(6)
    ]
    for caller in callers:
        caller.start()
    wait_for(
        "3 desired replicas under load",
        lambda: (_status(kube, namespace, "busy").get("replicas") or {}).get("desired") == 3,
        timeout=max(5, stop - time.monotonic()),
    )
    for caller in callers:
        caller.join(timeout=120)

    wait_for(
        "back to 1 replica after the load",
        lambda: (_status(kube, namespace, "busy").get("replicas") or {}).get("desired") == 1,
        timeout=90,
    )
