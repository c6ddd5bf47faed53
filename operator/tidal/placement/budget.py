"""Auto as an interruption budget: the smallest reserved floor whose expected interruption loss
stays within `capacity.interruptionBudgetPercent` (DESIGN.md §1, issue 16).

Owns: the loss model, the reclaim-rate estimate (observed episodes under a pessimistic prior),
the recovery time, how spot replicas land in pools, and the floor search. Must not: do I/O,
read the clock, look at nodes (`placement.planner` turns the fleet into `SpotPool`s), or know
any capacity policy: SpotPreferred (budget 100 %) and an all-reserved floor (budget 0) are the
two ends of this one rule.

Units: load is in replica *saturations* (`tidal.api.endpoint.TARGET_LOAD_SHARE`): a replica
carries at most 1 within its SLO, and the autoscaler runs each at 2/3. So a replica that
survives an interruption absorbs up to 1 while the lost ones are replaced.

The model, per spot pool p (a region x GPU product market, reclaimed as one):
- it is reclaimed `rate_p` times an hour (`reclaim_rate`: a Gamma-Poisson posterior mean,
  the configured pessimistic prior counted as `weight_hours` of observation);
- a reclaim takes away the spot replicas it holds, `held_p`, for `recovery_seconds`:
  detection plus the endpoint's measured replica start, less the interruption notice where the
  cluster gets one (the replacements start at the notice while the leaving replicas serve);
- meanwhile the survivors, `desired - held_p` saturations, carry what they can, and the rest
  of the load misses: `shortfall_p = max(0, load - (desired - held_p))`.
- expected loss, as a share of requests: `sum_p rate_p * recovery / 3600 * shortfall_p / load`
  (at most 1). Pools are independent: two reclaimed at once is second order and left out,
  except at budget 0, which means "spot interruptions may cost nothing": reserved alone then
  carries the load.

`held_p` is what the scheduler can put there, not what it is likely to: where nothing limits a
pool (one region, or regions without a spread constraint), every spot replica may land in the
largest one; with `spread` (the spot Deployment carries a hard topology spread over regions,
maxSkew 1), a region holds at most its even share `ceil(spot / regions)`, and within a region
spot still may pack into one GPU product. Every `held_p` grows with spot, so the loss shrinks
as reserved grows and the floor is the first reserved count within budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

__all__ = [
    "DEFAULT_PRIOR",
    "Floor",
    "ReclaimPrior",
    "Reclaims",
    "SpotPool",
    "expected_loss",
    "holdings",
    "reclaim_rate",
    "recovery_seconds",
    "reserved_floor",
]


@dataclass(frozen=True)
class ReclaimPrior:
    """What the rule assumes before it has seen a pool, and when it cannot measure (operator
    settings `TIDAL_SPOT_RECLAIM_*`, `TIDAL_SPOT_DETECTION_SECONDS`, `TIDAL_COLD_START_SECONDS`).

    `reclaims_per_hour`: a pessimistic reclaim rate of one pool (default one a day: GPU spot in
    a capacity crunch, well above the calm months' rates). `weight_hours`: how many hours of
    observation the prior is worth (default three days): a pool seen calm for longer earns a
    lower rate, one seen reclaimed often a higher one. `detection_seconds`: from a reclaim to
    the replacement's start (the node's notice or NotReady, then the next reconcile).
    `cold_start_seconds`: the replacement's cold start when the endpoint never measured one.
    `notice_seconds`: how long before a reclaim the cluster hears of it (default 0, none: a
    node lost without notice; 120 on AWS with Karpenter's interruption queue or a termination
    handler, 30 on GCP and Azure). Tidal starts the replacements at the notice and the leaving
    replicas serve until the reclaim, so the notice is taken off the recovery.
    """

    reclaims_per_hour: float = 1 / 24
    weight_hours: float = 72.0
    detection_seconds: float = 60.0
    cold_start_seconds: float = 600.0
    notice_seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in ("reclaims_per_hour", "weight_hours", "detection_seconds", "notice_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not math.isfinite(self.cold_start_seconds) or self.cold_start_seconds < 0:
            raise ValueError(
                f"cold_start_seconds must be a non-negative number, got {self.cold_start_seconds!r}"
            )


DEFAULT_PRIOR: Final = ReclaimPrior()


@dataclass(frozen=True)
class Reclaims:
    """What was observed of one pool: reclaim episodes over `hours` of exposure."""

    episodes: int = 0
    hours: float = 0.0


@dataclass(frozen=True)
class SpotPool:
    """One independent spot market the endpoint's spot replicas may use.

    `name`: `region/product` (the reason names it). `region`: what a spread constraint
    spreads over. `room`: the most spot replicas of this endpoint it can hold (free slots on
    its nodes plus what an autoscaler may add there). `reclaims_per_hour`: `reclaim_rate`.
    """

    name: str
    region: str
    room: int
    reclaims_per_hour: float


@dataclass(frozen=True)
class Floor:
    """The rule's answer: `reserved` replicas, and the reasoning for `status.placement.reason`.

    `load`: the load judged (saturations). `expected_loss`: the share of requests reclaims are
    expected to cost at `reserved` (0-1). `largest_pool`, `largest_held`: the pool whose
    reclaim costs most there and the spot replicas it may hold (None, 0: no spot).
    `survives_largest`: what remains without that pool carries the load. `by_budget`: the
    budget, not the `lower` bound, set the floor.
    """

    reserved: int
    load: float
    expected_loss: float
    largest_pool: str | None
    largest_held: int
    survives_largest: bool
    by_budget: bool


def reclaim_rate(observed: Reclaims, prior: ReclaimPrior = DEFAULT_PRIOR) -> float:
    """Reclaims per hour of one pool: the posterior mean of a Poisson rate under a Gamma prior
    of `prior.reclaims_per_hour` weighted as `prior.weight_hours` of observation."""
    hours = prior.weight_hours + max(0.0, observed.hours)
    if hours <= 0:
        return prior.reclaims_per_hour
    pseudo = prior.reclaims_per_hour * prior.weight_hours
    return (pseudo + max(0, observed.episodes)) / hours


def recovery_seconds(start_seconds: float | None, prior: ReclaimPrior = DEFAULT_PRIOR) -> float:
    """How long a reclaim costs capacity: detection plus the endpoint's measured replica start
    (`status.lastReplicaStartSeconds`, else `lastColdStartSeconds`; the configured cold start
    when it never measured one), less the notice, never below 0."""
    start = prior.cold_start_seconds if start_seconds is None else start_seconds
    return max(0.0, prior.detection_seconds + max(0.0, start) - prior.notice_seconds)


def holdings(spot: int, pools: Sequence[SpotPool], *, spread: bool) -> dict[str, int]:
    """The most spot replicas each pool may hold when `spot` run on spot (see the module)."""
    spot = max(0, spot)
    if not spread:
        return {p.name: min(spot, max(0, p.room)) for p in pools}
    regions = {p.region for p in pools}
    # A hard spread (maxSkew 1) over the regions holds each to its even share; what a region
    # cannot take waits Pending and moves to reserved as spot loss.
    share = math.ceil(spot / len(regions)) if regions else 0
    return {p.name: min(share, max(0, p.room)) for p in pools}


def expected_loss(
    *,
    desired: int,
    reserved: int,
    load: float,
    pools: Sequence[SpotPool],
    recovery: float,
    spread: bool,
) -> float:
    """The share of requests spot reclaims are expected to cost (0-1), see the module."""
    load = min(max(0.0, load), float(desired))
    if load <= 0:
        return 0.0
    held = holdings(desired - reserved, pools, spread=spread)
    total = sum(
        max(0.0, p.reclaims_per_hour)
        * max(0.0, recovery)
        / 3600
        * _shortfall(desired, load, held[p.name])
        for p in pools
    )
    return min(1.0, total / load)


def reserved_floor(
    *,
    desired: int,
    lower: int,
    load: float,
    pools: Sequence[SpotPool],
    recovery: float,
    budget: Fraction,
    spread: bool,
) -> Floor:
    """The fewest reserved replicas, at least `lower` (the spec's bounds), whose expected loss
    is within `budget` (a share of requests, 0-1). Budget 0 also keeps the whole load on
    reserved; a budget of 1 (100 %) is `lower` whatever spot does."""
    desired = max(0, desired)
    lower = min(max(0, lower), desired)
    load = min(max(0.0, load), float(desired))
    start = lower
    if budget <= 0:
        start = max(lower, min(desired, math.ceil(round(load, 6))))

    def loss_at(reserved: int) -> float:
        return expected_loss(
            desired=desired,
            reserved=reserved,
            load=load,
            pools=pools,
            recovery=recovery,
            spread=spread,
        )

    # The loss never grows with reserved (`holdings` never shrink with spot) and is 0 with no
    # spot, so the first reserved count within budget is found by bisection.
    low, high = start, desired
    while low < high:
        middle = (low + high) // 2
        if loss_at(middle) <= budget:
            high = middle
        else:
            low = middle + 1
    reserved, loss = low, loss_at(low)
    return _floor(desired, reserved, load, loss, pools, spread, by_budget=reserved > lower)


def _floor(
    desired: int,
    reserved: int,
    load: float,
    loss: float,
    pools: Sequence[SpotPool],
    spread: bool,
    *,
    by_budget: bool,
) -> Floor:
    held = holdings(desired - reserved, pools, spread=spread)
    ranked = sorted(
        (p for p in pools if held[p.name] > 0),
        key=lambda p: (-held[p.name], -p.reclaims_per_hour, p.name),
    )
    largest = ranked[0] if ranked else None
    largest_held = held[largest.name] if largest is not None else 0
    return Floor(
        reserved=reserved,
        load=load,
        expected_loss=loss,
        largest_pool=largest.name if largest is not None else None,
        largest_held=largest_held,
        survives_largest=_shortfall(desired, load, largest_held) <= 0,
        by_budget=by_budget,
    )


def _shortfall(desired: int, load: float, held: int) -> float:
    """Load the survivors cannot carry while `held` spot replicas are being replaced."""
    return max(0.0, round(load - (desired - held), 9))
