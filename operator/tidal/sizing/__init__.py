"""Sizing: how much memory, disk and CPU a vector collection needs (pure; no IO, no clock).

`estimate(spec, points)` follows Qdrant's capacity-planning formula, corrected by measurement
(`tidal.sizing.collection`);
`pod_resources(spec, estimate)` turns it into a Managed engine pod's requests and volume.
"""

from tidal.sizing.collection import (
    HEADROOM,
    Breakdown,
    Estimate,
    PodResources,
    estimate,
    format_bytes,
    per_vector,
    pod_resources,
    wal_bytes,
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
