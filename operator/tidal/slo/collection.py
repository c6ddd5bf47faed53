"""A VectorCollection's measured SLO: recall@k and p95 latency from a probe, judged by the spec.

Owns the arithmetic of a `RecallProbe` (recall@k, p95), the `status.slo` block it becomes, the
`SLOMet` condition of a collection and the Event a change of it deserves. The rules, in order:

- no target set (`spec.slo` absent, or neither `minRecallPercent` nor `p95LatencyMs`): `True`,
  reason `NotRequested`; nothing is measured (a probe costs the engine real queries);
- no measurement to judge (not measured yet, the probe failed, the collection is empty,
  hibernated or offloaded): `Unknown`, reason `NoData`, the message says why;
- recall below `minRecallPercent`: `False`, reason `RecallBelowTarget`; else p95 above
  `p95LatencyMs`: `False`, reason `LatencyAboveTarget`; the message lists every miss;
- otherwise `True`, reason `Met`.

Values are compared as status reports them (recall to 0.1 point, latency to 0.1 ms), so the
message never contradicts the numbers beside it.

Recall@k of one query is |indexed top k ∩ exact top k| / |exact top k| (the sampled point itself
is excluded from both by the driver); the probe's recall is the mean over its queries. p95 is
interpolated linearly between the closest ranks of the indexed queries' latencies.

Pure: no IO, no clock (`now` is a parameter), no Kopf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from tidal.api.collection import CollectionSLOSpec, CollectionSLOStatus
from tidal.api.common import SLO_MET, Condition, ConditionStatus, Event
from tidal.api.wire import format_time
from tidal.slo.measurement import RecallProbe

__all__ = [
    "COLLECTION_LATENCY_ABOVE_TARGET",
    "COLLECTION_NO_DATA",
    "MET",
    "NOT_REQUESTED",
    "RECALL_BELOW_TARGET",
    "collection_condition",
    "collection_transition_event",
    "measured_status",
    "percentile",
    "recall_percent",
    "requested",
]

MET: Final = "Met"
RECALL_BELOW_TARGET: Final = "RecallBelowTarget"
COLLECTION_LATENCY_ABOVE_TARGET: Final = "LatencyAboveTarget"
COLLECTION_NO_DATA: Final = "NoData"
NOT_REQUESTED: Final = "NotRequested"


def requested(slo: CollectionSLOSpec | None) -> bool:
    """Whether the spec sets any target (only then is anything measured)."""
    return slo is not None and (
        slo.min_recall_percent is not None or slo.p95_latency_ms is not None
    )


def recall_percent(probe: RecallProbe) -> float | None:
    """Mean recall@k over the probe's queries, in percent; None when no query had an exact
    answer to compare with."""
    scores: list[float] = []
    for query in probe.queries:
        exact = set(query.exact[: probe.k])
        if not exact:
            continue
        found = exact.intersection(query.indexed[: probe.k])
        scores.append(len(found) / len(exact))
    if not scores:
        return None
    return 100.0 * sum(scores) / len(scores)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0-100), linear between the closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def measured_status(probe: RecallProbe, now: datetime) -> CollectionSLOStatus:
    """`status.slo` for `probe`, taken at `now`."""
    recall = recall_percent(probe)
    p95 = percentile([query.seconds for query in probe.queries], 95)
    return CollectionSLOStatus(
        recall_at10_percent=None if recall is None else round(recall, 1),
        p95_latency_ms=None if p95 is None else round(p95 * 1000, 1),
        sample_size=len(probe.queries),
        evaluated_time=format_time(now),
    )


def collection_condition(
    slo: CollectionSLOSpec | None,
    measured: CollectionSLOStatus | None,
    *,
    basis: str,
    generation: int | None = None,
) -> Condition:
    """The `SLOMet` condition for `measured` against `slo`. `basis` says what was measured
    (or, without a measurement, why there is none) and ends the message."""
    status, reason, message = _judge(slo, measured, basis)
    return Condition(
        type=SLO_MET,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
    )


def collection_transition_event(old: Condition | None, new: Condition) -> Event | None:
    """The Event for `SLOMet` moving from `old` to `new`; None when status and reason are the
    same (a new message alone is not news), and for a first condition, or targets just set,
    that only says nothing was requested or measured yet."""
    if old is not None and (old.status, old.reason) == (new.status, new.reason):
        return None
    nothing_judged = (NOT_REQUESTED, COLLECTION_NO_DATA)
    if (old is None or old.reason == NOT_REQUESTED) and new.reason in nothing_judged:
        return None
    if new.status == "True":
        return Event("Normal", "SLOMet", new.message)
    if new.status == "False":
        return Event("Warning", "SLOMissed", new.message)
    return Event("Normal", "SLOUnknown", new.message)


def _judge(
    slo: CollectionSLOSpec | None, measured: CollectionSLOStatus | None, basis: str
) -> tuple[ConditionStatus, str, str]:
    if slo is None or not requested(slo):
        return (
            "True",
            NOT_REQUESTED,
            "spec.slo sets no targets; recall and latency are not measured",
        )
    recall = measured.recall_at10_percent if measured else None
    latency = measured.p95_latency_ms if measured else None
    missing: list[str] = []
    misses: list[tuple[str, str]] = []
    met: list[str] = []
    if slo.min_recall_percent is not None:
        floor = slo.min_recall_percent
        if recall is None:
            missing.append(f"no recall measured (target {floor} %)")
        elif recall < floor:
            misses.append(
                (RECALL_BELOW_TARGET, f"recall@10 {recall:g} % is below the {floor} % target")
            )
        else:
            met.append(f"recall@10 {recall:g} % meets the {floor} % target")
    if slo.p95_latency_ms is not None:
        target = slo.p95_latency_ms
        if latency is None:
            missing.append(f"no latency measured (target {target} ms)")
        elif latency > target:
            misses.append(
                (
                    COLLECTION_LATENCY_ABOVE_TARGET,
                    f"p95 latency {latency:g} ms is above the {target} ms target",
                )
            )
        else:
            met.append(f"p95 latency {latency:g} ms is within the {target} ms target")
    if misses:
        return "False", misses[0][0], f"{'; '.join(text for _, text in misses)} ({basis})"
    if missing:
        return "Unknown", COLLECTION_NO_DATA, f"{'; '.join(missing)}: {basis}"
    return "True", MET, f"{'; '.join(met)} ({basis})"
