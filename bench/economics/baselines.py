"""The strategies Tidal is measured against, and the list every run compares.

Owns: the baselines' behaviour. Must not: change the simulation's capacity model or the
replica count (every strategy gets the same replicas from the same scaling decision; only where
they run differs).

- **all-reserved**: the operator's reconcile (`TidalStrategy`) with `capacity.policy:
  ReservedOnly`.
- **all-spot**: the same with `SpotOnly`: never falls back; replicas the spot pool cannot
  hold stay Pending until spot capacity returns.
- **price-first** (Karpenter-like, no SLO awareness): one Deployment per endpoint with no
  capacity-type constraint; a node autoscaler binds each Pending pod to the cheapest offering
  (capacity type x allowed region) at the current price. When the cheapest offering has no
  capacity (insufficient capacity, "ICE"), the launch fails: the offering is skipped for
  `ICE_TTL_SECONDS` (Karpenter's unavailable-offerings cache) and the pod waits
  `ICE_RETRY_SECONDS` before the next attempt, which takes the next cheapest offering. So
  after a reclaim it waits for a replacement like a node autoscaler would: spot elsewhere if
  any, on-demand ("reserved") otherwise. Consolidation moves a Ready replica from reserved to
  spot as soon as spot is cheaper and has room (spot-to-spot consolidation is off, Karpenter's
  default), one replica per endpoint at a time (a PodDisruptionBudget of maxUnavailable 1):
  the new node is launched first (its boot, `NODE_BOOT_SECONDS`, is off the critical path),
  then the pod is evicted and starts there (the model load is on it).
- **tidal-spotpreferred**: Tidal's reconcile with `SpotPreferred` (no steady baseline on
  reserved): what the Auto baseline buys, for the knob discussion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Final

from bench.economics.simulate import (
    Cause,
    Cluster,
    Deployment,
    EndpointView,
    Pod,
    Strategy,
    TidalStrategy,
)

from tidal.api.endpoint import CapacityPolicy
from tidal.api.labels import CapacityType
from tidal.placement.model import FleetSnapshot

__all__ = [
    "ICE_RETRY_SECONDS",
    "ICE_TTL_SECONDS",
    "NODE_BOOT_SECONDS",
    "PriceFirst",
    "strategies",
]

ICE_TTL_SECONDS: Final = 180.0
ICE_RETRY_SECONDS: Final = 60.0
NODE_BOOT_SECONDS: Final = 90.0


def strategies() -> list[Strategy]:
    """Every strategy a run compares, Tidal first."""
    return [
        TidalStrategy("tidal"),
        TidalStrategy("all-reserved", CapacityPolicy.ReservedOnly),
        TidalStrategy("all-spot", CapacityPolicy.SpotOnly),
        PriceFirst(),
        TidalStrategy("tidal-spotpreferred", CapacityPolicy.SpotPreferred),
    ]


class PriceFirst(Strategy):
    """Cheapest capacity first, Karpenter-like. `headroom_percent` runs that many percent more
    replicas than the scaling decision asks for (to compare SLO at equal cost)."""

    needs_fleet = False

    def __init__(self, headroom_percent: float = 0.0) -> None:
        self.headroom_percent = headroom_percent
        self.name = "price-first" if not headroom_percent else f"price-first+{headroom_percent:g}%"
        self._ice: dict[tuple[str, CapacityType, str], float] = {}
        self._regions: dict[str, tuple[str, ...]] = {}
        # When each endpoint's last launch failed for want of capacity.
        self._failed: dict[str, float] = {}
        self.moves = 0
        self.ice_errors = 0

    def control(
        self, now: datetime, fleet: FleetSnapshot | None, endpoints: Mapping[str, EndpointView]
    ) -> dict[str, dict[str, Deployment]]:
        out = {}
        for name, view in endpoints.items():
            regions = tuple(view.spec.residency.regions)
            self._regions[name] = regions
            replicas = view.desired
            if self.headroom_percent:
                limit = view.spec.scaling.effective_max_replicas
                replicas = min(limit, math.ceil(replicas * (1 + self.headroom_percent / 100)))
            out[name] = {"any": Deployment(replicas=replicas, capacity=None, regions=regions)}
        return out

    def _offerings(
        self, cluster: Cluster, product: str, regions: tuple[str, ...]
    ) -> list[tuple[float, CapacityType, str]]:
        return sorted(
            (cluster.price(product, kind, region), kind, region)
            for kind in (CapacityType.SPOT, CapacityType.RESERVED)
            for region in regions
        )

    def bind(self, cluster: Cluster, pod: Pod, deployment: Deployment, t: float) -> None:
        if self._failed.get(pod.endpoint) == t:
            # One launch request per batch: its pods wait for the retry together.
            pod.not_before = t + ICE_RETRY_SECONDS
        if pod.not_before > t:
            return
        product = cluster.workloads[pod.endpoint].product
        for _, kind, region in self._offerings(cluster, product, deployment.regions):
            key = (product, kind, region)
            if self._ice.get(key, -math.inf) > t:
                continue
            nodes = cluster.candidates(product, kind, (region,), pod.gpus)
            if nodes:
                cluster.bind(pod, cluster.score(pod, nodes, {}).spec.name, t)
                return
            self._ice[key] = t + ICE_TTL_SECONDS
            self._failed[pod.endpoint] = t
            self.ice_errors += 1
            pod.not_before = t + ICE_RETRY_SECONDS
            return

    def after_bind(self, cluster: Cluster, t: float) -> None:
        for name, pods in cluster.pods.items():
            live = [p for p in pods if p.deleted_at > t]
            if any(p.cause is Cause.SHIFT and p.ready_at > t for p in live):
                continue
            workload = cluster.workloads[name]
            regions = self._regions.get(name, workload.regions)
            on_reserved = [
                p
                for p in live
                if p.node is not None and p.ready(t) and not cluster.nodes[p.node].spec.spot
            ]
            if not on_reserved:
                continue
            for price, kind, region in self._offerings(cluster, workload.product, regions):
                if (
                    kind is not CapacityType.SPOT
                    or self._ice.get((workload.product, kind, region), -math.inf) > t
                ):
                    continue
                nodes = cluster.candidates(workload.product, kind, (region,), workload.gpus)
                victim = on_reserved[-1]
                old = cluster.nodes[victim.node or ""].spec
                if not nodes or price >= cluster.node_price(old):
                    continue
                cluster.delete(victim, t)
                moved = cluster.create(name, victim.group, None, Cause.SHIFT, t)
                cluster.bind(
                    moved,
                    cluster.score(moved, nodes, {}).spec.name,
                    t,
                    cold_start=max(0.0, workload.cold_start_seconds - NODE_BOOT_SECONDS),
                )
                self.moves += 1
                break

    def notes(self) -> dict[str, float]:
        return {"consolidation_moves": float(self.moves), "ice_errors": float(self.ice_errors)}
