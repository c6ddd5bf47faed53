"""The price catalog: the shipped table, parsing, and errors that name the bad key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidal.api.labels import CapacityType
from tidal.cost import (
    DEFAULT_CATALOG,
    PricingError,
    catalog_from_configmap,
    parse_pricing,
)
from tidal.cost.defaults import DEFAULT_PRICING
from tidal.errors import PermanentError

CONFIGMAP = Path(__file__).resolve().parents[2] / "manifests" / "pricing-configmap.yaml"
GPU_PRODUCTS = {
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-H200",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-A100-SXM4-40GB",
    "NVIDIA-L40S",
    "NVIDIA-L4",
    "NVIDIA-A10G",
}
FLEET = Path(__file__).resolve().parents[2] / "operator/tidal/devcluster/data/fleet.yaml"


def shipped_data() -> dict[str, str]:
    data: dict[str, str] = yaml.safe_load(CONFIGMAP.read_text())["data"]
    return data


def pricing(**changes: Any) -> str:
    """The default table with top-level keys replaced (None: removed), as YAML text."""
    table = {**DEFAULT_PRICING, **changes}
    return yaml.safe_dump({k: v for k, v in table.items() if v is not None})


def gpu_table(product: str, capacity: str, region: str, price: object) -> dict[str, Any]:
    return {product: {capacity: {region: price}}}


def test_the_shipped_configmap_and_the_in_code_defaults_are_the_same_catalog() -> None:
    assert catalog_from_configmap(shipped_data()) == DEFAULT_CATALOG


def test_the_defaults_price_every_common_gpu_on_spot_and_reserved_in_several_regions() -> None:
    assert set(DEFAULT_CATALOG.gpu_hourly_usd) == GPU_PRODUCTS
    for product, by_capacity in DEFAULT_CATALOG.gpu_hourly_usd.items():
        assert set(by_capacity) == {CapacityType.SPOT, CapacityType.RESERVED}, product
        for capacity, by_region in by_capacity.items():
            assert len(by_region) >= 3, (product, capacity)


def test_spot_is_cheaper_than_reserved_everywhere_in_the_defaults() -> None:
    for product, by_capacity in DEFAULT_CATALOG.gpu_hourly_usd.items():
        for region, spot in by_capacity[CapacityType.SPOT].items():
            assert spot < by_capacity[CapacityType.RESERVED][region], (product, region)


def test_every_gpu_of_the_simulated_fleet_has_a_default_price() -> None:
    fleet = yaml.safe_load(FLEET.read_text())
    for group in fleet["nodeGroups"]:
        if "gpu" not in group:
            continue
        capacity = CapacityType(group["capacityType"])
        for region in group["regions"]:
            price = DEFAULT_CATALOG.gpu_price(group["gpu"]["product"], capacity, region)
            assert price is not None, (group["name"], region)


def test_prices_are_exact_decimals() -> None:
    price = DEFAULT_CATALOG.gpu_price("NVIDIA-H100-80GB-HBM3", CapacityType.SPOT, "eu-west-1")
    assert price == Decimal("3.79")
    assert isinstance(DEFAULT_CATALOG.cpu_core_hourly_usd, Decimal)


def test_an_alias_is_priced_as_the_product_it_names() -> None:
    assert DEFAULT_CATALOG.gpu_price(
        "nvidia-h100-80gb", CapacityType.RESERVED, "us-east-1"
    ) == DEFAULT_CATALOG.gpu_price("NVIDIA-H100-80GB-HBM3", CapacityType.RESERVED, "us-east-1")
    assert DEFAULT_CATALOG.canonical_product("nvidia-l4") == "NVIDIA-L4"
    assert DEFAULT_CATALOG.canonical_product("NVIDIA-L4") == "NVIDIA-L4"


@pytest.mark.parametrize(
    ("product", "capacity", "region"),
    [
        ("NVIDIA-B200", CapacityType.SPOT, "us-east-1"),
        ("NVIDIA-L4", CapacityType.SPOT, "ap-south-1"),
    ],
)
def test_an_unknown_product_or_region_has_no_price(
    product: str, capacity: CapacityType, region: str
) -> None:
    assert DEFAULT_CATALOG.gpu_price(product, capacity, region) is None


def test_a_minimal_table_without_aliases_parses() -> None:
    catalog = parse_pricing(
        pricing(gpuHourlyUSD=gpu_table("NVIDIA-L4", "spot", "eu-west-1", "0.40"), gpuAliases=None)
    )
    assert catalog.gpu_price("NVIDIA-L4", CapacityType.SPOT, "eu-west-1") == Decimal("0.40")
    assert catalog.gpu_aliases == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            pricing(gpuHourlyUSD=gpu_table("NVIDIA-L4", "spot", "eu-west-1", 0.4)),
            'gpuHourlyUSD.NVIDIA-L4.spot.eu-west-1: must be a quoted decimal string such as "3.79"',
        ),
        (
            pricing(gpuHourlyUSD=gpu_table("NVIDIA-L4", "spot", "eu-west-1", "40 cents")),
            "gpuHourlyUSD.NVIDIA-L4.spot.eu-west-1: must be a plain decimal",
        ),
        (
            pricing(gpuHourlyUSD=gpu_table("NVIDIA-L4", "spot", "eu-west-1", "-1")),
            "gpuHourlyUSD.NVIDIA-L4.spot.eu-west-1: must be a plain decimal",
        ),
        (
            pricing(gpuHourlyUSD=gpu_table("NVIDIA-L4", "spot", "eu-west-1", "25000")),
            "gpuHourlyUSD.NVIDIA-L4.spot.eu-west-1: 25000 is above the sanity limit",
        ),
        (
            pricing(gpuHourlyUSD=gpu_table("NVIDIA-L4", "preemptible", "eu-west-1", "0.4")),
            "gpuHourlyUSD.NVIDIA-L4.preemptible: is not a capacity type "
            "(expected spot or reserved)",
        ),
        (
            pricing(gpuHourlyUSD=gpu_table("NVIDIA-L4", "spot", "EU West", "0.4")),
            "gpuHourlyUSD.NVIDIA-L4.spot.EU West: 'EU West' is not a valid "
            "topology.kubernetes.io/region value",
        ),
        (
            pricing(gpuHourlyUSD=gpu_table("NVIDIA L4", "spot", "eu-west-1", "0.4")),
            "gpuHourlyUSD.NVIDIA L4: 'NVIDIA L4' is not a valid nvidia.com/gpu.product label value",
        ),
        (pricing(gpuHourlyUSD={}), "gpuHourlyUSD: "),
        (pricing(cpuCoreHourlyUSD=None), "cpuCoreHourlyUSD: is required"),
        (
            pricing(storageGiBMonthlyUSD={"ssd": "0.08"}),
            "storageGiBMonthlyUSD.objectStore: is required",
        ),
        (pricing(networkUSD="1"), "networkUSD: is not a known key"),
        (
            pricing(gpuAliases={"nvidia-b200": "NVIDIA-B200"}),
            "gpuAliases.nvidia-b200: 'NVIDIA-B200' is not a product in gpuHourlyUSD",
        ),
        (
            pricing(gpuAliases={"NVIDIA-L4": "NVIDIA-H200"}),
            "gpuAliases.NVIDIA-L4: already a product in gpuHourlyUSD",
        ),
        ("gpuHourlyUSD: [", "pricing.yaml is not valid YAML"),
        ("- just\n- a list\n", "pricing.yaml must be a mapping, got list"),
    ],
)
def test_an_invalid_table_is_refused_with_the_bad_key_path_in_the_message(
    text: str, message: str
) -> None:
    with pytest.raises(PricingError) as raised:
        parse_pricing(text)
    assert message in str(raised.value)


def test_every_problem_of_a_table_is_named_at_once() -> None:
    text = pricing(cpuCoreHourlyUSD="x", memoryGiBHourlyUSD=None)
    with pytest.raises(
        PricingError, match=r"cpuCoreHourlyUSD: .*; memoryGiBHourlyUSD: is required"
    ):
        parse_pricing(text)


@pytest.mark.parametrize("data", [None, {}, {"prices.yaml": "x"}])
def test_a_configmap_without_the_pricing_key_is_refused(data: dict[str, str] | None) -> None:
    with pytest.raises(PricingError, match=r"ConfigMap tidal-pricing has no key pricing\.yaml"):
        catalog_from_configmap(data)


def test_a_pricing_error_is_permanent_retrying_the_same_table_cannot_help() -> None:
    with pytest.raises(PermanentError):
        catalog_from_configmap({"pricing.yaml": "gpuHourlyUSD: {}"})
