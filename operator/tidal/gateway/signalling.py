"""The gateway's two annotations on an InferenceEndpoint: the wake request and the last request.

Owns: when to write `tidal.dev/wake-requested-at` and `tidal.dev/last-request-time`
(`Signals`), through an `Annotator` (the IO seam: `KubeAnnotator` in production, a recording
fake in tests). The contract is `tidal.api.signals`, shared with the operator.
Must not: block the event loop (writes go to a thread) or hold up a request (writes run as
background tasks; a request never waits for the API server).

Wake: when a request is held because the endpoint has no ready replica and no wake is pending
(`wake_pending`: the annotation, or the one this replica just wrote, is later than
`status.scaledToZeroTime`), write `wake_value(now, scaledToZeroTime)`. A pending wake is never
rewritten, so it keeps marking the start of the cold start. While requests stay held, `tick`
checks again every second, which covers a failed write (retried after `WAKE_RETRY_SECONDS`) and
a scale to zero that raced the wake (its newer `scaledToZeroTime` makes the wake not pending).

Last request: the newest activity per endpoint: a request arriving or finishing, or `now` while
any is in flight or held, so a single long stream keeps its endpoint awake. Written from `tick`
at most every `interval` seconds per endpoint and never older than what the annotation already
says (another gateway replica may have written a newer time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final, Protocol

from tidal.api.labels import LAST_REQUEST_TIME, WAKE_REQUESTED_AT
from tidal.api.signals import wake_pending, wake_value
from tidal.api.wire import format_time_ms
from tidal.clients import gatewaykube
from tidal.errors import TidalError
from tidal.gateway.metrics import GatewayMetrics
from tidal.gateway.pool import Catalog, EndpointState

__all__ = ["Annotator", "KubeAnnotator", "Signals"]

log = logging.getLogger("tidal.gateway")

WAKE_RETRY_SECONDS: Final = 5.0


class Annotator(Protocol):
    async def annotate(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        """Merge these annotations onto the endpoint; raises `TidalError` on failure."""
        ...


class KubeAnnotator:
    """`Annotator` on the API server (a merge patch, from a worker thread)."""

    async def annotate(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        await asyncio.to_thread(gatewaykube.annotate_endpoint, namespace, name, annotations)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Signals:
    """Decides and performs the annotation writes for every endpoint in the catalog."""

    def __init__(
        self,
        catalog: Catalog,
        annotator: Annotator,
        metrics: GatewayMetrics,
        *,
        interval_seconds: float = 10.0,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.annotator = annotator
        self.metrics = metrics
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.monotonic = monotonic
        self._writing: set[tuple[str, str]] = set()
        self._failing: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- what the proxy calls -----------------------------------------------------------

    def touch(self, state: EndpointState) -> None:
        """A request arrived at or finished on `state`'s endpoint."""
        state.last_activity = self.clock()

    def activity(self, state: EndpointState) -> datetime | None:
        """The endpoint's newest activity as reported (now while anything is in flight)."""
        if state.in_flight or state.held:
            return self.clock()
        return state.last_activity

    def pending_wake(self, state: EndpointState) -> datetime | None:
        """The wake the operator has yet to act on, if any (the annotation or our own write)."""
        route = state.route
        known = [t for t in (route.wake_requested_at, state.wake_written) if t is not None]
        latest = max(known) if known else None
        return latest if wake_pending(latest, route.scaled_to_zero_time) else None

    def request_wake(self, state: EndpointState) -> None:
        """Ask the operator to wake the endpoint, unless a wake is pending or being written."""
        if self.pending_wake(state) is not None or (state.key, WAKE_REQUESTED_AT) in self._writing:
            return
        now = self.monotonic()
        if state.wake_attempted is not None and now - state.wake_attempted < WAKE_RETRY_SECONDS:
            return
        state.wake_attempted = now
        value = wake_value(self.clock(), state.route.scaled_to_zero_time)
        self._spawn(state, WAKE_REQUESTED_AT, value)

    # --- the background loop ------------------------------------------------------------

    def tick(self) -> None:
        """One round: re-request wakes for held requests, write due last-request times."""
        for state in list(self.catalog.states.values()):
            if state.held and not state.backends:
                self.request_wake(state)
            self._maybe_record(state)

    async def run(self, stop: asyncio.Event, period: float = 1.0) -> None:
        while not stop.is_set():
            self.tick()
            try:
                await asyncio.wait_for(stop.wait(), timeout=period)
            except TimeoutError:
                continue

    async def drain(self, timeout: float = 5.0) -> None:
        """Let writes in progress finish (shutdown), up to `timeout` seconds."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def _maybe_record(self, state: EndpointState) -> None:
        activity = self.activity(state)
        if activity is None or (state.key, LAST_REQUEST_TIME) in self._writing:
            return
        written = [t for t in (state.last_request_written, state.route.last_request_time) if t]
        if written and activity <= max(written):
            return
        last = state.last_request_written
        if last is not None and (activity - last).total_seconds() < self.interval_seconds:
            return
        self._spawn(state, LAST_REQUEST_TIME, activity)

    def _spawn(self, state: EndpointState, annotation: str, value: datetime) -> None:
        self._writing.add((state.key, annotation))
        task = asyncio.get_running_loop().create_task(self._write(state, annotation, value))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, state: EndpointState, annotation: str, value: datetime) -> None:
        route = state.route
        try:
            await self.annotator.annotate(
                route.namespace, route.name, {annotation: format_time_ms(value)}
            )
        except TidalError as exc:
            self.metrics.annotation_errors.labels(annotation=annotation).inc()
            # Said once per outage: the tick retries every second while it lasts.
            level = logging.DEBUG if (state.key, annotation) in self._failing else logging.WARNING
            log.log(level, "Cannot write %s endpoint=%s: %s", annotation, route.key, exc)
            self._failing.add((state.key, annotation))
            return
        finally:
            self._writing.discard((state.key, annotation))
        if (state.key, annotation) in self._failing:
            self._failing.discard((state.key, annotation))
            log.info("Writing %s works again endpoint=%s", annotation, route.key)
        if annotation == WAKE_REQUESTED_AT:
            state.wake_written = value
            if not state.deleted:
                self.metrics.wake_signals.labels(route.key).inc()
            log.info(
                "Requested wake endpoint=%s at=%s held=%d",
                route.key,
                format_time_ms(value),
                state.held,
            )
        else:
            state.last_request_written = value
            log.debug("Recorded last request endpoint=%s at=%s", route.key, format_time_ms(value))
