"""Rules the planner must keep for every input: residency, the policy's limits, the exact mix,
and determinism (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tidal.api.endpoint import CapacityPolicy, InferenceEndpointSpec
from tidal.api.labels import CapacityType
from tidal.api.telemetry import GpuSample, GpuTelemetry
from tidal.placement.model import (
    Constraints,
    EndpointPods,
    FleetSnapshot,
    History,
    NodeInfo,
    Placement,
    SpotHealth,
    Taint,
    UtilizationSample,
)
from tidal.placement.planner import plan

NOW = datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1")
PRODUCTS = (("NVIDIA-H100-80GB-HBM3", 81559), ("NVIDIA-L4", 23034), ("NVIDIA-A10G", 23028))
TAINTS = (
    Taint("nvidia.com/gpu", "present", "NoSchedule"),
    Taint("karpenter.sh/capacity-type", "spot", "NoSchedule"),
    Taint("cloud.google.com/gke-spot", "true", "NoSchedule"),
    Taint("node.kubernetes.io/unreachable", "", "NoExecute"),
    Taint("example.com/soft", "", "PreferNoSchedule"),
)
SPEC_PROBLEMS = {"NoAllowedRegion", "NoFittingGPU"}


@dataclass(frozen=True)
class Case:
    spec: InferenceEndpointSpec
    fleet: FleetSnapshot
    history: History
    desired: int
    constraints: Constraints
    spot_health: SpotHealth
    previous: Placement | None
    own: EndpointPods

    def plan(self, **changes: Any) -> Placement:
        case = replace(self, **changes)
        return plan(
            case.spec,
            case.fleet,
            case.history,
            NOW,
            desired=case.desired,
            constraints=case.constraints,
            spot_health=case.spot_health,
            previous=case.previous,
            own=case.own,
        )


regions = st.sets(st.sampled_from(REGIONS))


def mostly(value: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`value` four times in five: fleets of mostly healthy, fitting nodes, so that the rules
    are exercised on placements with real capacity rather than on empty pools."""
    return st.sampled_from([True, True, True, True, False]).flatmap(
        lambda common: st.just(value) if common else other
    )


@st.composite
def nodes(draw: st.DrawFn, index: int) -> NodeInfo:
    product, memory = draw(st.sampled_from(PRODUCTS))
    gpus = draw(st.integers(min_value=0, max_value=8))
    utilization = draw(st.none() | st.floats(min_value=0, max_value=100, allow_nan=False))
    doc = (
        None
        if utilization is None
        else GpuTelemetry(
            time=NOW - timedelta(seconds=draw(st.integers(min_value=0, max_value=200))),
            gpus=[GpuSample(index=0, utilization_percent=utilization)],
        )
    )
    return NodeInfo(
        name=f"node-{index:02d}",
        region=draw(mostly("eu-west-1", st.none() | st.sampled_from(REGIONS))),
        zone=None,
        capacity_type=draw(st.sampled_from(CapacityType)),
        gpu_product=draw(mostly(product, st.none())),
        gpu_memory_mib=draw(mostly(memory, st.none())),
        gpu_allocatable=gpus,
        gpu_requested=draw(mostly(0, st.integers(min_value=0, max_value=10))),
        taints=tuple(
            draw(mostly([TAINTS[0]], st.lists(st.sampled_from(TAINTS), max_size=3, unique=True)))
        ),
        ready=draw(mostly(True, st.just(False))),
        unschedulable=draw(mostly(False, st.just(True))),
        telemetry=doc,
    )


@st.composite
def specs(draw: st.DrawFn) -> InferenceEndpointSpec:
    policy = draw(st.sampled_from(CapacityPolicy))
    spot_only = policy is CapacityPolicy.SpotOnly
    model: dict[str, Any] = {
        "name": "m",
        "quantization": draw(st.sampled_from(["None", "FP8", "INT4"])),
    }
    weights = draw(mostly(None, st.integers(min_value=1, max_value=200)))
    if weights is not None:
        model["weightsGiB"] = weights
    gpu: dict[str, Any] = {
        "count": draw(mostly(1, st.integers(min_value=1, max_value=4))),
        "products": sorted(
            draw(mostly(set(), st.sets(st.sampled_from([p for p, _ in PRODUCTS]), max_size=2)))
        ),
    }
    min_memory = draw(mostly(None, st.integers(min_value=1, max_value=90000)))
    if min_memory is not None:
        gpu["minMemoryMiB"] = min_memory
    return InferenceEndpointSpec.model_validate(
        {
            "model": model,
            "residency": {"regions": sorted(draw(mostly({"eu-west-1"}, regions.filter(bool))))},
            "gpu": gpu,
            "capacity": {
                "policy": policy.value,
                "minReservedReplicas": 0 if spot_only else draw(st.integers(0, 12)),
                "maxSpotPercent": draw(st.integers(1 if spot_only else 0, 100)),
                "maxNodeGpuUtilizationPercent": draw(st.integers(1, 100)),
            },
            "scaling": {"minReplicas": 0, "maxReplicas": 20},
        }
    )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    spec = draw(specs())
    count = draw(st.integers(min_value=0, max_value=12))
    fleet = FleetSnapshot(nodes=tuple(draw(nodes(i)) for i in range(count)), observed_at=NOW)
    desired = draw(st.integers(min_value=0, max_value=20))
    history = History(
        samples=tuple(
            UtilizationSample(
                time=NOW - timedelta(minutes=15 * i),
                utilization_percent=draw(st.floats(min_value=0, max_value=100, allow_nan=False)),
                replicas=draw(st.integers(min_value=0, max_value=20)),
            )
            for i in reversed(range(draw(st.integers(min_value=0, max_value=12))))
        )
    )
    previous = draw(
        st.none()
        | st.integers(min_value=0, max_value=6).map(
            lambda spot: Placement(desired=spot, spot=spot, reserved=0, allowed_regions=())
        )
    )
    lost_ago = draw(st.none() | st.integers(min_value=0, max_value=1000))
    return Case(
        spec=spec,
        fleet=fleet,
        history=history,
        desired=desired,
        constraints=Constraints(
            namespace_regions=draw(mostly(None, regions.map(frozenset))),
            collection_regions=draw(mostly(None, regions.map(frozenset))),
        ),
        spot_health=SpotHealth(
            pending_spot_pods=draw(mostly(0, st.integers(min_value=1, max_value=5))),
            lost_since=None if lost_ago is None else NOW - timedelta(seconds=lost_ago),
        ),
        previous=previous,
        own=EndpointPods(
            gpus_by_node={
                n.name: draw(st.integers(min_value=0, max_value=4))
                for n in fleet.nodes
                if draw(st.booleans())
            }
        ),
    )


def allowed(case: Case) -> set[str]:
    result = set(case.spec.residency.regions)
    for extra in (case.constraints.namespace_regions, case.constraints.collection_regions):
        if extra is not None:
            result &= extra
    return result


@given(cases())
def test_nothing_is_ever_placed_or_preferred_outside_the_allowed_regions(case: Case) -> None:
    placement = case.plan()
    permitted = allowed(case)
    assert set(placement.allowed_regions) <= permitted
    by_name = {n.name: n for n in case.fleet.nodes}
    named = [name for name, _ in placement.preferred_nodes] + list(placement.avoided_nodes)
    assert all(by_name[name].region in permitted for name in named)
    if not permitted:
        assert (placement.placed_reason, placement.spot, placement.reserved) == (
            "NoAllowedRegion",
            0,
            0,
        )


@given(cases())
def test_spot_and_reserved_always_add_up_to_desired_unless_the_spec_cannot_be_placed(
    case: Case,
) -> None:
    placement = case.plan()
    assert placement.desired == case.desired
    if placement.placed_reason in SPEC_PROBLEMS:
        assert (placement.placed, placement.spot, placement.reserved) == (False, 0, 0)
        assert placement.allowed_regions == ()
    else:
        assert placement.spot + placement.reserved == case.desired
        assert placement.spot >= 0
        assert placement.reserved >= 0


@given(cases())
def test_spot_never_exceeds_max_spot_percent_of_desired_unless_spot_only(case: Case) -> None:
    placement = case.plan()
    capacity = case.spec.capacity
    if capacity.policy is not CapacityPolicy.SpotOnly:
        assert placement.spot <= case.desired * capacity.max_spot_percent // 100
    if capacity.policy is CapacityPolicy.ReservedOnly:
        assert placement.spot == 0


@given(cases())
def test_reserved_holds_min_reserved_replicas_whenever_replicas_are_placed(case: Case) -> None:
    placement = case.plan()
    capacity = case.spec.capacity
    if placement.placed_reason not in SPEC_PROBLEMS:
        if capacity.policy is CapacityPolicy.SpotOnly:
            assert placement.reserved == 0
        else:
            assert placement.reserved >= min(capacity.min_reserved_replicas, case.desired)


@given(cases(), st.randoms(use_true_random=False))
def test_equal_inputs_in_any_order_give_equal_placements(case: Case, rng: Any) -> None:
    shuffled = list(case.fleet.nodes)
    rng.shuffle(shuffled)
    assert case.plan() == case.plan()
    assert case.plan() == case.plan(fleet=replace(case.fleet, nodes=tuple(shuffled)))


@given(cases())
def test_preferences_are_distinct_weighted_1_to_100_and_never_avoided(case: Case) -> None:
    placement = case.plan()
    names = [name for name, _ in placement.preferred_nodes]
    assert len(names) == len(set(names))
    assert all(1 <= weight <= 100 for _, weight in placement.preferred_nodes)
    assert not set(names) & set(placement.avoided_nodes)
    assert list(placement.avoided_nodes) == sorted(placement.avoided_nodes)


@given(cases())
def test_the_reason_is_one_line_that_fits_status(case: Case) -> None:
    reason = case.plan().reason
    assert reason
    assert "\n" not in reason
    assert len(reason) <= 1024


@given(cases(), st.data())
def test_losing_spot_nodes_never_adds_spot_replicas(case: Case, data: st.DataObject) -> None:
    # Not for Auto: its budget judges where spot replicas may end up, and less room in one pool
    # can force them to spread, which lowers the floor (test_placement_budget's
    # test_less_room_in_one_pool_can_lower_the_floor_because_spot_must_then_spread). SpotOnly
    # asks for spot whatever exists.
    keep = [
        n
        for n in case.fleet.nodes
        if n.capacity_type is CapacityType.RESERVED or data.draw(st.booleans())
    ]
    fewer = case.plan(fleet=replace(case.fleet, nodes=tuple(keep)))
    if case.spec.capacity.policy not in {CapacityPolicy.SpotOnly, CapacityPolicy.Auto}:
        assert fewer.spot <= case.plan().spot


@settings(max_examples=200)
@given(cases(), st.integers(min_value=0, max_value=3600), st.none() | st.integers(0, 299))
def test_while_a_spot_loss_episode_lasts_spot_never_grows_past_the_previous_placement(
    case: Case, lost_ago: int, healthy_for: int | None
) -> None:
    previous = case.previous or Placement(desired=0, spot=0, reserved=0, allowed_regions=())
    placement = case.plan(
        previous=previous,
        spot_health=replace(
            case.spot_health,
            lost_since=NOW - timedelta(seconds=lost_ago),
            recovered_since=None if healthy_for is None else NOW - timedelta(seconds=healthy_for),
            return_after_seconds=300,
        ),
    )
    if case.spec.capacity.policy is not CapacityPolicy.SpotOnly:
        assert placement.spot <= previous.spot


@given(cases())
def test_without_spot_nodes_only_spot_only_asks_for_spot(case: Case) -> None:
    reserved_only = tuple(n for n in case.fleet.nodes if n.capacity_type is CapacityType.RESERVED)
    placement = case.plan(fleet=replace(case.fleet, nodes=reserved_only))
    if case.spec.capacity.policy is not CapacityPolicy.SpotOnly:
        assert placement.spot == 0
