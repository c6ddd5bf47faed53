"""What node autoscalers can still add, as the planner sees it: Karpenter NodePools and the pools
declared in the `tidal-capacity` ConfigMap -> `ProvisionablePool`.

On EKS, GKE or AKS GPU nodes exist only once an autoscaler brings them for Pending pods. Capacity
is therefore what exists (`placement.fleet`) plus what can be provisioned (this module): where a
pool can provision, the planner creates replicas and leaves them Pending for the autoscaler,
instead of shrinking spot to the spot nodes that happen to exist or placing nothing at all.

Karpenter NodePools (`karpenter.sh/v1`): one pool per capacity type the NodePool allows
(`karpenter.sh/capacity-type`: spot -> spot; on-demand and reserved -> reserved; no requirement
-> on-demand, Karpenter's default), restricted by its requirements and template labels on region
and GPU product, its GPU shape where its requirements say it (Karpenter's AWS
`instance-gpu-count` / `instance-gpu-memory`), its taints, and the GPUs its `limits` still allow
(`limits["nvidia.com/gpu"]` less `status.resources["nvidia.com/gpu"]`). A NodePool counts only when
it mentions GPUs (a requirement on a GPU label, a `nvidia.com/gpu` limit or taint): a general
NodePool may well launch GPU instances, but nothing says it will, and counting it would leave
replicas Pending on a promise. A NodePool whose `Ready` condition is False provisions nothing.

Declared pools (`tidal-capacity`, key `capacity.yaml`), for cluster-autoscaler and managed node
groups, which publish no such object: see `DeclaredPool` and docs/inferenceendpoint.md.

Must not: talk to the API server (the runtime reads the objects), read the clock, or decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tidal.api.conventions import DEFAULT_CONVENTIONS, Conventions
from tidal.api.labels import (
    GKE_ACCELERATOR,
    GPU_RESOURCE,
    KARPENTER_CAPACITY_TYPE,
    KARPENTER_GPU_COUNT,
    KARPENTER_GPU_MANUFACTURER,
    KARPENTER_GPU_MEMORY_MIB,
    KARPENTER_GPU_NAME,
    NODE_GPU_COUNT,
    NODE_GPU_MEMORY_MIB,
    NODE_GPU_PRODUCT,
    NODE_INSTANCE_TYPE,
    NODE_REGION,
    CapacityType,
)
from tidal.api.parsing import parse_yaml
from tidal.api.wire import as_list, as_mapping, quantity_int
from tidal.errors import PermanentError
from tidal.placement.fleet import read_taint
from tidal.placement.model import NodeInfo, ProvisionablePool, Taint

__all__ = [
    "CAPACITY_KEY",
    "CapacityError",
    "DeclaredPool",
    "declared_pools",
    "nodepool_pools",
    "provisionable",
]

# The ConfigMap key that holds the declared pools.
CAPACITY_KEY: Final = "capacity.yaml"
# Karpenter's capacity types, as Tidal counts them.
_KARPENTER_TYPES: Final[Mapping[str, CapacityType]] = {
    "spot": CapacityType.SPOT,
    "on-demand": CapacityType.RESERVED,
    "reserved": CapacityType.RESERVED,
}
# Requirement keys that say a NodePool is about GPUs.
_GPU_KEYS: Final = frozenset(
    {
        KARPENTER_GPU_NAME,
        KARPENTER_GPU_MANUFACTURER,
        KARPENTER_GPU_COUNT,
        KARPENTER_GPU_MEMORY_MIB,
        NODE_GPU_PRODUCT,
        NODE_GPU_MEMORY_MIB,
        NODE_GPU_COUNT,
        GKE_ACCELERATOR,
    }
)


class CapacityError(PermanentError):
    """The `tidal-capacity` ConfigMap does not parse; the message names the field."""


# --- Karpenter NodePools -------------------------------------------------------------------------


def nodepool_pools(
    nodepools: Iterable[Mapping[str, Any]], conventions: Conventions = DEFAULT_CONVENTIONS
) -> tuple[ProvisionablePool, ...]:
    """The pools of every NodePool that can provision GPUs, sorted by name, read by the
    cluster's `conventions` (spot taints, GPU labels, instance types)."""
    pools: list[ProvisionablePool] = []
    for nodepool in nodepools:
        pools.extend(_nodepool(nodepool, conventions))
    return tuple(sorted(pools, key=lambda p: (p.name, p.capacity_type)))


def _nodepool(nodepool: Mapping[str, Any], conventions: Conventions) -> list[ProvisionablePool]:
    metadata = as_mapping(nodepool.get("metadata"))
    spec = as_mapping(nodepool.get("spec"))
    template = as_mapping(as_mapping(spec.get("template")).get("spec"))
    raw_labels = as_mapping(
        as_mapping(as_mapping(spec.get("template")).get("metadata")).get("labels")
    )
    labels = {str(key): str(value) for key, value in raw_labels.items()}
    requirements = {
        str(r.get("key")): r
        for r in as_list(template.get("requirements"))
        if isinstance(r, Mapping)
    }
    taints = tuple(
        _taint(t, conventions) for t in as_list(template.get("taints")) if isinstance(t, Mapping)
    )
    limits = as_mapping(spec.get("limits"))
    gpu_types = _gpu_instance_types(requirements, labels, conventions)
    if not _ready(nodepool) or not (
        gpu_types or _about_gpus(requirements, labels, limits, taints, conventions)
    ):
        return []
    room = None
    if GPU_RESOURCE in limits:
        status = as_mapping(nodepool.get("status"))
        used = quantity_int(as_mapping(status.get("resources")).get(GPU_RESOURCE))
        room = max(0, quantity_int(limits[GPU_RESOURCE]) - used)
    name = f"NodePool {metadata.get('name', '')}"
    shape = {
        "regions": _allowed(requirements.get(NODE_REGION), labels.get(NODE_REGION)),
        "gpu_products": _products(requirements, labels, conventions),
    }
    count = requirements.get(KARPENTER_GPU_COUNT) or requirements.get(NODE_GPU_COUNT)
    memory = requirements.get(KARPENTER_GPU_MEMORY_MIB) or requirements.get(NODE_GPU_MEMORY_MIB)
    types = _capacity_types(
        requirements.get(KARPENTER_CAPACITY_TYPE), labels.get(KARPENTER_CAPACITY_TYPE)
    )
    return [
        ProvisionablePool(
            name=name,
            capacity_type=capacity_type,
            regions=shape["regions"],
            gpu_products=shape["gpu_products"],
            gpus_per_node=_largest(count) or _most(gpu_types, conventions, "count"),
            gpu_memory_mib=_largest(memory) or _most(gpu_types, conventions, "memory_mib"),
            gpu_room=room,
            taints=taints,
        )
        for capacity_type in sorted(types)
    ]


def _ready(nodepool: Mapping[str, Any]) -> bool:
    for condition in as_list(as_mapping(nodepool.get("status")).get("conditions")):
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition.get("status") != "False"
    return True  # not reported yet: Karpenter has not judged it, assume it works


def _about_gpus(
    requirements: Mapping[str, Any],
    labels: Mapping[str, str],
    limits: Mapping[str, Any],
    taints: Sequence[Taint],
    conventions: Conventions,
) -> bool:
    keys = _GPU_KEYS | {known.product_label for known in conventions.profiles}
    return (
        any(key in keys for key in [*requirements, *labels])
        or GPU_RESOURCE in limits
        or any(taint.key == GPU_RESOURCE for taint in taints)
    )


def _capacity_types(requirement: Mapping[str, Any] | None, label: str | None) -> set[CapacityType]:
    """The capacity types a NodePool launches (Karpenter defaults to on-demand)."""
    if label is not None:
        offered = {label}
    elif requirement is None:
        offered = {"on-demand"}
    else:
        values = {str(v) for v in as_list(requirement.get("values"))}
        operator = requirement.get("operator")
        if operator == "In":
            offered = values
        elif operator == "NotIn":
            offered = set(_KARPENTER_TYPES) - values
        elif operator == "Exists":
            offered = set(_KARPENTER_TYPES)
        else:
            offered = set()
    return {_KARPENTER_TYPES[v] for v in offered if v in _KARPENTER_TYPES}


def _allowed(requirement: Mapping[str, Any] | None, label: str | None) -> frozenset[str] | None:
    """The values a requirement (or a template label) pins a key to; None: not pinned."""
    if label is not None:
        return frozenset({label})
    if requirement is None or requirement.get("operator") != "In":
        return None
    return frozenset(str(v) for v in as_list(requirement.get("values")))


def _products(
    requirements: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
    conventions: Conventions,
) -> frozenset[str] | None:
    """The GPU products (GFD names) a NodePool pins, by any profile's product label, else by
    its instance types where the conventions map every one of them to a GPU."""
    for known in conventions.profiles:
        values = _allowed(requirements.get(known.product_label), labels.get(known.product_label))
        if values is not None:
            return known.products_of(values)
    types = _gpu_instance_types(requirements, labels, conventions)
    if types:
        return frozenset(conventions.instance_gpus[t].product for t in types)
    return None


def _gpu_instance_types(
    requirements: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
    conventions: Conventions,
) -> frozenset[str]:
    """The instance types a NodePool pins, when the conventions map each to its GPUs."""
    types = _allowed(requirements.get(NODE_INSTANCE_TYPE), labels.get(NODE_INSTANCE_TYPE))
    if not types or not types <= conventions.instance_gpus.keys():
        return frozenset()
    return types


def _most(
    types: frozenset[str], conventions: Conventions, what: Literal["count", "memory_mib"]
) -> int | None:
    """The most GPUs (or GPU memory) any of the pinned instance types has; None: not known."""
    known = [getattr(conventions.instance_gpus[t], what) for t in types]
    return max(known) if known and None not in known else None


def _largest(requirement: Mapping[str, Any] | None) -> int | None:
    """The largest integer a requirement allows (In: its largest value; Lt n: n - 1)."""
    if requirement is None:
        return None
    values = [quantity_int(v) for v in as_list(requirement.get("values"))]
    operator = requirement.get("operator")
    if operator == "In" and values:
        return max(values)
    if operator == "Lt" and values:
        return max(0, values[0] - 1)
    return None


def _taint(raw: Mapping[str, Any], conventions: Conventions) -> Taint:
    return read_taint(
        conventions, str(raw.get("key", "")), str(raw.get("value", "")), str(raw.get("effect", ""))
    )


# --- pools declared in the tidal-capacity ConfigMap ---------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class _DeclaredTaint(_Model):
    key: str = Field(min_length=1)
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class DeclaredPool(_Model):
    """A node group a cluster-autoscaler (or a managed node group) can grow.

    `nodeLabels` select the nodes it already made (e.g. `eks.amazonaws.com/nodegroup: gpu-spot`);
    it can add `maxNodes` less those, each with `gpusPerNode` GPUs.
    """

    name: str = Field(min_length=1, max_length=253)
    capacity_type: CapacityType
    regions: list[str] = Field(min_length=1)
    gpus_per_node: int = Field(ge=1, alias="gpusPerNode")
    max_nodes: int = Field(ge=0)
    node_labels: dict[str, str] = Field(min_length=1)
    gpu_products: list[str] = Field(default_factory=list)
    gpu_memory_mib: int | None = Field(default=None, ge=1, alias="gpuMemoryMiB")
    taints: list[_DeclaredTaint] = Field(default_factory=list)


class _Declared(_Model):
    pools: list[DeclaredPool] = Field(default_factory=list)


def declared_pools(data: Mapping[str, str] | None) -> tuple[DeclaredPool, ...]:
    """The pools of the `tidal-capacity` ConfigMap's data (none without the ConfigMap); a
    CapacityError names each field that does not parse."""
    text = (data or {}).get(CAPACITY_KEY)
    if text is None:
        return ()
    parsed = parse_yaml(_Declared, text, CAPACITY_KEY, CapacityError)
    names = [pool.name for pool in parsed.pools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CapacityError(f"{CAPACITY_KEY}: pools.name repeated: {', '.join(duplicates)}")
    return tuple(parsed.pools)


def provisionable(
    nodepools: Sequence[ProvisionablePool],
    declared: Sequence[DeclaredPool],
    nodes: Sequence[NodeInfo],
    conventions: Conventions = DEFAULT_CONVENTIONS,
) -> tuple[ProvisionablePool, ...]:
    """Every pool the planner may count: the NodePools' as read, and each declared pool with
    its room (its nodes counted among `nodes` by `nodeLabels`)."""
    pools = list(nodepools)
    for pool in declared:
        existing = sum(
            1
            for node in nodes
            if all(node.labels.get(key) == value for key, value in pool.node_labels.items())
        )
        pools.append(
            ProvisionablePool(
                name=f"declared pool {pool.name}",
                capacity_type=pool.capacity_type,
                regions=frozenset(pool.regions),
                gpu_products=frozenset(pool.gpu_products) if pool.gpu_products else None,
                gpus_per_node=pool.gpus_per_node,
                gpu_memory_mib=pool.gpu_memory_mib,
                gpu_room=max(0, pool.max_nodes - existing) * pool.gpus_per_node,
                taints=tuple(
                    read_taint(conventions, t.key, t.value, t.effect) for t in pool.taints
                ),
            )
        )
    return tuple(pools)
