"""What the admission webhooks refuse, and the message naming the field (tidal.residency.admission).

Pure: every input is built here; no cluster. The webhook's wiring is in
test_admission_webhooks.py and, against a real API server, tests/e2e/test_admission.py.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.collection import VectorCollectionSpec
from tidal.api.endpoint import InferenceEndpointSpec
from tidal.residency.admission import (
    MAX_PROBLEMS,
    Cluster,
    Problem,
    collection_problems,
    endpoint_problems,
    endpoint_warnings,
    introduced,
    named_problem,
    rejection,
    residency_problems,
    spec_problems,
)

SPEC: dict[str, Any] = {
    "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
    "residency": {"regions": ["eu-west-1"]},
}
H100 = "NVIDIA-H100-80GB-HBM3"
L4 = "NVIDIA-L4"
FLEET = Cluster(
    namespace="team-a",
    gpu_memory_mib={H100: 81559, L4: 23034},
    gpus_per_node={H100: 8, L4: 4},
)


def _spec(**overrides: Any) -> InferenceEndpointSpec:
    raw = copy.deepcopy(SPEC)
    raw.update(overrides)
    return InferenceEndpointSpec.model_validate(raw)


def _cluster(**changes: Any) -> Cluster:
    return dataclasses.replace(FLEET, **changes)


# --- namespace residency policy --------------------------------------------------------------


def test_no_policy_allows_every_region() -> None:
    assert residency_problems(["us-east-1", "ap-south-1"], _cluster()) == []


def test_regions_inside_the_policy_are_allowed() -> None:
    policy = frozenset({"eu-west-1", "eu-central-1"})
    assert residency_problems(["eu-west-1"], _cluster(namespace_regions=policy)) == []


def test_a_forbidden_region_is_named_with_the_policy_and_the_field() -> None:
    cluster = _cluster(namespace_regions=frozenset({"eu-west-1"}))
    (problem,) = residency_problems(["eu-west-1", "us-east-1"], cluster)
    assert problem.field == "spec.residency.regions"
    assert str(problem) == (
        "spec.residency.regions: us-east-1 not allowed in namespace team-a "
        "(tidal.dev/allowed-regions: eu-west-1)"
    )


def test_an_empty_policy_allows_nothing_and_says_none() -> None:
    (problem,) = residency_problems(["eu-west-1"], _cluster(namespace_regions=frozenset()))
    assert "tidal.dev/allowed-regions: none" in problem.message


@given(
    regions=st.lists(st.sampled_from(["a-1", "b-1", "c-1", "d-1"]), min_size=1, unique=True),
    policy=st.frozensets(st.sampled_from(["a-1", "b-1", "c-1", "d-1"])),
)
def test_residency_refuses_exactly_when_a_region_is_outside_the_policy(
    regions: list[str], policy: frozenset[str]
) -> None:
    problems = residency_problems(regions, _cluster(namespace_regions=policy))
    assert bool(problems) == (not set(regions) <= policy)
    for region in set(regions) - policy:
        assert region in problems[0].message


def test_a_collection_is_held_to_the_same_policy() -> None:
    spec = VectorCollectionSpec.model_validate(
        {"dimension": 768, "residency": {"regions": ["us-east-1"]}}
    )
    (problem,) = collection_problems(spec, _cluster(namespace_regions=frozenset({"eu-west-1"})))
    assert problem.field == "spec.residency.regions"


# --- vectorCollectionRef ---------------------------------------------------------------------


def test_a_missing_collection_is_refused_by_name() -> None:
    spec = _spec(vectorCollectionRef={"name": "docs"})
    (problem,) = endpoint_problems(spec, _cluster(collection_found=False), gpu_need_mib=None)
    assert str(problem) == (
        "spec.vectorCollectionRef.name: VectorCollection 'docs' not found in namespace team-a"
    )


def test_a_collection_sharing_a_region_is_accepted() -> None:
    spec = _spec(
        vectorCollectionRef={"name": "docs"},
        residency={"regions": ["eu-west-1", "us-east-1"]},
    )
    cluster = _cluster(collection_found=True, collection_regions=frozenset({"us-east-1"}))
    assert endpoint_problems(spec, cluster, gpu_need_mib=None) == []


def test_a_collection_in_other_regions_is_refused_naming_both() -> None:
    spec = _spec(vectorCollectionRef={"name": "docs"})
    cluster = _cluster(collection_found=True, collection_regions=frozenset({"us-east-1"}))
    (problem,) = endpoint_problems(spec, cluster, gpu_need_mib=None)
    assert problem.field == "spec.vectorCollectionRef.name"
    assert "us-east-1" in problem.message
    assert "eu-west-1" in problem.message
    assert problem.depends_on == ("spec.residency.regions",)


def test_the_overlap_must_also_be_allowed_by_the_namespace() -> None:
    # Shared region us-east-1 exists, but the namespace forbids it: nowhere to run.
    spec = _spec(
        vectorCollectionRef={"name": "docs"},
        residency={"regions": ["eu-west-1", "us-east-1"]},
    )
    cluster = _cluster(
        namespace_regions=frozenset({"eu-west-1"}),
        collection_found=True,
        collection_regions=frozenset({"us-east-1"}),
    )
    fields = [p.field for p in endpoint_problems(spec, cluster, gpu_need_mib=None)]
    assert fields == ["spec.residency.regions", "spec.vectorCollectionRef.name"]


def test_a_huge_collection_name_is_cut_in_the_message() -> None:
    name = "a" * 253
    spec = _spec(vectorCollectionRef={"name": name})
    (problem,) = endpoint_problems(spec, _cluster(), gpu_need_mib=None)
    assert name not in problem.message
    assert "..." in problem.message
    assert len(problem.message) < 200


# --- GPUs ------------------------------------------------------------------------------------


def test_products_too_small_for_the_model_are_refused_at_weights() -> None:
    spec = _spec(model={"name": "m", "weightsGiB": 140}, gpu={"count": 1, "products": [L4]})
    (problem,) = endpoint_problems(spec, _cluster(), gpu_need_mib=172_032)
    assert problem.field == "spec.model.weightsGiB"
    assert "NVIDIA-L4: 23034 MiB" in problem.message
    assert "172032 MiB per GPU" in problem.message


def test_products_below_min_memory_are_refused_at_min_memory() -> None:
    spec = _spec(gpu={"products": [L4], "minMemoryMiB": 40_000})
    (problem,) = endpoint_problems(spec, _cluster(), gpu_need_mib=40_000)
    assert problem.field == "spec.gpu.minMemoryMiB"


def test_one_large_enough_product_is_enough() -> None:
    spec = _spec(gpu={"products": [L4, H100], "minMemoryMiB": 40_000})
    assert endpoint_problems(spec, _cluster(), gpu_need_mib=40_000) == []


def test_a_product_never_seen_gets_the_benefit_of_the_doubt() -> None:
    spec = _spec(gpu={"products": [L4, "NVIDIA-B200"], "minMemoryMiB": 40_000})
    assert endpoint_problems(spec, _cluster(), gpu_need_mib=40_000) == []
    warnings = endpoint_warnings(spec, _cluster())
    assert any("NVIDIA-B200" in w and w.startswith("spec.gpu.products") for w in warnings)


def test_without_products_or_need_nothing_is_concluded() -> None:
    assert endpoint_problems(_spec(), _cluster(), gpu_need_mib=None) == []
    assert endpoint_problems(_spec(), _cluster(), gpu_need_mib=10**9) == []


def test_more_gpus_than_any_node_has_is_only_a_warning() -> None:
    spec = _spec(gpu={"count": 16, "products": [H100]})
    assert endpoint_problems(spec, _cluster(), gpu_need_mib=None) == []
    (warning,) = endpoint_warnings(spec, _cluster())
    assert warning.startswith("spec.gpu.count: 16 GPUs per replica")


def test_an_unread_fleet_gives_no_warnings() -> None:
    spec = _spec(gpu={"count": 16, "products": [H100]})
    assert endpoint_warnings(spec, Cluster(namespace="x")) == []


# --- spec parsing ----------------------------------------------------------------------------


def test_spec_problems_name_the_wire_path() -> None:
    raw = copy.deepcopy(SPEC)
    raw["gpu"] = {"count": 99}
    raw["scaling"] = {"minReplicas": 5, "maxReplicas": 2}
    problems = spec_problems(InferenceEndpointSpec, raw)
    fields = {p.field for p in problems}
    assert "spec.gpu.count" in fields
    assert any(f.startswith("spec.scaling") for f in fields)


def test_a_valid_spec_has_no_problems() -> None:
    assert spec_problems(InferenceEndpointSpec, SPEC) == []


def test_spec_problems_never_echo_the_input() -> None:
    raw = copy.deepcopy(SPEC)
    raw["model"] = {"name": "x" * 10_000}
    (problem,) = spec_problems(InferenceEndpointSpec, raw)
    assert problem.field == "spec.model.name"
    assert "x" * 300 not in problem.message


# --- updates ("ratcheting") and messages -----------------------------------------------------


def _obj(regions: list[str], replicas: int = 1, ref: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"residency": {"regions": regions}, "scaling": {"minReplicas": replicas}}
    if ref:
        spec["vectorCollectionRef"] = {"name": ref}
    return {"metadata": {"name": "e"}, "spec": spec}


REGION_PROBLEM = Problem("spec.residency.regions", "us-east-1 not allowed")
OVERLAP_PROBLEM = Problem(
    "spec.vectorCollectionRef.name", "no overlap", depends_on=("spec.residency.regions",)
)


def test_on_create_every_problem_counts() -> None:
    assert introduced([REGION_PROBLEM], None, _obj(["us-east-1"])) == [REGION_PROBLEM]


def test_an_update_that_leaves_the_field_alone_is_not_refused() -> None:
    old, new = _obj(["us-east-1"]), _obj(["us-east-1"], replicas=3)
    assert introduced([REGION_PROBLEM], old, new) == []


def test_an_update_that_touches_the_field_is_refused() -> None:
    old, new = _obj(["eu-west-1"]), _obj(["us-east-1"])
    assert introduced([REGION_PROBLEM], old, new) == [REGION_PROBLEM]


def test_a_problem_is_introduced_by_a_change_of_a_field_it_depends_on() -> None:
    old, new = _obj(["eu-west-1"], ref="docs"), _obj(["us-east-1"], ref="docs")
    assert introduced([OVERLAP_PROBLEM], old, new) == [OVERLAP_PROBLEM]


def test_list_indices_in_paths_are_followed() -> None:
    problem = Problem("spec.runtime.env.1.name", "bad")
    old = {"spec": {"runtime": {"env": [{"name": "A"}, {"name": "B"}]}}}
    new = {"spec": {"runtime": {"env": [{"name": "A"}, {"name": "C"}]}}}
    assert introduced([problem], old, new) == [problem]
    assert introduced([problem], old, old) == []


def test_a_rejection_lists_a_bounded_number_of_problems() -> None:
    problems = [Problem(f"spec.f{i}", "bad") for i in range(MAX_PROBLEMS + 3)]
    message = rejection(problems)
    assert message.startswith("spec.f0: bad; spec.f1: bad")
    assert message.endswith("and 3 more")
    assert message.count("spec.f") == MAX_PROBLEMS


@pytest.mark.parametrize("problems", [[REGION_PROBLEM], [REGION_PROBLEM, OVERLAP_PROBLEM]])
def test_every_problem_in_a_rejection_starts_with_its_field(problems: list[Problem]) -> None:
    for part in rejection(problems).split("; "):
        assert part.startswith("spec.")


@pytest.mark.parametrize(
    ("message", "field", "rest"),
    [
        (
            "metadata.name '0' must be a DNS-1035 label",
            "metadata.name",
            "'0' must be a DNS-1035 label",
        ),
        ("spec.gpu.count is too big", "spec.gpu.count", "is too big"),
        ("something else went wrong", "metadata.name", "something else went wrong"),
    ],
)
def test_a_rule_message_is_filed_under_the_field_it_starts_with(
    message: str, field: str, rest: str
) -> None:
    assert named_problem(message) == Problem(field, rest)


def test_a_need_larger_than_every_gpu_in_the_cluster_is_a_warning() -> None:
    spec = _spec(gpu={"minMemoryMiB": 1 << 20})
    assert endpoint_problems(spec, _cluster(), gpu_need_mib=1 << 20) == []
    (warning,) = endpoint_warnings(spec, _cluster(), gpu_need_mib=1 << 20)
    assert warning.startswith("spec.gpu: each GPU needs 1048576 MiB")
    assert "81559 MiB" in warning
