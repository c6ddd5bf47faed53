"""What a cluster's node labels mean: the conventions Tidal reads nodes and writes affinity by.

Clouds disagree on how a node says where it is, whether it is spot and which GPU it has. Tidal
ships the defaults for GPU Feature Discovery, EKS/Karpenter, GKE and AKS (`tidal.api.labels`,
`tidal.api.gpulabels`); a cluster that differs says so in the `tidal-capacity` ConfigMap, key
`conventions.yaml` (validated at admission like the rest of that ConfigMap)::

    regionLabel: topology.kubernetes.io/region   # the node label naming its region (default)
    zoneLabel: topology.kubernetes.io/zone       # ... and its zone (default)
    spotMarkers:                # label key=value pairs that mark a node spot; replaces the
      - key: karpenter.sh/capacity-type          # cloud defaults (`tidal.dev/capacity-type:
        value: spot                              # spot` is always kept)
    gpuLabelProfile: instance-type    # the labels replicas require: gfd | karpenter-aws | gke |
                                      # instance-type | a profile below (default gfd, or
                                      # TIDAL_GPU_LABEL_PROFILE)
    gpuLabelProfiles:                 # more profiles, read after the built-in ones
      - name: example-cloud
        productLabel: example.com/gpu-product
        memoryLabel: example.com/gpu-memory-mib  # optional
        values:                                  # GFD product name -> this label's values
          NVIDIA-H100-80GB-HBM3: [h100]
    instanceTypes:                    # GPUs by node.kubernetes.io/instance-type (AKS, generic)
      Standard_NC24ads_A100_v4: {gpuProduct: NVIDIA-A100-SXM4-80GB, gpuCount: 1,
                                 gpuMemoryMiB: 81920}

Why fewer spot markers can matter: a spot replica's required node affinity ORs one term per
marker, and a node autoscaler explains a pod it cannot place by one of those terms; on a
Karpenter cluster, naming only Karpenter's marker keeps its messages about Karpenter's label.

The operator reads the conventions once, at start-up (they decide how every watched node is
parsed); a changed `conventions.yaml` is reported by a Warning Event on the ConfigMap and takes
effect when the operator restarts (docs/inferenceendpoint.md).

Owns: `Conventions` and its parser. Must not: read the API server or the environment (the
runtime hands the text in), or decide anything beyond what a label says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from tidal.api.common import LABEL_VALUE_PATTERN, QUALIFIED_NAME_PATTERN, is_qualified_name
from tidal.api.gpulabels import (
    DEFAULT_PROFILE,
    INSTANCE_TYPE,
    PROFILES,
    GpuLabelProfile,
    InstanceGpus,
    gpu_of,
    instance_type_profile,
)
from tidal.api.labels import LABEL_CAPACITY_TYPE, NODE_REGION, NODE_ZONE, SPOT_MARKERS, CapacityType
from tidal.api.parsing import parse_yaml
from tidal.errors import PermanentError

__all__ = [
    "CONVENTIONS_KEY",
    "DEFAULT_CONVENTIONS",
    "Conventions",
    "ConventionsError",
    "UnknownProfileError",
    "parse_conventions",
]

# The `tidal-capacity` ConfigMap key that holds them.
CONVENTIONS_KEY: Final = "conventions.yaml"
# Tidal's own marker: always a spot marker, whatever else the cluster says.
_TIDAL_MARKER: Final = (LABEL_CAPACITY_TYPE, "spot")


class ConventionsError(PermanentError):
    """`conventions.yaml` does not parse; the message names the field and what is allowed."""


class UnknownProfileError(ConventionsError):
    """The required GPU label profile names none there is. `from_environment`: the name came
    from `TIDAL_GPU_LABEL_PROFILE` (the operator's own configuration, not the ConfigMap's)."""

    def __init__(self, message: str, *, from_environment: bool) -> None:
        super().__init__(message)
        self.from_environment = from_environment


@dataclass(frozen=True)
class Conventions:
    """How to read a node's region, zone, capacity type and GPU, and which GPU labels a
    replica's required affinity names (`required`: those the capacity carries before it
    exists, so a node autoscaler can provision for it)."""

    region_label: str = NODE_REGION
    zone_label: str = NODE_ZONE
    spot_markers: tuple[tuple[str, str], ...] = SPOT_MARKERS
    # Read in this order; the instance-type mapping after all of them.
    profiles: tuple[GpuLabelProfile, ...] = tuple(PROFILES.values())
    instance_types: tuple[tuple[str, InstanceGpus], ...] = ()
    required_profile: str = DEFAULT_PROFILE.name

    @cached_property
    def instance_gpus(self) -> Mapping[str, InstanceGpus]:
        """GPUs by instance type."""
        return dict(self.instance_types)

    @cached_property
    def required(self) -> GpuLabelProfile:
        """The profile replicas require (validated to exist when parsed)."""
        if self.required_profile == INSTANCE_TYPE:
            return instance_type_profile(self.instance_gpus)
        return next((p for p in self.profiles if p.name == self.required_profile), DEFAULT_PROFILE)

    def instance_types_for(
        self, products: Iterable[str], min_memory_mib: int | None, count: int
    ) -> tuple[str, ...]:
        """The mapped instance types a replica fits: one of `products` (any when empty), at
        least `min_memory_mib` per GPU (where the mapping says), at least `count` GPUs."""
        wanted = frozenset(products)
        return tuple(
            name
            for name, gpus in self.instance_types
            if (not wanted or gpus.product in wanted)
            and (
                min_memory_mib is None
                or gpus.memory_mib is None
                or gpus.memory_mib >= min_memory_mib
            )
            and gpus.count >= count
        )

    @cached_property
    def _markers(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.spot_markers)

    def marks_spot(self, key: str, value: str) -> bool:
        """Whether the label (or taint) `key=value` marks a node spot."""
        return (key, value) in self._markers

    def capacity_type(self, labels: Mapping[str, str]) -> CapacityType:
        """Spot when any marker says so; reserved otherwise (no marker = reserved)."""
        if any(labels.get(key) == value for key, value in self.spot_markers):
            return CapacityType.SPOT
        return CapacityType.RESERVED

    def gpu_of(self, labels: Mapping[str, str]) -> tuple[str | None, int | None]:
        """A node's GPU product (GFD name) and memory per GPU (MiB); None for what no label
        says (`tidal.api.gpulabels.gpu_of`)."""
        return gpu_of(labels, self.profiles, self.instance_gpus)


DEFAULT_CONVENTIONS: Final = Conventions()


# --- conventions.yaml ---------------------------------------------------------------------------


def _qualified(key: str) -> str:
    if not is_qualified_name(key):
        raise ValueError("a label key: a DNS-subdomain prefix of at most 253 characters, then '/'")
    return key


_LabelKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=317, pattern=QUALIFIED_NAME_PATTERN),
    AfterValidator(_qualified),
]
_LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
_Product = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)
]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class _Marker(_Model):
    key: _LabelKey
    value: _LabelValue


class _Profile(_Model):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    product_label: _LabelKey
    memory_label: _LabelKey | None = None
    values: dict[_Product, list[_LabelValue]] = Field(default_factory=dict)


class _InstanceType(_Model):
    gpu_product: _Product
    gpu_count: int = Field(ge=1, le=64)
    gpu_memory_mib: int | None = Field(default=None, ge=1, alias="gpuMemoryMiB")


class _Document(_Model):
    region_label: _LabelKey = NODE_REGION
    zone_label: _LabelKey = NODE_ZONE
    spot_markers: list[_Marker] | None = None
    gpu_label_profile: str | None = None
    gpu_label_profiles: list[_Profile] = Field(default_factory=list)
    instance_types: dict[_LabelValue, _InstanceType] = Field(default_factory=dict)


def parse_conventions(
    data: Mapping[str, str] | None, profile_override: str | None = None
) -> Conventions:
    """The conventions of the `tidal-capacity` ConfigMap's data (the defaults without it or its
    key). `profile_override` (`TIDAL_GPU_LABEL_PROFILE`) names the required profile instead of
    `gpuLabelProfile`. A ConventionsError names each field that is wrong."""
    text = (data or {}).get(CONVENTIONS_KEY)
    doc = (
        _Document()
        if text is None
        else parse_yaml(_Document, text, CONVENTIONS_KEY, ConventionsError)
    )
    profiles = [*PROFILES.values()]
    for custom in doc.gpu_label_profiles:
        if custom.name in {p.name for p in profiles} | {INSTANCE_TYPE}:
            raise ConventionsError(
                f"{CONVENTIONS_KEY}: gpuLabelProfiles.name {custom.name!r} is taken "
                f"(built in: {', '.join([*PROFILES, INSTANCE_TYPE])})"
            )
        profiles.append(
            GpuLabelProfile(
                custom.name,
                custom.product_label,
                custom.memory_label,
                {product: tuple(values) for product, values in custom.values.items()},
            )
        )
    override = (profile_override or "").strip()
    required = override or doc.gpu_label_profile or DEFAULT_PROFILE.name
    known = [p.name for p in profiles] + ([INSTANCE_TYPE] if doc.instance_types else [])
    if required not in known:
        where = "TIDAL_GPU_LABEL_PROFILE" if override else f"{CONVENTIONS_KEY}: gpuLabelProfile"
        hint = "" if doc.instance_types else f" ({INSTANCE_TYPE} needs instanceTypes)"
        raise UnknownProfileError(
            f"{where}: unknown GPU label profile {required!r} (one of: {', '.join(known)}){hint}",
            from_environment=bool(override),
        )
    markers = (
        SPOT_MARKERS
        if doc.spot_markers is None
        else tuple(dict.fromkeys([_TIDAL_MARKER, *((m.key, m.value) for m in doc.spot_markers)]))
    )
    return Conventions(
        region_label=doc.region_label,
        zone_label=doc.zone_label,
        spot_markers=markers,
        profiles=tuple(profiles),
        instance_types=tuple(
            (name, InstanceGpus(t.gpu_product, t.gpu_count, t.gpu_memory_mib))
            for name, t in sorted(doc.instance_types.items())
        ),
        required_profile=required,
    )
