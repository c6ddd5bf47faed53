"""Spot reclaims observed per pool (`tidal.runtime.reclaims`) and what a reconcile reports of
them (`tidal.reconcile.endpoint.reclaimed_spot_nodes`), then how the planner reads them."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.unit.test_reconcile_endpoint import H100, NOW, endpoint, node, pod, world

from tidal.api.labels import CapacityType
from tidal.errors import TemporaryError, TidalError
from tidal.placement.budget import ReclaimPrior, Reclaims, reclaim_rate
from tidal.placement.model import FleetSnapshot, NodeInfo, Taint
from tidal.reconcile.endpoint import Memory, decide, reclaimed_spot_nodes
from tidal.reconcile.world import Inputs
from tidal.runtime.reclaims import (
    CHECKPOINT_SECONDS,
    CONFIGMAP_NAME,
    DATA_KEY,
    WAVE_SECONDS,
    LedgerError,
    ReclaimLedger,
    ReclaimStore,
)

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


# --- kept across restarts (ReclaimLedger.snapshot/restore, ReclaimStore) ---------------------


class FakeConfigMaps:
    """The API server's side of one namespace's ConfigMaps, as the store's functions see it."""

    def __init__(self, data: dict[str, str] | None = None, *, exists: bool = True) -> None:
        self.data = dict(data or {})
        self.exists = exists
        self.fail: TidalError | None = None

    def fetch(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.fail is not None:
            raise self.fail
        if not self.exists:
            return None
        return {"metadata": {"namespace": namespace, "name": name}, "data": dict(self.data)}

    def save(self, namespace: str, name: str, data: Mapping[str, str]) -> bool:
        assert name == CONFIGMAP_NAME
        if self.fail is not None:
            raise self.fail
        if not self.exists:
            return False
        self.data.update(data)
        return True


def _store(configmaps: FakeConfigMaps, ledger: ReclaimLedger | None = None) -> ReclaimStore:
    ledger = ledger or ReclaimLedger()
    return ReclaimStore(ledger, configmaps.fetch, configmaps.save, "tidal-system")


def test_a_checkpoint_restores_the_episodes_and_the_hours_watched_not_the_hours_down() -> None:
    before = ReclaimLedger()
    before.note([("spot-1", POOL)], at(0))
    _, data = before.snapshot(at(7200))  # watched 2 h
    after = ReclaimLedger()
    # Restarted a day later: the day down was not watched.
    assert after.restore(data, at(7200 + 86400)) == 1
    by_pool, hours = after.observed(at(7200 + 86400 + 3600))
    assert hours == pytest.approx(3.0)
    assert by_pool[POOL].episodes == 1
    assert by_pool[POOL].hours == pytest.approx(3.0)


def test_a_restored_wave_and_node_are_not_counted_again() -> None:
    before = ReclaimLedger()
    before.note([("spot-1", POOL)], at(0))
    after = ReclaimLedger()
    after.restore(before.snapshot(at(60))[1], at(120))
    after.note([("spot-1", POOL)], at(130))  # the same node, still lingering
    after.note([("spot-2", POOL)], at(140))  # the same wave
    assert after.observed(at(150))[0][POOL].episodes == 1
    after.note([("spot-3", POOL)], at(WAVE_SECONDS + 1))
    assert after.observed(at(WAVE_SECONDS + 2))[0][POOL].episodes == 2


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("{", "ledger.json"),
        ('{"version": 2, "watchedHours": 1, "savedTime": "2026-12-01T00:00:00Z"}', "version"),
        ('{"version": 1, "watchedHours": -1, "savedTime": "2026-12-01T00:00:00Z"}', "watchedHours"),
        ('{"version": 1, "watchedHours": 1, "savedTime": "2026-12-01T00:00:00"}', "savedTime"),
        (
            '{"version": 1, "watchedHours": 1, "savedTime": "2026-12-01T00:00:00Z",'
            ' "pools": {"eu/A": {"episodes": "x", "lastWaveTime": "2026-12-01T00:00:00Z"}}}',
            "pools.eu/A.episodes",
        ),
    ],
)
def test_a_checkpoint_that_does_not_parse_is_refused_naming_the_field(raw: str, field: str) -> None:
    ledger = ReclaimLedger()
    ledger.note([("spot-1", POOL)], at(0))
    with pytest.raises(LedgerError, match=re.escape(field)):
        ledger.restore({DATA_KEY: raw}, at(10))
    assert ledger.observed(at(3600))[0][POOL].episodes == 1  # unchanged


def test_the_store_restores_once_then_saves_each_episode_at_once_and_calm_when_due() -> None:
    saved = ReclaimLedger()
    saved.note([("old", POOL)], at(-3600))
    configmaps = FakeConfigMaps(saved.snapshot(at(0))[1])
    store = _store(configmaps)
    ledger = store.ledger(at(100))
    assert ledger.observed(at(100))[0][POOL].episodes == 1
    assert store.save_if_due(at(100))  # the first checkpoint of this run
    assert not store.save_if_due(at(200))  # nothing new, not due
    ledger.note([("new", "us-east-1/NVIDIA-L4")], at(300))
    assert store.save_if_due(at(300))  # an episode is saved at once
    assert not store.save_if_due(at(300 + CHECKPOINT_SECONDS - 1))
    assert store.save_if_due(at(300 + CHECKPOINT_SECONDS))  # calm hours when due
    restarted = _store(configmaps).ledger(at(5000))
    by_pool, hours = restarted.observed(at(5000))
    assert {pool: r.episodes for pool, r in by_pool.items()} == {POOL: 1, "us-east-1/NVIDIA-L4": 1}
    assert hours == pytest.approx(1 + (300 + CHECKPOINT_SECONDS - 100) / 3600)
    assert store.ledger(at(9000)) is ledger  # read back once only


def test_a_missing_configmap_keeps_the_ledger_in_memory_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configmaps = FakeConfigMaps(exists=False)
    store = _store(configmaps)
    store.ledger(at(0)).note([("spot-1", POOL)], at(0))
    with caplog.at_level(logging.WARNING, logger="tidal.reclaims"):
        assert not store.save_if_due(at(0))
        assert not store.save_if_due(at(CHECKPOINT_SECONDS))
    assert [r.getMessage() for r in caplog.records] == [
        "No ConfigMap tidal-system/tidal-spot-reclaims: spot reclaims observed are kept in "
        "memory only, and a restart starts again from the prior"
    ]
    assert store.ledger(at(10)).observed(at(10))[0][POOL].episodes == 1


def test_an_unreadable_checkpoint_or_an_unreachable_api_server_never_stops_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configmaps = FakeConfigMaps({DATA_KEY: "not json"})
    store = _store(configmaps)
    with caplog.at_level(logging.WARNING, logger="tidal.reclaims"):
        ledger = store.ledger(at(0))
        ledger.note([("spot-1", POOL)], at(0))
        configmaps.fail = TemporaryError("API server unavailable")
        assert not store.save_if_due(at(0))
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("Ignoring the saved spot reclaim ledger")
    assert "API server unavailable" in messages[1]
    configmaps.fail = None
    assert store.save_if_due(at(1))  # the unsaved episode goes out on the next look
    assert json.loads(configmaps.data[DATA_KEY])["pools"][POOL]["episodes"] == 1


def test_nothing_is_saved_before_the_saved_history_was_read() -> None:
    configmaps = FakeConfigMaps({DATA_KEY: "kept"})
    assert not _store(configmaps).save_if_due(at(0))
    assert configmaps.data == {DATA_KEY: "kept"}
