"""The InferenceEndpoint handlers' own logic: parsing, ownership, triggering, persistence."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from tidal.api.inference import Engine
from tidal.api.labels import RENDER_HASH, UTILIZATION_HISTORY, CapacityType
from tidal.clients.prometheus import PrometheusReader
from tidal.controllers import inference
from tidal.controllers.indexes import Inputs
from tidal.controllers.inference import (
    SPEC_CHANGED,
    TICK,
    WORLD_CHANGED,
    Mode,
    _differs,
    _history_changes,
    _measure,
    _owning_endpoint,
    _parse,
    _QuietWatchHandlers,
    _render,
    _service_levels,
    _trigger,
    _with_policy_error,
    _without_nulls,
)
from tidal.controllers.pricing import PricingCache
from tidal.errors import PermanentError
from tidal.placement import history
from tidal.placement.model import (
    FleetSnapshot,
    History,
    NodeInfo,
    Placement,
    UtilizationSample,
)
from tidal.residency.policy import parse
from tidal.slo import Measurement


def body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": "chat", "namespace": "ml", "uid": "u", "generation": 2},
        "spec": spec,
        "status": {"replicas": "not what this version writes"},
    }


VALID = {"model": {"name": "m"}, "residency": {"regions": ["eu-west-1"]}}


def test_a_valid_spec_parses_and_a_foreign_status_is_ignored() -> None:
    ie = _parse(body(VALID))
    assert ie.metadata["name"] == "chat"
    assert ie.spec.residency.regions == ["eu-west-1"]


def test_an_invalid_spec_is_permanent_with_wire_field_paths() -> None:
    spec = {**VALID, "scaling": {"minReplicas": 3, "maxReplicas": 2}, "gpu": {"count": 0}}
    with pytest.raises(PermanentError) as info:
        _parse(body(spec))
    message = str(info.value)
    assert "spec.gpu.count" in message
    assert "spec.scaling" in message
    assert "minReplicas must be less than or equal to scaling.maxReplicas" in message


def test_a_missing_spec_is_invalid() -> None:
    with pytest.raises(PermanentError, match="spec"):
        _parse({"metadata": {"name": "chat"}})


def test_long_error_lists_are_elided() -> None:
    spec = {
        "model": {"name": ""},
        "residency": {"regions": []},
        "runtime": {"port": 0, "engine": "Nope"},
        "gpu": {"count": 0},
        "capacity": {"maxSpotPercent": 101},
        "scaling": {"minReplicas": -1},
    }
    with pytest.raises(PermanentError, match=r"and \d+ more$"):
        _parse(body(spec))


def owned(refs: list[dict[str, Any]]) -> kopf.Body:
    raw: Any = {"metadata": {"name": "chat-spot", "ownerReferences": refs}}
    return kopf.Body(raw)


def test_the_owner_is_the_controlling_inference_endpoint() -> None:
    ref = {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "name": "chat",
        "uid": "u",
        "controller": True,
    }
    assert _owning_endpoint(owned([ref])) == "chat"
    assert _owning_endpoint(owned([{**ref, "controller": False}])) is None
    assert _owning_endpoint(owned([{**ref, "kind": "Other"}])) is None
    assert _owning_endpoint(owned([])) is None


# --- triggers: serialized per endpoint, coalesced while one waits -------------------------------


def test_modes_merge_to_the_strongest_request() -> None:
    merged = WORLD_CHANGED.merge(TICK)
    assert merged == Mode(force_apply=True, sample_history=True, require_observed=False)
    assert WORLD_CHANGED.merge(WORLD_CHANGED) == WORLD_CHANGED
    assert SPEC_CHANGED.merge(WORLD_CHANGED) == SPEC_CHANGED


def test_triggers_for_one_endpoint_run_one_at_a_time_and_fold_into_the_waiting_one() -> None:
    runs: list[Mode] = []
    release = threading.Event()
    logger = logging.getLogger("test")

    def run(namespace: str, name: str, mode: Mode, inputs: Any, logger: Any) -> None:
        runs.append(mode)
        if len(runs) == 1:
            release.wait(5)  # the first reconcile is still running while the others arrive

    async def scenario() -> None:
        first = asyncio.create_task(_trigger("ml", "chat", SPEC_CHANGED, {}, logger, run=run))
        while not runs:
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(_trigger("ml", "chat", WORLD_CHANGED, {}, logger, run=run))
        await asyncio.sleep(0.01)
        folded = [
            asyncio.create_task(_trigger("ml", "chat", mode, {}, logger, run=run))
            for mode in (TICK, WORLD_CHANGED, WORLD_CHANGED)
        ]
        await asyncio.gather(*folded)  # returned at once: the waiting trigger does their work
        assert len(runs) == 1
        other = asyncio.create_task(_trigger("ml", "other", WORLD_CHANGED, {}, logger, run=run))
        await other  # another endpoint is not held up
        release.set()
        await asyncio.gather(first, waiting)

    asyncio.run(scenario())
    assert runs == [SPEC_CHANGED, WORLD_CHANGED, WORLD_CHANGED.merge(TICK)]


# --- pure helpers of the reconcile -----------------------------------------------------------


def test_a_child_is_reapplied_only_when_missing_or_stamped_differently() -> None:
    child = {"kind": "Service", "metadata": {"name": "chat", "annotations": {RENDER_HASH: "a"}}}
    same = {("Service", "chat"): {"metadata": {"name": "chat", "annotations": {RENDER_HASH: "a"}}}}
    other = {("Service", "chat"): {"metadata": {"name": "chat", "annotations": {RENDER_HASH: "b"}}}}
    assert not _differs(child, same)
    assert _differs(child, other)
    assert _differs(child, {})
    assert _differs(child, {("Service", "chat"): {"metadata": {"name": "chat"}}})


def test_a_deployment_scaled_by_hand_differs_although_its_stamp_is_the_same() -> None:
    meta = {"name": "chat-spot", "annotations": {RENDER_HASH: "a"}}
    child = {"kind": "Deployment", "metadata": meta, "spec": {"replicas": 2}}
    assert not _differs(
        child, {("Deployment", "chat-spot"): {"metadata": meta, "spec": {"replicas": 2}}}
    )
    assert _differs(
        child, {("Deployment", "chat-spot"): {"metadata": meta, "spec": {"replicas": 5}}}
    )


def _children(spot: int, reserved: int, existing: dict[tuple[Any, str], Any]) -> list[str]:
    placement = Placement(
        desired=spot + reserved, spot=spot, reserved=reserved, allowed_regions=("eu-west-1",)
    )
    ie = _parse(body(VALID))
    rendered = _render(ie, placement, Inputs(fleet=FleetSnapshot()), existing, [])
    return [f"{c['kind']}/{c['metadata']['name']}={c['spec'].get('replicas')}" for c in rendered]


def test_a_capacity_type_gets_its_deployment_when_it_first_runs_a_replica_and_keeps_it() -> None:
    assert _children(1, 0, {}) == ["Deployment/chat-spot=1", "Service/chat=None"]
    assert _children(0, 2, {}) == ["Deployment/chat-reserved=2", "Service/chat=None"]
    # A Deployment that exists stays, scaled to 0 (at once: none of its replicas serves).
    spot = {"kind": "Deployment", "metadata": {"name": "chat-spot"}, "spec": {"replicas": 1}}
    assert _children(0, 1, {("Deployment", "chat-spot"): spot}) == [
        "Deployment/chat-spot=0",
        "Deployment/chat-reserved=1",
        "Service/chat=None",
    ]
    assert _children(0, 0, {}) == ["Service/chat=None"]


def test_a_namespace_policy_error_is_appended_to_the_reason() -> None:
    placement = Placement(desired=1, spot=1, reserved=0, allowed_regions=("eu-west-1",), reason="r")
    assert _with_policy_error(placement, None) is placement
    assert _with_policy_error(placement, parse("eu-west-1")) is placement
    flawed = _with_policy_error(placement, parse("eu-west-1,EU"))
    assert flawed.reason.startswith("r; namespace annotation tidal.dev/allowed-regions")
    long = dataclasses.replace(placement, reason="x" * 1024)
    assert len(_with_policy_error(long, parse("EU")).reason) == 1024


def sample(minute: int) -> UtilizationSample:
    return UtilizationSample(
        time=datetime(2025, 1, 31, 12, minute, tzinfo=UTC), utilization_percent=50, replicas=1
    )


def test_history_reaches_the_annotation_once_per_bucket() -> None:
    one = History(samples=(sample(0),))
    assert _history_changes(History(), {}) == {}
    assert _history_changes(one, {}) == {UTILIZATION_HISTORY: history.dumps(one)}
    stored = {UTILIZATION_HISTORY: history.dumps(one)}
    # Merged into the same 5-minute bucket: kept in memory, not written.
    same_bucket = history.append(one, sample(2))
    assert len(same_bucket.samples) == 1
    assert _history_changes(same_bucket, stored) == {}
    # A new bucket: written.
    next_bucket = history.append(same_bucket, sample(6))
    assert _history_changes(next_bucket, stored) == {
        UTILIZATION_HISTORY: history.dumps(next_bucket)
    }


def test_routine_successes_of_watch_handlers_are_not_logged() -> None:
    quiet = _QuietWatchHandlers()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, None, None)

    assert not quiet.filter(record("Handler 'node_changed' succeeded."))
    assert quiet.filter(record("Handler 'node_changed' failed with an exception."))
    assert quiet.filter(record("Handler 'reconcile_endpoint' succeeded."))
    assert quiet.filter(record("Replanning endpoints after a node change node=n1"))


# --- service levels and cost -------------------------------------------------------------------


def test_unknown_status_values_compare_as_absent_so_nothing_is_patched_twice() -> None:
    written = {"cost": {"hourlyUSD": "1.00", "perMillionTokensUSD": None}, "n": [{"a": None}]}
    stored = {"cost": {"hourlyUSD": "1.00"}, "n": [{}]}
    assert _without_nulls(written) == _without_nulls(stored)


def _refusing(_promql: str, _at: float | None) -> list[dict[str, Any]]:
    raise ConnectionRefusedError("connection refused")


def test_an_unreachable_prometheus_is_no_data_with_the_reason_not_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inference._services, "reader", PrometheusReader(_refusing))
    now = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)

    measured = _measure("ml", "chat", Engine.VLLM, now)

    assert measured.error is not None
    assert "unreachable" in measured.error
    assert not measured.measurement.has_data
    assert measured.at == now


def test_service_levels_price_the_running_replicas_and_judge_the_last_measurement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = {**VALID, "slo": {"p95LatencyMs": 1000}, "cost": {"maxHourlyUSD": "5"}}
    ie = _parse(body(spec))
    fleet = FleetSnapshot(
        nodes=(
            NodeInfo(
                name="n1",
                region="eu-west-1",
                zone=None,
                capacity_type=CapacityType.SPOT,
                gpu_product="NVIDIA-H100-80GB-HBM3",
            ),
        )
    )
    running = {
        "metadata": {"name": "chat-spot-1-x"},
        "spec": {
            "nodeName": "n1",
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}],
        },
        "status": {"phase": "Running"},
    }
    inputs = Inputs(fleet=fleet)
    pricing = PricingCache(lambda _ns, _name: None, "ops", 60)
    monkeypatch.setattr(inference._services, "pricing", pricing)

    unmeasured = _service_levels(ie, [running], inputs)
    assert unmeasured.slo is None
    assert unmeasured.cost.hourly_usd == "7.58"  # 2 x $3.79 (spot H100, eu-west-1)
    assert unmeasured.within_budget.reason == "OverBudget"
    assert "built-in default prices" in (unmeasured.cost.basis or "")

    taken = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    measurement = Measurement(
        window_seconds=300, p95_latency_seconds=1.5, tokens_per_second=1000.0, source="vllm"
    )
    monkeypatch.setitem(inference._measured, "u", inference._Measured(measurement, taken))

    levels = _service_levels(ie, [running], inputs)
    assert levels.slo is not None
    assert levels.slo.p95_latency_ms == 1500
    assert levels.slo.evaluated_time == "2025-01-31T12:00:00Z"
    assert levels.slo_met is not None
    assert (levels.slo_met.status, levels.slo_met.reason) == ("False", "LatencyAboveTarget")
    assert levels.cost.per_million_tokens_usd == "2.11"  # $7.58/h over 3.6M tokens/h
