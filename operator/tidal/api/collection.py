"""The VectorCollection kind (tidal.dev/v1alpha1): spec, status and the per-engine image defaults.

Owns: the pydantic models of DESIGN.md §1 "VectorCollection", the CEL rules that guard their
cross-field and immutability invariants (next to the fields they guard), the same non-transition
invariants as pydantic validators, and derived values (`effective_image`,
`effective_min_replicas`).

Must not: do IO, read the clock, or size/price anything — `tidal.sizing` and `tidal.cost` take
these models as input.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Self

from pydantic import ConfigDict, Field, model_validator

from tidal.api.common import (
    API_VERSION,
    DNS_SUBDOMAIN_PATTERN,
    ApiModel,
    Condition,
    LocalObjectRef,
    Money,
    PlacementStatus,
    Quantity,
    ResidencySpec,
    Timestamp,
    cel,
    validations,
)

KIND = "VectorCollection"
PLURAL = "vectorcollections"
SINGULAR = "vectorcollection"
SHORT_NAMES = ("vc", "vcol")

MAX_VECTOR_REPLICAS = 16


class VectorEngineType(StrEnum):
    """The vector database engine."""

    Qdrant = "Qdrant"
    PGVector = "PGVector"


class VectorEngineMode(StrEnum):
    """Whether Tidal runs the engine or connects to one that exists."""

    Managed = "Managed"
    External = "External"


class Metric(StrEnum):
    """Distance metric."""

    Cosine = "Cosine"
    Dot = "Dot"
    Euclidean = "Euclidean"


class IndexType(StrEnum):
    """Vector index algorithm."""

    HNSW = "HNSW"


class VectorQuantization(StrEnum):
    """Compressed copy of the vectors kept for search."""

    None_ = "None"
    Scalar = "Scalar"
    Product = "Product"
    Binary = "Binary"


class StorageTier(StrEnum):
    """Where vectors live while serving: RAM, or memory-mapped from disk."""

    Memory = "Memory"
    Disk = "Disk"


_DEFAULT_IMAGES: dict[VectorEngineType, str] = {
    VectorEngineType.Qdrant: "qdrant/qdrant:v1.18.3-unprivileged",
    VectorEngineType.PGVector: "pgvector/pgvector:0.8.2-pg17",
}


def default_vector_engine_image(engine_type: VectorEngineType) -> str:
    """The image a Managed engine runs when `engine.image` is unset."""
    return _DEFAULT_IMAGES[engine_type]


def _immutable(path: str) -> dict[str, Any]:
    # A transition rule: the engine cannot change these in place, so a silent "update" would mean
    # either a rebuild that drops data or a collection that no longer matches its spec.
    return validations(
        cel("self == oldSelf", f"{path} is immutable; create a new VectorCollection to change it")
    )


_EXTERNAL_NEEDS_ENDPOINT = (
    "engine.url or engine.connectionSecretRef is required when engine.mode is External"
)
_MANAGED_NO_URL = "engine.url must not be set when engine.mode is Managed (Tidal runs the engine)"
_EXTERNAL_NO_IMAGE = "engine.image must not be set when engine.mode is External"


class VectorEngineSpec(ApiModel):
    """The engine holding the collection."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.mode) || self.mode != 'External' || "
                "has(self.url) || has(self.connectionSecretRef)",
                _EXTERNAL_NEEDS_ENDPOINT,
            ),
            cel(
                "!has(self.mode) || self.mode != 'Managed' || !has(self.url)",
                _MANAGED_NO_URL,
                field_path=".url",
            ),
            cel(
                "!has(self.mode) || self.mode != 'External' || !has(self.image)",
                _EXTERNAL_NO_IMAGE,
                field_path=".image",
            ),
        )
    )

    type: VectorEngineType = Field(
        default=VectorEngineType.Qdrant,
        description="type of the engine: Qdrant or PGVector. Immutable.",
        json_schema_extra=_immutable("engine.type"),
    )
    mode: VectorEngineMode = Field(
        default=VectorEngineMode.Managed,
        description=(
            "mode is Managed (Tidal runs the engine) or External (Tidal uses an existing one)."
        ),
    )
    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^(https?|postgres|postgresql)://.+$",
        description="url of an External engine, e.g. http://qdrant.search:6333.",
    )
    connection_secret_ref: LocalObjectRef | None = Field(
        default=None,
        description=(
            "connectionSecretRef names a Secret with the engine's connection details (External: "
            "keys url and apiKey, or a postgres uri; Managed: apiKey for Qdrant, password for "
            "PGVector). Unset for a Managed engine: Tidal generates <name>-credentials once."
        ),
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="image overrides the Managed engine's default container image.",
    )

    @property
    def effective_image(self) -> str | None:
        """The image a Managed engine runs; None for External (nothing to run)."""
        if self.mode is VectorEngineMode.External:
            return None
        return self.image or default_vector_engine_image(self.type)

    @model_validator(mode="after")
    def _mode_is_consistent(self) -> Self:
        if self.mode is VectorEngineMode.External:
            if self.url is None and self.connection_secret_ref is None:
                raise ValueError(_EXTERNAL_NEEDS_ENDPOINT)
            if self.image is not None:
                raise ValueError(_EXTERNAL_NO_IMAGE)
        elif self.url is not None:
            raise ValueError(_MANAGED_NO_URL)
        return self


class IndexSpec(ApiModel):
    """The vector index. Bounds are the intersection of what Qdrant and pgvector accept."""

    type: IndexType = Field(default=IndexType.HNSW, description="type of index: HNSW.")
    m: int = Field(
        default=16, ge=2, le=100, description="m is the HNSW links per node (more: better recall)."
    )
    ef_construct: int = Field(
        default=100,
        ge=4,
        le=1000,
        description="efConstruct is the HNSW candidate list size while building the index.",
    )
    ef_search: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="efSearch is the HNSW candidate list size per query; engine default if unset.",
    )


class VectorQuantizationSpec(ApiModel):
    """Quantization. Qdrant maps it natively; PGVector maps Scalar to halfvec, Binary to bit."""

    type: VectorQuantization = Field(
        default=VectorQuantization.None_,
        description="type of quantization: None, Scalar, Product or Binary.",
    )
    rescore: bool = Field(
        default=True,
        description="rescore re-ranks candidates with the original vectors for better recall.",
    )


class ColdTierSpec(ApiModel):
    """Offload of snapshots of an idle collection to object storage."""

    object_store_uri: str = Field(
        alias="objectStoreURI",
        min_length=1,
        max_length=2048,
        pattern=r"^(s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](/.*)?|file:///.+)$",
        description=(
            "objectStoreURI is where snapshots go: s3://bucket/prefix (any S3-compatible "
            "store, see credentialsSecretRef) or file:///path on a volume mounted into the "
            "operator."
        ),
    )
    after_idle_days: int = Field(
        default=7,
        ge=1,
        le=3650,
        description=(
            "afterIdleDays is how long the collection must be idle before it is snapshotted to "
            "the cold tier and, once the upload is verified, deleted from the engine."
        ),
    )
    credentials_secret_ref: LocalObjectRef | None = Field(
        default=None,
        description=(
            "credentialsSecretRef names a Secret with the S3-compatible store's endpoint "
            "(e.g. http://minio.storage:9000; default AWS S3), region (default us-east-1), "
            "accessKeyID and secretAccessKey, for s3:// URIs."
        ),
    )


class StorageSpec(ApiModel):
    """Where vectors are kept."""

    tier: StorageTier = Field(
        default=StorageTier.Memory,
        description="tier is Memory (vectors in RAM) or Disk (memory-mapped, on_disk).",
    )
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="storageClassName of the volumes; the cluster default if unset.",
    )
    size: Quantity | None = Field(
        default=None,
        description="size of each volume (a quantity, e.g. 100Gi); overrides Tidal's estimate.",
    )
    cold_tier: ColdTierSpec | None = Field(
        default=None, description="coldTier offloads snapshots of an idle collection."
    )


class CollectionScalingSpec(ApiModel):
    """Hibernation of an idle collection."""

    min_replicas: int | None = Field(
        default=None,
        ge=0,
        le=MAX_VECTOR_REPLICAS,
        description=(
            "minReplicas is the fewest replicas kept when idle; 0 hibernates the collection "
            "(volumes are kept). Defaults to replicas: never hibernate."
        ),
    )
    idle_seconds_before_scale_to_zero: int = Field(
        default=300,
        ge=1,
        le=7 * 24 * 3600,
        description=(
            "idleSecondsBeforeScaleToZero is how long without queries before hibernating "
            "(only when minReplicas is 0)."
        ),
    )


class CollectionSLOSpec(ApiModel):
    """Service level objectives for queries."""

    p95_latency_ms: int | None = Field(
        default=None,
        ge=1,
        le=3_600_000,
        description="p95LatencyMs is the target 95th percentile query latency in milliseconds.",
    )
    min_recall_percent: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="minRecallPercent is the least acceptable recall@k, in percent.",
    )


def _object_default() -> dict[str, Any]:
    # See inference._object_default: the API server then fills nested defaults.
    return {"default": {}}


_MIN_LE_REPLICAS = "scaling.minReplicas must be less than or equal to replicas"
_PGVECTOR_NO_PRODUCT = (
    "quantization.type Product is not supported when engine.type is PGVector; "
    "use Scalar (halfvec) or Binary (bit)"
)
_PGVECTOR_ONE_SHARD = "shards must be 1 when engine.type is PGVector"


class VectorCollectionSpec(ApiModel):
    """VectorCollectionSpec is the desired state of a vector collection."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.scaling) || !has(self.scaling.minReplicas) || !has(self.replicas) || "
                "self.scaling.minReplicas <= self.replicas",
                _MIN_LE_REPLICAS,
                field_path=".scaling.minReplicas",
            ),
            cel(
                "!has(self.engine) || !has(self.engine.type) || self.engine.type != 'PGVector' || "
                "!has(self.quantization) || !has(self.quantization.type) || "
                "self.quantization.type != 'Product'",
                _PGVECTOR_NO_PRODUCT,
                field_path=".quantization.type",
            ),
            cel(
                "!has(self.engine) || !has(self.engine.type) || self.engine.type != 'PGVector' || "
                "!has(self.shards) || self.shards == 1",
                _PGVECTOR_ONE_SHARD,
                field_path=".shards",
            ),
        )
    )

    engine: VectorEngineSpec = Field(
        default_factory=VectorEngineSpec,
        description="engine is the vector database holding the collection.",
        json_schema_extra=_object_default(),
    )
    dimension: int = Field(
        ge=1,
        le=65536,
        description="dimension of the vectors (1-65536). Immutable.",
        json_schema_extra=_immutable("dimension"),
    )
    metric: Metric = Field(
        default=Metric.Cosine,
        description="metric is the distance: Cosine, Dot or Euclidean. Immutable.",
        json_schema_extra=_immutable("metric"),
    )
    expected_vectors: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000_000,
        description="expectedVectors is how many vectors to size the collection for.",
    )
    payload_bytes_per_vector: int = Field(
        default=0,
        ge=0,
        le=1 << 24,
        description="payloadBytesPerVector is the average payload size per vector, for sizing.",
    )
    index: IndexSpec = Field(
        default_factory=IndexSpec,
        description="index is the vector index configuration.",
        json_schema_extra=_object_default(),
    )
    quantization: VectorQuantizationSpec = Field(
        default_factory=VectorQuantizationSpec,
        description="quantization keeps a compressed copy of the vectors to save memory.",
        json_schema_extra=_object_default(),
    )
    shards: int = Field(default=1, ge=1, le=64, description="shards the collection is split into.")
    replicas: int = Field(
        default=1,
        ge=1,
        le=MAX_VECTOR_REPLICAS,
        description="replicas of each shard (and engine pods) while serving.",
    )
    storage: StorageSpec = Field(
        default_factory=StorageSpec,
        description="storage is where vectors are kept.",
        json_schema_extra=_object_default(),
    )
    residency: ResidencySpec = Field(
        description="residency is where the collection's data may live."
    )
    scaling: CollectionScalingSpec = Field(
        default_factory=CollectionScalingSpec,
        description="scaling configures hibernation when idle.",
        json_schema_extra=_object_default(),
    )
    slo: CollectionSLOSpec | None = Field(
        default=None, description="slo is the query service level objectives."
    )

    @property
    def effective_min_replicas(self) -> int:
        """scaling.minReplicas, or replicas when unset (never hibernate)."""
        if self.scaling.min_replicas is not None:
            return self.scaling.min_replicas
        return self.replicas

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        if self.scaling.min_replicas is not None and self.scaling.min_replicas > self.replicas:
            raise ValueError(_MIN_LE_REPLICAS)
        if self.engine.type is VectorEngineType.PGVector:
            if self.quantization.type is VectorQuantization.Product:
                raise ValueError(_PGVECTOR_NO_PRODUCT)
            if self.shards != 1:
                raise ValueError(_PGVECTOR_ONE_SHARD)
        return self


class SizingEstimate(ApiModel):
    """Resources the collection should need, from Qdrant's capacity-planning formula."""

    memory: Quantity | None = Field(
        default=None,
        description="memory is memoryBytes as a quantity (e.g. 7.3Gi), for people and columns.",
    )
    memory_bytes: int | None = Field(
        default=None, ge=0, description="memoryBytes is the estimated memory across replicas."
    )
    disk_bytes: int | None = Field(
        default=None, ge=0, description="diskBytes is the estimated disk across replicas."
    )
    memory_reduction_factor: float | None = Field(
        default=None,
        ge=0,
        description="memoryReductionFactor is how much quantization and tiering shrink memory.",
    )


class MeasuredUsage(ApiModel):
    """Resources the engine reports using."""

    memory_bytes: int | None = Field(
        default=None, ge=0, description="memoryBytes is the memory the engine reports using."
    )
    disk_bytes: int | None = Field(
        default=None, ge=0, description="diskBytes is the disk the engine reports using."
    )
    data_bytes: int | None = Field(
        default=None,
        ge=0,
        description=(
            "dataBytes is the size of the stored vectors and payloads the engine reports "
            "(Qdrant: its telemetry's vectors_size_bytes + payloads_size_bytes), without "
            "indexes, quantized copies or write-ahead logs."
        ),
    )


class CollectionCostStatus(ApiModel):
    """What the collection costs now."""

    hourly_usd: Money | None = Field(
        default=None,
        alias="hourlyUSD",
        description='hourlyUSD is the current cost per hour in US dollars, e.g. "0.42".',
    )
    monthly_usd: Money | None = Field(
        default=None,
        alias="monthlyUSD",
        description="monthlyUSD is hourlyUSD over a 730-hour month, in US dollars.",
    )
    tiering_savings_percent: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="tieringSavingsPercent is what quantization and tiering save versus all-RAM.",
    )
    basis: str | None = Field(
        default=None,
        max_length=1024,
        description="basis explains how the cost was computed (prices and their source).",
    )


class CollectionSLOStatus(ApiModel):
    """Query service levels measured by Tidal's probe: a sample of stored vectors queried through
    the configured index and compared with exact search."""

    recall_at10_percent: float | None = Field(
        default=None,
        alias="recallAt10Percent",
        ge=0,
        le=100,
        description=(
            "recallAt10Percent is the share of the exact top-10 neighbours the indexed search "
            "returned, averaged over the sampled queries, in percent."
        ),
    )
    p95_latency_ms: float | None = Field(
        default=None,
        ge=0,
        description=(
            "p95LatencyMs is the 95th percentile latency of the sampled indexed queries, as the "
            "operator's client saw it (round trip included), in milliseconds."
        ),
    )
    sample_size: int | None = Field(
        default=None,
        ge=0,
        description="sampleSize is how many stored vectors were queried.",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description=(
            "observedGeneration is the metadata.generation the sample was queried under (a new "
            "spec is measured again at once)."
        ),
    )
    evaluated_time: Timestamp | None = Field(
        default=None, description="evaluatedTime is when the sample was last queried (RFC3339)."
    )


class ActivitySource(StrEnum):
    """What last showed the collection in use."""

    Created = "Created"
    Woken = "Woken"
    RequestAnnotation = "RequestAnnotation"
    EngineQueries = "EngineQueries"
    PairedEndpoint = "PairedEndpoint"


class CollectionActivityStatus(ApiModel):
    """When the collection was last used, the signal idle hibernation and the cold tier read."""

    last_activity_time: Timestamp | None = Field(
        default=None, description="lastActivityTime is when the collection was last seen in use."
    )
    source: ActivitySource | None = Field(
        default=None, description="source is the signal that set lastActivityTime."
    )
    engine_queries: int | None = Field(
        default=None,
        ge=0,
        description=(
            "engineQueries is the engine's query counter when last read (PGVector: sequential "
            "plus index scans of the collection's table); a change counts as activity."
        ),
    )
    wake_request: str | None = Field(
        default=None,
        max_length=256,
        description=(
            "wakeRequest is the last wake annotation value acted upon "
            "(tidal.dev/wake-requested-at, or the older tidal.dev/wake)."
        ),
    )
    hibernated_time: Timestamp | None = Field(
        default=None, description="hibernatedTime is when the collection last hibernated."
    )


class ColdTierStatus(ApiModel):
    """The last snapshot offloaded to the cold tier, and whether the engine still holds the data."""

    last_snapshot_uri: str | None = Field(
        default=None,
        alias="lastSnapshotURI",
        max_length=4096,
        description="lastSnapshotURI is where the last snapshot was written.",
    )
    last_snapshot_time: Timestamp | None = Field(
        default=None, description="lastSnapshotTime is when the last snapshot was written."
    )
    last_snapshot_bytes: int | None = Field(
        default=None, ge=0, description="lastSnapshotBytes is the size of the last snapshot."
    )
    last_snapshot_sha256: str | None = Field(
        default=None,
        alias="lastSnapshotSHA256",
        max_length=64,
        description="lastSnapshotSHA256 is the verified SHA-256 (hex) of the last snapshot.",
    )
    last_snapshot_vectors: int | None = Field(
        default=None, ge=0, description="lastSnapshotVectors is how many vectors it holds."
    )
    offloaded_time: Timestamp | None = Field(
        default=None,
        description=(
            "offloadedTime is when the engine's copy was deleted after the last snapshot was "
            "verified; unset while the engine holds the data."
        ),
    )
    restored_time: Timestamp | None = Field(
        default=None, description="restoredTime is when a snapshot was last restored."
    )
    last_restore_seconds: float | None = Field(
        default=None,
        ge=0,
        description="lastRestoreSeconds is how long the last restore took, object store to engine.",
    )
    offload_request: str | None = Field(
        default=None,
        max_length=256,
        description="offloadRequest is the last tidal.dev/offload-requested-at value acted upon.",
    )
    restore_request: str | None = Field(
        default=None,
        max_length=256,
        description="restoreRequest is the last tidal.dev/restore-requested-at value acted upon.",
    )
    failed_snapshots: int | None = Field(
        default=None,
        ge=0,
        description=(
            "failedSnapshots counts the snapshots that failed in a row since the last one that "
            "succeeded; automatic snapshots back off while it grows."
        ),
    )
    last_failure_time: Timestamp | None = Field(
        default=None, description="lastFailureTime is when the last snapshot failed."
    )


class VectorCollectionStatus(ApiModel):
    """VectorCollectionStatus is the observed state of a vector collection."""

    # coldTier whole: a restore must clear offloadedTime in the stored status, not leave it.
    patch_whole: ClassVar[frozenset[str]] = frozenset({"cold_tier"})

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="observedGeneration is the metadata.generation this status reflects.",
    )
    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        description="endpoint is the URL clients use to reach the collection.",
    )
    collection: str | None = Field(
        default=None,
        max_length=512,
        description=(
            "collection is the collection's name inside the engine (Qdrant collection, or the "
            "PGVector schema-qualified table)."
        ),
    )
    vectors: int | None = Field(
        default=None, ge=0, description="vectors is the vector count reported by the engine."
    )
    engine_version: str | None = Field(
        default=None,
        max_length=256,
        description="engineVersion is the engine's version as it reports it, e.g. Qdrant 1.18.3.",
    )
    credentials_secret_name: str | None = Field(
        default=None,
        max_length=253,
        description=(
            "credentialsSecretName is the Secret Tidal generated with a Managed engine's "
            "password or API key (when engine.connectionSecretRef is unset)."
        ),
    )
    estimate: SizingEstimate | None = Field(
        default=None, description="estimate is the resources the collection should need."
    )
    measured: MeasuredUsage | None = Field(
        default=None, description="measured is the resources the engine reports using."
    )
    cost: CollectionCostStatus | None = Field(
        default=None, description="cost is what the collection costs."
    )
    slo: CollectionSLOStatus | None = Field(
        default=None, description="slo is the measured query service levels."
    )
    placement: PlacementStatus = Field(
        default_factory=PlacementStatus, description="placement is where replicas run and why."
    )
    activity: CollectionActivityStatus | None = Field(
        default=None,
        description="activity is when the collection was last used, and how Tidal knows.",
    )
    cold_tier: ColdTierStatus | None = Field(
        default=None, description="coldTier is the last snapshot offloaded to object storage."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "conditions: Ready, Provisioned, ResidencyCompliant, SLOMet, WithinBudget, "
            "Hibernated, Offloaded."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class VectorCollection(ApiModel):
    """VectorCollection is a vector database collection, sized, placed within its residency
    regions, hibernated when idle, with recall, latency and cost in status."""

    api_version: str = Field(default=API_VERSION, description="apiVersion is tidal.dev/v1alpha1.")
    kind: str = Field(default=KIND, description="kind is VectorCollection.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="metadata is the standard object metadata."
    )
    spec: VectorCollectionSpec = Field(description="spec is the desired state.")
    status: VectorCollectionStatus = Field(
        default_factory=VectorCollectionStatus, description="status is the observed state."
    )
