"""The placement-economics benchmark's own rules: the trace generator is a function of its seed,
and the capacity model counts served, overflowing and interrupted requests and dollars as its
docstring says. Timing is not tested (a benchmark's numbers are reported, not asserted)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from bench.economics import baselines, queueing, report, simulate, traces
from bench.economics.simulate import Deployment, EndpointView, Strategy
from bench.economics.traces import NodeSpec, Pattern, Scenario, SpotEvent, Workload

from tidal.api.endpoint import CapacityPolicy
from tidal.api.labels import CapacityType
from tidal.cost import DEFAULT_CATALOG, PlacedReplica, endpoint_cost
from tidal.placement.model import FleetSnapshot

L40S = "NVIDIA-L40S"
STEP = 60
# 4 s requests, 16 in flight per replica at target, 1.5x that within SLO: 6 requests/s.
WORKLOAD = Workload(
    name="w",
    pattern=Pattern.STEADY,
    product=L40S,
    gpus=1,
    regions=("us-east-1",),
    base_rps=10.0,
    peak_rps=10.0,
    latency_seconds=4.0,
    cold_start_seconds=120,
    min_replicas=2,
    max_replicas=2,
    weights_gib=16,
)


def scenario(
    rate: float,
    *,
    steps: int = 10,
    warmup_steps: int = 0,
    events: tuple[SpotEvent, ...] = (),
    multiplier: float = 1.0,
    nodes: tuple[NodeSpec, ...] = (
        NodeSpec("spot-0", "us-east-1", "us-east-1a", L40S, spot=True),
        NodeSpec("reserved-0", "us-east-1", "us-east-1a", L40S, spot=False),
    ),
) -> Scenario:
    total = steps + warmup_steps
    return Scenario(
        seed=0,
        step_seconds=STEP,
        warmup_steps=warmup_steps,
        measured_steps=steps,
        start=traces.EPOCH,
        workloads=(WORKLOAD,),
        nodes=nodes,
        rates={"w": (rate,) * total},
        utilization_noise={"w": (0.0,) * total},
        spot_price_multiplier={"us-east-1": (multiplier,) * total},
        events=events,
    )


class Fixed(Strategy):
    """Every replica on one capacity type, bound by the simulated kube-scheduler."""

    def __init__(self, capacity: CapacityType) -> None:
        self.name = f"fixed-{capacity}"
        self.capacity = capacity

    def control(
        self, now: datetime, fleet: FleetSnapshot | None, endpoints: Mapping[str, EndpointView]
    ) -> dict[str, dict[str, Deployment]]:
        return {
            name: {"main": Deployment(view.desired, self.capacity, view.workload.regions)}
            for name, view in endpoints.items()
        }


# --- the generator --------------------------------------------------------------------------


def test_the_same_seed_generates_the_same_day() -> None:
    a = traces.generate(7, hours=6, warmup_hours=1)
    b = traces.generate(7, hours=6, warmup_hours=1)
    assert a == b


def test_another_seed_generates_another_day() -> None:
    a = traces.generate(7, hours=6, warmup_hours=1)
    b = traces.generate(8, hours=6, warmup_hours=1)
    assert a.rates != b.rates
    assert a.spot_price_multiplier != b.spot_price_multiplier


def test_a_workloads_trace_does_not_depend_on_the_other_workloads() -> None:
    every = traces.generate(3, hours=4, warmup_hours=0)
    alone = traces.generate(3, hours=4, warmup_hours=0, workloads=traces.WORKLOADS[:1])
    name = traces.WORKLOADS[0].name
    assert alone.rates[name] == every.rates[name]


def test_traces_cover_warmup_and_measured_steps_with_positive_values() -> None:
    day = traces.generate(5, hours=3, warmup_hours=2, step_seconds=120)
    assert (day.warmup_steps, day.measured_steps) == (60, 90)
    for series in [*day.rates.values(), *day.spot_price_multiplier.values()]:
        assert len(series) == day.steps
        assert all(v > 0 for v in series)


def test_every_reclaimed_node_returns_later_or_after_the_day() -> None:
    day = traces.generate(11, hours=48, warmup_hours=0, crunches_per_region_per_day=6)
    spot = {n.name for n in day.nodes if n.spot}
    reclaims = [e for e in day.events if e.reclaim]
    assert reclaims, "a crunch-heavy two days must reclaim something"
    for event in day.events:
        assert event.node in spot
    for event in reclaims:
        back = [
            e
            for e in day.events
            if not e.reclaim and e.node == event.node and e.time_seconds > event.time_seconds
        ]
        assert back or event.time_seconds > day.steps * day.step_seconds - 240 * 60


def test_diurnal_traffic_peaks_in_the_local_afternoon() -> None:
    chat = next(w for w in traces.WORKLOADS if w.pattern is Pattern.DIURNAL)
    day = traces.generate(1, hours=24, warmup_hours=0, workloads=[chat])
    rates = day.rates[chat.name]
    peak_hour = rates.index(max(rates)) * day.step_seconds / 3600
    local = (peak_hour + chat.utc_offset_hours) % 24
    assert abs(local - traces.PEAK_HOUR) < 3


def test_the_fleet_has_both_capacity_types_for_every_product_and_region_used() -> None:
    day = traces.generate(1, hours=1, warmup_hours=0)
    for workload in traces.WORKLOADS:
        for region in workload.regions:
            kinds = {
                n.spot for n in day.nodes if (n.region, n.product) == (region, workload.product)
            }
            assert kinds == {True, False}


# --- the capacity model ---------------------------------------------------------------------


def test_load_above_the_replicas_throughput_is_all_outside_the_slo() -> None:
    # Two Ready replicas complete 12 requests/s at most: at 18 the queue grows without bound
    # (the queueing model's rho >= 1), so nothing of those steps is within the SLO.
    result = simulate.run(scenario(18.0, warmup_steps=2), Fixed(CapacityType.RESERVED))
    endpoint = result.endpoints["w"]
    assert endpoint.demand == pytest.approx(18.0 * STEP * 10)
    assert endpoint.within == 0.0
    assert endpoint.short_overflow == pytest.approx(endpoint.demand)


@pytest.mark.parametrize(
    ("rate", "share"),
    [
        # 24 slots of 4 s per replica, 2 s wait budget, the rate spread over 2 replicas.
        (2.0, queueing.within_budget(24, 1.0, 4.0, 2.0)),
        (10.0, queueing.within_budget(24, 5.0, 4.0, 2.0)),
        (11.5, queueing.within_budget(24, 5.75, 4.0, 2.0)),
    ],
)
def test_requests_within_the_slo_follow_the_queue_of_each_replica(
    rate: float, share: float
) -> None:
    result = simulate.run(scenario(rate, warmup_steps=2), Fixed(CapacityType.RESERVED))
    assert result.slo_percent == pytest.approx(100 * share)
    assert result.spot_share_percent == 0.0


def test_a_reclaim_fails_the_requests_in_flight_and_the_capacity_until_replaced() -> None:
    # Both replicas on the only spot node; it goes at 30 s into the first measured step and
    # comes back a minute later; the replacements bind then and start for 120 s. At 4
    # requests/s two replicas serve everything within the SLO.
    events = (SpotEvent(150.0, "spot-0", reclaim=True), SpotEvent(210.0, "spot-0", reclaim=False))
    result = simulate.run(
        scenario(4.0, warmup_steps=2, steps=8, events=events), Fixed(CapacityType.SPOT)
    )
    endpoint = result.endpoints["w"]
    # In flight at the reclaim: 4 requests/s x 4 s.
    assert endpoint.lost_in_flight == pytest.approx(16.0)
    # Capacity is gone from 150 s; new pods bind at 240 s (the step after the node is back)
    # and are Ready at 360 s: 210 s without any replica.
    assert endpoint.short_interruption == pytest.approx(4.0 * 210, rel=1e-4)
    assert endpoint.short_overflow == pytest.approx(0.0, abs=0.01)


def test_cost_is_gpu_hours_at_the_catalog_price_and_agrees_with_the_cost_module() -> None:
    result = simulate.run(scenario(10.0, steps=60), Fixed(CapacityType.RESERVED))
    hourly = endpoint_cost(
        [PlacedReplica(L40S, "reserved", "us-east-1", 1)] * 2, None, DEFAULT_CATALOG
    ).hourly_usd
    assert hourly is not None
    assert Decimal(f"{result.cost_usd:.2f}") == Decimal(hourly)


def test_spot_is_priced_with_the_multiplier_and_never_above_reserved() -> None:
    spot = float(DEFAULT_CATALOG.gpu_price(L40S, CapacityType.SPOT, "us-east-1") or 0)
    reserved = float(DEFAULT_CATALOG.gpu_price(L40S, CapacityType.RESERVED, "us-east-1") or 0)
    cheap = simulate.run(scenario(10.0, steps=60, multiplier=0.5), Fixed(CapacityType.SPOT))
    assert cheap.cost_usd == pytest.approx(2 * spot * 0.5)
    assert cheap.spot_share_percent == 100.0
    spike = simulate.run(scenario(10.0, steps=60, multiplier=10.0), Fixed(CapacityType.SPOT))
    assert spike.cost_usd == pytest.approx(2 * reserved)


def test_a_spot_discount_prices_spot_off_reserved_instead_of_the_catalog() -> None:
    reserved = float(DEFAULT_CATALOG.gpu_price(L40S, CapacityType.RESERVED, "us-east-1") or 0)
    day = scenario(10.0, steps=60, multiplier=0.5)
    deep = simulate.run(day, Fixed(CapacityType.SPOT), spot_discount_percent=80)
    assert deep.cost_usd == pytest.approx(2 * reserved * 0.2 * 0.5)
    same = simulate.run(day, Fixed(CapacityType.RESERVED), spot_discount_percent=80)
    assert same.cost_usd == pytest.approx(2 * reserved)
    with pytest.raises(ValueError, match="spot discount"):
        simulate.run(day, Fixed(CapacityType.SPOT), spot_discount_percent=100)


def test_price_first_falls_back_to_reserved_after_a_failed_spot_launch() -> None:
    # No spot node at all: the first attempt fails (ICE), the next step binds on reserved.
    only_reserved = (NodeSpec("reserved-0", "us-east-1", "us-east-1a", L40S, spot=False),)
    result = simulate.run(
        scenario(4.0, steps=10, nodes=only_reserved, events=()),
        baselines.PriceFirst(),
    )
    endpoint = result.endpoints["w"]
    # Bound at 60 s, Ready at 180 s: three steps without capacity.
    assert endpoint.within == pytest.approx(4.0 * STEP * 7, rel=1e-4)
    assert result.notes["ice_errors"] >= 1
    assert result.spot_share_percent == 0.0


def test_price_first_prefers_spot_when_it_has_room() -> None:
    result = simulate.run(scenario(10.0, steps=10), baselines.PriceFirst())
    assert result.spot_share_percent == 100.0


@pytest.mark.parametrize(
    ("policy", "spot_share"),
    [(CapacityPolicy.ReservedOnly, 0.0), (CapacityPolicy.SpotOnly, 100.0)],
)
def test_the_planner_strategies_run_the_operators_planner(
    policy: CapacityPolicy, spot_share: float
) -> None:
    day = scenario(10.0, steps=5)
    result = simulate.run(day, simulate.TidalStrategy("planner", policy))
    assert result.notes["plans"] == day.steps
    assert result.spot_share_percent == spot_share


def test_tidal_moves_lost_spot_replicas_to_reserved_at_the_next_step() -> None:
    # SpotPreferred: both replicas on spot; the node goes for good at 150 s (no notice). The
    # planner sees the smaller spot pool at 180 s and moves both to reserved (Ready at 300 s).
    events = (SpotEvent(150.0, "spot-0", reclaim=True),)
    day = scenario(4.0, warmup_steps=2, steps=8, events=events)
    result = simulate.run(day, simulate.TidalStrategy("tidal", CapacityPolicy.SpotPreferred))
    endpoint = result.endpoints["w"]
    assert endpoint.short_interruption == pytest.approx(4.0 * (300 - 150), rel=1e-4)
    assert endpoint.reserved_replica_seconds == pytest.approx(2 * (600 - 180))


def test_the_return_to_spot_hands_replicas_over_make_before_break() -> None:
    # SpotPreferred, 10 requests/s need both replicas. Spot goes at 150 s (both move to
    # reserved at 180 s, Ready at 300 s) and is back at 330 s; healthy from the plan at 360 s,
    # it gets the replicas back 60 s later (420 s, Ready at 540 s). The controller's handover
    # keeps the reserved replicas serving until then: the move loses no request.
    events = (
        SpotEvent(150.0, "spot-0", reclaim=True),
        SpotEvent(330.0, "spot-0", reclaim=False),
    )
    day = scenario(10.0, steps=12, events=events)
    strategy = simulate.TidalStrategy("tidal", CapacityPolicy.SpotPreferred, 60)
    endpoint = simulate.run(day, strategy).endpoints["w"]
    assert endpoint.short_shift == 0.0
    assert endpoint.reserved_replica_seconds == pytest.approx(2 * (540 - 180))
    assert endpoint.spot_replica_seconds == pytest.approx(2 * 150 + 2 * (720 - 420))


# --- the report -----------------------------------------------------------------------------


def test_the_section_is_replaced_between_its_markers_only(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nother section\n")
    first = f"{report.MARK_START}\none\n{report.MARK_END}\n"
    report.write_section(out, first)
    report.write_section(out, f"{report.MARK_START}\ntwo\n{report.MARK_END}\n")
    text = out.read_text()
    assert "other section" in text
    assert "two" in text
    assert "one" not in text
    assert text.count(report.MARK_START) == 1
