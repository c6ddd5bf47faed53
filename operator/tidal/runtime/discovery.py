"""Which optional kinds the API server serves, kept current: Prometheus Operator's PodMonitor.

A child of an optional kind (an endpoint's PodMonitor) may be rendered, and its objects listed
(`tidal.runtime.podmonitors`), only while the API server serves that kind: its CRD comes with the
cluster's monitoring stack, or never, and may go again.

Why discovery on a timer rather than a watch of CustomResourceDefinitions: discovery
(`GET /apis/<group>/<version>`) is readable by every authenticated client, so it needs no RBAC;
it is one small request, while a watch of CRDs streams every CRD of the cluster (large objects,
often many) to learn about one; and a kind installed a minute ago costs nothing to notice at the
next refresh. A kind that goes away (its CRD deleted) takes its objects with it.

Owns when discovery is read (at start-up, then at most once per `refresh_seconds` by whichever
refresh finds it due, claiming the read first so concurrent refreshes do not repeat it) and what
happens when it cannot be: what was read last stays, and before any read a kind counts as not
served (nothing is created against a kind that may not exist). A change is logged once.
Must not: decide what to render (`tidal.reconcile`), or reach the API server except through the
function it is given. Safe to call from several reconcile threads at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Final

from tidal.errors import TidalError

__all__ = ["DISCOVERY_REFRESH_SECONDS", "ListResources", "ServedKinds"]

# How often discovery is read again: a newly installed CRD is used within this.
DISCOVERY_REFRESH_SECONDS: Final = 30.0

ListResources = Callable[[str], frozenset[str]]
"""The plurals the API server serves in one API version (empty: none); raises `TidalError`."""

_logger = logging.getLogger("tidal.discovery")


class ServedKinds:
    """Whether each wanted (API version, plural) is served, re-read when due."""

    def __init__(
        self,
        list_resources: ListResources,
        wanted: Collection[tuple[str, str]],
        refresh_seconds: float = DISCOVERY_REFRESH_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list_resources = list_resources
        self._wanted = frozenset(wanted)
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._served: frozenset[tuple[str, str]] = frozenset()
        self._read_at: float | None = None
        self._said: str | None = None

    def serves(self, api_version: str, plural: str) -> bool:
        """Whether `plural` in `api_version` was served at the last read; never reads."""
        with self._lock:
            return (api_version, plural) in self._served

    def refresh(self) -> None:
        """Read discovery again for every wanted API version if `refresh_seconds` have passed."""
        with self._lock:
            now = self._clock()
            if not self._wanted or (
                self._read_at is not None and now - self._read_at < self._refresh_seconds
            ):
                return
            self._read_at = now  # claimed first: the other threads use what is known meanwhile
        served: set[tuple[str, str]] = set()
        for api_version in sorted({version for version, _ in self._wanted}):
            try:
                plurals = self._list_resources(api_version)
            except TidalError as exc:
                message = (
                    f"Cannot read API discovery for {api_version}, keeping what was read: {exc}"
                )
                if message != self._said:
                    _logger.warning("%s", message)
                    self._said = message
                return
            served |= {(v, p) for v, p in self._wanted if v == api_version and p in plurals}
        self._said = None
        with self._lock:
            before, self._served = self._served, frozenset(served)
        for api_version, plural in sorted(self._served ^ before):
            state = "now served" if (api_version, plural) in served else "no longer served"
            _logger.info("API discovery: %s in %s is %s", plural, api_version, state)
