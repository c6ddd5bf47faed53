"""The endpoints' PodMonitors as the reconcile sees them: listed on a timer, told of the
operator's own applies at once, and none where the kind is not served. The LIST is a function
the tests replace; the clock is injected."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tidal.errors import TemporaryError
from tidal.runtime.podmonitors import PodMonitorCache


def monitor(name: str, endpoint: str | None, stamp: str = "s1", ns: str = "ml") -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "tidal"}
    if endpoint is not None:
        labels["tidal.dev/endpoint"] = endpoint
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}-{stamp}",
            "labels": labels,
            "annotations": {"tidal.dev/render-hash": stamp},
            "managedFields": [{"manager": "tidal"}],
        },
        "spec": {"selector": {"matchLabels": {"tidal.dev/endpoint": endpoint}}},
    }


class Cluster:
    """Answers the LIST from `monitors`, or raises `error`; counts the LISTs."""

    def __init__(self) -> None:
        self.monitors: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self.lists = 0

    def __call__(self) -> list[dict[str, Any]]:
        self.lists += 1
        if self.error is not None:
            raise self.error
        return list(self.monitors)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def stamps(cache: PodMonitorCache, endpoint: str, ns: str = "ml") -> list[str]:
    return [m["metadata"]["annotations"]["tidal.dev/render-hash"] for m in cache.of(ns, endpoint)]


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(cluster: Cluster, clock: Clock) -> PodMonitorCache:
    return PodMonitorCache(cluster, 30.0, clock=clock)


def test_listed_monitors_are_kept_by_endpoint_with_what_the_reconcile_reads(
    cluster: Cluster, cache: PodMonitorCache
) -> None:
    cluster.monitors = [
        monitor("chat", "chat"),
        monitor("rag", "rag", ns="other"),
        monitor("stray", None),  # not an endpoint's: left out
    ]
    assert cache.of("ml", "chat") == ()  # nothing before a LIST
    cache.refresh(served=True)
    (kept,) = cache.of("ml", "chat")
    assert set(kept) == {"apiVersion", "kind", "metadata"}
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"tidal.dev/render-hash": "s1"}
    assert stamps(cache, "rag", ns="other") == ["s1"]
    assert cache.of("ml", "stray") == ()


def test_the_list_is_read_at_most_once_per_interval_and_sees_a_hand_deletion(
    cluster: Cluster, cache: PodMonitorCache, clock: Clock
) -> None:
    cluster.monitors = [monitor("chat", "chat")]
    cache.refresh(served=True)
    cluster.monitors = []
    clock.now += 29
    cache.refresh(served=True)
    assert cluster.lists == 1
    assert stamps(cache, "chat") == ["s1"]
    clock.now += 1
    cache.refresh(served=True)
    assert cache.of("ml", "chat") == ()


def test_an_apply_is_seen_at_once_and_survives_a_list_that_began_before_it(
    cluster: Cluster, clock: Clock
) -> None:
    racing = [monitor("chat", "chat", "s3")]

    def listing() -> list[dict[str, Any]]:
        # The operator applies while the LIST is on its way; the LIST does not show it.
        while racing:
            clock.now += 1
            seen.applied(racing.pop())
        return cluster()

    seen = PodMonitorCache(listing, 30.0, clock=clock)
    seen.applied(monitor("chat", "chat", "s2"))
    assert stamps(seen, "chat") == ["s2"]
    seen.refresh(served=True)
    assert stamps(seen, "chat") == ["s3"]
    # The next LIST is the truth again: deleted by hand since.
    clock.now += 30
    seen.refresh(served=True)
    assert seen.of("ml", "chat") == ()


def test_an_apply_older_than_the_list_gives_way_to_it(
    cluster: Cluster, cache: PodMonitorCache, clock: Clock
) -> None:
    cache.applied(monitor("chat", "chat", "s1"))
    clock.now += 1
    cluster.monitors = [monitor("chat", "chat", "edited")]
    cache.refresh(served=True)
    assert stamps(cache, "chat") == ["edited"]


def test_without_the_kind_there_are_none_and_nothing_is_listed(
    cluster: Cluster, cache: PodMonitorCache, clock: Clock
) -> None:
    cluster.monitors = [monitor("chat", "chat")]
    cache.refresh(served=True)
    clock.now += 30
    cache.refresh(served=False)
    assert cache.of("ml", "chat") == ()
    assert cluster.lists == 1


def test_a_failed_list_keeps_what_was_seen_and_is_told_once(
    cluster: Cluster, cache: PodMonitorCache, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.monitors = [monitor("chat", "chat")]
    cache.refresh(served=True)
    cluster.error = TemporaryError("HTTP 403: forbidden", delay=30)
    with caplog.at_level(logging.WARNING, logger="tidal.podmonitors"):
        for _ in range(3):
            clock.now += 30
            cache.refresh(served=True)
    assert stamps(cache, "chat") == ["s1"]
    assert len([r for r in caplog.records if "forbidden" in r.getMessage()]) == 1


def test_a_deleted_endpoints_monitors_are_forgotten(
    cluster: Cluster, cache: PodMonitorCache, clock: Clock
) -> None:
    cache.applied(monitor("chat", "chat"))
    cache.applied(monitor("rag", "rag"))
    cache.forget("ml", "chat")
    assert cache.of("ml", "chat") == ()
    assert stamps(cache, "rag") == ["s1"]
    # Nor does a LIST that began before the deletion bring the applied one back.
    clock.now += 30
    cache.refresh(served=True)
    assert cache.of("ml", "chat") == ()
