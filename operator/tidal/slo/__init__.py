"""SLO attainment, decided purely from a measurement: `evaluate` and `transition_event`.

The controller reads a `Measurement` through `tidal.clients.prometheus`, passes it here with the
spec's `slo` and `now`, writes the returned `EndpointSLOStatus` into `status.slo`, upserts the
returned `SLOMet` condition and posts the Event `transition_event` returns. No IO, no clock, no
Kopf.
"""

from tidal.slo.evaluation import (
    LATENCY_ABOVE_TARGET,
    NO_DATA,
    NO_TARGETS,
    THROUGHPUT_BELOW_TARGET,
    TTFT_ABOVE_TARGET,
    WITHIN_TARGETS,
    evaluate,
    transition_event,
)
from tidal.slo.measurement import Measurement

__all__ = [
    "LATENCY_ABOVE_TARGET",
    "NO_DATA",
    "NO_TARGETS",
    "THROUGHPUT_BELOW_TARGET",
    "TTFT_ABOVE_TARGET",
    "WITHIN_TARGETS",
    "Measurement",
    "evaluate",
    "transition_event",
]
