"""A VectorCollection's rendered children (golden files), engine collection, names and status.

Golden files live in `tests/unit/data/vector_managed_*.yaml`; after a deliberate change to the
builders, regenerate them with `TIDAL_UPDATE_GOLDEN=1 pytest tests/unit/test_render_collection.py`
and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidal.api.collection import (
    CollectionActivityStatus,
    Metric,
    SizingEstimate,
    VectorCollection,
    VectorQuantization,
)
from tidal.api.common import Condition, Event, PlacementStatus
from tidal.errors import PermanentError
from tidal.render.collection import (
    EngineCollection,
    ManagedPlan,
    StatusParts,
    credentials_secret_name,
    engine_collection,
    engine_collection_name,
    generates_credentials,
    managed_url,
    pg_identifier,
    redact_url,
    render_credentials,
    render_pdb,
    render_peer_service,
    render_service,
    render_statefulset,
    summarize,
    vector_events,
)

DATA = Path(__file__).parent / "data"
UID = "0b6f2c4e-1d3a-4b5c-8d7e-9f0a1b2c3d4e"


def collection(spec: dict[str, Any], name: str = "docs") -> VectorCollection:
    base: dict[str, Any] = {"dimension": 768, "residency": {"regions": ["eu-west-1"]}}
    base.update(spec)
    return VectorCollection.model_validate(
        {"metadata": {"name": name, "namespace": "search", "uid": UID}, "spec": base}
    )


QDRANT = collection(
    {
        "engine": {"type": "Qdrant"},
        "expectedVectors": 1_000_000,
        "quantization": {"type": "Scalar"},
        "replicas": 3,
        "shards": 2,
        "storage": {"storageClassName": "fast-ssd"},
        "residency": {"regions": ["eu-west-1", "eu-central-1"]},
    }
)
QDRANT_PLAN = ManagedPlan(
    replicas=3, regions=["eu-west-1", "eu-central-1"], cpu="500m", memory="768Mi", volume="3Gi"
)
PGVECTOR = collection(
    {
        "engine": {"type": "PGVector", "connectionSecretRef": {"name": "docs-pg"}},
        "dimension": 384,
        "quantization": {"type": "Scalar"},
    }
)
PGVECTOR_PLAN = ManagedPlan(
    replicas=1,
    regions=["eu-west-1"],
    cpu="500m",
    memory="512Mi",
    volume="10Gi",
    shared_buffers="128MB",
)


def rendered(vc: VectorCollection, plan: ManagedPlan) -> dict[str, Any]:
    return {
        "statefulset": render_statefulset(vc, plan),
        "service": render_service(vc),
        "peers": render_peer_service(vc),
        "pdb": render_pdb(vc),
    }


@pytest.mark.parametrize(
    ("golden", "vc", "plan"),
    [
        ("vector_managed_qdrant.yaml", QDRANT, QDRANT_PLAN),
        ("vector_managed_pgvector.yaml", PGVECTOR, PGVECTOR_PLAN),
    ],
)
def test_managed_children_match_their_golden_file(
    golden: str, vc: VectorCollection, plan: ManagedPlan
) -> None:
    path = DATA / golden
    objects = rendered(vc, plan)
    if os.environ.get("TIDAL_UPDATE_GOLDEN"):
        header = f"# Golden: {golden} (tests/unit/test_render_collection.py).\n"
        path.write_text(header + yaml.safe_dump(objects, sort_keys=False, width=100))
    assert objects == yaml.safe_load(path.read_text())


def test_pods_need_cpu_nodes_of_the_allowed_regions() -> None:
    sts = render_statefulset(QDRANT, QDRANT_PLAN)
    terms = sts["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {
                    "key": "topology.kubernetes.io/region",
                    "operator": "In",
                    "values": ["eu-west-1", "eu-central-1"],
                },
                {"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]},
            ]
        }
    ]
    assert "tolerations" not in sts["spec"]["template"]["spec"]  # GPU taints keep them off GPUs


def test_hibernated_statefulset_keeps_its_claim_template_and_retains_volumes() -> None:
    plan = ManagedPlan(replicas=0, regions=[], cpu="500m", memory="768Mi", volume="3Gi")
    sts = render_statefulset(QDRANT, plan)
    assert sts["spec"]["replicas"] == 0
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "3Gi"


def test_a_single_qdrant_replica_runs_without_cluster_mode() -> None:
    vc = collection({"engine": {"type": "Qdrant"}})
    plan = ManagedPlan(replicas=1, regions=["eu-west-1"], cpu="500m", memory="512Mi", volume="1Gi")
    container = render_statefulset(vc, plan)["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container
    assert "QDRANT__CLUSTER__ENABLED" not in {e["name"] for e in container["env"]}


def test_the_qdrant_api_key_comes_from_the_referenced_secret() -> None:
    vc = collection({"engine": {"type": "Qdrant", "connectionSecretRef": {"name": "qdrant-key"}}})
    plan = ManagedPlan(replicas=1, regions=["eu-west-1"], cpu="500m", memory="512Mi", volume="1Gi")
    env = render_statefulset(vc, plan)["spec"]["template"]["spec"]["containers"][0]["env"]
    (api_key,) = [e for e in env if e["name"] == "QDRANT__SERVICE__API_KEY"]
    assert api_key["valueFrom"]["secretKeyRef"] == {
        "name": "qdrant-key",
        "key": "apiKey",
        "optional": True,
    }


def test_without_a_secret_of_its_own_managed_pgvector_reads_the_generated_password() -> None:
    vc = collection({"engine": {"type": "PGVector"}})
    env = render_statefulset(vc, PGVECTOR_PLAN)["spec"]["template"]["spec"]["containers"][0]["env"]
    (password,) = [e for e in env if e["name"] == "POSTGRES_PASSWORD"]
    assert password == {
        "name": "POSTGRES_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "docs-credentials", "key": "password"}},
    }


def test_a_generated_qdrant_api_key_is_required_not_optional() -> None:
    # An absent key must keep the pod from starting rather than start an open Qdrant.
    vc = collection({"engine": {"type": "Qdrant"}})
    plan = ManagedPlan(replicas=1, regions=["eu-west-1"], cpu="500m", memory="512Mi", volume="1Gi")
    env = render_statefulset(vc, plan)["spec"]["template"]["spec"]["containers"][0]["env"]
    (api_key,) = [e for e in env if e["name"] == "QDRANT__SERVICE__API_KEY"]
    assert api_key["valueFrom"]["secretKeyRef"] == {"name": "docs-credentials", "key": "apiKey"}


@pytest.mark.parametrize(
    ("engine", "generated", "secret"),
    [
        ({"type": "Qdrant"}, True, "docs-credentials"),
        ({"type": "PGVector"}, True, "docs-credentials"),
        ({"type": "PGVector", "connectionSecretRef": {"name": "mine"}}, False, "mine"),
        ({"type": "Qdrant", "connectionSecretRef": {"name": "mine"}}, False, "mine"),
        ({"type": "Qdrant", "mode": "External", "url": "http://q:6333"}, False, None),
    ],
)
def test_credentials_are_generated_only_for_a_managed_engine_without_its_own_secret(
    engine: dict[str, Any], generated: bool, secret: str | None
) -> None:
    vc = collection({"engine": engine})
    assert generates_credentials(vc) is generated
    if secret is not None:
        assert credentials_secret_name(vc) == secret


@pytest.mark.parametrize(("engine", "key"), [("Qdrant", "apiKey"), ("PGVector", "password")])
def test_the_generated_secret_is_owned_by_its_collection_and_holds_one_key(
    engine: str, key: str
) -> None:
    vc = collection({"engine": {"type": engine}})
    assert render_credentials(vc, "s3cr3t-value") == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "docs-credentials",
            "namespace": "search",
            "labels": {
                "app.kubernetes.io/name": "tidal-vector",
                "app.kubernetes.io/instance": "docs",
                "app.kubernetes.io/managed-by": "tidal",
                "tidal.dev/collection": "docs",
            },
            "ownerReferences": [
                {
                    "apiVersion": "tidal.dev/v1alpha1",
                    "kind": "VectorCollection",
                    "name": "docs",
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "type": "Opaque",
        "stringData": {key: "s3cr3t-value"},
    }


@pytest.mark.parametrize(
    ("engine", "value", "error"),
    [
        ({"type": "Qdrant", "connectionSecretRef": {"name": "mine"}}, "v", PermanentError),
        ({"type": "Qdrant"}, "", ValueError),
    ],
)
def test_no_secret_is_rendered_over_a_users_own_or_without_a_value(
    engine: dict[str, Any], value: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        render_credentials(collection({"engine": engine}), value)


PROBES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "Qdrant": (
        {"httpGet": {"path": "/livez", "port": "http"}},
        {"httpGet": {"path": "/livez", "port": "http"}},
    ),
    "PGVector": (
        {"exec": {"command": ["pg_isready", "-U", "postgres", "-h", "127.0.0.1"]}},
        {"exec": {"command": ["pg_isready", "-U", "postgres", "-h", "127.0.0.1"]}},
    ),
}


@pytest.mark.parametrize("engine", ["Qdrant", "PGVector"])
def test_both_engines_get_ten_minutes_to_start_before_liveness_applies(engine: str) -> None:
    vc = collection({"engine": {"type": engine}})
    container = render_statefulset(vc, PGVECTOR_PLAN)["spec"]["template"]["spec"]["containers"][0]
    startup, liveness = PROBES[engine]
    assert container["startupProbe"] == {
        **startup,
        "periodSeconds": 5,
        "timeoutSeconds": container["startupProbe"]["timeoutSeconds"],
        "failureThreshold": 120,
    }
    assert container["livenessProbe"] == {
        **liveness,
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 6,
    }


@pytest.mark.parametrize(
    ("engine", "shared_buffers", "shm"),
    [("PGVector", "128MB", "128Mi"), ("PGVector", None, "256Mi"), ("Qdrant", None, None)],
)
def test_postgresql_gets_a_memory_backed_dev_shm_as_large_as_shared_buffers(
    engine: str, shared_buffers: str | None, shm: str | None
) -> None:
    vc = collection({"engine": {"type": engine}})
    plan = dataclasses.replace(PGVECTOR_PLAN, shared_buffers=shared_buffers)
    pod = render_statefulset(vc, plan)["spec"]["template"]["spec"]
    mounts = pod["containers"][0]["volumeMounts"]
    if shm is None:
        assert "/dev/shm" not in {m["mountPath"] for m in mounts}
        assert [v["name"] for v in pod["volumes"]] == ["tmp"]
        return
    assert {"name": "dshm", "mountPath": "/dev/shm"} in mounts
    assert pod["volumes"] == [
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
    ]


def test_managed_pgvector_refuses_more_than_one_replica() -> None:
    vc = collection(
        {"engine": {"type": "PGVector", "connectionSecretRef": {"name": "s"}}, "replicas": 2}
    )
    with pytest.raises(PermanentError, match="streaming replication"):
        render_statefulset(vc, PGVECTOR_PLAN)


def test_managed_names_must_fit_pod_names() -> None:
    vc = collection({}, name="a" * 60)
    with pytest.raises(PermanentError, match="DNS-1035"):
        render_service(vc)


def test_a_running_engine_needs_a_region() -> None:
    with pytest.raises(ValueError, match="region"):
        render_statefulset(
            QDRANT, ManagedPlan(replicas=1, regions=[], cpu="1", memory="1Gi", volume="1Gi")
        )


# --- engine collection and names ------------------------------------------------------------


def test_engine_collection_carries_the_declared_config() -> None:
    vc = collection(
        {
            "metric": "Dot",
            "index": {"m": 24, "efConstruct": 200, "efSearch": 64},
            "quantization": {"type": "Binary", "rescore": False},
            "shards": 3,
            "replicas": 2,
            "storage": {"tier": "Disk"},
        }
    )
    assert engine_collection(vc) == EngineCollection(
        name="search_docs",
        dimension=768,
        metric=Metric.Dot,
        m=24,
        ef_construct=200,
        ef_search=64,
        quantization=VectorQuantization.Binary,
        rescore=False,
        shards=3,
        replicas=2,
        on_disk=True,
    )


def test_engine_collection_names_are_unique_per_namespace_and_sql_safe() -> None:
    assert engine_collection_name("team-a", "docs") == "team-a_docs"
    assert engine_collection_name("team-a", "docs.v2") == "team-a_docs_v2"
    assert engine_collection_name("team-a", "docs") != engine_collection_name("team-b", "docs")


def test_long_postgres_identifiers_are_shortened_with_a_hash() -> None:
    short = "ns_docs"
    assert pg_identifier(short) == short
    long_a = "n" * 40 + "_" + "a" * 40
    long_b = "n" * 40 + "_" + "a" * 39 + "b"
    assert len(pg_identifier(long_a).encode()) == 63
    assert pg_identifier(long_a) != pg_identifier(long_b)
    assert pg_identifier(long_a) == pg_identifier(long_a)


def test_managed_urls_point_at_the_service() -> None:
    assert managed_url(QDRANT) == "http://docs.search.svc.cluster.local:6333"
    assert managed_url(PGVECTOR) == "postgresql://postgres@docs.search.svc.cluster.local:5432/tidal"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://app:hunter2@db.example:5432/rag?sslmode=require",
            "postgresql://app@db.example:5432/rag",
        ),
        ("https://qdrant.example:6333", "https://qdrant.example:6333"),
        ("http://key:secret@qdrant.local/", "http://key@qdrant.local/"),
    ],
)
def test_urls_in_status_never_carry_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# --- status -----------------------------------------------------------------------------------


def cond(type_: str, status: str, reason: str, message: str = "m") -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message)


def parts(**overrides: Any) -> StatusParts:
    fields: dict[str, Any] = {
        "generation": 3,
        "endpoint": "http://docs.search.svc.cluster.local:6333",
        "collection": "search_docs",
        "vectors": 42,
        "estimate": SizingEstimate(memory="1Gi", memory_bytes=1 << 30, disk_bytes=2 << 30),
        "measured": None,
        "cost": None,
        "placement": PlacementStatus(),
        "activity": CollectionActivityStatus(last_activity_time="2026-01-01T00:00:00Z"),
        "cold_tier": None,
        "provisioned": cond("Provisioned", "True", "CollectionProvisioned"),
        "residency": cond("ResidencyCompliant", "True", "InAllowedRegions"),
        "hibernated": cond("Hibernated", "False", "Active"),
        "pods": (1, 1),
    }
    fields.update(overrides)
    return StatusParts(**fields)


def ready_of(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_ready_when_provisioned_compliant_awake_and_pods_ready() -> None:
    status = summarize(parts(), [], "2026-01-01T00:00:00Z").to_patch()
    ready = ready_of(status)
    assert ready["status"] == "True"
    assert ready["message"] == "42 vectors in search_docs"
    assert {c["type"] for c in status["conditions"]} == {
        "Provisioned",
        "ResidencyCompliant",
        "Hibernated",
        "Ready",
    }
    assert status["observedGeneration"] == 3
    assert status["estimate"]["memory"] == "1Gi"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"hibernated": cond("Hibernated", "True", "Idle")}, "Hibernated"),
        ({"pods": (0, 2)}, "PodsNotReady"),
        ({"provisioned": cond("Provisioned", "False", "EngineUnreachable")}, "EngineUnreachable"),
        (
            {"residency": cond("ResidencyCompliant", "False", "NoAllowedRegion")},
            "NoAllowedRegion",
        ),
    ],
)
def test_not_ready_names_the_first_thing_missing(overrides: dict[str, Any], reason: str) -> None:
    ready = ready_of(summarize(parts(**overrides), [], "2026-01-01T00:00:00Z").to_patch())
    assert ready["status"] == "False"
    assert ready["reason"] == reason


def test_conditions_owned_elsewhere_survive_a_summary() -> None:
    slo = cond("SLOMet", "True", "WithinTarget")
    status = summarize(parts(), [slo], "2026-01-01T00:00:00Z").to_patch()
    assert "SLOMet" in {c["type"] for c in status["conditions"]}


def status_with(
    *conditions: tuple[str, str, str], regions: list[str] | None = None
) -> dict[str, Any]:
    return {
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": f"{t} {r}", "observedGeneration": 1}
            for t, s, r in conditions
        ],
        "placement": {"regions": regions or [], "nodes": ["n1"] if regions else []},
    }


def test_hibernating_and_waking_post_one_event_each() -> None:
    awake = status_with(("Hibernated", "False", "Active"), ("Ready", "True", "CollectionReady"))
    asleep = status_with(("Hibernated", "True", "Idle"), ("Ready", "False", "Hibernated"))
    assert vector_events(awake, asleep) == [Event("Normal", "Hibernated", "Hibernated Idle")]
    assert vector_events(asleep, asleep) == []
    woke = status_with(("Hibernated", "False", "Active"), ("Ready", "False", "PodsNotReady"))
    assert vector_events(asleep, woke) == [Event("Normal", "Woke", "Hibernated Active")]


def test_a_residency_violation_is_a_warning_once() -> None:
    ok = status_with(("ResidencyCompliant", "True", "InAllowedRegions"))
    bad = status_with(("ResidencyCompliant", "False", "PodsOutsideAllowedRegions"))
    assert vector_events(ok, bad) == [
        Event("Warning", "ResidencyViolation", "ResidencyCompliant PodsOutsideAllowedRegions")
    ]
    assert vector_events(bad, bad) == []


def test_provisioned_and_ready_are_announced() -> None:
    after = status_with(
        ("Provisioned", "True", "CollectionProvisioned"), ("Ready", "True", "CollectionReady")
    )
    assert vector_events(None, after) == [
        Event("Normal", "Ready", "Ready CollectionReady"),
        Event("Normal", "Provisioned", "Provisioned CollectionProvisioned"),
    ]


def test_an_unreachable_engine_warns_but_starting_pods_do_not() -> None:
    starting = status_with(("Ready", "False", "PodsNotReady"))
    assert vector_events(None, starting) == []
    unreachable = status_with(("Ready", "False", "EngineUnreachable"))
    assert vector_events(starting, unreachable) == [
        Event("Warning", "EngineUnreachable", "Ready EngineUnreachable")
    ]


def test_placement_changes_are_announced() -> None:
    before = status_with(regions=["eu-west-1"])
    after = status_with(regions=["eu-central-1"])
    assert vector_events(before, after) == [
        Event("Normal", "PlacementChanged", "Engine pods run in eu-central-1 (was eu-west-1)")
    ]
