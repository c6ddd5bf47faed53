"""The placement planner: how many of an endpoint's replicas run on spot and how many on reserved
capacity, in which regions, on which nodes preferably, and why — the heart of the product.

Owns: the decision `plan(...) -> Placement` and its rules — allowed regions (residency), GPU fit,
usable capacity per pool, the split per capacity policy (`Auto`'s inputs: the endpoint's load and
its spot pools; the interruption-budget rule itself is `placement.budget`), spot loss and the
hysteresis of the return to spot, hot-node avoidance and node preference, and the one-line
reason. Must not: do I/O, read the clock (`now` is a parameter), import Kopf or any client, or
parse Kubernetes objects (`placement.fleet` builds the snapshot it reads).

Every output is a function of the inputs only and every collection is sorted, so equal inputs
give equal placements and the controller can compare plans to decide whether anything changed.

Capacity shortfalls never change the replica count: when the pools cannot hold `desired`, the
placement still asks for `desired` (spot + reserved == desired) and reports `placed=False` with
`InsufficientCapacity` or `InsufficientSpotCapacity`. The replicas the cluster cannot hold stay
Pending, which is what makes a node autoscaler (Karpenter, cluster-autoscaler) add capacity and
what lets them start the moment capacity returns. Only the two spec problems, `NoAllowedRegion`
and `NoFittingGPU`, place nothing (spot = reserved = 0): no capacity will ever satisfy them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Final

from tidal.api import telemetry
from tidal.api.endpoint import (
    TARGET_LOAD_SHARE,
    CapacityPolicy,
    InferenceEndpointSpec,
    Quantization,
)
from tidal.api.labels import CapacityType
from tidal.api.podtemplate import PodSpecOverrides, Toleration
from tidal.api.wire import format_time
from tidal.placement import budget
from tidal.placement.fleet import blocking_taints, selects, untolerated
from tidal.placement.model import (
    Constraints,
    EndpointPods,
    FleetSnapshot,
    History,
    NodeInfo,
    Placement,
    ProvisionablePool,
    SpotHealth,
    SpotRisk,
)

__all__ = [
    "AUTO_LOAD_WINDOW_SECONDS",
    "AUTO_MIN_HISTORY_SAMPLES",
    "MAX_PREFERRED_NODES",
    "MEMORY_OVERHEAD",
    "NEUTRAL_WEIGHT",
    "QUANTIZATION_FACTOR",
    "SPOT_PENDING_SECONDS",
    "UNLIMITED_SLOTS",
    "MeasuredLoad",
    "allowed_regions",
    "measured_load",
    "model_memory_mib",
    "node_utilization",
    "plan",
    "required_gpu_memory_mib",
    "spot_pools",
]

# Weights shrink with quantization relative to the 16-bit (BF16/FP16) checkpoint that
# `weightsGiB` describes.
QUANTIZATION_FACTOR: Final[dict[Quantization, Fraction]] = {
    Quantization.None_: Fraction(1),
    Quantization.FP8: Fraction(1, 2),
    Quantization.INT8: Fraction(1, 2),
    Quantization.INT4: Fraction(1, 4),
}
# Weights alone do not serve: the KV cache, activations and the CUDA context need room too.
# 20% is the least an engine needs to answer one request at moderate context; a model that fits
# only without it would be refused by vLLM/TGI at start-up anyway.
MEMORY_OVERHEAD: Final = Fraction(6, 5)

# Auto judges the load the endpoint's replicas are sized for, `desired x TARGET_LOAD_SHARE`
# saturations, or less where its GPU load (replicas x mean utilization, 100% = saturated) has
# peaked lower over the last hour: an endpoint its minReplicas holds up while idle loses
# nothing to a reclaim. An hour is long enough to cover a burst's return, short enough that a
# day's quiet hours do not count for its busy ones. Fewer samples than this in it (5-minute
# buckets: under ~25 minutes) measure nothing, and the sized-for load is used.
AUTO_LOAD_WINDOW_SECONDS: Final = 3600
AUTO_MIN_HISTORY_SAMPLES: Final = 6

# Spot pods unscheduled for longer than this count as spot loss (the controller applies it when
# it fills `SpotHealth.pending_spot_pods`). Long enough for the scheduler and a node autoscaler's
# first attempt, short enough that a reclaimed region recovers within minutes.
SPOT_PENDING_SECONDS: Final = 180

# Preferred-affinity weights come in bands of this many utilization points: the weights are part
# of the pod template, and a weight that followed every percent would roll the Deployments out
# on every telemetry tick.
_WEIGHT_BAND_PERCENT: Final = 20
# Unknown telemetry is neither attractive nor repellent: the middle of the 1-100 range.
NEUTRAL_WEIGHT: Final = 50
# A Deployment needs its best nodes, not the whole fleet, in its template.
MAX_PREFERRED_NODES: Final = 64
# The replica slots of a pool an autoscaler can grow without a GPU limit: more than any endpoint
# asks for (maxReplicas is bounded far below), so "unlimited" needs no special case.
UNLIMITED_SLOTS: Final = 1_000_000
# Node names listed in the one-line reason before "and N more".
_REASON_NODES: Final = 3
# status.placement.reason's schema bound.
_REASON_MAX: Final = 1024

_NO_CONSTRAINTS: Final = Constraints()
_NO_SPOT_TROUBLE: Final = SpotHealth()
_NO_PODS: Final = EndpointPods()
_NO_RISK: Final = SpotRisk()


@dataclass(frozen=True)
class MeasuredLoad:
    """The endpoint's GPU load as Auto reads it: the peak `load` (replica saturations) of the
    last `AUTO_LOAD_WINDOW_SECONDS` (None: too few samples to say), over `samples` samples
    spanning `span_seconds`."""

    load: float | None
    samples: int
    span_seconds: int


@dataclass(frozen=True)
class _Candidate:
    """A usable, fitting node in an allowed region, with the replica slots it offers."""

    node: NodeInfo
    slots: int
    utilization: float | None
    hot: bool


@dataclass(frozen=True)
class _Pool:
    """One capacity type's room: the slots of existing nodes (`candidates`), and the slots node
    autoscalers can still add (`provisionable`, from the pools named in `sources`)."""

    capacity: CapacityType
    candidates: tuple[_Candidate, ...]
    provisionable: int = 0
    sources: tuple[str, ...] = ()

    @property
    def cool(self) -> int:
        """Slots on existing nodes that are not hot (what lets hot nodes be avoided)."""
        return sum(c.slots for c in self.candidates if not c.hot)

    @property
    def existing(self) -> int:
        return sum(c.slots for c in self.candidates)

    @property
    def total(self) -> int:
        return min(UNLIMITED_SLOTS, self.existing + self.provisionable)


@dataclass(frozen=True)
class _Episode:
    """A spot loss episode: lost since, and healthy again since (None while still lost)."""

    lost_since: datetime | None = None
    recovered_since: datetime | None = None


def allowed_regions(spec: InferenceEndpointSpec, constraints: Constraints) -> tuple[str, ...]:
    """spec.residency.regions ∩ the namespace policy ∩ the paired collection's regions, sorted."""
    regions = set(spec.residency.regions)
    if constraints.namespace_regions is not None:
        regions &= constraints.namespace_regions
    if constraints.collection_regions is not None:
        regions &= constraints.collection_regions
    return tuple(sorted(regions))


def model_memory_mib(spec: InferenceEndpointSpec) -> int | None:
    """GPU memory the model needs across one replica's GPUs, or None when weightsGiB is unset."""
    weights = spec.model.weights_gib
    if weights is None:
        return None
    need = weights * 1024 * QUANTIZATION_FACTOR[spec.model.quantization] * MEMORY_OVERHEAD
    return math.ceil(need)


def required_gpu_memory_mib(spec: InferenceEndpointSpec) -> int | None:
    """The least memory each GPU must have: `gpu.minMemoryMiB` raised to the model's share.

    Engines shard the weights evenly over a replica's GPUs (tensor parallelism), so each GPU
    needs its `1/count` of the model.
    """
    floors = [spec.gpu.min_memory_mib]
    model = model_memory_mib(spec)
    if model is not None:
        floors.append(math.ceil(Fraction(model, spec.gpu.count)))
    known = [f for f in floors if f is not None]
    return max(known) if known else None


def node_utilization(
    node: NodeInfo, now: datetime, exclude: Set[tuple[str, str]] = frozenset()
) -> float | None:
    """Mean GPU utilization of the node at `now`, leaving out GPUs held by the `exclude` pods.

    None when the telemetry is missing or stale, or no remaining GPU reported a number. An
    endpoint's own replicas are excluded so its own load never makes it flee a node (and, with
    the capacity gone, shrink spot, cool the node, come back, and flap).
    """
    doc = node.telemetry
    if doc is None or now - doc.time > timedelta(seconds=telemetry.STALE_AFTER_SECONDS):
        return None
    if exclude.isdisjoint(node.telemetry_pods):
        return node.gpu_utilization_percent  # nothing to leave out: the node's own mean
    held = {i for pod in doc.pods if (pod.namespace, pod.name) in exclude for i in pod.gpu_indexes}
    known = [
        g.utilization_percent
        for g in doc.gpus
        if g.utilization_percent is not None and g.index not in held
    ]
    return sum(known) / len(known) if known else None


def measured_load(history: History, now: datetime) -> MeasuredLoad:
    """The peak GPU load of the last `AUTO_LOAD_WINDOW_SECONDS`, in replica saturations.

    Load per sample is `replicas x utilization / 100`: a replica at 100% GPU is saturated, the
    unit `tidal.api.endpoint.TARGET_LOAD_SHARE` counts in. Samples after `now` are ignored;
    fewer than `AUTO_MIN_HISTORY_SAMPLES` leave `load` None.
    """
    start = now - timedelta(seconds=AUTO_LOAD_WINDOW_SECONDS)
    recent = sorted((s for s in history.samples if start <= s.time <= now), key=lambda s: s.time)
    span = int((recent[-1].time - recent[0].time).total_seconds()) if recent else 0
    if len(recent) < AUTO_MIN_HISTORY_SAMPLES:
        return MeasuredLoad(None, len(recent), span)
    # Rounded: float noise in a load like 1.6000000000000001 must not buy a replica.
    peak = max(round(s.replicas * s.utilization_percent / 100, 6) for s in recent)
    return MeasuredLoad(peak, len(recent), span)


def spot_pools(
    spec: InferenceEndpointSpec,
    fleet: FleetSnapshot,
    now: datetime,
    *,
    constraints: Constraints = _NO_CONSTRAINTS,
    own: EndpointPods = _NO_PODS,
    risk: SpotRisk = _NO_RISK,
) -> tuple[budget.SpotPool, ...]:
    """The independent spot pools (region x GPU product) the endpoint's spot replicas may use,
    with their room and reclaim rate; sorted by name. (The planner's own view, for callers
    that want to show or record it.)"""
    regions = allowed_regions(spec, constraints)
    fitting, _ = _fitting(spec, [n for n in fleet.nodes if n.region in regions])
    limit = spec.capacity.max_node_gpu_utilization_percent
    pools = _pools(spec, fitting, now, limit, own, {})
    return _spot_markets(spec, pools[CapacityType.SPOT], fleet.provisionable, regions, risk)


def plan(
    spec: InferenceEndpointSpec,
    fleet: FleetSnapshot,
    history: History,
    now: datetime,
    *,
    desired: int,
    constraints: Constraints = _NO_CONSTRAINTS,
    spot_health: SpotHealth = _NO_SPOT_TROUBLE,
    previous: Placement | None = None,
    own: EndpointPods = _NO_PODS,
    risk: SpotRisk = _NO_RISK,
) -> Placement:
    """Decide the spot/reserved mix of `desired` replicas and where they may run.

    Inputs beyond the spec and the snapshot:
    - `history`: the endpoint's GPU utilization (`placement.history`), read only by Auto.
    - `constraints`: the namespace policy and the paired collection's regions.
    - `spot_health`: spot pods stuck Pending, and the loss episode the previous plan returned
      (`spot_lost_since`, `spot_recovered_since`), persisted by the controller.
    - `previous`: the placement applied now (rebuilt from status.replicas is enough: only its
      `spot` is read), the level spot may not exceed while a loss episode lasts. Without it
      the hold cannot bound anything.
    - `own`: the endpoint's own pods, whose GPUs stay available to it.
    - `risk`: what Auto's interruption budget reads beyond the fleet: the reclaim prior, the
      reclaims observed per spot pool, the endpoint's last cold start.

    Policies:
    - ReservedOnly: every replica on reserved.
    - SpotOnly: every replica on spot, always. It never falls back to reserved (that is the
      policy's promise) and ignores maxSpotPercent; replicas the spot pool cannot hold stay
      Pending and the placement says `InsufficientSpotCapacity`.
    - SpotPreferred: spot up to floor(desired x maxSpotPercent / 100), at least
      minReservedReplicas on reserved, spot shrunk to what the spot pool can hold, the rest on
      reserved.
    - Auto: as SpotPreferred, with reserved raised to the smallest floor whose expected
      interruption loss stays within `capacity.interruptionBudgetPercent`
      (`placement.budget.reserved_floor`), judged on the endpoint's load (`measured_load`, else
      what `desired` is sized for) and its spot pools (`spot_pools`); where more than one
      region is allowed, spot is spread over them evenly (`Placement.spread_spot`).

    Spot loss (flexible policies only): when the spot pool holds fewer replicas than the policy
    wants, or spot pods stay unscheduled, the missing spot replicas move to reserved and a loss
    episode starts (`spot_lost_since`). When spot first looks healthy again the plan records
    it (`spot_recovered_since`) and keeps spot at most at `previous.spot` until it has stayed
    healthy for `spot_health.return_after_seconds`; a new loss meanwhile restarts that wait.
    """
    if desired < 0:
        raise ValueError(f"desired replicas must not be negative, got {desired}")
    capacity = spec.capacity
    policy = capacity.policy
    regions = allowed_regions(spec, constraints)
    if not regions:
        return Placement(
            desired=desired,
            spot=0,
            reserved=0,
            allowed_regions=(),
            placed=False,
            placed_reason="NoAllowedRegion",
            reason=_clip(_no_region_reason(spec, constraints)),
            spot_lost_since=spot_health.lost_since,
            spot_recovered_since=spot_health.recovered_since,
        )

    in_regions = [n for n in fleet.nodes if n.region in regions]
    fitting, misfit = _fitting(spec, in_regions)
    elastic = _provisionable(spec, fleet.provisionable, regions)
    if not fitting and not elastic:
        unfit = _unfit_pools(spec, fleet.provisionable, regions)
        return Placement(
            desired=desired,
            spot=0,
            reserved=0,
            allowed_regions=(),
            placed=False,
            placed_reason="NoFittingGPU",
            reason=_clip(f"no GPU in {', '.join(regions)} fits: {misfit}{unfit}"),
            spot_lost_since=spot_health.lost_since,
            spot_recovered_since=spot_health.recovered_since,
            min_gpu_memory_mib=required_gpu_memory_mib(spec),
        )

    limit = capacity.max_node_gpu_utilization_percent
    pools = _pools(spec, fitting, now, limit, own, elastic)
    spot_pool, reserved_pool = pools[CapacityType.SPOT], pools[CapacityType.RESERVED]
    notes: list[str] = []

    # The fixed policies never move replicas on spot loss, so they keep no episode.
    episode = _Episode()
    spread = False
    if policy is CapacityPolicy.ReservedOnly:
        spot, headline = 0, "policy ReservedOnly"
    elif policy is CapacityPolicy.SpotOnly:
        spot, headline = desired, "policy SpotOnly"
    else:
        markets = _spot_markets(spec, spot_pool, fleet.provisionable, regions, risk)
        spread = _spreads(policy, regions)
        target, headline = _flexible_target(spec, history, now, desired, markets, risk, spread)
        spot, episode = _spot_after_loss(target, spot_pool.total, spot_health, previous, now, notes)
    reserved = desired - spot

    preferred, avoided = _nodes_for(((spot_pool, spot), (reserved_pool, reserved)), limit, notes)

    placed, placed_reason = True, "Placed"
    if spot > spot_pool.total:
        # Only SpotOnly gets here: the flexible policies never ask spot for more than it holds.
        placed, placed_reason = False, "InsufficientSpotCapacity"
        notes.append(
            f"spot pool holds {spot_pool.total} of {spot}, the rest wait for spot capacity"
        )
    if reserved > reserved_pool.total:
        placed, placed_reason = False, "InsufficientCapacity"
        notes.append(
            f"reserved pool holds {reserved_pool.total} of {reserved}, the rest wait for capacity"
        )
    if avoided:
        notes.append(f"avoided {_hot_list(avoided, limit)}")

    mix = f"{spot} spot, {reserved} reserved in {', '.join(regions)}: {headline}"
    return Placement(
        desired=desired,
        spot=spot,
        reserved=reserved,
        allowed_regions=regions,
        preferred_nodes=_preferences(preferred),
        avoided_nodes=tuple(sorted(c.node.name for c in avoided)),
        placed=placed,
        placed_reason=placed_reason,
        reason=_clip("; ".join([mix, *notes])),
        spot_lost_since=episode.lost_since,
        spot_recovered_since=episode.recovered_since,
        min_gpu_memory_mib=required_gpu_memory_mib(spec),
        spread_spot=spread,
    )


def _nodes_for(
    wants: Iterable[tuple[_Pool, int]], limit: int, notes: list[str]
) -> tuple[list[_Candidate], list[_Candidate]]:
    """The nodes each pool's replicas should prefer and avoid: hot nodes are avoided while the
    cool ones hold every replica; what existing nodes cannot hold waits for the autoscaler."""
    avoided: list[_Candidate] = []
    preferred: list[_Candidate] = []
    for pool, wanted in wants:
        if wanted == 0:
            continue
        hot = [c for c in pool.candidates if c.hot and c.slots > 0]
        cool = [c for c in pool.candidates if not c.hot and c.slots > 0]
        if wanted <= pool.cool:
            avoided += hot
            preferred += cool
        else:
            preferred += cool + hot
            if hot:
                notes.append(f"only hot {pool.capacity} nodes left: using {_hot_list(hot, limit)}")
        if wanted > pool.existing and pool.provisionable > 0:
            added = min(wanted, pool.total) - pool.existing
            notes.append(f"{added} {pool.capacity} to be provisioned by {', '.join(pool.sources)}")
    return preferred, avoided


def _flexible_target(
    spec: InferenceEndpointSpec,
    history: History,
    now: datetime,
    desired: int,
    markets: Sequence[budget.SpotPool],
    risk: SpotRisk,
    spread: bool,
) -> tuple[int, str]:
    """Spot replicas SpotPreferred/Auto want before looking at the spot pool, and the headline."""
    capacity = spec.capacity
    spot_cap = desired * capacity.max_spot_percent // 100
    bounds = {
        "maxSpotPercent": desired - spot_cap,
        "minReservedReplicas": min(capacity.min_reserved_replicas, desired),
    }
    lower = max(bounds.values())
    headline = "SpotPreferred"
    auto = capacity.policy is CapacityPolicy.Auto
    reserved = lower
    if auto:
        floor, headline = _auto_floor(spec, history, now, desired, lower, markets, risk, spread)
        reserved = floor.reserved
    # Name the spec bounds that set the reserved count (the budget's floor is in the headline).
    binding = []
    if bounds["maxSpotPercent"] == reserved > 0:
        binding.append(f"capped by maxSpotPercent={capacity.max_spot_percent}")
    if bounds["minReservedReplicas"] == reserved > 0:
        binding.append(f"minReservedReplicas={capacity.min_reserved_replicas} on reserved")
    if binding:
        headline += (" " if not auto else "; ") + ", ".join(binding)
    return desired - reserved, headline


def _auto_floor(
    spec: InferenceEndpointSpec,
    history: History,
    now: datetime,
    desired: int,
    lower: int,
    markets: Sequence[budget.SpotPool],
    risk: SpotRisk,
    spread: bool,
) -> tuple[budget.Floor, str]:
    """Auto's reserved floor (`placement.budget`) and the headline that explains it."""
    capacity = spec.capacity
    sized = float(desired * TARGET_LOAD_SHARE)
    measured = measured_load(history, now)
    if measured.load is not None and measured.load < sized:
        load = measured.load
        source = f"peak GPU load {load:.2f} over {_duration(measured.span_seconds)}"
    else:
        load = sized
        source = f"load {load:.2f} (what {desired} replicas are sized for)"
    recovery = budget.recovery_seconds(risk.start_seconds, risk.prior)
    floor = budget.reserved_floor(
        desired=desired,
        lower=lower,
        load=load,
        pools=markets,
        recovery=recovery,
        budget=capacity.interruption_budget,
        spread=spread,
    )
    headline = (
        f"Auto within interruption budget {capacity.interruption_budget_percent}%: "
        f"{floor.reserved} reserved for {source}, recovery {recovery:g}s"
        f" ({_recovery_terms(risk)})"
    )
    if floor.largest_pool is not None:
        rate = next(m.reclaims_per_hour for m in markets if m.name == floor.largest_pool)
        keeps = "carries" if floor.survives_largest else "cannot carry"
        headline += (
            f"; losing the largest spot pool {floor.largest_pool} ({floor.largest_held} spot, "
            f"{rate:.3g} reclaims/h), the rest {keeps} the load; expected loss "
            f"{floor.expected_loss * 100:.4f}% of requests"
        )
    elif markets and floor.reserved == desired > 0:
        riskiest = max(markets, key=lambda m: (m.reclaims_per_hour, m.name))
        headline += (
            f"; any replica on spot would cost more (riskiest pool {riskiest.name}, "
            f"{riskiest.reclaims_per_hour:.3g} reclaims/h)"
        )
    elif desired > floor.reserved:
        headline += "; no spot pool known yet, nothing to lose"
    if spread and desired > floor.reserved:
        headline += f"; spot spread evenly over {len({m.region for m in markets})} regions"
    return floor, headline


def _recovery_terms(risk: SpotRisk) -> str:
    """What the recovery is made of, for the reason: the start it counts and where it is from."""
    prior = risk.prior
    measured = risk.measured_start
    if measured is not None:
        start = f"{measured[1]} {measured[0]:g}s measured"
    else:
        start = f"start {prior.cold_start_seconds:g}s assumed"
    terms = f"detection {prior.detection_seconds:g}s + {start}"
    if prior.notice_seconds:
        terms += f" - notice {prior.notice_seconds:g}s"
    return terms


def _spot_after_loss(
    target: int,
    spot_room: int,
    health: SpotHealth,
    previous: Placement | None,
    now: datetime,
    notes: list[str],
) -> tuple[int, _Episode]:
    """Shrink spot to what it can hold now and hold it down after a loss, until spot has been
    healthy for `health.return_after_seconds`. Returns spot and the loss episode's state."""
    spot = min(target, spot_room)
    if spot < target:
        notes.append(f"spot pool holds only {spot_room}: {target - spot} moved to reserved")
    lost = spot < target
    pending = max(0, health.pending_spot_pods)
    if pending:
        lost = True
        running = (previous.spot if previous is not None else spot) - pending
        if running < spot:
            why = (
                f"cannot be provisioned ({health.provision_failure})"
                if health.provision_failure
                else f"unscheduled > {health.pending_after_seconds:g}s"
            )
            notes.append(f"{pending} spot pods {why}: {spot - max(0, running)} moved to reserved")
            spot = max(0, running)

    # The episode's timestamps change only when its state does (lost, healthy again, over):
    # the controller persists them, and a value that moved on every reconcile would be a
    # write, and a wake-up of the update handlers, on every reconcile.
    lost_since = health.lost_since
    if lost:
        episode = _Episode(lost_since=lost_since or now, recovered_since=None)
    elif lost_since is None:
        return spot, _Episode()
    else:
        recovered_since = health.recovered_since or now
        if now - recovered_since >= timedelta(seconds=max(0, health.return_after_seconds)):
            return spot, _Episode()
        episode = _Episode(lost_since=lost_since, recovered_since=recovered_since)
    if previous is not None and previous.spot < spot:
        healthy = (
            f", healthy since {format_time(episode.recovered_since)}"
            if episode.recovered_since is not None
            else ""
        )
        notes.append(
            f"spot stays at {previous.spot} until healthy for "
            f"{_duration(max(0, health.return_after_seconds))} "
            f"(lost since {format_time(episode.lost_since or now)}{healthy})"
        )
        spot = previous.spot
    return spot, episode


def _spot_markets(
    spec: InferenceEndpointSpec,
    spot_pool: _Pool,
    provisionable: Sequence[ProvisionablePool],
    regions: Sequence[str],
    risk: SpotRisk,
) -> tuple[budget.SpotPool, ...]:
    """The spot pools (region x GPU product) with their room: free slots on existing spot nodes
    plus what a fitting autoscaler pool may add there (its room counted in every market it
    may serve: the most this endpoint could end up holding in each)."""
    rooms: dict[tuple[str, str], int] = {}
    for candidate in spot_pool.candidates:
        node = candidate.node
        if node.region is None:
            continue
        key = (node.region, node.gpu_product or "unlabelled")
        rooms[key] = rooms.get(key, 0) + candidate.slots
    wanted = set(spec.gpu.products)
    for pool in provisionable:
        if pool.capacity_type is not CapacityType.SPOT or _pool_misfit(spec, pool, regions):
            continue
        slots = UNLIMITED_SLOTS if pool.gpu_room is None else pool.gpu_room // spec.gpu.count
        where = sorted(set(regions) & pool.regions) if pool.regions is not None else regions
        if pool.gpu_products is not None:
            products = sorted(pool.gpu_products & wanted if wanted else pool.gpu_products)
        else:
            products = sorted(wanted) or ["any"]
        for region in where:
            for product in products:
                key = (region, product)
                rooms[key] = min(UNLIMITED_SLOTS, rooms.get(key, 0) + slots)
    return tuple(
        budget.SpotPool(
            name=f"{region}/{product}",
            region=region,
            room=room,
            reclaims_per_hour=budget.reclaim_rate(
                risk.reclaims.get(
                    f"{region}/{product}", budget.Reclaims(episodes=0, hours=risk.watched_hours)
                ),
                risk.prior,
            ),
        )
        for (region, product), room in sorted(rooms.items())
    )


def _spreads(policy: CapacityPolicy, regions: Sequence[str]) -> bool:
    """Auto spreads spot evenly over the allowed regions (a hard topology spread on the spot
    Deployment), so that losing one region's spot loses only its share. Decided from the spec,
    not from which regions have spot now: the spread is in the pod template, and a template
    that followed the fleet would roll every spot replica when a region is reclaimed. A
    region without spot nodes is no topology domain, so it holds nothing back."""
    return policy is CapacityPolicy.Auto and len(regions) > 1


def _fitting(spec: InferenceEndpointSpec, nodes: Sequence[NodeInfo]) -> tuple[list[NodeInfo], str]:
    """Nodes whose GPUs can run one replica at all (ignoring what is free now), or why none."""
    gpu = spec.gpu
    candidates = [n for n in nodes if n.gpu_allocatable > 0]
    if not candidates:
        return [], "no node there has nvidia.com/gpu"
    if gpu.products:
        wanted = set(gpu.products)
        found = sorted({n.gpu_product or "unlabelled" for n in candidates})
        candidates = [n for n in candidates if n.gpu_product in wanted]
        if not candidates:
            return [], (
                f"gpu.products {', '.join(sorted(wanted))} not found (there: {', '.join(found)})"
            )
    most = max(n.gpu_allocatable for n in candidates)
    candidates = [n for n in candidates if n.gpu_allocatable >= gpu.count]
    if not candidates:
        return [], f"gpu.count {gpu.count} exceeds the most GPUs on one node ({most})"
    if gpu.min_memory_mib is not None:
        largest = _largest_gpu(candidates)
        candidates = [n for n in candidates if (n.gpu_memory_mib or 0) >= gpu.min_memory_mib]
        if not candidates:
            return [], f"gpu.minMemoryMiB {gpu.min_memory_mib} exceeds the largest GPU ({largest})"
    model = model_memory_mib(spec)
    if model is not None:
        per_gpu = math.ceil(Fraction(model, gpu.count))
        largest_node = max(candidates, key=lambda n: (n.gpu_memory_mib or 0, n.name))
        candidates = [n for n in candidates if (n.gpu_memory_mib or 0) >= per_gpu]
        if not candidates:
            quantization = spec.model.quantization
            return [], (
                f"model needs {_gib(model)} (weightsGiB {spec.model.weights_gib} at "
                f"{quantization.value} x{_factor(QUANTIZATION_FACTOR[quantization])} "
                f"x{_factor(MEMORY_OVERHEAD)} overhead) but the largest allowed GPU set is "
                f"{gpu.count}x{_gib(largest_node.gpu_memory_mib or 0)} "
                f"{largest_node.gpu_product or 'unlabelled'}"
            )
    return candidates, ""


def _pools(
    spec: InferenceEndpointSpec,
    fitting: Iterable[NodeInfo],
    now: datetime,
    max_utilization: int,
    own: EndpointPods,
    elastic: dict[CapacityType, tuple[int, tuple[str, ...]]],
) -> dict[CapacityType, _Pool]:
    by_type: dict[CapacityType, list[_Candidate]] = {t: [] for t in CapacityType}
    overrides = _overrides(spec)
    tolerations = _tolerations(spec)
    for node in sorted(fitting, key=lambda n: n.name):
        if (
            not node.ready
            or node.unschedulable
            or blocking_taints(node, node.capacity_type, tolerations)
            or not selects(overrides, node.labels)
        ):
            continue
        # The endpoint's own pods free their GPUs for it; never more than the node has.
        available = min(node.gpu_allocatable, node.gpu_free + own.gpus_by_node.get(node.name, 0))
        utilization = node_utilization(node, now, own.keys)
        by_type[node.capacity_type].append(
            _Candidate(
                node=node,
                slots=available // spec.gpu.count,
                utilization=utilization,
                hot=utilization is not None and utilization > max_utilization,
            )
        )
    return {t: _Pool(t, tuple(cands), *elastic.get(t, (0, ()))) for t, cands in by_type.items()}


def _provisionable(
    spec: InferenceEndpointSpec, pools: Sequence[ProvisionablePool], regions: Sequence[str]
) -> dict[CapacityType, tuple[int, tuple[str, ...]]]:
    """Per capacity type, the replica slots autoscalers can still add in `regions` for this
    spec, and the pools that give them; only types with a fitting pool are present (even a
    full one: it may free room, and it names where replicas wait)."""
    found: dict[CapacityType, tuple[int, tuple[str, ...]]] = {}
    for pool in pools:
        if _pool_misfit(spec, pool, regions) is not None:
            continue
        count = spec.gpu.count
        slots = UNLIMITED_SLOTS if pool.gpu_room is None else pool.gpu_room // count
        before, names = found.get(pool.capacity_type, (0, ()))
        found[pool.capacity_type] = (min(UNLIMITED_SLOTS, before + slots), (*names, pool.name))
    return found


def _pool_misfit(
    spec: InferenceEndpointSpec, pool: ProvisionablePool, regions: Sequence[str]
) -> str | None:
    """Why a pool cannot provision a node for one replica in `regions`; None when it can."""
    gpu = spec.gpu
    if pool.regions is not None and pool.regions.isdisjoint(regions):
        return f"regions {', '.join(sorted(pool.regions))}"
    if (
        gpu.products
        and pool.gpu_products is not None
        and pool.gpu_products.isdisjoint(gpu.products)
    ):
        return f"GPUs {', '.join(sorted(pool.gpu_products))}"
    if pool.gpus_per_node is not None and pool.gpus_per_node < gpu.count:
        return f"at most {pool.gpus_per_node} GPUs per node"
    needed = required_gpu_memory_mib(spec)
    if needed is not None and pool.gpu_memory_mib is not None and pool.gpu_memory_mib < needed:
        return f"{pool.gpu_memory_mib} MiB GPUs"
    blocking = untolerated(pool.taints, pool.capacity_type, _tolerations(spec))
    if blocking:
        return "taint " + ", ".join(f"{t.key}={t.value}:{t.effect}" for t in blocking)
    return None


def _overrides(spec: InferenceEndpointSpec) -> PodSpecOverrides | None:
    """What `spec.podTemplate` adds to every replica's pod spec: its tolerations widen, and its
    node requirements narrow, the nodes the scheduler will use, so the planner counts the same.
    (A provisionable pool's future labels are not known, so only its taints are judged.)"""
    return spec.pod_template.spec if spec.pod_template is not None else None


def _tolerations(spec: InferenceEndpointSpec) -> tuple[Toleration, ...]:
    overrides = _overrides(spec)
    return tuple(overrides.tolerations) if overrides is not None else ()


def _unfit_pools(
    spec: InferenceEndpointSpec, pools: Sequence[ProvisionablePool], regions: Sequence[str]
) -> str:
    """The reason's tail naming the pools that could not help, if there are any."""
    reasons = [
        f"{pool.name} ({pool.capacity_type}): {why}"
        for pool in pools
        if (why := _pool_misfit(spec, pool, regions)) is not None
    ]
    return f"; nor can {'; '.join(reasons[:_REASON_NODES])} provision one" if reasons else ""


def _preferences(candidates: Iterable[_Candidate]) -> tuple[tuple[str, int], ...]:
    weighted = sorted(
        ((c.node.name, _weight(c.utilization)) for c in candidates),
        key=lambda pair: (-pair[1], pair[0]),
    )
    return tuple(weighted[:MAX_PREFERRED_NODES])


def _weight(utilization: float | None) -> int:
    """1-100, least utilized highest, in bands; unknown telemetry in the neutral middle."""
    if utilization is None:
        return NEUTRAL_WEIGHT
    band = int(min(100.0, max(0.0, utilization)) // _WEIGHT_BAND_PERCENT)
    return max(1, 100 - band * _WEIGHT_BAND_PERCENT)


def _hot_list(candidates: Sequence[_Candidate], threshold: int) -> str:
    ordered = sorted(candidates, key=lambda c: c.node.name)
    shown = [
        f"{c.node.name} (GPU {c.utilization or 0:.0f}% > {threshold}%)"
        for c in ordered[:_REASON_NODES]
    ]
    more = len(ordered) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _no_region_reason(spec: InferenceEndpointSpec, constraints: Constraints) -> str:
    parts = [f"requested {_regions(spec.residency.regions)}"]
    if constraints.namespace_regions is not None:
        parts.append(
            f"namespace tidal.dev/allowed-regions allows {_regions(constraints.namespace_regions)}"
        )
    if constraints.collection_regions is not None:
        parts.append(f"vector collection allows {_regions(constraints.collection_regions)}")
    return "no region is allowed: " + "; ".join(parts)


def _regions(regions: Iterable[str]) -> str:
    ordered = sorted(regions)
    return ", ".join(ordered) if ordered else "none"


def _largest_gpu(nodes: Iterable[NodeInfo]) -> str:
    node = max(nodes, key=lambda n: (n.gpu_memory_mib or 0, n.name))
    if node.gpu_memory_mib is None:
        return "no nvidia.com/gpu.memory label"
    return f"{node.gpu_memory_mib} MiB {node.gpu_product or 'unlabelled'}"


def _gib(mib: int) -> str:
    return f"{mib / 1024:.1f} GiB"


def _factor(value: Fraction) -> str:
    return f"{float(value):g}"


def _duration(seconds: int) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"
