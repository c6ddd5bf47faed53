"""Which replicas run outside their allowed regions, and how that is said."""

from __future__ import annotations

from typing import Any

from tidal.residency.checks import Violation, describe, violations

NODES: dict[str, str | None] = {
    "eu-1": "eu-west-1",
    "eu-2": "eu-west-1",
    "us-1": "us-east-1",
    "bare": None,
}


def pod(
    name: str, node: str | None, *, deleting: bool = False, phase: str = "Running"
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if deleting:
        metadata["deletionTimestamp"] = "2025-01-31T12:00:00Z"
    return {
        "metadata": metadata,
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase},
    }


def test_pods_in_allowed_regions_are_compliant() -> None:
    pods = [pod("a", "eu-1"), pod("b", "eu-2")]
    assert violations(pods, NODES, {"eu-west-1"}) == ()


def test_a_pod_on_a_node_in_another_region_violates() -> None:
    pods = [pod("b", "us-1"), pod("a", "eu-1")]
    assert violations(pods, NODES, {"eu-west-1"}) == (
        Violation(pod="b", uid="uid-b", node="us-1", region="us-east-1"),
    )


def test_an_unlabelled_node_proves_nothing_and_violates() -> None:
    (found,) = violations([pod("a", "bare")], NODES, {"eu-west-1"})
    assert found.region is None
    assert str(found) == "a on bare (no region label)"


def test_a_node_tidal_cannot_see_is_no_violation() -> None:
    # A vanished spot node is a capacity problem, not a compliance breach.
    assert violations([pod("a", "gone")], NODES, {"eu-west-1"}) == ()


def test_pods_leaving_or_not_yet_bound_are_not_replicas_to_check() -> None:
    pods = [
        pod("deleting", "us-1", deleting=True),
        pod("done", "us-1", phase="Succeeded"),
        pod("failed", "us-1", phase="Failed"),
        pod("pending", None),
    ]
    assert violations(pods, NODES, {"eu-west-1"}) == ()


def test_with_no_allowed_region_every_bound_replica_violates() -> None:
    pods = [pod("a", "eu-1"), pod("b", "us-1")]
    assert [v.pod for v in violations(pods, NODES, set())] == ["a", "b"]


def test_the_description_names_pods_nodes_regions_and_the_allowed_set() -> None:
    found = violations([pod("b", "us-1"), pod("a", "bare")], NODES, {"eu-west-1", "eu-central-1"})
    assert describe(found, {"eu-west-1", "eu-central-1"}) == (
        "2 replicas outside the allowed regions (eu-central-1, eu-west-1): "
        "a on bare (no region label), b on us-1 (us-east-1)"
    )


def test_a_long_list_is_cut_short() -> None:
    pods = [pod(f"p{i}", "us-1") for i in range(8)]
    text = describe(violations(pods, NODES, {"eu-west-1"}), ())
    assert text.startswith("8 replicas outside the allowed regions (none): p0 on us-1")
    assert text.endswith("and 3 more")
    assert describe(violations(pods[:1], NODES, {"eu-west-1"}), ["eu-west-1"]).startswith(
        "1 replica outside"
    )
