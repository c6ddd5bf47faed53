"""The API models: defaults, wire names, the validators that mirror the CRD's CEL rules, helpers."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from tidal.api import (
    READY,
    CapacityPolicy,
    Condition,
    EndpointCostStatus,
    EndpointScalingSpec,
    Engine,
    InferenceEndpoint,
    InferenceEndpointSpec,
    InferenceEndpointStatus,
    Quantization,
    RuntimeSpec,
    VectorCollection,
    VectorCollectionSpec,
    VectorCollectionStatus,
    VectorEngineType,
    VectorQuantization,
    default_image,
    default_vector_engine_image,
    get_condition,
    set_condition,
)
from tidal.api.common import ApiModel, PlacementStatus

T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-01T00:05:00Z"


def ie_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "residency": {"regions": ["eu-west-1"]},
    }
    spec.update(overrides)
    return spec


def vc_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"dimension": 768, "residency": {"regions": ["eu-west-1"]}}
    spec.update(overrides)
    return spec


def lookup(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


# --- InferenceEndpoint -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("model.quantization", Quantization.None_),
        ("model.uri", None),
        ("runtime.engine", Engine.VLLM),
        ("runtime.image", None),
        ("runtime.port", 8000),
        ("runtime.args", []),
        ("runtime.env", []),
        ("gpu.count", 1),
        ("gpu.products", []),
        ("capacity.policy", CapacityPolicy.Auto),
        ("capacity.min_reserved_replicas", 0),
        ("capacity.max_spot_percent", 100),
        ("capacity.max_node_gpu_utilization_percent", 85),
        ("capacity.interruption_budget_percent", "0.01"),
        ("scaling.min_replicas", 1),
        ("scaling.max_replicas", None),
        ("scaling.idle_seconds_before_scale_to_zero", 300),
        ("scaling.target_in_flight_requests", 16),
        ("slo", None),
        ("cost", None),
        ("vector_collection_ref", None),
    ],
)
def test_inference_endpoint_spec_defaults_match_the_design(path: str, expected: Any) -> None:
    spec = InferenceEndpointSpec.model_validate(ie_spec())
    assert lookup(spec, path) == expected


def test_inference_endpoint_parses_a_whole_object_and_defaults_an_empty_status() -> None:
    body = {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": "chat", "namespace": "ml", "generation": 3},
        "spec": ie_spec(),
    }
    endpoint = InferenceEndpoint.model_validate(body)
    assert endpoint.metadata["generation"] == 3
    assert endpoint.status == InferenceEndpointStatus()
    assert endpoint.status.replicas.desired == 0
    assert endpoint.status.conditions == []


def test_wire_names_with_unit_acronyms_round_trip() -> None:
    wire = ie_spec(
        model={"name": "m", "weightsGiB": 16},
        gpu={"minMemoryMiB": 81920},
        cost={"maxHourlyUSD": "40"},
        vectorCollectionRef={"name": "docs"},
    )
    spec = InferenceEndpointSpec.model_validate(wire)
    assert spec.model.weights_gib == 16
    assert spec.gpu.min_memory_mib == 81920
    assert spec.cost is not None
    assert spec.cost.max_hourly_usd == "40"
    dumped = spec.to_wire()
    assert dumped["model"]["weightsGiB"] == 16
    assert dumped["gpu"]["minMemoryMiB"] == 81920
    assert dumped["cost"] == {"maxHourlyUSD": "40"}
    assert dumped["vectorCollectionRef"] == {"name": "docs"}
    assert InferenceEndpointSpec.model_validate(dumped) == spec


def test_snake_case_names_are_accepted_in_python() -> None:
    spec = EndpointScalingSpec(min_replicas=0, max_replicas=4)
    assert spec.to_wire()["minReplicas"] == 0


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    spec = InferenceEndpointSpec.model_validate(ie_spec(futureField={"x": 1}))
    assert "futureField" not in spec.to_wire()


@pytest.mark.parametrize(("given", "stored"), [(4, "4"), ("500m", "500m"), ("64Gi", "64Gi")])
def test_quantities_accept_int_or_string_and_are_strings_in_python(given: Any, stored: str) -> None:
    runtime = RuntimeSpec.model_validate({"cpu": given})
    assert runtime.cpu == stored


@pytest.mark.parametrize(
    ("min_replicas", "max_replicas", "expected"),
    [(0, None, 1), (1, None, 1), (3, None, 3), (0, 5, 5), (2, 2, 2)],
)
def test_effective_max_replicas_defaults_to_max_of_one_and_min(
    min_replicas: int, max_replicas: int | None, expected: int
) -> None:
    scaling = EndpointScalingSpec(min_replicas=min_replicas, max_replicas=max_replicas)
    assert scaling.effective_max_replicas == expected


@pytest.mark.parametrize(
    ("engine", "image"),
    [
        (Engine.VLLM, "vllm/vllm-openai:v0.31.0"),
        (Engine.TGI, "ghcr.io/huggingface/text-generation-inference:3.3.7"),
        (Engine.Triton, "nvcr.io/nvidia/tritonserver:26.09-py3"),
        (Engine.Custom, None),
    ],
)
def test_each_engine_has_its_default_image(engine: Engine, image: str | None) -> None:
    assert default_image(engine) == image


def test_effective_image_prefers_the_override() -> None:
    assert RuntimeSpec().effective_image == "vllm/vllm-openai:v0.31.0"
    assert RuntimeSpec(engine=Engine.TGI, image="my/tgi:1").effective_image == "my/tgi:1"
    assert RuntimeSpec(engine=Engine.Custom, image="my/engine:1").effective_image == "my/engine:1"


@pytest.mark.parametrize(("given", "stored"), [(40, "40"), ("40", "40"), ("12.40", "12.40")])
def test_budget_accepts_whole_dollars_unquoted_and_decimal_strings(given: Any, stored: str) -> None:
    spec = InferenceEndpointSpec.model_validate(ie_spec(cost={"maxHourlyUSD": given}))
    assert spec.cost is not None
    assert spec.cost.max_hourly_usd == stored


def test_max_hourly_is_an_exact_decimal() -> None:
    spec = InferenceEndpointSpec.model_validate(ie_spec(cost={"maxHourlyUSD": "12.40"}))
    assert spec.cost is not None
    assert str(spec.cost.max_hourly) == "12.40"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"runtime": {"engine": "Custom"}}, "runtime.image is required"),
        ({"scaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas must be less than"),
        (
            {"capacity": {"minReservedReplicas": 2}, "scaling": {"minReplicas": 0}},
            "minReservedReplicas must not exceed",
        ),
        (
            {"capacity": {"minReservedReplicas": 3}, "scaling": {"maxReplicas": 2}},
            "minReservedReplicas must not exceed",
        ),
        ({"capacity": {"policy": "SpotOnly", "maxSpotPercent": 0}}, "maxSpotPercent must be"),
        ({"capacity": {"policy": "SpotOnly", "minReservedReplicas": 1}}, "must be 0 when"),
        ({"capacity": {"maxSpotPercent": 101}}, "less than or equal to 100"),
        ({"capacity": {"policy": "Cheap"}}, "Auto"),
        (
            {"capacity": {"interruptionBudgetPercent": "150"}},
            "capacity.interruptionBudgetPercent must be a percentage from 0 to 100",
        ),
        ({"capacity": {"interruptionBudgetPercent": "-1"}}, "interruptionBudgetPercent"),
        ({"capacity": {"interruptionBudgetPercent": "0.0000001"}}, "at most six decimals"),
        ({"capacity": {"interruptionBudgetPercent": "100.5"}}, "interruptionBudgetPercent"),
        ({"capacity": {"interruptionBudgetPercent": "1%"}}, "interruptionBudgetPercent"),
        ({"capacity": {"interruptionBudgetPercent": 0.5}}, "interruptionBudgetPercent"),
        ({"capacity": {"interruptionBudgetPercent": True}}, "interruptionBudgetPercent"),
        ({"residency": {"regions": []}}, "at least 1 item"),
        ({"residency": {"regions": ["EU_West"]}}, "String should match pattern"),
        ({"residency": {"regions": ["eu-west-1", "eu-west-1"]}}, "duplicate values: eu-west-1"),
        ({"residency": {}}, "Field required"),
        ({"model": {}}, "Field required"),
        (
            {"model": {"name": "m", "uri": "ftp://x"}},
            "spec.model.uri 'ftp://x' has no supported scheme: use hf://org/repo",
        ),
        ({"model": {"name": "m", "uri": "s3://B/x"}}, "does not name a bucket"),
        ({"model": {"name": "m", "uri": "pvc://models/../etc"}}, "leaves the volume"),
        ({"runtime": {"startupTimeoutSeconds": 59}}, "greater than or equal to 60"),
        ({"runtime": {"startupTimeoutSeconds": 86401}}, "less than or equal to 86400"),
        ({"model": {"name": "m", "quantization": "FP4"}}, "INT4"),
        ({"cost": {"maxHourlyUSD": "12.5$"}}, "String should match pattern"),
        ({"cost": {"maxHourlyUSD": "-1"}}, "String should match pattern"),
        ({"cost": {"maxHourlyUSD": -1}}, "String should match pattern"),
        ({"cost": {"maxHourlyUSD": 12.5}}, "Input should be a valid string"),
        ({"runtime": {"memory": "lots"}}, "String should match pattern"),
        ({"runtime": {"port": 0}}, "greater than or equal to 1"),
        ({"gpu": {"count": 0}}, "greater than or equal to 1"),
        ({"gpu": {"products": ["H100", "H100"]}}, "duplicate values"),
        (
            {"runtime": {"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {}}}]}},
            "Field required",
        ),
        (
            {
                "runtime": {
                    "env": [
                        {
                            "name": "HF_TOKEN",
                            "value": "x",
                            "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
                        }
                    ]
                }
            },
            "either value or valueFrom",
        ),
        ({"vectorCollectionRef": {"name": "Docs"}}, "String should match pattern"),
    ],
)
def test_invalid_inference_endpoint_specs_are_rejected(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        InferenceEndpointSpec.model_validate(ie_spec(**overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        {"scaling": {"minReplicas": 0}},
        {"scaling": {"minReplicas": 2, "maxReplicas": 2}},
        {"capacity": {"minReservedReplicas": 1}, "scaling": {"minReplicas": 0}},
        {"capacity": {"minReservedReplicas": 3}, "scaling": {"minReplicas": 3}},
        {"capacity": {"policy": "SpotOnly", "maxSpotPercent": 1}},
        {"capacity": {"policy": "ReservedOnly", "maxSpotPercent": 0}},
        {"runtime": {"engine": "Custom", "image": "me/engine:1", "cpu": "7500m"}},
        {"cost": {"maxHourlyUSD": "0.5"}},
        {
            "runtime": {
                "env": [
                    {
                        "name": "HF_TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
                    }
                ]
            }
        },
    ],
)
def test_valid_edge_cases_are_accepted(overrides: dict[str, Any]) -> None:
    InferenceEndpointSpec.model_validate(ie_spec(**overrides))


# --- VectorCollection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("engine.type", VectorEngineType.Qdrant),
        ("engine.mode", "Managed"),
        ("metric", "Cosine"),
        ("expected_vectors", None),
        ("payload_bytes_per_vector", 0),
        ("index.type", "HNSW"),
        ("index.m", 16),
        ("index.ef_construct", 100),
        ("index.ef_search", None),
        ("quantization.type", VectorQuantization.None_),
        ("quantization.rescore", True),
        ("shards", 1),
        ("replicas", 1),
        ("storage.tier", "Memory"),
        ("storage.cold_tier", None),
        ("scaling.min_replicas", None),
        ("scaling.idle_seconds_before_scale_to_zero", 300),
        ("slo", None),
    ],
)
def test_vector_collection_spec_defaults_match_the_design(path: str, expected: Any) -> None:
    spec = VectorCollectionSpec.model_validate(vc_spec())
    assert lookup(spec, path) == expected


def test_vector_collection_parses_a_whole_object() -> None:
    collection = VectorCollection.model_validate(
        {
            "metadata": {"name": "docs"},
            "spec": vc_spec(storage={"coldTier": {"objectStoreURI": "s3://bucket/docs"}}),
        }
    )
    assert collection.spec.storage.cold_tier is not None
    assert collection.spec.storage.cold_tier.after_idle_days == 7
    assert (
        collection.to_wire()["spec"]["storage"]["coldTier"]["objectStoreURI"] == "s3://bucket/docs"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dimension": 0}, "greater than or equal to 1"),
        ({"dimension": 65537}, "less than or equal to 65536"),
        ({"engine": {"mode": "External"}}, "engine.url or engine.connectionSecretRef is required"),
        ({"engine": {"url": "http://qdrant:6333"}}, "engine.url must not be set"),
        (
            {"engine": {"mode": "External", "url": "http://q:6333", "image": "q:1"}},
            "engine.image must not be set",
        ),
        ({"engine": {"mode": "External", "url": "ftp://q"}}, "String should match pattern"),
        (
            {"engine": {"type": "PGVector"}, "quantization": {"type": "Product"}},
            "Product is not supported",
        ),
        ({"engine": {"type": "PGVector"}, "shards": 2}, "shards must be 1"),
        ({"scaling": {"minReplicas": 2}}, "scaling.minReplicas must be less than or equal"),
        ({"metric": "Manhattan"}, "Cosine"),
        ({"index": {"m": 1}}, "greater than or equal to 2"),
        ({"storage": {"size": "-1Gi"}}, "String should match pattern"),
        ({"storage": {"coldTier": {}}}, "Field required"),
        ({"residency": {"regions": []}}, "at least 1 item"),
    ],
)
def test_invalid_vector_collection_specs_are_rejected(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        VectorCollectionSpec.model_validate(vc_spec(**overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        {"engine": {"mode": "External", "url": "http://qdrant.search:6333"}},
        {"engine": {"mode": "External", "connectionSecretRef": {"name": "pg"}}},
        {"engine": {"type": "PGVector"}, "quantization": {"type": "Binary"}},
        {"replicas": 3, "scaling": {"minReplicas": 0}},
        {"storage": {"tier": "Disk", "size": 100}},
    ],
)
def test_valid_vector_collection_edge_cases_are_accepted(overrides: dict[str, Any]) -> None:
    VectorCollectionSpec.model_validate(vc_spec(**overrides))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({}, 1), ({"replicas": 3}, 3), ({"replicas": 3, "scaling": {"minReplicas": 0}}, 0)],
)
def test_effective_min_replicas_defaults_to_replicas(
    overrides: dict[str, Any], expected: int
) -> None:
    assert (
        VectorCollectionSpec.model_validate(vc_spec(**overrides)).effective_min_replicas == expected
    )


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        ({}, "qdrant/qdrant:v1.18.3-unprivileged"),
        ({"type": "PGVector"}, "pgvector/pgvector:0.8.2-pg17"),
        ({"image": "my/qdrant:1"}, "my/qdrant:1"),
        ({"mode": "External", "url": "http://q:6333"}, None),
    ],
)
def test_vector_engine_effective_image(engine: dict[str, Any], expected: str | None) -> None:
    spec = VectorCollectionSpec.model_validate(vc_spec(engine=engine))
    assert spec.engine.effective_image == expected


def test_every_vector_engine_has_a_default_image() -> None:
    for engine_type in VectorEngineType:
        assert default_vector_engine_image(engine_type)


# --- Conditions --------------------------------------------------------------------------------


def cond(type_: str, status: str, reason: str = "Because", at: str | None = None) -> Condition:
    return Condition.model_validate(
        {"type": type_, "status": status, "reason": reason, "lastTransitionTime": at}
    )


@pytest.mark.parametrize(
    ("before", "new", "expected_time"),
    [
        pytest.param([], cond(READY, "True"), T1, id="a new condition transitions now"),
        pytest.param(
            [cond(READY, "True", at=T0)], cond(READY, "True"), T0, id="same status keeps its time"
        ),
        pytest.param(
            [cond(READY, "True", at=T0)],
            cond(READY, "False"),
            T1,
            id="a changed status transitions now",
        ),
        pytest.param(
            [cond(READY, "Unknown", at=T0)],
            cond(READY, "True"),
            T1,
            id="leaving Unknown is a transition",
        ),
        pytest.param(
            [cond(READY, "True")], cond(READY, "True"), T1, id="a missing old time is filled in"
        ),
        pytest.param(
            [cond("Placed", "True", at=T0)],
            cond(READY, "True", at="1999-01-01T00:00:00Z"),
            T1,
            id="the caller's time is not trusted",
        ),
    ],
)
def test_set_condition_moves_last_transition_time_only_on_status_change(
    before: list[Condition], new: Condition, expected_time: str
) -> None:
    after = set_condition(before, new, T1)
    updated = get_condition(after, new.type)
    assert updated is not None
    assert updated.last_transition_time == expected_time


def test_set_condition_updates_reason_and_message_even_when_status_is_unchanged() -> None:
    before = [cond(READY, "False", reason="Placing", at=T0)]
    new = Condition(type=READY, status="False", reason="NoCapacity", message="no H100 in eu")
    [updated] = set_condition(before, new, T1)
    assert (updated.reason, updated.message, updated.last_transition_time) == (
        "NoCapacity",
        "no H100 in eu",
        T0,
    )


def test_set_condition_keeps_order_and_does_not_modify_its_input() -> None:
    before = [cond(READY, "True", at=T0), cond("Placed", "True", at=T0)]
    snapshot = [c.model_copy() for c in before]
    after = set_condition(before, cond(READY, "False"), T1)
    assert [c.type for c in after] == [READY, "Placed"]
    assert before == snapshot
    assert after[1] is before[1]


def test_get_condition_returns_none_when_absent() -> None:
    assert get_condition([cond("Placed", "True")], READY) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"type": READY, "status": "Yes", "reason": "R"},
        {"type": READY, "status": "True", "reason": "two words"},
        {"type": READY, "status": "True", "reason": "R", "lastTransitionTime": "yesterday"},
        {"type": READY, "status": "True", "reason": "R", "lastTransitionTime": "2025-01-01T00:00"},
    ],
)
def test_conditions_follow_the_api_conventions(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Condition.model_validate(bad)


def test_condition_accepts_python_isoformat_times() -> None:
    condition = Condition.model_validate(
        {
            "type": READY,
            "status": "True",
            "reason": "R",
            "lastTransitionTime": "2025-01-01T00:00:00.123456+00:00",
        }
    )
    assert condition.last_transition_time == "2025-01-01T00:00:00.123456+00:00"


# --- Documentation -----------------------------------------------------------------------------


def reachable_models(root: type[BaseModel]) -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    pending = [root]
    while pending:
        model = pending.pop()
        if model in found:
            continue
        found.add(model)
        for field in model.model_fields.values():
            for arg in _type_args(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    pending.append(arg)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = [annotation]
    for sub in getattr(annotation, "__args__", ()):
        args.extend(_type_args(sub))
    return args


@pytest.mark.parametrize("root", [InferenceEndpoint, VectorCollection])
def test_every_field_description_starts_with_its_wire_name(root: type[BaseModel]) -> None:
    models = reachable_models(root)
    assert len(models) > 10  # the walk must actually reach the nested models
    undocumented = []
    for model in models:
        assert issubclass(model, ApiModel)
        for name, field in model.model_fields.items():
            wire = field.alias or name
            if not (field.description or "").startswith(wire):
                undocumented.append(f"{model.__name__}.{name} ({wire})")
    assert undocumented == []


def test_a_status_patch_writes_set_fields_nulls_what_became_unknown_and_keeps_the_rest() -> None:
    status = InferenceEndpointStatus(
        observed_generation=3,
        url=None,
        cost=EndpointCostStatus(hourly_usd="1.50"),
        placement=PlacementStatus(regions=["eu-west-1"]),
    )
    assert status.to_patch() == {
        "observedGeneration": 3,
        # Set to None: null, so the merge removes the URL stored before.
        "url": None,
        # Written whole: every number the price no longer supports is cleared.
        "cost": {
            "hourlyUSD": "1.50",
            "perMillionTokensUSD": None,
            "spotSavingsPercent": None,
            "basis": None,
        },
        # Nested but not whole: unknown optionals are left out.
        "placement": {"regions": ["eu-west-1"], "nodes": []},
        # replicas, slo, conditions, lastRequestTime...: never set, so the API server keeps them.
    }


def test_a_collection_status_patch_nulls_what_the_engine_no_longer_reports() -> None:
    patch = VectorCollectionStatus(vectors=None, observed_generation=1).to_patch()
    assert patch == {"vectors": None, "observedGeneration": 1}


@pytest.mark.parametrize(
    ("wire", "stored", "share"),
    [
        ("0.01", "0.01", Fraction(1, 10_000)),
        ("0", "0", Fraction(0)),
        (5, "5", Fraction(1, 20)),  # whole percents may be written unquoted
        ("100", "100", Fraction(1)),
        ("100.000000", "100.000000", Fraction(1)),
        ("0.000001", "0.000001", Fraction(1, 100_000_000)),
    ],
)
def test_the_interruption_budget_is_an_exact_percentage_string(
    wire: object, stored: str, share: Fraction
) -> None:
    spec = InferenceEndpointSpec.model_validate(
        ie_spec(capacity={"interruptionBudgetPercent": wire})
    )
    assert spec.capacity.interruption_budget_percent == stored
    assert spec.capacity.interruption_budget == share
    assert spec.to_wire()["capacity"]["interruptionBudgetPercent"] == stored
