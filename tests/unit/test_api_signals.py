"""api.signals: the gateway-operator contract (wake rule, reports; times are test_api_wire's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tidal.api.signals import (
    EndpointLoad,
    EndpointReport,
    GatewayReport,
    merge_reports,
    wake_pending,
    wake_value,
)

T = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


WAKE_TABLE = [
    ("no wake", None, None, False),
    ("a wake, never scaled to zero", T, None, True),
    ("a wake after the scale to zero", T, T - timedelta(seconds=1), True),
    ("a wake at the same instant is spent", T, T, False),
    ("a wake before the scale to zero is spent", T - timedelta(seconds=1), T, False),
]


@pytest.mark.parametrize(
    ("case", "wake", "scaled", "pending"), WAKE_TABLE, ids=[r[0] for r in WAKE_TABLE]
)
def test_a_wake_is_pending_when_later_than_the_scale_to_zero(
    case: str, wake: datetime | None, scaled: datetime | None, pending: bool
) -> None:
    assert wake_pending(wake, scaled) is pending


def test_a_new_wake_always_lands_after_the_scale_to_zero_even_with_a_late_clock() -> None:
    ahead = T + timedelta(seconds=5)  # the operator's clock runs ahead of the gateway's

    written = wake_value(T, ahead)

    assert written == ahead + timedelta(milliseconds=1)
    assert wake_pending(written, ahead)
    assert wake_value(T, T - timedelta(seconds=1)) == T
    assert wake_value(T, None) == T


def _report(name: str, **endpoints: EndpointReport) -> GatewayReport:
    return GatewayReport(gateway=name, time=T, endpoints=endpoints)


def test_reports_of_every_gateway_replica_add_up_per_endpoint() -> None:
    a = _report(
        "gw-a",
        **{
            "ml/llama": EndpointReport(in_flight=3, held=1, ready_replicas=2, last_request_time=T),
            "ml/idle": EndpointReport(in_flight=0, held=0, ready_replicas=1),
        },
    )
    later = T + timedelta(seconds=3)
    b = _report(
        "gw-b",
        **{
            "ml/llama": EndpointReport(
                in_flight=2, held=0, ready_replicas=2, last_request_time=later
            )
        },
    )

    merged = merge_reports([a, b])

    assert merged["ml/llama"] == EndpointLoad(in_flight=5, held=1, last_request_time=later)
    assert merged["ml/llama"].demand == 6
    assert merged["ml/idle"] == EndpointLoad()
    assert "ml/unknown" not in merged


def test_the_report_json_is_camel_case_and_parses_back() -> None:
    report = _report(
        "gw-a",
        **{"ml/llama": EndpointReport(in_flight=1, held=2, ready_replicas=0, wake_requested_at=T)},
    )

    wire = report.to_json()

    assert wire == {
        "gateway": "gw-a",
        "time": "2026-03-01T12:00:00.250Z",
        "endpoints": {
            "ml/llama": {
                "inFlight": 1,
                "held": 2,
                "readyReplicas": 0,
                "lastRequestTime": None,
                "wakeRequestedAt": "2026-03-01T12:00:00.250Z",
            }
        },
    }
    assert GatewayReport.model_validate(wire) == report
