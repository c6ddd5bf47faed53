"""Where a cluster says which GPU a node has: the per-cloud GPU label profiles.

A node's GPU product and memory come from the first profile whose label the node carries:
NVIDIA GPU Feature Discovery (`nvidia.com/gpu.product` / `nvidia.com/gpu.memory`), Karpenter's
AWS provider (`karpenter.k8s.aws/instance-gpu-name` / `instance-gpu-memory`), GKE
(`cloud.google.com/gke-accelerator`). Products are named as GFD names them (the pricing
catalog's names, e.g. `NVIDIA-H100-80GB-HBM3`, and what `spec.gpu.products` lists); each
profile maps them to its own label values.

Which label Tidal *requires* in a replica's node affinity is one profile, chosen by
`TIDAL_GPU_LABEL_PROFILE` (default `gfd`): on a cluster whose GPU nodes are launched by an
autoscaler, GFD's labels appear only once the GPU operator has run on a node, so a pod that
requires them stays Pending (Karpenter documents this). There, choose the profile of labels the
capacity carries before it exists (`karpenter-aws` on EKS with Karpenter, `gke` on GKE).

Owns: the profiles, the mapping of product names, reading a node's labels. Must not: decide
(which GPUs fit is `tidal.placement`), or know Kubernetes objects beyond a labels mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from tidal.api.labels import (
    GKE_ACCELERATOR,
    KARPENTER_GPU_MEMORY_MIB,
    KARPENTER_GPU_NAME,
    NODE_GPU_MEMORY_MIB,
    NODE_GPU_PRODUCT,
)

__all__ = ["DEFAULT_PROFILE", "PROFILES", "GpuLabelProfile", "gpu_of", "profile"]


@dataclass(frozen=True)
class GpuLabelProfile:
    """One convention: the label naming the GPU product, the one giving its memory (MiB per
    GPU; None where the convention has none), and the product names it uses (GFD name -> its
    value; a product missing here is spelled as GFD spells it)."""

    name: str
    product_label: str
    memory_label: str | None
    values: Mapping[str, str] = field(default_factory=dict)

    def value_of(self, product: str) -> str:
        """How this profile's label spells `product` (a GFD name)."""
        return self.values.get(product, product)

    def products_of(self, values: Iterable[str]) -> frozenset[str]:
        """Every GFD name one of this profile's `values` may stand for."""
        wanted = set(values)
        named = {product for product, value in self.values.items() if value in wanted}
        return frozenset(named | (wanted - set(self.values.values())))

    def product_of(self, value: str, memory_mib: int | None = None) -> str:
        """The GFD name of this profile's `value`; where one value names several products
        (Karpenter's `a100` is 40 or 80 GB) the one whose memory is nearest `memory_mib`."""
        matches = sorted(p for p, v in self.values.items() if v == value)
        if not matches:
            return value
        if len(matches) > 1 and memory_mib is not None:
            return min(matches, key=lambda p: abs(_MEMORY_MIB.get(p, 0) - memory_mib))
        return matches[-1]


# Per-GPU memory of the products some profile cannot tell apart by name alone.
_MEMORY_MIB: Final[Mapping[str, int]] = {
    "NVIDIA-A100-SXM4-80GB": 81920,
    "NVIDIA-A100-SXM4-40GB": 40960,
}

GFD: Final = GpuLabelProfile("gfd", NODE_GPU_PRODUCT, NODE_GPU_MEMORY_MIB)
KARPENTER_AWS: Final = GpuLabelProfile(
    "karpenter-aws",
    KARPENTER_GPU_NAME,
    KARPENTER_GPU_MEMORY_MIB,
    {
        "NVIDIA-H100-80GB-HBM3": "h100",
        "NVIDIA-H200": "h200",
        "NVIDIA-A100-SXM4-80GB": "a100",
        "NVIDIA-A100-SXM4-40GB": "a100",
        "NVIDIA-L40S": "l40s",
        "NVIDIA-L4": "l4",
        "NVIDIA-A10G": "a10g",
    },
)
GKE: Final = GpuLabelProfile(
    "gke",
    GKE_ACCELERATOR,
    None,
    {
        "NVIDIA-H100-80GB-HBM3": "nvidia-h100-80gb",
        "NVIDIA-H200": "nvidia-h200-141gb",
        "NVIDIA-A100-SXM4-80GB": "nvidia-a100-80gb",
        "NVIDIA-A100-SXM4-40GB": "nvidia-tesla-a100",
        "NVIDIA-L4": "nvidia-l4",
    },
)
# Read in this order: GFD's labels, when a node has them, are the most precise.
PROFILES: Final[Mapping[str, GpuLabelProfile]] = {p.name: p for p in (GFD, KARPENTER_AWS, GKE)}
DEFAULT_PROFILE: Final = GFD


def profile(name: str) -> GpuLabelProfile:
    """The profile called `name`; a ValueError names the ones there are."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ValueError(f"unknown GPU label profile {name!r} (one of: {known})") from None


def gpu_of(labels: Mapping[str, str]) -> tuple[str | None, int | None]:
    """A node's GPU product (GFD name) and memory per GPU in MiB, each from the first profile
    whose label the node carries; None for what no profile's label says."""
    memory = next(
        (
            _whole(labels.get(known.memory_label))
            for known in PROFILES.values()
            if known.memory_label and _whole(labels.get(known.memory_label)) is not None
        ),
        None,
    )
    for known in PROFILES.values():
        value = labels.get(known.product_label)
        if value:
            return known.product_of(value, memory), memory
    return None, memory


def _whole(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
