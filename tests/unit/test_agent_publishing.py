"""When the agent writes the annotation: meaningful change, availability change, or heartbeat."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.agent.publishing import Thresholds, decide
from tidal.api.telemetry import GpuSample, GpuTelemetry, PodUsage

T0 = 1000.0


def _doc(
    utils: tuple[float | None, ...] = (50.0, 50.0),
    *,
    memory: int = 40000,
    pods: tuple[PodUsage, ...] = (),
    **top: Any,
) -> GpuTelemetry:
    gpus = [
        GpuSample(
            index=i,
            uuid=f"GPU-{i}",
            utilization_percent=u,
            memory_used_mib=memory,
            memory_total_mib=80000,
            mig_mode=False,
        )
        for i, u in enumerate(utils)
    ]
    return GpuTelemetry(time=datetime(2026, 1, 1, tzinfo=UTC), gpus=gpus, pods=list(pods), **top)


def _pod(
    util: float | None = 40.0, memory: int | None = 1000, gpus: tuple[int, ...] = (0,)
) -> PodUsage:
    return PodUsage(
        namespace="team",
        name="llama-0",
        uid="u",
        gpu_indexes=list(gpus),
        utilization_percent=util,
        memory_used_mib=memory,
    )


def test_the_first_document_is_always_published() -> None:
    decision = decide(None, None, _doc(), T0)

    assert (decision.publish, decision.reason) == (True, "first")


def test_an_unchanged_document_waits_for_the_heartbeat() -> None:
    doc = _doc()

    assert not decide(doc, T0, _doc(), T0 + 59).publish
    heartbeat = decide(doc, T0, _doc(), T0 + 60)
    assert (heartbeat.publish, heartbeat.reason) == (True, "heartbeat")


@pytest.mark.parametrize(
    ("current", "reason"),
    [
        (_doc((56.0, 50.0)), "utilization"),
        (_doc((50.0, 44.0)), "utilization"),
        (_doc((None, 50.0)), "utilization"),  # a value became unknown
        (_doc(memory=44001), "memory"),  # > 5 % of 80000 MiB
        (_doc((50.0,)), "devices"),
        (_doc((50.0, 50.0, 50.0)), "devices"),
        (_doc(pods=(_pod(),)), "pods"),
    ],
    ids=["gpu0 +6", "gpu1 -6", "unknown", "memory +4001", "gpu gone", "gpu new", "pod new"],
)
def test_meaningful_changes_publish_after_the_minimum_interval(
    current: GpuTelemetry, reason: str
) -> None:
    previous = _doc()

    held = decide(previous, T0, current, T0 + 4)
    published = decide(previous, T0, current, T0 + 5)

    assert (held.publish, held.reason) == (False, reason)
    assert (published.publish, published.reason) == (True, reason)


@pytest.mark.parametrize(
    "current",
    [_doc((55.0, 45.0)), _doc(memory=44000), _doc(memory=36000)],
    ids=["util +-5 exactly", "memory +5% exactly", "memory -5% exactly"],
)
def test_changes_within_the_thresholds_do_not_publish(current: GpuTelemetry) -> None:
    decision = decide(_doc(), T0, current, T0 + 30)

    assert (decision.publish, decision.reason) == (False, None)


def test_pod_utilization_and_memory_changes_count() -> None:
    previous = _doc(pods=(_pod(40.0, 1000),))

    assert decide(previous, T0, _doc(pods=(_pod(46.0, 1000),)), T0 + 10).reason == "utilization"
    assert decide(previous, T0, _doc(pods=(_pod(40.0, 1051),)), T0 + 10).reason == "memory"
    assert decide(previous, T0, _doc(pods=(_pod(40.0, 1050),)), T0 + 10).reason is None
    assert decide(previous, T0, _doc(pods=(_pod(gpus=(0, 1)),)), T0 + 10).reason == "pods"


@pytest.mark.parametrize(
    "current",
    [
        _doc(source="unavailable", error="NVML unavailable"),
        _doc(error="GPU 1: GPU is lost"),
    ],
    ids=["unavailable", "partial error"],
)
def test_availability_changes_publish_at_once(current: GpuTelemetry) -> None:
    decision = decide(_doc(), T0, current, T0 + 0.5)

    assert (decision.publish, decision.reason) == (True, "availability")


def test_an_unavailable_node_only_heartbeats() -> None:
    down = _doc((), source="unavailable", error="NVML unavailable")

    assert not decide(down, T0, down, T0 + 30).publish
    assert decide(down, T0, down, T0 + 60).publish


def test_a_changed_uuid_or_mig_mode_is_a_device_change() -> None:
    previous = _doc()
    swapped = previous.model_copy(deep=True)
    swapped.gpus[0].uuid = "GPU-new"
    mig = previous.model_copy(deep=True)
    mig.gpus[1].mig_mode = True

    assert decide(previous, T0, swapped, T0 + 10).reason == "devices"
    assert decide(previous, T0, mig, T0 + 10).reason == "devices"


def test_thresholds_are_configurable() -> None:
    strict = Thresholds(utilization_points=1, min_interval_seconds=0, heartbeat_seconds=10)

    assert decide(_doc(), T0, _doc((52.0, 50.0)), T0 + 1).publish is False
    assert decide(_doc(), T0, _doc((52.0, 50.0)), T0 + 1, strict).publish is True
    assert decide(_doc(), T0, _doc(), T0 + 10, strict).reason == "heartbeat"


@pytest.mark.parametrize("heartbeat", [0, -1, 120, 600])
def test_a_heartbeat_that_readers_would_see_as_stale_is_refused(heartbeat: float) -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        Thresholds(heartbeat_seconds=heartbeat)


UTIL = st.one_of(st.none(), st.floats(min_value=0, max_value=100))


@given(utils=st.lists(UTIL, min_size=0, max_size=8), elapsed=st.floats(0, 59.9))
def test_an_identical_document_never_publishes_before_the_heartbeat(
    utils: list[float | None], elapsed: float
) -> None:
    doc = _doc(tuple(utils))

    assert decide(doc, T0, doc, T0 + elapsed).publish is False


@given(
    before=st.lists(UTIL, min_size=1, max_size=4),
    after=st.lists(UTIL, min_size=1, max_size=4),
    elapsed=st.floats(60, 1e6),
)
def test_anything_is_published_once_the_heartbeat_is_due(
    before: list[float | None], after: list[float | None], elapsed: float
) -> None:
    assert decide(_doc(tuple(before)), T0, _doc(tuple(after)), T0 + elapsed).publish is True
