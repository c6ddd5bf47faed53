"""A collection's measured SLO: recall@k and p95 from a probe, SLOMet's reasons, and its Events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.collection import CollectionSLOSpec, CollectionSLOStatus
from tidal.api.common import SLO_MET, Condition
from tidal.slo import (
    COLLECTION_LATENCY_ABOVE_TARGET,
    COLLECTION_NO_DATA,
    MET,
    NOT_REQUESTED,
    RECALL_BELOW_TARGET,
    ProbeQuery,
    RecallProbe,
    collection_condition,
    collection_transition_event,
    measured_status,
    percentile,
    recall_percent,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def query(indexed: list[int], exact: list[int], seconds: float = 0.002) -> ProbeQuery:
    return ProbeQuery(point=0, indexed=tuple(indexed), exact=tuple(exact), seconds=seconds)


@pytest.mark.parametrize(
    ("queries", "expected"),
    [
        ([query([1, 2, 3], [1, 2, 3])], 100.0),
        ([query([3, 2, 1], [1, 2, 3])], 100.0),  # order within the top k does not matter
        ([query([1, 9, 8], [1, 2, 3])], 100 / 3),
        ([query([7, 8, 9], [1, 2, 3])], 0.0),
        ([query([1, 2, 3], [1, 2, 3]), query([1, 9, 9], [1, 2, 3])], (1 + 1 / 3) / 2 * 100),
        # fewer exact neighbours than k (a tiny collection): the share of those found
        ([query([1, 2], [1, 2])], 100.0),
        ([query([1], [1, 2])], 50.0),
        # a query without an exact answer is left out, not counted as a miss
        ([query([], []), query([1, 2, 3], [1, 2, 3])], 100.0),
        ([query([], [])], None),
        ([], None),
    ],
)
def test_recall_is_the_mean_share_of_the_exact_top_k_found(
    queries: list[ProbeQuery], expected: float | None
) -> None:
    found = recall_percent(RecallProbe(k=3, queries=tuple(queries), method="test"))
    assert found == (None if expected is None else pytest.approx(expected))


def test_recall_looks_only_at_the_top_k_of_each_answer() -> None:
    probe = RecallProbe(k=2, queries=(query([1, 9, 2], [1, 2, 3]),), method="test")
    assert recall_percent(probe) == 50.0


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 95, 5.0),
        ([1.0, 2.0], 50, 1.5),
        ([float(v) for v in range(1, 21)], 95, 19.05),
        ([3.0, 1.0, 2.0], 100, 3.0),
        ([3.0, 1.0, 2.0], 0, 1.0),
        ([], 95, None),
    ],
)
def test_percentile_interpolates_between_the_closest_ranks(
    values: list[float], q: float, expected: float | None
) -> None:
    assert percentile(values, q) == (None if expected is None else pytest.approx(expected))


@given(st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=50))
def test_a_p95_lies_between_the_fastest_and_the_slowest(values: list[float]) -> None:
    p95 = percentile(values, 95)
    assert p95 is not None
    assert min(values) <= p95 <= max(values)


def test_a_probe_becomes_status_slo_rounded_as_reported() -> None:
    probe = RecallProbe(
        k=3,
        queries=(
            query([1, 2, 3], [1, 2, 3], 0.0011),
            query([1, 9, 9], [1, 2, 3], 0.0042),
            query([1, 2, 9], [1, 2, 3], 0.0023),
        ),
        method="Qdrant HNSW",
    )
    assert measured_status(probe, NOW) == CollectionSLOStatus(
        recall_at10_percent=66.7,
        p95_latency_ms=4.0,
        sample_size=3,
        evaluated_time="2026-12-01T12:00:00Z",
    )


BOTH = CollectionSLOSpec(min_recall_percent=95, p95_latency_ms=20)


def measured(recall: float | None = 97.5, latency: float | None = 4.2) -> CollectionSLOStatus:
    return CollectionSLOStatus(recall_at10_percent=recall, p95_latency_ms=latency, sample_size=32)


@pytest.mark.parametrize(
    ("slo", "status", "expected"),
    [
        (None, measured(), ("True", NOT_REQUESTED)),
        (CollectionSLOSpec(), measured(), ("True", NOT_REQUESTED)),
        (BOTH, measured(), ("True", MET)),
        (BOTH, measured(recall=95.0), ("True", MET)),  # the target itself is met
        (BOTH, measured(recall=94.9), ("False", RECALL_BELOW_TARGET)),
        (BOTH, measured(latency=20.0), ("True", MET)),
        (BOTH, measured(latency=20.1), ("False", COLLECTION_LATENCY_ABOVE_TARGET)),
        # both missed: recall first, both in the message
        (BOTH, measured(recall=50, latency=99), ("False", RECALL_BELOW_TARGET)),
        # a miss outweighs a missing value; missing alone is no pass
        (BOTH, measured(recall=50, latency=None), ("False", RECALL_BELOW_TARGET)),
        (BOTH, measured(recall=None), ("Unknown", COLLECTION_NO_DATA)),
        (BOTH, None, ("Unknown", COLLECTION_NO_DATA)),
        # only the targets set are judged
        (CollectionSLOSpec(min_recall_percent=90), measured(latency=999), ("True", MET)),
        (CollectionSLOSpec(p95_latency_ms=5), measured(recall=1), ("True", MET)),
        (CollectionSLOSpec(p95_latency_ms=5), measured(latency=None), ("Unknown", "NoData")),
    ],
)
def test_slo_met_reasons(
    slo: CollectionSLOSpec | None, status: CollectionSLOStatus | None, expected: tuple[str, str]
) -> None:
    condition = collection_condition(slo, status, basis="32 stored vectors", generation=3)
    assert (condition.status, condition.reason) == expected
    assert condition.type == SLO_MET
    assert condition.observed_generation == 3


def test_the_message_states_every_miss_with_its_numbers_and_the_basis() -> None:
    condition = collection_condition(
        BOTH, measured(recall=61.3, latency=25.5), basis="32 stored vectors queried"
    )
    assert condition.message == (
        "recall@10 61.3 % is below the 95 % target; p95 latency 25.5 ms is above the 20 ms "
        "target (32 stored vectors queried)"
    )


def test_no_data_says_why() -> None:
    condition = collection_condition(BOTH, None, basis="the collection is hibernated")
    assert condition.message.endswith(": the collection is hibernated")


def slo_met(status: str, reason: str, message: str = "m") -> Condition:
    return Condition(type=SLO_MET, status=status, reason=reason, message=message)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, slo_met("True", NOT_REQUESTED), None),
        (None, slo_met("Unknown", COLLECTION_NO_DATA), None),
        (None, slo_met("True", MET), ("Normal", "SLOMet")),
        (None, slo_met("False", RECALL_BELOW_TARGET), ("Warning", "SLOMissed")),
        (slo_met("True", MET), slo_met("True", MET, "other numbers"), None),
        (slo_met("True", MET), slo_met("False", RECALL_BELOW_TARGET), ("Warning", "SLOMissed")),
        (
            slo_met("False", RECALL_BELOW_TARGET),
            slo_met("False", COLLECTION_LATENCY_ABOVE_TARGET),
            ("Warning", "SLOMissed"),
        ),
        (slo_met("False", RECALL_BELOW_TARGET), slo_met("True", MET), ("Normal", "SLOMet")),
        (slo_met("True", MET), slo_met("Unknown", COLLECTION_NO_DATA), ("Normal", "SLOUnknown")),
        (
            slo_met("True", NOT_REQUESTED),
            slo_met("Unknown", COLLECTION_NO_DATA),
            None,  # targets just set, nothing measured yet
        ),
        (slo_met("True", NOT_REQUESTED), slo_met("True", MET), ("Normal", "SLOMet")),
    ],
)
def test_events_on_transitions_only(
    old: Condition | None, new: Condition, expected: tuple[str, str] | None
) -> None:
    event = collection_transition_event(old, new)
    assert (None if event is None else (event.type, event.reason)) == expected
