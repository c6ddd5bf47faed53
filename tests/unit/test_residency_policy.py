"""A Namespace's `tidal.dev/allowed-regions`: read strictly, failing safe, saying what is wrong."""

from __future__ import annotations

import pytest

from tidal.api.labels import ALLOWED_REGIONS
from tidal.residency.policy import (
    NamespacePolicy,
    namespace_policy,
    parse,
)


def test_no_annotation_is_no_policy() -> None:
    assert namespace_policy(None) == NamespacePolicy(regions=None)
    assert namespace_policy({"other": "x"}).regions is None
    assert namespace_policy({}).error is None


@pytest.mark.parametrize(
    ("value", "regions"),
    [
        ("eu-west-1", {"eu-west-1"}),
        ("eu-west-1,eu-central-1", {"eu-west-1", "eu-central-1"}),
        (" eu-west-1 , eu-central-1 ", {"eu-west-1", "eu-central-1"}),
        ("eu-west-1,,eu-central-1,", {"eu-west-1", "eu-central-1"}),
        ("eu-west-1,eu-west-1", {"eu-west-1"}),
    ],
)
def test_comma_separated_regions_with_formatting_slack(value: str, regions: set[str]) -> None:
    policy = namespace_policy({ALLOWED_REGIONS: value})
    assert policy.regions == frozenset(regions)
    assert policy.error is None


@pytest.mark.parametrize("value", ["", " ", ",", " , "])
def test_a_policy_listing_no_region_allows_none(value: str) -> None:
    policy = parse(value)
    assert policy.regions == frozenset()
    assert policy.error is None


@pytest.mark.parametrize(
    ("value", "kept", "ignored"),
    [
        ("EU-West-1", set(), ["EU-West-1"]),
        ("eu-west-1;us-east-1", set(), ["eu-west-1;us-east-1"]),
        ("eu-west-1, eu_central_1", {"eu-west-1"}, ["eu_central_1"]),
        ("eu-west-1,*", {"eu-west-1"}, ["*"]),
        ("-eu", set(), ["-eu"]),
        ("a" * 64, set(), ["a" * 64]),
    ],
)
def test_entries_that_are_not_regions_are_ignored_and_named(
    value: str, kept: set[str], ignored: list[str]
) -> None:
    policy = parse(value)
    assert policy.regions == frozenset(kept)
    assert policy.invalid == tuple(ignored)
    assert policy.error is not None
    assert ALLOWED_REGIONS in policy.error
    for entry in ignored:
        assert repr(entry) in policy.error
    assert "eu-west-1,eu-central-1" in policy.error  # says what a valid value looks like


def test_ignoring_a_bad_entry_never_widens_the_policy() -> None:
    # Whatever garbage is added, the allowed set only shrinks or stays.
    good = parse("eu-west-1,us-east-1").regions
    for extra in ("*", "ALL", "", "eu-west-1 us-east-1", "eu-central-1!"):
        regions = parse(f"eu-west-1,us-east-1,{extra}").regions
        assert regions is not None
        assert good is not None
        assert regions <= good
