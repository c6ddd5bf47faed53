"""Placement on the simulated fleet (issue #3): the spot/reserved mix, spot loss and return, data
residency, hot-node avoidance and GPU fit, judged by where pods actually run.

Every assertion reads the state of the world: the pods the scheduler bound, the labels of their
nodes, the endpoint's status and conditions, and the Events in the namespace. Tests that need to
take capacity away do it to nodes of their own in a third region (`EXTRA_REGION`), created for
this module and deleted after it, so the default fleet the other modules rely on never changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.conftest import SPOT_RETURN_AFTER_SECONDS, Operator, wait_for
from tests.e2e.fleet_ops import (
    add_nodes,
    capacity_type,
    delete_nodes,
    extra_nodes,
    extra_region_nodes,
    names,
    region,
    set_simulated_utilization,
    telemetry_utilization,
)
from tests.e2e.kube import Kube, condition
from tidal.api.labels import ALLOWED_REGIONS, NODE_GPU_PRODUCT

H100 = "NVIDIA-H100-80GB-HBM3"
L4 = "NVIDIA-L4"
# A region of the test's own: one reserved and two spot H100x8 nodes.
EXTRA_REGION = "eu-central-1"
# Long enough for a few reconcile intervals (5 s in the e2e operator) to show a decision holds.
HOLD_SECONDS = 12
# What status.placement.reason and the Events say when spot capacity went away.
SPOT_LOSS = re.compile(
    r"spot\b.*\b(lost|loss|reclaim\w*|gone|unavailable|moved to reserved)"
    r"|\b(lost|loss)\b.*\bspot",
    re.IGNORECASE,
)

Node = dict[str, Any]
Pod = dict[str, Any]


@pytest.fixture(scope="module")
def extra_region(kube: Kube, operator: Operator) -> Iterator[list[Node]]:
    with extra_nodes(kube, extra_region_nodes(EXTRA_REGION, reserved=1, spot=2)) as nodes:
        yield nodes


def _endpoint(
    name: str,
    *,
    regions: list[str],
    replicas: int,
    gpu: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", **(model or {})},
            "runtime": {"engine": "VLLM"},
            # H100 unless a test says otherwise: the few L4 GPUs are test (e)'s.
            "gpu": gpu or {"count": 1, "products": [H100]},
            "capacity": {"policy": "SpotPreferred"},
            "residency": {"regions": regions},
            "scaling": {"minReplicas": replicas, "maxReplicas": replicas},
        },
    }


@dataclass
class World:
    """One look at an endpoint: the object, its live pods, and every node."""

    endpoint: dict[str, Any] | None
    pods: list[Pod]
    nodes: dict[str, Node]

    @property
    def status(self) -> dict[str, Any]:
        return dict((self.endpoint or {}).get("status") or {})

    @property
    def current(self) -> bool:
        """Status was written for the endpoint's latest spec."""
        obj = self.endpoint or {}
        generation = (obj.get("metadata") or {}).get("generation")
        return bool(self.status.get("observedGeneration") == generation)

    @property
    def running(self) -> list[tuple[Pod, Node]]:
        """Running pods with the node they are bound to."""
        return [
            (pod, self.nodes[pod["spec"]["nodeName"]])
            for pod in self.pods
            if (pod.get("status") or {}).get("phase") == "Running"
            and pod["spec"].get("nodeName") in self.nodes
        ]

    def condition(self, type_: str) -> dict[str, Any] | None:
        return condition(self.endpoint, type_)


def _observe(kube: Kube, namespace: str, name: str) -> World:
    pods = [
        pod
        for pod in kube.list("pods", namespace, selector=f"tidal.dev/endpoint={name}")
        if not pod["metadata"].get("deletionTimestamp")
    ]
    return World(kube.get("inferenceendpoint", name, namespace), pods, kube.nodes())


def _settled(
    kube: Kube, namespace: str, name: str, replicas: int, on: Callable[[Node], bool]
) -> World | None:
    """The world once the endpoint is Ready at its generation with exactly `replicas` pods, all
    Running on nodes for which `on(node)` holds; else None."""
    return _settled_in(_observe(kube, namespace, name), replicas, on)


def _settled_in(world: World, replicas: int, on: Callable[[Node], bool]) -> World | None:
    ready = world.condition("Ready")
    if not world.current or ready is None or ready["status"] != "True":
        return None
    if (world.status.get("replicas") or {}).get("ready") != replicas:
        return None
    running = world.running
    if len(world.pods) != replicas or len(running) != replicas:
        return None
    return world if all(on(node) for _, node in running) else None


def _name(node: Node) -> str:
    return str(node["metadata"]["name"])


def _spot(node: Node) -> bool:
    return capacity_type(node) == "spot"


def _reserved(node: Node) -> bool:
    return capacity_type(node) == "reserved"


def _in(*regions: str) -> Callable[[Node], bool]:
    return lambda node: region(node) in regions


def _events(
    kube: Kube, namespace: str, name: str | None = None, reason: str | None = None
) -> list[dict[str, Any]]:
    """Events in the namespace; only the endpoint's own when `name` is given, only those with
    `reason` when it is."""
    return [
        e
        for e in kube.list("events", namespace)
        if (
            name is None
            or (
                e["involvedObject"].get("kind") == "InferenceEndpoint"
                and e["involvedObject"].get("name") == name
            )
        )
        and (reason is None or e.get("reason") == reason)
    ]


def _scheduled_to(kube: Kube, namespace: str) -> set[str]:
    """Every node the scheduler ever bound a pod of the namespace to, from its `Scheduled` Events
    ("Successfully assigned ns/pod to node"): pods deleted between two polls are in it too."""
    nodes = set()
    for event in _events(kube, namespace):
        if event.get("reason") == "Scheduled":
            found = re.search(r" to (\S+)$", event.get("message") or "")
            if found:
                nodes.add(found.group(1))
    return nodes


def _now_stamp() -> str:
    """Now as conditions stamp it (RFC3339, UTC, whole seconds): comparable as strings. The
    operator runs on this machine, so its clock is this one."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _never(what: str, check: Callable[[], Any], seconds: float) -> None:
    """Poll `check()` for `seconds`; fail naming `what` if it ever returns something truthy."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = check()
        if seen:
            pytest.fail(f"{what}: {seen!r}")
        time.sleep(0.5)


# --- (a) the policy's mix ----------------------------------------------------------------------


def test_spot_preferred_replicas_run_on_spot_nodes(kube: Kube, namespace: str) -> None:
    kube.apply(_endpoint("spotty", regions=["eu-west-1"], replicas=3), namespace)

    world = wait_for(
        "3 replicas Ready on spot nodes in eu-west-1",
        lambda: _settled(kube, namespace, "spotty", 3, _in("eu-west-1")),
        timeout=120,
    )

    on = {capacity_type(node) for _, node in world.running}
    assert on == {"spot"}, f"SpotPreferred replicas run on {on} capacity"
    assert world.status["replicas"] == {"desired": 3, "ready": 3, "spot": 3, "reserved": 0}
    placed = world.condition("Placed")
    assert placed is not None
    assert placed["status"] == "True"


# --- (b) spot loss and return ------------------------------------------------------------------


def test_losing_spot_moves_replicas_to_reserved_and_back_after_hysteresis(
    kube: Kube, namespace: str, extra_region: list[Node]
) -> None:
    spot_nodes = [n for n in extra_region if _spot(n)]
    kube.apply(_endpoint("resilient", regions=[EXTRA_REGION], replicas=3), namespace)
    world = wait_for(
        f"3 replicas Ready on spot in {EXTRA_REGION}",
        lambda: _settled(kube, namespace, "resilient", 3, _spot),
        timeout=120,
    )
    assert world.status["replicas"]["spot"] == 3

    try:
        delete_nodes(kube, names(spot_nodes))

        world = wait_for(
            f"all 3 replicas Running on reserved in {EXTRA_REGION} after the spot nodes went",
            lambda: _settled(kube, namespace, "resilient", 3, _reserved),
            timeout=180,
        )
        assert all(region(node) == EXTRA_REGION for _, node in world.running)
        assert world.status["replicas"] == {"desired": 3, "ready": 3, "spot": 0, "reserved": 3}
        reason = world.status["placement"]["reason"]
        assert SPOT_LOSS.search(reason), f"placement.reason does not mention spot loss: {reason}"
        loss = wait_for(
            "a SpotCapacityLost Event on the endpoint",
            lambda: _events(kube, namespace, "resilient", reason="SpotCapacityLost"),
            timeout=30,
        )
        assert loss[0]["type"] == "Warning"
        assert SPOT_LOSS.search(loss[0]["message"]), loss[0]["message"]

        returned_at = time.monotonic()
        add_nodes(kube, spot_nodes)
        first_spot: list[float] = []

        def back_on_spot() -> World | None:
            world = _observe(kube, namespace, "resilient")
            if (world.status.get("replicas") or {}).get("spot") and not first_spot:
                first_spot.append(time.monotonic())
            return _settled_in(world, 3, _spot)

        world = wait_for(
            "all 3 replicas back on spot once the hysteresis has passed",
            back_on_spot,
            timeout=SPOT_RETURN_AFTER_SECONDS + 150,
        )
    finally:
        add_nodes(kube, spot_nodes)

    assert world.status["replicas"] == {"desired": 3, "ready": 3, "spot": 3, "reserved": 0}
    waited = first_spot[0] - returned_at
    # The hysteresis runs from the first reconcile that saw spot healthy, which is after the
    # nodes came back; its start is stored to the second, hence the one second of slack.
    assert waited >= SPOT_RETURN_AFTER_SECONDS - 1, (
        f"replicas went back to spot {waited:.1f}s after the spot nodes returned, before the "
        f"{SPOT_RETURN_AFTER_SECONDS}s hysteresis"
    )
    reason = world.status["placement"]["reason"]
    assert not SPOT_LOSS.search(reason), f"placement.reason still reports spot loss: {reason}"
    returned = wait_for(
        "a SpotCapacityReturned Event on the endpoint",
        lambda: _events(kube, namespace, "resilient", reason="SpotCapacityReturned"),
        timeout=30,
    )
    assert "spot" in returned[0]["message"], returned[0]["message"]


# --- (c) residency -----------------------------------------------------------------------------


def test_a_namespace_policy_keeps_every_replica_out_of_a_forbidden_region(
    kube: Kube, namespace: str
) -> None:
    kube.run("annotate", "namespace", namespace, f"{ALLOWED_REGIONS}=eu-west-1")
    kube.apply(_endpoint("resident", regions=["eu-west-1", "us-east-1"], replicas=4), namespace)
    in_forbidden: dict[str, str] = {}

    def settled_outside_us_east() -> World | None:
        world = _observe(kube, namespace, "resident")
        for pod in world.pods:
            node = pod["spec"].get("nodeName")
            if node and region(world.nodes.get(node, {})) == "us-east-1":
                in_forbidden[pod["metadata"]["name"]] = node
        if in_forbidden:
            return world  # stop waiting: the assertion below reports it
        return _settled_in(world, 4, _in("eu-west-1"))

    world = wait_for("4 replicas Ready in eu-west-1", settled_outside_us_east, timeout=120)
    assert not in_forbidden, f"pods bound in the forbidden region us-east-1: {in_forbidden}"

    def forbidden_bindings() -> list[str]:
        nodes = kube.nodes()
        return sorted(
            n for n in _scheduled_to(kube, namespace) if region(nodes.get(n, {})) == "us-east-1"
        )

    # The binding record must hold what runs now, or its silence below would prove nothing.
    assert {_name(node) for _, node in world.running} <= _scheduled_to(kube, namespace)
    _never("a pod was bound in us-east-1", forbidden_bindings, HOLD_SECONDS)
    assert world.status["placement"]["regions"] == ["eu-west-1"]
    compliant = world.condition("ResidencyCompliant")
    assert compliant is not None
    assert compliant["status"] == "True"


def test_tightening_the_policy_moves_running_replicas_into_allowed_regions(
    kube: Kube, namespace: str
) -> None:
    both = ["eu-west-1", "us-east-1"]
    kube.run("annotate", "namespace", namespace, f"{ALLOWED_REGIONS}={','.join(both)}")
    kube.apply(_endpoint("tenant", regions=both, replicas=4), namespace)
    world = wait_for("4 replicas Ready", lambda: _settled(kube, namespace, "tenant", 4, _in(*both)))
    # Forbid a region replicas run in now, so tightening has something to move.
    by_region: dict[str, int] = {}
    for _, node in world.running:
        by_region[str(region(node))] = by_region.get(str(region(node)), 0) + 1
    forbidden = max(sorted(by_region), key=lambda r: by_region[r])
    allowed = next(r for r in both if r != forbidden)

    before = world.condition("ResidencyCompliant")
    assert before is not None
    assert before["status"] == "True"
    tightened = _now_stamp()
    kube.run("annotate", "namespace", namespace, f"{ALLOWED_REGIONS}={allowed}", "--overwrite")
    seen: list[tuple[str, str]] = []

    def moved() -> World | None:
        world = _observe(kube, namespace, "tenant")
        compliant = world.condition("ResidencyCompliant")
        if compliant is not None and (compliant["status"], compliant["reason"]) not in seen:
            seen.append((compliant["status"], compliant["reason"]))
        world_done = _settled_in(world, 4, _in(allowed))
        if world_done is None:
            return None
        final = world_done.condition("ResidencyCompliant")
        return world_done if final is not None and final["status"] == "True" else None

    world = wait_for(f"all 4 replicas Ready in {allowed} only", moved, timeout=180)

    violation = _events(kube, namespace, "tenant", reason="PodsOutsideAllowedRegions")
    assert violation, f"no PodsOutsideAllowedRegions Event (ResidencyCompliant seen: {seen})"
    assert violation[0]["type"] == "Warning"
    assert forbidden in violation[0]["message"], violation[0]["message"]
    # The False spell lasts until the replacements run, a few seconds on KWOK; a poll may miss
    # it, but never the condition having changed since the policy was tightened.
    went_false = ("False", "PodsOutsideAllowedRegions") in seen
    compliant = world.condition("ResidencyCompliant")
    assert compliant is not None
    assert went_false or compliant["lastTransitionTime"] >= tightened, (
        f"ResidencyCompliant never went False (seen {seen}, now {compliant})"
    )
    assert all(region(node) == allowed for _, node in world.running)
    assert world.status["placement"]["regions"] == [allowed]


def test_no_allowed_region_places_nothing_and_says_why(kube: Kube, namespace: str) -> None:
    kube.run("annotate", "namespace", namespace, f"{ALLOWED_REGIONS}=eu-west-1")
    kube.apply(_endpoint("stranded", regions=["us-east-1"], replicas=2), namespace)

    def refused() -> dict[str, Any] | None:
        world = _observe(kube, namespace, "stranded")
        placed = world.condition("Placed")
        return placed if world.current and placed and placed["status"] == "False" else None

    placed = wait_for("Placed=False", refused, timeout=120)

    assert placed["reason"] == "NoAllowedRegion"
    assert "us-east-1" in placed["message"], placed["message"]  # requested
    assert "eu-west-1" in placed["message"], placed["message"]  # allowed
    _never(
        "a pod exists although no region is allowed",
        lambda: [p["metadata"]["name"] for p in _observe(kube, namespace, "stranded").pods],
        HOLD_SECONDS,
    )
    ready = condition(kube.get("inferenceendpoint", "stranded", namespace), "Ready")
    assert ready is not None
    assert ready["status"] == "False"


# --- (d) telemetry -----------------------------------------------------------------------------


def test_a_hot_node_gets_no_replicas_while_cooler_nodes_fit(
    kube: Kube, namespace: str, extra_region: list[Node]
) -> None:
    hot, cool = sorted(names(n for n in extra_region if _spot(n)))
    # Without avoidance the scheduler spreads 4 replicas over the two equal spot nodes (they are
    # in different zones and equally empty), so "none on the hot node" means something.
    set_simulated_utilization(kube, hot, 95)
    try:

        def telemetry_says_hot() -> tuple[float, float] | None:
            nodes = kube.nodes()
            hot_u = telemetry_utilization(nodes[hot])
            cool_u = telemetry_utilization(nodes[cool])
            if hot_u is None or cool_u is None or hot_u < 90 or cool_u >= 85:
                return None
            return hot_u, cool_u

        wait_for(f"telemetry: {hot} at >= 90%, {cool} below 85%", telemetry_says_hot, 60)
        kube.apply(_endpoint("picky", regions=[EXTRA_REGION], replicas=4), namespace)

        world = wait_for(
            f"4 replicas Ready on spot in {EXTRA_REGION}",
            lambda: _settled(kube, namespace, "picky", 4, _spot),
            timeout=120,
        )
        on_hot = [pod["metadata"]["name"] for pod, node in world.running if _name(node) == hot]
        assert not on_hot, f"replicas on the hot node {hot}: {on_hot}"
        assert {_name(node) for _, node in world.running} == {cool}
        assert hot in world.status["placement"]["reason"], world.status["placement"]["reason"]
    finally:
        set_simulated_utilization(kube, hot, None)


# --- (e, f) GPU fit ----------------------------------------------------------------------------


def test_a_gpu_product_constraint_puts_replicas_only_on_that_product(
    kube: Kube, namespace: str
) -> None:
    kube.apply(
        _endpoint("small", regions=["eu-west-1"], replicas=2, gpu={"count": 1, "products": [L4]}),
        namespace,
    )

    world = wait_for(
        "2 replicas Ready",
        lambda: _settled(kube, namespace, "small", 2, lambda _node: True),
        timeout=120,
    )

    products = {node["metadata"]["labels"].get(NODE_GPU_PRODUCT) for _, node in world.running}
    assert products == {L4}
    # L4s exist only as spot capacity in the default fleet.
    assert world.status["replicas"]["spot"] == 2


def test_a_model_too_large_for_the_gpus_is_not_placed_and_says_why(
    kube: Kube, namespace: str
) -> None:
    kube.apply(
        _endpoint("huge", regions=["eu-west-1"], replicas=1, model={"weightsGiB": 400}),
        namespace,
    )

    def refused() -> dict[str, Any] | None:
        world = _observe(kube, namespace, "huge")
        placed = world.condition("Placed")
        return placed if world.current and placed and placed["status"] == "False" else None

    placed = wait_for("Placed=False", refused, timeout=120)

    assert placed["reason"] == "NoFittingGPU"
    # Says why: the model's size against the GPUs there are.
    assert "400" in placed["message"] or "480" in placed["message"], placed["message"]
    assert "GiB" in placed["message"], placed["message"]
    _never(
        "a pod exists for a model no GPU can hold",
        lambda: [p["metadata"]["name"] for p in _observe(kube, namespace, "huge").pods],
        HOLD_SECONDS,
    )

    # Spread over 8 GPUs the same model fits an H100x8 node: the refusal was about fit.
    kube.apply(
        _endpoint(
            "huge",
            regions=["eu-west-1"],
            replicas=1,
            model={"weightsGiB": 400},
            gpu={"count": 8, "products": [H100]},
        ),
        namespace,
    )
    world = wait_for(
        "the 8-GPU replica Ready on an H100 node",
        lambda: _settled(
            kube, namespace, "huge", 1, lambda n: NODE_GPU_PRODUCT in n["metadata"]["labels"]
        ),
        timeout=120,
    )
    placed_now = world.condition("Placed")
    assert placed_now is not None
    assert placed_now["status"] == "True"
    assert world.running[0][1]["metadata"]["labels"][NODE_GPU_PRODUCT] == H100
