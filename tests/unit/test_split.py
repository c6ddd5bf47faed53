"""The interim spot/reserved split: desired replicas and the policy's share of them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.inference import CapacityPolicy, InferenceEndpointSpec
from tidal.placement.split import desired_replicas, explain_split, split_replicas


def make_spec(
    *,
    policy: str = "Auto",
    min_reserved: int = 0,
    max_spot: int = 100,
    min_replicas: int = 1,
    max_replicas: int | None = None,
) -> InferenceEndpointSpec:
    scaling: dict[str, Any] = {"minReplicas": min_replicas}
    if max_replicas is not None:
        scaling["maxReplicas"] = max_replicas
    return InferenceEndpointSpec.model_validate(
        {
            "model": {"name": "m"},
            "residency": {"regions": ["eu-west-1"]},
            "capacity": {
                "policy": policy,
                "minReservedReplicas": min_reserved,
                "maxSpotPercent": max_spot,
            },
            "scaling": scaling,
        }
    )


@pytest.mark.parametrize(
    ("min_replicas", "max_replicas", "expected"),
    [
        (1, None, 1),
        (0, None, 1),  # scale to zero is not implemented yet: at least one replica
        (0, 5, 1),
        (3, None, 3),
        (3, 8, 3),
        (4, 4, 4),
    ],
)
def test_desired_replicas_is_min_replicas_at_least_one_within_max(
    min_replicas: int, max_replicas: int | None, expected: int
) -> None:
    spec = make_spec(min_replicas=min_replicas, max_replicas=max_replicas)
    assert desired_replicas(spec) == expected


@pytest.mark.parametrize(
    ("policy", "min_reserved", "max_spot", "desired", "expected"),
    [
        # ReservedOnly and SpotOnly ignore the percentages.
        ("ReservedOnly", 0, 100, 4, (0, 4)),
        ("ReservedOnly", 2, 50, 1, (0, 1)),
        ("SpotOnly", 0, 100, 4, (4, 0)),
        ("SpotOnly", 0, 10, 3, (3, 0)),
        # SpotPreferred: as much spot as maxSpotPercent allows, rounded down.
        ("SpotPreferred", 0, 100, 4, (4, 0)),
        ("SpotPreferred", 0, 50, 4, (2, 2)),
        ("SpotPreferred", 0, 50, 3, (1, 2)),
        ("SpotPreferred", 0, 70, 3, (2, 1)),
        ("SpotPreferred", 0, 0, 3, (0, 3)),
        ("SpotPreferred", 0, 99, 1, (0, 1)),
        # minReservedReplicas wins over the spot cap.
        ("SpotPreferred", 1, 100, 3, (2, 1)),
        ("SpotPreferred", 2, 100, 3, (1, 2)),
        ("SpotPreferred", 1, 50, 4, (2, 2)),
        # Auto without history behaves as SpotPreferred.
        ("Auto", 0, 100, 2, (2, 0)),
        ("Auto", 1, 100, 2, (1, 1)),
        ("Auto", 0, 60, 5, (3, 2)),
        # Nothing to split.
        ("Auto", 0, 100, 0, (0, 0)),
        ("SpotPreferred", 1, 100, 0, (0, 0)),
    ],
)
def test_split_follows_the_capacity_policy(
    policy: str, min_reserved: int, max_spot: int, desired: int, expected: tuple[int, int]
) -> None:
    spec = make_spec(policy=policy, min_reserved=min_reserved, max_spot=max_spot, max_replicas=10)
    assert split_replicas(spec, desired) == expected


def test_split_rejects_negative_replicas() -> None:
    with pytest.raises(ValueError, match="negative"):
        split_replicas(make_spec(), -1)


policies = st.sampled_from(list(CapacityPolicy))


@st.composite
def specs_and_desired(draw: st.DrawFn) -> tuple[InferenceEndpointSpec, int]:
    policy = draw(policies)
    spot_only = policy is CapacityPolicy.SpotOnly
    max_spot = draw(st.integers(1 if spot_only else 0, 100))
    max_replicas = draw(st.integers(1, 50))
    min_reserved = 0 if spot_only else draw(st.integers(0, max_replicas))
    spec = make_spec(
        policy=policy.value,
        min_reserved=min_reserved,
        max_spot=max_spot,
        max_replicas=max_replicas,
    )
    return spec, draw(st.integers(0, 60))


@given(specs_and_desired())
def test_split_adds_up_and_respects_its_bounds(case: tuple[InferenceEndpointSpec, int]) -> None:
    spec, desired = case
    spot, reserved = split_replicas(spec, desired)
    capacity = spec.capacity

    assert spot >= 0
    assert reserved >= 0
    assert spot + reserved == desired
    if capacity.policy is CapacityPolicy.SpotOnly:
        assert reserved == 0
    else:
        # The spot share never exceeds maxSpotPercent ...
        assert spot * 100 <= capacity.max_spot_percent * desired
        # ... and the reserved floor holds as far as there are replicas to hold it.
        assert reserved >= min(capacity.min_reserved_replicas, desired)
    if capacity.policy is CapacityPolicy.ReservedOnly:
        assert spot == 0


@given(specs_and_desired())
def test_spot_preferred_puts_as_much_on_spot_as_allowed(
    case: tuple[InferenceEndpointSpec, int],
) -> None:
    spec, desired = case
    if spec.capacity.policy in (CapacityPolicy.SpotOnly, CapacityPolicy.ReservedOnly):
        return
    spot, reserved = split_replicas(spec, desired)
    # One more replica on spot would break either the percent cap or the reserved floor.
    more_spot = spot + 1
    assert (
        more_spot > desired
        or more_spot * 100 > spec.capacity.max_spot_percent * desired
        or reserved - 1 < spec.capacity.min_reserved_replicas
    )


@pytest.mark.parametrize(
    ("policy", "min_reserved", "max_spot", "spot", "reserved", "expected"),
    [
        ("ReservedOnly", 0, 100, 0, 2, "0 spot, 2 reserved: policy ReservedOnly"),
        ("SpotOnly", 0, 100, 2, 0, "2 spot, 0 reserved: policy SpotOnly"),
        ("SpotPreferred", 0, 100, 2, 0, "2 spot, 0 reserved: policy SpotPreferred"),
        (
            "SpotPreferred",
            1,
            50,
            1,
            1,
            "1 spot, 1 reserved: policy SpotPreferred (minReservedReplicas=1, maxSpotPercent=50)",
        ),
        (
            "Auto",
            0,
            100,
            1,
            0,
            "1 spot, 0 reserved: policy Auto without GPU utilization history behaves as "
            "SpotPreferred",
        ),
    ],
)
def test_explain_split_names_the_policy_and_its_bounds(
    policy: str, min_reserved: int, max_spot: int, spot: int, reserved: int, expected: str
) -> None:
    spec = make_spec(policy=policy, min_reserved=min_reserved, max_spot=max_spot, max_replicas=4)
    assert explain_split(spec, spot, reserved) == expected
