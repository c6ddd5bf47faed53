"""A VectorCollection's allowed regions and its ResidencyCompliant condition."""

from __future__ import annotations

from tidal.residency.collection import residency, residency_condition
from tidal.residency.policy import NamespacePolicy, namespace_policy

NO_POLICY = NamespacePolicy()


def policy(value: str) -> NamespacePolicy:
    return namespace_policy({"tidal.dev/allowed-regions": value})


def test_without_a_policy_the_spec_decides() -> None:
    res = residency(["eu-west-1", "us-east-1"], NO_POLICY)
    assert res.allowed == ("eu-west-1", "us-east-1")
    assert res.refused == ()


def test_allowed_is_the_intersection_in_spec_order() -> None:
    res = residency(["us-east-1", "eu-west-1", "eu-central-1"], policy("eu-central-1,eu-west-1"))
    assert res.allowed == ("eu-west-1", "eu-central-1")
    assert res.refused == ("us-east-1",)


def test_pods_in_allowed_regions_are_compliant() -> None:
    res = residency(["eu-west-1"], NO_POLICY)
    condition = residency_condition(
        res, pod_regions={"docs-0": "eu-west-1", "docs-1": "eu-west-1"}, generation=2
    )
    assert (condition.status, condition.reason) == ("True", "InAllowedRegions")
    assert condition.observed_generation == 2


def test_a_pod_outside_is_named() -> None:
    res = residency(["eu-west-1"], NO_POLICY)
    condition = residency_condition(
        res, pod_regions={"docs-0": "eu-west-1", "docs-1": "us-east-1"}, generation=2
    )
    assert (condition.status, condition.reason) == ("False", "PodsOutsideAllowedRegions")
    assert "docs-1 in us-east-1" in condition.message


def test_a_refused_region_is_non_compliant_even_with_no_pods() -> None:
    res = residency(["eu-west-1", "us-east-1"], policy("eu-west-1"))
    condition = residency_condition(res, pod_regions={}, generation=1)
    assert (condition.status, condition.reason) == ("False", "RegionNotAllowed")
    assert "us-east-1" in condition.message
    assert "placing only in eu-west-1" in condition.message


def test_nothing_allowed_places_nothing() -> None:
    res = residency(["us-east-1"], policy("eu-west-1"))
    condition = residency_condition(res, pod_regions=None, generation=1)
    assert (condition.status, condition.reason) == ("False", "NoAllowedRegion")
    assert res.allowed == ()


def test_a_policy_of_garbage_allows_nothing() -> None:
    res = residency(["eu-west-1"], policy("EU West!!"))
    assert res.allowed == ()


def test_external_engines_are_judged_by_their_declaration() -> None:
    res = residency(["eu-west-1"], policy("eu-west-1"))
    condition = residency_condition(res, pod_regions=None, generation=1)
    assert (condition.status, condition.reason) == ("True", "Declared")
