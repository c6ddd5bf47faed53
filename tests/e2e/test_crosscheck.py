"""E2E: the economics simulator's mix holds against real Karpenter (`make bench-crosscheck`'s
essential behaviour, without its timings).

An elastic cluster of its own (CPU nodes only; Karpenter with its KWOK provider launches the GPU
nodes), the operator scaling on a simulated gateway's constant load (`bench.crosscheck`), one
Auto endpoint. Settled in calm times and again in a spot crunch (spot out of capacity in the
region, its spot nodes interrupted), the Ready replicas per capacity type of their node must be
the simulator's prediction for the same spec, load and crunch, and the price of the nodes
Karpenter chose for them (from the instance-types file Tidal gave it) must be both the
prediction's $/h and the operator's own `status.cost.hourlyUSD`. The return to spot after a
crunch is asserted by tests/e2e/test_elastic_tidal.py; the benchmark reports it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bench import crosscheck
from bench.crosscheck import NAME, NAMESPACE, REGION, Sample, Timeline

from tests.e2e.conftest import Operator, install_crds, wait_for
from tests.e2e.elastic import elastic_cluster
from tests.e2e.kube import Kube
from tidal.api.labels import KARPENTER_CAPACITY_TYPE
from tidal.api.signals import endpoint_key
from tidal.devcluster import karpenter

STARTUP = 3
NOTICE = 10.0


@dataclass
class Cluster:
    workdir: Path
    kube: Kube
    operator: Operator
    prices: dict[tuple[str, str, str], float]


@pytest.fixture(scope="module")
def elastic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with elastic_cluster(tmp_path_factory, consolidate_after="30s", startup_seconds=STARTUP) as (
        workdir,
        kube,
        _state,
    ):
        install_crds(kube)
        gateway = crosscheck.SimulatedGateway(endpoint_key(NAMESPACE, NAME), crosscheck.IN_FLIGHT)
        with gateway.running():
            operator = Operator(
                kube,
                workdir / "operator.log",
                env={**crosscheck.OPERATOR_ENV, "TIDAL_GATEWAY_URLS": gateway.url},
            )
            operator.start()
            try:
                prices = crosscheck.price_list(workdir / karpenter.INSTANCE_TYPES_FILE)
                yield Cluster(workdir, kube, operator, prices)
            finally:
                operator.stop()


def _settled(elastic: Cluster, mismatches: set[str]) -> Sample | None:
    kube = elastic.kube
    pods = kube.list("pods", NAMESPACE)
    endpoint = kube.get("inferenceendpoint", NAME, NAMESPACE)
    nodes = list(kube.nodes().values())
    sample = crosscheck.live_sample(0.0, nodes, pods, endpoint, elastic.prices, mismatches)
    live = sum(1 for p in pods if not p["metadata"].get("deletionTimestamp"))
    return sample if crosscheck.settled(sample, endpoint, live) else None


def _dump(elastic: Cluster) -> None:
    print(f"\n===== operator log (tail) =====\n{elastic.operator.tail(60)}", file=sys.stderr)
    for what in ("nodeclaims", "nodes"):
        listing = elastic.kube.run("get", what, "-o", "wide", check=False)
        print(f"===== {what} =====\n{listing}", file=sys.stderr)
    events = elastic.kube.run("get", "events", "-n", NAMESPACE, check=False)
    print(f"===== events =====\n{events}", file=sys.stderr)


def _spot_hosts(kube: Kube) -> list[str]:
    nodes = kube.nodes()
    hosts = {str(p["spec"].get("nodeName") or "") for p in kube.list("pods", NAMESPACE)}
    return sorted(
        h
        for h in hosts
        if (nodes.get(h) or {}).get("metadata", {}).get("labels", {}).get(KARPENTER_CAPACITY_TYPE)
        == "spot"
    )


def _check(sample: Sample, predicted: Any) -> None:
    assert (sample.spot, sample.reserved) == (predicted.spot, predicted.reserved)
    assert sample.usd_per_hour == pytest.approx(predicted.usd_per_hour, abs=0.005)
    assert sample.status_usd_per_hour == pytest.approx(sample.usd_per_hour, abs=0.005)


def test_the_live_mix_and_its_node_prices_are_the_simulators_in_calm_and_in_a_crunch(
    elastic: Cluster,
) -> None:
    kube = elastic.kube
    kube.run("create", "namespace", NAMESPACE)
    # Any moments will do for the prediction's settled phases; the crunch here comes later.
    timeline = Timeline(crunch_start=120, interrupted=120, crunch_end=300, end=320)
    prediction = crosscheck.predict(timeline, cold_start_seconds=15)
    steady = crosscheck.phase_figures(prediction.samples, *timeline.bounds("steady"))
    crunch = crosscheck.phase_figures(prediction.samples, *timeline.bounds("crunch"))
    assert steady.spot > 0, "the prediction itself runs nothing on spot"
    assert crunch.spot == 0, "the prediction itself keeps spot through the crunch"
    mismatches: set[str] = set()
    try:
        kube.apply(crosscheck.endpoint_body(), NAMESPACE)
        calm = wait_for("the endpoint settled", lambda: _settled(elastic, mismatches), 240, 1)
        _check(calm, steady)

        karpenter.set_spot(elastic.workdir, REGION, available=False, progress=lambda _: None)
        try:
            for node in _spot_hosts(kube):
                karpenter.interrupt(elastic.workdir, node, NOTICE, progress=lambda _: None)
            settled_on_demand = wait_for(
                "settled with no spot replica",
                lambda: (s := _settled(elastic, mismatches)) is not None and s.spot == 0 and s,
                240,
                1,
            )
            _check(settled_on_demand, crunch)
        finally:
            karpenter.set_spot(elastic.workdir, REGION, available=True, progress=lambda _: None)
        assert mismatches == set(), "Karpenter's price labels differ from the file Tidal wrote"
    except BaseException:
        _dump(elastic)
        raise
    finally:
        kube.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)
