"""What node autoscalers can still add, kept current: Karpenter's NodePools and the pools
declared in the `tidal-capacity` ConfigMap.

Owns when both are read (at most once per `refresh_seconds`, by whichever reconcile finds it
due) and what happens when they cannot be: an API server that does not answer keeps what was
read last; a `tidal-capacity` ConfigMap that does not parse is refused whole, the last good
pools stay in use, and the problem is told once per distinct error (a log line and a Warning
Event on the ConfigMap), as for `tidal-pricing`. No NodePool CRD (no Karpenter) and no
ConfigMap mean no provisionable capacity: the planner then counts only the nodes that exist,
as on a fixed fleet.

Why a LIST on a timer rather than a watch: NodePools change rarely, their `status.resources`
changes on every node launch (a watch would wake the operator for each), and a CRD that may not
exist is awkward to watch. Thirty seconds of lag costs nothing: the planner only needs to know
that a pool can provision, and Karpenter enforces the limits itself.

Must not: decide (`tidal.placement`), or talk to the API server except through the functions it
is given. Safe to call from several reconcile threads at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from tidal.errors import TidalError
from tidal.placement.model import ProvisionablePool
from tidal.placement.provisioning import (
    CapacityError,
    DeclaredPool,
    declared_pools,
    nodepool_pools,
)

__all__ = ["CONFIGMAP_NAME", "INVALID_CAPACITY", "Capacity", "CapacityCache"]

# The ConfigMap (in the operator's namespace) that declares cluster-autoscaler node groups.
CONFIGMAP_NAME: Final = "tidal-capacity"
# The Warning Event's reason on the ConfigMap when it does not parse.
INVALID_CAPACITY: Final = "InvalidCapacity"

FetchConfigMap = Callable[[str, str], Mapping[str, Any] | None]
ListNodePools = Callable[[], Sequence[Mapping[str, Any]]]
Report = Callable[[Mapping[str, Any], str], None]

_logger = logging.getLogger("tidal.capacity")


@dataclasses.dataclass(frozen=True)
class Capacity:
    """What can be provisioned: the NodePools' pools as read, and the declared pools (whose room
    depends on the nodes they made, so the reconcile resolves them against its fleet)."""

    nodepools: tuple[ProvisionablePool, ...] = ()
    declared: tuple[DeclaredPool, ...] = ()


class CapacityCache:
    """The current `Capacity`, re-read when due."""

    def __init__(
        self,
        fetch_configmap: FetchConfigMap,
        list_nodepools: ListNodePools,
        namespace: str,
        refresh_seconds: float,
        *,
        report: Report | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch_configmap = fetch_configmap
        self._list_nodepools = list_nodepools
        self._namespace = namespace
        self._refresh_seconds = refresh_seconds
        self._report = report
        self._clock = clock
        self._lock = threading.Lock()
        self._capacity = Capacity()
        self._read_at: float | None = None
        self._last_error: str | None = None

    def current(self) -> Capacity:
        """The capacity known now; never reads."""
        with self._lock:
            return self._capacity

    def refresh(self) -> Capacity:
        """Read NodePools and the ConfigMap again if `refresh_seconds` have passed."""
        with self._lock:
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self._refresh_seconds:
                return self._capacity
            self._read_at = now  # claimed first: the other threads use what is known meanwhile
            known = self._capacity
        nodepools = self._nodepools(known.nodepools)
        declared = self._declared(known.declared)
        with self._lock:
            self._capacity = Capacity(nodepools=nodepools, declared=declared)
            return self._capacity

    def _nodepools(self, known: tuple[ProvisionablePool, ...]) -> tuple[ProvisionablePool, ...]:
        try:
            return nodepool_pools(self._list_nodepools())
        except TidalError as exc:
            _logger.warning("Cannot list Karpenter NodePools, keeping what was read: %s", exc)
            return known

    def _declared(self, known: tuple[DeclaredPool, ...]) -> tuple[DeclaredPool, ...]:
        where = f"ConfigMap {self._namespace}/{CONFIGMAP_NAME}"
        try:
            configmap = self._fetch_configmap(self._namespace, CONFIGMAP_NAME)
        except TidalError as exc:
            _logger.warning("Cannot read %s, keeping the declared pools: %s", where, exc)
            return known
        if configmap is None:
            self._last_error = None
            return ()
        try:
            declared = declared_pools(configmap.get("data") or {})
        except CapacityError as exc:
            self._refused(configmap, f"{where}: {exc}; keeping the last good pools")
            return known
        self._last_error = None
        return declared

    def _refused(self, configmap: Mapping[str, Any], message: str) -> None:
        if message == self._last_error:
            return  # said already; the next change of the ConfigMap gets its own report
        self._last_error = message
        _logger.warning("%s: %s", INVALID_CAPACITY, message)
        if self._report is not None:
            self._report(configmap, message)
