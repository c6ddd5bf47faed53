"""The `tidal.dev/gpu-telemetry` Node annotation: the contract between the node agent and the
operator (DESIGN.md "Cluster conventions").

Owns: the versioned JSON document's schema (pydantic), its parsing with staleness, and nothing
else. Must not: read NVML or talk to the API server (the agent and `clients/` do that).

Schema version 1 (`schemaVersion: 1`), camelCase like every Kubernetes document:

    {"schemaVersion": 1, "time": "2026-11-29T16:00:00Z", "windowSeconds": 10,
     "source": "nvml" | "simulated" | "unavailable", "driverVersion": "580.65", "error": null,
     "gpus": [{"index": 0, "uuid": "GPU-…", "product": "NVIDIA-H100-80GB-HBM3",
               "utilizationPercent": 42.0, "memoryUsedMiB": 30000, "memoryTotalMiB": 81559,
               "powerWatts": 310.5, "temperatureC": 61, "migMode": false}],
     "pods": [{"namespace": "default", "name": "llama-spot-…", "uid": "…",
               "gpuIndexes": [0], "memoryUsedMiB": 30000, "utilizationPercent": 40.0,
               "utilizationSource": "process-samples" | "apportioned"}]}

A field the agent could not read is null (never 0: "unknown" and "idle" differ). A document
older than `STALE_AFTER_SECONDS` counts as unknown. Readers ignore fields they do not know, so
additive changes keep version 1; a breaking change bumps `schemaVersion`, and readers treat an
unknown version as unknown telemetry.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

SCHEMA_VERSION: Literal[1] = 1
STALE_AFTER_SECONDS = 120


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class GpuSample(_Doc):
    index: int = Field(ge=0)
    uuid: str | None = None
    product: str | None = None
    utilization_percent: float | None = Field(default=None, ge=0, le=100)
    memory_used_mib: int | None = Field(default=None, ge=0, alias="memoryUsedMiB")
    memory_total_mib: int | None = Field(default=None, ge=0, alias="memoryTotalMiB")
    power_watts: float | None = Field(default=None, ge=0)
    temperature_c: int | None = Field(default=None, alias="temperatureC")
    mig_mode: bool | None = None


class PodUsage(_Doc):
    namespace: str
    name: str
    uid: str | None = None
    gpu_indexes: list[int] = Field(default_factory=list)
    memory_used_mib: int | None = Field(default=None, ge=0, alias="memoryUsedMiB")
    utilization_percent: float | None = Field(default=None, ge=0, le=100)
    # "process-samples": NVML per-process utilization; "apportioned": the GPU's utilization
    # divided among its processes by memory share, because the driver gave no samples.
    utilization_source: Literal["process-samples", "apportioned"] | None = None


class GpuTelemetry(_Doc):
    schema_version: Literal[1] = SCHEMA_VERSION
    time: datetime
    window_seconds: int = Field(default=10, ge=0)
    source: Literal["nvml", "simulated", "unavailable"] = "nvml"
    driver_version: str | None = None
    error: str | None = None
    gpus: list[GpuSample] = Field(default_factory=list)
    pods: list[PodUsage] = Field(default_factory=list)

    @property
    def utilization_percent(self) -> float | None:
        """Mean utilization over the GPUs that reported one; None when none did."""
        known = [g.utilization_percent for g in self.gpus if g.utilization_percent is not None]
        return sum(known) / len(known) if known else None

    def to_annotation(self) -> str:
        return json.dumps(
            self.model_dump(mode="json", by_alias=True), separators=(",", ":"), sort_keys=True
        )


def parse(raw: str | None, now: datetime) -> GpuTelemetry | None:
    """The annotation's document if present, well-formed, of a known version and fresh.

    Anything else is unknown telemetry (None): a reader must never act on stale or garbled
    numbers as if they were measurements.
    """
    if not raw:
        return None
    try:
        doc = GpuTelemetry.model_validate_json(raw)
    except ValidationError:
        return None
    if doc.time.tzinfo is None:
        return None
    if now - doc.time > timedelta(seconds=STALE_AFTER_SECONDS):
        return None
    return doc
