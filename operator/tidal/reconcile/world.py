"""What a reconcile observed, as plain frozen values: the vocabulary between runtime and decide.

`tidal.runtime` fills these from Kopf's indexes and the clients; `tidal.reconcile` reads them.
Owns: immutable data only. Must not: query anything, read the clock, or decide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tidal.placement.model import FleetSnapshot
from tidal.slo import Measurement

__all__ = ["Inputs", "Measured"]


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What the indexes said when a reconcile started: the fleet, the namespace's raw policy
    annotation (None: no policy), its collections' regions by name, and the endpoint's own
    Deployments, Services, PodDisruptionBudget and pods (pruned to the fields the reconcile
    reads); and its PodMonitor as `tidal.runtime.podmonitors` last saw or applied it (no index:
    that module says why)."""

    fleet: FleetSnapshot
    namespace_policy: str | None = None
    collections: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    deployments: tuple[dict[str, Any], ...] = ()
    services: tuple[dict[str, Any], ...] = ()
    pods: tuple[dict[str, Any], ...] = ()
    pdbs: tuple[dict[str, Any], ...] = ()
    pod_monitors: tuple[dict[str, Any], ...] = ()

    def collection_regions(self, name: str | None) -> frozenset[str] | None:
        """The paired collection's regions; None without a pairing or when it does not exist
        (the intersection applies only while the collection exists)."""
        if name is None or name not in self.collections:
            return None
        return frozenset(self.collections[name])


@dataclasses.dataclass(frozen=True)
class Measured:
    """The latest measurement of one endpoint, when it was taken and, if it failed, why."""

    measurement: Measurement
    at: datetime
    error: str | None = None
