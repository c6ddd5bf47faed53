"""What node autoscalers can still add, kept current: Karpenter's NodePools and the pools
declared in the `tidal-capacity` ConfigMap; and the cluster's conventions (that ConfigMap's
`conventions.yaml`: what node labels mean, `tidal.api.conventions`).

The conventions are fixed by the first read that succeeds (at start-up, before any watch): they
decide how every watched node is parsed, so they cannot change under a running operator. A
later read that finds them changed says so once (a log line and a Warning Event
`ConventionsChanged` on the ConfigMap: restart the operator to apply); one that does not parse is
refused like bad pools (`InvalidCapacity`), and the defaults (or what was fixed) stay.

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

from tidal.api.conventions import (
    DEFAULT_CONVENTIONS,
    Conventions,
    ConventionsError,
    UnknownProfileError,
    parse_conventions,
)
from tidal.errors import PermanentError, TidalError
from tidal.placement.model import ProvisionablePool
from tidal.placement.provisioning import (
    CapacityError,
    DeclaredPool,
    declared_pools,
    nodepool_pools,
)

__all__ = [
    "CONFIGMAP_NAME",
    "CONVENTIONS_CHANGED",
    "INVALID_CAPACITY",
    "Capacity",
    "CapacityCache",
]

# The ConfigMap (in the operator's namespace) that declares cluster-autoscaler node groups.
CONFIGMAP_NAME: Final = "tidal-capacity"
# The Warning Event's reason on the ConfigMap when it does not parse.
INVALID_CAPACITY: Final = "InvalidCapacity"
# The Warning Event's reason when the conventions changed after the operator fixed them.
CONVENTIONS_CHANGED: Final = "ConventionsChanged"

FetchConfigMap = Callable[[str, str], Mapping[str, Any] | None]
ListNodePools = Callable[[], Sequence[Mapping[str, Any]]]
Report = Callable[[Mapping[str, Any], str, str], None]  # (configmap, reason, message)

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
        profile_override: str | None = None,
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
        # What was said last about each part ("pools", "conventions", "changed"), so each
        # distinct problem is told once, and told again if it comes back after a good read.
        self._said: dict[str, str] = {}
        self._profile_override = profile_override
        self._conventions: Conventions | None = None

    @property
    def conventions(self) -> Conventions:
        """The conventions fixed by the first read (the defaults until one succeeded)."""
        return self._conventions or DEFAULT_CONVENTIONS

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
        read, configmap = self._configmap()
        if read:
            self._read_conventions(configmap)
        nodepools = self._nodepools(known.nodepools)
        declared = self._declared(configmap, known.declared) if read else known.declared
        with self._lock:
            self._capacity = Capacity(nodepools=nodepools, declared=declared)
            return self._capacity

    def _nodepools(self, known: tuple[ProvisionablePool, ...]) -> tuple[ProvisionablePool, ...]:
        try:
            return nodepool_pools(self._list_nodepools(), self.conventions)
        except TidalError as exc:
            _logger.warning("Cannot list Karpenter NodePools, keeping what was read: %s", exc)
            return known

    def _configmap(self) -> tuple[bool, Mapping[str, Any] | None]:
        """Whether the ConfigMap could be read, and it (None: there is none)."""
        try:
            return True, self._fetch_configmap(self._namespace, CONFIGMAP_NAME)
        except TidalError as exc:
            _logger.warning("Cannot read %s, keeping what was read: %s", self._where, exc)
            return False, None

    @property
    def _where(self) -> str:
        return f"ConfigMap {self._namespace}/{CONFIGMAP_NAME}"

    def _declared(
        self, configmap: Mapping[str, Any] | None, known: tuple[DeclaredPool, ...]
    ) -> tuple[DeclaredPool, ...]:
        if configmap is None:
            self._said.pop("pools", None)
            return ()
        try:
            declared = declared_pools(configmap.get("data") or {})
        except CapacityError as exc:
            message = f"{self._where}: {exc}; keeping the last good pools"
            self._tell("pools", configmap, INVALID_CAPACITY, message)
            return known
        self._said.pop("pools", None)
        return declared

    def _read_conventions(self, configmap: Mapping[str, Any] | None) -> None:
        """Fix the conventions on the first read; later, say when they changed or are bad."""
        fixed = self._conventions
        try:
            read = parse_conventions((configmap or {}).get("data"), self._profile_override)
        except ConventionsError as exc:
            if isinstance(exc, UnknownProfileError) and exc.from_environment:
                raise PermanentError(str(exc)) from None  # the operator's own flag: stop
            kept = "the defaults" if fixed is None else "the conventions read at start-up"
            if configmap is not None:
                message = f"{self._where}: {exc}; using {kept}"
                self._tell("conventions", configmap, INVALID_CAPACITY, message)
            self._conventions = fixed or DEFAULT_CONVENTIONS
            return
        self._said.pop("conventions", None)
        if fixed is None:
            self._conventions = read
        elif read == fixed:
            self._said.pop("changed", None)
        elif configmap is not None:
            message = (
                f"{self._where}: conventions.yaml changed; the operator keeps the conventions it "
                "started with until it restarts (kubectl rollout restart)"
            )
            self._tell("changed", configmap, CONVENTIONS_CHANGED, message)

    def _tell(self, part: str, configmap: Mapping[str, Any], reason: str, message: str) -> None:
        if self._said.get(part) == message:
            return  # said already; the next change of the ConfigMap gets its own report
        self._said[part] = message
        _logger.warning("%s: %s", reason, message)
        if self._report is not None:
            self._report(configmap, reason, message)
