"""The endpoints' PodMonitors as every reconcile sees them: listed on a timer, and told of the
operator's own applies at once.

Why not a Kopf index, as for the other children: PodMonitor is Prometheus Operator's kind, and
its CRD can go while the operator runs (the monitoring stack uninstalled). A Kopf watch of a
kind whose CRD was deleted fails with 404 when it reconnects, and Kopf then stops the whole
operator (seen in the e2e suite: the CRD deleted under a running operator). A LIST on a timer
treats a kind that is not served as "no PodMonitors", as `tidal.runtime.capacity` does for
Karpenter's NodePools, and needs no watch permission.

Freshness, and why it is enough: the reconcile compares the PodMonitor it renders with the one
seen here (`reconcile.observation.differs`), so what matters is that an applied PodMonitor is
seen as applied (else every reconcile would apply it again and say "Created" again) and that a
deleted or re-stamped one is noticed. Every successful apply is recorded at once (`applied`),
and survives a LIST that began before it; a PodMonitor deleted or edited by hand is noticed at
the next LIST (at most `refresh_seconds`) and re-applied by the next reconcile, and an edit
that keeps the render stamp by the forced apply every `TIDAL_DRIFT_INTERVAL_SECONDS`.

Owns: that view, by (namespace, endpoint), pruned to what the reconcile reads. Must not:
decide (`tidal.reconcile`), or reach the API server except through the function it is given.
Safe to call from several reconcile threads at once.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from tidal.api.labels import LABEL_ENDPOINT
from tidal.errors import TidalError
from tidal.runtime.discovery import DISCOVERY_REFRESH_SECONDS

__all__ = ["ListPodMonitors", "PodMonitorCache"]

ListPodMonitors = Callable[[], Sequence[Mapping[str, Any]]]
"""Every PodMonitor Tidal made, in all namespaces (empty: none, or no such kind)."""

# What the reconcile reads of a PodMonitor's metadata: its name and render stamp (the rest of
# what is kept says which one it was).
_METADATA: Final = ("name", "namespace", "uid", "resourceVersion", "labels", "annotations")

Key = tuple[str, str]  # (namespace, endpoint)

_logger = logging.getLogger("tidal.podmonitors")


class PodMonitorCache:
    """The endpoints' PodMonitors, from the last LIST and the applies since."""

    def __init__(
        self,
        list_monitors: ListPodMonitors,
        refresh_seconds: float = DISCOVERY_REFRESH_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list = list_monitors
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[Key, dict[str, dict[str, Any]]] = {}
        # (namespace, endpoint, name) -> (when applied, what) since the last LIST began.
        self._applied: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
        self._read_at: float | None = None
        self._said: str | None = None

    def of(self, namespace: str, endpoint: str) -> tuple[dict[str, Any], ...]:
        """The endpoint's PodMonitors as last seen or applied; never reads."""
        with self._lock:
            return tuple(self._seen.get((namespace, endpoint), {}).values())

    def applied(self, monitor: Mapping[str, Any]) -> None:
        """Record a PodMonitor the operator has just applied (the API server's answer)."""
        entry = _entry(monitor)
        if entry is None:
            return
        (namespace, endpoint), name, pruned = entry
        with self._lock:
            self._seen.setdefault((namespace, endpoint), {})[name] = pruned
            self._applied[(namespace, endpoint, name)] = (self._clock(), pruned)

    def forget(self, namespace: str, endpoint: str) -> None:
        """Drop a deleted endpoint's PodMonitors (the garbage collector takes them)."""
        with self._lock:
            self._seen.pop((namespace, endpoint), None)
            for key in [k for k in self._applied if k[:2] == (namespace, endpoint)]:
                del self._applied[key]

    def refresh(self, served: bool) -> None:
        """LIST the PodMonitors again if `refresh_seconds` have passed; with the kind not
        `served`, there are none (nothing is listed)."""
        with self._lock:
            started = self._clock()
            if self._read_at is not None and started - self._read_at < self._refresh_seconds:
                return
            self._read_at = started  # claimed first: the other threads use what is known
            if not served:
                self._seen, self._applied = {}, {}
                return
        try:
            listed = self._list()
        except TidalError as exc:
            message = f"Cannot list PodMonitors, keeping what was seen: {exc}"
            if message != self._said:
                _logger.warning("%s", message)
                self._said = message
            return
        self._said = None
        seen: dict[Key, dict[str, dict[str, Any]]] = {}
        for monitor in listed:
            entry = _entry(monitor)
            if entry is not None:
                key, name, pruned = entry
                seen.setdefault(key, {})[name] = pruned
        with self._lock:
            # An apply the LIST may have missed (it began before the apply) still counts.
            self._applied = {k: v for k, v in self._applied.items() if v[0] >= started}
            for (namespace, endpoint, name), (_, pruned) in self._applied.items():
                seen.setdefault((namespace, endpoint), {})[name] = pruned
            self._seen = seen


def _entry(monitor: Mapping[str, Any]) -> tuple[Key, str, dict[str, Any]] | None:
    """(namespace, endpoint), name and the kept fields of one PodMonitor; None without the
    endpoint label (not an endpoint's)."""
    metadata = monitor.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    labels = metadata.get("labels")
    endpoint = labels.get(LABEL_ENDPOINT) if isinstance(labels, Mapping) else None
    if not endpoint:
        return None
    kept = {key: copy.deepcopy(metadata[key]) for key in _METADATA if key in metadata}
    pruned = {
        "apiVersion": monitor.get("apiVersion"),
        "kind": monitor.get("kind"),
        "metadata": kept,
    }
    return (
        (str(metadata.get("namespace", "")), str(endpoint)),
        str(metadata.get("name", "")),
        pruned,
    )
