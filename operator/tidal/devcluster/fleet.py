"""The simulated fleet: a fleet file (regions x capacity types x GPU products) -> Node objects;
for the elastic fleet also what Karpenter may launch; and how KWOK plays the pods on them.

Owns: the fleet file schemas (static `Fleet`; `ElasticFleet`, recognised by its `karpenter`
section) and their pure rendering: simulated (KWOK-managed) Nodes, Karpenter's instance-types
file (priced from Tidal's pricing catalog), the KWOKNodeClass and NodePools, and the effective
KWOK configuration (the replicas' simulated start-up time set into the template's Stage).
Must not: talk to the API server or start anything (`cluster` and `karpenter` do that with what
this renders).

Nodes carry what real GPU nodes carry, so the operator cannot tell the difference:
`topology.kubernetes.io/region|zone`, a capacity-type marker in one of the label conventions of
DESIGN.md, `nvidia.com/gpu.product|memory|count` labels (as NVIDIA's GPU feature discovery
writes them), `nvidia.com/gpu` capacity, and spot/GPU taints. The annotation
`kwok.x-k8s.io/node: fake` hands a node to KWOK; nothing else is managed by it.

Karpenter's nodes carry what Karpenter's AWS provider puts on a GPU node before it exists
(`karpenter.k8s.aws/instance-gpu-name|manufacturer|count|memory`, the instance type, region,
zone and `karpenter.sh/capacity-type`). Its KWOK provider (v1.15) reads no instance-type-level
requirements from the file, but makes every single-valued `In` requirement of the chosen
offering a node label, so those labels are written into every offering. It also sets every
offering `Available` when it reads the file, so capacity that has run out is left out of it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tidal.api.labels import (
    AKS_SCALESET_PRIORITY,
    EKS_CAPACITY_TYPE,
    GKE_SPOT,
    GPU_RESOURCE,
    KARPENTER_CAPACITY_TYPE,
    KARPENTER_GPU_COUNT,
    KARPENTER_GPU_MANUFACTURER,
    KARPENTER_GPU_MEMORY_MIB,
    KARPENTER_GPU_NAME,
    KWOK_NODE,
    LABEL_CAPACITY_TYPE,
    LABEL_SIMULATED,
    NODE_ARCH,
    NODE_GPU_COUNT,
    NODE_GPU_MEMORY_MIB,
    NODE_GPU_PRESENT,
    NODE_GPU_PRODUCT,
    NODE_HOSTNAME,
    NODE_INSTANCE_TYPE,
    NODE_OS,
    NODE_REGION,
    NODE_TTL,
    NODE_ZONE,
    SIMULATED_STARTUP,
    SIMULATED_WEIGHTS_BYTES,
    CapacityType,
)
from tidal.cost.catalog import PriceCatalog
from tidal.render.engines import MODEL_VOLUME

_DATA = Path(__file__).parent / "data"
DEFAULT_FLEET = _DATA / "fleet.yaml"
ELASTIC_FLEET = _DATA / "elastic.yaml"
# The names `tidal dev up --fleet` (and TIDAL_FLEET) accept besides a path.
FLEETS: Final = {"static": DEFAULT_FLEET, "elastic": ELASTIC_FLEET}
KWOK_TEMPLATE = _DATA / "kwok.yaml"
# The KWOK Stage that turns a Running, not yet Ready pod Ready, after the start-up delay.
STARTUP_STAGE: Final = "pod-ready"
LOADER_STAGE: Final = "pod-succeeded"

# Karpenter's KWOK provider: its node class kind and the one node class the NodePools use.
NODE_CLASS_GROUP: Final = "karpenter.kwok.sh"
NODE_CLASS_KIND: Final = "KWOKNodeClass"
NODE_CLASS_NAME: Final = "default"
# Karpenter's name for reserved (not preemptible) capacity, and Tidal's catalog key for its price.
ON_DEMAND: Final = "on-demand"
_CATALOG_CAPACITY: Final = {"spot": CapacityType.SPOT, ON_DEMAND: CapacityType.RESERVED}
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class FleetError(ValueError):
    """A fleet cannot be rendered as asked (an unknown region or product, no price for it)."""


LabelStyle = Literal["tidal", "karpenter", "eks", "gke", "aks"]

# How each convention marks spot capacity: (label key, spot value, reserved value or None when
# the convention marks only spot nodes), plus the taint its spot nodes carry.
_SPOT_LABELS: dict[str, tuple[str, str, str | None]] = {
    "tidal": (LABEL_CAPACITY_TYPE, "spot", "reserved"),
    "karpenter": (KARPENTER_CAPACITY_TYPE, "spot", "on-demand"),
    "eks": (EKS_CAPACITY_TYPE, "SPOT", "ON_DEMAND"),
    "gke": (GKE_SPOT, "true", None),
    "aks": (AKS_SCALESET_PRIORITY, "spot", None),
}
_SPOT_TAINTS: dict[str, dict[str, str]] = {
    style: {"key": key, "value": spot, "effect": "NoSchedule"}
    for style, (key, spot, _reserved) in _SPOT_LABELS.items()
}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class GpuShape(_Model):
    product: str = Field(description="product is the nvidia.com/gpu.product label value")
    memory_mib: int = Field(gt=0, alias="memoryMiB", description="memoryMiB: nvidia.com/gpu.memory")
    count: int = Field(gt=0, le=64, description="count is the node's nvidia.com/gpu capacity")


class NodeGroup(_Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    regions: list[str] = Field(min_length=1)
    nodes_per_region: int = Field(default=1, ge=1, le=2000)
    capacity_type: Literal["spot", "reserved"] = "reserved"
    label_style: LabelStyle = "tidal"
    gpu: GpuShape | None = None
    cpu: str = "64"
    memory: str = "512Gi"
    pods: str = "110"
    # A GPU instance's local NVMe: engine replicas that download their weights request
    # ephemeral storage for them, and a node that reports none fits none of them.
    ephemeral_storage: str = "2Ti"
    labels: dict[str, str] = Field(default_factory=dict)


class ModelLoad(_Model):
    """How long a simulated pod spends on its model's weights, derived from what the pod does
    with them. Only pods annotated `tidal.dev/simulated-weights-bytes` (the weights' size; set it
    through `podTemplate.metadata.annotations`) are timed this way; `tidal.dev/simulated-startup`
    still wins, and other pods keep the fleet's `startupSeconds`.

    - A replica whose model volume is a claim (a shared cache, or a pvc:// source) reads the
      weights from that network volume: bytes / volumeReadMiBPerSecond + engineInitSeconds.
    - Any other replica has no copy yet (the engine downloads from the Hub, an init container
      copies a bucket, vLLM streams one): bytes / downloadMiBPerSecond, then
      bytes / localReadMiBPerSecond from the node's disk, + engineInitSeconds.
    - A cache's loader pod downloads (bytes / downloadMiBPerSecond), then reports the bytes as its
      termination message, as the real loader does after measuring what it copied.

    The defaults are public figures (docs/benchmarks.md, "Wake from zero", cites each): Hub
    downloads with hf_transfer of about 300 MB/s per node; vLLM's safetensors loader reading
    Llama 3 8B (15 GB) from a gp3 volume in 48 s (NVIDIA's Run:ai Model Streamer benchmark); a
    shared file system at 500 MiB/s per client (Amazon EFS provisioned throughput); 30 s of
    engine start (CUDA context, torch.compile, CUDA graph capture) on top.
    """

    download_mib_per_second: float = Field(default=300, gt=0, alias="downloadMiBPerSecond")
    local_read_mib_per_second: float = Field(default=320, gt=0, alias="localReadMiBPerSecond")
    volume_read_mib_per_second: float = Field(default=500, gt=0, alias="volumeReadMiBPerSecond")
    engine_init_seconds: float = Field(default=30, ge=0, le=3600)


class Fleet(_Model):
    node_groups: list[NodeGroup] = Field(min_length=1)
    startup_seconds: float = Field(
        default=0,
        ge=0,
        le=3600,
        description="startupSeconds: how long a simulated replica is Running but not Ready",
    )
    model_load: ModelLoad = Field(default_factory=ModelLoad)


class InstanceGpu(_Model):
    name: str = Field(
        pattern=_NAME, description="name is karpenter.k8s.aws/instance-gpu-name, e.g. h100"
    )
    product: str = Field(description="product prices it: a product of Tidal's pricing catalog")
    manufacturer: str = Field(default="nvidia", pattern=_NAME)
    memory_mib: int = Field(gt=0, alias="memoryMiB", description="memoryMiB: per GPU")
    count: int = Field(gt=0, le=64)


class InstanceType(_Model):
    name: str = Field(pattern=r"^[a-z0-9][-a-z0-9.]*[a-z0-9]$", max_length=63)
    gpu: InstanceGpu
    cpu: str
    memory: str
    pods: str = "110"
    ephemeral_storage: str = "2Ti"


class NodePoolSpec(_Model):
    name: str = Field(pattern=_NAME, max_length=63)
    capacity_type: Literal["spot", "on-demand"]
    limits: dict[str, str] = Field(default_factory=lambda: {"cpu": "4000"})


class KarpenterFleet(_Model):
    zones: dict[str, list[str]] = Field(min_length=1, description="region -> its zones")
    instance_types: list[InstanceType] = Field(min_length=1)
    node_pools: list[NodePoolSpec] = Field(min_length=1)
    consolidate_after: str = Field(default="30s", pattern=r"^(([0-9]+(s|m|h))+|Never)$")


class ElasticFleet(Fleet):
    """Static nodes (`nodeGroups`, CPU only in the built-in file) plus what Karpenter launches."""

    startup_seconds: float = Field(default=30, ge=0, le=3600)
    karpenter: KarpenterFleet

    def instance_type_names(self, product: str | None = None) -> list[str]:
        """The instance types `product` names: an instance type, GPU name or catalog product
        (any case); all of them for None."""
        types = self.karpenter.instance_types
        if product is None:
            return [t.name for t in types]
        wanted = product.lower()
        found = [t.name for t in types if wanted in (t.name, t.gpu.name, t.gpu.product.lower())]
        if not found:
            known = ", ".join(f"{t.gpu.name} ({t.name})" for t in types)
            raise FleetError(f"no instance type with GPU {product!r}; the fleet has {known}")
        return found

    def check_region(self, region: str) -> None:
        if region not in self.karpenter.zones:
            known = ", ".join(self.karpenter.zones)
            raise FleetError(f"the fleet has no region {region!r}; it has {known}")


def resolve(name_or_path: str | Path) -> Path:
    """The fleet file `static`, `elastic` or a path names."""
    if isinstance(name_or_path, str) and name_or_path in FLEETS:
        return FLEETS[name_or_path]
    return Path(name_or_path)


def load(path: Path) -> Fleet:
    raw = yaml.safe_load(path.read_text())
    return Fleet.model_validate(raw)


def load_elastic(path: Path) -> ElasticFleet:
    return ElasticFleet.model_validate(yaml.safe_load(path.read_text()))


def load_any(path: Path) -> Fleet | ElasticFleet:
    """The fleet in `path`: elastic when it has a `karpenter` section, static otherwise."""
    raw = yaml.safe_load(path.read_text())
    if isinstance(raw, dict) and "karpenter" in raw:
        return ElasticFleet.model_validate(raw)
    return Fleet.model_validate(raw)


def render_nodes(fleet: Fleet) -> list[dict[str, Any]]:
    """Every Node the fleet describes, named `<group>-<region>-<n>`, zones round-robin a/b/c."""
    nodes: list[dict[str, Any]] = []
    for group in fleet.node_groups:
        for region in group.regions:
            for index in range(group.nodes_per_region):
                nodes.append(_render_node(group, region, index))
    return nodes


def _render_node(group: NodeGroup, region: str, index: int) -> dict[str, Any]:
    name = f"{group.name}-{region}-{index}"
    zone = f"{region}{'abc'[index % 3]}"
    labels = {
        NODE_HOSTNAME: name,
        NODE_OS: "linux",
        NODE_ARCH: "amd64",
        NODE_INSTANCE_TYPE: f"sim.{group.name}",
        NODE_REGION: region,
        NODE_ZONE: zone,
        "type": "kwok",
        LABEL_SIMULATED: "true",
    }
    key, spot_value, reserved_value = _SPOT_LABELS[group.label_style]
    if group.capacity_type == "spot":
        labels[key] = spot_value
    elif reserved_value is not None:
        labels[key] = reserved_value
    taints: list[dict[str, str]] = []
    resources = {
        "cpu": group.cpu,
        "memory": group.memory,
        "pods": group.pods,
        "ephemeral-storage": group.ephemeral_storage,
    }
    if group.gpu is not None:
        labels[NODE_GPU_PRESENT] = "true"
        labels[NODE_GPU_PRODUCT] = group.gpu.product
        labels[NODE_GPU_MEMORY_MIB] = str(group.gpu.memory_mib)
        labels[NODE_GPU_COUNT] = str(group.gpu.count)
        resources[GPU_RESOURCE] = str(group.gpu.count)
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    if group.capacity_type == "spot":
        taints.append(dict(_SPOT_TAINTS[group.label_style]))
    labels.update(group.labels)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_NODE: "fake", NODE_TTL: "0"},
        },
        "spec": {"taints": taints},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
        },
    }


# --- The elastic fleet: what Karpenter's KWOK provider may launch -------------------------------


def render_instance_types(
    fleet: ElasticFleet,
    catalog: PriceCatalog,
    unavailable_spot: Mapping[str, Collection[str]] | None = None,
) -> list[dict[str, Any]]:
    """Karpenter's instance-types file (KWOK provider format): every instance type offered spot
    and on-demand in every zone, priced GPUs x the catalog's per-GPU price in its region.

    `unavailable_spot` maps a region to the instance types whose spot capacity has run out
    there: those offerings are left out (the provider would mark them `Available` again).
    """
    gone = unavailable_spot or {}
    rendered = []
    for itype in fleet.karpenter.instance_types:
        gpu = itype.gpu
        gpu_labels = {
            KARPENTER_GPU_NAME: gpu.name,
            KARPENTER_GPU_MANUFACTURER: gpu.manufacturer,
            KARPENTER_GPU_COUNT: str(gpu.count),
            KARPENTER_GPU_MEMORY_MIB: str(gpu.memory_mib),
        }
        offerings = []
        for region, zones in fleet.karpenter.zones.items():
            for capacity in ("spot", ON_DEMAND):
                if capacity == "spot" and itype.name in gone.get(region, ()):
                    continue
                price = _instance_price(catalog, gpu, capacity, region)
                for zone in zones:
                    labels = {
                        KARPENTER_CAPACITY_TYPE: capacity,
                        NODE_ZONE: zone,
                        NODE_REGION: region,
                        **gpu_labels,
                    }
                    offerings.append(
                        {
                            "Price": price,
                            "Available": True,
                            "Requirements": [
                                {"key": key, "operator": "In", "values": [value]}
                                for key, value in labels.items()
                            ],
                        }
                    )
        rendered.append(
            {
                "name": itype.name,
                "architecture": "amd64",
                "operatingSystems": ["linux"],
                "resources": {
                    "cpu": itype.cpu,
                    "memory": itype.memory,
                    "ephemeral-storage": itype.ephemeral_storage,
                    "pods": itype.pods,
                    GPU_RESOURCE: str(gpu.count),
                },
                "offerings": offerings,
            }
        )
    return rendered


def _instance_price(catalog: PriceCatalog, gpu: InstanceGpu, capacity: str, region: str) -> float:
    per_gpu = catalog.gpu_price(gpu.product, _CATALOG_CAPACITY[capacity], region)
    if per_gpu is None:
        raise FleetError(
            f"the pricing catalog has no {_CATALOG_CAPACITY[capacity]} price for {gpu.product} "
            f"in {region}; add one or remove the region"
        )
    return float(per_gpu * Decimal(gpu.count))


def render_node_pools(fleet: ElasticFleet) -> list[dict[str, Any]]:
    """The KWOKNodeClass and one NodePool per entry: GPU-tainted, limited, consolidating."""
    node_class = {
        "apiVersion": f"{NODE_CLASS_GROUP}/v1alpha1",
        "kind": NODE_CLASS_KIND,
        "metadata": {"name": NODE_CLASS_NAME},
    }
    pools = [
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodePool",
            "metadata": {"name": pool.name},
            "spec": {
                "template": {
                    "spec": {
                        "requirements": [
                            {
                                "key": KARPENTER_CAPACITY_TYPE,
                                "operator": "In",
                                "values": [pool.capacity_type],
                            }
                        ],
                        "nodeClassRef": {
                            "group": NODE_CLASS_GROUP,
                            "kind": NODE_CLASS_KIND,
                            "name": NODE_CLASS_NAME,
                        },
                        # As the NVIDIA GPU operator taints GPU nodes; every replica tolerates it.
                        "taints": [{"key": GPU_RESOURCE, "effect": "NoSchedule"}],
                    }
                },
                "limits": dict(pool.limits),
                "disruption": {
                    "consolidationPolicy": "WhenEmptyOrUnderutilized",
                    "consolidateAfter": fleet.karpenter.consolidate_after,
                },
            },
        }
        for pool in fleet.karpenter.node_pools
    ]
    return [node_class, *pools]


# --- How KWOK plays pods: the effective configuration -------------------------------------------


class _BlockStyleDumper(yaml.SafeDumper):
    """Writes multi-line strings (KWOK's Go templates) as `|` blocks, so the rendered file reads
    like its template."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def _millis(seconds_expr: str) -> str:
    """jq: a number of seconds as the Go duration KWOK's delays take ("1234ms")."""
    return f'(({seconds_expr}) * 1000 | floor | tostring) + "ms"'


def startup_expression(load: ModelLoad) -> str:
    """The jq expression KWOK times a replica's start-up with (`ModelLoad` says what it models);
    null, so the stage's default applies, for a pod with neither annotation."""
    mib = f'($a["{SIMULATED_WEIGHTS_BYTES}"] | tonumber / 1048576)'
    on_volume = (
        f'[.spec.volumes[]? | select(.name == "{MODEL_VOLUME}" and .persistentVolumeClaim)]'
        " | length > 0"
    )
    seconds = (
        f"(if {on_volume} then {mib} / {load.volume_read_mib_per_second:g}"
        f" else {mib} / {load.download_mib_per_second:g}"
        f" + {mib} / {load.local_read_mib_per_second:g} end)"
        f" + {load.engine_init_seconds:g}"
    )
    return (
        "(.metadata.annotations // {}) as $a"
        f' | if $a["{SIMULATED_STARTUP}"] then $a["{SIMULATED_STARTUP}"]'
        f' elif $a["{SIMULATED_WEIGHTS_BYTES}"] then {_millis(seconds)}'
        " else null end"
    )


def loader_expression(load: ModelLoad) -> str:
    """The jq expression KWOK times a cache loader's copy with: its download (null: at once)."""
    seconds = (
        f'$a["{SIMULATED_WEIGHTS_BYTES}"] | tonumber / 1048576 / {load.download_mib_per_second:g}'
    )
    return (
        "(.metadata.annotations // {}) as $a"
        f' | if $a["{SIMULATED_WEIGHTS_BYTES}"] then {_millis(seconds)} else null end'
    )


def _stage(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    stages = [
        d for d in docs if d.get("kind") == "Stage" and d.get("metadata", {}).get("name") == name
    ]
    if len(stages) != 1:
        raise FleetError(f"the KWOK template must hold exactly one Stage {name!r}")
    return stages[0]


def render_kwok_config(template: str, startup_seconds: float, load: ModelLoad | None = None) -> str:
    """The KWOK configuration from its template (`data/kwok.yaml`), with the default simulated
    start-up time set on the Stage that makes a replica Ready, and the model-load timing
    (`ModelLoad`) on it and on the Stage that completes a cache's loader.

    The Go templates inside are data here: the documents are loaded, the numbers and jq
    expressions set, and they are written back; a pod's `tidal.dev/simulated-startup`
    annotation still wins over both.
    """
    if startup_seconds < 0:
        raise FleetError(f"the simulated start-up time must be >= 0 s, got {startup_seconds}")
    load = load or ModelLoad()
    docs = list(yaml.safe_load_all(template))
    ready = _stage(docs, STARTUP_STAGE)["spec"]["delay"]
    ready["durationMilliseconds"] = round(startup_seconds * 1000)
    ready["durationFrom"] = {"jq": {"expression": startup_expression(load)}}
    loaded = _stage(docs, LOADER_STAGE)["spec"].setdefault("delay", {})
    loaded["durationMilliseconds"] = 0
    loaded["durationFrom"] = {"jq": {"expression": loader_expression(load)}}
    header = (
        "# Rendered by `tidal dev up` from tidal/devcluster/data/kwok.yaml (edit that, not this):\n"
        f"# replicas become Ready {startup_seconds:g}s after they start running, unless their\n"
        "# tidal.dev/simulated-startup annotation says otherwise.\n"
    )
    return header + yaml.dump_all(docs, Dumper=_BlockStyleDumper, sort_keys=False)
