"""The VectorCollection reconcile as pure functions: whole Outcomes for table cases, and replay.

Each case builds a collection as the API server would hold it and a `World` as the controller
would observe it (the engine's report included), calls `decide` at a fixed `now`, and compares
the whole Outcome in a readable form: children as `Kind/name`, the StatefulSet's replicas, the
status conditions and a few fields, and the Events. No cluster, no engine, no clock.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidal.api.common import Event
from tidal.api.labels import (
    OFFLOAD_REQUESTED_AT,
    RESTORE_REQUESTED_AT,
    WAKE,
    WAKE_REQUESTED_AT,
)
from tidal.api.wire import format_time, format_time_ms
from tidal.cost import DEFAULT_CATALOG
from tidal.errors import PermanentError
from tidal.reconcile.collection import (
    APPLY_REJECTED,
    VOLUME_PENDING_GRACE_SECONDS,
    CredentialsReport,
    EngineFailure,
    EngineReport,
    Memory,
    Outcome,
    Probe,
    ProbeReport,
    RestoreReport,
    SnapshotReport,
    StorageClassInfo,
    Target,
    World,
    address,
    credentials_secret,
    decide,
    due,
    eviction_refused,
    is_offloaded,
    probe_due,
    rejected,
    restore_due,
    snapshot_due,
    sync_due,
    target,
    volume_condition,
    volume_events_due,
)
from tidal.render.collection import CollectionState
from tidal.slo import ProbeQuery, RecallProbe

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CREATED = NOW - timedelta(hours=1)
WORLD = World(catalog=DEFAULT_CATALOG)


def collection(
    engine: Mapping[str, Any] | None = None,
    *,
    status: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "VectorCollection",
        "metadata": {
            "name": "docs",
            "namespace": "rag",
            "uid": "u-1",
            "generation": 1,
            "creationTimestamp": format_time(CREATED),
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "engine": dict(engine or {"type": "Qdrant"}),
            "dimension": 8,
            "expectedVectors": 1000,
            "residency": {"regions": ["eu-west-1"]},
            **spec,
        },
        "status": dict(status or {}),
    }


EXTERNAL = {"type": "PGVector", "mode": "External", "url": "postgresql://app:pw@db:5432/rag"}


def pod(name: str, node: str, *, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "rag"},
        "spec": {"nodeName": node},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def state(**changes: Any) -> EngineReport:
    fields: dict[str, Any] = {
        "created": False,
        "applied": (),
        "unapplied": (),
        "location": "rag_docs",
        "vectors": 42,
        **changes,
    }
    return EngineReport(state=CollectionState(**fields))


def managed_world(*pods: dict[str, Any], **changes: Any) -> World:
    return dataclasses.replace(
        WORLD,
        pods=pods,
        node_regions={"cpu-eu": "eu-west-1", "cpu-us": "us-east-1"},
        **changes,
    )


def view(outcome: Outcome) -> dict[str, Any]:
    """The Outcome in a form a table can state: what a reader of the status and events sees."""
    status = outcome.status or {}
    statefulsets = [c for c in outcome.children if c["kind"] == "StatefulSet"]
    return {
        "children": sorted(f"{c['kind']}/{c['metadata']['name']}" for c in outcome.children),
        "replicas": statefulsets[0]["spec"]["replicas"] if statefulsets else None,
        "conditions": {
            c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []
        },
        "vectors": status.get("vectors"),
        "collection": status.get("collection"),
        "events": [(e.type, e.reason) for e in outcome.events],
    }


def conditions(**pairs: tuple[str, str]) -> dict[str, tuple[str, str]]:
    """Expected conditions; without `spec.slo`, SLOMet says nothing was requested."""
    return {"SLOMet": ("True", "NotRequested"), **pairs}


MANAGED_CHILDREN = [
    "PodDisruptionBudget/docs",
    "Service/docs",
    "Service/docs-peers",
    "StatefulSet/docs",
]


# --- whole Outcomes ---------------------------------------------------------------------------


CASES: list[tuple[str, dict[str, Any], World, dict[str, Any]]] = [
    (
        "an External collection is created in the engine and becomes Ready",
        collection(EXTERNAL),
        dataclasses.replace(WORLD, engine=state(created=True)),
        {
            "children": [],
            "replicas": None,
            "conditions": conditions(
                Provisioned=("True", "CollectionProvisioned"),
                ResidencyCompliant=("True", "Declared"),
                Hibernated=("False", "ExternalEngine"),
                Ready=("True", "CollectionReady"),
            ),
            "vectors": 42,
            "collection": "rag_docs",
            "events": [
                ("Normal", "CreatedCollection"),
                ("Normal", "Ready"),
                ("Normal", "Provisioned"),
            ],
        },
    ),
    (
        "a Managed collection with no pod yet renders its children and waits for the engine",
        collection(),
        WORLD,
        {
            "children": MANAGED_CHILDREN,
            "replicas": 1,
            "conditions": conditions(
                Provisioned=("False", "EngineNotRunning"),
                ResidencyCompliant=("True", "InAllowedRegions"),
                Hibernated=("False", "HibernationDisabled"),
                Ready=("False", "PodsNotReady"),
            ),
            "vectors": None,
            "collection": None,
            "events": [
                ("Normal", "CreatedStatefulSet"),
                ("Normal", "CreatedService"),
                ("Normal", "CreatedService"),
                ("Normal", "CreatedPodDisruptionBudget"),
            ],
        },
    ),
    (
        "a Managed engine that runs gets its collection created and becomes Ready",
        collection(),
        managed_world(pod("docs-0", "cpu-eu"), engine=state(created=True)),
        {
            "children": MANAGED_CHILDREN,
            "replicas": 1,
            "conditions": conditions(
                Provisioned=("True", "CollectionProvisioned"),
                ResidencyCompliant=("True", "InAllowedRegions"),
                Hibernated=("False", "HibernationDisabled"),
                Ready=("True", "CollectionReady"),
            ),
            "vectors": 42,
            "collection": "rag_docs",
            "events": [
                ("Normal", "CreatedStatefulSet"),
                ("Normal", "CreatedService"),
                ("Normal", "CreatedService"),
                ("Normal", "CreatedPodDisruptionBudget"),
                ("Normal", "CreatedCollection"),
                ("Normal", "Ready"),
                ("Normal", "Provisioned"),
                ("Normal", "PlacementChanged"),
            ],
        },
    ),
    (
        "a setting the engine can change in place is applied and said so",
        collection(EXTERNAL),
        dataclasses.replace(WORLD, engine=state(applied=("ef_search 64 -> 128",))),
        {
            "children": [],
            "replicas": None,
            "conditions": conditions(
                Provisioned=("True", "CollectionProvisioned"),
                ResidencyCompliant=("True", "Declared"),
                Hibernated=("False", "ExternalEngine"),
                Ready=("True", "CollectionReady"),
            ),
            "vectors": 42,
            "collection": "rag_docs",
            "events": [
                ("Normal", "UpdatedCollection"),
                ("Normal", "Ready"),
                ("Normal", "Provisioned"),
            ],
        },
    ),
    (
        "a change that needs a rebuild is refused: ConfigDrift, not Ready",
        collection(EXTERNAL),
        dataclasses.replace(WORLD, engine=state(unapplied=("dimension 8 != 16",))),
        {
            "children": [],
            "replicas": None,
            "conditions": conditions(
                Provisioned=("False", "ConfigDrift"),
                ResidencyCompliant=("True", "Declared"),
                Hibernated=("False", "ExternalEngine"),
                Ready=("False", "ConfigDrift"),
            ),
            "vectors": 42,
            "collection": "rag_docs",
            "events": [("Warning", "ConfigDrift")],
        },
    ),
    (
        "an unreachable engine is a condition, not a failed reconcile",
        collection(EXTERNAL),
        dataclasses.replace(
            WORLD,
            engine=EngineReport(failure=EngineFailure.UNREACHABLE, message="connection refused"),
        ),
        {
            "children": [],
            "replicas": None,
            "conditions": conditions(
                Provisioned=("False", "EngineUnreachable"),
                ResidencyCompliant=("True", "Declared"),
                Hibernated=("False", "ExternalEngine"),
                Ready=("False", "EngineUnreachable"),
            ),
            "vectors": None,
            "collection": None,
            "events": [("Warning", "EngineUnreachable")],
        },
    ),
    (
        "an invalid spec changes only Ready",
        collection(EXTERNAL, dimension=0),
        WORLD,
        {
            "children": [],
            "replicas": None,
            "conditions": {"Ready": ("False", "InvalidSpec")},
            "vectors": None,
            "collection": None,
            "events": [("Warning", "InvalidSpec")],
        },
    ),
    (
        "a Managed collection idle past its limit hibernates to 0 replicas, volumes kept",
        collection(scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 600}),
        managed_world(pod("docs-0", "cpu-eu"), engine=state(), claims=("data-docs-0",)),
        {
            "children": MANAGED_CHILDREN,
            "replicas": 0,
            "conditions": conditions(
                Provisioned=("True", "CollectionProvisioned"),
                ResidencyCompliant=("True", "InAllowedRegions"),
                Hibernated=("True", "Idle"),
                Ready=("False", "Hibernated"),
            ),
            "vectors": 42,
            "collection": "rag_docs",
            "events": [
                ("Normal", "CreatedStatefulSet"),
                ("Normal", "CreatedService"),
                ("Normal", "CreatedService"),
                ("Normal", "CreatedPodDisruptionBudget"),
                ("Normal", "Hibernated"),
                ("Normal", "Provisioned"),
                ("Normal", "PlacementChanged"),
            ],
        },
    ),
    (
        "a pod outside the namespace's allowed regions is a residency violation",
        collection(residency={"regions": ["eu-west-1", "us-east-1"]}),
        managed_world(
            pod("docs-0", "cpu-us"),
            engine=state(),
            namespace_policy="eu-west-1",
        ),
        {
            "children": MANAGED_CHILDREN,
            "replicas": 1,
            "conditions": conditions(
                Provisioned=("True", "CollectionProvisioned"),
                ResidencyCompliant=("False", "RegionNotAllowed"),
                Hibernated=("False", "HibernationDisabled"),
                Ready=("True", "CollectionReady"),
            ),
            "vectors": 42,
            "collection": "rag_docs",
            "events": [
                ("Normal", "CreatedStatefulSet"),
                ("Normal", "CreatedService"),
                ("Normal", "CreatedService"),
                ("Normal", "CreatedPodDisruptionBudget"),
                ("Normal", "Ready"),
                ("Warning", "ResidencyViolation"),
                ("Normal", "Provisioned"),
                ("Normal", "PlacementChanged"),
            ],
        },
    ),
]


@pytest.mark.parametrize(
    ("raw", "world", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_decide_returns_the_whole_outcome(
    raw: dict[str, Any], world: World, expected: dict[str, Any]
) -> None:
    assert view(decide(raw, world, Memory(), NOW)) == expected


def test_no_allowed_region_places_nothing() -> None:
    raw = collection()
    world = managed_world(namespace_policy="us-east-1")
    outcome = view(decide(raw, world, Memory(), NOW))
    assert outcome["replicas"] == 0
    assert outcome["conditions"]["ResidencyCompliant"] == ("False", "NoAllowedRegion")
    assert outcome["conditions"]["Ready"] == ("False", "NoAllowedRegion")


@pytest.mark.parametrize("annotation", [WAKE_REQUESTED_AT, WAKE])
def test_a_wake_brings_a_hibernated_collection_back(annotation: str) -> None:
    # The wake convention both kinds share, and the older tidal.dev/wake, still honoured.
    spec = {"minReplicas": 0, "idleSecondsBeforeScaleToZero": 600}
    asleep = decide(
        collection(scaling=spec),
        managed_world(pod("docs-0", "cpu-eu"), engine=state()),
        Memory(),
        NOW,
    )
    assert asleep.status is not None
    assert asleep.hibernated
    woken = collection(
        scaling=spec, status=asleep.status, annotations={annotation: "2026-12-01T12:05:00Z"}
    )
    outcome = decide(woken, WORLD, Memory(), NOW + timedelta(minutes=5))
    assert outcome.woke
    assert not outcome.hibernated
    assert view(outcome)["replicas"] == 1
    assert view(outcome)["conditions"]["Hibernated"] == ("False", "Active")
    assert ("Normal", "Woke") in view(outcome)["events"]
    # A Provisioned condition from before hibernation is carried while the engine is down.
    assert view(outcome)["conditions"]["Provisioned"] == ("False", "EngineNotRunning")


def test_a_hibernated_collection_keeps_what_the_engine_last_reported() -> None:
    spec = {"minReplicas": 0, "idleSecondsBeforeScaleToZero": 600}
    asleep = decide(
        collection(scaling=spec),
        managed_world(pod("docs-0", "cpu-eu"), engine=state()),
        Memory(),
        NOW,
    )
    assert asleep.status is not None
    later = decide(
        collection(scaling=spec, status=asleep.status), WORLD, Memory(), NOW + timedelta(hours=1)
    )
    assert view(later)["conditions"]["Provisioned"] == ("True", "CollectionProvisioned")
    assert (view(later)["vectors"], view(later)["collection"]) == (42, "rag_docs")


def test_the_engine_version_and_data_size_reach_status_and_a_new_version_an_event() -> None:
    raw = collection(EXTERNAL)
    world = dataclasses.replace(
        WORLD, engine=state(engine_version="Qdrant 1.18.3", data_bytes=4096)
    )
    first = decide(raw, world, Memory(), NOW)
    assert first.status is not None
    assert first.status["engineVersion"] == "Qdrant 1.18.3"
    assert first.status["measured"] == {"dataBytes": 4096}
    assert Event("Normal", "EngineVersion", "The engine is Qdrant 1.18.3") in first.events
    same = decide(collection(EXTERNAL, status=first.status), world, Memory(), NOW)
    assert [e for e in same.events if e.reason == "EngineVersion"] == []
    upgraded = dataclasses.replace(WORLD, engine=state(engine_version="Qdrant 1.18.4"))
    later = decide(collection(EXTERNAL, status=first.status), upgraded, Memory(), NOW)
    assert (
        Event("Normal", "EngineVersion", "The engine is Qdrant 1.18.4 (was Qdrant 1.18.3)")
        in later.events
    )
    # An engine that reports no size keeps the last measurement.
    assert later.status is not None
    assert later.status.get("measured", first.status["measured"])["dataBytes"] == 4096


def test_a_serving_paired_endpoint_keeps_the_collection_awake() -> None:
    raw = collection(scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 600})
    world = managed_world(pod("docs-0", "cpu-eu"), engine=state(), paired_desired=(0, 1))
    outcome = decide(raw, world, Memory(), NOW)
    assert not outcome.hibernated
    assert outcome.status is not None
    assert outcome.status["activity"]["source"] == "PairedEndpoint"


def test_paired_endpoints_scaled_to_zero_do_not_keep_the_collection_awake() -> None:
    raw = collection(scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 600})
    world = managed_world(pod("docs-0", "cpu-eu"), engine=state(), paired_desired=(0,))
    outcome = decide(raw, world, Memory(), NOW + timedelta(hours=1))
    assert outcome.status is not None
    assert outcome.status["activity"]["source"] != "PairedEndpoint"


# --- the cold tier ------------------------------------------------------------------------------

COLD = {"tier": "Disk", "coldTier": {"objectStoreURI": "file:///cold", "afterIdleDays": 2}}


def test_a_snapshot_is_due_after_the_idle_days_and_only_then() -> None:
    raw = collection(EXTERNAL, storage=COLD)
    synced = dataclasses.replace(WORLD, engine=state())
    assert snapshot_due(raw, synced, NOW) is None  # idle one hour
    later = NOW + timedelta(days=2)
    found = snapshot_due(raw, synced, later)
    assert found is not None
    assert (found.want.name, found.base_uri, found.key) == (
        "rag_docs",
        "file:///cold",
        "rag/docs/20261203T120000Z",
    )
    # Not without an engine that answered.
    assert snapshot_due(raw, WORLD, later) is None


def test_an_offloaded_snapshot_is_recorded_and_not_repeated() -> None:
    raw = collection(EXTERNAL, storage=COLD)
    later = NOW + timedelta(days=2)
    written = SnapshotReport(uri="file:///cold/rag/docs/x.snapshot", size=123)
    outcome = decide(
        raw, dataclasses.replace(WORLD, engine=state(), snapshot=written), Memory(), later
    )
    assert outcome.status is not None
    assert {k: v for k, v in outcome.status["coldTier"].items() if v is not None} == {
        "lastSnapshotURI": "file:///cold/rag/docs/x.snapshot",
        "lastSnapshotTime": format_time(later),
        "lastSnapshotBytes": 123,
    }
    assert ("Normal", "SnapshotOffloaded") in view(outcome)["events"]
    again = collection(EXTERNAL, storage=COLD, status=outcome.status)
    assert snapshot_due(again, dataclasses.replace(WORLD, engine=state()), later) is None


def test_a_failed_snapshot_is_a_warning_and_keeps_the_last_one() -> None:
    raw = collection(EXTERNAL, storage=COLD)
    failed = SnapshotReport(error="cold tier file:///cold: Permission denied")
    world = dataclasses.replace(WORLD, engine=state(), snapshot=failed)
    outcome = decide(raw, world, Memory(), NOW + timedelta(days=2))
    assert ("Warning", "SnapshotFailed") in view(outcome)["events"]
    assert outcome.status is not None
    cold = outcome.status["coldTier"]
    assert cold["lastSnapshotURI"] is None  # none was ever written
    assert cold["failedSnapshots"] == 1  # counted, for the backoff


def test_a_snapshot_is_due_right_before_hibernating() -> None:
    raw = collection(storage=COLD, scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 600})
    world = managed_world(pod("docs-0", "cpu-eu"), engine=state())
    assert snapshot_due(raw, world, NOW) is not None


# --- the S3 cold tier: offload after verification, restore on wake or request -------------------

S3 = {
    "coldTier": {
        "objectStoreURI": "s3://cold/tier",
        "afterIdleDays": 2,
        "credentialsSecretRef": {"name": "cold-creds"},
    }
}
STORED = SnapshotReport(
    uri="s3://cold/tier/rag/docs/x.snapshot",
    size=4096,
    sha256="ab" * 32,
    vectors=42,
    evicted=True,
)
QDRANT_EXTERNAL = {"type": "Qdrant", "mode": "External", "url": "http://qdrant.search.svc:6333"}


def offloaded_status(when: datetime = NOW) -> dict[str, Any]:
    """The status after a verified offload at `when` that deleted the engine's copy."""
    outcome = decide(
        collection(QDRANT_EXTERNAL, storage=S3),
        dataclasses.replace(WORLD, engine=state(), snapshot=STORED),
        Memory(),
        when,
    )
    assert outcome.status is not None
    return dict(outcome.status)


def test_idle_days_snapshot_and_evict_but_a_hibernation_snapshot_keeps_the_engine_copy() -> None:
    synced = dataclasses.replace(WORLD, engine=state())
    idle = snapshot_due(collection(QDRANT_EXTERNAL, storage=S3), synced, NOW + timedelta(days=2))
    assert idle is not None
    assert (idle.evict, idle.secret, idle.base_uri) == (True, "cold-creds", "s3://cold/tier")
    managed = collection(
        storage=S3, scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 600}
    )
    before_sleep = snapshot_due(
        managed, managed_world(pod("docs-0", "cpu-eu"), engine=state()), NOW
    )
    assert before_sleep is not None
    assert not before_sleep.evict


def test_an_offload_request_snapshots_and_evicts_at_once_and_only_once() -> None:
    raw = collection(QDRANT_EXTERNAL, storage=S3, annotations={OFFLOAD_REQUESTED_AT: "t1"})
    synced = dataclasses.replace(WORLD, engine=state())
    found = snapshot_due(raw, synced, NOW)
    assert found is not None
    assert (found.evict, found.request) == (True, "t1")
    failed = SnapshotReport(error="upload to s3://cold/tier: AccessDenied", request="t1")
    outcome = decide(raw, dataclasses.replace(synced, snapshot=failed), Memory(), NOW)
    assert outcome.status is not None
    assert outcome.status["coldTier"]["offloadRequest"] == "t1"
    again = collection(
        QDRANT_EXTERNAL, storage=S3, annotations={OFFLOAD_REQUESTED_AT: "t1"}, status=outcome.status
    )
    assert snapshot_due(again, synced, NOW) is None


def test_a_verified_offload_records_the_snapshot_and_the_collection_is_not_ready() -> None:
    status = offloaded_status()
    cold = status["coldTier"]
    assert cold["lastSnapshotSHA256"] == "ab" * 32
    assert (cold["lastSnapshotVectors"], cold["offloadedTime"]) == (42, format_time(NOW))
    raw = collection(QDRANT_EXTERNAL, storage=S3, status=status)
    assert is_offloaded(raw)
    # Next reconcile: not synced (a sync would create an empty collection), nothing to snapshot.
    later = NOW + timedelta(hours=1)
    assert snapshot_due(raw, dataclasses.replace(WORLD, engine=state()), later) is None
    outcome = decide(raw, WORLD, Memory(), later)
    assert view(outcome)["conditions"]["Offloaded"] == ("True", "InColdTier")
    assert view(outcome)["conditions"]["Ready"] == ("False", "Offloaded")
    assert view(outcome)["conditions"]["Provisioned"] == ("False", "Offloaded")
    assert view(outcome)["vectors"] == 42
    assert outcome.status is not None
    assert outcome.status["cost"]["basis"].startswith("Cold")


def test_the_offload_posts_its_events_once() -> None:
    outcome = decide(
        collection(QDRANT_EXTERNAL, storage=S3),
        dataclasses.replace(WORLD, engine=state(), snapshot=STORED),
        Memory(),
        NOW,
    )
    assert ("Normal", "SnapshotOffloaded") in view(outcome)["events"]
    assert ("Normal", "Offloaded") in view(outcome)["events"]
    assert ("Warning", "Offloaded") not in view(outcome)["events"]


def test_a_failed_upload_keeps_the_engine_copy_and_says_so_until_a_snapshot_succeeds() -> None:
    raw = collection(QDRANT_EXTERNAL, storage=S3)
    failed = SnapshotReport(error="upload to s3://cold/tier did not verify")
    later = NOW + timedelta(days=2)
    outcome = decide(
        raw, dataclasses.replace(WORLD, engine=state(), snapshot=failed), Memory(), later
    )
    assert view(outcome)["conditions"]["Offloaded"] == ("False", "UploadFailed")
    assert ("Warning", "SnapshotFailed") in view(outcome)["events"]
    assert view(outcome)["conditions"]["Ready"] == ("True", "CollectionReady")
    assert outcome.status is not None
    assert not is_offloaded(collection(QDRANT_EXTERNAL, storage=S3, status=outcome.status))
    kept = decide(
        collection(QDRANT_EXTERNAL, storage=S3, status=outcome.status),
        dataclasses.replace(WORLD, engine=state()),
        Memory(),
        later,
    )
    assert kept.status is None  # nothing changed: the stored UploadFailed stands


def test_failed_snapshots_are_counted_for_the_backoff_and_a_success_clears_them() -> None:
    failed = SnapshotReport(error="upload to s3://cold/tier: NoSuchBucket")
    status: Mapping[str, Any] | None = None
    for attempt in (1, 2):
        outcome = decide(
            collection(QDRANT_EXTERNAL, storage=S3, status=status),
            dataclasses.replace(WORLD, engine=state(), snapshot=failed),
            Memory(),
            NOW + timedelta(days=2, minutes=attempt),
        )
        written = outcome.status
        assert written is not None
        status = written
        cold = written["coldTier"]
        assert cold["failedSnapshots"] == attempt
        assert cold["lastFailureTime"] == format_time(NOW + timedelta(days=2, minutes=attempt))
        (message,) = [c["message"] for c in written["conditions"] if c["type"] == "Offloaded"]
        assert f"({attempt} failed in a row; the next automatic snapshot in" in message
    done = decide(
        collection(QDRANT_EXTERNAL, storage=S3, status=status),
        dataclasses.replace(WORLD, engine=state(), snapshot=STORED),
        Memory(),
        NOW + timedelta(days=2, minutes=5),
    )
    assert done.status is not None
    assert done.status["coldTier"]["failedSnapshots"] is None
    assert done.status["coldTier"]["lastFailureTime"] is None
    assert done.status["coldTier"]["lastSnapshotURI"] == STORED.uri


@pytest.mark.parametrize(
    "annotations",
    [{WAKE_REQUESTED_AT: "2026-12-01T13:00:00Z"}, {RESTORE_REQUESTED_AT: "r1"}],
    ids=["wake", "restore-request"],
)
def test_an_offloaded_collection_is_restored_on_a_wake_or_a_request(
    annotations: dict[str, str],
) -> None:
    raw = collection(
        QDRANT_EXTERNAL, storage=S3, status=offloaded_status(), annotations=annotations
    )
    found = restore_due(raw, WORLD, NOW + timedelta(hours=2))
    assert found is not None
    assert (found.uri, found.sha256, found.vectors) == (STORED.uri, "ab" * 32, 42)
    assert found.request == annotations.get(RESTORE_REQUESTED_AT)


def test_a_wake_in_the_second_of_the_offload_still_restores() -> None:
    # Times in status are to the second: a wake right after the offload is not "later" by
    # them, but a new wake request is a use all the same (and is consumed by this reconcile).
    raw = collection(
        QDRANT_EXTERNAL,
        storage=S3,
        status=offloaded_status(),
        annotations={WAKE_REQUESTED_AT: format_time_ms(NOW + timedelta(milliseconds=400))},
    )
    assert restore_due(raw, WORLD, NOW + timedelta(milliseconds=600)) is not None


def test_an_offloaded_collection_nobody_uses_stays_in_the_cold_tier() -> None:
    raw = collection(QDRANT_EXTERNAL, storage=S3, status=offloaded_status())
    assert restore_due(raw, WORLD, NOW + timedelta(days=30)) is None


def test_a_restore_brings_the_collection_back_into_the_engine() -> None:
    raw = collection(
        QDRANT_EXTERNAL,
        storage=S3,
        status=offloaded_status(),
        annotations={WAKE_REQUESTED_AT: "2026-12-01T13:00:00Z"},
    )
    world = dataclasses.replace(
        WORLD, engine=state(), restore=RestoreReport(vectors=42, seconds=1.25)
    )
    outcome = decide(raw, world, Memory(), NOW + timedelta(hours=2))
    assert outcome.status is not None
    cold = outcome.status["coldTier"]
    assert cold["offloadedTime"] is None
    assert (cold["lastRestoreSeconds"], cold["restoredTime"]) == (
        1.25,
        format_time(NOW + timedelta(hours=2)),
    )
    assert view(outcome)["conditions"]["Offloaded"] == ("False", "InEngine")
    assert view(outcome)["conditions"]["Ready"] == ("True", "CollectionReady")
    assert ("Normal", "Restored") in view(outcome)["events"]


def test_a_failed_restore_stays_offloaded_and_warns() -> None:
    raw = collection(
        QDRANT_EXTERNAL,
        storage=S3,
        status=offloaded_status(),
        annotations={RESTORE_REQUESTED_AT: "r1"},
    )
    failed = RestoreReport(error="restored 40 vectors, the snapshot holds 42", request="r1")
    outcome = decide(raw, dataclasses.replace(WORLD, restore=failed), Memory(), NOW)
    assert view(outcome)["conditions"]["Offloaded"] == ("True", "RestoreFailed")
    assert ("Warning", "RestoreFailed") in view(outcome)["events"]
    assert outcome.status is not None
    assert outcome.status["coldTier"]["offloadedTime"] == format_time(NOW)
    assert outcome.status["coldTier"]["restoreRequest"] == "r1"


def test_a_restore_request_fills_only_an_absent_or_empty_collection() -> None:
    previous = offloaded_status()
    previous["coldTier"] = {**previous["coldTier"], "offloadedTime": None}
    raw = collection(
        QDRANT_EXTERNAL, storage=S3, status=previous, annotations={RESTORE_REQUESTED_AT: "r2"}
    )
    empty = dataclasses.replace(WORLD, engine=state(vectors=0))
    assert restore_due(raw, empty, NOW) is not None
    holding = dataclasses.replace(WORLD, engine=state(vectors=42))
    assert restore_due(raw, holding, NOW) is None
    refused = decide(raw, holding, Memory(), NOW)
    assert ("Warning", "RestoreRefused") in view(refused)["events"]
    assert refused.status is not None
    again = collection(
        QDRANT_EXTERNAL,
        storage=S3,
        status=refused.status,
        annotations={RESTORE_REQUESTED_AT: "r2"},
    )
    assert ("Warning", "RestoreRefused") not in view(decide(again, holding, Memory(), NOW))[
        "events"
    ]


def test_no_cold_tier_writes_no_offloaded_condition() -> None:
    outcome = decide(
        collection(EXTERNAL), dataclasses.replace(WORLD, engine=state()), Memory(), NOW
    )
    assert "Offloaded" not in view(outcome)["conditions"]


# --- the steps before decide ---------------------------------------------------------------------


def test_a_managed_engine_is_synced_only_while_a_pod_is_ready() -> None:
    found = target(collection())
    assert found is not None
    assert found.managed
    assert found.url == "http://docs.rag.svc.cluster.local:6333"
    assert not sync_due(found, WORLD)
    assert not sync_due(found, managed_world(pod("docs-0", "cpu-eu", ready=False)))
    assert sync_due(found, managed_world(pod("docs-0", "cpu-eu")))
    external = target(collection(EXTERNAL))
    assert external is not None
    assert sync_due(external, WORLD)


def test_an_invalid_spec_has_no_target() -> None:
    assert target(collection(EXTERNAL, dimension=0)) is None


def test_the_engine_address_comes_from_the_spec_or_the_secret() -> None:
    from_secret = target(
        collection({"type": "PGVector", "mode": "External", "connectionSecretRef": {"name": "c"}})
    )
    assert from_secret is not None
    assert from_secret.secret == "c"
    found = address(from_secret, {"uri": "postgresql://db/rag", "password": "pw"})
    assert (found.url, found.password) == ("postgresql://db/rag", "pw")
    assert "pw" not in repr(found)
    with pytest.raises(PermanentError, match="not found"):
        address(from_secret, None)
    with pytest.raises(PermanentError, match="neither key url nor uri"):
        address(from_secret, {"password": "pw"})


def test_a_child_change_waits_for_the_spec_to_be_observed() -> None:
    raw = collection(status={"observedGeneration": 0})
    assert due(raw)
    assert not due(raw, require_observed=True)
    assert due(collection(status={"observedGeneration": 1}), require_observed=True)
    deleting = collection()
    deleting["metadata"]["deletionTimestamp"] = format_time(NOW)
    assert not due(deleting)


def test_a_refused_child_reports_apply_rejected_and_keeps_the_engine_events() -> None:
    raw = collection()
    outcome = decide(
        raw, managed_world(pod("docs-0", "cpu-eu"), engine=state(created=True)), Memory(), NOW
    )
    refused = rejected(raw, APPLY_REJECTED, "StatefulSet is invalid", NOW, outcome)
    assert view(refused)["conditions"] == {"Ready": ("False", APPLY_REJECTED)}
    assert view(refused)["events"] == [("Warning", APPLY_REJECTED), ("Normal", "CreatedCollection")]


# --- what the status shows and keeps ------------------------------------------------------------


def test_an_existing_statefulset_keeps_its_volume_size() -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "docs", "namespace": "rag"},
        "spec": {
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"resources": {"requests": {"storage": "7Gi"}}},
                }
            ]
        },
    }
    outcome = decide(collection(), managed_world(statefulset=sts), Memory(), NOW)
    (rendered,) = [c for c in outcome.children if c["kind"] == "StatefulSet"]
    (template,) = rendered["spec"]["volumeClaimTemplates"]
    assert template["spec"]["resources"]["requests"]["storage"] == "7Gi"


def test_endpoints_never_show_credentials() -> None:
    external = decide(collection(EXTERNAL), WORLD, Memory(), NOW)
    assert external.status is not None
    assert external.status["endpoint"] == "postgresql://app@db:5432/rag"
    secret = {"type": "PGVector", "mode": "External", "connectionSecretRef": {"name": "conn"}}
    from_secret = decide(collection(secret), WORLD, Memory(), NOW)
    assert from_secret.status is not None
    assert from_secret.status["endpoint"] is None
    managed = decide(collection(), WORLD, Memory(), NOW)
    assert managed.status is not None
    assert managed.status["endpoint"] == "http://docs.rag.svc.cluster.local:6333"


def test_a_status_written_by_another_version_does_not_break_the_reconcile() -> None:
    raw = collection(
        EXTERNAL,
        status={
            "vectors": "many",
            "conditions": [{"type": "Ready"}, {"type": "Ready", "status": "True", "reason": "Ok"}],
            "activity": {"source": "Gremlins"},
        },
    )
    outcome = decide(raw, WORLD, Memory(), NOW)
    assert view(outcome)["vectors"] is None
    assert view(outcome)["conditions"]["Ready"] == ("False", "EngineNotRunning")


def test_a_pgvector_engine_gets_a_quarter_of_its_memory_as_shared_buffers() -> None:
    engine = {"type": "PGVector", "connectionSecretRef": {"name": "pg"}}
    outcome = decide(collection(engine), WORLD, Memory(), NOW)
    (sts,) = [c for c in outcome.children if c["kind"] == "StatefulSet"]
    text = repr(sts["spec"]["template"]["spec"]["containers"])
    assert "shared_buffers=" in text


# --- replay -------------------------------------------------------------------------------------


def _replay(steps: list[tuple[World, datetime]]) -> list[Outcome]:
    """Feed observations in order, storing each status as the API server would."""
    raw = collection(storage=COLD, scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 600})
    outcomes = []
    for world, now in steps:
        due_snapshot = snapshot_due(raw, world, now)
        if due_snapshot is not None:
            world = dataclasses.replace(
                world, snapshot=SnapshotReport(uri="file:///cold/s", size=7)
            )
        outcome = decide(copy.deepcopy(raw), world, Memory(), now)
        outcomes.append(outcome)
        if outcome.status is not None:
            raw["status"] = {**raw["status"], **copy.deepcopy(dict(outcome.status))}
    return outcomes


def test_the_same_observations_replay_to_the_same_outcomes() -> None:
    running = managed_world(pod("docs-0", "cpu-eu"), engine=state(created=True))
    steps = [
        (WORLD, CREATED + timedelta(minutes=1)),
        (running, CREATED + timedelta(minutes=2)),
        (dataclasses.replace(running, engine=state()), NOW),
        (WORLD, NOW + timedelta(minutes=5)),
        (running, NOW + timedelta(days=3)),
    ]
    first, second = _replay(steps), _replay(steps)
    assert first == second
    assert [o.hibernated for o in first] == [False, False, True, True, True]
    # One snapshot, right before hibernating; none again while nothing has changed since.
    offloaded = [("Normal", "SnapshotOffloaded") in view(o)["events"] for o in first]
    assert offloaded == [False, False, True, False, False]


def test_target_is_a_plain_value() -> None:
    found = target(collection(EXTERNAL))
    assert isinstance(found, Target)
    assert found.url == EXTERNAL["url"]
    assert not found.managed


# --- the measured SLO ----------------------------------------------------------------------------

SLO = {"minRecallPercent": 95, "p95LatencyMs": 50}
QDRANT_OUT = {"type": "Qdrant", "mode": "External", "url": "http://qdrant.search.svc:6333"}


def slo_status(minutes_ago: float, generation: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "slo": {
            "recallAt10Percent": 99.0,
            "p95LatencyMs": 3.5,
            "sampleSize": 32,
            "evaluatedTime": format_time(NOW - timedelta(minutes=minutes_ago)),
            "observedGeneration": generation,
            **fields,
        }
    }


def probe_of(*recalls: float, seconds: float = 0.004) -> ProbeReport:
    """A probe whose queries found `recall` of the exact top 10 each."""
    queries = tuple(
        ProbeQuery(
            point=n,
            indexed=tuple(range(round(10 * recall))) + tuple(range(100, 100 + 10)),
            exact=tuple(range(10)),
            seconds=seconds,
        )
        for n, recall in enumerate(recalls)
    )
    return ProbeReport(probe=RecallProbe(k=10, queries=queries, method="Qdrant HNSW m=16"))


@pytest.mark.parametrize(
    ("raw", "world", "due_now"),
    [
        pytest.param(
            collection(QDRANT_OUT, slo=SLO),
            dataclasses.replace(WORLD, engine=state()),
            True,
            id="never measured",
        ),
        pytest.param(
            collection(QDRANT_OUT),
            dataclasses.replace(WORLD, engine=state()),
            False,
            id="no slo in the spec",
        ),
        pytest.param(
            collection(QDRANT_OUT, slo={}),
            dataclasses.replace(WORLD, engine=state()),
            False,
            id="an slo without targets",
        ),
        pytest.param(collection(QDRANT_OUT, slo=SLO), WORLD, False, id="the engine was not synced"),
        pytest.param(
            collection(QDRANT_OUT, slo=SLO),
            dataclasses.replace(WORLD, engine=EngineReport(failure=EngineFailure.UNREACHABLE)),
            False,
            id="the engine is unreachable",
        ),
        pytest.param(
            collection(QDRANT_OUT, slo=SLO),
            dataclasses.replace(WORLD, engine=state(vectors=0)),
            False,
            id="an empty collection",
        ),
        pytest.param(
            collection(QDRANT_OUT, slo=SLO, status=slo_status(2)),
            dataclasses.replace(WORLD, engine=state()),
            False,
            id="measured 2 minutes ago",
        ),
        pytest.param(
            collection(QDRANT_OUT, slo=SLO, status=slo_status(5)),
            dataclasses.replace(WORLD, engine=state()),
            True,
            id="measured 5 minutes ago",
        ),
        pytest.param(
            collection(QDRANT_OUT, slo=SLO, status=slo_status(1, generation=0)),
            dataclasses.replace(WORLD, engine=state()),
            True,
            id="measured under another generation",
        ),
        pytest.param(
            collection(QDRANT_OUT, slo=SLO, status={**offloaded_status(), **slo_status(60)}),
            dataclasses.replace(WORLD, engine=state()),
            False,
            id="offloaded",
        ),
    ],
)
def test_a_probe_is_due_with_targets_an_engine_holding_vectors_and_an_old_or_stale_measurement(
    raw: dict[str, Any], world: World, due_now: bool
) -> None:
    found = probe_due(raw, world, NOW, interval_seconds=300, sample=32)
    assert (found is not None) is due_now
    if found is not None:
        assert found == Probe(want=target(raw).want, sample=32, k=10)  # type: ignore[union-attr]


def slo_view(outcome: Outcome) -> tuple[Any, tuple[str, str], list[tuple[str, str]]]:
    status = outcome.status or {}
    (slo_met,) = [c for c in status.get("conditions") or [] if c["type"] == "SLOMet"]
    slo_events = [(str(e.type), e.reason) for e in outcome.events if e.reason.startswith("SLO")]
    return status.get("slo"), (slo_met["status"], slo_met["reason"]), slo_events


def test_a_probe_writes_status_slo_and_slo_met_with_an_event() -> None:
    raw = collection(QDRANT_OUT, slo=SLO)
    world = dataclasses.replace(WORLD, engine=state(), probe=probe_of(1.0, 1.0, 0.9, 0.8))
    slo, met, slo_events = slo_view(decide(raw, world, Memory(), NOW))
    assert slo == {
        "recallAt10Percent": 92.5,
        "p95LatencyMs": 4.0,
        "sampleSize": 4,
        "evaluatedTime": format_time(NOW),
        "observedGeneration": 1,
    }
    assert met == ("False", "RecallBelowTarget")
    assert slo_events == [("Warning", "SLOMissed")]


def test_the_probe_s_numbers_and_method_are_in_the_message() -> None:
    raw = collection(QDRANT_OUT, slo=SLO)
    world = dataclasses.replace(WORLD, engine=state(), probe=probe_of(1.0, seconds=0.2))
    outcome = decide(raw, world, Memory(), NOW)
    (met,) = [c for c in (outcome.status or {})["conditions"] if c["type"] == "SLOMet"]
    assert (met["status"], met["reason"]) == ("False", "LatencyAboveTarget")
    assert met["message"] == (
        "p95 latency 200 ms is above the 50 ms target (1 stored vectors queried at "
        "2026-12-01T12:00:00Z: Qdrant HNSW m=16, compared with exact search)"
    )


def test_a_failed_probe_is_no_data_and_clears_the_numbers() -> None:
    raw = collection(QDRANT_OUT, slo=SLO, status=slo_status(10))
    world = dataclasses.replace(WORLD, engine=state(), probe=ProbeReport(error="HTTP 500"))
    slo, met, _ = slo_view(decide(raw, world, Memory(), NOW))
    assert slo == {"evaluatedTime": format_time(NOW), "observedGeneration": 1}
    assert met == ("Unknown", "NoData")


def test_between_probes_the_last_measurement_is_kept_and_judged_against_new_targets() -> None:
    measured = slo_status(2)
    met = {
        "type": "SLOMet",
        "status": "True",
        "reason": "Met",
        "message": "m",
        "observedGeneration": 1,
    }
    raw = collection(QDRANT_OUT, slo=SLO, status={**measured, "conditions": [met]})
    world = dataclasses.replace(WORLD, engine=state())
    outcome = decide(raw, world, Memory(), NOW)
    assert slo_view(outcome) == (measured["slo"], ("True", "Met"), [])

    # A stricter target, generation 2, no probe yet (e.g. the engine is unreachable): the last
    # measurement is judged against it at once.
    stricter = collection(
        QDRANT_OUT, slo={"minRecallPercent": 100}, status={**measured, "conditions": [met]}
    )
    stricter["metadata"]["generation"] = 2
    slo, verdict, slo_events = slo_view(decide(stricter, WORLD, Memory(), NOW))
    assert slo == measured["slo"]
    assert verdict == ("False", "RecallBelowTarget")
    assert slo_events == [("Warning", "SLOMissed")]


@pytest.mark.parametrize(
    ("raw", "world", "why"),
    [
        (
            collection(QDRANT_OUT, slo=SLO),
            dataclasses.replace(WORLD, engine=state(vectors=0)),
            "holds no vectors",
        ),
        (collection(QDRANT_OUT, slo=SLO), WORLD, "engine was not reached"),
        (collection(QDRANT_OUT, slo=SLO, status=offloaded_status()), WORLD, "cold tier"),
        (
            collection(QDRANT_OUT, slo=SLO),
            dataclasses.replace(WORLD, engine=state()),
            "not measured yet",
        ),
    ],
)
def test_no_measurement_is_no_data_saying_why_without_an_event(
    raw: dict[str, Any], world: World, why: str
) -> None:
    outcome = decide(raw, world, Memory(), NOW)
    slo, met, slo_events = slo_view(outcome)
    assert slo is None
    assert met == ("Unknown", "NoData")
    assert slo_events == []
    (condition,) = [c for c in (outcome.status or {})["conditions"] if c["type"] == "SLOMet"]
    assert why in condition["message"]


def test_a_hibernated_collection_is_not_probed_and_says_so() -> None:
    raw = collection(
        {"type": "Qdrant"},
        slo=SLO,
        scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 60},
        storage={"size": "1Gi"},
    )
    assert probe_due(raw, WORLD, NOW, interval_seconds=300, sample=32) is None
    outcome = decide(raw, WORLD, Memory(), NOW)
    (condition,) = [c for c in (outcome.status or {})["conditions"] if c["type"] == "SLOMet"]
    assert condition["reason"] == "NoData"
    assert "hibernated" in condition["message"]


@pytest.mark.parametrize(
    ("snapshot_vectors", "now_holds", "refused"),
    [(1000, 1000, False), (1000, 1001, True), (1000, None, True), (None, 1000, True)],
)
def test_the_engines_copy_is_deleted_only_when_it_still_holds_what_the_snapshot_holds(
    snapshot_vectors: int | None, now_holds: int | None, refused: bool
) -> None:
    why = eviction_refused("docs", "s3://b/p/docs.snapshot", snapshot_vectors, now_holds)
    assert (why is not None) is refused
    if why is not None:
        assert why == (
            f"docs holds {now_holds} vectors, the snapshot s3://b/p/docs.snapshot "
            f"{snapshot_vectors}: written to meanwhile, not deleted"
        )


# --- generated credentials -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "secret", "generated", "key"),
    [
        ({"type": "Qdrant"}, "docs-credentials", True, "apiKey"),
        ({"type": "PGVector"}, "docs-credentials", True, "password"),
        ({"type": "PGVector", "connectionSecretRef": {"name": "mine"}}, "mine", False, "password"),
        (EXTERNAL, None, False, "password"),
    ],
)
def test_a_managed_engine_without_a_secret_of_its_own_uses_the_generated_one(
    engine: Mapping[str, Any], secret: str | None, generated: bool, key: str
) -> None:
    found = target(collection(engine))
    assert found is not None
    assert (found.secret, found.generated, found.key) == (secret, generated, key)


def test_the_generated_secret_carries_the_callers_value_under_the_engines_key() -> None:
    secret = credentials_secret(collection({"type": "PGVector"}), "from-the-caller")
    assert secret["metadata"]["name"] == "docs-credentials"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert secret["stringData"] == {"password": "from-the-caller"}


def test_the_driver_connects_to_a_managed_engine_with_the_generated_password() -> None:
    found = target(collection({"type": "PGVector"}))
    assert found is not None
    connect = address(found, {"password": "generated"})
    assert connect.url == "postgresql://postgres@docs.rag.svc.cluster.local:5432/tidal"
    assert connect.password == "generated"
    with pytest.raises(PermanentError, match="docs-credentials \\(generated by Tidal\\)"):
        address(found, None)


def test_a_generated_secret_is_named_in_status_and_an_event_once() -> None:
    created = dataclasses.replace(WORLD, credentials=CredentialsReport("docs-credentials", True))
    outcome = decide(collection(), created, Memory(), NOW)
    assert (outcome.status or {})["credentialsSecretName"] == "docs-credentials"
    assert ("Normal", "GeneratedCredentials") in view(outcome)["events"]
    (event,) = [e for e in outcome.events if e.reason == "GeneratedCredentials"]
    assert "docs-credentials" in event.message
    found = dataclasses.replace(WORLD, credentials=CredentialsReport("docs-credentials"))
    later = decide(collection(), found, Memory(), NOW)
    assert ("Normal", "GeneratedCredentials") not in view(later)["events"]


def test_a_users_own_secret_is_not_named_as_generated() -> None:
    engine = {"type": "PGVector", "connectionSecretRef": {"name": "mine"}}
    outcome = decide(collection(engine), WORLD, Memory(), NOW)
    assert (outcome.status or {}).get("credentialsSecretName") is None


def test_unusable_generated_credentials_are_the_reason_the_engine_is_not_provisioned() -> None:
    report = CredentialsReport("docs-credentials", missing_key="password")
    outcome = decide(collection(), dataclasses.replace(WORLD, credentials=report), Memory(), NOW)
    assert view(outcome)["conditions"]["Provisioned"] == ("False", "CredentialsMissing")
    refused = CredentialsReport("docs-credentials", create_failed="forbidden")
    assert refused.error is not None
    assert "grant the operator create on Secrets" in refused.error
    assert "has no key password" in (report.error or "")


# --- volumes that cannot bind --------------------------------------------------------------------


def claim(
    storage_class: str | None = None,
    *,
    phase: str = "Pending",
    age: timedelta = timedelta(seconds=10),
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": "data-docs-0",
        "creationTimestamp": format_time(NOW - age),
    }
    if deleting:
        metadata["deletionTimestamp"] = format_time(NOW)
    spec = {"storageClassName": storage_class} if storage_class is not None else {}
    return {"metadata": metadata, "spec": spec, "status": {"phase": phase}}


STANDARD = {"standard": StorageClassInfo()}
DEFAULTED = {"standard": StorageClassInfo(default=True)}
LATE = {"late": StorageClassInfo(wait_for_consumer=True)}
OLD = timedelta(seconds=VOLUME_PENDING_GRACE_SECONDS + 1)
SCHEDULED = (pod("docs-0", "cpu-eu", ready=False),)
UNSCHEDULED = ({"metadata": {"name": "docs-0"}, "spec": {}, "status": {}},)


@pytest.mark.parametrize(
    ("claims", "classes", "pods", "expected"),
    [
        pytest.param((), STANDARD, (), None, id="no claim yet"),
        pytest.param((claim(phase="Bound"),), {}, (), None, id="a bound claim"),
        pytest.param((claim(),), None, (), None, id="StorageClasses not observed"),
        pytest.param((claim(deleting=True),), {}, (), None, id="a claim being deleted"),
        pytest.param((claim(),), STANDARD, (), "NoStorageClass", id="no class, no default"),
        pytest.param((claim(),), {}, (), "NoStorageClass", id="no class in the cluster at all"),
        pytest.param((claim(),), DEFAULTED, (), None, id="no class, a default, young"),
        pytest.param(
            (claim(age=OLD),), DEFAULTED, (), "VolumePending", id="no class, a default, too old"
        ),
        pytest.param((claim("gp3"),), STANDARD, (), "NoStorageClass", id="a missing class"),
        pytest.param((claim("gp3"),), DEFAULTED, (), "NoStorageClass", id="missing, a default"),
        pytest.param((claim("standard"),), STANDARD, (), None, id="an existing class, young"),
        pytest.param(
            (claim("standard", age=OLD),), STANDARD, (), "VolumePending", id="existing, too old"
        ),
        pytest.param(
            (claim("late", age=OLD),), LATE, UNSCHEDULED, None, id="waits for an unscheduled pod"
        ),
        pytest.param(
            (claim("late", age=OLD),), LATE, SCHEDULED, "VolumePending", id="pod scheduled, old"
        ),
    ],
)
def test_a_pending_volume_says_why_it_cannot_bind(
    claims: tuple[dict[str, Any], ...],
    classes: Mapping[str, StorageClassInfo] | None,
    pods: tuple[dict[str, Any], ...],
    expected: str | None,
) -> None:
    world = dataclasses.replace(WORLD, volumes=claims, storage_classes=classes, pods=pods)
    found = volume_condition(world, NOW, 3, None)
    assert (found.reason if found else None) == expected
    if found is not None:
        assert (found.type, found.status, found.observed_generation) == ("Provisioned", "False", 3)


@pytest.mark.parametrize(
    ("storage_class", "classes", "words"),
    [
        (None, {"standard": StorageClassInfo()}, ["storage.storageClassName is unset", "standard"]),
        (None, {}, ["no default StorageClass", "StorageClasses: none"]),
        ("gp3", {"gp2": StorageClassInfo(), "io2": StorageClassInfo()}, ["'gp3'", "gp2, io2"]),
    ],
)
def test_no_storage_class_names_the_field_and_the_classes_that_exist(
    storage_class: str | None, classes: Mapping[str, StorageClassInfo], words: list[str]
) -> None:
    world = dataclasses.replace(WORLD, volumes=(claim(storage_class),), storage_classes=classes)
    found = volume_condition(world, NOW, 1, storage_class)
    assert found is not None
    assert "storage.storageClassName" in found.message
    assert "data-docs-0" in found.message
    for word in words:
        assert word in found.message


def test_a_volume_that_cannot_bind_is_why_the_collection_is_not_ready_until_its_class_exists() -> (
    None
):
    raw = collection(storage={"storageClassName": "gp3"})
    missing = managed_world(volumes=(claim("gp3"),), storage_classes=STANDARD)
    outcome = decide(raw, missing, Memory(), NOW)
    seen = view(outcome)
    assert seen["conditions"]["Provisioned"] == ("False", "NoStorageClass")
    assert seen["conditions"]["Ready"] == ("False", "NoStorageClass")
    assert ("Warning", "NoStorageClass") in seen["events"]
    raw["status"] = outcome.status
    classes = {**STANDARD, "gp3": StorageClassInfo()}
    fixed = decide(raw, dataclasses.replace(missing, storage_classes=classes), Memory(), NOW)
    assert view(fixed)["conditions"]["Provisioned"] == ("False", "EngineNotRunning")
    assert view(fixed)["conditions"]["Ready"] == ("False", "PodsNotReady")


def test_an_external_collection_never_judges_volumes() -> None:
    world = dataclasses.replace(WORLD, volumes=(claim("gp3"),), storage_classes={})
    outcome = decide(collection(EXTERNAL), world, Memory(), NOW)
    assert view(outcome)["conditions"]["Provisioned"][1] != "NoStorageClass"


def test_the_events_of_a_claim_pending_too_long_are_read_and_the_last_one_quoted() -> None:
    old = claim("standard", age=OLD)
    old["metadata"]["uid"] = "pvc-1"
    world = dataclasses.replace(WORLD, volumes=(old,), storage_classes=STANDARD)
    assert volume_events_due(world, NOW) == (("data-docs-0", "pvc-1"),)
    found = volume_condition(world, NOW, 1, "standard")
    assert found is not None
    assert "kubectl describe pvc data-docs-0" in found.message  # no Events read yet
    said = {
        "data-docs-0": (
            {
                "reason": "ExternalProvisioning",
                "message": "waiting for a volume to be created by the external provisioner",
                "lastTimestamp": format_time(NOW - timedelta(seconds=5)),
            },
            {
                "reason": "ProvisioningFailed",
                "message": "quota exceeded",
                "lastTimestamp": format_time(NOW - timedelta(seconds=1)),
            },
        )
    }
    quoted = volume_condition(dataclasses.replace(world, claim_events=said), NOW, 1, "standard")
    assert quoted is not None
    assert quoted.reason == "VolumePending"
    assert "last Event: ProvisioningFailed: quota exceeded" in quoted.message


@pytest.mark.parametrize(
    ("claims", "classes"),
    [
        pytest.param((claim("standard"),), STANDARD, id="young"),
        pytest.param((claim("gp3", age=OLD),), STANDARD, id="no such class: the class says why"),
        pytest.param((claim("standard", age=OLD, phase="Bound"),), STANDARD, id="bound"),
        pytest.param((claim("standard", age=OLD),), None, id="classes not observed"),
    ],
)
def test_no_events_are_read_for_a_claim_that_is_not_pending_too_long(
    claims: tuple[dict[str, Any], ...], classes: Mapping[str, StorageClassInfo] | None
) -> None:
    world = dataclasses.replace(WORLD, volumes=claims, storage_classes=classes)
    assert volume_events_due(world, NOW) == ()
