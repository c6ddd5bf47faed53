"""The benchmark's view of the price catalog: every price it uses, dated, with its source, and
the public prices its spot discounts were checked against.

Owns: the dated table the report prints (`rows`). Must not: change a price (the simulation
prices with `tidal.cost.DEFAULT_CATALOG`, whose module docstring gives the basis).

The operator's catalog (`tidal.cost.defaults`) is dated June 2025 and names its sources (the
AWS EC2 On-Demand and Spot pricing pages and the Spot Instance Advisor); its spot prices are a
typical family discount, not a quote. The checks below are third-party summaries found on
2026-03 pages (search, not the providers' price APIs: those are not reachable from here), so
they are a plausibility check of the discount's size, not a re-pricing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tidal.api.labels import CapacityType
from tidal.cost import DEFAULT_CATALOG

__all__ = ["CATALOG_DATE", "CHECKS", "COMMITMENT_SOURCES", "Row", "rows"]

CATALOG_DATE: Final = "2025-06 (tidal.cost.defaults; not re-checked by the operator since)"


@dataclass(frozen=True)
class Row:
    product: str
    instance: str
    on_demand: float
    spot: float
    source: str

    @property
    def discount_percent(self) -> float:
        return 100 * (1 - self.spot / self.on_demand)


# The instance each product's price is read from (tidal.cost.defaults) and its source.
_INSTANCES: Final = {
    "NVIDIA-H100-80GB-HBM3": "p5.48xlarge / 8",
    "NVIDIA-A100-SXM4-80GB": "p4de.24xlarge / 8",
    "NVIDIA-L40S": "g6e.xlarge",
    "NVIDIA-L4": "g6.xlarge",
}
_SOURCE: Final = (
    "on-demand: aws.amazon.com/ec2/pricing/on-demand (2025-06); spot: a typical EC2 Spot "
    "discount for the family, aws.amazon.com/ec2/spot/pricing and the Spot Instance Advisor "
    "(2025-06)"
)

# Public figures the spot discounts were checked against (retrieved 2026-03).
CHECKS: Final = (
    (
        "H100 spot 50-65% below on-demand across AWS/GCP/Azure; 1-year commitments 35-40% off",
        "digiterialabs.com/ai/insights/cloud-gpu-pricing-q1-2026 (Q1 2026)",
    ),
    (
        "AWS P5 spot ~$2.00-2.50 per GPU-hour against ~$3.90 on-demand (36-49% off)",
        "costnimbus.com/article/gpu-cost-management-ml-teams (2026-03)",
    ),
    (
        "spot/preemptible 50-80% below on-demand; reserved 1-3 years 30-60% off",
        "computespec.pages.dev/learn/pricing/cloud-gpu-pricing-explained",
    ),
    (
        "1-year reserved p5.48xlarge, partial upfront, ~47% below on-demand",
        "disintermediate.global/insights/gpu-cloud-pricing-models (Q1 2026)",
    ),
)
COMMITMENT_SOURCES: Final = (
    "35-40% (digiterialabs, H100 1-year committed), 30-60% (computespec), ~47% "
    "(disintermediate, partial upfront); AWS: EC2 Instance Savings Plans up to 72% for 3 years "
    "(aws.amazon.com/savingsplans). The benchmark uses 40%: a 1-year, no-upfront term."
)


def rows(region: str = "us-east-1") -> list[Row]:
    """The catalog's GPU prices the benchmark's fleet uses, in `region`."""
    out = []
    for product, instance in _INSTANCES.items():
        od = DEFAULT_CATALOG.gpu_price(product, CapacityType.RESERVED, region)
        spot = DEFAULT_CATALOG.gpu_price(product, CapacityType.SPOT, region)
        if od is None or spot is None:
            continue
        out.append(Row(product, instance, float(od), float(spot), _SOURCE))
    return out
