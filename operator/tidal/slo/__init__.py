"""SLO attainment, decided purely from a measurement: `evaluate` and `transition_event` for
endpoints; `measured_status`, `collection_condition` and `collection_transition_event` for vector
collections (from the recall probe a vector engine driver returns).

The controller reads a `Measurement` through `tidal.clients.prometheus`, passes it here with the
spec's `slo` and `now`, writes the returned `EndpointSLOStatus` into `status.slo`, upserts the
returned `SLOMet` condition and posts the Event `transition_event` returns. No IO, no clock, no
Kopf.
"""

from tidal.slo.collection import (
    COLLECTION_LATENCY_ABOVE_TARGET,
    COLLECTION_NO_DATA,
    MET,
    NOT_REQUESTED,
    RECALL_BELOW_TARGET,
    collection_condition,
    collection_transition_event,
    measured_status,
    percentile,
    recall_percent,
    requested,
)
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
from tidal.slo.measurement import Measurement, ProbeQuery, RecallProbe

__all__ = [
    "COLLECTION_LATENCY_ABOVE_TARGET",
    "COLLECTION_NO_DATA",
    "LATENCY_ABOVE_TARGET",
    "MET",
    "NOT_REQUESTED",
    "NO_DATA",
    "NO_TARGETS",
    "RECALL_BELOW_TARGET",
    "THROUGHPUT_BELOW_TARGET",
    "TTFT_ABOVE_TARGET",
    "WITHIN_TARGETS",
    "Measurement",
    "ProbeQuery",
    "RecallProbe",
    "collection_condition",
    "collection_transition_event",
    "evaluate",
    "measured_status",
    "percentile",
    "recall_percent",
    "requested",
    "transition_event",
]
