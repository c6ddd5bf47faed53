"""A VectorCollection's activity clock, hibernation and cold-tier offload decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.collection import (
    ActivitySource,
    ColdTierStatus,
    CollectionActivityStatus,
    VectorCollectionSpec,
)
from tidal.api.wire import format_time, parse_time
from tidal.scaling.collection import (
    Signals,
    hibernation,
    idle_seconds,
    observe_activity,
    snapshot_due,
    snapshot_retry_seconds,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CREATED = NOW - timedelta(hours=1)


def spec(**fields: Any) -> VectorCollectionSpec:
    base: dict[str, Any] = {"dimension": 8, "residency": {"regions": ["eu-west-1"]}}
    base.update(fields)
    return VectorCollectionSpec.model_validate(base)


def at(seconds_ago: float) -> str:
    return format_time(NOW - timedelta(seconds=seconds_ago))


# --- activity -------------------------------------------------------------------------------


def test_a_new_collection_counts_idle_from_its_creation() -> None:
    activity, woke = observe_activity(None, Signals(created=CREATED), NOW)
    assert activity.last_activity_time == format_time(CREATED)
    assert activity.source is ActivitySource.Created
    assert not woke


def test_the_request_annotation_moves_the_clock() -> None:
    previous = CollectionActivityStatus(last_activity_time=at(600), source=ActivitySource.Created)
    activity, _ = observe_activity(
        previous, Signals(created=CREATED, last_request_annotation=at(30)), NOW
    )
    assert activity.last_activity_time == at(30)
    assert activity.source is ActivitySource.RequestAnnotation


def test_a_request_time_in_the_future_counts_as_now() -> None:
    activity, _ = observe_activity(
        None, Signals(created=CREATED, last_request_annotation=at(-3600)), NOW
    )
    assert activity.last_activity_time == format_time(NOW)


def test_an_unreadable_request_annotation_is_ignored() -> None:
    activity, _ = observe_activity(
        None, Signals(created=CREATED, last_request_annotation="yesterday"), NOW
    )
    assert activity.source is ActivitySource.Created


def test_a_moved_engine_counter_is_activity_now_but_the_first_reading_is_not() -> None:
    first, _ = observe_activity(None, Signals(created=CREATED, engine_queries=7), NOW)
    assert first.source is ActivitySource.Created
    assert first.engine_queries == 7
    later = NOW + timedelta(minutes=5)
    same, _ = observe_activity(first, Signals(created=CREATED, engine_queries=7), later)
    assert same.last_activity_time == first.last_activity_time
    moved, _ = observe_activity(first, Signals(created=CREATED, engine_queries=9), later)
    assert moved.last_activity_time == format_time(later)
    assert moved.source is ActivitySource.EngineQueries


def test_the_engines_own_last_query_time_counts() -> None:
    activity, _ = observe_activity(
        None,
        Signals(created=CREATED, engine_last_query_time=NOW - timedelta(seconds=10)),
        NOW,
    )
    assert activity.last_activity_time == at(10)
    assert activity.source is ActivitySource.EngineQueries


def test_a_counter_unknown_while_hibernated_keeps_the_last_value() -> None:
    previous = CollectionActivityStatus(last_activity_time=at(600), engine_queries=12)
    activity, _ = observe_activity(previous, Signals(created=CREATED), NOW)
    assert activity.engine_queries == 12
    assert activity.last_activity_time == at(600)


def test_a_serving_paired_endpoint_keeps_the_collection_awake() -> None:
    previous = CollectionActivityStatus(last_activity_time=at(6000))
    activity, _ = observe_activity(
        previous, Signals(created=CREATED, paired_endpoint_serving=True), NOW
    )
    assert activity.last_activity_time == format_time(NOW)
    assert activity.source is ActivitySource.PairedEndpoint


def test_a_new_wake_value_wakes_once() -> None:
    previous = CollectionActivityStatus(last_activity_time=at(6000))
    activity, woke = observe_activity(
        previous, Signals(created=CREATED, wake_annotation="2026-03-01T12:00:00Z"), NOW
    )
    assert woke
    assert activity.source is ActivitySource.Woken
    assert activity.wake_request == "2026-03-01T12:00:00Z"
    later = NOW + timedelta(hours=1)
    again, woke_again = observe_activity(
        activity, Signals(created=CREATED, wake_annotation="2026-03-01T12:00:00Z"), later
    )
    assert not woke_again
    assert again.last_activity_time == format_time(NOW)


def test_hibernated_time_is_carried() -> None:
    previous = CollectionActivityStatus(last_activity_time=at(600), hibernated_time=at(60))
    activity, _ = observe_activity(previous, Signals(created=CREATED), NOW)
    assert activity.hibernated_time == at(60)


@given(
    ages=st.lists(st.integers(-10_000, 10_000_000), min_size=1, max_size=4),
    serving=st.booleans(),
)
def test_activity_never_goes_back_in_time(ages: list[int], serving: bool) -> None:
    activity = CollectionActivityStatus(last_activity_time=at(10_000))
    for age in ages:
        before = parse_time(activity.last_activity_time)
        activity, _ = observe_activity(
            activity,
            Signals(
                created=CREATED,
                last_request_annotation=at(age),
                paired_endpoint_serving=serving,
            ),
            NOW,
        )
        after = parse_time(activity.last_activity_time)
        assert before is not None
        assert after is not None
        assert after >= before
        assert after <= NOW


# --- hibernation ----------------------------------------------------------------------------


def idle_for(seconds: float) -> CollectionActivityStatus:
    return CollectionActivityStatus(last_activity_time=at(seconds), source=ActivitySource.Created)


def test_min_replicas_zero_and_idle_long_enough_hibernates() -> None:
    s = spec(replicas=2, scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 300})
    decision = hibernation(s, idle_for(301), NOW, managed=True, generation=4)
    assert decision.replicas == 0
    assert decision.hibernated
    assert decision.condition.status == "True"
    assert decision.condition.reason == "Idle"
    assert "volumes kept" in decision.condition.message
    assert decision.condition.observed_generation == 4


def test_recent_activity_keeps_all_replicas() -> None:
    s = spec(replicas=2, scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 300})
    decision = hibernation(s, idle_for(299), NOW, managed=True, generation=1)
    assert (decision.replicas, decision.hibernated) == (2, False)
    assert decision.condition.reason == "Active"


def test_hibernation_is_off_unless_min_replicas_is_zero() -> None:
    s = spec(replicas=2, scaling={"idleSecondsBeforeScaleToZero": 1})
    decision = hibernation(s, idle_for(10**6), NOW, managed=True, generation=1)
    assert (decision.replicas, decision.hibernated) == (2, False)
    assert decision.condition.reason == "HibernationDisabled"


def test_external_engines_never_hibernate() -> None:
    s = spec(
        engine={"mode": "External", "url": "http://q:6333"},
        scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 1},
    )
    decision = hibernation(s, idle_for(10**6), NOW, managed=False, generation=1)
    assert not decision.hibernated
    assert decision.condition.reason == "ExternalEngine"


def test_idle_seconds() -> None:
    assert idle_seconds(idle_for(90), NOW) == 90
    assert idle_seconds(CollectionActivityStatus(), NOW) == 0


# --- cold tier ------------------------------------------------------------------------------

COLD = {"coldTier": {"objectStoreURI": "file:///var/tidal/cold", "afterIdleDays": 2}}


def test_no_cold_tier_no_snapshot() -> None:
    assert not snapshot_due(spec(), idle_for(10**7), None, NOW, hibernating=True)


def test_snapshot_after_idle_days() -> None:
    s = spec(storage=COLD)
    assert not snapshot_due(s, idle_for(2 * 86400 - 1), None, NOW, hibernating=False)
    assert snapshot_due(s, idle_for(2 * 86400), None, NOW, hibernating=False)


def test_snapshot_right_before_hibernating() -> None:
    assert snapshot_due(spec(storage=COLD), idle_for(300), None, NOW, hibernating=True)


def test_one_snapshot_per_idle_period() -> None:
    s = spec(storage=COLD)
    taken = ColdTierStatus(last_snapshot_time=at(10), last_snapshot_uri="file:///x")
    assert not snapshot_due(s, idle_for(3 * 86400), taken, NOW, hibernating=True)
    stale = ColdTierStatus(last_snapshot_time=at(4 * 86400), last_snapshot_uri="file:///x")
    assert snapshot_due(s, idle_for(3 * 86400), stale, NOW, hibernating=False)


@pytest.mark.parametrize(
    ("failed", "seconds"),
    [(0, 0), (1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (40, 3600)],
)
def test_automatic_snapshots_back_off_a_minute_doubling_to_an_hour(
    failed: int, seconds: float
) -> None:
    assert snapshot_retry_seconds(failed) == seconds


@pytest.mark.parametrize(
    ("failed", "failed_ago", "hibernating", "due"),
    [
        (1, 59, False, False),  # the first retry waits a minute
        (1, 60, False, True),
        (3, 239, True, False),  # hibernating does not skip the wait either
        (3, 240, False, True),
        (9, 3599, False, False),  # never more often than hourly
        (9, 3600, False, True),
    ],
)
def test_after_failed_snapshots_the_next_automatic_one_waits(
    failed: int, failed_ago: float, hibernating: bool, due: bool
) -> None:
    s = spec(storage=COLD)
    cold = ColdTierStatus(failed_snapshots=failed, last_failure_time=at(failed_ago))
    assert snapshot_due(s, idle_for(3 * 86400), cold, NOW, hibernating=hibernating) is due


@pytest.mark.parametrize(
    "text", ["2026-03-01T11:59:00Z", "2026-03-01T12:59:00+01:00", "2026-03-01T11:59:00"]
)
def test_a_request_annotation_without_an_offset_is_read_as_utc(text: str) -> None:
    # Whatever fronts the collection may be an application or a person: no zone means UTC.
    activity, _ = observe_activity(
        None, Signals(created=CREATED, last_request_annotation=text), NOW
    )
    assert activity.last_activity_time == at(60)
    assert activity.source is ActivitySource.RequestAnnotation
