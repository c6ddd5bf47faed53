"""The interim replica count: minReplicas, at least one, within maxReplicas."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.endpoint import InferenceEndpointSpec
from tidal.scaling.replicas import desired_replicas


def make_spec(min_replicas: int, max_replicas: int | None) -> InferenceEndpointSpec:
    scaling: dict[str, Any] = {"minReplicas": min_replicas}
    if max_replicas is not None:
        scaling["maxReplicas"] = max_replicas
    return InferenceEndpointSpec.model_validate(
        {"model": {"name": "m"}, "residency": {"regions": ["eu-west-1"]}, "scaling": scaling}
    )


@pytest.mark.parametrize(
    ("min_replicas", "max_replicas", "expected"),
    [
        (1, None, 1),
        (0, None, 1),  # scale to zero needs the gateway; until then one replica stays
        (0, 3, 1),
        (3, None, 3),
        (3, 5, 3),
        (4, 4, 4),
    ],
)
def test_desired_replicas_is_min_replicas_at_least_one_within_max(
    min_replicas: int, max_replicas: int | None, expected: int
) -> None:
    assert desired_replicas(make_spec(min_replicas, max_replicas)) == expected


@given(st.integers(0, 50), st.integers(1, 50))
def test_desired_replicas_stays_within_its_bounds(min_replicas: int, max_replicas: int) -> None:
    max_replicas = max(min_replicas, max_replicas)
    desired = desired_replicas(make_spec(min_replicas, max_replicas))
    assert 1 <= desired <= max_replicas
    assert desired >= min_replicas
