"""SLO attainment: measured p95 latency, time to first token and throughput against the spec.

Owns the `SLOMet` condition (its status, reason and message), the `status.slo` block and the Event
a change of `SLOMet` deserves. The rules, in order:

- no target set: `True`, reason `NoTargets` (measured values are still reported);
- any target measurably missed: `False`; the reason names the first miss in the order latency,
  time to first token, throughput, and the message lists every miss with target and value;
- otherwise, any target without data: `Unknown`, reason `NoData` (no data is not a pass);
- otherwise `True`, reason `WithinTargets`.

Values are compared as they are reported in status (whole milliseconds, tokens/s to two decimals)
so the message never contradicts the numbers next to it. A throughput of exactly 0 means the
window saw no generation at all: the endpoint was idle, not slow, so a `minTokensPerSecond` target
counts as having no data rather than as missed.

Pure: no IO, no clock (`now` is a parameter), no Kopf.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from tidal.api.common import SLO_MET, Condition, ConditionStatus, Event
from tidal.api.endpoint import EndpointSLOSpec, EndpointSLOStatus
from tidal.api.wire import format_time
from tidal.slo.measurement import Measurement

__all__ = [
    "LATENCY_ABOVE_TARGET",
    "NO_DATA",
    "NO_TARGETS",
    "THROUGHPUT_BELOW_TARGET",
    "TTFT_ABOVE_TARGET",
    "WITHIN_TARGETS",
    "evaluate",
    "transition_event",
]

WITHIN_TARGETS: Final = "WithinTargets"
LATENCY_ABOVE_TARGET: Final = "LatencyAboveTarget"
TTFT_ABOVE_TARGET: Final = "TTFTAboveTarget"
THROUGHPUT_BELOW_TARGET: Final = "ThroughputBelowTarget"
NO_DATA: Final = "NoData"
NO_TARGETS: Final = "NoTargets"


def evaluate(
    slo: EndpointSLOSpec | None,
    measurement: Measurement,
    now: datetime,
    *,
    generation: int | None = None,
) -> tuple[EndpointSLOStatus, Condition]:
    """`status.slo` and the `SLOMet` condition for `measurement` taken at `now`.

    `evaluatedTime` is the end of the measured window when the source reported it
    (`Measurement.window_end`), else `now`.

    The window is the measurement's own (`Measurement.window_seconds`), so status can never
    claim a window the numbers were not computed over. `generation` becomes the condition's
    `observedGeneration`. Upsert the condition with `tidal.api.common.set_condition`.
    """
    status = EndpointSLOStatus(
        p95_latency_ms=_ms(measurement.p95_latency_seconds),
        p95_time_to_first_token_ms=_ms(measurement.p95_time_to_first_token_seconds),
        tokens_per_second=_tokens(measurement.tokens_per_second),
        window_seconds=measurement.window_seconds,
        evaluated_time=format_time(measurement.window_end or now),
    )
    condition_status, reason, message = _judge(slo, status)
    condition = Condition(
        type=SLO_MET,
        status=condition_status,
        reason=reason,
        message=f"{message} ({measurement.describe()})",
        observed_generation=generation,
    )
    return status, condition


def transition_event(old: Condition | None, new: Condition) -> Event | None:
    """The Event for `SLOMet` moving from `old` to `new`, or None when nothing changed.

    A change of status or of reason is a transition (latency fixed but TTFT now missed is news);
    a new message with the same status and reason is not, or every reconcile would post one. The
    first evaluation posts an Event unless it only says there is no data yet or that the spec
    sets no targets (nothing was judged: an Event on every new endpoint would be noise).
    """
    if old is not None and (old.status, old.reason) == (new.status, new.reason):
        return None
    if old is None and (new.status == "Unknown" or new.reason == NO_TARGETS):
        return None
    if new.status == "True":
        return Event("Normal", "SLOMet", new.message)
    if new.status == "False":
        return Event("Warning", "SLOMissed", new.message)
    return Event("Normal", "SLOUnknown", new.message)


def _judge(  # noqa: C901
    slo: EndpointSLOSpec | None, measured: EndpointSLOStatus
) -> tuple[ConditionStatus, str, str]:
    if slo is None or (
        slo.p95_latency_ms is None
        and slo.p95_time_to_first_token_ms is None
        and slo.min_tokens_per_second is None
    ):
        return "True", NO_TARGETS, "spec.slo sets no targets; measured values are reported only"

    misses: list[tuple[str, str]] = []
    met: list[str] = []
    missing: list[str] = []

    if slo.p95_latency_ms is not None:
        target = slo.p95_latency_ms
        value = measured.p95_latency_ms
        if value is None:
            missing.append(f"no p95 latency data (target {target} ms)")
        elif value > target:
            misses.append(
                (LATENCY_ABOVE_TARGET, f"p95 latency {value} ms is above the {target} ms target")
            )
        else:
            met.append(f"p95 latency {value} ms is within the {target} ms target")

    if slo.p95_time_to_first_token_ms is not None:
        target = slo.p95_time_to_first_token_ms
        value = measured.p95_time_to_first_token_ms
        if value is None:
            missing.append(f"no p95 time-to-first-token data (target {target} ms)")
        elif value > target:
            misses.append(
                (
                    TTFT_ABOVE_TARGET,
                    f"p95 time to first token {value} ms is above the {target} ms target",
                )
            )
        else:
            met.append(f"p95 time to first token {value} ms is within the {target} ms target")

    if slo.min_tokens_per_second is not None:
        floor = slo.min_tokens_per_second
        rate = measured.tokens_per_second
        if rate is None:
            missing.append(f"no throughput data (target {floor} tokens/s)")
        elif rate == 0:
            missing.append(f"no tokens generated: the endpoint was idle (target {floor} tokens/s)")
        elif rate < floor:
            misses.append(
                (
                    THROUGHPUT_BELOW_TARGET,
                    f"throughput {rate:g} tokens/s is below the {floor} tokens/s target",
                )
            )
        else:
            met.append(f"throughput {rate:g} tokens/s meets the {floor} tokens/s target")

    if misses:
        return "False", misses[0][0], "; ".join(text for _, text in misses)
    if missing:
        return "Unknown", NO_DATA, "; ".join(missing)
    return "True", WITHIN_TARGETS, "; ".join(met)


def _ms(seconds: float | None) -> int | None:
    if seconds is None:
        return None
    return round(seconds * 1000)


def _tokens(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 2)
