"""The price catalog: the `tidal-pricing` ConfigMap's `pricing.yaml`, parsed and validated.

Owns the catalog's shape (`PriceCatalog`), its parser (`parse_pricing`, `catalog_from_configmap`)
and price lookup with GPU product aliases (`PriceCatalog.gpu_price`). A bad table is refused
whole with a `PricingError` naming the key path that is wrong, so the operator keeps the last good
catalog instead of pricing with half a table.

Format of `pricing.yaml` (every price a quoted decimal string in US dollars, never a float)::

    gpuHourlyUSD:                       # per GPU-hour
      <nvidia.com/gpu.product value>:   # e.g. NVIDIA-H100-80GB-HBM3
        spot | reserved:                # tidal.dev/capacity-type
          <topology.kubernetes.io/region>: "3.79"
    gpuAliases:                         # optional: other label values for the same GPU
      <alias product>: <product listed in gpuHourlyUSD>
    cpuCoreHourlyUSD: "0.0316"          # per vCPU-hour (vector collection engines)
    memoryGiBHourlyUSD: "0.0042"        # per GiB-hour of RAM
    storageGiBMonthlyUSD:
      ssd: "0.08"                       # block volumes (hot tier)
      objectStore: "0.023"              # object storage (cold tier snapshots)

Pure: parses text it is given; no IO, no clock, no Kopf.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tidal.api.common import LABEL_VALUE_PATTERN, REGION_PATTERN
from tidal.api.labels import CapacityType
from tidal.errors import PermanentError

__all__ = [
    "CONFIGMAP_KEY",
    "CONFIGMAP_NAME",
    "PriceCatalog",
    "PricingError",
    "catalog_from_configmap",
    "parse_pricing",
]

CONFIGMAP_NAME: Final = "tidal-pricing"
CONFIGMAP_KEY: Final = "pricing.yaml"

# Prices above this are typos (a GPU-hour or a GiB-month costing thousands of dollars).
MAX_PRICE: Final = Decimal("10000")
_DECIMAL = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,6})?$")


class PricingError(PermanentError):
    """The pricing table is invalid; the message names the key path and what is wrong with it."""


def _price(value: Any) -> Decimal:
    # Strings only: a YAML float (3.79) has already been rounded through binary by the parser.
    if not isinstance(value, str):
        raise ValueError(f'must be a quoted decimal string such as "3.79", got {value!r}')
    if not _DECIMAL.fullmatch(value):
        raise ValueError(f'must be a plain decimal such as "3.79", got {value!r}')
    try:
        price = Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already rules this out
        raise ValueError(f"not a decimal: {value!r}") from exc
    if price > MAX_PRICE:
        raise ValueError(f"{value} is above the sanity limit of {MAX_PRICE}")
    return price


Price = Annotated[Decimal, BeforeValidator(_price)]


def _matches(pattern: str, what: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return AfterValidator(check)


Product = Annotated[str, _matches(LABEL_VALUE_PATTERN, "nvidia.com/gpu.product label value")]
Region = Annotated[str, _matches(REGION_PATTERN, "topology.kubernetes.io/region value")]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class StoragePrices(_Model):
    """USD per GiB-month of storage."""

    ssd: Price
    object_store: Price


class PriceCatalog(_Model):
    """Every price Tidal knows, keyed as the cluster labels nodes."""

    gpu_hourly_usd: dict[
        Product, dict[CapacityType, Annotated[dict[Region, Price], Field(min_length=1)]]
    ] = Field(alias="gpuHourlyUSD", min_length=1)
    gpu_aliases: dict[Product, Product] = Field(default_factory=dict)
    cpu_core_hourly_usd: Price = Field(alias="cpuCoreHourlyUSD")
    memory_gib_hourly_usd: Price = Field(alias="memoryGiBHourlyUSD")
    storage_gib_monthly_usd: StoragePrices = Field(alias="storageGiBMonthlyUSD")

    @model_validator(mode="after")
    def _aliases_point_at_priced_products(self) -> Self:
        for alias, target in self.gpu_aliases.items():
            if target not in self.gpu_hourly_usd:
                raise ValueError(f"gpuAliases.{alias}: {target!r} is not a product in gpuHourlyUSD")
            if alias in self.gpu_hourly_usd:
                raise ValueError(
                    f"gpuAliases.{alias}: already a product in gpuHourlyUSD; "
                    "an alias must not shadow a priced product"
                )
        return self

    def canonical_product(self, product: str) -> str:
        """The product name prices are listed under (`product` itself unless it is an alias)."""
        return self.gpu_aliases.get(product, product)

    def gpu_price(self, product: str, capacity_type: CapacityType, region: str) -> Decimal | None:
        """USD per GPU-hour, or None when the catalog has no price for that combination."""
        by_capacity = self.gpu_hourly_usd.get(self.canonical_product(product))
        if by_capacity is None:
            return None
        return by_capacity.get(capacity_type, {}).get(region)


def parse_pricing(text: str) -> PriceCatalog:
    """The catalog in `text` (the `pricing.yaml` document), or `PricingError` naming the bad key."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PricingError(f"{CONFIGMAP_KEY} is not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise PricingError(f"{CONFIGMAP_KEY} must be a mapping, got {type(raw).__name__}")
    try:
        return PriceCatalog.model_validate(raw)
    except ValidationError as exc:
        raise PricingError(_explain(exc)) from exc


def catalog_from_configmap(data: Mapping[str, str] | None) -> PriceCatalog:
    """The catalog in a `tidal-pricing` ConfigMap's `.data`, or `PricingError`.

    Callers keep their last good catalog when this raises: a typo in one price must not blank
    every endpoint's cost.
    """
    text = (data or {}).get(CONFIGMAP_KEY)
    if text is None:
        raise PricingError(f"ConfigMap {CONFIGMAP_NAME} has no key {CONFIGMAP_KEY}")
    return parse_pricing(text)


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"] if not _is_internal(part))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "extra_forbidden":
            message = "is not a known key"
        elif error["type"] == "enum":
            message = "is not a capacity type (expected spot or reserved)"
        problems.append(f"{path}: {message}" if path else message)
    head = f"{CONFIGMAP_NAME} {CONFIGMAP_KEY} is invalid"
    return f"{head}: " + "; ".join(problems)


def _is_internal(part: int | str) -> bool:
    # Pydantic marks dict keys it failed to validate with a `[key]` suffix segment.
    return part == "[key]"
