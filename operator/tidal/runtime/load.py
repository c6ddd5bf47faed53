"""What the gateways say about each endpoint's load, polled and kept as a short history.

Owns when the gateway replicas are asked (at most once per `poll_seconds`, by whichever timer
tick finds a poll due; `targets` says which: the `TIDAL_GATEWAY_URLS` list, or the Ready gateway
pods found by `TIDAL_GATEWAY_SELECTOR`) and the per-endpoint `LoadSample`
history `tidal.scaling.autoscale.decide` stabilizes over (trimmed by `remember`). A poll counts
only when every configured replica answered: each counts only its own requests, so a partial
sum would read as a load drop and scale replicas away. Without a complete poll no sample is
added, and `decide` holds the replica count where it is. The history lives in memory only: a
restarted operator starts empty, and `decide` never scales down before its history covers the
scale-down window, so a restart cannot flap replicas.

Must not: decide replica counts, or do IO except through the `fetch` function it is given
(the controller passes `tidal.clients.inflight.fetch_report`; tests pass their own). Safe to
call from several reconcile threads at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from tidal.api.signals import GatewayReport, merge_reports
from tidal.errors import TidalError
from tidal.reconcile.endpoint import Load
from tidal.scaling.autoscale import LoadSample, Tuning, remember

__all__ = ["Fetch", "LoadTracker", "Targets"]

Fetch = Callable[[str], GatewayReport]
"""One gateway replica's report, by its admin base URL; raises `TidalError` when it cannot."""

Targets = Callable[[], Sequence[str]]
"""Every gateway replica's admin base URL now; raises `TidalError` when it cannot tell."""

_logger = logging.getLogger("tidal.load")
_EMPTY: Final[tuple[LoadSample, ...]] = ()


class LoadTracker:
    """Per-endpoint load history from the gateway replicas at `urls`."""

    def __init__(
        self,
        fetch: Fetch,
        targets: Sequence[str] | Targets,
        poll_seconds: float,
        tuning: Tuning,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._fetch = fetch
        # A fixed list, or a discovery function (configured even while it finds no replica:
        # a gateway rollout must hold replica counts, not turn scaling off and wake everything).
        fixed = tuple(targets) if not callable(targets) else ()
        self._targets: Targets = targets if callable(targets) else lambda: fixed
        self._configured = callable(targets) or bool(fixed)
        self._poll_seconds = poll_seconds
        self._tuning = tuning
        self._clock = clock
        self._lock = threading.Lock()
        self._polled_at: datetime | None = None
        self._samples: dict[str, tuple[LoadSample, ...]] = {}
        self._last_request: dict[str, datetime] = {}
        self._failing: set[str] = set()

    @property
    def configured(self) -> bool:
        """Whether gateways are configured: without them, load-driven scaling is off."""
        return self._configured

    @property
    def tuning(self) -> Tuning:
        return self._tuning

    def samples(self, key: str) -> tuple[LoadSample, ...]:
        """The load history of endpoint `<namespace>/<name>`, oldest first."""
        with self._lock:
            return self._samples.get(key, _EMPTY)

    def view(self, key: str) -> Load | None:
        """What the reconcile of endpoint `<namespace>/<name>` reads: its load history, newest
        request and the tuning; None when no gateway is configured (no load-driven scaling)."""
        if not self.configured:
            return None
        return Load(self.samples(key), self.last_request_time(key), self.tuning)

    def last_request_time(self, key: str) -> datetime | None:
        """The newest request any gateway reported for the endpoint."""
        with self._lock:
            return self._last_request.get(key)

    def forget(self, key: str) -> None:
        with self._lock:
            self._samples.pop(key, None)
            self._last_request.pop(key, None)

    def poll(self) -> bool:
        """Ask every gateway replica if a poll is due; True when a complete poll was added."""
        if not self._configured:
            return False
        with self._lock:
            now = self._clock()
            if self._polled_at is not None and (
                (now - self._polled_at).total_seconds() < self._poll_seconds
            ):
                return False
            self._polled_at = now  # claimed: the other threads keep the current samples
        try:
            urls = tuple(self._targets())
        except TidalError as exc:
            self._failed("discovery", str(exc))
            return False
        self._recovered("discovery")
        reports = []
        for url in urls:
            try:
                reports.append(self._fetch(url))
            except TidalError as exc:
                self._failed(url, str(exc))
                continue
            self._recovered(url)
        if not urls or len(reports) != len(urls):
            return False
        merged = merge_reports(reports)
        with self._lock:
            for key, load in merged.items():
                sample = LoadSample.of(now, load)
                self._samples[key] = remember(self._samples.get(key, _EMPTY), sample, self._tuning)
                if load.last_request_time is not None:
                    self._last_request[key] = load.last_request_time
            for key in set(self._samples) - set(merged):
                # No gateway routes it any more (deleted, or not watched yet): unknown, not idle.
                self._samples.pop(key, None)
        return True

    def _failed(self, url: str, error: str) -> None:
        with self._lock:
            new = url not in self._failing
            self._failing.add(url)
        if new:  # once per outage; the replica count holds meanwhile
            _logger.warning("Cannot read gateway load, holding replica counts: %s", error)

    def _recovered(self, url: str) -> None:
        with self._lock:
            was = url in self._failing
            self._failing.discard(url)
        if was:
            _logger.info("Gateway load readable again url=%s", url)
