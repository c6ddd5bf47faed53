"""gateway.routing: endpoints and pods read into routes and replicas, and the routing rule."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from tidal.gateway.routing import (
    Ambiguous,
    NotFound,
    Route,
    replica_from_pod,
    resolve,
    route_from_endpoint,
)

ENDPOINT: dict[str, Any] = {
    "metadata": {
        "name": "llama",
        "namespace": "ml",
        "annotations": {
            "tidal.dev/wake-requested-at": "2026-03-01T12:00:00.500Z",
            "tidal.dev/last-request-time": "2026-03-01T11:59:00.000Z",
        },
    },
    "spec": {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, "runtime": {"port": 9000}},
    "status": {"scaledToZeroTime": "2026-03-01T11:00:00Z"},
}

POD: dict[str, Any] = {
    "metadata": {
        "name": "llama-spot-5d8f7c9b4-abcde",
        "namespace": "ml",
        "labels": {"tidal.dev/endpoint": "llama", "app.kubernetes.io/managed-by": "tidal"},
    },
    "status": {
        "phase": "Running",
        "podIP": "10.244.3.7",
        "conditions": [{"type": "Ready", "status": "True"}],
    },
}


def test_an_endpoint_becomes_a_route_with_its_model_port_and_signals() -> None:
    route = route_from_endpoint(ENDPOINT)

    assert route == Route(
        namespace="ml",
        name="llama",
        model="meta-llama/Llama-3.1-8B-Instruct",
        port=9000,
        wake_requested_at=datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC),
        scaled_to_zero_time=datetime(2026, 3, 1, 11, tzinfo=UTC),
        last_request_time=datetime(2026, 3, 1, 11, 59, tzinfo=UTC),
    )
    assert route.key == "ml/llama"


@pytest.mark.parametrize("port", [None, 0, 70000, "8000", True])
def test_a_missing_or_invalid_port_falls_back_to_the_runtime_default(port: object) -> None:
    obj = copy.deepcopy(ENDPOINT)
    obj["spec"]["runtime"] = {} if port is None else {"port": port}

    route = route_from_endpoint(obj)

    assert route is not None
    assert route.port == 8000


@pytest.mark.parametrize(
    "damage",
    [
        lambda o: o["spec"].pop("model"),
        lambda o: o["spec"]["model"].update(name=""),
        lambda o: o["metadata"].pop("namespace"),
    ],
)
def test_an_endpoint_without_a_model_name_cannot_be_routed(damage: Any) -> None:
    obj = copy.deepcopy(ENDPOINT)
    damage(obj)

    assert route_from_endpoint(obj) is None


def test_a_running_ready_pod_with_an_ip_is_a_ready_replica() -> None:
    replica = replica_from_pod(POD)

    assert replica is not None
    assert replica.ready
    assert (replica.key, replica.endpoint_key, replica.ip) == (
        "ml/llama-spot-5d8f7c9b4-abcde",
        "ml/llama",
        "10.244.3.7",
    )


NOT_READY = [
    ("pending", lambda p: p["status"].update(phase="Pending")),
    (
        "ready false",
        lambda p: p["status"].update(conditions=[{"type": "Ready", "status": "False"}]),
    ),
    ("no conditions", lambda p: p["status"].pop("conditions")),
    ("no ip yet", lambda p: p["status"].pop("podIP")),
    ("being deleted", lambda p: p["metadata"].update(deletionTimestamp="2026-03-01T12:00:00Z")),
]


@pytest.mark.parametrize(("case", "change"), NOT_READY, ids=[c for c, _ in NOT_READY])
def test_pods_that_cannot_serve_are_known_but_not_ready(case: str, change: Any) -> None:
    pod = copy.deepcopy(POD)
    change(pod)

    replica = replica_from_pod(pod)

    assert replica is not None
    assert not replica.ready


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p["metadata"]["labels"].pop("tidal.dev/endpoint"),
        lambda p: p["metadata"]["labels"].pop("app.kubernetes.io/managed-by"),
        lambda p: p["metadata"]["labels"].update({"app.kubernetes.io/managed-by": "someone"}),
    ],
)
def test_pods_tidal_did_not_create_are_not_replicas(change: Any) -> None:
    pod = copy.deepcopy(POD)
    change(pod)

    assert replica_from_pod(pod) is None


def _route(namespace: str, name: str, model: str) -> Route:
    return Route(namespace=namespace, name=name, model=model, port=8000)


ROUTES = [
    _route("ml", "llama", "llama-8b"),
    _route("team-b", "llama", "llama-8b"),
    _route("ml", "mistral", "mistral-7b"),
]


def test_one_endpoint_for_a_model_is_the_route() -> None:
    assert resolve(ROUTES, "mistral-7b") == ROUTES[2]


def test_no_endpoint_for_a_model_is_not_found() -> None:
    assert resolve(ROUTES, "gpt-5") == NotFound("gpt-5")
    assert resolve(ROUTES, "Mistral-7B") == NotFound("Mistral-7B")  # ids are exact


def test_several_endpoints_for_a_model_are_ambiguous_in_a_stable_order() -> None:
    assert resolve(list(reversed(ROUTES)), "llama-8b") == Ambiguous(
        "llama-8b", ("ml/llama", "team-b/llama")
    )


def test_the_endpoint_header_narrows_the_candidates() -> None:
    assert resolve(ROUTES, "llama-8b", "team-b/llama") == ROUTES[1]
    assert resolve(ROUTES, "llama-8b", "ml/mistral") == NotFound("llama-8b")
