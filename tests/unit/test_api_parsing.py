"""Parsing a watched object into its typed model: readable errors, a foreign status ignored."""

from __future__ import annotations

from typing import Any

import pytest

from tidal.api.collection import VectorCollectionStatus
from tidal.api.endpoint import InferenceEndpoint, InferenceEndpointStatus
from tidal.api.parsing import parse_object, read_status
from tidal.errors import PermanentError


def body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": "chat", "namespace": "ml", "uid": "u", "generation": 2},
        "spec": spec,
        "status": {"replicas": "not what this version writes"},
    }


VALID = {"model": {"name": "m"}, "residency": {"regions": ["eu-west-1"]}}


def test_a_valid_spec_parses_and_a_foreign_status_is_ignored() -> None:
    ie = parse_object(InferenceEndpoint, body(VALID))
    assert ie.metadata["name"] == "chat"
    assert ie.spec.residency.regions == ["eu-west-1"]


def test_an_invalid_spec_is_permanent_with_wire_field_paths() -> None:
    spec = {**VALID, "scaling": {"minReplicas": 3, "maxReplicas": 2}, "gpu": {"count": 0}}
    with pytest.raises(PermanentError) as info:
        parse_object(InferenceEndpoint, body(spec))
    message = str(info.value)
    assert "spec.gpu.count" in message
    assert "spec.scaling" in message
    assert "minReplicas must be less than or equal to scaling.maxReplicas" in message


def test_a_missing_spec_is_invalid() -> None:
    with pytest.raises(PermanentError, match="spec"):
        parse_object(InferenceEndpoint, {"metadata": {"name": "chat"}})


def test_long_error_lists_are_elided() -> None:
    spec = {
        "model": {"name": ""},
        "residency": {"regions": []},
        "runtime": {"port": 0, "engine": "Nope"},
        "gpu": {"count": 0},
        "capacity": {"maxSpotPercent": 101},
        "scaling": {"minReplicas": -1},
    }
    with pytest.raises(PermanentError, match=r"and \d+ more$"):
        parse_object(InferenceEndpoint, body(spec))


def test_a_status_is_read_whole_when_it_parses() -> None:
    status = read_status(
        InferenceEndpointStatus,
        {"observedGeneration": 2, "replicas": {"desired": 3, "spot": 2, "reserved": 1}},
    )
    assert (status.observed_generation, status.replicas.spot) == (2, 2)


def test_a_status_drops_what_no_longer_parses_field_by_field_and_condition_by_condition() -> None:
    status = read_status(
        InferenceEndpointStatus,
        {
            "observedGeneration": -4,  # invalid: dropped
            "replicas": {"desired": 3, "spot": 2, "reserved": 1},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ReplicasReady"},
                {"type": "Placed", "status": "Perhaps"},  # invalid: dropped
                {"type": "SLOMet", "status": "False", "reason": "NoData"},
            ],
        },
    )
    assert status.observed_generation is None
    assert status.replicas.desired == 3
    assert [c.type for c in status.conditions] == ["Ready", "SLOMet"]


def test_a_status_that_is_not_an_object_reads_as_none() -> None:
    assert read_status(VectorCollectionStatus, None) == VectorCollectionStatus()
    garbled = read_status(VectorCollectionStatus, {"conditions": "yes", "vectors": "many"})
    assert garbled == VectorCollectionStatus()
