"""The strategies Tidal is measured against, and the list every run compares.

Owns: the baselines' behaviour and `make`, which builds any strategy from its name (so worker
processes can build their own). Must not: change the simulation's capacity model or the replica
count (every strategy gets its replicas from the same scaling decision, with its own headroom;
only where they run differs).

Names: a family, then `+H` for a headroom of H percent (H more replicas than the load asks for:
the shared scaler sees H percent more demand); the reconciling families also take `@B`, an
interruption budget of B percent (`capacity.interruptionBudgetPercent`; `tidal@0.1`). Families:

- **tidal**: the operator's reconcile with the workload's own policy (Auto).
- **spotpreferred**: the same reconcile with `capacity.policy: SpotPreferred` (no steady floor on
  on-demand; falls back on spot loss, returns after the hysteresis).
- **all-on-demand**: every replica on on-demand capacity at list price (named "reserved" in the
  operator's catalog and labels: not preemptible, but bought by the hour, not committed).
- **all-spot**: every replica on spot, never on-demand; replicas the spot pools cannot hold wait
  Pending. Notices handled as a node autoscaler does (drain at once).
- **price-first** (Karpenter-like, no SLO awareness): one Deployment per endpoint with no
  capacity-type constraint; a node autoscaler binds each Pending pod to the cheapest offering
  (capacity type x allowed region) at the current price. When the cheapest offering has no
  capacity (insufficient capacity, "ICE"), the launch fails: the offering is skipped for
  `ICE_TTL_SECONDS` (Karpenter's unavailable-offerings cache) and the pod waits
  `ICE_RETRY_SECONDS` before the next attempt, which takes the next cheapest offering.
  Consolidation moves a Ready replica from on-demand to spot as soon as spot is cheaper and has
  room, one replica per endpoint at a time, with the node launched first (`NODE_BOOT_SECONDS`
  off the critical path). On a notice the node is drained at once (Karpenter's interruption
  handling): the pods go, their replacements start elsewhere.
- **spothedge** (after SpotHedge, Mao et al., "SkyServe", EuroSys 2025): spot replicas
  over-provisioned by `N_extra` (`max(1, ceil(desired x H / 100))`, H the sweep's percentage)
  and spread over failure domains (each new spot replica goes to the allowed zone, across the
  allowed regions, holding the fewest of the endpoint's spot replicas); dynamic on-demand
  fallback: as many on-demand replicas as Ready-and-not-leaving spot replicas fall short of the
  desired count (a replica on a node given notice counts as gone, so its fallback starts at the
  notice while it serves on), scaled back as spot replicas become Ready.
- **commitment-1y**: a 1-year commitment (`simulate.COMMITMENT_DISCOUNT` below on-demand) sized to
  the daily peak — the most replicas the endpoint asked for during the warm-up day — paid every
  hour whether used or not, plus on-demand for any replica beyond it; everything in the
  endpoint's first region (commitments are regional).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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
    "FAMILIES",
    "ICE_RETRY_SECONDS",
    "ICE_TTL_SECONDS",
    "NODE_BOOT_SECONDS",
    "AllOnDemand",
    "AllSpot",
    "Commitment",
    "PriceFirst",
    "SpotHedge",
    "make",
    "sweep",
]

ICE_TTL_SECONDS: Final = 180.0
ICE_RETRY_SECONDS: Final = 60.0
NODE_BOOT_SECONDS: Final = 90.0
# How often a skipped reconcile is run anyway: the utilization history's bucket.
DECIDE_EVERY_SECONDS: Final = 300.0

TIDAL: Final = "tidal"
ON_DEMAND: Final = "all-on-demand"
SPOT: Final = "all-spot"
FAMILIES: Final = (
    TIDAL,
    "spotpreferred",
    "spothedge",
    "price-first",
    "commitment-1y",
    ON_DEMAND,
    SPOT,
)


def sweep(
    *,
    price_first: tuple[float, ...] = (0, 25, 50, 100),
    spot_preferred: tuple[float, ...] = (0, 25, 50),
    spot_hedge: tuple[float, ...] = (0, 25, 50),
    tidal_budgets: tuple[str, ...] = (),
) -> list[str]:
    """Every strategy name a full run compares, Tidal first (then Tidal at other budgets)."""
    return [
        TIDAL,
        *(f"{TIDAL}@{budget}" for budget in tidal_budgets),
        ON_DEMAND,
        SPOT,
        "commitment-1y",
        *(_named("price-first", h) for h in price_first),
        *(_named("spotpreferred", h) for h in spot_preferred),
        *(_named("spothedge", h) for h in spot_hedge),
    ]


def _named(family: str, headroom: float) -> str:
    return f"{family}+{headroom:g}"


def make(
    name: str,
    *,
    decide_every_seconds: float = DECIDE_EVERY_SECONDS,
    reclaim_prior_hours: float | None = None,
    notice_seconds: float | None = None,
    detection_seconds: float | None = None,
    watched_days: float = 0.0,
    crunches_per_region_per_day: float = 0.0,
) -> Strategy:
    """The strategy called `name` (`family`, `family+H`, `family@B`). `reclaim_prior_hours`,
    `notice_seconds` and `detection_seconds`: the reconciling rows'
    `TIDAL_SPOT_RECLAIM_PRIOR_HOURS`, `TIDAL_SPOT_NOTICE_SECONDS` and
    `TIDAL_SPOT_DETECTION_SECONDS` (None: the operator's defaults). `watched_days`: how long the
    operator has counted reclaims before the run, in a market with
    `crunches_per_region_per_day` (0: a fresh install)."""
    named, _, budget = name.partition("@")
    family, _, rest = named.partition("+")
    headroom = float(rest) if rest else 0.0
    if family in (TIDAL, "spotpreferred"):
        return TidalStrategy(
            name,
            CapacityPolicy.SpotPreferred if family == "spotpreferred" else None,
            headroom_percent=headroom,
            # A budget sweep is its own curve on the frontier (`report.draw`).
            family=f"{family}@" if budget else family,
            decide_every_seconds=decide_every_seconds,
            reclaim_prior_hours=reclaim_prior_hours,
            budget_percent=budget or None,
            notice_seconds=notice_seconds,
            detection_seconds=detection_seconds,
            watched_days=watched_days,
            history_crunches_per_region_per_day=crunches_per_region_per_day,
        )
    if budget:
        raise ValueError(f"{name!r}: only tidal and spotpreferred take an interruption budget")
    builders: dict[str, Callable[[], Strategy]] = {
        ON_DEMAND: lambda: AllOnDemand(),
        SPOT: lambda: AllSpot(),
        "price-first": lambda: PriceFirst(headroom),
        "spothedge": lambda: SpotHedge(headroom),
        "commitment-1y": lambda: Commitment(),
    }
    if family not in builders:
        raise ValueError(f"unknown strategy {name!r} (families: {', '.join(FAMILIES)})")
    strategy = builders[family]()
    strategy.name = name
    return strategy


class _Fixed(Strategy):
    """Every replica on one capacity type, in the allowed regions, bound by kube-scheduler."""

    needs_fleet = False
    capacity: CapacityType = CapacityType.RESERVED

    def control(
        self, now: datetime, fleet: FleetSnapshot | None, endpoints: Mapping[str, EndpointView]
    ) -> dict[str, dict[str, Deployment]]:
        return {
            name: {
                self.capacity.value: Deployment(
                    view.desired, self.capacity, tuple(view.spec.residency.regions)
                )
            }
            for name, view in endpoints.items()
        }


class AllOnDemand(_Fixed):
    name = family = ON_DEMAND
    capacity = CapacityType.RESERVED


class AllSpot(_Fixed):
    name = family = SPOT
    capacity = CapacityType.SPOT


class Commitment(Strategy):
    """A 1-year commitment sized to the warm-up day's peak, on-demand beyond it."""

    needs_fleet = False
    name = family = "commitment-1y"

    def __init__(self) -> None:
        self._peak: dict[str, int] = {}
        self._frozen: dict[str, int] = {}
        self._measured_from = 0.0

    def begin(self, cluster: Cluster) -> None:
        scenario = cluster.scenario
        self._measured_from = float(scenario.warmup_steps * scenario.step_seconds)

    def control(
        self, now: datetime, fleet: FleetSnapshot | None, endpoints: Mapping[str, EndpointView]
    ) -> dict[str, dict[str, Deployment]]:
        out = {}
        for name, view in endpoints.items():
            t = (now - view.start).total_seconds()
            if t < self._measured_from:
                self._peak[name] = max(self._peak.get(name, 0), view.desired)
            elif name not in self._frozen:
                self._frozen[name] = self._peak.get(name, view.desired)
            region = (view.spec.residency.regions[0],)
            out[name] = {
                CapacityType.RESERVED.value: Deployment(view.desired, CapacityType.RESERVED, region)
            }
        return out

    def committed_replicas(self, endpoint: str) -> int:
        return self._frozen.get(endpoint, 0)

    def notes(self) -> dict[str, float]:
        return {"committed_replicas": float(sum(self._frozen.values()))}


class PriceFirst(Strategy):
    """Cheapest capacity first, Karpenter-like, with `headroom_percent` extra replicas."""

    needs_fleet = False

    def __init__(self, headroom_percent: float = 0.0) -> None:
        self.headroom_percent = headroom_percent
        self.family = "price-first"
        self.name = _named(self.family, headroom_percent)
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
            out[name] = {"any": Deployment(replicas=view.desired, capacity=None, regions=regions)}
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
                if p.node is not None and p.ready(t) and not cluster.node(p.node).spec.spot
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
                old = cluster.node(victim.node or "").spec
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


class SpotHedge(Strategy):
    """SpotHedge-like: over-provisioned spot spread over zones, dynamic on-demand fallback."""

    needs_fleet = False

    def __init__(self, extra_percent: float = 0.0) -> None:
        self.extra_percent = extra_percent
        self.family = "spothedge"
        self.name = _named(self.family, extra_percent)
        self._cluster: Cluster | None = None
        self.fallback_seconds = 0.0

    def begin(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def on_notice(self, cluster: Cluster, node: str, t: float) -> None:
        # Not drained: the replica serves until the reclaim, and `control` (run now) already
        # counts it as gone, so its on-demand fallback starts at the notice.
        for pod in cluster.node(node).pods.values():
            cluster.add_debt(pod.endpoint, 1, t)

    def extra(self, desired: int) -> int:
        return max(1, math.ceil(desired * self.extra_percent / 100))

    def control(
        self, now: datetime, fleet: FleetSnapshot | None, endpoints: Mapping[str, EndpointView]
    ) -> dict[str, dict[str, Deployment]]:
        cluster = self._cluster
        if cluster is None:
            raise ValueError("SpotHedge needs begin() first")
        out = {}
        for name, view in endpoints.items():
            t = (now - view.start).total_seconds()
            regions = tuple(view.spec.residency.regions)
            spot_ready = sum(
                1
                for p in view.pods
                if p.group == CapacityType.SPOT.value
                and p.ready(t)
                and p.node is not None
                and not cluster.node(p.node).noticed
            )
            on_demand = max(0, view.desired - spot_ready)
            out[name] = {
                CapacityType.SPOT.value: Deployment(
                    view.desired + self.extra(view.desired), CapacityType.SPOT, regions
                ),
                CapacityType.RESERVED.value: Deployment(on_demand, CapacityType.RESERVED, regions),
            }
        return out

    def bind(self, cluster: Cluster, pod: Pod, deployment: Deployment, t: float) -> None:
        if deployment.capacity is not CapacityType.SPOT:
            cluster.kube_schedule(pod, deployment, t)
            return
        workload = cluster.workloads[pod.endpoint]
        nodes = cluster.candidates(
            workload.product, CapacityType.SPOT, deployment.regions, pod.gpus
        )
        if not nodes:
            return
        # Spread over failure domains: the zone (across regions) with the fewest of the
        # endpoint's spot replicas, then the freest node there.
        per_zone: dict[str, int] = {}
        for other in cluster.pods[pod.endpoint]:
            if other.group == pod.group and other.node is not None and other.deleted_at > t:
                zone = cluster.node(other.node).spec.zone
                per_zone[zone] = per_zone.get(zone, 0) + 1
        best = min(
            nodes,
            key=lambda n: (per_zone.get(n.spec.zone, 0), -len(n.free), n.spec.name),
        )
        cluster.bind(pod, best.spec.name, t)
