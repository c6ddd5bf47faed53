"""What an InferenceEndpoint costs: `status.cost` and the `WithinBudget` condition.

Owns the pricing of the replicas actually placed (GPU product x capacity type x region x GPU
count, from the nodes their pods run on), dollars per million generated tokens from the measured
throughput, what spot saves against the same replicas all on reserved capacity, and the budget
verdict against `spec.cost.maxHourlyUSD`.

Rules: every sum is exact `Decimal`; status money is rounded half-up to the cent. A replica whose
price the catalog lacks makes the hourly cost unknown (`None`) rather than understated, and the
`basis` names the missing key. Per-million is `None` when throughput is unknown or zero: an idle
endpoint's cost per token is undefined, not infinite.

Pure: no IO, no clock, no Kopf.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Final, NamedTuple

from tidal.api.common import WITHIN_BUDGET, Condition
from tidal.api.endpoint import EndpointCostSpec, EndpointCostStatus
from tidal.api.labels import CapacityType
from tidal.cost.catalog import CONFIGMAP_NAME, PriceCatalog
from tidal.cost.money import from_float, money, percent_saved

__all__ = [
    "NO_BUDGET",
    "OVER_BUDGET",
    "PRICE_UNKNOWN",
    "WITHIN_BUDGET_REASON",
    "PlacedReplica",
    "budget_condition",
    "endpoint_cost",
]

WITHIN_BUDGET_REASON: Final = "WithinBudget"
OVER_BUDGET: Final = "OverBudget"
PRICE_UNKNOWN: Final = "PriceUnknown"
NO_BUDGET: Final = "NoBudget"

_TOKENS_PER_MILLION: Final = Decimal(1_000_000)
_SECONDS_PER_HOUR: Final = Decimal(3600)
_BASIS_LIMIT: Final = 1024


class PlacedReplica(NamedTuple):
    """One running replica as priced: read off the node its pod is bound to.

    `product` is the node's `nvidia.com/gpu.product` (None when unlabelled), `capacity_type` its
    spot/reserved marker, `region` its `topology.kubernetes.io/region` (None when unlabelled),
    `gpu_count` the GPUs the replica requests.
    """

    product: str | None
    capacity_type: CapacityType | str
    region: str | None
    gpu_count: int


class _Group(NamedTuple):
    capacity_type: CapacityType
    product: str
    region: str


def endpoint_cost(
    placed: Sequence[PlacedReplica | tuple[str | None, str, str | None, int]],
    tokens_per_second: float | None,
    catalog: PriceCatalog,
    *,
    tokens_source: str | None = None,
) -> EndpointCostStatus:
    """`status.cost` for the replicas in `placed` at the measured `tokens_per_second`.

    `tokens_source` says where throughput came from (`Measurement.describe()`, e.g.
    `vllm over 300s`) and is quoted in `basis`.
    """
    replicas = [PlacedReplica(*replica) for replica in placed]
    if not replicas:
        return EndpointCostStatus(hourly_usd="0.00", basis="no replicas placed")

    gpus: dict[_Group, int] = {}
    unpriceable: list[str] = []
    for replica in replicas:
        capacity = CapacityType(replica.capacity_type)
        if replica.product is None or replica.region is None:
            unpriceable.append(
                f"a {capacity} replica on a node without "
                + ("an nvidia.com/gpu.product" if replica.product is None else "a region")
                + " label"
            )
            continue
        group = _Group(capacity, catalog.canonical_product(replica.product), replica.region)
        gpus[group] = gpus.get(group, 0) + replica.gpu_count

    prices: dict[_Group, Decimal] = {}
    for group in gpus:
        price = catalog.gpu_price(group.product, group.capacity_type, group.region)
        if price is None:
            unpriceable.append(
                f"{group.product} {group.capacity_type} {group.region} "
                f"(no price in {CONFIGMAP_NAME})"
            )
        else:
            prices[group] = price
    if unpriceable:
        return EndpointCostStatus(basis=_clip("cost unknown: " + "; ".join(unpriceable)))

    ordered = sorted(gpus, key=_order)
    hourly = sum((prices[g] * gpus[g] for g in ordered), Decimal(0))
    terms = [
        f"{gpus[g]}x {g.product} {g.capacity_type} {g.region} @ ${prices[g]}/GPU-h" for g in ordered
    ]
    hourly_usd = money(hourly)
    basis = " + ".join(terms) + f" = ${hourly_usd}/h"

    savings, savings_note = _spot_savings(ordered, gpus, hourly, catalog)
    if savings_note:
        basis += f"; {savings_note}"

    per_million = None
    if tokens_per_second is None:
        basis += "; no tokens/s measured"
    elif tokens_per_second <= 0:
        basis += f"; no tokens generated ({tokens_source or 'measured'})"
    else:
        rate = from_float(tokens_per_second)
        per_million = money(hourly / (rate * _SECONDS_PER_HOUR) * _TOKENS_PER_MILLION)
        source = f" from {tokens_source}" if tokens_source else ""
        basis += f"; {tokens_per_second:g} tokens/s{source}"

    return EndpointCostStatus(
        hourly_usd=hourly_usd,
        per_million_tokens_usd=per_million,
        spot_savings_percent=savings,
        basis=_clip(basis),
    )


def budget_condition(
    cost_spec: EndpointCostSpec | None, cost: EndpointCostStatus, *, generation: int | None = None
) -> Condition:
    """`WithinBudget` for `cost` against `spec.cost.maxHourlyUSD` (compared as displayed)."""
    budget = cost_spec.max_hourly if cost_spec is not None else None
    if budget is None:
        return Condition(
            type=WITHIN_BUDGET,
            status="True",
            reason=NO_BUDGET,
            message="spec.cost.maxHourlyUSD is not set",
            observed_generation=generation,
        )
    if cost.hourly_usd is None:
        return Condition(
            type=WITHIN_BUDGET,
            status="Unknown",
            reason=PRICE_UNKNOWN,
            message=f"budget ${budget}/h; {cost.basis or 'cost unknown'}",
            observed_generation=generation,
        )
    hourly = Decimal(cost.hourly_usd)
    if hourly > budget:
        return Condition(
            type=WITHIN_BUDGET,
            status="False",
            reason=OVER_BUDGET,
            message=f"${cost.hourly_usd}/h is above the ${budget}/h budget",
            observed_generation=generation,
        )
    return Condition(
        type=WITHIN_BUDGET,
        status="True",
        reason=WITHIN_BUDGET_REASON,
        message=f"${cost.hourly_usd}/h is within the ${budget}/h budget",
        observed_generation=generation,
    )


def _spot_savings(
    groups: Iterable[_Group], gpus: dict[_Group, int], hourly: Decimal, catalog: PriceCatalog
) -> tuple[int | None, str | None]:
    """Percent saved against the same GPUs on reserved capacity in the same regions."""
    baseline = Decimal(0)
    spot_seen = False
    for group in groups:
        if group.capacity_type is CapacityType.SPOT:
            spot_seen = True
        reserved = catalog.gpu_price(group.product, CapacityType.RESERVED, group.region)
        if reserved is None:
            return None, (
                f"no reserved price for {group.product} {group.region} to compare spot with"
            )
        baseline += reserved * gpus[group]
    if not spot_seen:
        return 0, None
    return percent_saved(hourly, baseline), f"all-reserved ${money(baseline)}/h"


def _order(group: _Group) -> tuple[int, str, str]:
    # Spot first, then reserved: the basis reads like the split it explains.
    return (0 if group.capacity_type is CapacityType.SPOT else 1, group.product, group.region)


def _clip(text: str) -> str:
    return text if len(text) <= _BASIS_LIMIT else text[: _BASIS_LIMIT - 3] + "..."
