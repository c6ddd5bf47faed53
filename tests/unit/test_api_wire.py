"""api.wire: how times, quantities and Pod fields are spelled on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.wire import (
    format_time,
    format_time_compact,
    format_time_ms,
    is_deleting,
    is_ready,
    is_terminated,
    node_name,
    parse_quantity,
    parse_time,
    pod_condition,
    pod_phase,
    quantity_int,
    start_seconds,
)

T = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
PLUS_ONE = timezone(timedelta(hours=1))

# --- times ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2025, 1, 31, 12, 0, 0, 999, tzinfo=UTC), "2025-01-31T12:00:00Z"),
        (datetime(2025, 1, 31, 13, 0, 0, tzinfo=PLUS_ONE), "2025-01-31T12:00:00Z"),
    ],
)
def test_times_are_rfc3339_utc_to_the_second(moment: datetime, expected: str) -> None:
    assert format_time(moment) == expected


def test_signal_times_carry_milliseconds_in_utc() -> None:
    assert format_time_ms(T) == "2026-03-01T12:00:00.250Z"
    assert format_time_ms(T.astimezone(PLUS_ONE)) == "2026-03-01T12:00:00.250Z"
    assert format_time_ms(T.replace(microsecond=999)) == "2026-03-01T12:00:00.000Z"


def test_compact_times_have_no_separators() -> None:
    assert format_time_compact(T.astimezone(PLUS_ONE)) == "20260301T120000Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00.250Z", T),
        ("2026-03-01T14:00:00.250+02:00", T),
        ("2026-03-01T12:00:00Z", T.replace(microsecond=0)),
        ("2026-03-01t12:00:00z", T.replace(microsecond=0)),
        (" 2026-03-01T12:00:00Z ", T.replace(microsecond=0)),
    ],
)
def test_times_read_back_as_utc(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "value", [None, "", " ", "yesterday", "2026-03-01T12:00:00", 42, "2026-13-01T00:00:00Z"]
)
def test_unreadable_or_zoneless_times_read_as_missing(value: object) -> None:
    assert parse_time(value) is None


def test_a_zoneless_time_is_utc_only_when_the_caller_says_so() -> None:
    assert parse_time("2026-03-01T12:00:00", assume_utc=True) == T.replace(microsecond=0)
    assert parse_time("soon", assume_utc=True) is None


@given(st.datetimes(min_value=datetime(1970, 1, 1), timezones=st.just(UTC)))
def test_every_written_time_reads_back(moment: datetime) -> None:
    assert parse_time(format_time(moment)) == moment.replace(microsecond=0)
    assert parse_time(format_time_ms(moment)) == moment.replace(
        microsecond=moment.microsecond // 1000 * 1000
    )


# --- quantities -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("10Gi", 10 << 30),
        ("512Mi", 512 << 20),
        ("1.5Gi", 3 << 29),
        ("500M", 500_000_000),
        ("2k", 2000),
        ("1073741824", 1 << 30),
        ("1e3", 1000),
        (" 8 ", 8),
        (4, 4),
        ("1000m", 1),
        ("1500m", 1),
        ("lots", 0),
        ("10Xi", 0),
        ("", 0),
        ("-1", 0),
        ("nan", 0),
        ("inf", 0),
        (True, 0),
        (2.0, 0),
        (None, 0),
    ],
)
def test_quantities_as_whole_base_units(quantity: Any, expected: int) -> None:
    assert quantity_int(quantity) == expected


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("500m", Decimal("0.5")), ("2", Decimal(2)), ("250u", Decimal("0.00025")), ("x", None)],
)
def test_cpu_quantities_keep_their_fractions(quantity: str, expected: Decimal | None) -> None:
    assert parse_quantity(quantity) == expected


# --- pods -----------------------------------------------------------------------------------


def pod(**parts: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, **parts}


def test_pod_readers_on_a_running_ready_pod() -> None:
    running = pod(
        spec={"nodeName": "n1"},
        status={"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    )
    assert node_name(running) == "n1"
    assert pod_phase(running) == "Running"
    assert is_ready(running)
    assert not is_terminated(running)
    assert not is_deleting(running)
    assert pod_condition(running, "PodScheduled") is None


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_are_terminated(phase: str) -> None:
    assert is_terminated(pod(status={"phase": phase}))


def test_pod_readers_tolerate_missing_and_garbled_fields() -> None:
    for garbled in ({}, pod(spec=None, status=None), pod(status={"conditions": "Ready"})):
        assert node_name(garbled) == ""
        assert pod_phase(garbled) is None
        assert not is_ready(garbled)
        assert not is_terminated(garbled)
        assert not is_deleting(garbled)
    assert not is_ready(pod(status={"conditions": ["Ready", {"type": "Ready", "status": "False"}]}))


def test_a_deletion_timestamp_marks_any_object_as_going() -> None:
    assert is_deleting({"metadata": {"deletionTimestamp": "2026-03-01T12:00:00Z"}})


def started(created: object, ready_at: object, **status: Any) -> dict[str, Any]:
    condition = {"type": "Ready", "status": "True", "lastTransitionTime": ready_at}
    return pod(
        metadata={"name": "p", "creationTimestamp": created},
        status={"conditions": [condition], **status},
    )


def test_a_ready_pod_says_when_it_became_ready_and_how_long_its_start_took() -> None:
    measured = start_seconds(started("2026-12-07T10:00:00Z", "2026-12-07T10:04:05Z"))
    assert measured == (datetime(2026, 12, 7, 10, 4, 5, tzinfo=UTC), 245.0)
    fresh = started(
        "2026-12-07T10:00:00Z",
        "2026-12-07T10:01:00Z",
        containerStatuses=[{"name": "engine", "restartCount": 0}],
    )
    assert start_seconds(fresh) == (datetime(2026, 12, 7, 10, 1, tzinfo=UTC), 60.0)


@pytest.mark.parametrize(
    "garbled",
    [
        pod(),
        started("2026-12-07T10:00:00Z", None),  # no transition time
        started(None, "2026-12-07T10:01:00Z"),
        started("yesterday", "2026-12-07T10:01:00Z"),
        started("2026-12-07T10:05:00Z", "2026-12-07T10:01:00Z"),  # Ready before it existed
        # A restart: the Ready time measures the restart, not the start.
        started(
            "2026-12-07T10:00:00Z",
            "2026-12-07T11:00:00Z",
            containerStatuses=[{"name": "engine", "restartCount": 3}],
        ),
        pod(status={"conditions": [{"type": "Ready", "status": "False"}]}),
    ],
)
def test_a_start_is_not_measured_on_a_pod_that_cannot_say(garbled: dict[str, Any]) -> None:
    assert start_seconds(garbled) is None
