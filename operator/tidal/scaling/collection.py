"""When a VectorCollection is in use, when it hibernates, and when it is offloaded to the cold tier.

Owns three decisions, each a pure function of the spec, what was observed and `now`:

- **Activity** (`observe_activity`): the latest of these signals, recorded in
  `status.activity` so every reconcile (and every operator replica) sees the same clock:
  - the collection's creation (nothing has used it yet: idle counts from here);
  - the annotation `tidal.dev/last-request-time` (RFC3339) that whatever fronts queries writes
    (Tidal's gateway, an application, or a person);
  - the engine's own query statistics: PGVector reports per-table scan counters and, from
    PostgreSQL 16, the time of the last scan; a counter that moved since the last reconcile
    counts as activity now, a reported scan time counts as itself;
  - a paired InferenceEndpoint (`vectorCollectionRef`) that is serving (desired replicas > 0):
    a RAG endpoint needs its collection, so it keeps it awake and wakes it;
  - a new value of the annotation `tidal.dev/wake-requested-at` (RFC 3339, the convention both
    kinds share), or of the older `tidal.dev/wake` (any string), still honoured.
  Qdrant exposes no per-collection query counter over its API, so for Qdrant only the
  annotations and the paired endpoint count.
- **Hibernation** (`hibernation`): with `scaling.minReplicas: 0` and no activity for
  `idleSecondsBeforeScaleToZero`, a Managed engine's StatefulSet goes to 0 replicas; its volumes
  stay. Tidal does not run External engines, so they never hibernate.
- **Cold tier** (`snapshot_due`): with `storage.coldTier`, one snapshot per idle period goes to
  the object store: right before hibernating (the engine is still up), or once the collection
  has been idle for `afterIdleDays`.

No IO, no Kopf; time comes in as `now`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Final

from tidal.api.collection import (
    ActivitySource,
    ColdTierStatus,
    CollectionActivityStatus,
    VectorCollectionSpec,
)
from tidal.api.common import HIBERNATED, Condition
from tidal.api.wire import format_time, parse_time

__all__ = [
    "Hibernation",
    "Signals",
    "hibernation",
    "idle_seconds",
    "observe_activity",
    "snapshot_due",
    "snapshot_retry_seconds",
]

_DAY: Final = 86_400
# Automatic snapshots after a failure: the first retry after this, doubling, at most the cap.
SNAPSHOT_RETRY_SECONDS: Final = 60
SNAPSHOT_RETRY_MAX_SECONDS: Final = 3600


@dataclasses.dataclass(frozen=True)
class Signals:
    """What this reconcile observed about use of the collection."""

    created: datetime
    last_request_annotation: str | None = None
    wake_annotation: str | None = None
    engine_queries: int | None = None
    engine_last_query_time: datetime | None = None
    paired_endpoint_serving: bool = False


@dataclasses.dataclass(frozen=True)
class Hibernation:
    """The replicas a Managed engine should run and the `Hibernated` condition."""

    replicas: int
    hibernated: bool
    condition: Condition


def observe_activity(
    previous: CollectionActivityStatus | None, signals: Signals, now: datetime
) -> tuple[CollectionActivityStatus, bool]:
    """The new `status.activity`, and whether a wake was requested by this observation."""
    previous = previous or CollectionActivityStatus()
    candidates: list[tuple[datetime, ActivitySource]] = []
    last = parse_time(previous.last_activity_time, assume_utc=True)
    if last is not None:
        candidates.append((last, previous.source or ActivitySource.Created))
    else:
        candidates.append((signals.created, ActivitySource.Created))

    requested = parse_time(signals.last_request_annotation, assume_utc=True)
    if requested is not None:
        # A clock ahead of ours must not keep the collection awake forever.
        candidates.append((min(requested, now), ActivitySource.RequestAnnotation))

    if signals.engine_last_query_time is not None:
        candidates.append((min(signals.engine_last_query_time, now), ActivitySource.EngineQueries))
    if (
        signals.engine_queries is not None
        and previous.engine_queries is not None
        and signals.engine_queries != previous.engine_queries
    ):
        candidates.append((now, ActivitySource.EngineQueries))

    if signals.paired_endpoint_serving:
        candidates.append((now, ActivitySource.PairedEndpoint))

    woke = bool(signals.wake_annotation) and signals.wake_annotation != previous.wake_request
    if woke:
        candidates.append((now, ActivitySource.Woken))

    # Latest wins; on a tie the later-listed (more specific) source names it.
    when, source = max(enumerate(candidates), key=lambda item: (item[1][0], item[0]))[1]
    engine_queries = (
        signals.engine_queries if signals.engine_queries is not None else previous.engine_queries
    )
    return (
        CollectionActivityStatus(
            last_activity_time=format_time(when),
            source=source,
            engine_queries=engine_queries,
            wake_request=signals.wake_annotation if woke else previous.wake_request,
            hibernated_time=previous.hibernated_time,
        ),
        woke,
    )


def idle_seconds(activity: CollectionActivityStatus, now: datetime) -> float:
    """Seconds since the last activity (0 when unknown)."""
    last = parse_time(activity.last_activity_time, assume_utc=True)
    return max(0.0, (now - last).total_seconds()) if last is not None else 0.0


def hibernation(
    spec: VectorCollectionSpec,
    activity: CollectionActivityStatus,
    now: datetime,
    *,
    managed: bool,
    generation: int | None,
) -> Hibernation:
    """Whether the engine should run, and the `Hibernated` condition saying why."""

    def result(replicas: int, status: bool, reason: str, message: str) -> Hibernation:
        condition = Condition(
            type=HIBERNATED,
            status="True" if status else "False",
            reason=reason,
            message=message,
            observed_generation=generation,
        )
        return Hibernation(replicas=replicas, hibernated=status, condition=condition)

    if not managed:
        return result(
            spec.replicas,
            False,
            "ExternalEngine",
            "Tidal does not run External engines, so it never scales them to zero",
        )
    if spec.effective_min_replicas > 0:
        return result(
            spec.replicas,
            False,
            "HibernationDisabled",
            f"scaling.minReplicas is {spec.effective_min_replicas}; 0 enables hibernation",
        )
    idle = idle_seconds(activity, now)
    limit = spec.scaling.idle_seconds_before_scale_to_zero
    since = f"{activity.last_activity_time} ({activity.source})"
    if idle >= limit:
        return result(
            0,
            True,
            "Idle",
            f"no activity since {since}, {int(idle)}s >= {limit}s; scaled to 0 replicas, "
            "volumes kept; wake with the tidal.dev/wake-requested-at annotation",
        )
    return result(
        spec.replicas,
        False,
        "Active",
        f"last activity {since}; hibernates after {limit}s idle",
    )


def snapshot_due(
    spec: VectorCollectionSpec,
    activity: CollectionActivityStatus,
    cold: ColdTierStatus | None,
    now: datetime,
    *,
    hibernating: bool,
) -> bool:
    """Whether to offload a snapshot now (the caller checks that the engine is reachable).

    `hibernating` is True on the reconcile that is about to scale the engine to zero: the last
    moment its data can be read until it wakes.
    """
    cold_tier = spec.storage.cold_tier
    if cold_tier is None:
        return False
    last_activity = parse_time(activity.last_activity_time, assume_utc=True)
    last_snapshot = parse_time(cold.last_snapshot_time if cold else None, assume_utc=True)
    if last_snapshot is not None and (last_activity is None or last_snapshot >= last_activity):
        return False  # nothing can have changed since the last offload
    if _backing_off(cold, now):
        return False  # the last ones failed: no full snapshot on every refresh meanwhile
    if hibernating:
        return True
    return idle_seconds(activity, now) >= cold_tier.after_idle_days * _DAY


def snapshot_retry_seconds(failed: int) -> float:
    """How long automatic snapshots wait after `failed` failures in a row: a minute, doubling
    per failure, at most an hour. A snapshot of a large collection is heavy for the engine and
    the network; a store that is down or refuses the keys would otherwise get one on every
    refresh. An explicit `tidal.dev/offload-requested-at` is not held back."""
    if failed <= 0:
        return 0.0
    return float(min(SNAPSHOT_RETRY_MAX_SECONDS, SNAPSHOT_RETRY_SECONDS * 2 ** min(failed - 1, 16)))


def _backing_off(cold: ColdTierStatus | None, now: datetime) -> bool:
    failed = cold.failed_snapshots if cold else None
    last_failure = parse_time(cold.last_failure_time if cold else None, assume_utc=True)
    if not failed or last_failure is None:
        return False
    return (now - last_failure).total_seconds() < snapshot_retry_seconds(failed)
