"""The cache of provisionable capacity: NodePools and tidal-capacity, read when due."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from tests.unit.test_placement_provisioning import CAPACITY, nodepool

from tidal.api.conventions import DEFAULT_CONVENTIONS
from tidal.errors import PermanentError, TemporaryError
from tidal.runtime.capacity import CapacityCache


class World:
    """The API server as the cache sees it, with a hand-driven clock."""

    def __init__(
        self, configmap: Mapping[str, Any] | None = None, profile_override: str | None = None
    ) -> None:
        self.configmap = configmap
        self.nodepools: list[dict[str, Any]] = [nodepool("gpu-spot")]
        self.down = False
        self.now = 0.0
        self.reports: list[str] = []
        self.reasons: list[str] = []
        self.profile_override = profile_override

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
            report=self.report,
            clock=lambda: self.now,
            profile_override=self.profile_override,
        )

    def report(self, _configmap: Mapping[str, Any], reason: str, message: str) -> None:
        self.reasons.append(reason)
        self.reports.append(message)


def configmap(text: str | None, conventions: str | None = None) -> dict[str, Any]:
    data = {"capacity.yaml": text, "conventions.yaml": conventions}
    return {
        "metadata": {"name": "tidal-capacity"},
        "data": {key: value for key, value in data.items() if value is not None},
    }


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


AKS = """
spotMarkers: [{key: kubernetes.azure.com/scalesetpriority, value: spot}]
gpuLabelProfile: instance-type
instanceTypes:
  Standard_NC24ads_A100_v4: {gpuProduct: NVIDIA-A100-SXM4-80GB, gpuCount: 1}
"""


def test_the_conventions_are_fixed_by_the_first_read_and_a_change_is_told_once() -> None:
    world = World(configmap(None, AKS))
    cache = world.cache()
    assert cache.conventions is DEFAULT_CONVENTIONS  # nothing read yet
    cache.refresh()
    started = cache.conventions
    assert started.required.name == "instance-type"
    assert started.spot_markers == (
        ("tidal.dev/capacity-type", "spot"),
        ("kubernetes.azure.com/scalesetpriority", "spot"),
    )
    # A change: kept as started (nodes were parsed by them), told once until it changes again.
    world.configmap = configmap(None, AKS.replace("instance-type", "gfd"))
    for step in (30, 60):
        world.now = step
        cache.refresh()
        assert cache.conventions is started
    assert world.reasons == ["ConventionsChanged"]
    assert "restarts" in world.reports[0]
    world.configmap = configmap(None, AKS)  # back as started: nothing to say
    world.now = 90
    cache.refresh()
    assert world.reasons == ["ConventionsChanged"]


def test_bad_conventions_keep_the_defaults_and_name_the_field() -> None:
    world = World(configmap(CAPACITY, "spotMarkers: [{key: 'bad key!', value: spot}]"))
    cache = world.cache()
    assert [p.name for p in cache.refresh().declared] == ["gpu-spot-eu"]  # pools still read
    assert cache.conventions == DEFAULT_CONVENTIONS
    assert world.reasons == ["InvalidCapacity"]
    assert "conventions.yaml: spotMarkers.0.key" in world.reports[0]
    assert "using the defaults" in world.reports[0]


def test_an_unreadable_configmap_fixes_nothing_yet() -> None:
    world = World(configmap(None, AKS))
    world.down = True
    cache = world.cache()
    cache.refresh()
    assert cache.conventions is DEFAULT_CONVENTIONS
    world.down = False
    world.now = 30
    cache.refresh()
    assert cache.conventions.required.name == "instance-type"
    assert world.reports == []


def test_an_unknown_profile_in_the_operators_environment_stops_it() -> None:
    world = World(configmap(None, AKS), profile_override="aks")
    with pytest.raises(PermanentError, match=r"TIDAL_GPU_LABEL_PROFILE: unknown .*'aks'"):
        world.cache().refresh()
    # The environment may name the ConfigMap's instance-type profile.
    assert World(configmap(None, AKS), "instance-type").cache().refresh() is not None
