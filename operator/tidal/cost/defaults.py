"""The price catalog Tidal ships: what the operator prices with until `tidal-pricing` is read.

`manifests/pricing-configmap.yaml` carries the same table (a unit test holds them equal), so a
fresh install and an operator that cannot read its ConfigMap report the same dollars.

ILLUSTRATIVE DEFAULTS: plausible list prices so a fresh install shows sensible numbers, not a
quote anyone should bill from. Replace them with negotiated or measured prices.

Basis, as of June 2025 (not re-checked since; GPU prices move often):
- GPU "reserved" (not preemptible): the AWS EC2 On-Demand list price of a Linux instance in
  us-east-1 divided by its GPU count, after AWS's June 2025 P4/P5 price reduction —
  H100 80GB: p5.48xlarge, H200: p5en.48xlarge, A100 80GB: p4de.24xlarge, A100 40GB: p4d.24xlarge,
  L40S: g6e.xlarge, L4: g6.xlarge, A10G: g5.xlarge. Reserved Instances, Savings Plans and
  Capacity Blocks cost less; On-Demand is the conservative ceiling.
  Source: https://aws.amazon.com/ec2/pricing/on-demand/ (June 2025).
- GPU "spot": a typical EC2 Spot discount for the family (roughly 40-60 % off On-Demand); Spot
  prices move every few minutes, so these are an average, not a quote.
  Sources: https://aws.amazon.com/ec2/spot/pricing/ and the EC2 Spot Instance Advisor (June 2025).
- us-west-2 (Oregon) lists these instance types at the us-east-1 (N. Virginia) price.
- eu-west-1 (Ireland) is priced about 10 % above us-east-1, as EC2 GPU instances typically are
  (derived, not read off the price list).
- cpuCoreHourlyUSD / memoryGiBHourlyUSD: Google Compute Engine N2 custom machine type per-vCPU and
  per-GiB rates. Source: https://cloud.google.com/compute/vm-instance-pricing (June 2025).
- storageGiBMonthlyUSD: ssd = Amazon EBS gp3 (https://aws.amazon.com/ebs/pricing/),
  objectStore = Amazon S3 Standard, first 50 TB (https://aws.amazon.com/s3/pricing/) (June 2025).
- gpuAliases: GKE's `cloud.google.com/gke-accelerator` names, for clusters whose nodes carry
  those values in `nvidia.com/gpu.product`.

Pure data: no IO.
"""

from __future__ import annotations

from typing import Any, Final

from tidal.cost.catalog import PriceCatalog

__all__ = ["DEFAULT_CATALOG", "DEFAULT_PRICING"]


def _gpu(
    us_east_1_reserved: str, us_east_1_spot: str, eu_west_1_reserved: str, eu_west_1_spot: str
) -> dict[str, dict[str, str]]:
    return {
        "spot": {
            "us-east-1": us_east_1_spot,
            "us-west-2": us_east_1_spot,
            "eu-west-1": eu_west_1_spot,
        },
        "reserved": {
            "us-east-1": us_east_1_reserved,
            "us-west-2": us_east_1_reserved,
            "eu-west-1": eu_west_1_reserved,
        },
    }


# Wire form, exactly as `pricing.yaml` spells it.
DEFAULT_PRICING: Final[dict[str, Any]] = {
    "gpuHourlyUSD": {
        # p5.48xlarge $55.04/h / 8
        "NVIDIA-H100-80GB-HBM3": _gpu("6.88", "3.44", "7.57", "3.79"),
        # p5en.48xlarge $63.30/h / 8
        "NVIDIA-H200": _gpu("7.91", "3.96", "8.70", "4.35"),
        # p4de.24xlarge $27.45/h / 8
        "NVIDIA-A100-SXM4-80GB": _gpu("3.43", "1.72", "3.77", "1.89"),
        # p4d.24xlarge $21.96/h / 8
        "NVIDIA-A100-SXM4-40GB": _gpu("2.75", "1.37", "3.02", "1.51"),
        # g6e.xlarge $1.861/h
        "NVIDIA-L40S": _gpu("1.86", "0.74", "2.07", "0.83"),
        # g6.xlarge $0.8048/h
        "NVIDIA-L4": _gpu("0.80", "0.36", "0.89", "0.40"),
        # g5.xlarge $1.006/h
        "NVIDIA-A10G": _gpu("1.01", "0.44", "1.12", "0.49"),
    },
    "gpuAliases": {
        "nvidia-h100-80gb": "NVIDIA-H100-80GB-HBM3",
        "nvidia-h200-141gb": "NVIDIA-H200",
        "nvidia-a100-80gb": "NVIDIA-A100-SXM4-80GB",
        "nvidia-tesla-a100": "NVIDIA-A100-SXM4-40GB",
        "nvidia-l4": "NVIDIA-L4",
    },
    "cpuCoreHourlyUSD": "0.0316",
    "memoryGiBHourlyUSD": "0.0042",
    "storageGiBMonthlyUSD": {"ssd": "0.08", "objectStore": "0.023"},
}

DEFAULT_CATALOG: Final = PriceCatalog.model_validate(DEFAULT_PRICING)
