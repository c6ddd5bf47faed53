"""The live cross-check's own rules: how a live moment is counted and priced from the nodes
Karpenter made, how a phase is summed up, when the endpoint counts as settled, what the
simulated gateway reports, and that the prediction replays the crunch as the module says. Timing
is not tested (a benchmark's numbers are reported, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench import crosscheck
from bench.crosscheck import (
    PhaseFigures,
    Sample,
    Timeline,
    live_sample,
    phase_figures,
    price_list,
    settled,
)

from tidal.api.labels import (
    GPU_RESOURCE,
    KARPENTER_CAPACITY_TYPE,
    KARPENTER_NODEPOOL,
    NODE_INSTANCE_TYPE,
    NODE_ZONE,
    CapacityType,
)
from tidal.api.signals import GatewayReport
from tidal.cost import DEFAULT_CATALOG
from tidal.devcluster import fleet

PRICES = {
    ("g6.xlarge", "spot", "eu-west-1a"): 0.40,
    ("g6.xlarge", "on-demand", "eu-west-1a"): 0.89,
    ("g6.xlarge", "on-demand", "eu-west-1b"): 0.89,
}


def _node(
    name: str, capacity: str, zone: str = "eu-west-1a", *, gpus: str = "1", **labels: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {
                KARPENTER_NODEPOOL: f"gpu-{capacity}",
                KARPENTER_CAPACITY_TYPE: capacity,
                NODE_INSTANCE_TYPE: "g6.xlarge",
                NODE_ZONE: zone,
                **labels,
            },
        },
        "status": {"allocatable": {GPU_RESOURCE: gpus}},
    }


def _pod(
    name: str, node: str | None, *, ready: bool = True, leaving: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if leaving:
        meta["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"nodeName": node} if node else {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def _endpoint(spot: int, reserved: int, ready: int, hourly: str = "2.09") -> dict[str, Any]:
    return {
        "metadata": {"name": "steady", "generation": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": {
                "desired": spot + reserved,
                "ready": ready,
                "spot": spot,
                "reserved": reserved,
            },
            "cost": {"hourlyUSD": hourly},
        },
    }


def test_a_live_sample_counts_ready_replicas_by_their_nodes_capacity_and_prices_the_nodes() -> None:
    nodes = [
        _node("spot-a", "spot"),
        _node("od-a", "on-demand"),
        _node("od-b", "on-demand", "eu-west-1b"),  # empty: Karpenter has not consolidated it
        {"metadata": {"name": "cpu-0", "labels": {}}, "status": {"allocatable": {}}},
    ]
    pods = [
        _pod("r1", "spot-a"),
        _pod("r2", "od-a"),
        _pod("r3", "od-a", ready=False),  # starting: paid for, not counted as a replica
        _pod("r4", None, ready=False),  # Pending
        _pod("r5", "od-b", leaving=True),  # going away: neither counted nor paid for here
    ]
    mismatches: set[str] = set()
    sample = live_sample(12.0, nodes, pods, _endpoint(1, 2, 2), PRICES, mismatches)
    assert (sample.spot, sample.reserved) == (1, 1)
    assert sample.usd_per_hour == pytest.approx(0.40 + 0.89)
    assert sample.all_nodes_usd_per_hour == pytest.approx(0.40 + 0.89 + 0.89)
    assert (sample.status_spot, sample.status_reserved, sample.status_usd_per_hour) == (1, 2, 2.09)
    assert sample.instance_types == {"g6.xlarge spot": 1, "g6.xlarge on-demand": 1}
    assert mismatches == set()


def test_karpenters_own_price_label_is_checked_against_the_list() -> None:
    nodes = [_node("spot-a", "spot", **{crosscheck.PRICE_LABEL: "0.550000"})]
    mismatches: set[str] = set()
    live_sample(0.0, nodes, [_pod("r1", "spot-a")], None, PRICES, mismatches)
    assert mismatches == {"spot-a: label 0.55, list 0.4"}


def test_a_node_with_no_offering_in_the_list_stops_the_run() -> None:
    with pytest.raises(crosscheck.BenchError, match="no offering"):
        live_sample(0.0, [_node("x", "spot", "eu-west-1b")], [], None, PRICES, set())


def test_the_price_list_is_the_instance_types_file_tidal_gives_karpenter(tmp_path: Path) -> None:
    elastic = fleet.load_elastic(fleet.ELASTIC_FLEET)
    path = tmp_path / "types.json"
    path.write_text(json.dumps(fleet.render_instance_types(elastic, DEFAULT_CATALOG)))
    prices = price_list(path)
    spot = DEFAULT_CATALOG.gpu_price("NVIDIA-L4", CapacityType.SPOT, "eu-west-1")
    assert prices[("g6.xlarge", "spot", "eu-west-1b")] == pytest.approx(float(spot or 0))
    assert (
        prices[("p5.48xlarge", "on-demand", "us-east-1a")]
        > prices[("p5.48xlarge", "spot", "us-east-1a")]
    )
    assert {k[1] for k in prices} == {"spot", "on-demand"}


def test_settled_needs_the_generation_every_replica_ready_no_extra_pod_and_the_status_split() -> (
    None
):
    sample = Sample(t=0, spot=3, reserved=1, usd_per_hour=2.09)
    assert settled(sample, _endpoint(3, 1, 4), live_pods=4)
    assert not settled(sample, _endpoint(3, 1, 3), live_pods=4)  # one not Ready yet
    assert not settled(sample, _endpoint(3, 1, 4), live_pods=5)  # a leaving pod still there
    assert not settled(sample, _endpoint(2, 2, 4), live_pods=4)  # status split differs
    stale = _endpoint(3, 1, 4)
    stale["metadata"]["generation"] = 2
    assert not settled(sample, stale, live_pods=4)
    assert not settled(sample, None, live_pods=0)


def test_a_phase_holds_each_sample_until_the_next_and_ends_on_its_last() -> None:
    samples = [
        Sample(t=0, spot=0, reserved=0, usd_per_hour=0.0),
        Sample(t=10, spot=3, reserved=1, usd_per_hour=2.0),
        Sample(t=30, spot=0, reserved=4, usd_per_hour=4.0),
        Sample(t=50, spot=2, reserved=2, usd_per_hour=3.0),
    ]
    steady = phase_figures(samples, 0, 20)
    assert (steady.spot, steady.reserved, steady.usd_per_hour) == (3, 1, 2.0)
    assert steady.mean_usd_per_hour == pytest.approx((0 * 10 + 2.0 * 10) / 20)
    # The sample before the phase holds into it.
    crunch = phase_figures(samples, 20, 40)
    assert crunch.mean_spot == pytest.approx((3 * 10 + 0 * 10) / 20)
    assert (crunch.spot, crunch.reserved) == (0, 4)
    assert crosscheck.first_time(samples, 20, lambda s: s.spot == 0) == 10
    assert crosscheck.first_time(samples, 55, lambda s: s.spot == 0) is None


def test_the_simulated_gateway_reports_the_constant_load_in_the_operators_format() -> None:
    gateway = crosscheck.SimulatedGateway("crosscheck/steady", 40)
    try:
        report = GatewayReport.model_validate(gateway._report().to_json())
    finally:
        gateway.server.server_close()
    endpoint = report.endpoints["crosscheck/steady"]
    assert (endpoint.in_flight, endpoint.held) == (40, 0)
    assert endpoint.last_request_time is not None


def test_the_prediction_falls_back_to_reserved_in_the_crunch_and_returns_to_spot_after() -> None:
    timeline = Timeline(crunch_start=60, interrupted=65, crunch_end=150, end=260)
    prediction = crosscheck.predict(timeline, cold_start_seconds=15)
    samples = prediction.samples
    steady = phase_figures(samples, *timeline.bounds("steady"))
    crunch = phase_figures(samples, *timeline.bounds("crunch"))
    after = phase_figures(samples, *timeline.bounds("after"))
    # 40 in flight at 10 per replica: 4 replicas, mostly on spot within the budget.
    assert steady.spot + steady.reserved == 4
    assert steady.spot > 0
    assert (crunch.spot, crunch.reserved) == (0, 4)
    assert after.spot > 0
    assert after.spot + after.reserved == 4
    # Nothing on spot from the interruption's deadline until the crunch is over.
    deadline = timeline.interrupted + crosscheck.NOTICE_SECONDS
    assert all(s.spot == 0 for s in samples if deadline < s.t < timeline.crunch_end)
    # The operator's own Events say so: the interruption's replacements, the move back.
    assert prediction.announced.get("ReplacingLeavingReplicas", 0) >= 1
    assert prediction.announced.get("SpotCapacityReturned", 0) >= 1


def _figures(usd: float, every: float | None = None, mean_spot: float = 0.0) -> PhaseFigures:
    return PhaseFigures(
        spot=2,
        reserved=2,
        usd_per_hour=usd,
        mean_spot=mean_spot,
        mean_reserved=2.0,
        mean_usd_per_hour=usd,
        status_usd_per_hour=usd,
        all_nodes_usd_per_hour=every,
    )


def test_the_differences_name_only_what_the_run_shows() -> None:
    same = {phase: (_figures(2.58), _figures(2.58, 2.58)) for phase in crosscheck.PHASES}
    events = {"SpotCapacityReturned": 1, "SpotCapacityLost": 1}
    quiet = crosscheck.differences(same, events, events)
    # Only the standing note on instance choice: nothing here differs.
    assert len(quiet) == 1
    assert "Instance choice" in quiet[0]

    shown = dict(same)
    shown["after"] = (_figures(2.58), _figures(2.58, 4.36))
    shown["crunch"] = (_figures(3.56, mean_spot=0.3), _figures(3.56, 3.56, mean_spot=0.5))
    live = {"SpotCapacityReturned": 3, "SpotCapacityLost": 4}
    lines = crosscheck.differences(shown, events, live)
    text = "\n".join(lines)
    assert "2 more return(s) to spot" in text
    assert "$1.78/h of GPU nodes held no replica" in text
    assert "Learning that spot is out" in text
