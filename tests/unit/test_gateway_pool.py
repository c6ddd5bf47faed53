"""gateway.pool: the catalog kept by watch events, and least-in-flight balancing."""

from __future__ import annotations

import asyncio
from typing import Any

from tidal.gateway.pool import Backend, Catalog, EndpointState
from tidal.gateway.routing import NotFound, Replica, Route


class Addresses:
    """Pod IP -> itself on port 8000 (the production rule), minus `hidden` ones."""

    def __init__(self) -> None:
        self.hidden: set[str] = set()

    def address(self, replica: Replica, port: int) -> tuple[str, int] | None:
        if not replica.ip or replica.ip in self.hidden:
            return None
        return replica.ip, port


def endpoint(name: str = "llama", port: int = 8000) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"model": {"name": f"{name}-model"}, "runtime": {"port": port}},
    }


def pod(name: str, ip: str, *, endpoint: str = "llama", ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"tidal.dev/endpoint": endpoint, "app.kubernetes.io/managed-by": "tidal"},
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def catalog(addresses: Addresses | None = None, now: list[float] | None = None) -> Catalog:
    clock = now if now is not None else [0.0]
    found = Catalog(addresses or Addresses(), monotonic=lambda: clock[0], cooldown_seconds=5)
    found.replace_routes([endpoint()])
    found.replace_replicas([pod("a", "10.0.0.1"), pod("b", "10.0.0.2"), pod("c", "10.0.0.3")])
    return found


def state(c: Catalog, key: str = "ml/llama") -> EndpointState:
    return c.states[key]


def _replica(s: EndpointState, tried: set[str], now: float) -> str:
    picked = s.pick(tried, now)
    assert picked is not None
    return picked.replica


def test_the_catalog_is_synced_after_both_lists() -> None:
    c = Catalog(Addresses())
    assert not c.synced
    c.replace_routes([])
    assert not c.synced
    c.replace_replicas([])
    assert c.synced


def test_backends_are_the_ready_pods_on_the_endpoints_port() -> None:
    c = catalog()
    c.apply_replica("ADDED", pod("d", "10.0.0.4", ready=False))
    c.apply_replica("ADDED", pod("x", "10.0.0.9", endpoint="other"))

    urls = sorted(b.url for b in state(c).backends.values())

    assert urls == ["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"]


def test_pod_events_add_update_and_remove_backends() -> None:
    c = catalog()
    c.apply_replica("MODIFIED", pod("a", "10.0.0.1", ready=False))
    c.apply_replica("DELETED", pod("b", "10.0.0.2"))
    c.apply_replica("ADDED", pod("e", "10.0.0.5"))

    assert sorted(state(c).backends) == ["ml/c", "ml/e"]


def test_a_port_change_moves_every_backend() -> None:
    c = catalog()
    c.apply_route("MODIFIED", endpoint(port=9000))

    assert {b.port for b in state(c).backends.values()} == {9000}


def test_an_unaddressable_ready_pod_gets_no_traffic_until_its_address_appears() -> None:
    addresses = Addresses()
    addresses.hidden = {"10.0.0.1"}
    c = catalog(addresses)
    assert "ml/a" not in state(c).backends

    addresses.hidden.clear()
    c.refresh_addresses()

    assert "ml/a" in state(c).backends


def test_least_in_flight_wins_and_ties_rotate() -> None:
    c = catalog()
    s = state(c)
    s.backends["ml/a"].in_flight = 2
    s.backends["ml/b"].in_flight = 0
    s.backends["ml/c"].in_flight = 0

    picks = [_replica(s, set(), 0.0) for _ in range(4)]

    assert set(picks) == {"ml/b", "ml/c"}
    assert picks[0] != picks[1]


def test_tried_backends_are_excluded_and_none_is_left_after_all() -> None:
    c = catalog()
    s = state(c)

    assert s.pick({"ml/a", "ml/b"}, 0.0) == s.backends["ml/c"]
    assert s.pick({"ml/a", "ml/b", "ml/c"}, 0.0) is None


def test_a_failed_backend_sits_out_its_cooldown_unless_nothing_else_is_left() -> None:
    clock = [100.0]
    c = catalog(now=clock)
    s = state(c)
    c.failed(s.backends["ml/a"])

    assert {_replica(s, set(), clock[0]) for _ in range(6)} == {"ml/b", "ml/c"}
    assert s.pick({"ml/b", "ml/c"}, clock[0]) == s.backends["ml/a"]
    clock[0] += 5
    assert "ml/a" in {_replica(s, set(), clock[0]) for _ in range(6)}


def test_counters_survive_unrelated_pod_events() -> None:
    c = catalog()
    backend: Backend = state(c).backends["ml/a"]
    backend.in_flight = 3

    c.apply_replica("DELETED", pod("b", "10.0.0.2"))

    assert state(c).backends["ml/a"] is backend
    assert backend.in_flight == 3


def test_waiters_wake_when_backends_change_and_a_deleted_endpoint_says_so() -> None:
    async def scenario() -> tuple[bool, bool]:
        c = Catalog(Addresses())
        c.replace_routes([endpoint()])
        c.replace_replicas([])
        s = state(c)
        waiter = asyncio.create_task(s.changed(timeout=5))
        await asyncio.sleep(0)
        c.apply_replica("ADDED", pod("a", "10.0.0.1"))
        await asyncio.wait_for(waiter, 1)
        woke = s.ready() == 1

        waiter = asyncio.create_task(s.changed(timeout=5))
        await asyncio.sleep(0)
        c.apply_route("DELETED", endpoint())
        await asyncio.wait_for(waiter, 1)
        return woke, s.deleted and "ml/llama" not in c.states

    assert asyncio.run(scenario()) == (True, True)


def test_waiting_without_news_returns_after_the_timeout() -> None:
    async def scenario() -> None:
        s = EndpointState(Route("ml", "llama", "m", 8000))
        await asyncio.wait_for(s.changed(timeout=0.05), 1)

    asyncio.run(scenario())


def test_a_relist_forgets_endpoints_that_are_gone_and_reports_them() -> None:
    forgotten: list[str] = []
    c = Catalog(Addresses(), on_forget=forgotten.append)
    c.replace_routes([endpoint(), endpoint("mistral")])

    c.replace_routes([endpoint("mistral")])

    assert list(c.states) == ["ml/mistral"]
    assert forgotten == ["ml/llama"]


def test_an_endpoint_is_routed_by_its_current_model_only() -> None:
    c = catalog()
    renamed = endpoint()
    renamed["spec"]["model"]["name"] = "llama-v2"
    c.apply_route("MODIFIED", renamed)

    assert c.resolve("llama-model", None) == NotFound("llama-model")
    assert c.resolve("llama-v2", None) is state(c)
    c.apply_route("DELETED", renamed)
    assert c.resolve("llama-v2", None) == NotFound("llama-v2")
