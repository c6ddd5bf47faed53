"""Events derived from (before, after): posted once per change, not once per reconcile."""

from __future__ import annotations

from typing import Any

import pytest

from tidal.api.common import Event
from tidal.render.events import (
    apply_events,
    budget_events,
    lost_nodes_event,
    residency_event,
    spot_events,
    status_events,
)


def dep(name: str, replicas: int) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": name}, "spec": {"replicas": replicas}}


SERVICE = {"kind": "Service", "metadata": {"name": "chat"}, "spec": {"ports": []}}


def ready(status: str, reason: str, message: str = "m", generation: int = 1) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def test_creating_children_posts_one_event_each() -> None:
    assert apply_events([], [dep("chat-spot", 2), dep("chat-reserved", 0), SERVICE]) == [
        Event("Normal", "CreatedDeployment", "Created Deployment chat-spot with 2 replicas"),
        Event("Normal", "CreatedDeployment", "Created Deployment chat-reserved with 0 replicas"),
        Event("Normal", "CreatedService", "Created Service chat"),
    ]


def test_scaling_posts_from_and_to() -> None:
    existing = [dep("chat-spot", 1), dep("chat-reserved", 1), SERVICE]
    rendered = [dep("chat-spot", 3), dep("chat-reserved", 1), SERVICE]
    assert apply_events(existing, rendered) == [
        Event("Normal", "ScaledDeployment", "Scaled Deployment chat-spot from 1 to 3 replicas")
    ]


def test_an_unchanged_reapply_posts_nothing() -> None:
    children = [dep("chat-spot", 1), dep("chat-reserved", 1), SERVICE]
    assert apply_events(children, children) == []
    assert (
        status_events(
            {"conditions": [ready("True", "ReplicasReady")]},
            {"conditions": [ready("True", "ReplicasReady", message="other counts")]},
        )
        == []
    )


def test_becoming_ready_and_losing_readiness() -> None:
    not_ready = {"conditions": [ready("False", "ReplicasNotReady", "0/1")]}
    is_ready = {"conditions": [ready("True", "ReplicasReady", "1/1")]}
    assert status_events(not_ready, is_ready) == [Event("Normal", "Ready", "1/1")]
    assert status_events(is_ready, not_ready) == [Event("Warning", "NotReady", "0/1")]


def test_rolling_out_a_new_spec_is_not_a_loss_of_readiness() -> None:
    is_ready = {"conditions": [ready("True", "ReplicasReady", "1/1", generation=1)]}
    rolling = {"conditions": [ready("False", "ReplicasNotReady", "0/3", generation=2)]}
    assert status_events(is_ready, rolling) == []


def test_starting_up_is_not_news() -> None:
    assert status_events(None, {"conditions": [ready("False", "ReplicasNotReady")]}) == []
    generation_2 = {"conditions": [ready("False", "ReplicasNotReady", generation=2)]}
    assert status_events({"conditions": [ready("False", "ReplicasNotReady")]}, generation_2) == []


def test_invalid_spec_warns_once_per_generation() -> None:
    invalid = {"conditions": [ready("False", "InvalidSpec", "spec.x: bad")]}
    assert status_events({}, invalid) == [Event("Warning", "InvalidSpec", "spec.x: bad")]
    assert status_events(invalid, invalid) == []
    edited = {"conditions": [ready("False", "InvalidSpec", "spec.y: bad", generation=2)]}
    assert status_events(invalid, edited) == [Event("Warning", "InvalidSpec", "spec.y: bad")]


def test_unschedulable_warns_when_it_starts() -> None:
    placed = {"type": "Placed", "status": "False", "reason": "Unschedulable", "message": "no"}
    after = {"conditions": [placed]}
    assert status_events({}, after) == [Event("Warning", "Unschedulable", "no")]
    assert status_events(after, after) == []


def test_placement_change_names_old_and_new_regions() -> None:
    before = {"placement": {"regions": ["eu-west-1"]}}
    after = {"placement": {"regions": ["eu-central-1", "eu-west-1"]}}
    assert status_events(before, after) == [
        Event(
            "Normal",
            "PlacementChanged",
            "Replicas run in eu-central-1, eu-west-1 (was eu-west-1)",
        )
    ]
    assert status_events(after, after) == []
    # Losing every replica is reported through Ready, not as a placement.
    assert status_events(after, {"placement": {"regions": []}}) == []


def test_a_residency_violation_is_a_warning_told_once_not_twice() -> None:
    message = "1 replica outside the allowed regions (eu-west-1): p on n (us-east-1)"
    event = residency_event(message)
    assert event.type == "Warning"
    assert event.reason == "PodsOutsideAllowedRegions"
    assert event.message.startswith(message)
    # Ready turning False for the same reason adds nothing to the residency event.
    before = {"conditions": [ready("True", "ReplicasReady")]}
    after = {"conditions": [ready("False", "PodsOutsideAllowedRegions", message)]}
    assert status_events(before, after) == []


def test_a_refused_placement_warns_with_the_planners_reason() -> None:
    before = {"conditions": [ready("False", "ReplicasNotReady")]}
    after = {"conditions": [ready("False", "NoAllowedRegion", "requested us-east-1")]}
    assert status_events(before, after) == [
        Event("Warning", "NoAllowedRegion", "requested us-east-1")
    ]


def test_losing_spot_names_how_many_replicas_moved_to_reserved() -> None:
    events = spot_events(
        before=(3, 0), after=(0, 3), was_lost=False, lost=True, reason="spot pool holds only 0"
    )
    assert events == [
        Event(
            "Warning",
            "SpotCapacityLost",
            "Spot capacity lost: moved 3 replicas from spot to reserved "
            "(spot 3 -> 0, reserved 0 -> 3): spot pool holds only 0",
        )
    ]


def test_spot_returning_names_how_many_replicas_moved_back() -> None:
    events = spot_events(before=(0, 3), after=(2, 1), was_lost=True, lost=False, reason="r")
    assert events == [
        Event(
            "Normal",
            "SpotCapacityReturned",
            "Spot capacity returned: moved 2 replicas back to spot "
            "(spot 0 -> 2, reserved 3 -> 1): r",
        )
    ]


@pytest.mark.parametrize(
    ("before", "after", "was_lost", "lost"),
    [
        pytest.param(None, (0, 3), False, True, id="first-decision"),
        pytest.param((0, 3), (0, 3), True, True, id="holding-during-hysteresis"),
        pytest.param((3, 0), (3, 0), False, False, id="nothing-moved"),
        pytest.param((2, 0), (3, 0), False, False, id="scaled-up-without-an-episode"),
        pytest.param((3, 0), (2, 0), False, False, id="scaled-down-without-an-episode"),
        pytest.param((0, 3), (1, 2), True, True, id="no-return-while-the-episode-lasts"),
    ],
)
def test_spot_events_only_for_moves_caused_by_loss_or_return(
    before: tuple[int, int] | None, after: tuple[int, int], was_lost: bool, lost: bool
) -> None:
    assert spot_events(before=before, after=after, was_lost=was_lost, lost=lost, reason="r") == []


def test_replicas_on_lost_nodes_are_listed_briefly() -> None:
    pods = [f"p{i} on n (node gone)" for i in range(7)]
    event = lost_nodes_event(pods)
    assert event.type == "Warning"
    assert event.reason == "ReplicasOnLostNodes"
    assert event.message.startswith("Deleting 7 replicas on lost nodes")
    assert "p0 on n (node gone)" in event.message
    assert event.message.endswith("and 2 more")


def budget(status: str, reason: str) -> dict[str, Any]:
    return {
        "conditions": [{"type": "WithinBudget", "status": status, "reason": reason, "message": "m"}]
    }


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (None, budget("True", "NoBudget"), []),
        (None, budget("False", "OverBudget"), [Event("Warning", "OverBudget", "m")]),
        (
            budget("True", "WithinBudget"),
            budget("False", "OverBudget"),
            [Event("Warning", "OverBudget", "m")],
        ),
        (budget("False", "OverBudget"), budget("False", "OverBudget"), []),
        (
            budget("False", "OverBudget"),
            budget("True", "WithinBudget"),
            [Event("Normal", "WithinBudget", "m")],
        ),
        (budget("True", "WithinBudget"), budget("Unknown", "PriceUnknown"), []),
        (budget("Unknown", "PriceUnknown"), budget("True", "WithinBudget"), []),
    ],
)
def test_budget_events_are_posted_on_a_breach_and_on_its_end(
    before: dict[str, Any] | None, after: dict[str, Any], expected: list[Event]
) -> None:
    assert budget_events(before, after) == expected


def test_ready_at_zero_or_waking_is_told_by_the_scaling_events_not_a_ready_event() -> None:
    before = {"conditions": [ready("True", "ReplicasReady")]}
    for reason in ("ScaledToZero", "Waking"):
        after = {"conditions": [ready("True", reason)]}
        assert status_events(before, after) == []
    woke = status_events(
        {"conditions": [ready("True", "Waking")]}, {"conditions": [ready("True", "ReplicasReady")]}
    )
    assert woke == [Event("Normal", "Ready", "m")]
