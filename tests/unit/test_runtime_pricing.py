"""The price catalog cache: read when due, last good kept, each refusal reported once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from tidal.api.labels import CapacityType
from tidal.cost import DEFAULT_CATALOG
from tidal.cost.defaults import DEFAULT_PRICING
from tidal.errors import TemporaryError
from tidal.runtime.pricing import PricingCache

H100 = "NVIDIA-H100-80GB-HBM3"


def table(reserved: Any = "2.50") -> dict[str, Any]:
    return {
        **DEFAULT_PRICING,
        "gpuHourlyUSD": {H100: {"reserved": {"eu-west-1": reserved}}},
        "gpuAliases": {},
    }


def configmap(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tidal-pricing", "namespace": "ops"},
        "data": {"pricing.yaml": yaml.safe_dump(document)},
    }


class World:
    """The API server as the cache sees it, and a clock the test moves."""

    def __init__(self, stored: dict[str, Any] | Exception | None) -> None:
        self.stored = stored
        self.now = 1000.0
        self.reads: list[tuple[str, str]] = []
        self.reports: list[str] = []

    def fetch(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.reads.append((namespace, name))
        if isinstance(self.stored, Exception):
            raise self.stored
        return self.stored

    def report(self, obj: Mapping[str, Any], message: str) -> None:
        assert obj["metadata"]["name"] == "tidal-pricing"
        self.reports.append(message)

    def cache(self) -> PricingCache:
        return PricingCache(self.fetch, "ops", 60, report=self.report, clock=lambda: self.now)


def price(cache: PricingCache) -> Any:
    return cache.current().catalog.gpu_price(H100, CapacityType.RESERVED, "eu-west-1")


def test_the_configmap_is_read_by_name_in_the_operator_namespace_and_then_when_due() -> None:
    world = World(configmap(table()))
    cache = world.cache()

    cache.refresh()
    cache.refresh()
    world.now += 59
    cache.refresh()

    assert world.reads == [("ops", "tidal-pricing")]
    assert str(price(cache)) == "2.50"
    assert cache.current().source == "ConfigMap ops/tidal-pricing"
    world.now += 1
    cache.refresh()
    assert len(world.reads) == 2


def test_before_the_first_read_and_without_a_configmap_the_defaults_price() -> None:
    world = World(None)
    cache = world.cache()
    assert cache.current().catalog is DEFAULT_CATALOG
    assert "not read yet" in cache.current().source

    cache.refresh()

    assert cache.current().catalog is DEFAULT_CATALOG
    assert "no ConfigMap ops/tidal-pricing" in cache.current().source


def test_a_bad_table_keeps_the_last_good_one_and_is_reported_once_naming_the_key() -> None:
    world = World(configmap(table()))
    cache = world.cache()
    cache.refresh()

    world.stored = configmap(table(reserved=2.5))  # a YAML float, not a quoted decimal
    for _ in range(3):
        world.now += 60
        cache.refresh()

    assert str(price(cache)) == "2.50"
    assert len(world.reports) == 1
    assert f"gpuHourlyUSD.{H100}.reserved.eu-west-1" in world.reports[0]
    assert "keeping the last good prices (ConfigMap ops/tidal-pricing)" in world.reports[0]

    world.stored = configmap(table(reserved="3.00"))
    world.now += 60
    cache.refresh()
    assert str(price(cache)) == "3.00"

    world.stored = configmap(table(reserved=2.5))
    world.now += 60
    cache.refresh()
    assert len(world.reports) == 2, "a new breakage after a fix is news again"


def test_a_deleted_configmap_means_the_defaults_again() -> None:
    world = World(configmap(table()))
    cache = world.cache()
    cache.refresh()

    world.stored = None
    world.now += 60
    cache.refresh()

    assert cache.current().catalog is DEFAULT_CATALOG


def test_an_unreachable_api_server_keeps_the_current_prices() -> None:
    world = World(configmap(table()))
    cache = world.cache()
    cache.refresh()

    world.stored = TemporaryError("API server unreachable")
    world.now += 60
    cache.refresh()

    assert str(price(cache)) == "2.50"
    assert world.reports == []
