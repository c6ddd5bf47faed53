"""The InferenceEndpoint kind (tidal.dev/v1alpha1): spec, status and the per-engine image defaults.

Owns: the pydantic models of DESIGN.md §1 "InferenceEndpoint", the CEL rules that guard their
cross-field invariants (kept next to the fields so the CRD cannot drift from them), the same
invariants as pydantic validators (so pure decision code can trust a parsed spec; what an engine
can read is refused by `tidal.render.engines` instead, which the webhook runs), and the small
derived values every layer needs the same way (`effective_max_replicas`, `effective_image`,
`ModelSpec.source`, the replica capacity unit `TARGET_LOAD_SHARE` / `replicas_for_load`), and the
one table of default images.

Must not: do IO, read the clock, or hold placement/scaling/cost policy — those are decisions in
their own packages that take these models as input.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Annotated, Any, ClassVar, Final, Self

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from tidal.api.common import (
    API_VERSION,
    LABEL_VALUE_PATTERN,
    MAX_REPLICAS,
    ApiModel,
    Condition,
    LocalObjectRef,
    Money,
    MoneyInput,
    PlacementStatus,
    Quantity,
    ResidencySpec,
    Timestamp,
    UniqueList,
    cel,
    validations,
)
from tidal.api.podtemplate import PodTemplate
from tidal.api.sources import MODEL_URI_PATTERN, ModelSource, model_source

KIND = "InferenceEndpoint"
PLURAL = "inferenceendpoints"
SINGULAR = "inferenceendpoint"
SHORT_NAMES = ("ie", "infer")


class Quantization(StrEnum):
    """Weight quantization the engine loads the model with."""

    None_ = "None"
    FP8 = "FP8"
    INT8 = "INT8"
    INT4 = "INT4"


class Engine(StrEnum):
    """The serving engine a replica runs."""

    VLLM = "VLLM"
    TGI = "TGI"
    Triton = "Triton"
    Custom = "Custom"


class CapacityPolicy(StrEnum):
    """How replicas are split between spot and reserved capacity."""

    Auto = "Auto"
    SpotPreferred = "SpotPreferred"
    SpotOnly = "SpotOnly"
    ReservedOnly = "ReservedOnly"


# The one table of the images Tidal runs by default, pinned by tag (docs/inferenceendpoint.md,
# "Images": how each tag was chosen). A user picks another with `runtime.image`.
_DEFAULT_IMAGES: dict[Engine, str] = {
    Engine.VLLM: "vllm/vllm-openai:v0.31.0",
    Engine.TGI: "ghcr.io/huggingface/text-generation-inference:3.3.7",
    Engine.Triton: "nvcr.io/nvidia/tritonserver:26.09-py3",
}
# Copies weights from s3:// and gs:// into a pod for the engines that cannot read a bucket
# themselves (`tidal.render.engines.fetch_weights_container`): one small static binary that
# speaks both stores and takes the pod's cloud identity (IRSA, workload identity) or AWS_*/GCS
# environment variables (env_auth).
FETCH_WEIGHTS_IMAGE: Final = "rclone/rclone:1.75.2"


def default_image(engine: Engine) -> str | None:
    """The image used when `runtime.image` is unset; None for Custom, which must name one."""
    return _DEFAULT_IMAGES.get(engine)


_CACHE_NEEDS_SIZE = "model.cache.size is required when model.weightsGiB is unset"
CACHE_NOT_ON_PVC = "model.cache cannot cache a pvc:// source: its weights are already on a volume"
# A cache holds the checkpoint (weightsGiB, the 16-bit size, is an upper bound) and 20% for what
# a download leaves beside it (tokenizer, configs, the Hub's download metadata).
_CACHE_SHARE: Final = (6, 5)


class ModelCacheSpec(ApiModel):
    """A shared volume holding the weights: filled once, read by every replica."""

    storage_class_name: str | None = Field(
        default=None,
        alias="storageClassName",
        min_length=1,
        max_length=253,
        description=(
            "storageClassName of the ReadWriteMany PersistentVolumeClaim that holds the weights "
            "(e.g. EFS, Filestore, Azure Files, a CephFS class); unset: the cluster's default "
            "class, which must offer ReadWriteMany."
        ),
    )
    size: Quantity | None = Field(
        default=None,
        description=(
            "size of the volume, e.g. 200Gi; unset: weightsGiB plus 20%, so one of the two is "
            "required. The volume is created once per model and namespace: changing size later "
            "does not resize it."
        ),
    )


class ModelSpec(ApiModel):
    """The model to serve."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.cache) || has(self.cache.size) || has(self.weightsGiB)",
                _CACHE_NEEDS_SIZE,
            ),
            cel(
                "!has(self.cache) || !has(self.uri) || !self.uri.startsWith('pvc://')",
                CACHE_NOT_ON_PVC,
            ),
        )
    )

    name: str = Field(
        min_length=1,
        max_length=256,
        description=(
            "name is the model id clients send in requests, e.g. meta-llama/Llama-3.1-8B-Instruct."
        ),
    )
    uri: str | None = Field(
        default=None,
        max_length=2048,
        description=(
            "uri is where the weights come from: hf://org/repo[@revision] (the Hugging Face Hub; "
            "the default is hf://<name>), s3://bucket/prefix, gs://bucket/prefix (credentials "
            "from the pod's service account or runtime.env), or pvc://claim/path (a "
            "PersistentVolumeClaim in the namespace, mounted read-only). Whatever the source, "
            "clients call the model by name."
        ),
        json_schema_extra={"pattern": MODEL_URI_PATTERN},
    )
    quantization: Quantization = Field(
        default=Quantization.None_,
        description="quantization of the weights: None, FP8, INT8 or INT4.",
    )
    weights_gib: int | None = Field(
        default=None,
        alias="weightsGiB",
        ge=1,
        le=8192,
        description=(
            "weightsGiB is the size of the weights, used to check they fit in GPU memory and to "
            "request ephemeral storage where a replica downloads them."
        ),
    )
    cache: ModelCacheSpec | None = Field(
        default=None,
        description=(
            "cache keeps the weights on one shared ReadWriteMany volume per model (uri and "
            "revision) and namespace, filled once by a loader Job and mounted read-only by every "
            "replica: replicas wait for it (condition ModelCached), then never download, so a "
            "second replica or a wake from zero loads from the volume. Endpoints with the same "
            "model share it; deleting them keeps it (delete it with kubectl delete pvc -l "
            "tidal.dev/model-cache=<name>, status in the ModelCached condition)."
        ),
    )

    @field_validator("uri")
    @classmethod
    def _uri_is_a_source(cls, uri: str | None) -> str | None:
        if uri is not None:
            model_source(uri, "")  # raises naming spec.model.uri and the allowed forms
        return uri

    @model_validator(mode="after")
    def _cache_is_sized(self) -> Self:
        if self.cache is not None:
            if self.cache.size is None and self.weights_gib is None:
                raise ValueError(_CACHE_NEEDS_SIZE)
            if self.uri is not None and self.uri.startswith("pvc://"):
                raise ValueError(CACHE_NOT_ON_PVC)
        return self

    @property
    def cache_size(self) -> str | None:
        """The cache volume's size: `cache.size`, else weightsGiB plus 20% (None: no cache)."""
        if self.cache is None:
            return None
        if self.cache.size is not None:
            return self.cache.size
        numerator, denominator = _CACHE_SHARE
        return f"{-(-(self.weights_gib or 0) * numerator // denominator)}Gi"

    @property
    def source(self) -> ModelSource:
        """Where the weights are: `uri`, else the Hub repository named like the model.

        Raises ModelURIError (a ValueError naming spec.model.uri) when `uri` is unset and
        `name` is not a Hub repo id; a Custom engine, which Tidal points at nothing, never asks.
        """
        return model_source(self.uri, self.name)


EnvVarName = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
]


class SecretKeySelector(ApiModel):
    """A key of a Secret in the endpoint's namespace."""

    name: str = Field(
        min_length=1, max_length=253, description="name of the Secret in the same namespace."
    )
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="key within the Secret's data.",
    )


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from."""

    secret_key_ref: SecretKeySelector = Field(
        description="secretKeyRef selects a Secret key, e.g. a Hugging Face token."
    )


class EnvVar(ApiModel):
    """An environment variable for the engine container."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.value) && has(self.valueFrom))",
                "env: set either value or valueFrom, not both",
            )
        )
    )

    name: EnvVarName = Field(description="name of the environment variable.")
    value: str | None = Field(
        default=None, max_length=32768, description="value of the environment variable."
    )
    value_from: EnvVarSource | None = Field(
        default=None, description="valueFrom reads the value from a Secret instead."
    )

    @model_validator(mode="after")
    def _value_or_value_from(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError("env: set either value or valueFrom, not both")
        return self


_CUSTOM_NEEDS_IMAGE = "runtime.image is required when runtime.engine is Custom"


# In-flight requests (long generations included) finish before a replica stops.
DEFAULT_DRAIN_SECONDS: Final = 60
# Downloading 16-140 GB of weights, loading them and compiling (CUDA graphs, torch.compile) takes
# minutes to tens of minutes; half an hour covers a 70B model from the Hub on a typical node.
DEFAULT_STARTUP_TIMEOUT_SECONDS: Final = 1800


class RuntimeSpec(ApiModel):
    """The serving engine and its container."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.engine) || self.engine != 'Custom' || has(self.image)",
                _CUSTOM_NEEDS_IMAGE,
            )
        )
    )

    engine: Engine = Field(
        default=Engine.VLLM, description="engine serving the model: VLLM, TGI, Triton or Custom."
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description=(
            "image overrides the engine's default container image; required when engine is Custom."
        ),
    )
    args: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=list,
        max_length=64,
        description="args are extra command-line arguments passed to the engine.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="env are extra environment variables for the engine container.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    port: int = Field(
        default=8000, ge=1, le=65535, description="port the engine listens on for HTTP."
    )
    cpu: Quantity | None = Field(
        default=None, description="cpu requested per replica (a quantity, e.g. 8 or 7500m)."
    )
    memory: Quantity | None = Field(
        default=None, description="memory requested per replica (a quantity, e.g. 64Gi)."
    )
    startup_timeout_seconds: int = Field(
        default=DEFAULT_STARTUP_TIMEOUT_SECONDS,
        ge=60,
        le=86400,
        description=(
            "startupTimeoutSeconds is how long the engine may take from its container's start "
            "to its first healthy answer (downloading the weights where the engine does it, "
            "loading, compiling) before it is restarted: the startup probe's budget. The image "
            "pull and a weights-fetching init container come before it and are not counted."
        ),
    )
    drain_seconds: int = Field(
        default=DEFAULT_DRAIN_SECONDS,
        ge=0,
        le=3600,
        description=(
            "drainSeconds is how long a stopping replica keeps serving the requests it already "
            "has (a preStop pause, taken out of routing first) before the engine is signalled "
            "to stop; 0 stops it at once."
        ),
    )

    @property
    def effective_image(self) -> str:
        """The image replicas run: the override, else the engine's default."""
        image = self.image or default_image(self.engine)
        if image is None:  # unreachable after validation; keeps the type honest
            raise ValueError(_CUSTOM_NEEDS_IMAGE)
        return image

    @model_validator(mode="after")
    def _custom_needs_image(self) -> Self:
        if self.engine is Engine.Custom and self.image is None:
            raise ValueError(_CUSTOM_NEEDS_IMAGE)
        return self


GPUProduct = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)
]


class GPUSpec(ApiModel):
    """GPUs per replica."""

    count: int = Field(default=1, ge=1, le=16, description="count of GPUs per replica.")
    products: Annotated[list[GPUProduct], UniqueList] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "products lists the allowed nvidia.com/gpu.product node label values; empty allows any."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    min_memory_mib: int | None = Field(
        default=None,
        alias="minMemoryMiB",
        ge=1,
        le=1 << 20,
        description="minMemoryMiB is the least memory each GPU must have, in MiB.",
    )


# The one unit of replica capacity that scaling and placement share. A replica's *saturation*
# is the most it serves within its SLO; the autoscaler sizes for `targetInFlightRequests`
# per replica, which is this share of it (the rest absorbs a burst until a new replica is up,
# and the load of a lost replica until its replacement is). The autoscaler recommends
# `replicas_for_load(demand / saturation)`; placement reads GPU load in saturations (a replica
# at 100% GPU is saturated), counts a replica that survives an interruption as one saturation,
# and the load an endpoint's desired replicas are sized for as `desired x TARGET_LOAD_SHARE`.
# (Placement used to count a replica full at 80% while the scaler ran it at 2/3, so
# Auto kept ~0.83 of a steady endpoint on reserved whatever spot cost.)
TARGET_LOAD_SHARE: Final = Fraction(2, 3)


def replicas_for_load(load: Fraction | float) -> int:
    """Replicas the autoscaler runs for `load` (in replica saturations): each at
    `TARGET_LOAD_SHARE`. Floats are rounded first so noise like 1.3333333333333335 buys no
    replica."""
    if isinstance(load, Fraction):
        return max(0, math.ceil(load / TARGET_LOAD_SHARE))
    return max(0, math.ceil(round(load / float(TARGET_LOAD_SHARE), 6)))


# A percentage as a decimal string, 0 to 100 with at most six decimals ("0.01", "5", "100").
PERCENT_PATTERN: Final = r"^(100(\.0{1,6})?|[0-9]{1,2}(\.[0-9]{1,6})?)$"
_PERCENT = re.compile(PERCENT_PATTERN)
_BUDGET_FORMAT = (
    "capacity.interruptionBudgetPercent must be a percentage from 0 to 100 as a decimal string "
    'with at most six decimals, e.g. "0.01"'
)
DEFAULT_INTERRUPTION_BUDGET_PERCENT: Final = "0.01"


def _budget_percent(value: Any) -> Any:
    # Whole percents may be written unquoted (`interruptionBudgetPercent: 1`); fractions must
    # be strings, so no float ever reaches the budget (as with money).
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or _PERCENT.match(value) is None:
        raise ValueError(f"{_BUDGET_FORMAT}, got {value!r}")
    return value


BudgetPercent = Annotated[
    str,
    BeforeValidator(_budget_percent),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": PERCENT_PATTERN,
            "maxLength": 10,
            "minimum": 0,
            "maximum": 100,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A percentage in spec: `"0.01"`, or a whole percent as an integer."""


_SPOT_ONLY_NEEDS_SPOT = "capacity.maxSpotPercent must be above 0 when capacity.policy is SpotOnly"
_SPOT_ONLY_NO_RESERVED = "capacity.minReservedReplicas must be 0 when capacity.policy is SpotOnly"


class CapacitySpec(ApiModel):
    """The spot/reserved capacity mix."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.policy) || self.policy != 'SpotOnly' || "
                "!has(self.maxSpotPercent) || self.maxSpotPercent > 0",
                _SPOT_ONLY_NEEDS_SPOT,
            ),
            cel(
                "!has(self.policy) || self.policy != 'SpotOnly' || "
                "!has(self.minReservedReplicas) || self.minReservedReplicas == 0",
                _SPOT_ONLY_NO_RESERVED,
            ),
        )
    )

    policy: CapacityPolicy = Field(
        default=CapacityPolicy.Auto,
        description=(
            "policy is Auto, SpotPreferred, SpotOnly or ReservedOnly. Auto puts on spot as much "
            "as interruptionBudgetPercent allows, spread over independent spot pools."
        ),
    )
    min_reserved_replicas: int = Field(
        default=0,
        ge=0,
        le=MAX_REPLICAS,
        description="minReservedReplicas is how many replicas always run on reserved capacity.",
    )
    max_spot_percent: int = Field(
        default=100,
        ge=0,
        le=100,
        description="maxSpotPercent caps the share of replicas on spot capacity (0-100).",
    )
    interruption_budget_percent: BudgetPercent = Field(
        default=DEFAULT_INTERRUPTION_BUDGET_PERCENT,
        description=(
            "interruptionBudgetPercent is the share of requests spot interruptions may cost, "
            'in percent as a decimal string (default "0.01"). Auto keeps the smallest reserved '
            'floor whose expected interruption loss stays within it: "0" keeps all load on '
            'reserved, "100" behaves as SpotPreferred.'
        ),
    )
    max_node_gpu_utilization_percent: int = Field(
        default=85,
        ge=1,
        le=100,
        description=(
            "maxNodeGpuUtilizationPercent: nodes whose GPUs are busier than this are avoided."
        ),
    )

    @property
    def interruption_budget(self) -> Fraction:
        """The budget as a share of requests (0-1), exact: "0.01" is 1/10000."""
        return Fraction(self.interruption_budget_percent) / 100

    @model_validator(mode="after")
    def _spot_only_is_consistent(self) -> Self:
        if self.policy is CapacityPolicy.SpotOnly:
            if self.max_spot_percent == 0:
                raise ValueError(_SPOT_ONLY_NEEDS_SPOT)
            if self.min_reserved_replicas > 0:
                raise ValueError(_SPOT_ONLY_NO_RESERVED)
        return self


_MIN_LE_MAX = "scaling.minReplicas must be less than or equal to scaling.maxReplicas"


class EndpointScalingSpec(ApiModel):
    """Replica bounds and scale to zero."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.maxReplicas) || !has(self.minReplicas) || "
                "self.minReplicas <= self.maxReplicas",
                _MIN_LE_MAX,
            )
        )
    )

    min_replicas: int = Field(
        default=1,
        ge=0,
        le=MAX_REPLICAS,
        description="minReplicas is the fewest replicas kept running; 0 enables scale to zero.",
    )
    # No wire default: "max(1, minReplicas)" cannot be a static default, and a made-up number in
    # the CRD would be a lie. `effective_max_replicas` is the one place the rule lives.
    max_replicas: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REPLICAS,
        description="maxReplicas is the most replicas run; defaults to max(1, minReplicas).",
    )
    idle_seconds_before_scale_to_zero: int = Field(
        default=300,
        ge=1,
        le=7 * 24 * 3600,
        description=(
            "idleSecondsBeforeScaleToZero is how long without requests before scaling to zero "
            "(only when minReplicas is 0)."
        ),
    )
    target_in_flight_requests: int = Field(
        default=16,
        ge=1,
        le=10000,
        description="targetInFlightRequests is the in-flight requests per replica to scale toward.",
    )

    @property
    def saturation_in_flight_requests(self) -> Fraction:
        """In-flight requests that saturate one replica: `targetInFlightRequests` is
        `TARGET_LOAD_SHARE` of it."""
        return Fraction(self.target_in_flight_requests) / TARGET_LOAD_SHARE

    @property
    def effective_max_replicas(self) -> int:
        """maxReplicas, or max(1, minReplicas) when unset (DESIGN.md §1)."""
        if self.max_replicas is not None:
            return self.max_replicas
        return max(1, self.min_replicas)

    @model_validator(mode="after")
    def _min_le_max(self) -> Self:
        if self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(_MIN_LE_MAX)
        return self


class EndpointSLOSpec(ApiModel):
    """Service level objectives; status reports attainment against them."""

    p95_latency_ms: int | None = Field(
        default=None,
        ge=1,
        le=3_600_000,
        description="p95LatencyMs is the target 95th percentile request latency in milliseconds.",
    )
    p95_time_to_first_token_ms: int | None = Field(
        default=None,
        ge=1,
        le=3_600_000,
        description="p95TimeToFirstTokenMs is the target 95th percentile time to first token.",
    )
    min_tokens_per_second: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="minTokensPerSecond is the least generated tokens per second across replicas.",
    )


class EndpointCostSpec(ApiModel):
    """Budget."""

    max_hourly_usd: MoneyInput | None = Field(
        default=None,
        alias="maxHourlyUSD",
        description='maxHourlyUSD is the hourly budget in US dollars: "12.40", or whole dollars.',
    )

    @property
    def max_hourly(self) -> Decimal | None:
        """The budget as a Decimal, for exact comparison with computed cost."""
        return None if self.max_hourly_usd is None else Decimal(self.max_hourly_usd)


_RESERVED_LE_MAX = (
    "capacity.minReservedReplicas must not exceed scaling.maxReplicas "
    "(which defaults to max(1, scaling.minReplicas))"
)
TRITON_NEEDS_REPOSITORY = (
    "model.uri must be pvc://, s3:// or gs:// when runtime.engine is Triton: Triton serves a "
    "model repository, not a Hugging Face Hub repo (model.uri defaults to hf://<model.name>)"
)


def _object_default() -> dict[str, Any]:
    # `default: {}` on an all-optional sub-object makes the API server fill in its field
    # defaults even when the block is omitted, so stored objects and CEL see effective values.
    return {"default": {}}


class InferenceEndpointSpec(ApiModel):
    """InferenceEndpointSpec is the desired state of an inference endpoint."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.capacity) || !has(self.capacity.minReservedReplicas) || "
                "self.capacity.minReservedReplicas <= ("
                "has(self.scaling) && has(self.scaling.maxReplicas) ? self.scaling.maxReplicas : "
                "(has(self.scaling) && has(self.scaling.minReplicas) && "
                "self.scaling.minReplicas > 1 ? self.scaling.minReplicas : 1))",
                _RESERVED_LE_MAX,
                field_path=".capacity.minReservedReplicas",
            ),
            # Engine knowledge, so the renderer (`tidal.render.engines`) holds the same refusal
            # rather than a pydantic validator: the webhook refuses what it cannot render.
            cel(
                "!has(self.runtime) || !has(self.runtime.engine) || "
                "self.runtime.engine != 'Triton' || "
                "(has(self.model.uri) && !self.model.uri.startsWith('hf://'))",
                TRITON_NEEDS_REPOSITORY,
                field_path=".model.uri",
            ),
        )
    )

    model: ModelSpec = Field(description="model is the model to serve.")
    runtime: RuntimeSpec = Field(
        default_factory=RuntimeSpec,
        description="runtime is the serving engine and its container settings.",
        json_schema_extra=_object_default(),
    )
    gpu: GPUSpec = Field(
        default_factory=GPUSpec,
        description="gpu is the GPUs each replica needs.",
        json_schema_extra=_object_default(),
    )
    capacity: CapacitySpec = Field(
        default_factory=CapacitySpec,
        description="capacity is how replicas are split between spot and reserved capacity.",
        json_schema_extra=_object_default(),
    )
    residency: ResidencySpec = Field(
        description="residency is where replicas may run: the data-residency boundary."
    )
    scaling: EndpointScalingSpec = Field(
        default_factory=EndpointScalingSpec,
        description="scaling bounds the replica count and configures scale to zero.",
        json_schema_extra=_object_default(),
    )
    slo: EndpointSLOSpec | None = Field(
        default=None, description="slo is the service level objectives reported on in status."
    )
    cost: EndpointCostSpec | None = Field(
        default=None, description="cost is the endpoint's budget."
    )
    vector_collection_ref: LocalObjectRef | None = Field(
        default=None,
        description=(
            "vectorCollectionRef names a VectorCollection in the same namespace; the endpoint's "
            "allowed regions become the intersection with the collection's."
        ),
    )
    pod_template: PodTemplate | None = Field(
        default=None,
        description=(
            "podTemplate is a partial pod template merged into every replica, for what the "
            "cluster needs and Tidal does not decide: labels and annotations, tolerations, "
            "nodeSelector and extra affinity (ANDed with Tidal's), volumes and the engine's env "
            "and mounts, serviceAccountName, imagePullSecrets, priorityClassName, "
            "runtimeClassName, securityContext. What Tidal owns (capacity type, region, GPUs, "
            "replicas, the labels that select its pods) cannot be overridden: a conflict is "
            "refused at admission naming the field. A change rolls the replicas."
        ),
    )

    @model_validator(mode="after")
    def _reserved_fits(self) -> Self:
        if self.capacity.min_reserved_replicas > self.scaling.effective_max_replicas:
            raise ValueError(_RESERVED_LE_MAX)
        return self


class ReplicasStatus(ApiModel):
    """Replica counts as last observed."""

    desired: int = Field(default=0, ge=0, description="desired is the replica count Tidal wants.")
    ready: int = Field(default=0, ge=0, description="ready is the number of ready replicas.")
    spot: int = Field(default=0, ge=0, description="spot is the replicas on spot capacity.")
    reserved: int = Field(
        default=0, ge=0, description="reserved is the replicas on reserved capacity."
    )


class EndpointSLOStatus(ApiModel):
    """Measured service levels over the last window."""

    p95_latency_ms: int | None = Field(
        default=None, ge=0, description="p95LatencyMs is the measured 95th percentile latency."
    )
    p95_time_to_first_token_ms: int | None = Field(
        default=None,
        ge=0,
        description="p95TimeToFirstTokenMs is the measured 95th percentile time to first token.",
    )
    tokens_per_second: float | None = Field(
        default=None, ge=0, description="tokensPerSecond is the measured generation throughput."
    )
    window_seconds: int | None = Field(
        default=None, ge=0, description="windowSeconds is the length of the measurement window."
    )
    evaluated_time: Timestamp | None = Field(
        default=None, description="evaluatedTime is when the measurement was taken (RFC3339)."
    )


class EndpointCostStatus(ApiModel):
    """What the endpoint costs now."""

    hourly_usd: Money | None = Field(
        default=None,
        alias="hourlyUSD",
        description='hourlyUSD is the current cost per hour in US dollars, e.g. "12.40".',
    )
    per_million_tokens_usd: Money | None = Field(
        default=None,
        alias="perMillionTokensUSD",
        description="perMillionTokensUSD is the cost per million generated tokens in US dollars.",
    )
    spot_savings_percent: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="spotSavingsPercent is what spot saves compared with all-reserved capacity.",
    )
    basis: str | None = Field(
        default=None,
        max_length=1024,
        description="basis explains how the cost was computed (prices and their source).",
    )


class InferenceEndpointStatus(ApiModel):
    """InferenceEndpointStatus is the observed state of an inference endpoint."""

    # Written whole: a measurement or price that became unknown is cleared, not left stale.
    patch_whole: ClassVar[frozenset[str]] = frozenset({"slo", "cost"})

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="observedGeneration is the metadata.generation this status reflects.",
    )
    replicas: ReplicasStatus = Field(
        default_factory=ReplicasStatus, description="replicas are the replica counts."
    )
    placement: PlacementStatus = Field(
        default_factory=PlacementStatus, description="placement is where replicas run and why."
    )
    url: str | None = Field(
        default=None, max_length=2048, description="url is the in-cluster URL clients call."
    )
    last_request_time: Timestamp | None = Field(
        default=None, description="lastRequestTime is when the last request arrived (RFC3339)."
    )
    scaled_to_zero_time: Timestamp | None = Field(
        default=None,
        description="scaledToZeroTime is when the endpoint last scaled to zero (RFC3339).",
    )
    last_cold_start_seconds: float | None = Field(
        default=None,
        ge=0,
        description="lastColdStartSeconds is how long the last wake from zero took.",
    )
    last_replica_start_seconds: float | None = Field(
        default=None,
        ge=0,
        description=(
            "lastReplicaStartSeconds is how long the newest Ready replica took from its "
            "creation to Ready (scheduling, node provisioning, image pull, model load): what "
            "replacing a lost replica costs, read by Auto's interruption budget."
        ),
    )
    slo: EndpointSLOStatus | None = Field(
        default=None, description="slo is the measured service levels."
    )
    cost: EndpointCostStatus | None = Field(
        default=None, description="cost is what the endpoint costs."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "conditions: Ready, Placed, ResidencyCompliant, SLOMet, WithinBudget, ScaledToZero."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class InferenceEndpoint(ApiModel):
    """InferenceEndpoint serves one model on GPUs with spot/reserved placement, data residency,
    scale to zero, and SLO attainment and cost in status."""

    api_version: str = Field(default=API_VERSION, description="apiVersion is tidal.dev/v1alpha1.")
    kind: str = Field(default=KIND, description="kind is InferenceEndpoint.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="metadata is the standard object metadata."
    )
    spec: InferenceEndpointSpec = Field(description="spec is the desired state.")
    status: InferenceEndpointStatus = Field(
        default_factory=InferenceEndpointStatus, description="status is the observed state."
    )
