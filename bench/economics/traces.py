"""The seeded trace generator of the placement-economics benchmark.

Owns: the simulated day — the endpoints (workloads), the GPU fleet, per-endpoint request-rate
traces (steady, diurnal, bursty), per-endpoint GPU-utilization noise, per-region spot price
multipliers and spot reclaim/return events — as one immutable `Scenario`, a function of the
seed alone. Must not: decide anything, or know about strategies (every strategy replays the
same `Scenario`, so the same nodes are reclaimed at the same second for each of them).

Determinism: every random stream is a `random.Random` seeded with a string such as
`"7:rate:chat-8b"` (string seeds hash with SHA-512, independent of PYTHONHASHSEED), so adding a
workload or a region does not change the others' traces.

The model, step by step (all times in seconds from the start of the warm-up; one value per
step of `step_seconds`):

Request rate (requests/s), log-space noise is an AR(1) process (correlation time
`NOISE_CORRELATION_SECONDS`) so minutes look like minutes, not white noise:
- steady: `base_rps` x noise (sd `STEADY_NOISE`).
- diurnal: between `base_rps` (the night trough) and `peak_rps` (mid-afternoon local time,
  `PEAK_HOUR` + the workload's `utc_offset_hours`), a raised cosine sharpened by
  `DIURNAL_SHARPNESS` so the day is busier than the shoulders, x noise (sd `DIURNAL_NOISE`).
- bursty: `base_rps` with a mild diurnal swing (`BURSTY_DIURNAL_SWING`), plus bursts arriving
  as a Poisson process (`BURSTS_PER_HOUR`): each multiplies the rate by a log-normal factor
  (median `BURST_MEDIAN_FACTOR`, capped at `BURST_MAX_FACTOR`), ramping up over 2-10 minutes,
  holding 10-40 minutes and decaying over 5-20 minutes, x noise (sd `BURSTY_NOISE`).

GPU utilization: the simulation derives it from the capacity model (a replica at its full
throughput is 100% busy) and adds this trace's per-endpoint measurement noise (sd
`UTILIZATION_NOISE_PERCENT` points), the jitter NVML samples show.

Spot market, per region (`SPOT_PRICE_*`): the spot price multiplier is a mean-reverting
log-normal walk around 1.0 (stationary sd `SPOT_PRICE_SD`, correlation time
`SPOT_PRICE_CORRELATION_SECONDS`) applied to the catalog's spot price; the simulation caps the
result at the reserved (on-demand) price, as AWS caps spot at on-demand. Capacity crunches
arrive per region as a Poisson process (`CRUNCHES_PER_REGION_PER_DAY`), each hitting one GPU
product's spot pool in that region: the price climbs by a factor of 1.3-1.8 over the 15-45
minutes before the first reclaim and decays over the two hours after; 1-3 reclaim waves 5-30
minutes apart each take 30-100% of the pool's nodes still alive (at a random second, not on
the step grid), each announced `notice_seconds` before (`NOTICE_SECONDS`: AWS's two minutes;
30 s as on GCP and Azure); every reclaimed node returns after a log-normal outage (median
`OUTAGE_MEDIAN_MINUTES`, 15-240 minutes). Two rates: `CRUNCHES_PER_REGION_PER_DAY` (realistic:
a region's crunch picks one of its two to four GPU pools, so a pool sees one every one to two
weeks and a spot node is reclaimed a few times a month, the Spot Instance Advisor's ">20%" band
where GPU instance types sit) and `PESSIMISTIC_CRUNCHES_PER_REGION_PER_DAY` (six times that, this
benchmark's earlier default). `generate(..., availability=...)` replaces the crunches by external
traces (`bench.economics.availability`); the price walk and spikes stay.

Fleet: per region and GPU product used there, 8-GPU nodes spread round-robin over three zones.
The spot pool holds `SPOT_POOL_FACTOR` x the peak GPUs the workloads placed there could need
(a multi-region workload's need split evenly over its regions): deep enough in calm times, too
shallow to absorb a whole reclaimed region. The reserved pool holds `RESERVED_POOL_FACTOR` x
the peak: on-demand capacity that is never the bottleneck (a node autoscaler with quota stands
behind it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "CRUNCHES_PER_REGION_PER_DAY",
    "GPUS_PER_NODE",
    "GPU_MEMORY_MIB",
    "NOTICE_SECONDS",
    "PESSIMISTIC_CRUNCHES_PER_REGION_PER_DAY",
    "WORKLOADS",
    "NodeSpec",
    "Pattern",
    "Scenario",
    "SpotEvent",
    "Workload",
    "generate",
]

# The simulated day starts at midnight UTC; the warm-up, when there is one, ends there.
EPOCH: Final = datetime(2026, 3, 2, tzinfo=UTC)

NOISE_CORRELATION_SECONDS: Final = 600
STEADY_NOISE: Final = 0.05
DIURNAL_NOISE: Final = 0.07
BURSTY_NOISE: Final = 0.10
PEAK_HOUR: Final = 15.0
DIURNAL_SHARPNESS: Final = 1.5
BURSTY_DIURNAL_SWING: Final = 0.3
BURSTS_PER_HOUR: Final = 0.4
BURST_MEDIAN_FACTOR: Final = 2.5
BURST_MAX_FACTOR: Final = 6.0
UTILIZATION_NOISE_PERCENT: Final = 3.0

SPOT_PRICE_SD: Final = 0.10
SPOT_PRICE_CORRELATION_SECONDS: Final = 6 * 3600
# Realistic: a GPU pool sees a crunch every one to two weeks, so a spot node is reclaimed a few
# times a month (the EC2 Spot Instance Advisor's highest band, ">20%" a month, is where GPU
# instance types sit). Pessimistic: six times that (this benchmark's earlier default).
CRUNCHES_PER_REGION_PER_DAY: Final = 0.25
PESSIMISTIC_CRUNCHES_PER_REGION_PER_DAY: Final = 1.5
# The warning before a reclaim: AWS gives two minutes, GCP and Azure thirty seconds.
NOTICE_SECONDS: Final = 120.0
OUTAGE_MEDIAN_MINUTES: Final = 60.0

GPUS_PER_NODE: Final = 8
ZONES: Final = "abc"
SPOT_POOL_FACTOR: Final = 1.5
RESERVED_POOL_FACTOR: Final = 2.0

# nvidia.com/gpu.memory per product (MiB), as the GPU feature discovery labels them.
GPU_MEMORY_MIB: Final[Mapping[str, int]] = {
    "NVIDIA-H100-80GB-HBM3": 81559,
    "NVIDIA-A100-SXM4-80GB": 81920,
    "NVIDIA-L40S": 46068,
    "NVIDIA-L4": 23034,
}


class Pattern(StrEnum):
    STEADY = "steady"
    DIURNAL = "diurnal"
    BURSTY = "bursty"


@dataclass(frozen=True)
class Workload:
    """One InferenceEndpoint and its traffic.

    `latency_seconds`: mean request duration (a streamed completion, first byte to last), so
    in-flight requests = rate x latency (Little's law). `saturation_factor`: a replica keeps
    its p95 within the SLO up to this multiple of the rate that puts `targetInFlightRequests`
    in flight on it; beyond that requests queue and miss the SLO. `cold_start_seconds`: from
    creating a pod to Ready — a node to come up, the image, the weights into GPU memory.
    """

    name: str
    pattern: Pattern
    product: str
    gpus: int
    regions: tuple[str, ...]
    base_rps: float
    peak_rps: float
    latency_seconds: float
    cold_start_seconds: int
    min_replicas: int
    max_replicas: int
    weights_gib: int
    utc_offset_hours: float = 0.0
    target_in_flight: int = 16
    saturation_factor: float = 1.5
    # The SLO's queueing allowance before a request starts (None: half a mean request).
    wait_budget_seconds: float | None = None

    @property
    def slots(self) -> int:
        """Requests one replica serves at once (its batch): the SLO model's M/M/c servers."""
        return round(self.target_in_flight * self.saturation_factor)

    @property
    def wait_budget(self) -> float:
        if self.wait_budget_seconds is not None:
            return self.wait_budget_seconds
        return self.latency_seconds / 2

    @property
    def target_rps_per_replica(self) -> float:
        return self.target_in_flight / self.latency_seconds

    @property
    def max_rps_per_replica(self) -> float:
        """The throughput a replica serves within the SLO (the capacity model's ceiling)."""
        return self.target_rps_per_replica * self.saturation_factor

    def spec(self) -> dict[str, Any]:
        """The InferenceEndpoint spec (wire form): policy Auto and every other default."""
        return {
            "model": {"name": f"bench/{self.name}", "weightsGiB": self.weights_gib},
            "gpu": {"count": self.gpus, "products": [self.product]},
            "residency": {"regions": list(self.regions)},
            "scaling": {
                "minReplicas": self.min_replicas,
                "maxReplicas": self.max_replicas,
                "targetInFlightRequests": self.target_in_flight,
            },
        }


# Two of each pattern, across three regions and four GPU products; one EU-only (residency).
WORKLOADS: Final[tuple[Workload, ...]] = (
    Workload(
        name="chat-8b",
        pattern=Pattern.DIURNAL,
        product="NVIDIA-L40S",
        gpus=1,
        regions=("us-east-1", "us-west-2"),
        base_rps=10.0,
        peak_rps=60.0,
        latency_seconds=4.0,
        cold_start_seconds=180,
        min_replicas=2,
        max_replicas=40,
        weights_gib=16,
        utc_offset_hours=-5.0,
    ),
    Workload(
        name="rag-eu",
        pattern=Pattern.DIURNAL,
        product="NVIDIA-A100-SXM4-80GB",
        gpus=1,
        regions=("eu-west-1",),
        base_rps=3.0,
        peak_rps=20.0,
        latency_seconds=5.0,
        cold_start_seconds=240,
        min_replicas=1,
        max_replicas=20,
        weights_gib=48,
        utc_offset_hours=1.0,
    ),
    Workload(
        name="assist-70b",
        pattern=Pattern.STEADY,
        product="NVIDIA-H100-80GB-HBM3",
        gpus=4,
        regions=("us-east-1",),
        base_rps=7.0,
        peak_rps=7.0,
        latency_seconds=8.0,
        cold_start_seconds=420,
        min_replicas=2,
        max_replicas=12,
        weights_gib=140,
    ),
    Workload(
        name="embed",
        pattern=Pattern.STEADY,
        product="NVIDIA-L4",
        gpus=1,
        regions=("us-east-1", "us-west-2"),
        base_rps=40.0,
        peak_rps=40.0,
        latency_seconds=1.0,
        cold_start_seconds=120,
        min_replicas=2,
        max_replicas=20,
        weights_gib=2,
    ),
    Workload(
        name="summarize",
        pattern=Pattern.BURSTY,
        product="NVIDIA-A100-SXM4-80GB",
        gpus=1,
        regions=("us-east-1", "us-west-2"),
        base_rps=4.0,
        peak_rps=4.0,
        latency_seconds=6.0,
        cold_start_seconds=240,
        min_replicas=1,
        max_replicas=30,
        weights_gib=48,
    ),
    Workload(
        name="agents-8b",
        pattern=Pattern.BURSTY,
        product="NVIDIA-L40S",
        gpus=1,
        regions=("us-west-2",),
        base_rps=8.0,
        peak_rps=8.0,
        latency_seconds=4.0,
        cold_start_seconds=180,
        min_replicas=1,
        max_replicas=30,
        weights_gib=16,
        utc_offset_hours=-8.0,
    ),
)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    region: str
    zone: str
    product: str
    spot: bool
    gpus: int = GPUS_PER_NODE

    @property
    def memory_mib(self) -> int:
        return GPU_MEMORY_MIB[self.product]


@dataclass(frozen=True)
class SpotEvent:
    """A spot node reclaimed (`reclaim=True`) or back (`reclaim=False`) at `time_seconds`;
    a reclaim is announced `notice_seconds` before."""

    time_seconds: float
    node: str
    reclaim: bool
    # A reclaim's warning: the node is tainted (karpenter.sh/disrupted) this long before it
    # goes, and its pods serve until then. 0: no notice.
    notice_seconds: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """Everything a run replays. Per-step series cover warm-up and measured steps alike."""

    seed: int
    step_seconds: int
    warmup_steps: int
    measured_steps: int
    start: datetime
    workloads: tuple[Workload, ...]
    nodes: tuple[NodeSpec, ...]
    # requests/s per endpoint per step
    rates: Mapping[str, Sequence[float]]
    # GPU-utilization measurement noise per endpoint per step (percent points)
    utilization_noise: Mapping[str, Sequence[float]]
    # spot price multiplier per region per step (x the catalog's spot price)
    spot_price_multiplier: Mapping[str, Sequence[float]]
    events: tuple[SpotEvent, ...]

    @property
    def steps(self) -> int:
        return self.warmup_steps + self.measured_steps

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(sorted({n.region for n in self.nodes}))


def generate(
    seed: int,
    *,
    hours: float = 24.0,
    warmup_hours: float = 24.0,
    step_seconds: int = 60,
    workloads: Sequence[Workload] = WORKLOADS,
    crunches_per_region_per_day: float = CRUNCHES_PER_REGION_PER_DAY,
    notice_seconds: float = NOTICE_SECONDS,
    availability: Callable[[Sequence[NodeSpec], int, float, float], list[SpotEvent]] | None = None,
) -> Scenario:
    """The scenario for `seed`: `warmup_hours` of history-building, then `hours` measured.

    `availability`: spot reclaims and returns from external traces instead of the generated
    crunches (`availability.events`, called with the fleet, the seed, the length in seconds
    and the notice); the price walk and its spikes stay generated."""
    if step_seconds <= 0 or hours <= 0 or warmup_hours < 0:
        raise ValueError("step_seconds and hours must be positive, warmup_hours not negative")
    warmup_steps = round(warmup_hours * 3600 / step_seconds)
    measured_steps = round(hours * 3600 / step_seconds)
    steps = warmup_steps + measured_steps
    start = EPOCH.timestamp() - warmup_steps * step_seconds
    rates = {w.name: _rate_trace(seed, w, steps, step_seconds, start) for w in workloads}
    noise = {
        w.name: _gaussian(random.Random(f"{seed}:util:{w.name}"), steps, UTILIZATION_NOISE_PERCENT)
        for w in workloads
    }
    nodes = _fleet(workloads, rates)
    regions = sorted({n.region for n in nodes})
    prices: dict[str, list[float]] = {}
    events: list[SpotEvent] = []
    for region in regions:
        multiplier = _price_walk(random.Random(f"{seed}:price:{region}"), steps, step_seconds)
        pools = _spot_pools(nodes, region)
        rng = random.Random(f"{seed}:crunch:{region}")
        total = steps * step_seconds
        for crunch_at in _poisson_times(rng, crunches_per_region_per_day / 86400, total):
            product = rng.choice(sorted(pools))
            if availability is None:
                events += _crunch(rng, pools[product], crunch_at, total, notice_seconds)
            _spike(rng, multiplier, crunch_at / step_seconds, step_seconds)
        prices[region] = multiplier
    if availability is not None:
        events = availability(nodes, seed, steps * step_seconds, notice_seconds)
    events.sort(key=lambda e: (e.time_seconds, e.node))
    return Scenario(
        seed=seed,
        step_seconds=step_seconds,
        warmup_steps=warmup_steps,
        measured_steps=measured_steps,
        start=datetime.fromtimestamp(start, tz=UTC),
        workloads=tuple(workloads),
        nodes=nodes,
        rates={k: tuple(v) for k, v in rates.items()},
        utilization_noise={k: tuple(v) for k, v in noise.items()},
        spot_price_multiplier={k: tuple(v) for k, v in prices.items()},
        events=tuple(events),
    )


def history(
    seed: int,
    nodes: Sequence[NodeSpec],
    *,
    days: float,
    crunches_per_region_per_day: float = CRUNCHES_PER_REGION_PER_DAY,
) -> list[tuple[float, str, str]]:
    """The spot reclaims of the `days` before a run, from the same market process as `generate`
    (Poisson crunches per region, each on one GPU pool, in 1-3 waves) on an independent random
    stream: `(seconds from the history's start, node, pool)`, the pool named `region/product`
    as the operator names it. What an operator that had watched the fleet that long would have
    counted, if every spot node it lost held a replica (an over-count: it errs towards
    reserved). A node is named per reclaim (`node~seconds`): one that came back is a new node
    to the operator, as a node an autoscaler launches again has a new name."""
    total = days * 86400
    reclaims: list[tuple[float, str, str]] = []
    if total <= 0 or crunches_per_region_per_day <= 0:
        return reclaims
    for region in sorted({n.region for n in nodes}):
        pools = _spot_pools(nodes, region)
        if not pools:
            continue
        rng = random.Random(f"{seed}:history:{region}")
        for crunch_at in _poisson_times(rng, crunches_per_region_per_day / 86400, total):
            product = rng.choice(sorted(pools))
            for event in _crunch(rng, pools[product], crunch_at, total):
                if event.reclaim:
                    fresh = f"{event.node}~{event.time_seconds:.0f}"
                    reclaims.append((event.time_seconds, fresh, f"{region}/{product}"))
    return sorted(reclaims)


def _spot_pools(nodes: Sequence[NodeSpec], region: str) -> dict[str, list[str]]:
    """The spot nodes of `region` by GPU product: the pools a crunch picks from."""
    pools: dict[str, list[str]] = {}
    for node in nodes:
        if node.region == region and node.spot:
            pools.setdefault(node.product, []).append(node.name)
    return pools


def _rate_trace(
    seed: int, workload: Workload, steps: int, step_seconds: int, start: float
) -> list[float]:
    rng = random.Random(f"{seed}:rate:{workload.name}")
    sd = {
        Pattern.STEADY: STEADY_NOISE,
        Pattern.DIURNAL: DIURNAL_NOISE,
        Pattern.BURSTY: BURSTY_NOISE,
    }[workload.pattern]
    noise = _ar1(rng, steps, sd, step_seconds, NOISE_CORRELATION_SECONDS)
    bursts = (
        _bursts(random.Random(f"{seed}:burst:{workload.name}"), steps, step_seconds)
        if workload.pattern is Pattern.BURSTY
        else [1.0] * steps
    )
    out = []
    for i in range(steps):
        hour = ((start + i * step_seconds) / 3600 + workload.utc_offset_hours) % 24
        # 0 at the local trough (PEAK_HOUR - 12), 1 at the peak.
        day = (0.5 - 0.5 * math.cos(2 * math.pi * (hour - PEAK_HOUR + 12) / 24)) ** (
            DIURNAL_SHARPNESS
        )
        if workload.pattern is Pattern.DIURNAL:
            level = workload.base_rps + (workload.peak_rps - workload.base_rps) * day
        elif workload.pattern is Pattern.BURSTY:
            level = workload.base_rps * (1 - BURSTY_DIURNAL_SWING / 2 + BURSTY_DIURNAL_SWING * day)
        else:
            level = workload.base_rps
        out.append(level * math.exp(noise[i]) * bursts[i])
    return out


def _bursts(rng: random.Random, steps: int, step_seconds: int) -> list[float]:
    factor = [1.0] * steps
    total = steps * step_seconds
    for at in _poisson_times(rng, BURSTS_PER_HOUR / 3600, total):
        height = min(BURST_MAX_FACTOR, BURST_MEDIAN_FACTOR * math.exp(rng.gauss(0, 0.4)))
        ramp = rng.uniform(120, 600)
        hold = rng.uniform(600, 2400)
        decay = rng.uniform(300, 1200)
        for i in range(int(at // step_seconds), steps):
            dt = i * step_seconds - at
            if dt < 0:
                continue
            if dt < ramp:
                shape = dt / ramp
            elif dt < ramp + hold:
                shape = 1.0
            elif dt < ramp + hold + decay:
                shape = 1 - (dt - ramp - hold) / decay
            else:
                break
            # Overlapping bursts do not multiply: the larger one sets the level.
            factor[i] = max(factor[i], 1 + (height - 1) * shape)
    return factor


def _price_walk(rng: random.Random, steps: int, step_seconds: int) -> list[float]:
    logs = _ar1(rng, steps, SPOT_PRICE_SD, step_seconds, SPOT_PRICE_CORRELATION_SECONDS)
    return [math.exp(x) for x in logs]


def _spike(rng: random.Random, multiplier: list[float], at_step: float, step_seconds: int) -> None:
    """Multiply the price around a crunch: up over 15-45 min before it, back over two hours."""
    height = rng.uniform(1.3, 1.8)
    before = rng.uniform(900, 2700) / step_seconds
    after = 7200 / step_seconds
    for i in range(len(multiplier)):
        d = i - at_step
        if -before <= d < 0:
            multiplier[i] *= 1 + (height - 1) * (1 + d / before)
        elif 0 <= d < after:
            multiplier[i] *= 1 + (height - 1) * (1 - d / after)


def _crunch(
    rng: random.Random, pool: Sequence[str], at: float, total: float, notice: float = 0.0
) -> list[SpotEvent]:
    """Reclaim waves on one spot pool starting at `at`, and each reclaimed node's return."""
    events: list[SpotEvent] = []
    alive = list(pool)
    when = at
    for _ in range(rng.randint(1, 3)):
        if when >= total or not alive:
            break
        taken = rng.sample(alive, max(1, round(len(alive) * rng.uniform(0.3, 1.0))))
        for node in sorted(taken):
            events.append(SpotEvent(when, node, reclaim=True, notice_seconds=notice))
            outage = min(240.0, max(15.0, OUTAGE_MEDIAN_MINUTES * math.exp(rng.gauss(0, 0.6))))
            if when + outage * 60 < total:
                events.append(SpotEvent(when + outage * 60, node, reclaim=False))
            alive.remove(node)
        when += rng.uniform(300, 1800)
    return events


def _fleet(
    workloads: Sequence[Workload], rates: Mapping[str, Sequence[float]]
) -> tuple[NodeSpec, ...]:
    peak: dict[tuple[str, str], float] = {}
    for w in workloads:
        need = min(
            w.max_replicas,
            math.ceil(max(rates[w.name]) * w.latency_seconds / w.target_in_flight),
        )
        for region in w.regions:
            key = (region, w.product)
            peak[key] = peak.get(key, 0.0) + need * w.gpus / len(w.regions)
    nodes: list[NodeSpec] = []
    for (region, product), gpus in sorted(peak.items()):
        short = product.removeprefix("NVIDIA-").split("-")[0].lower()
        for spot, factor in ((True, SPOT_POOL_FACTOR), (False, RESERVED_POOL_FACTOR)):
            kind = "spot" if spot else "reserved"
            count = max(1, math.ceil(gpus * factor / GPUS_PER_NODE))
            nodes += [
                NodeSpec(
                    f"{short}-{kind}-{region}-{i}", region, f"{region}{ZONES[i % 3]}", product, spot
                )
                for i in range(count)
            ]
    return tuple(nodes)


def _ar1(
    rng: random.Random, steps: int, sd: float, step_seconds: int, correlation_seconds: float
) -> list[float]:
    """A stationary AR(1) series with standard deviation `sd` and the given correlation time."""
    phi = math.exp(-step_seconds / correlation_seconds)
    innovation = sd * math.sqrt(1 - phi * phi)
    x = rng.gauss(0, sd)
    out = []
    for _ in range(steps):
        out.append(x)
        x = phi * x + rng.gauss(0, innovation)
    return out


def _gaussian(rng: random.Random, steps: int, sd: float) -> list[float]:
    return [rng.gauss(0, sd) for _ in range(steps)]


def _poisson_times(rng: random.Random, rate_per_second: float, total: float) -> list[float]:
    times = []
    at = rng.expovariate(rate_per_second)
    while at < total:
        times.append(at)
        at += rng.expovariate(rate_per_second)
    return times
