"""Dollars in status: the price catalog, endpoint cost and budget, vector collection cost.

One function per decision, each pure (no IO, no clock, no Kopf):

- `catalog_from_configmap(configmap.data) -> PriceCatalog` (raises `PricingError`: keep the last
  good catalog; `DEFAULT_CATALOG` until one was read);
- `endpoint_cost(placed, tokens_per_second, catalog) -> EndpointCostStatus`;
- `budget_condition(spec.cost, cost) -> Condition` (`WithinBudget`);
- `vector_collection_cost(footprint, catalog) -> CollectionCostStatus`.
"""

from tidal.cost.catalog import (
    CONFIGMAP_KEY,
    CONFIGMAP_NAME,
    PriceCatalog,
    PricingError,
    catalog_from_configmap,
    parse_pricing,
)
from tidal.cost.collection import VectorFootprint, VectorState, vector_collection_cost
from tidal.cost.defaults import DEFAULT_CATALOG
from tidal.cost.endpoint import PlacedReplica, budget_condition, endpoint_cost

__all__ = [
    "CONFIGMAP_KEY",
    "CONFIGMAP_NAME",
    "DEFAULT_CATALOG",
    "PlacedReplica",
    "PriceCatalog",
    "PricingError",
    "VectorFootprint",
    "VectorState",
    "budget_condition",
    "catalog_from_configmap",
    "endpoint_cost",
    "parse_pricing",
    "vector_collection_cost",
]
