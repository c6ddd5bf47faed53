"""The interruption benchmark's own rules: how seconds below desired come out of a sampled
timeline, the targets, when a request counts as failed, which nodes count as taken,
and what a trial's watch records. Timing is not tested (a benchmark's numbers are reported, not
asserted)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bench.interruption import (
    Nodes,
    Watch,
    bound_seconds,
    failure,
    plan,
    seconds_below,
    taken_nodes,
)

from tidal.api.labels import SIMULATED_TERMINATION_TIME


@pytest.mark.parametrize(
    ("samples", "start", "end", "expected"),
    [
        # Never below: nothing counted.
        ([(0.0, 2), (1.0, 2), (2.0, 2)], 0.0, 3.0, 0.0),
        # One sample below holds until the next.
        ([(0.0, 2), (1.0, 1), (1.5, 2)], 0.0, 3.0, 0.5),
        # The last sample holds until the end of the window.
        ([(0.0, 2), (1.0, 1)], 0.0, 4.0, 3.0),
        # A sample before the window holds into it, clipped at its start.
        ([(0.0, 1), (2.0, 2)], 1.0, 3.0, 1.0),
        # Samples after the window's end are not counted.
        ([(0.0, 2), (5.0, 0)], 0.0, 4.0, 0.0),
        # Zero counts as below too, and separate dips add up.
        ([(0.0, 0), (1.0, 2), (2.0, 1), (2.5, 2)], 0.0, 3.0, 1.5),
        # No sample before the window's start: its first part is not counted.
        ([(2.0, 1)], 0.0, 3.0, 1.0),
        ([], 0.0, 3.0, 0.0),
    ],
)
def test_seconds_below_desired_sum_the_sampled_intervals_inside_the_window(
    samples: list[tuple[float, int]], start: float, end: float, expected: float
) -> None:
    assert seconds_below(samples, 2, start, end) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("notice", "startup", "bound"),
    [(120.0, 60.0, 0.0), (60.0, 60.0, 0.0), (30.0, 60.0, 35.0), (0.0, 60.0, 65.0)],
)
def test_the_bound_is_zero_when_the_notice_covers_the_startup_else_the_gap_plus_five_seconds(
    notice: float, startup: float, bound: float
) -> None:
    assert bound_seconds(notice, startup) == bound


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'data: {"choices": []}\n\ndata: [DONE]\n\n', None),
        (200, b'data: {"choices": []}\n\n', "stream cut"),
        (502, b'{"error": {}}', "HTTP 502"),
        (503, b"data: [DONE]\n\n", "HTTP 503"),
    ],
)
def test_a_request_fails_on_any_status_but_200_or_a_stream_without_its_end(
    status: int, body: bytes, expected: str | None
) -> None:
    assert failure(status, body) == expected


def _node(name: str, termination: datetime | None = None) -> dict[str, Any]:
    annotations = (
        {SIMULATED_TERMINATION_TIME: termination.strftime("%Y-%m-%dT%H:%M:%SZ")}
        if termination
        else {}
    )
    return {"metadata": {"name": name, "annotations": annotations}}


def test_a_node_is_taken_once_its_termination_time_has_passed() -> None:
    at = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    nodes = [_node("calm"), _node("noticed", at)]
    assert taken_nodes(nodes, at.timestamp() - 1) == set()
    assert taken_nodes(nodes, at.timestamp()) == {"noticed"}


def test_a_node_is_noticed_by_its_disrupted_taint_and_up_until_taken_or_gone() -> None:
    at = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    tainted = _node("noticed", at)
    tainted["spec"] = {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}
    nodes = Nodes.of([_node("calm"), tainted], at.timestamp())
    assert nodes.noticed == {"noticed"}
    assert (nodes.up("calm"), nodes.up("noticed"), nodes.up("gone")) == (True, False, False)


def _nodes(
    present: set[str], taken: frozenset[str] = frozenset(), noticed: frozenset[str] = frozenset()
) -> Nodes:
    return Nodes(frozenset(present), taken, noticed)


def _pod(
    uid: str, node: str, *, ready: bool, deleting: bool = False, phase: str = "Running"
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"pod-{uid}", "uid": uid}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    return {
        "metadata": metadata,
        "spec": {"nodeName": node},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_a_watch_counts_serving_replicas_apart_from_the_api_view_and_marks_the_handover() -> None:
    watch = Watch(
        name="ep",
        model="ns/ep",
        victim="n1",
        leaving="a",
        initial=frozenset({"a", "b"}),
    )
    up = {"n1", "n2", "n3"}
    noticed = frozenset({"n1"})
    a, b = _pod("a", "n1", ready=True), _pod("b", "n2", ready=True)
    # Before the interruption: sampled, nothing marked.
    watch.observe(0.0, [a, b], _nodes(up))
    watch.started = 0.5
    # The node is tainted; the replacement exists, not yet bound.
    watch.observe(
        0.7, [a, b, _pod("c", "", ready=False, phase="Pending")], _nodes(up, noticed=noticed)
    )
    # The replacement runs, loading; the leaving node is taken but its pod is still Ready.
    watch.observe(1.0, [a, b, _pod("c", "n3", ready=False)], _nodes(up, noticed, noticed))
    # The replacement is Ready; the leaving pod is being deleted.
    leaving = _pod("a", "n1", ready=True, deleting=True)
    watch.observe(2.0, [leaving, b, _pod("c", "n3", ready=True)], _nodes(up, noticed, noticed))
    settled_before = watch.settled
    assert settled_before is None  # its node is still there
    watch.observe(3.0, [b, _pod("c", "n3", ready=True)], _nodes({"n2", "n3"}))
    assert watch.samples == [(0.0, 2, 2), (0.7, 2, 2), (1.0, 2, 1), (2.0, 2, 2), (3.0, 2, 2)]
    assert (watch.noticed, watch.replacement_created, watch.replacement_bound) == (0.7, 0.7, 1.0)
    assert (watch.replacement_running, watch.replacement_ready) == (1.0, 2.0)
    assert (watch.leaving_gone, watch.node_gone, watch.settled) == (2.0, 3.0, 3.0)


def test_rounds_alternate_the_notices_and_the_last_round_takes_the_remainder() -> None:
    assert plan([120.0, 30.0], 25, 10) == [
        (0, 120.0, 10),
        (0, 30.0, 10),
        (1, 120.0, 10),
        (1, 30.0, 10),
        (2, 120.0, 5),
        (2, 30.0, 5),
    ]
