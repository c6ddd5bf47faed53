"""Where a cluster says which GPU a node has: the per-cloud GPU label profiles.

A node's GPU product and memory come from the first profile whose label the node carries:
NVIDIA GPU Feature Discovery (`nvidia.com/gpu.product` / `nvidia.com/gpu.memory`), Karpenter's
AWS provider (`karpenter.k8s.aws/instance-gpu-name` / `instance-gpu-memory`), GKE
(`cloud.google.com/gke-accelerator`), profiles a cluster declares, and last the instance type
(`node.kubernetes.io/instance-type`) where a mapping says what each carries (AKS, or any cloud
whose nodes name no GPU before the GPU operator ran). Products are named as GFD names them (the
pricing catalog's names, e.g. `NVIDIA-H100-80GB-HBM3`, and what `spec.gpu.products` lists);
each profile maps them to its own label values.

Which label Tidal *requires* in a replica's node affinity is one profile, chosen by the
cluster's conventions (`tidal.api.conventions`; default `gfd`): on a cluster whose GPU nodes are
launched by an autoscaler, GFD's labels appear only once the GPU operator has run on a node, so
a pod that requires them stays Pending (Karpenter documents this). There, choose the profile of
labels the capacity carries before it exists (`karpenter-aws` on EKS with Karpenter, `gke` on
GKE, `instance-type` elsewhere).

Owns: the built-in profiles, the mapping of product names, reading a node's labels. Must not:
decide (which GPUs fit is `tidal.placement`), read configuration (`tidal.api.conventions`), or
know Kubernetes objects beyond a labels mapping.
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
    NODE_INSTANCE_TYPE,
)

__all__ = [
    "DEFAULT_PROFILE",
    "INSTANCE_TYPE",
    "PROFILES",
    "GpuLabelProfile",
    "InstanceGpus",
    "gpu_of",
    "instance_type_profile",
]


@dataclass(frozen=True)
class GpuLabelProfile:
    """One convention: the label naming the GPU product, the one giving its memory (MiB per
    GPU; None where the convention has none), and the product names it uses (GFD name -> its
    values; a product missing here is spelled as GFD spells it). A product may have several
    values: an instance-type profile names every instance type that carries it."""

    name: str
    product_label: str
    memory_label: str | None
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def values_of(self, product: str) -> tuple[str, ...]:
        """How this profile's label spells `product` (a GFD name)."""
        return self.values.get(product, (product,))

    def products_of(self, values: Iterable[str]) -> frozenset[str]:
        """Every GFD name one of this profile's `values` may stand for."""
        wanted = set(values)
        named = {product for product, spelled in self.values.items() if wanted & set(spelled)}
        known = {value for spelled in self.values.values() for value in spelled}
        return frozenset(named | (wanted - known))

    def product_of(self, value: str, memory_mib: int | None = None) -> str:
        """The GFD name of this profile's `value`; where one value names several products
        (Karpenter's `a100` is 40 or 80 GB) the one whose memory is nearest `memory_mib`."""
        matches = sorted(p for p, spelled in self.values.items() if value in spelled)
        if not matches:
            return value
        if len(matches) > 1 and memory_mib is not None:
            return min(matches, key=lambda p: abs(_MEMORY_MIB.get(p, 0) - memory_mib))
        return matches[-1]


def _single(values: Mapping[str, str]) -> Mapping[str, tuple[str, ...]]:
    return {product: (value,) for product, value in values.items()}


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
    _single(
        {
            "NVIDIA-H100-80GB-HBM3": "h100",
            "NVIDIA-H200": "h200",
            "NVIDIA-A100-SXM4-80GB": "a100",
            "NVIDIA-A100-SXM4-40GB": "a100",
            "NVIDIA-L40S": "l40s",
            "NVIDIA-L4": "l4",
            "NVIDIA-A10G": "a10g",
        }
    ),
)
GKE: Final = GpuLabelProfile(
    "gke",
    GKE_ACCELERATOR,
    None,
    _single(
        {
            "NVIDIA-H100-80GB-HBM3": "nvidia-h100-80gb",
            "NVIDIA-H200": "nvidia-h200-141gb",
            "NVIDIA-A100-SXM4-80GB": "nvidia-a100-80gb",
            "NVIDIA-A100-SXM4-40GB": "nvidia-tesla-a100",
            "NVIDIA-L4": "nvidia-l4",
        }
    ),
)
# The name of the profile built from the configured instance types (`instance_type_profile`).
INSTANCE_TYPE: Final = "instance-type"
# Read in this order: GFD's labels, when a node has them, are the most precise.
PROFILES: Final[Mapping[str, GpuLabelProfile]] = {p.name: p for p in (GFD, KARPENTER_AWS, GKE)}
DEFAULT_PROFILE: Final = GFD


@dataclass(frozen=True)
class InstanceGpus:
    """The GPUs one instance type carries (AKS, or any cloud whose nodes name no GPU before the
    GPU operator ran): the product (GFD name), how many, and the memory of each (MiB)."""

    product: str
    count: int
    memory_mib: int | None = None


def instance_type_profile(instance_types: Mapping[str, InstanceGpus]) -> GpuLabelProfile:
    """The profile that names a GPU by `node.kubernetes.io/instance-type`: each product's values
    are the instance types that carry it. Every cloud and autoscaler sets that label from the
    instance type, so it exists before the node does."""
    values: dict[str, list[str]] = {}
    for name, gpus in sorted(instance_types.items()):
        values.setdefault(gpus.product, []).append(name)
    return GpuLabelProfile(
        INSTANCE_TYPE, NODE_INSTANCE_TYPE, None, {p: tuple(v) for p, v in values.items()}
    )


def gpu_of(
    labels: Mapping[str, str],
    profiles: Iterable[GpuLabelProfile] = PROFILES.values(),
    instance_types: Mapping[str, InstanceGpus] | None = None,
) -> tuple[str | None, int | None]:
    """A node's GPU product (GFD name) and memory per GPU in MiB, each from the first of
    `profiles` whose label the node carries, else from its instance type in `instance_types`;
    None for what nothing says."""
    ordered = tuple(profiles)
    instance = (instance_types or {}).get(labels.get(NODE_INSTANCE_TYPE, ""))
    memory = next(
        (
            _whole(labels.get(known.memory_label))
            for known in ordered
            if known.memory_label and _whole(labels.get(known.memory_label)) is not None
        ),
        instance.memory_mib if instance is not None else None,
    )
    for known in ordered:
        value = labels.get(known.product_label)
        if value:
            return known.product_of(value, memory), memory
    if instance is not None:
        return instance.product, memory
    return None, memory


def _whole(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
