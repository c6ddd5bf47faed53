"""The cache of provisionable capacity: NodePools and tidal-capacity, read when due."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tests.unit.test_placement_provisioning import CAPACITY, nodepool

from tidal.errors import TemporaryError
from tidal.runtime.capacity import CapacityCache


class World:
    """The API server as the cache sees it, with a hand-driven clock."""

    def __init__(self, configmap: Mapping[str, Any] | None = None) -> None:
        self.configmap = configmap
        self.nodepools: list[dict[str, Any]] = [nodepool("gpu-spot")]
        self.down = False
        self.now = 0.0
        self.reports: list[str] = []

    def fetch(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        assert (namespace, name) == ("tidal-system", "tidal-capacity")
        if self.down:
            raise TemporaryError("connection refused")
        return self.configmap

    def list(self) -> Sequence[Mapping[str, Any]]:
        if self.down:
            raise TemporaryError("connection refused")
        return self.nodepools

    def cache(self) -> CapacityCache:
        return CapacityCache(
            self.fetch,
            self.list,
            "tidal-system",
            30,
            report=lambda _cm, message: self.reports.append(message),
            clock=lambda: self.now,
        )


def configmap(text: str) -> dict[str, Any]:
    return {"metadata": {"name": "tidal-capacity"}, "data": {"capacity.yaml": text}}


def test_nodepools_and_declared_pools_are_read_at_most_once_per_interval() -> None:
    world = World(configmap(CAPACITY))
    cache = world.cache()
    assert cache.current().nodepools == ()  # nothing read yet
    first = cache.refresh()
    assert [p.name for p in first.nodepools] == ["NodePool gpu-spot"]
    assert [p.name for p in first.declared] == ["gpu-spot-eu"]

    world.nodepools = []
    world.now = 29
    assert cache.refresh() == first
    world.now = 30
    assert cache.refresh().nodepools == ()


def test_a_bad_configmap_keeps_the_last_good_pools_and_is_reported_once() -> None:
    world = World(configmap(CAPACITY))
    cache = world.cache()
    good = cache.refresh()
    world.configmap = configmap("pools: [{name: x}]")
    for step in (30, 60):
        world.now = step
        assert cache.refresh().declared == good.declared
    assert len(world.reports) == 1
    assert "pools.0.capacityType: Field required" in world.reports[0]
    assert "keeping the last good pools" in world.reports[0]

    world.configmap = None  # deleted: no declared pools
    world.now = 90
    assert cache.refresh().declared == ()


def test_an_unreachable_api_server_keeps_what_was_read() -> None:
    world = World(configmap(CAPACITY))
    cache = world.cache()
    good = cache.refresh()
    world.down = True
    world.now = 30
    assert cache.refresh() == good
    assert world.reports == []
