"""The VectorCollection controller's small translations (the reconcile itself runs in e2e)."""

from __future__ import annotations

from typing import Any

from tidal.api.vector import VectorCollection
from tidal.controllers import collection as controller


def collection(engine: dict[str, Any]) -> VectorCollection:
    return VectorCollection.model_validate(
        {
            "metadata": {"name": "docs", "namespace": "rag", "uid": "u"},
            "spec": {"engine": engine, "dimension": 8, "residency": {"regions": ["eu-west-1"]}},
        }
    )


def test_an_existing_statefulset_keeps_its_volume_size() -> None:
    sts = {
        "spec": {
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"resources": {"requests": {"storage": "7Gi"}}},
                }
            ]
        }
    }
    assert controller._existing_volume(sts) == "7Gi"
    assert controller._existing_volume(None) is None
    assert controller._existing_volume({"spec": {}}) is None


def test_endpoints_never_show_credentials() -> None:
    external = collection(
        {"type": "PGVector", "mode": "External", "url": "postgresql://app:pw@db:5432/rag"}
    )
    assert controller._endpoint(external) == "postgresql://app@db:5432/rag"
    from_secret = collection(
        {"type": "PGVector", "mode": "External", "connectionSecretRef": {"name": "conn"}}
    )
    assert controller._endpoint(from_secret) is None
    managed = collection({"type": "Qdrant"})
    assert controller._endpoint(managed) == "http://docs.rag.svc.cluster.local:6333"


def test_a_status_written_by_another_version_does_not_break_the_reconcile() -> None:
    previous = controller._previous_status(
        {"vectors": "many", "conditions": [{"type": "Ready"}], "activity": {"source": "Gremlins"}}
    )
    assert previous.vectors is None
    kept = controller._previous_status({"vectors": 12, "collection": "public.rag_docs"})
    assert (kept.vectors, kept.collection) == (12, "public.rag_docs")


def test_unparseable_conditions_are_dropped() -> None:
    conditions = controller._conditions(
        {"conditions": [{"type": "Ready"}, {"type": "Ready", "status": "True", "reason": "Ok"}]}
    )
    assert [(c.type, c.status) for c in conditions] == [("Ready", "True")]


def test_a_failed_reconcile_reports_ready_false_with_the_reason() -> None:
    status = controller._failed("InvalidSpec", "dimension: bad", 4, [], "2026-01-01T00:00:00Z")
    assert status["observedGeneration"] == 4
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")


def test_hibernated_is_read_from_the_stored_condition() -> None:
    assert controller._hibernated({"conditions": [{"type": "Hibernated", "status": "True"}]})
    assert not controller._hibernated({"conditions": [{"type": "Hibernated", "status": "False"}]})
    assert not controller._hibernated({})
