"""The shared runtime's small pieces: owners of children, quiet watch handlers, measuring."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from tidal.api.endpoint import Engine
from tidal.api.labels import WAKE_REQUESTED_AT
from tidal.clients.prometheus import PrometheusReader
from tidal.runtime.memory import EndpointMemory, measure
from tidal.runtime.objects import controlling_owner
from tidal.runtime.seen import WakeWatch
from tidal.runtime.services import QuietWatchHandlers, pricing_cache, served_kinds

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def test_the_owner_is_the_controlling_object_of_the_kind() -> None:
    ref = {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "name": "chat",
        "uid": "u",
        "controller": True,
    }

    def owner(refs: list[dict[str, Any]]) -> str | None:
        return controlling_owner(
            {"name": "chat-spot", "ownerReferences": refs}, "InferenceEndpoint"
        )

    assert owner([ref]) == "chat"
    assert owner([{**ref, "controller": False}]) is None
    assert owner([{**ref, "kind": "Other"}]) is None
    assert owner([{**ref, "apiVersion": "other.dev/v1"}]) is None
    assert owner([]) is None


def test_routine_successes_of_watch_handlers_are_not_logged() -> None:
    quiet = QuietWatchHandlers(["node_changed"])

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, None, None)

    assert not quiet.filter(record("Handler 'node_changed' succeeded."))
    assert quiet.filter(record("Handler 'node_changed' failed with an exception."))
    assert quiet.filter(record("Handler 'reconcile_endpoint' succeeded."))
    assert quiet.filter(record("Replanning endpoints after a node change node=n1"))


def test_pod_monitors_off_reads_no_discovery_and_serves_no_kind() -> None:
    kinds = served_kinds({"TIDAL_POD_MONITORS": "off"})
    kinds.refresh()  # nothing wanted: no request is made (none could be, here)
    assert not kinds.serves("monitoring.coreos.com/v1", "podmonitors")


def _refusing(_promql: str, _at: float | None) -> list[dict[str, Any]]:
    raise ConnectionRefusedError("connection refused")


def test_an_unreachable_prometheus_is_no_data_with_the_reason_not_a_failure() -> None:
    measured = measure(PrometheusReader(_refusing), "ml", "chat", Engine.VLLM, NOW)
    assert measured.error is not None
    assert "unreachable" in measured.error
    assert not measured.measurement.has_data
    assert measured.at == NOW


def test_a_measurement_is_due_after_the_interval_and_forgotten_with_the_endpoint() -> None:
    memory = EndpointMemory()
    assert memory.measurement_due("u", NOW, 30)
    memory.keep_measured("u", measure(PrometheusReader(_refusing), "ml", "c", Engine.VLLM, NOW))
    assert not memory.measurement_due("u", NOW, 30)
    assert memory.measurement_due("u", NOW.replace(second=30), 30)
    memory.forget("u")
    assert memory.measured("u") is None


def test_both_kinds_price_from_the_one_configmap_in_the_operators_namespace() -> None:
    cache = pricing_cache({"TIDAL_NAMESPACE": "tidal-ops", "TIDAL_PRICING_REFRESH_SECONDS": "60"})
    assert cache.where == "ConfigMap tidal-ops/tidal-pricing"


def test_a_wake_is_new_only_after_the_initial_listing_and_only_when_it_changes() -> None:
    wakes = WakeWatch()
    first = {WAKE_REQUESTED_AT: "2026-12-01T12:00:00.000Z"}
    second = {WAKE_REQUESTED_AT: "2026-12-01T12:05:00.000Z"}
    assert wakes.new_wake("u", None, first) is None  # the initial listing: resume's job
    assert wakes.new_wake("u", "MODIFIED", first) is None  # unchanged
    assert wakes.new_wake("u", "MODIFIED", second) == "2026-12-01T12:05:00.000Z"
    assert wakes.new_wake("u", "MODIFIED", {}) is None  # removed: nothing to act on
    assert wakes.new_wake("v", "ADDED", first) is None  # a new object: create handles it
    assert wakes.new_wake("u", "DELETED", {}) is None
    assert wakes.new_wake("u", "MODIFIED", second) is None  # forgotten: seen afresh
