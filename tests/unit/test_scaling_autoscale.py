"""scaling.autoscale.decide: replicas from load, stabilization, idle to zero, wake, cold start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidal.api.common import SCALED_TO_ZERO, Condition
from tidal.api.endpoint import EndpointScalingSpec, InferenceEndpoint
from tidal.api.labels import LAST_REQUEST_TIME, WAKE_REQUESTED_AT
from tidal.api.signals import EndpointLoad
from tidal.errors import PermanentError
from tidal.scaling.autoscale import (
    ACTIVE,
    DISABLED,
    IDLE,
    WAKING,
    LoadSample,
    ScalingState,
    Tuning,
    decide,
    remember,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CREATED = NOW - timedelta(days=1)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def spec(**fields: Any) -> EndpointScalingSpec:
    return EndpointScalingSpec.model_validate(fields)


def load(*pairs: tuple[float, int]) -> tuple[LoadSample, ...]:
    """Samples as (seconds ago, demand)."""
    return tuple(LoadSample(ago(age), demand) for age, demand in pairs)


def state(**fields: Any) -> ScalingState:
    fields.setdefault("current_replicas", 1)
    fields.setdefault("ready_replicas", fields["current_replicas"])
    fields.setdefault("active_since", CREATED)
    return ScalingState(**fields)


# --- load to replicas ---------------------------------------------------------------------

SCALE_TABLE = [
    # (case, spec, current, samples, expected desired)
    ("ceil of demand over target", dict(maxReplicas=10, targetInFlightRequests=16), 1,
     [(0, 40)], 3),
    ("exactly on target", dict(maxReplicas=10, targetInFlightRequests=16), 1, [(0, 32)], 2),
    ("capped by maxReplicas", dict(maxReplicas=4, targetInFlightRequests=1), 1, [(0, 100)], 4),
    ("floored by minReplicas", dict(minReplicas=3, maxReplicas=8), 3, [(0, 0), (120, 0)], 3),
    ("minReplicas 0 but busy keeps one", dict(minReplicas=0, maxReplicas=4), 1,
     [(0, 1), (120, 0)], 1),
    ("scale up at once by default", dict(maxReplicas=10, targetInFlightRequests=4), 2,
     [(0, 40), (5, 0), (120, 0)], 10),
    ("scale down after a full quiet window", dict(maxReplicas=10, targetInFlightRequests=4), 5,
     [(0, 4), (30, 4), (61, 4)], 1),
    ("scale down to the largest need in the window", dict(maxReplicas=10, targetInFlightRequests=4),
     5, [(0, 4), (30, 12), (61, 4)], 3),
    ("no scale down without history covering the window",
     dict(maxReplicas=10, targetInFlightRequests=4), 5, [(0, 4), (30, 4)], 5),
    ("no fresh load holds the count", dict(maxReplicas=10), 4, [(120, 100)], 4),
    ("no load at all holds the count", dict(maxReplicas=10), 4, [], 4),
    ("a lowered maxReplicas wins over the held count", dict(maxReplicas=2), 5, [], 2),
    ("a new endpoint starts at its floor", dict(minReplicas=2, maxReplicas=5), 0, [], 2),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "fields", "current", "samples", "expected"),
    SCALE_TABLE,
    ids=[row[0] for row in SCALE_TABLE],
)
def test_replicas_follow_in_flight_requests_within_bounds(
    case: str,
    fields: dict[str, Any],
    current: int,
    samples: list[tuple[float, int]],
    expected: int,
) -> None:
    decision = decide(spec(**fields), state(current_replicas=current, load=load(*samples)), NOW)

    assert decision.desired == expected, decision.reason
    assert not decision.scaled_to_zero


def test_a_new_scale_to_zero_endpoint_starts_with_one_replica() -> None:
    new = state(current_replicas=0, ready_replicas=0, active_since=ago(5))

    decision = decide(spec(minReplicas=0, maxReplicas=5), new, NOW)

    assert decision.desired == 1
    assert (decision.condition.status, decision.condition.reason) == ("False", ACTIVE)


def test_a_scale_up_window_needs_the_spike_to_last() -> None:
    tuning = Tuning(scale_up_stabilization_seconds=30)
    short = state(current_replicas=1, load=load((0, 64), (10, 64), (20, 0), (40, 0)))
    sustained = state(current_replicas=1, load=load((0, 64), (10, 64), (25, 64), (40, 0)))

    assert decide(spec(maxReplicas=8), short, NOW, tuning).desired == 1
    assert decide(spec(maxReplicas=8), sustained, NOW, tuning).desired == 4


def test_a_zero_down_window_scales_down_on_the_latest_sample() -> None:
    tuning = Tuning(scale_down_stabilization_seconds=0)
    decision = decide(
        spec(maxReplicas=8, targetInFlightRequests=4),
        state(current_replicas=6, load=load((0, 4), (5, 24))),
        NOW,
        tuning,
    )

    assert decision.desired == 1


def test_the_reason_says_why_a_count_is_held() -> None:
    decision = decide(
        spec(maxReplicas=8, targetInFlightRequests=4),
        state(current_replicas=5, load=load((0, 4))),
        NOW,
    )

    assert decision.desired == 5
    assert "scale-down stabilization 60s" in decision.reason


# --- idle to zero ---------------------------------------------------------------------------


def test_an_idle_endpoint_with_min_zero_scales_to_zero_with_an_event() -> None:
    decision = decide(
        spec(minReplicas=0, maxReplicas=3, idleSecondsBeforeScaleToZero=300),
        state(current_replicas=2, last_request_time=ago(301), load=load((0, 0), (90, 0))),
        NOW,
    )

    assert decision.desired == 0
    assert decision.scaled_to_zero
    assert decision.scaled_to_zero_time == NOW
    assert (decision.condition.type, decision.condition.status) == (SCALED_TO_ZERO, "True")
    assert decision.condition.reason == IDLE
    ((event),) = decision.events
    assert (event.type, event.reason) == ("Normal", "ScaledToZero")
    assert "No requests for 301s" in event.message


IDLE_TABLE = [
    # (case, state fields, scales to zero)
    ("not idle long enough", dict(last_request_time=ago(299)), False),
    ("idle exactly long enough", dict(last_request_time=ago(300)), True),
    ("idle, no samples (gateway unreachable)", dict(last_request_time=ago(400), load=()), True),
    ("requests in flight now", dict(last_request_time=ago(400), load=load((0, 2))), False),
    ("in flight long ago, stale sample", dict(last_request_time=ago(400), load=load((120, 2))),
     True),
    ("never a request, created long ago", dict(active_since=ago(301)), True),
    ("never a request, just created", dict(active_since=ago(30)), False),
    ("a recent wake counts as activity",
     dict(last_request_time=ago(400), wake_requested_at=ago(10)), False),
    ("nothing known: never idle", dict(active_since=None), False),
    ("a request time in the future (clock skew)", dict(last_request_time=NOW + timedelta(60)),
     False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "fields", "to_zero"), IDLE_TABLE, ids=[row[0] for row in IDLE_TABLE]
)
def test_idle_time_is_measured_from_the_last_sign_of_use(
    case: str, fields: dict[str, Any], to_zero: bool
) -> None:
    decision = decide(spec(minReplicas=0, maxReplicas=2), state(**fields), NOW)

    assert (decision.desired == 0) is to_zero, decision.reason
    assert decision.scaled_to_zero is to_zero


def test_min_replicas_above_zero_never_idles_and_says_so() -> None:
    decision = decide(spec(minReplicas=1), state(last_request_time=ago(10_000)), NOW)

    assert decision.desired == 1
    assert (decision.condition.status, decision.condition.reason) == ("False", DISABLED)
    assert decision.events == ()


def test_staying_at_zero_posts_no_further_events() -> None:
    at_zero = state(
        current_replicas=0,
        ready_replicas=0,
        scaled_to_zero=True,
        scaled_to_zero_time=ago(600),
        last_request_time=ago(900),
        wake_requested_at=ago(1200),
    )

    decision = decide(spec(minReplicas=0), at_zero, NOW)

    assert decision.desired == 0
    assert decision.scaled_to_zero_time == ago(600)
    assert decision.events == ()
    assert decision.condition.status == "True"


# --- waking ---------------------------------------------------------------------------------


def _asleep(**fields: Any) -> ScalingState:
    defaults: dict[str, Any] = dict(
        current_replicas=0,
        ready_replicas=0,
        scaled_to_zero=True,
        scaled_to_zero_time=ago(600),
        last_request_time=ago(900),
    )
    return state(**(defaults | fields))


def test_a_wake_after_scaling_to_zero_asks_for_a_replica_and_says_waking() -> None:
    decision = decide(spec(minReplicas=0, maxReplicas=4), _asleep(wake_requested_at=ago(2)), NOW)

    assert decision.desired == 1
    assert decision.woke
    assert not decision.scaled_to_zero
    assert (decision.condition.status, decision.condition.reason) == ("False", WAKING)
    ((event),) = decision.events
    assert (event.type, event.reason) == ("Normal", "Waking")
    assert decision.cold_start_seconds is None


def test_a_wake_older_than_the_scale_to_zero_is_spent() -> None:
    decision = decide(spec(minReplicas=0), _asleep(wake_requested_at=ago(601)), NOW)

    assert decision.desired == 0
    assert not decision.woke


def test_demand_reported_by_the_gateway_wakes_even_without_the_annotation() -> None:
    decision = decide(
        spec(minReplicas=0, maxReplicas=4, targetInFlightRequests=2),
        _asleep(load=load((0, 5))),
        NOW,
    )

    assert decision.woke
    assert decision.desired == 3
    assert decision.events[0].message == (
        "Waking from zero (5 request(s) waiting at the gateway): 3 replica(s)"
    )


def test_waking_holds_replicas_while_none_is_ready_even_past_the_idle_time() -> None:
    waking = state(
        current_replicas=1,
        ready_replicas=0,
        waking_since=ago(400),
        wake_requested_at=ago(400),
        last_request_time=ago(400),
    )

    decision = decide(spec(minReplicas=0, idleSecondsBeforeScaleToZero=60), waking, NOW)

    assert decision.desired == 1
    assert decision.condition.reason == WAKING
    assert decision.events == ()


def test_the_first_ready_replica_ends_the_wake_and_measures_the_cold_start() -> None:
    waking = state(current_replicas=1, ready_replicas=1, waking_since=ago(95.5))

    decision = decide(spec(minReplicas=0), waking, NOW)

    assert decision.cold_start_seconds == 95.5
    assert (decision.condition.status, decision.condition.reason) == ("False", ACTIVE)
    ((event),) = decision.events
    assert (event.reason, event.message) == (
        "WokeUp",
        "First replica ready 95.5s after the wake request",
    )


def test_the_cold_start_ends_at_the_replicas_ready_transition_when_known() -> None:
    waking = state(
        current_replicas=1, ready_replicas=1, waking_since=ago(120), first_ready_time=ago(30)
    )

    assert decide(spec(minReplicas=0), waking, NOW).cold_start_seconds == 90


def test_a_replica_ready_before_the_wake_is_one_going_away_not_the_wake_done() -> None:
    waking = state(
        current_replicas=1, ready_replicas=1, waking_since=ago(20), first_ready_time=ago(700)
    )

    decision = decide(spec(minReplicas=0), waking, NOW)

    assert decision.cold_start_seconds is None
    assert decision.condition.reason == WAKING


def test_a_replica_already_ready_completes_the_wake_in_one_decision() -> None:
    decision = decide(
        spec(minReplicas=0),
        _asleep(wake_requested_at=ago(3), ready_replicas=1, first_ready_time=ago(1)),
        NOW,
    )

    assert decision.woke
    assert decision.cold_start_seconds == 2
    assert [e.reason for e in decision.events] == ["Waking", "WokeUp"]


def test_a_wake_that_never_becomes_ready_gives_up_after_the_limit() -> None:
    stuck = state(
        current_replicas=1,
        ready_replicas=0,
        waking_since=ago(1801),
        wake_requested_at=ago(1801),
        last_request_time=ago(1801),
    )

    decision = decide(spec(minReplicas=0), stuck, NOW)

    assert decision.desired == 0
    assert decision.scaled_to_zero_time == NOW
    ((event),) = decision.events
    assert (event.type, event.reason) == ("Warning", "WakeTimedOut")


def test_a_stuck_wake_with_requests_still_waiting_keeps_trying() -> None:
    stuck = state(
        current_replicas=1,
        ready_replicas=0,
        waking_since=ago(1801),
        wake_requested_at=ago(1801),
        last_request_time=ago(1801),
        load=load((0, 1)),
    )

    assert decide(spec(minReplicas=0), stuck, NOW).desired == 1


def test_the_condition_carries_the_generation() -> None:
    decision = decide(spec(), state(generation=7), NOW)

    assert decision.condition.observed_generation == 7


# --- tuning and history -------------------------------------------------------------------


def test_tuning_reads_the_environment_and_refuses_nonsense() -> None:
    tuning = Tuning.from_env(
        {"TIDAL_SCALE_DOWN_STABILIZATION_SECONDS": "120", "TIDAL_MAX_WAKE_SECONDS": " "}
    )

    assert tuning.scale_down_stabilization_seconds == 120
    assert tuning.max_wake_seconds == Tuning().max_wake_seconds
    with pytest.raises(PermanentError, match="TIDAL_SCALE_UP_STABILIZATION_SECONDS"):
        Tuning.from_env({"TIDAL_SCALE_UP_STABILIZATION_SECONDS": "soon"})
    with pytest.raises(PermanentError, match="non-negative"):
        Tuning(scale_down_stabilization_seconds=-1)
    with pytest.raises(PermanentError, match="positive"):
        Tuning(load_stale_after_seconds=0)


def test_remember_keeps_only_what_decide_can_use_plus_one_older_sample() -> None:
    samples: tuple[LoadSample, ...] = ()
    for age in range(200, -1, -10):
        samples = remember(samples, LoadSample(ago(age), age))

    ages = [(NOW - s.time).total_seconds() for s in samples]
    assert ages[0] == 70  # the one older than the 60 s history proves coverage
    assert ages[1:] == [60, 50, 40, 30, 20, 10, 0]


def test_a_load_sample_adds_held_to_in_flight() -> None:
    assert LoadSample.of(NOW, EndpointLoad(in_flight=3, held=2)).demand == 5


# --- observing the endpoint -----------------------------------------------------------------


def _endpoint(annotations: dict[str, str], status: dict[str, Any]) -> InferenceEndpoint:
    return InferenceEndpoint.model_validate(
        {
            "metadata": {
                "name": "llama",
                "namespace": "ml",
                "generation": 4,
                "creationTimestamp": "2026-02-28T12:00:00Z",
                "annotations": annotations,
            },
            "spec": {
                "model": {"name": "m"},
                "residency": {"regions": ["eu-west-1"]},
                "scaling": {"minReplicas": 0},
            },
            "status": status,
        }
    )


def test_observe_reads_annotations_status_and_the_waking_condition() -> None:
    endpoint = _endpoint(
        {
            WAKE_REQUESTED_AT: "2026-03-01T11:59:00.250Z",
            LAST_REQUEST_TIME: "2026-03-01T11:58:00.000Z",
        },
        {
            "replicas": {"desired": 1},
            "lastRequestTime": "2026-03-01T11:59:00Z",
            "scaledToZeroTime": "2026-03-01T11:00:00Z",
            "conditions": [
                Condition(
                    type=SCALED_TO_ZERO,
                    status="False",
                    reason=WAKING,
                    last_transition_time="2026-03-01T11:59:01Z",
                ).to_wire()
            ],
        },
    )

    observed = ScalingState.observe(endpoint, ready_replicas=0)

    assert observed.current_replicas == 1
    assert observed.wake_requested_at == datetime(2026, 3, 1, 11, 59, 0, 250000, tzinfo=UTC)
    assert observed.last_request_time == ago(60)  # the newest of annotation and status
    assert observed.scaled_to_zero_time == ago(3600)
    assert not observed.scaled_to_zero
    assert observed.waking_since == observed.wake_requested_at  # earlier than the transition
    assert observed.active_since == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert observed.generation == 4


def test_observe_lets_a_newer_gateway_report_win_and_ignores_unreadable_annotations() -> None:
    endpoint = _endpoint({WAKE_REQUESTED_AT: "yesterday", LAST_REQUEST_TIME: "garbage"}, {})

    observed = ScalingState.observe(
        endpoint, ready_replicas=2, current_replicas=3, gateway_last_request_time=ago(5)
    )

    assert observed.wake_requested_at is None
    assert observed.last_request_time == ago(5)
    assert observed.current_replicas == 3
    assert observed.waking_since is None


def test_observe_then_decide_round_trip_of_a_scale_to_zero() -> None:
    last = {LAST_REQUEST_TIME: "2026-03-01T11:50:00.000Z"}
    endpoint = _endpoint(last, {"replicas": {"desired": 1}})
    first = decide(endpoint.spec.scaling, ScalingState.observe(endpoint, ready_replicas=1), NOW)
    assert first.desired == 0

    # The reconcile writes the decision back; the next one resumes from the object alone.
    condition = first.condition.model_copy(update={"last_transition_time": "2026-03-01T12:00:00Z"})
    status = {
        "replicas": {"desired": 0},
        "scaledToZeroTime": "2026-03-01T12:00:00Z",
        "conditions": [condition.to_wire()],
    }
    later = NOW + timedelta(seconds=30)
    asleep = _endpoint(last, status)
    still = decide(asleep.spec.scaling, ScalingState.observe(asleep, ready_replicas=0), later)
    assert still.desired == 0

    request = "2026-03-01T12:00:20.000Z"
    woken = _endpoint({LAST_REQUEST_TIME: request, WAKE_REQUESTED_AT: request}, status)
    waking = decide(woken.spec.scaling, ScalingState.observe(woken, ready_replicas=0), later)
    assert (waking.desired, waking.woke) == (1, True)
    assert waking.condition.reason == WAKING


def test_a_cold_start_is_split_where_the_first_replica_was_bound_to_a_node() -> None:
    # 62 s until a node existed for it (an autoscaler provisioning one), 33.5 s loading there.
    waking = state(
        current_replicas=1,
        ready_replicas=1,
        waking_since=ago(95.5),
        first_ready_time=NOW,
        first_scheduled_time=ago(33.5),
    )
    ((event),) = decide(spec(minReplicas=0), waking, NOW).events
    assert event.message == (
        "First replica ready 95.5s after the wake request (62.0s to a node, 33.5s starting there)"
    )
