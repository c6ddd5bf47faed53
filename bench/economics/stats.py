"""Statistics over seeds: paired differences, percentile-bootstrap confidence intervals, the
spot-saving capture ratio and the cost/SLO frontier.

Owns the numbers the report quotes, as pure functions of per-seed values. Must not: run
simulations or format text.

Intervals are percentile bootstraps over seeds (`BOOTSTRAP_RESAMPLES` resamples of the seeds
with replacement, seeded, so a rerun quotes the same interval): the per-seed values are paired
(each strategy replays the same seed's trace), so a comparison resamples the per-seed
*differences*, never two independent samples. With few seeds a bootstrap interval is too narrow;
the report prints how many seeds each interval rests on.

Spot-saving capture ratio of a strategy X on one seed:

    SCR = (C_allOnDemand - C_X) / (C_allOnDemand - C_allSpot)

the share of what all-spot saves over all-on-demand that X keeps: 1 at all-spot's bill, 0 at
all-on-demand's, above 1 only if X is cheaper than all-spot, negative if dearer than all-on-demand.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "Interval",
    "Point",
    "capture_ratio",
    "dominates",
    "frontier",
    "interval",
    "paired",
]

BOOTSTRAP_RESAMPLES: Final = 2000
CONFIDENCE: Final = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean over `n` seeds and its 95 % percentile-bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    def show(self, fmt: str, scale: float = 1.0) -> str:
        m, lo, hi = self.mean * scale, self.low * scale, self.high * scale
        return f"{m:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def interval(values: Sequence[float], *, seed: int = 0) -> Interval:
    """The mean of `values` with its percentile-bootstrap 95 % interval (seeded)."""
    if not values:
        raise ValueError("an interval needs at least one value")
    data = list(values)
    mean = statistics.fmean(data)
    if len(data) == 1 or max(data) == min(data):
        return Interval(mean, mean, mean, len(data))
    rng = random.Random(seed)
    n = len(data)
    means = sorted(
        statistics.fmean(data[rng.randrange(n)] for _ in range(n))
        for _ in range(BOOTSTRAP_RESAMPLES)
    )
    tail = (1 - CONFIDENCE) / 2
    low = means[int(tail * BOOTSTRAP_RESAMPLES)]
    high = means[min(BOOTSTRAP_RESAMPLES - 1, int((1 - tail) * BOOTSTRAP_RESAMPLES))]
    return Interval(mean, low, high, n)


def paired(a: Mapping[int, float], b: Mapping[int, float], *, seed: int = 0) -> Interval:
    """a - b per seed (seeds both have), mean and interval of the differences."""
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("no seed in common")
    return interval([a[s] - b[s] for s in common], seed=seed)


def capture_ratio(on_demand: float, spot: float, cost: float) -> float:
    """SCR of a bill `cost` between the all-on-demand and all-spot bills of the same seed."""
    saving = on_demand - spot
    if saving <= 0:
        raise ValueError(f"all-spot ({spot}) must be cheaper than all-on-demand ({on_demand})")
    return (on_demand - cost) / saving


@dataclass(frozen=True)
class Point:
    """One strategy on the cost/SLO plane: mean cost (lower is better), mean SLO attainment
    (higher is better)."""

    name: str
    cost: float
    slo: float


def dominates(a: Point, b: Point) -> bool:
    """Whether `a` is at least as cheap and at least as good as `b`, and strictly one of them."""
    return a.cost <= b.cost and a.slo >= b.slo and (a.cost < b.cost or a.slo > b.slo)


def frontier(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates, cheapest first."""
    return sorted(
        (p for p in points if not any(dominates(q, p) for q in points if q is not p)),
        key=lambda p: (p.cost, -p.slo, p.name),
    )
