"""VectorCollection cost: compute + memory + storage, hot and cold, and what tiering saves."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.collection import CollectionCostStatus, StorageTier
from tidal.cost import DEFAULT_CATALOG, VectorFootprint, VectorState, vector_collection_cost

GIB = 1 << 30

# 10 GiB RAM and 40 GiB of volumes across 2 replicas of 2 vCPU; all-RAM at full precision would
# need 4x the RAM (40 GiB). Default prices: vCPU 0.0316 $/h, RAM 0.0042 $/GiB-h,
# SSD 0.08 $/GiB-month, object store 0.023 $/GiB-month, 730 h a month.
FOOTPRINT = VectorFootprint(
    memory_bytes=10 * GIB,
    disk_bytes=40 * GIB,
    replicas=2,
    cpu_cores_per_replica=Decimal(2),
    tier=StorageTier.Disk,
    memory_reduction_factor=4.0,
)


def test_a_serving_collection_pays_for_vcpu_ram_and_volumes() -> None:
    # 4 x 0.0316 + 10 x 0.0042 + 40 x 0.08 / 730 = 0.1264 + 0.042 + 0.0043836 = 0.1727836 $/h
    # all-RAM baseline: 0.1264 + 40 x 0.0042 + 0.0043836 = 0.2987836 $/h -> 42.2 % saved.
    assert vector_collection_cost(FOOTPRINT, DEFAULT_CATALOG) == CollectionCostStatus(
        hourly_usd="0.17",
        monthly_usd="126.13",
        tiering_savings_percent=42,
        basis=(
            "Serving (Disk tier): 4 vCPU @ $0.0316/h + 10 GiB RAM @ $0.0042/GiB-h + "
            "40 GiB SSD @ $0.08/GiB-month; all-RAM full precision: 40 GiB RAM, $0.30/h"
        ),
    )


def test_a_hibernated_collection_pays_only_for_its_volumes() -> None:
    cost = vector_collection_cost(
        dataclasses.replace(FOOTPRINT, state=VectorState.HIBERNATED), DEFAULT_CATALOG
    )
    assert cost.hourly_usd == "0.0044"  # 40 x 0.08 / 730, under a cent: four decimals
    assert cost.monthly_usd == "3.20"
    assert cost.tiering_savings_percent == 99
    assert cost.basis is not None
    assert cost.basis.startswith("Hibernated: 40 GiB SSD kept @ $0.08/GiB-month")


def test_a_cold_collection_pays_for_one_snapshot_copy_in_object_storage() -> None:
    cost = vector_collection_cost(
        dataclasses.replace(FOOTPRINT, state=VectorState.COLD), DEFAULT_CATALOG
    )
    # One copy of 40 GiB across 2 replicas = 20 GiB x 0.023 $/GiB-month = 0.46 $/month.
    assert cost.monthly_usd == "0.46"
    assert cost.hourly_usd == "0.0006"
    assert cost.tiering_savings_percent == 100
    assert cost.basis is not None
    assert cost.basis.startswith("Cold: 20 GiB snapshot in object storage @ $0.023/GiB-month")


def test_without_a_reduction_factor_there_is_no_savings_figure() -> None:
    cost = vector_collection_cost(
        dataclasses.replace(FOOTPRINT, memory_reduction_factor=None), DEFAULT_CATALOG
    )
    assert cost.hourly_usd == "0.17"
    assert cost.tiering_savings_percent is None


def test_an_all_ram_full_precision_collection_saves_nothing() -> None:
    cost = vector_collection_cost(
        dataclasses.replace(FOOTPRINT, memory_reduction_factor=1.0), DEFAULT_CATALOG
    )
    assert cost.tiering_savings_percent == 0


def test_monthly_is_the_exact_hourly_times_730_not_the_rounded_hourly() -> None:
    cost = vector_collection_cost(FOOTPRINT, DEFAULT_CATALOG)
    assert cost.monthly_usd != f"{Decimal(cost.hourly_usd or 0) * 730:.2f}"  # 124.10
    assert cost.monthly_usd == "126.13"


@pytest.mark.parametrize("state", list(VectorState))
def test_every_state_yields_a_valid_status(state: VectorState) -> None:
    cost = vector_collection_cost(dataclasses.replace(FOOTPRINT, state=state), DEFAULT_CATALOG)
    CollectionCostStatus.model_validate(cost.to_wire())


@given(
    memory=st.integers(0, 1 << 44),
    disk=st.integers(0, 1 << 46),
    replicas=st.integers(1, 16),
    factor=st.floats(1.0, 64.0),
)
def test_tiering_never_costs_more_than_all_ram_and_colder_is_never_dearer(
    memory: int, disk: int, replicas: int, factor: float
) -> None:
    footprint = VectorFootprint(
        memory_bytes=memory,
        disk_bytes=disk,
        replicas=replicas,
        cpu_cores_per_replica=Decimal(1),
        memory_reduction_factor=factor,
    )
    hourly = [
        Decimal(
            vector_collection_cost(
                dataclasses.replace(footprint, state=state), DEFAULT_CATALOG
            ).hourly_usd
            or "0"
        )
        for state in (VectorState.SERVING, VectorState.HIBERNATED, VectorState.COLD)
    ]
    assert hourly == sorted(hourly, reverse=True)
    savings = vector_collection_cost(footprint, DEFAULT_CATALOG).tiering_savings_percent
    assert savings is not None
    assert 0 <= savings <= 100
