"""gateway.signalling: when the wake and last-request annotations are written."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from tidal.api.labels import LAST_REQUEST_TIME, WAKE_REQUESTED_AT
from tidal.api.wire import format_time_ms
from tidal.errors import TemporaryError
from tidal.gateway.metrics import GatewayMetrics
from tidal.gateway.pool import Catalog, EndpointState
from tidal.gateway.routing import Replica
from tidal.gateway.signalling import WAKE_RETRY_SECONDS, Signals

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class NoAddresses:
    def address(self, replica: Replica, port: int) -> tuple[str, int] | None:
        return None


class Annotator:
    def __init__(self) -> None:
        self.writes: list[dict[str, str]] = []
        self.fail = False

    async def annotate(self, namespace: str, name: str, annotations: Any) -> None:
        if self.fail:
            raise TemporaryError("API server unreachable")
        self.writes.append(dict(annotations))


class Clocks:
    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


def setup(
    annotations: dict[str, str] | None = None, status: dict[str, str] | None = None
) -> tuple[Signals, EndpointState, Annotator, Clocks, GatewayMetrics]:
    catalog = Catalog(NoAddresses())
    catalog.replace_routes(
        [
            {
                "metadata": {"name": "llama", "namespace": "ml", "annotations": annotations or {}},
                "spec": {"model": {"name": "m"}},
                "status": status or {},
            }
        ]
    )
    annotator, clocks, metrics = Annotator(), Clocks(), GatewayMetrics()
    signals = Signals(
        catalog,
        annotator,
        metrics,
        interval_seconds=10,
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )
    return signals, catalog.states["ml/llama"], annotator, clocks, metrics


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_wake_is_written_once_and_then_known_as_pending() -> None:
    async def scenario() -> None:
        signals, state, annotator, clocks, metrics = setup(
            status={"scaledToZeroTime": "2026-03-01T11:00:00Z"}
        )
        signals.request_wake(state)
        signals.request_wake(state)  # already being written
        await settle()
        clocks.advance(WAKE_RETRY_SECONDS + 1)
        signals.request_wake(state)  # pending now
        await settle()

        assert annotator.writes == [{WAKE_REQUESTED_AT: "2026-03-01T12:00:00.000Z"}]
        assert signals.pending_wake(state) == T0
        assert (
            metrics.registry.get_sample_value(
                "tidal_gateway_wake_signals_total", {"tidal_endpoint": "ml/llama"}
            )
            == 1
        )

    asyncio.run(scenario())


def test_a_scale_to_zero_after_our_wake_makes_a_new_wake_necessary() -> None:
    async def scenario() -> None:
        signals, state, annotator, clocks, _ = setup()
        signals.request_wake(state)
        await settle()
        clocks.advance(30)
        later = format_time_ms(T0 + timedelta(seconds=20))
        state.route = dataclasses.replace(
            state.route, scaled_to_zero_time=T0 + timedelta(seconds=20)
        )

        assert signals.pending_wake(state) is None
        signals.request_wake(state)
        await settle()

        assert [w[WAKE_REQUESTED_AT] for w in annotator.writes][1] > later

    asyncio.run(scenario())


def test_a_failed_wake_is_retried_after_a_pause_by_the_tick_while_requests_wait() -> None:
    async def scenario() -> None:
        signals, state, annotator, clocks, metrics = setup()
        state.held = 1
        annotator.fail = True
        signals.tick()
        await settle()
        annotator.fail = False
        signals.tick()  # too soon to retry
        await settle()
        assert _wakes(annotator) == []
        assert (
            metrics.registry.get_sample_value(
                "tidal_gateway_annotation_errors_total", {"annotation": WAKE_REQUESTED_AT}
            )
            == 1
        )

        clocks.advance(WAKE_RETRY_SECONDS)
        signals.tick()
        await settle()

        assert len(_wakes(annotator)) == 1

    asyncio.run(scenario())


def test_no_wake_while_the_annotation_already_asks_for_one() -> None:
    async def scenario() -> None:
        signals, state, annotator, _, _ = setup(
            annotations={WAKE_REQUESTED_AT: "2026-03-01T11:59:00.000Z"},
            status={"scaledToZeroTime": "2026-03-01T11:00:00Z"},
        )
        state.held = 3
        signals.tick()
        await settle()

        assert _wakes(annotator) == []

    asyncio.run(scenario())


def _wakes(annotator: Annotator) -> list[str]:
    return [w[WAKE_REQUESTED_AT] for w in annotator.writes if WAKE_REQUESTED_AT in w]


def _last_requests(annotator: Annotator) -> list[str]:
    return [w[LAST_REQUEST_TIME] for w in annotator.writes if LAST_REQUEST_TIME in w]


def test_the_last_request_time_is_written_promptly_then_at_most_every_interval() -> None:
    async def scenario() -> None:
        signals, state, annotator, clocks, _ = setup()
        signals.tick()
        await settle()
        assert _last_requests(annotator) == []  # no traffic, nothing to say

        signals.touch(state)
        signals.tick()
        await settle()
        for _ in range(9):
            clocks.advance(1)
            signals.touch(state)
            signals.tick()
            await settle()
        clocks.advance(1)
        signals.touch(state)
        signals.tick()
        await settle()

        assert _last_requests(annotator) == [
            "2026-03-01T12:00:00.000Z",
            "2026-03-01T12:00:10.000Z",
        ]

    asyncio.run(scenario())


def test_requests_in_flight_keep_the_last_request_time_moving() -> None:
    async def scenario() -> None:
        signals, state, annotator, clocks, _ = setup()
        signals.touch(state)
        state.in_flight = 1  # one long stream
        for _ in range(3):
            signals.tick()
            await settle()
            clocks.advance(10)

        assert _last_requests(annotator) == [
            "2026-03-01T12:00:00.000Z",
            "2026-03-01T12:00:10.000Z",
            "2026-03-01T12:00:20.000Z",
        ]
        assert signals.activity(state) == clocks.wall

    asyncio.run(scenario())


def test_a_newer_time_from_another_gateway_replica_is_not_overwritten_with_an_older_one() -> None:
    async def scenario() -> None:
        signals, state, annotator, _, _ = setup(
            annotations={LAST_REQUEST_TIME: "2026-03-01T12:00:05.000Z"}
        )
        signals.touch(state)  # 12:00:00, older than what the annotation says
        signals.tick()
        await settle()

        assert _last_requests(annotator) == []

    asyncio.run(scenario())


def test_drain_waits_for_writes_in_progress() -> None:
    async def scenario() -> None:
        signals, state, annotator, _, _ = setup()
        signals.request_wake(state)
        await signals.drain(timeout=1)

        assert len(annotator.writes) == 1

    asyncio.run(scenario())
