"""Endpoint cost: dollars per hour of the placed mix, per million tokens, spot savings, budget."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.common import WITHIN_BUDGET
from tidal.api.endpoint import EndpointCostSpec, EndpointCostStatus
from tidal.api.labels import CapacityType
from tidal.cost import (
    DEFAULT_CATALOG,
    PlacedReplica,
    PriceCatalog,
    budget_condition,
    endpoint_cost,
    parse_pricing,
)
from tidal.cost.defaults import DEFAULT_PRICING

H100 = "NVIDIA-H100-80GB-HBM3"
L4 = "NVIDIA-L4"
EU = "eu-west-1"
US = "us-east-1"


def spot(product: str = H100, region: str = EU, gpus: int = 1) -> PlacedReplica:
    return PlacedReplica(product, CapacityType.SPOT, region, gpus)


def reserved(product: str = H100, region: str = EU, gpus: int = 1) -> PlacedReplica:
    return PlacedReplica(product, CapacityType.RESERVED, region, gpus)


def catalog_with(product: str, spot_price: str, reserved_price: str) -> PriceCatalog:
    table = {
        **DEFAULT_PRICING,
        "gpuHourlyUSD": {product: {"spot": {EU: spot_price}, "reserved": {EU: reserved_price}}},
        "gpuAliases": {},
    }
    return parse_pricing(yaml.safe_dump(table))


def test_two_spot_and_one_reserved_h100_cost_what_the_hand_computation_says() -> None:
    # 2 x 3.79 + 1 x 7.57 = 15.15 $/h; all reserved 3 x 7.57 = 22.71 $/h, so spot saves
    # 7.56 / 22.71 = 33.3 %; 2000 tokens/s = 7.2 M tokens/h, so 15.15 / 7.2 = 2.104 $/M.
    cost = endpoint_cost(
        [spot(), spot(), reserved()], 2000.0, DEFAULT_CATALOG, tokens_source="vllm over 300s"
    )
    assert cost == EndpointCostStatus(
        hourly_usd="15.15",
        per_million_tokens_usd="2.10",
        spot_savings_percent=33,
        basis=(
            "2x NVIDIA-H100-80GB-HBM3 spot eu-west-1 @ $3.79/GPU-h + "
            "1x NVIDIA-H100-80GB-HBM3 reserved eu-west-1 @ $7.57/GPU-h = $15.15/h; "
            "all-reserved $22.71/h; 2000 tokens/s from vllm over 300s"
        ),
    )


def test_gpu_count_per_replica_multiplies_the_price() -> None:
    cost = endpoint_cost([reserved(gpus=8)], None, DEFAULT_CATALOG)
    assert cost.hourly_usd == "60.56"  # 8 x 7.57
    assert cost.basis is not None
    assert cost.basis.startswith("8x NVIDIA-H100-80GB-HBM3 reserved eu-west-1 @ $7.57/GPU-h")


def test_replicas_in_several_regions_are_priced_by_their_own_region() -> None:
    cost = endpoint_cost([spot(region=EU), spot(region=US)], None, DEFAULT_CATALOG)
    assert cost.hourly_usd == "7.23"  # 3.79 + 3.44
    # all reserved: 7.57 + 6.88 = 14.45; saved 7.22 / 14.45 = 49.97 %
    assert cost.spot_savings_percent == 50


def test_all_reserved_saves_nothing() -> None:
    assert endpoint_cost([reserved(), reserved()], None, DEFAULT_CATALOG).spot_savings_percent == 0


def test_money_is_rounded_half_up_to_the_cent() -> None:
    catalog = catalog_with(H100, "0.125", "0.135")
    assert endpoint_cost([spot()], None, catalog).hourly_usd == "0.13"
    # Decimal sums are exact: three of 0.125 is 0.375 (a float sum would give 0.37499...).
    assert endpoint_cost([spot(), spot(), spot()], None, catalog).hourly_usd == "0.38"


def test_a_per_million_figure_below_a_cent_keeps_four_decimals() -> None:
    # 0.36 $/h at 100k tokens/s: 0.36 / 360 M tokens = 0.001 $/M.
    cost = endpoint_cost([spot(L4, US)], 100_000.0, DEFAULT_CATALOG)
    assert cost.per_million_tokens_usd == "0.0010"


@pytest.mark.parametrize("tokens", [None, 0.0])
def test_per_million_is_unknown_without_measured_generation(tokens: float | None) -> None:
    cost = endpoint_cost([spot()], tokens, DEFAULT_CATALOG, tokens_source="vllm over 300s")
    assert cost.hourly_usd == "3.79"
    assert cost.per_million_tokens_usd is None


def test_the_basis_says_why_per_million_is_missing() -> None:
    unmeasured = endpoint_cost([spot()], None, DEFAULT_CATALOG).basis
    idle = endpoint_cost([spot()], 0.0, DEFAULT_CATALOG, tokens_source="tgi over 300s").basis
    assert unmeasured is not None
    assert unmeasured.endswith("; no tokens/s measured")
    assert idle is not None
    assert idle.endswith("; no tokens generated (tgi over 300s)")


def test_no_replicas_cost_nothing_and_save_nothing_to_report() -> None:
    assert endpoint_cost([], 500.0, DEFAULT_CATALOG) == EndpointCostStatus(
        hourly_usd="0.00", basis="no replicas placed"
    )


def test_an_alias_is_priced_and_reported_under_the_product_it_names() -> None:
    cost = endpoint_cost([spot("nvidia-h100-80gb"), spot(H100)], None, DEFAULT_CATALOG)
    assert cost.hourly_usd == "7.58"
    assert cost.basis is not None
    assert cost.basis.startswith("2x NVIDIA-H100-80GB-HBM3 spot eu-west-1")


@pytest.mark.parametrize(
    ("replica", "named"),
    [
        (spot("NVIDIA-B200"), "NVIDIA-B200 spot eu-west-1 (no price in tidal-pricing)"),
        (spot(region="ap-south-1"), "NVIDIA-H100-80GB-HBM3 spot ap-south-1 (no price"),
        (PlacedReplica(None, "spot", EU, 1), "a spot replica on a node without an nvidia.com/gpu"),
        (PlacedReplica(H100, "reserved", None, 1), "a reserved replica on a node without a region"),
    ],
)
def test_a_replica_without_a_price_makes_the_cost_unknown_and_names_what_is_missing(
    replica: PlacedReplica, named: str
) -> None:
    cost = endpoint_cost([reserved(), replica], 1000.0, DEFAULT_CATALOG)
    assert cost.hourly_usd is None
    assert cost.per_million_tokens_usd is None
    assert cost.spot_savings_percent is None
    assert cost.basis is not None
    assert cost.basis.startswith("cost unknown: ")
    assert named in cost.basis


def test_spot_without_a_reserved_price_to_compare_has_no_savings_figure() -> None:
    table = {
        **DEFAULT_PRICING,
        "gpuHourlyUSD": {H100: {"spot": {EU: "3.00"}}},
        "gpuAliases": {},
    }
    cost = endpoint_cost([spot()], None, parse_pricing(yaml.safe_dump(table)))
    assert cost.hourly_usd == "3.00"
    assert cost.spot_savings_percent is None
    assert cost.basis is not None
    assert "no reserved price for NVIDIA-H100-80GB-HBM3 eu-west-1" in cost.basis


def test_plain_tuples_are_accepted_as_placed_replicas() -> None:
    assert endpoint_cost([(H100, "spot", EU, 1)], None, DEFAULT_CATALOG).hourly_usd == "3.79"


def test_the_basis_lists_spot_before_reserved_whatever_the_input_order() -> None:
    basis = endpoint_cost([reserved(), spot()], None, DEFAULT_CATALOG).basis
    assert basis is not None
    assert basis.index(" spot ") < basis.index(" reserved ")


def test_a_very_long_basis_is_clipped_to_the_status_limit() -> None:
    many = [spot(region=f"r{i:03d}-region-with-a-long-name") for i in range(200)]
    basis = endpoint_cost(many, None, DEFAULT_CATALOG).basis
    assert basis is not None
    assert len(basis) == 1024
    assert basis.endswith("...")


replicas = st.lists(
    st.builds(
        PlacedReplica,
        st.sampled_from(sorted(DEFAULT_CATALOG.gpu_hourly_usd)),
        st.sampled_from([CapacityType.SPOT, CapacityType.RESERVED]),
        st.sampled_from([EU, US, "us-west-2"]),
        st.integers(1, 8),
    ),
    min_size=1,
    max_size=20,
)


@given(replicas, st.one_of(st.none(), st.floats(0.1, 1e6)))
def test_hourly_cost_is_the_exact_sum_of_each_replicas_gpus_times_its_price(
    placed: list[PlacedReplica], tokens: float | None
) -> None:
    cost = endpoint_cost(placed, tokens, DEFAULT_CATALOG)
    expected = sum(
        (
            DEFAULT_CATALOG.gpu_price(
                r.product or "", CapacityType(r.capacity_type), r.region or ""
            )
            or Decimal(0)
        )
        * r.gpu_count
        for r in placed
    )
    assert cost.hourly_usd == f"{expected:.2f}"
    assert cost.spot_savings_percent is not None
    assert 0 <= cost.spot_savings_percent <= 100
    if all(r.capacity_type is CapacityType.RESERVED for r in placed):
        assert cost.spot_savings_percent == 0
    assert (cost.per_million_tokens_usd is None) == (tokens is None)
    # The status model's own validation (money pattern, basis length) accepts it.
    EndpointCostStatus.model_validate(cost.to_wire())


# --- WithinBudget ---------------------------------------------------------------------------


def budget(amount: str | int | None) -> EndpointCostSpec:
    return EndpointCostSpec.model_validate({} if amount is None else {"maxHourlyUSD": amount})


@pytest.mark.parametrize(
    ("spec", "hourly", "expected"),
    [
        (budget("40"), "15.15", ("True", "WithinBudget")),
        (budget(40), "40.00", ("True", "WithinBudget")),
        (budget("40"), "40.01", ("False", "OverBudget")),
        (budget("12.40"), "12.41", ("False", "OverBudget")),
        (budget("40"), None, ("Unknown", "PriceUnknown")),
        (budget(None), "99.00", ("True", "NoBudget")),
        (None, None, ("True", "NoBudget")),
    ],
)
def test_the_budget_verdict_compares_the_displayed_hourly_cost_exactly(
    spec: EndpointCostSpec | None, hourly: str | None, expected: tuple[str, str]
) -> None:
    condition = budget_condition(
        spec, EndpointCostStatus(hourly_usd=hourly, basis="b"), generation=3
    )
    assert condition.type == WITHIN_BUDGET
    assert (condition.status, condition.reason) == expected
    assert condition.observed_generation == 3


def test_the_budget_messages_name_the_cost_and_the_budget() -> None:
    over = budget_condition(budget("12.40"), EndpointCostStatus(hourly_usd="15.15"))
    assert over.message == "$15.15/h is above the $12.40/h budget"
    within = budget_condition(budget(40), EndpointCostStatus(hourly_usd="15.15"))
    assert within.message == "$15.15/h is within the $40/h budget"
    unknown = budget_condition(
        budget(40), EndpointCostStatus(basis="cost unknown: NVIDIA-B200 ...")
    )
    assert unknown.message == "budget $40/h; cost unknown: NVIDIA-B200 ..."
