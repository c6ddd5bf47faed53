"""The price catalog the operator prices with: the `tidal-pricing` ConfigMap, kept current.

Owns when the ConfigMap is read (at startup, then at most once per `refresh_seconds`, by
whichever caller finds it due) and what happens when it is wrong. A ConfigMap that does not
parse is refused whole: the last good catalog stays in use (a typo in one price must not blank
every endpoint's cost) and the problem is reported once per distinct error, naming the bad key
(a log line and a Warning Event on the ConfigMap). No ConfigMap at all means the shipped
defaults, `tidal.cost.DEFAULT_CATALOG`; the API server being unreachable keeps what we have.

Why a GET on a timer rather than a watch: RBAC grants `get` on that one ConfigMap name only.
A watch can be narrowed to one name only through a fieldSelector, which Kopf does not set, and
a price table changes rarely: a minute's delay is fine.

Must not: decide prices (`tidal.cost`), or talk to the API server except through the `fetch`
function it is given (the controllers pass `tidal.clients.kube`; tests pass their own). Safe
to call from several reconcile threads at once. Each controller keeps a cache of its own; only
a cache given `report` posts the Event (the inference controller's), so a refusal is told once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from tidal.cost import (
    CONFIGMAP_NAME,
    DEFAULT_CATALOG,
    PriceCatalog,
    PricingError,
    catalog_from_configmap,
)
from tidal.errors import TidalError

__all__ = ["INVALID_PRICING", "Fetch", "Prices", "PricingCache", "Report"]

# The Warning Event's reason on the ConfigMap when it does not parse.
INVALID_PRICING: Final = "InvalidPricing"

Fetch = Callable[[str, str], Mapping[str, Any] | None]
"""(namespace, name) -> the ConfigMap as the API server sends it, or None when it is missing."""

Report = Callable[[Mapping[str, Any], str], None]
"""(the ConfigMap, message): tell the user their price table was refused."""

_logger = logging.getLogger("tidal.pricing")


@dataclasses.dataclass(frozen=True)
class Prices:
    """The catalog in use and where it came from (quoted in `status.cost.basis`)."""

    catalog: PriceCatalog
    source: str


class PricingCache:
    """The current `Prices`, re-read from the ConfigMap when due."""

    def __init__(
        self,
        fetch: Fetch,
        namespace: str,
        refresh_seconds: float,
        *,
        report: Report | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._namespace = namespace
        self._refresh_seconds = refresh_seconds
        self._report = report
        self._clock = clock
        self._lock = threading.Lock()
        self._prices = Prices(DEFAULT_CATALOG, self._defaults("not read yet"))
        self._read_at: float | None = None
        self._last_error: str | None = None

    @property
    def where(self) -> str:
        return f"ConfigMap {self._namespace}/{CONFIGMAP_NAME}"

    def current(self) -> Prices:
        """The prices in use now; never reads."""
        with self._lock:
            return self._prices

    def refresh(self) -> Prices:
        """Read the ConfigMap again if `refresh_seconds` have passed since the last read."""
        with self._lock:
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self._refresh_seconds:
                return self._prices
            # Claimed before reading, so the other threads use the current prices meanwhile.
            self._read_at = now
        prices = self._read()
        with self._lock:
            if prices is not None:
                self._prices = prices
            return self._prices

    def _read(self) -> Prices | None:
        """The prices the ConfigMap says now; None to keep the current ones."""
        try:
            configmap = self._fetch(self._namespace, CONFIGMAP_NAME)
        except TidalError as exc:
            _logger.warning("Cannot read %s, keeping the current prices: %s", self.where, exc)
            return None
        if configmap is None:
            self._last_error = None
            return Prices(DEFAULT_CATALOG, self._defaults(f"no {self.where}"))
        try:
            catalog = catalog_from_configmap(configmap.get("data") or {})
        except PricingError as exc:
            self._refused(configmap, str(exc))
            return None
        self._last_error = None
        return Prices(catalog, self.where)

    def _refused(self, configmap: Mapping[str, Any], error: str) -> None:
        with self._lock:
            kept = self._prices.source
        if error == self._last_error:
            return  # said already; the next change of the ConfigMap gets its own report
        self._last_error = error
        message = f"{error}; keeping the last good prices ({kept})"
        _logger.warning("%s: %s", INVALID_PRICING, message)
        if self._report is not None:
            self._report(configmap, message)

    @staticmethod
    def _defaults(why: str) -> str:
        return f"built-in default prices ({why})"
