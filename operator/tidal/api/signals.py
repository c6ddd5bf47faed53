"""The contract between the gateway (which sees requests) and the operator (which scales).

Owns: the meaning of the signals the gateway leaves for the operator, and the pure helpers both
sides use to read and write them, so the two can never disagree. The keys are
`tidal.api.labels`' and the times are written with `tidal.api.wire.format_time_ms` and read with
`tidal.api.wire.parse_time`, so neither side can spell them differently:

- annotation `tidal.dev/wake-requested-at` on an InferenceEndpoint: an RFC3339 time (UTC,
  milliseconds) written by the gateway when it holds a request for an endpoint with no ready
  replica. A wake is *pending* while it is later than `status.scaledToZeroTime` (or that is
  unset): `wake_pending`. The gateway never moves a pending wake, so its value is the start of
  the cold start (`lastColdStartSeconds` is measured from it), and it writes at least
  `scaledToZeroTime` + 1 ms so clock skew between gateway and operator cannot hide a wake.
- annotation `tidal.dev/last-request-time` on an InferenceEndpoint: when the gateway last
  received a request for it, written at most every few seconds per endpoint (it may lag the
  truth by that much, never lead it).
- `GET /internal/inflight` on each gateway replica's admin port: a `GatewayReport` (JSON)
  with, per endpoint it routes, the requests in flight to replicas, the requests held waiting
  for one, and the last request time. Every replica counts only its own requests, so a reader
  asks each replica and adds them up (`merge_reports`); an endpoint no replica reports is
  unknown, which is not the same as idle.

Must not: do IO or read the clock (callers pass times), or know how either side moves bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Final

from pydantic import Field

from tidal.api.common import ApiModel
from tidal.api.wire import format_time_ms

__all__ = [
    "EndpointLoad",
    "EndpointReport",
    "GatewayReport",
    "endpoint_key",
    "merge_reports",
    "wake_pending",
    "wake_value",
]

# A wake written right after a scale to zero must compare later than it, even when the writer's
# clock is slightly behind the operator's or the status time was truncated to the second.
_AFTER: Final = timedelta(milliseconds=1)


def endpoint_key(namespace: str, name: str) -> str:
    """The `<namespace>/<name>` key endpoints go by in reports and metrics."""
    return f"{namespace}/{name}"


def wake_pending(wake_requested_at: datetime | None, scaled_to_zero_time: datetime | None) -> bool:
    """A wake is pending when one was requested after the endpoint last scaled to zero."""
    if wake_requested_at is None:
        return False
    return scaled_to_zero_time is None or wake_requested_at > scaled_to_zero_time


def wake_value(now: datetime, scaled_to_zero_time: datetime | None) -> datetime:
    """The time to write as a new wake: `now`, but always after the last scale to zero."""
    if scaled_to_zero_time is not None and now <= scaled_to_zero_time:
        return scaled_to_zero_time + _AFTER
    return now


# --- GET /internal/inflight -----------------------------------------------------------------


class EndpointReport(ApiModel):
    """One endpoint as one gateway replica sees it."""

    in_flight: int = Field(ge=0, description="inFlight: requests forwarded and not finished.")
    held: int = Field(ge=0, description="held: requests waiting for a ready replica.")
    ready_replicas: int = Field(ge=0, description="readyReplicas: replicas it can route to.")
    last_request_time: datetime | None = Field(
        default=None, description="lastRequestTime: newest request it received (RFC3339)."
    )
    wake_requested_at: datetime | None = Field(
        default=None, description="wakeRequestedAt: the pending wake it knows of, if any."
    )


class GatewayReport(ApiModel):
    """The body of `GET /internal/inflight` from one gateway replica."""

    gateway: str = Field(description="gateway: the replica's name (its pod name).")
    time: datetime = Field(description="time: when the replica answered (RFC3339).")
    endpoints: dict[str, EndpointReport] = Field(
        default_factory=dict, description="endpoints by `<namespace>/<name>`."
    )

    def to_json(self) -> dict[str, object]:
        """Wire form with every time as `tidal.api.wire.format_time_ms` writes it."""
        return {
            "gateway": self.gateway,
            "time": format_time_ms(self.time),
            "endpoints": {
                key: {
                    "inFlight": report.in_flight,
                    "held": report.held,
                    "readyReplicas": report.ready_replicas,
                    "lastRequestTime": _optional_time(report.last_request_time),
                    "wakeRequestedAt": _optional_time(report.wake_requested_at),
                }
                for key, report in sorted(self.endpoints.items())
            },
        }


def _optional_time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time_ms(moment)


@dataclasses.dataclass(frozen=True)
class EndpointLoad:
    """One endpoint's load summed over every gateway replica that answered."""

    in_flight: int = 0
    held: int = 0
    last_request_time: datetime | None = None

    @property
    def demand(self) -> int:
        """Requests that want a replica now: in flight plus held."""
        return self.in_flight + self.held


def merge_reports(reports: Iterable[GatewayReport]) -> Mapping[str, EndpointLoad]:
    """Add up the replicas' reports per endpoint (counts add, the newest request time wins)."""
    merged: dict[str, EndpointLoad] = {}
    for report in reports:
        for key, seen in report.endpoints.items():
            before = merged.get(key, EndpointLoad())
            times = [t for t in (before.last_request_time, seen.last_request_time) if t]
            merged[key] = EndpointLoad(
                in_flight=before.in_flight + seen.in_flight,
                held=before.held + seen.held,
                last_request_time=max(times) if times else None,
            )
    return merged
