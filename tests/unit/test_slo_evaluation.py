"""SLO attainment: status.slo, the SLOMet condition's status/reason/message, and its Events."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.common import SLO_MET, Condition, Event
from tidal.api.endpoint import EndpointSLOSpec
from tidal.slo import (
    LATENCY_ABOVE_TARGET,
    NO_DATA,
    NO_TARGETS,
    THROUGHPUT_BELOW_TARGET,
    TTFT_ABOVE_TARGET,
    WITHIN_TARGETS,
    Measurement,
    evaluate,
    transition_event,
)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
ALL_TARGETS = EndpointSLOSpec(
    p95_latency_ms=800, p95_time_to_first_token_ms=200, min_tokens_per_second=100
)


def measured(
    latency: float | None = 0.5,
    ttft: float | None = 0.1,
    tokens: float | None = 250.0,
    source: str | None = "vllm",
) -> Measurement:
    return Measurement(
        window_seconds=300,
        p95_latency_seconds=latency,
        p95_time_to_first_token_seconds=ttft,
        tokens_per_second=tokens,
        source=source,
    )


def verdict(slo: EndpointSLOSpec | None, measurement: Measurement) -> tuple[str, str]:
    _, condition = evaluate(slo, measurement, NOW)
    return condition.status, condition.reason


@pytest.mark.parametrize(
    ("measurement", "expected"),
    [
        (measured(), ("True", WITHIN_TARGETS)),
        (measured(latency=0.9), ("False", LATENCY_ABOVE_TARGET)),
        (measured(ttft=0.25), ("False", TTFT_ABOVE_TARGET)),
        (measured(tokens=99.0), ("False", THROUGHPUT_BELOW_TARGET)),
        (measured(latency=None), ("Unknown", NO_DATA)),
        (measured(ttft=None), ("Unknown", NO_DATA)),
        (measured(tokens=None), ("Unknown", NO_DATA)),
        (measured(None, None, None, source=None), ("Unknown", NO_DATA)),
        # A known miss is definitive even when another quantity has no data.
        (measured(latency=2.0, ttft=None), ("False", LATENCY_ABOVE_TARGET)),
        # Several misses: latency is named first, then TTFT, then throughput.
        (measured(latency=2.0, ttft=1.0, tokens=1.0), ("False", LATENCY_ABOVE_TARGET)),
        (measured(ttft=1.0, tokens=1.0), ("False", TTFT_ABOVE_TARGET)),
    ],
)
def test_every_target_is_judged_with_its_own_reason(
    measurement: Measurement, expected: tuple[str, str]
) -> None:
    assert verdict(ALL_TARGETS, measurement) == expected


@pytest.mark.parametrize("slo", [None, EndpointSLOSpec()])
def test_without_targets_the_slo_is_met_and_the_values_are_still_reported(
    slo: EndpointSLOSpec | None,
) -> None:
    status, condition = evaluate(slo, measured(latency=9.0), NOW)
    assert (condition.status, condition.reason) == ("True", NO_TARGETS)
    assert status.p95_latency_ms == 9000


def test_only_the_targets_that_are_set_are_judged() -> None:
    latency_only = EndpointSLOSpec(p95_latency_ms=800)
    assert verdict(latency_only, measured(ttft=None, tokens=None)) == ("True", WITHIN_TARGETS)
    assert verdict(latency_only, measured(latency=None, ttft=5.0)) == ("Unknown", NO_DATA)


def test_status_reports_whole_milliseconds_tokens_to_two_decimals_window_and_time() -> None:
    status, _ = evaluate(ALL_TARGETS, measured(0.4126, 0.0874, 123.4567), NOW)
    assert status.to_wire() == {
        "p95LatencyMs": 413,
        "p95TimeToFirstTokenMs": 87,
        "tokensPerSecond": 123.46,
        "windowSeconds": 300,
        "evaluatedTime": "2025-06-01T12:00:00Z",
    }


def test_no_data_is_reported_as_absent_never_as_zero() -> None:
    status, _ = evaluate(ALL_TARGETS, measured(None, None, None, source=None), NOW)
    assert status.to_wire() == {"windowSeconds": 300, "evaluatedTime": "2025-06-01T12:00:00Z"}


def test_evaluated_time_is_written_in_utc_whatever_the_zone_of_now() -> None:
    berlin = NOW.astimezone(timezone(timedelta(hours=2)))
    status, _ = evaluate(ALL_TARGETS, measured(), berlin)
    assert status.evaluated_time == "2025-06-01T12:00:00Z"


def test_evaluated_time_is_the_end_of_the_measured_window_when_the_source_reports_it() -> None:
    # The window ended at the newest scrape, 20 s before the operator looked.
    ended = NOW - timedelta(seconds=20)
    status, _ = evaluate(ALL_TARGETS, dataclasses.replace(measured(), window_end=ended), NOW)
    assert status.evaluated_time == "2025-06-01T11:59:40Z"


def test_the_comparison_uses_the_reported_milliseconds_so_message_and_verdict_agree() -> None:
    # 800.4 ms is reported as 800 ms, which is within an 800 ms target.
    assert verdict(ALL_TARGETS, measured(latency=0.8004)) == ("True", WITHIN_TARGETS)
    assert verdict(ALL_TARGETS, measured(latency=0.8006)) == ("False", LATENCY_ABOVE_TARGET)


def test_a_target_exactly_met_is_within_target() -> None:
    assert verdict(ALL_TARGETS, measured(latency=0.8, ttft=0.2, tokens=100.0)) == (
        "True",
        WITHIN_TARGETS,
    )


def test_an_idle_endpoint_has_no_throughput_data_rather_than_missing_its_floor() -> None:
    _, condition = evaluate(EndpointSLOSpec(min_tokens_per_second=100), measured(tokens=0.0), NOW)
    assert (condition.status, condition.reason) == ("Unknown", NO_DATA)
    assert "idle" in condition.message


def test_the_message_names_each_miss_with_its_target_and_measured_value_and_source() -> None:
    _, condition = evaluate(ALL_TARGETS, measured(latency=1.234, ttft=0.45, tokens=40.5), NOW)
    assert condition.message == (
        "p95 latency 1234 ms is above the 800 ms target; "
        "p95 time to first token 450 ms is above the 200 ms target; "
        "throughput 40.5 tokens/s is below the 100 tokens/s target (vllm over 300s)"
    )


def test_the_message_of_a_met_slo_names_every_target_and_value() -> None:
    _, condition = evaluate(ALL_TARGETS, measured(), NOW)
    assert condition.message == (
        "p95 latency 500 ms is within the 800 ms target; "
        "p95 time to first token 100 ms is within the 200 ms target; "
        "throughput 250 tokens/s meets the 100 tokens/s target (vllm over 300s)"
    )


def test_the_no_data_message_says_what_is_missing_and_where_it_looked() -> None:
    _, condition = evaluate(ALL_TARGETS, measured(ttft=None, source="tgi"), NOW)
    assert condition.message == "no p95 time-to-first-token data (target 200 ms) (tgi over 300s)"
    _, nothing = evaluate(ALL_TARGETS, measured(None, None, None, source=None), NOW)
    assert nothing.message.endswith("(no metrics over 300s)")


def test_the_condition_carries_its_type_and_observed_generation() -> None:
    _, condition = evaluate(ALL_TARGETS, measured(), NOW, generation=7)
    assert condition.type == SLO_MET
    assert condition.observed_generation == 7
    assert condition.last_transition_time is None  # set_condition stamps it


@given(
    latency=st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
    ttft=st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
    tokens=st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)),
)
def test_the_slo_is_met_exactly_when_every_set_target_is_measured_and_satisfied(
    latency: float | None, ttft: float | None, tokens: float | None
) -> None:
    status, condition = evaluate(ALL_TARGETS, measured(latency, ttft, tokens), NOW)
    satisfied = (
        status.p95_latency_ms is not None
        and status.p95_latency_ms <= 800
        and status.p95_time_to_first_token_ms is not None
        and status.p95_time_to_first_token_ms <= 200
        and status.tokens_per_second is not None
        and status.tokens_per_second >= 100
    )
    assert (condition.status == "True") == satisfied


# --- events ---------------------------------------------------------------------------------


def condition(status: str, reason: str, message: str = "m") -> Condition:
    return Condition.model_validate(
        {"type": SLO_MET, "status": status, "reason": reason, "message": message}
    )


def test_missing_the_slo_posts_a_warning_with_the_message() -> None:
    old = condition("True", WITHIN_TARGETS)
    new = condition("False", LATENCY_ABOVE_TARGET, "p95 latency 1234 ms is above ...")
    assert transition_event(old, new) == Event(
        "Warning", "SLOMissed", "p95 latency 1234 ms is above ..."
    )


def test_meeting_the_slo_again_posts_a_normal_event() -> None:
    event = transition_event(
        condition("False", TTFT_ABOVE_TARGET), condition("True", "WithinTargets")
    )
    assert event == Event("Normal", "SLOMet", "m")


def test_losing_the_data_posts_a_normal_unknown_event() -> None:
    event = transition_event(condition("True", WITHIN_TARGETS), condition("Unknown", NO_DATA))
    assert event == Event("Normal", "SLOUnknown", "m")


def test_a_different_miss_is_a_transition_too() -> None:
    old = condition("False", LATENCY_ABOVE_TARGET)
    event = transition_event(old, condition("False", THROUGHPUT_BELOW_TARGET))
    assert event is not None
    assert event.reason == "SLOMissed"


def test_the_same_verdict_with_new_numbers_posts_nothing() -> None:
    old = condition("False", LATENCY_ABOVE_TARGET, "p95 latency 900 ms ...")
    assert (
        transition_event(old, condition("False", LATENCY_ABOVE_TARGET, "p95 latency 950 ms"))
        is None
    )


def test_the_first_evaluation_posts_unless_it_only_says_there_is_no_data_yet() -> None:
    assert transition_event(None, condition("Unknown", NO_DATA)) is None
    assert transition_event(None, condition("True", WITHIN_TARGETS)) == Event(
        "Normal", "SLOMet", "m"
    )
    assert transition_event(None, condition("False", LATENCY_ABOVE_TARGET)) == Event(
        "Warning", "SLOMissed", "m"
    )


def test_a_first_evaluation_without_targets_posts_nothing_but_dropping_targets_does() -> None:
    assert transition_event(None, condition("True", NO_TARGETS)) is None
    assert transition_event(None, condition("True", WITHIN_TARGETS)) == Event(
        "Normal", "SLOMet", "m"
    )
    event = transition_event(
        condition("False", LATENCY_ABOVE_TARGET), condition("True", NO_TARGETS)
    )
    assert event == Event("Normal", "SLOMet", "m")
