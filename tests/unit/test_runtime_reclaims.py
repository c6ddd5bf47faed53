"""Spot reclaims observed per pool (`tidal.runtime.reclaims`) and what a reconcile reports of
them (`tidal.reconcile.endpoint.reclaimed_spot_nodes`), then how the planner reads them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from tests.unit.test_reconcile_endpoint import H100, NOW, endpoint, node, pod, world

from tidal.api.labels import CapacityType
from tidal.placement.budget import ReclaimPrior, Reclaims, reclaim_rate
from tidal.placement.model import FleetSnapshot, NodeInfo, Taint
from tidal.reconcile.endpoint import Memory, decide, reclaimed_spot_nodes
from tidal.reconcile.world import Inputs
from tidal.runtime.reclaims import WAVE_SECONDS, ReclaimLedger

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POOL = f"eu-west-1/{H100}"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_node_counts_once_however_many_endpoints_report_it_and_for_how_long() -> None:
    ledger = ReclaimLedger()
    for seconds in (0, 5, 3600, 7200):
        ledger.note([("spot-1", POOL)], at(seconds))
    by_pool, hours = ledger.observed(at(7200))
    assert by_pool == {POOL: Reclaims(episodes=1, hours=2.0)}
    assert hours == 2.0


def test_reclaims_of_one_pool_within_a_wave_are_one_episode_and_later_ones_another() -> None:
    ledger = ReclaimLedger()
    ledger.note([("spot-1", POOL)], at(0))
    ledger.note([("spot-2", POOL), ("spot-3", POOL)], at(WAVE_SECONDS - 1))
    assert ledger.observed(at(WAVE_SECONDS))[0][POOL].episodes == 1
    ledger.note([("spot-4", POOL)], at(WAVE_SECONDS + 1))
    assert ledger.observed(at(WAVE_SECONDS + 2))[0][POOL].episodes == 2


def test_pools_are_counted_apart_and_the_watch_starts_with_the_first_look() -> None:
    ledger = ReclaimLedger()
    assert ledger.observed(at(0)) == ({}, 0.0)
    ledger.note([("a", POOL), ("b", "us-east-1/NVIDIA-L4")], at(1800))
    by_pool, hours = ledger.observed(at(3600))
    assert hours == 1.0
    assert {pool: r.episodes for pool, r in by_pool.items()} == {
        POOL: 1,
        "us-east-1/NVIDIA-L4": 1,
    }


def test_a_pool_watched_calm_earns_a_lower_rate_and_one_reclaimed_often_a_higher() -> None:
    prior = ReclaimPrior()
    calm = reclaim_rate(Reclaims(episodes=0, hours=24 * 14), prior)
    stormy = reclaim_rate(Reclaims(episodes=10, hours=24), prior)
    assert calm < prior.reclaims_per_hour < stormy


def spot(name: str, *, ready: bool = True, taints: tuple[Taint, ...] = ()) -> NodeInfo:
    return dataclasses.replace(
        node(name, "eu-west-1", CapacityType.SPOT, ready=ready), taints=taints
    )


@pytest.mark.parametrize(
    ("fleet_nodes", "expected"),
    [
        # A spot node that stopped reporting, or was given notice, is being reclaimed.
        ((spot("spot-eu", ready=False),), (("spot-eu", POOL),)),
        (
            (spot("spot-eu", taints=(Taint("karpenter.sh/disrupted", "", "NoSchedule"),)),),
            (("spot-eu", POOL),),
        ),
        (
            (
                spot(
                    "spot-eu",
                    taints=(Taint("aws-node-termination-handler/spot-itn", "", "NoSchedule"),),
                ),
            ),
            (("spot-eu", POOL),),
        ),
        # A healthy spot node, a NotReady reserved node, a node gone from the fleet: no reclaim.
        ((spot("spot-eu"),), ()),
        ((node("spot-eu", "eu-west-1", CapacityType.RESERVED, ready=False),), ()),
        ((), ()),
    ],
)
def test_a_reconcile_reports_the_reclaimed_spot_nodes_its_replicas_run_on(
    fleet_nodes: tuple[NodeInfo, ...], expected: tuple[tuple[str, str], ...]
) -> None:
    inputs = Inputs(
        fleet=FleetSnapshot(nodes=fleet_nodes, observed_at=T0),
        pods=(pod("chat-spot-1-a", "spot-eu", "spot"),),
    )
    assert reclaimed_spot_nodes(inputs) == expected


def test_auto_reads_the_observed_reclaims_against_its_prior() -> None:
    auto = endpoint(capacity={"policy": "Auto"})

    def mix(**observed: object) -> tuple[int, int, str]:
        status = decide(auto, world(**observed), Memory(), NOW).status or {}
        replicas, placement = status["replicas"], status["placement"]
        return replicas["spot"], replicas["reserved"], placement["reason"]

    # The prior alone (one reclaim a day): no spot replica fits a 0.01 % budget.
    assert mix()[:2] == (0, 2)
    # Sixty days watched without a reclaim: the pool earns a lower rate, and one replica
    # goes to spot.
    spot_count, reserved, reason = mix(watched_hours=24 * 60)
    assert (spot_count, reserved) == (1, 1)
    assert f"{reclaim_rate(Reclaims(0, 24 * 60)):.3g} reclaims/h" in reason
    # Fifty reclaims in an hour: the rate the reason names is the observed one.
    stormy = {POOL: Reclaims(episodes=50, hours=1.0)}
    spot_count, reserved, reason = mix(reclaims=stormy, watched_hours=1.0)
    assert (spot_count, reserved) == (0, 2)
    assert f"{reclaim_rate(stormy[POOL]):.3g} reclaims/h" in reason
