"""How much memory and disk a VectorCollection needs: Qdrant's capacity-planning formula,
corrected by what Qdrant 1.18 measurably holds (docs/benchmarks.md, "estimate vs measured
Qdrant").

Owns `status.estimate` and the per-pod resources a Managed engine is given. Per stored vector,
before replication:

    dense      = dimension x bytes per dimension (float32: 4)
    quantized  = the compressed copy, only if any: Qdrant int8 = dimension + 4 (a float
                 correction per vector), binary = dimension bits in 64-bit words, product =
                 dimension / 4 (x16 compression)
    hnsw       = m x 2 links x link bytes x 1.2 (upper layers and bookkeeping); Qdrant stores
                 the links bit-packed, about 2 bytes each, where its published formula assumes 4
    overhead   = the engine's fixed bytes per point (Qdrant's id tracker: 52 B)
    payload    = payloadBytesPerVector x 1.5 (on disk)

and per shard replica, Qdrant's write-ahead log: the points as written (CBOR: 5 bytes per
float32, plus a few per point) until two 32 MiB segments are full, at most 64 MiB. Its segments
are memory-mapped, so what was written is resident too: it counts towards memory and disk.
Then x points x replicas, + the WAL, +20% headroom. Which per-vector terms count towards memory
depends on the tier:

- Qdrant, Memory tier: without quantization the originals, HNSW and id tracker are in RAM; with
  quantization the compressed copy replaces the originals in RAM (originals are memory-mapped
  from disk and read only to rescore).
- Qdrant, Disk tier: originals and HNSW are memory-mapped (`on_disk`); RAM holds the id tracker
  and the quantized copy (pinned in RAM) if any.
- PGVector keeps the vectors twice: in the table (float32, `vector`) and inside the HNSW index
  (a `vector`, `halfvec` or `bit` copy, depending on quantization). The index copy is the
  formula's "quantized copy"; Memory tier sizes RAM for the whole index, Disk tier leaves index
  pages to the page cache (RAM = per-row overhead only). Byte counts include pgvector's 8-byte
  value headers and PostgreSQL's tuple overheads, and links are 6-byte item pointers. No WAL
  term: PostgreSQL's WAL is the server's, not the table's.

`memoryReductionFactor` is the all-RAM full-precision memory (the same collection without
quantization, Memory tier) divided by the estimate's memory, per vector (the WAL is the same
for both and left out). Pure: no IO, no clock.
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from typing import Final

from tidal.api.collection import (
    SizingEstimate,
    StorageTier,
    VectorCollectionSpec,
    VectorEngineType,
    VectorQuantization,
)

__all__ = [
    "HEADROOM",
    "Breakdown",
    "Estimate",
    "PodResources",
    "estimate",
    "format_bytes",
    "per_vector",
    "pod_resources",
    "wal_bytes",
]

HEADROOM: Final = 1.2
HNSW_UPPER_LAYERS: Final = 1.2
PAYLOAD_DISK_FACTOR: Final = 1.5

_MI: Final = 1 << 20
_GI: Final = 1 << 30

# Qdrant's links, bit-packed (delta-encoded neighbour ids): about 2 bytes each where the
# published formula counts 4 (measured: 64 B per point for m=16 at 30,000 points).
_QDRANT_LINK_BYTES: Final = 2
_QDRANT_ID_TRACKER: Final = 52
# Qdrant's scalar quantization keeps a float32 correction per vector beside the int8 codes.
_QDRANT_SCALAR_EXTRA: Final = 4
# The WAL: two 32 MiB segments at most (`wal_capacity_mb`, the one being written and the last
# closed one); entries are CBOR, 5 bytes per float32 and a few per point.
_QDRANT_WAL_MAX: Final = 2 * 32 * (1 << 20)
_QDRANT_WAL_BYTES_PER_DIMENSION: Final = 5
_QDRANT_WAL_BYTES_PER_POINT: Final = 8
# PGVector: the index stores vector (float32), halfvec (float16) or bit (1 bit) values.
_PGVECTOR_INDEX: Final[dict[VectorQuantization, float]] = {
    VectorQuantization.None_: 4.0,
    VectorQuantization.Scalar: 2.0,
    VectorQuantization.Binary: 1.0 / 8,
}
# pgvector: varlena + dimension header of every vector/halfvec/bit value.
_PG_VALUE_HEADER: Final = 8
# An ItemPointer (block + offset) per HNSW link.
_PG_LINK_BYTES: Final = 6
# Heap row: 24 B tuple header + 4 B line pointer + 8 B bigint id.
_PG_ROW_OVERHEAD: Final = 36
# HNSW element tuple without its value (heap tids, neighbour pointer, flags) + 2 line pointers.
_PG_INDEX_ELEMENT_OVERHEAD: Final = 80

# Engine process overhead on top of the data, per pod.
_ENGINE_BASE_MEMORY: Final[dict[VectorEngineType, int]] = {
    VectorEngineType.Qdrant: 256 * _MI,
    VectorEngineType.PGVector: 256 * _MI,
}
# One vCPU per 8 GiB of RAM: the ratio of the clouds' memory-optimized instances.
_GIB_PER_CORE: Final = 8
_MIN_CORES: Final = Decimal("0.5")
_MAX_CORES: Final = Decimal(16)
_MIN_VOLUME: Final = _GI


@dataclasses.dataclass(frozen=True)
class Breakdown:
    """Bytes per stored vector (one replica, before headroom), by structure."""

    dense: float
    quantized: float
    hnsw: float
    overhead: float
    payload: float
    memory: float
    disk: float
    baseline_memory: float


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The estimate for `points` vectors across `replicas`, with headroom."""

    points: int
    replicas: int
    memory_bytes: int
    disk_bytes: int
    memory_reduction_factor: float
    per_vector: Breakdown

    def to_status(self) -> SizingEstimate:
        """`status.estimate`."""
        return SizingEstimate(
            memory=format_bytes(self.memory_bytes),
            memory_bytes=self.memory_bytes,
            disk_bytes=self.disk_bytes,
            memory_reduction_factor=self.memory_reduction_factor,
        )


@dataclasses.dataclass(frozen=True)
class PodResources:
    """What each Managed engine pod requests, and its volume size."""

    cpu_cores: Decimal
    memory_bytes: int
    volume_bytes: int

    @property
    def cpu(self) -> str:
        """The CPU request as a quantity (`500m`, `2`)."""
        millis = int(self.cpu_cores * 1000)
        return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"

    @property
    def memory(self) -> str:
        """The memory request as a quantity in Mi."""
        return f"{self.memory_bytes // _MI}Mi"

    @property
    def volume(self) -> str:
        """The volume size as a quantity in Gi."""
        return f"{self.volume_bytes // _GI}Gi"


def per_vector(spec: VectorCollectionSpec) -> Breakdown:
    """Bytes per stored vector and replica, before headroom."""
    dim = spec.dimension
    quantization = spec.quantization.type
    m = spec.index.m
    payload = spec.payload_bytes_per_vector * PAYLOAD_DISK_FACTOR
    disk_tier = spec.storage.tier is StorageTier.Disk
    if spec.engine.type is VectorEngineType.PGVector:
        dense = dim * 4.0 + _PG_VALUE_HEADER
        copy = dim * _PGVECTOR_INDEX[quantization] + _PG_VALUE_HEADER
        hnsw = m * 2 * _PG_LINK_BYTES * HNSW_UPPER_LAYERS
        overhead = float(_PG_ROW_OVERHEAD + _PG_INDEX_ELEMENT_OVERHEAD)
        index = copy + hnsw + _PG_INDEX_ELEMENT_OVERHEAD
        memory = float(_PG_ROW_OVERHEAD) if disk_tier else index
        baseline = dim * 4.0 + _PG_VALUE_HEADER + hnsw + _PG_INDEX_ELEMENT_OVERHEAD
        return Breakdown(
            dense=dense,
            quantized=copy,
            hnsw=hnsw,
            overhead=overhead,
            payload=payload,
            memory=memory,
            disk=dense + copy + hnsw + overhead + payload,
            baseline_memory=baseline,
        )
    dense = dim * 4.0
    quantized = _qdrant_quantized(quantization, dim)
    hnsw = m * 2 * _QDRANT_LINK_BYTES * HNSW_UPPER_LAYERS
    overhead = float(_QDRANT_ID_TRACKER)
    if disk_tier:
        memory = quantized + overhead
    elif quantized:
        memory = quantized + hnsw + overhead
    else:
        memory = dense + hnsw + overhead
    return Breakdown(
        dense=dense,
        quantized=quantized,
        hnsw=hnsw,
        overhead=overhead,
        payload=payload,
        memory=memory,
        disk=dense + quantized + hnsw + overhead + payload,
        baseline_memory=dense + hnsw + overhead,
    )


def estimate(spec: VectorCollectionSpec, points: int | None = None) -> Estimate:
    """The estimate for `points` vectors (default: `expectedVectors`, else 0)."""
    if points is None:
        points = spec.expected_vectors or 0
    breakdown = per_vector(spec)
    base = points * spec.replicas
    wal = wal_bytes(spec, points)
    factor = breakdown.baseline_memory / breakdown.memory if breakdown.memory else 1.0
    return Estimate(
        points=points,
        replicas=spec.replicas,
        memory_bytes=math.ceil((base * breakdown.memory + wal) * HEADROOM),
        disk_bytes=math.ceil((base * breakdown.disk + wal) * HEADROOM),
        memory_reduction_factor=round(factor, 2),
        per_vector=breakdown,
    )


def wal_bytes(spec: VectorCollectionSpec, points: int) -> int:
    """Qdrant's write-ahead log over all shard replicas (0 for PGVector): what each shard has
    written since its oldest kept segment, at most two 32 MiB segments."""
    if spec.engine.type is not VectorEngineType.Qdrant or points <= 0:
        return 0
    per_shard = math.ceil(points / spec.shards)
    written = per_shard * (
        spec.dimension * _QDRANT_WAL_BYTES_PER_DIMENSION + _QDRANT_WAL_BYTES_PER_POINT
    )
    return min(_QDRANT_WAL_MAX, written) * spec.shards * spec.replicas


def _qdrant_quantized(quantization: VectorQuantization, dimension: int) -> float:
    """Bytes per vector of Qdrant's compressed copy (0 without quantization)."""
    if quantization is VectorQuantization.Scalar:
        return float(dimension + _QDRANT_SCALAR_EXTRA)
    if quantization is VectorQuantization.Binary:
        return float(math.ceil(dimension / 64) * 8)
    if quantization is VectorQuantization.Product:
        return dimension * 4.0 / 16
    return 0.0


def pod_resources(spec: VectorCollectionSpec, sized: Estimate) -> PodResources:
    """Per-pod CPU, memory and volume for a Managed engine running `spec` sized as `sized`.

    Memory is the pod's share of the estimate plus the engine's own overhead, rounded up to
    64 MiB so small changes of the estimate do not roll the pods. The volume is `storage.size`
    when set (the caller passes it through; see `volume_bytes`), else the pod's share of the disk
    estimate rounded up to whole GiB, at least 1 GiB.
    """
    replicas = max(1, spec.replicas)
    data = math.ceil(sized.memory_bytes / replicas)
    memory = _round_up(data + _ENGINE_BASE_MEMORY[spec.engine.type], 64 * _MI)
    cores = Decimal(memory) / Decimal(_GIB_PER_CORE * _GI)
    # Half-core steps: a request that moves with every MiB would roll the pods needlessly.
    cores = (cores * 2).to_integral_value(rounding="ROUND_CEILING") / 2
    cores = min(_MAX_CORES, max(_MIN_CORES, cores))
    volume = max(_MIN_VOLUME, _round_up(math.ceil(sized.disk_bytes / replicas), _GI))
    return PodResources(cpu_cores=cores, memory_bytes=memory, volume_bytes=volume)


def format_bytes(value: int) -> str:
    """A byte count as a short binary quantity: `0`, `512Ki`, `7.3Gi`, `1.2Ti`."""
    if value <= 0:
        return "0"
    units = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
    amount = float(value)
    suffix = ""
    for unit in units:
        if amount < 1024:
            break
        amount /= 1024
        suffix = unit
    if not suffix:
        return str(value)
    text = f"{amount:.1f}".rstrip("0").rstrip(".")
    return f"{text}{suffix}"


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step
