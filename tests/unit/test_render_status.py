"""Status computed from an observed snapshot of an endpoint's children."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tidal.api.common import Condition
from tidal.api.inference import InferenceEndpoint
from tidal.render.status import (
    Observed,
    failed_status,
    format_time,
    parse_conditions,
    scheduled_nodes,
    summarize,
)

T0 = "2025-01-31T12:00:00Z"
T1 = "2025-01-31T12:05:00Z"


def make_ie() -> InferenceEndpoint:
    return InferenceEndpoint.model_validate(
        {
            "metadata": {"name": "chat", "namespace": "ml", "uid": "u-1", "generation": 3},
            "spec": {
                "model": {"name": "m"},
                "residency": {"regions": ["eu-west-1", "eu-central-1"]},
                "scaling": {"minReplicas": 3},
            },
        }
    )


def deployment(name: str, replicas: int, ready: int | None) -> dict[str, Any]:
    status = {} if ready is None else {"readyReplicas": ready}
    return {"metadata": {"name": name}, "spec": {"replicas": replicas}, "status": status}


def pod(
    node: str | None,
    *,
    ready: bool = True,
    deleting: bool = False,
    phase: str = "Running",
    unschedulable: str | None = None,
) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable is not None:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        )
    metadata: dict[str, Any] = {"name": f"p-{node}"}
    if deleting:
        metadata["deletionTimestamp"] = T0
    return {
        "metadata": metadata,
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "conditions": conditions},
    }


def run(observed: Observed, conditions: list[Condition] | None = None) -> dict[str, Any]:
    return summarize(
        make_ie(),
        desired=3,
        spot=2,
        reserved=1,
        reason="2 spot, 1 reserved: policy Auto",
        observed=observed,
        generation=3,
        conditions=conditions or [],
        now=T1,
    )


def test_all_replicas_ready_gives_the_whole_status() -> None:
    observed = Observed(
        deployments=[deployment("chat-spot", 2, 2), deployment("chat-reserved", 1, 1)],
        pods=[pod("n1"), pod("n2"), pod("n3")],
        node_regions={"n1": "eu-west-1", "n2": "eu-central-1", "n3": "eu-west-1"},
    )
    assert run(observed) == {
        "observedGeneration": 3,
        "replicas": {"desired": 3, "ready": 3, "spot": 2, "reserved": 1},
        "placement": {
            "regions": ["eu-central-1", "eu-west-1"],
            "nodes": ["n1", "n2", "n3"],
            "reason": "2 spot, 1 reserved: policy Auto",
        },
        "url": "http://chat.ml.svc.cluster.local:8000",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "ReplicasReady",
                "message": "3/3 replicas ready (spot 2/2, reserved 1/1)",
                "observedGeneration": 3,
                "lastTransitionTime": T1,
            },
            {
                "type": "Placed",
                "status": "True",
                "reason": "Scheduled",
                "message": "3/3 replicas scheduled in eu-central-1, eu-west-1",
                "observedGeneration": 3,
                "lastTransitionTime": T1,
            },
        ],
    }


def test_ready_counts_only_ready_replicas_of_its_own_deployments() -> None:
    observed = Observed(
        deployments=[
            deployment("chat-spot", 2, 1),
            deployment("chat-reserved", 1, None),
            deployment("other-spot", 5, 5),
        ],
        pods=[pod("n1"), pod("n2", ready=False), pod(None)],
        node_regions={"n1": "eu-west-1", "n2": "eu-west-1"},
    )
    status = run(observed)
    assert status["replicas"]["ready"] == 1
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "ReplicasNotReady")
    assert ready["message"] == "1/3 replicas ready (spot 1/2, reserved 0/1)"
    # Only nodes running ready pods count as placement.
    assert status["placement"]["nodes"] == ["n1"]
    assert status["placement"]["regions"] == ["eu-west-1"]


def test_terminating_and_finished_pods_are_not_replicas() -> None:
    observed = Observed(
        deployments=[deployment("chat-spot", 2, 2), deployment("chat-reserved", 1, 1)],
        pods=[pod("n1"), pod("n2", deleting=True), pod("n3", phase="Succeeded")],
        node_regions={"n1": "eu-west-1", "n2": "eu-central-1", "n3": "eu-central-1"},
    )
    status = run(observed)
    assert status["placement"]["nodes"] == ["n1"]
    assert status["conditions"][1]["reason"] == "Scheduling"
    assert scheduled_nodes(observed.pods) == ["n1"]


def test_unschedulable_replicas_are_reported_with_the_scheduler_message() -> None:
    message = "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector."
    observed = Observed(
        deployments=[deployment("chat-spot", 2, 0), deployment("chat-reserved", 1, 1)],
        pods=[pod("n1"), pod(None, ready=False, unschedulable=message), pod(None, ready=False)],
        node_regions={"n1": "eu-west-1"},
    )
    placed = run(observed)["conditions"][1]
    assert placed["type"] == "Placed"
    assert (placed["status"], placed["reason"]) == ("False", "Unschedulable")
    assert placed["message"] == f"1/3 replicas scheduled; 1 cannot be: {message}"


def test_nodes_without_a_known_region_are_listed_but_add_no_region() -> None:
    observed = Observed(
        deployments=[deployment("chat-spot", 2, 2), deployment("chat-reserved", 1, 1)],
        pods=[pod("n1"), pod("gone")],
        node_regions={"n1": "eu-west-1"},
    )
    placement = run(observed)["placement"]
    assert placement["nodes"] == ["gone", "n1"]
    assert placement["regions"] == ["eu-west-1"]


def test_transition_time_moves_only_when_the_status_flips() -> None:
    previous = [
        Condition(type="SLOMet", status="True", reason="WithinSLO", last_transition_time=T0),
        Condition(type="Ready", status="False", reason="ReplicasNotReady", last_transition_time=T0),
        Condition(type="Placed", status="True", reason="Scheduled", last_transition_time=T0),
    ]
    observed = Observed(
        deployments=[deployment("chat-spot", 2, 2), deployment("chat-reserved", 1, 1)],
        pods=[pod("n1"), pod("n2"), pod("n3")],
    )
    conditions = {c["type"]: c for c in run(observed, previous)["conditions"]}
    # Other decisions' conditions survive untouched, in place.
    assert [c["type"] for c in run(observed, previous)["conditions"]] == [
        "SLOMet",
        "Ready",
        "Placed",
    ]
    assert conditions["SLOMet"]["lastTransitionTime"] == T0
    assert conditions["Ready"]["lastTransitionTime"] == T1
    assert conditions["Placed"]["lastTransitionTime"] == T0


def test_failed_status_touches_only_ready_and_observed_generation() -> None:
    previous = [
        Condition(type="Ready", status="True", reason="ReplicasReady", last_transition_time=T0)
    ]
    assert failed_status(
        reason="InvalidSpec",
        message="spec.scaling: bad",
        generation=4,
        conditions=previous,
        now=T1,
    ) == {
        "observedGeneration": 4,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "InvalidSpec",
                "message": "spec.scaling: bad",
                "observedGeneration": 4,
                "lastTransitionTime": T1,
            }
        ],
    }


def test_parse_conditions_drops_entries_that_do_not_parse() -> None:
    status = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ReplicasReady"},
            {"type": "Broken", "status": "Maybe", "reason": "X"},
            "garbage",
        ]
    }
    assert [c.type for c in parse_conditions(status)] == ["Ready"]
    assert parse_conditions(None) == []
    assert parse_conditions({"conditions": "nope"}) == []


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2025, 1, 31, 12, 0, 0, 999, tzinfo=UTC), "2025-01-31T12:00:00Z"),
        (
            datetime(2025, 1, 31, 13, 0, 0, tzinfo=timezone(timedelta(hours=1))),
            "2025-01-31T12:00:00Z",
        ),
    ],
)
def test_times_are_rfc3339_utc_seconds(moment: datetime, expected: str) -> None:
    assert format_time(moment) == expected


def rolling(
    name: str,
    *,
    generation: int = 2,
    observed: int | None = 2,
    replicas: int = 3,
    updated: int = 3,
    ready: int = 3,
) -> dict[str, Any]:
    status: dict[str, Any] = {"replicas": replicas, "updatedReplicas": updated}
    status["readyReplicas"] = ready
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "metadata": {"name": name, "generation": generation},
        "spec": {"replicas": 3},
        "status": status,
    }


@pytest.mark.parametrize(
    ("reserved", "expected_ready"),
    [
        pytest.param(rolling("chat-reserved"), 3, id="rolled-out"),
        # 3 old pods still ready, 1 new one starting: nothing runs the new spec yet.
        pytest.param(rolling("chat-reserved", replicas=4, updated=1, ready=3), 0, id="surge"),
        pytest.param(rolling("chat-reserved", replicas=4, updated=2, ready=3), 1, id="halfway"),
        # The Deployment controller has not seen the new template: its counts are stale.
        pytest.param(rolling("chat-reserved", observed=1), 0, id="unobserved"),
        pytest.param(rolling("chat-reserved", observed=None), 0, id="just-created"),
    ],
)
def test_ready_counts_only_replicas_on_the_current_template(
    reserved: dict[str, Any], expected_ready: int
) -> None:
    observed = Observed(deployments=[deployment("chat-spot", 0, 0), reserved])
    status = summarize(
        make_ie(),
        desired=3,
        spot=0,
        reserved=3,
        reason="r",
        observed=observed,
        generation=3,
        conditions=[],
        now=T1,
    )
    assert status["replicas"]["ready"] == expected_ready
    assert status["conditions"][0]["status"] == ("True" if expected_ready == 3 else "False")
