"""Status computed from an observed snapshot of an endpoint's children."""

from __future__ import annotations

from typing import Any

import pytest

from tidal.api.common import Condition
from tidal.api.endpoint import (
    EndpointCostStatus,
    EndpointSLOStatus,
    InferenceEndpoint,
    InferenceEndpointStatus,
)
from tidal.render.status import (
    Decision,
    Observed,
    ResidencyReport,
    Scaling,
    ServiceLevels,
    failed_status,
    status_changed,
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


PLACED = Decision(desired=3, spot=2, reserved=1, reason="2 spot, 1 reserved: policy Auto")
COMPLIANT = ResidencyReport(allowed_regions=("eu-central-1", "eu-west-1"))


def run(
    observed: Observed,
    conditions: list[Condition] | None = None,
    *,
    decision: Decision = PLACED,
    residency: ResidencyReport = COMPLIANT,
) -> dict[str, Any]:
    return summarize(
        make_ie(),
        decision=decision,
        residency=residency,
        observed=observed,
        generation=3,
        conditions=conditions or [],
        now=T1,
    ).to_patch()


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


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
                "reason": "Placed",
                "message": "3/3 replicas scheduled: 2 spot, 1 reserved: policy Auto",
                "observedGeneration": 3,
                "lastTransitionTime": T1,
            },
            {
                "type": "ResidencyCompliant",
                "status": "True",
                "reason": "AllReplicasInAllowedRegions",
                "message": "3 scheduled replicas, all in allowed regions (eu-central-1, eu-west-1)",
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
    # Not every replica is bound yet: the message says so after the counts.
    assert ready["message"] == "1/3 replicas ready (spot 1/2, reserved 0/1); 2/3 replicas scheduled"
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
    assert by_type(status)["Placed"]["reason"] == "Scheduling"


def test_unschedulable_replicas_are_reported_with_the_scheduler_message() -> None:
    message = "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector."
    observed = Observed(
        deployments=[deployment("chat-spot", 2, 0), deployment("chat-reserved", 1, 1)],
        pods=[pod("n1"), pod(None, ready=False, unschedulable=message), pod(None, ready=False)],
        node_regions={"n1": "eu-west-1"},
    )
    placed = by_type(run(observed))["Placed"]
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
        Condition(type="Placed", status="True", reason="Placed", last_transition_time=T0),
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
        "ResidencyCompliant",
    ]
    assert conditions["SLOMet"]["lastTransitionTime"] == T0
    assert conditions["Ready"]["lastTransitionTime"] == T1
    assert conditions["Placed"]["lastTransitionTime"] == T0


def test_failed_status_touches_only_ready_and_observed_generation() -> None:
    previous = [
        Condition(type="Ready", status="True", reason="ReplicasReady", last_transition_time=T0)
    ]
    assert failed_status(
        InferenceEndpointStatus,
        reason="InvalidSpec",
        message="spec.scaling: bad",
        generation=4,
        conditions=previous,
        now=T1,
    ).to_patch() == {
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
    observed = Observed(
        deployments=[deployment("chat-spot", 0, 0), reserved],
        pods=[pod("n1"), pod("n2"), pod("n3")],
    )
    status = run(observed, decision=Decision(desired=3, spot=0, reserved=3, reason="r"))
    assert status["replicas"]["ready"] == expected_ready
    assert status["conditions"][0]["status"] == ("True" if expected_ready == 3 else "False")


# --- placement decisions and residency --------------------------------------------------------

ALL_READY = Observed(
    deployments=[deployment("chat-spot", 2, 2), deployment("chat-reserved", 1, 1)],
    pods=[pod("n1"), pod("n2"), pod("n3")],
    node_regions={"n1": "eu-west-1", "n2": "eu-west-1", "n3": "eu-west-1"},
)


@pytest.mark.parametrize(
    "reason",
    ["NoAllowedRegion", "NoFittingGPU", "InsufficientCapacity", "InsufficientSpotCapacity"],
)
def test_a_placement_the_planner_refused_is_not_placed_and_not_ready(reason: str) -> None:
    message = "no region is allowed: requested us-east-1; namespace allows eu-west-1"
    decision = Decision(
        desired=2, spot=0, reserved=0, reason=message, placed=False, placed_reason=reason
    )
    status = run(Observed(), decision=decision)
    conditions = by_type(status)
    assert (conditions["Placed"]["status"], conditions["Placed"]["reason"]) == ("False", reason)
    assert conditions["Placed"]["message"] == message
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", reason)
    assert conditions["Ready"]["message"] == message
    assert status["replicas"] == {"desired": 2, "ready": 0, "spot": 0, "reserved": 0}
    assert status["placement"]["reason"] == message


def test_ready_requires_placed_even_when_the_replicas_are_ready() -> None:
    decision = Decision(
        desired=3,
        spot=2,
        reserved=1,
        reason="reserved pool holds 0 of 1",
        placed=False,
        placed_reason="InsufficientCapacity",
    )
    assert by_type(run(ALL_READY, decision=decision))["Ready"]["status"] == "False"


def test_replicas_outside_the_allowed_regions_are_not_compliant_and_not_ready() -> None:
    violation = "1 replica outside the allowed regions (eu-west-1): p-n9 on n9 (us-east-1)"
    residency = ResidencyReport(allowed_regions=("eu-west-1",), violation=violation)

    conditions = by_type(run(ALL_READY, residency=residency))

    compliant = conditions["ResidencyCompliant"]
    assert (compliant["status"], compliant["reason"]) == ("False", "PodsOutsideAllowedRegions")
    assert compliant["message"].startswith(violation)
    assert "replace them in eu-west-1" in compliant["message"]
    ready = conditions["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "PodsOutsideAllowedRegions")
    assert ready["message"] == compliant["message"]
    assert conditions["Placed"]["status"] == "True"


def test_regions_a_policy_removed_are_named_but_do_not_break_compliance() -> None:
    residency = ResidencyReport(allowed_regions=("eu-west-1",), excluded_regions=("us-east-1",))
    compliant = by_type(run(ALL_READY, residency=residency))["ResidencyCompliant"]
    assert compliant["status"] == "True"
    assert compliant["reason"] == "AllReplicasInAllowedRegions"
    assert "us-east-1 not allowed by policy" in compliant["message"]


def test_an_empty_reason_leaves_placement_reason_unset() -> None:
    decision = Decision(desired=3, spot=2, reserved=1, reason="")
    assert "reason" not in run(ALL_READY, decision=decision)["placement"]


def test_deployments_counting_a_replica_whose_pod_is_gone_do_not_make_it_ready() -> None:
    # Both Deployments still count 3 ready, but one pod was just deleted (its node vanished).
    observed = Observed(
        deployments=[deployment("chat-spot", 2, 2), deployment("chat-reserved", 1, 1)],
        pods=[pod("n1"), pod("n2")],
        node_regions={"n1": "eu-west-1", "n2": "eu-west-1"},
    )
    ready = by_type(run(observed))["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ReplicasNotReady")
    assert ready["message"].endswith("; 2/3 replicas scheduled")


def current(name: str, replicas: int, template: str = "new") -> dict[str, Any]:
    """A Deployment as Tidal renders it: its template hash annotated, its status lagging."""
    return {
        "metadata": {
            "name": name,
            "generation": 5,
            "annotations": {"tidal.dev/template-hash": template},
        },
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 4, "readyReplicas": 9},
    }


def on_template(node: str, capacity: str, template: str, ready: bool = True) -> dict[str, Any]:
    obj = pod(node, ready=ready)
    obj["metadata"]["labels"] = {"tidal.dev/capacity-type": capacity}
    obj["metadata"]["annotations"] = {"tidal.dev/template-hash": template}
    return obj


def test_ready_counts_the_pods_on_the_current_template_without_waiting_for_the_deployment() -> None:
    observed = Observed(
        deployments=[current("chat-spot", 2), current("chat-reserved", 1)],
        pods=[
            on_template("n1", "spot", "new"),
            on_template("n2", "spot", "old"),  # a previous template, still running
            on_template("n3", "spot", "new", ready=False),
            on_template("n4", "reserved", "new"),
        ],
    )
    status = run(observed)
    assert status["replicas"]["ready"] == 2
    assert by_type(status)["Ready"]["message"].startswith(
        "2/3 replicas ready (spot 1/2, reserved 1/1)"
    )


def test_a_scaled_deployment_keeps_counting_its_ready_pods() -> None:
    # Scaling changes the Deployment's generation but not its template: nothing to wait for.
    observed = Observed(
        deployments=[current("chat-spot", 2), current("chat-reserved", 1)],
        pods=[on_template(n, "spot", "new") for n in ("n1", "n2")]
        + [on_template("n3", "reserved", "new")],
    )
    ready = by_type(run(observed))["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "ReplicasReady")


# --- service levels and cost ---------------------------------------------------------------------


def levels(*, measured: bool) -> ServiceLevels:
    budget = Condition(
        type="WithinBudget",
        status="False",
        reason="OverBudget",
        message="$15.15/h is above the $5/h budget",
        observed_generation=3,
    )
    cost = EndpointCostStatus(hourly_usd="15.15", spot_savings_percent=33, basis="2x H100 ...")
    if not measured:
        return ServiceLevels(cost=cost, within_budget=budget)
    slo = EndpointSLOStatus(p95_latency_ms=1464, window_seconds=300, evaluated_time=T0)
    met = Condition(
        type="SLOMet", status="True", reason="WithinTargets", message="ok", observed_generation=3
    )
    return ServiceLevels(cost=cost, within_budget=budget, slo=slo, slo_met=met)


def test_cost_and_slo_blocks_are_written_whole_with_unknowns_as_null() -> None:
    observed = Observed(deployments=[deployment("chat-spot", 3, 3)], pods=[pod("n1")])
    status = summarize(
        make_ie(),
        decision=PLACED,
        residency=COMPLIANT,
        observed=observed,
        generation=3,
        conditions=[],
        now=T1,
        levels=levels(measured=True),
    ).to_patch()

    assert status["cost"] == {
        "hourlyUSD": "15.15",
        "perMillionTokensUSD": None,
        "spotSavingsPercent": 33,
        "basis": "2x H100 ...",
    }
    assert status["slo"] == {
        "p95LatencyMs": 1464,
        "p95TimeToFirstTokenMs": None,
        "tokensPerSecond": None,
        "windowSeconds": 300,
        "evaluatedTime": T0,
    }
    conditions = by_type(status)
    assert conditions["WithinBudget"]["status"] == "False"
    assert conditions["WithinBudget"]["lastTransitionTime"] == T1
    assert conditions["SLOMet"]["reason"] == "WithinTargets"


def test_before_the_first_measurement_neither_slo_nor_slo_met_is_written() -> None:
    kept = Condition(type="SLOMet", status="False", reason="LatencyAboveTarget", message="m")
    status = summarize(
        make_ie(),
        decision=PLACED,
        residency=COMPLIANT,
        observed=Observed(),
        generation=3,
        conditions=[kept],
        now=T1,
        levels=levels(measured=False),
    ).to_patch()

    assert "slo" not in status
    assert "cost" in status
    # A condition another writer set survives untouched.
    assert by_type(status)["SLOMet"]["reason"] == "LatencyAboveTarget"


# --- scale to zero -------------------------------------------------------------------------------


def scaling(status: str, reason: str, *, floor: int = 1, **times: Any) -> Scaling:
    condition = Condition(
        type="ScaledToZero", status=status, reason=reason, message="No requests for 300s"
    )
    return Scaling(condition=condition, floor=floor, **times)


def scaled_run(decision: Decision, observed: Observed, report: Scaling) -> dict[str, Any]:
    return summarize(
        make_ie(),
        decision=decision,
        residency=COMPLIANT,
        observed=observed,
        generation=3,
        conditions=[],
        now=T1,
        scaling=report,
    ).to_patch()


def test_scaled_to_zero_is_ready_because_the_gateway_wakes_it() -> None:
    zero = Decision(desired=0, spot=0, reserved=0, reason="scaled to zero")
    status = scaled_run(
        zero, Observed(), scaling("True", "Idle", scaled_to_zero_time="2025-01-31T12:04:00.000Z")
    )

    ready = by_type(status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "ScaledToZero")
    assert by_type(status)["ScaledToZero"]["status"] == "True"
    assert status["scaledToZeroTime"] == "2025-01-31T12:04:00.000Z"
    assert "lastColdStartSeconds" not in status  # unknown here: left as it is


def test_waking_is_ready_while_the_gateway_holds_requests() -> None:
    one = Decision(desired=1, spot=1, reserved=0, reason="waking")
    status = scaled_run(one, Observed(), scaling("False", "Waking"))
    ready = by_type(status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "Waking")


def test_replicas_added_for_load_do_not_make_it_not_ready_while_they_start() -> None:
    three = Decision(desired=3, spot=3, reserved=0, reason="load")
    observed = Observed(deployments=[deployment("chat-spot", 3, 1)], pods=[pod("n1")])
    status = scaled_run(three, observed, scaling("False", "Active", last_cold_start_seconds=4.2))

    ready = by_type(status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "ReplicasReady")
    assert "2 more starting for load" in ready["message"]
    assert status["lastColdStartSeconds"] == 4.2


def test_unknown_status_values_compare_as_absent_so_nothing_is_patched_twice() -> None:
    written = {"cost": {"hourlyUSD": "1.00", "perMillionTokensUSD": None}, "n": [{"a": None}]}
    stored = {"cost": {"hourlyUSD": "1.00"}, "n": [{}], "other": 1}
    assert not status_changed(stored, written)
    assert status_changed(stored, {"cost": {"hourlyUSD": "2.00"}})
    assert status_changed(None, written)
