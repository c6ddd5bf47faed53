"""What a VectorCollection costs: compute, memory and storage, hot and cold, and what tiering saves.

Owns `status.cost` of a collection from its sizing estimate (`tidal.sizing` computes the bytes;
this module only prices them) and its state:

- Serving: engine pods (vCPU x replicas) + RAM (`memoryBytes`, already across replicas) +
  block volumes (`diskBytes`, across replicas) at the SSD price.
- Hibernated (scaled to zero, volumes kept): the volumes only.
- Cold (snapshots offloaded to object storage, volumes released): one copy of the data
  (`diskBytes / replicas`) at the object-store price.

`tieringSavingsPercent` compares with the same collection serving with every vector in RAM at
full precision: RAM = `memoryBytes x memoryReductionFactor`, same vCPU and volumes. Monthly is
hourly x 730 (the price lists' month). Pure: no IO, no clock, no Kopf.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from enum import StrEnum
from typing import Final

from tidal.api.collection import CollectionCostStatus, StorageTier
from tidal.cost.catalog import PriceCatalog
from tidal.cost.money import HOURS_PER_MONTH, from_float, money, percent_saved

__all__ = ["VectorFootprint", "VectorState", "vector_collection_cost"]

_GIB: Final = Decimal(1 << 30)


class VectorState(StrEnum):
    """Where a collection's data lives now, which decides what is billed."""

    SERVING = "Serving"
    HIBERNATED = "Hibernated"
    COLD = "Cold"


@dataclasses.dataclass(frozen=True)
class VectorFootprint:
    """The numbers a collection is priced from: its sizing estimate and its state.

    `memory_bytes` and `disk_bytes` are `status.estimate` (across replicas);
    `memory_reduction_factor` is the estimate's `memoryReductionFactor` (None: no baseline, so no
    savings figure); `cpu_cores_per_replica` is the engine pod's CPU request.
    """

    memory_bytes: int
    disk_bytes: int
    replicas: int
    cpu_cores_per_replica: Decimal
    tier: StorageTier = StorageTier.Memory
    state: VectorState = VectorState.SERVING
    memory_reduction_factor: float | None = None


def vector_collection_cost(
    footprint: VectorFootprint, catalog: PriceCatalog
) -> CollectionCostStatus:
    """`status.cost` of a collection with `footprint`, priced with `catalog`."""
    replicas = max(1, footprint.replicas)
    ram_gib = Decimal(footprint.memory_bytes) / _GIB
    disk_gib = Decimal(footprint.disk_bytes) / _GIB
    cores = footprint.cpu_cores_per_replica * replicas

    cpu_rate = catalog.cpu_core_hourly_usd
    ram_rate = catalog.memory_gib_hourly_usd
    ssd_hourly = catalog.storage_gib_monthly_usd.ssd / HOURS_PER_MONTH
    object_hourly = catalog.storage_gib_monthly_usd.object_store / HOURS_PER_MONTH

    compute = cores * cpu_rate
    volumes = disk_gib * ssd_hourly
    if footprint.state is VectorState.SERVING:
        hourly = compute + ram_gib * ram_rate + volumes
        basis = (
            f"Serving ({footprint.tier} tier): {_num(cores)} vCPU @ ${cpu_rate}/h + "
            f"{_num(ram_gib)} GiB RAM @ ${ram_rate}/GiB-h + {_num(disk_gib)} GiB SSD @ "
            f"${catalog.storage_gib_monthly_usd.ssd}/GiB-month"
        )
    elif footprint.state is VectorState.HIBERNATED:
        hourly = volumes
        basis = (
            f"Hibernated: {_num(disk_gib)} GiB SSD kept @ "
            f"${catalog.storage_gib_monthly_usd.ssd}/GiB-month"
        )
    else:
        snapshot_gib = disk_gib / replicas
        hourly = snapshot_gib * object_hourly
        basis = (
            f"Cold: {_num(snapshot_gib)} GiB snapshot in object storage @ "
            f"${catalog.storage_gib_monthly_usd.object_store}/GiB-month"
        )

    savings = None
    if footprint.memory_reduction_factor is not None and footprint.memory_reduction_factor > 0:
        all_ram_gib = ram_gib * from_float(footprint.memory_reduction_factor)
        baseline = compute + all_ram_gib * ram_rate + volumes
        savings = percent_saved(hourly, baseline)
        basis += f"; all-RAM full precision: {_num(all_ram_gib)} GiB RAM, ${money(baseline)}/h"

    return CollectionCostStatus(
        hourly_usd=money(hourly),
        monthly_usd=money(hourly * HOURS_PER_MONTH),
        tiering_savings_percent=savings,
        basis=basis,
    )


def _num(value: Decimal) -> str:
    # One decimal is enough to recognise the quantity; the dollars carry the precision.
    return f"{value.quantize(Decimal('0.1')).normalize():f}"
