"""The placement planner: the spot/reserved mix, residency, GPU fit, hot nodes, spot loss."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.endpoint import InferenceEndpointSpec
from tidal.api.labels import CapacityType
from tidal.api.podtemplate import PodTemplate
from tidal.api.telemetry import GpuSample, GpuTelemetry, PodUsage
from tidal.placement.budget import ReclaimPrior, Reclaims
from tidal.placement.model import (
    Constraints,
    EndpointPods,
    FleetSnapshot,
    History,
    NodeInfo,
    Placement,
    ProvisionablePool,
    SpotHealth,
    SpotRisk,
    Taint,
    UtilizationSample,
)
from tidal.placement.planner import (
    MAX_PREFERRED_NODES,
    allowed_regions,
    measured_load,
    model_memory_mib,
    node_utilization,
    plan,
    required_gpu_memory_mib,
    spot_pools,
)

NOW = datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
SPOT, RESERVED = CapacityType.SPOT, CapacityType.RESERVED
H100, H100_MIB = "NVIDIA-H100-80GB-HBM3", 81559
L4, L4_MIB = "NVIDIA-L4", 23034
GPU_TAINT = Taint("nvidia.com/gpu", "present", "NoSchedule")
NO_HISTORY = History()


def make_spec(
    *,
    policy: str = "SpotPreferred",
    regions: tuple[str, ...] = ("eu-west-1",),
    min_reserved: int = 0,
    max_spot: int = 100,
    max_util: int = 85,
    gpu: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
) -> InferenceEndpointSpec:
    return InferenceEndpointSpec.model_validate(
        {
            "model": {"name": "m", **(model or {})},
            "residency": {"regions": list(regions)},
            "gpu": gpu or {},
            "capacity": {
                "policy": policy,
                "minReservedReplicas": min_reserved,
                "maxSpotPercent": max_spot,
                "maxNodeGpuUtilizationPercent": max_util,
            },
            "scaling": {"minReplicas": 1, "maxReplicas": 100},
        }
    )


def telemetry(
    *utilization: float | None, age_seconds: int = 5, pods: list[PodUsage] | None = None
) -> GpuTelemetry:
    return GpuTelemetry(
        time=NOW - timedelta(seconds=age_seconds),
        gpus=[GpuSample(index=i, utilization_percent=u) for i, u in enumerate(utilization)],
        pods=pods or [],
    )


def gpu_node(
    name: str,
    capacity: CapacityType = SPOT,
    *,
    region: str = "eu-west-1",
    product: str | None = H100,
    memory: int | None = H100_MIB,
    gpus: int = 8,
    requested: int = 0,
    utilization: float | None = None,
    ready: bool = True,
    unschedulable: bool = False,
    taints: tuple[Taint, ...] = (GPU_TAINT,),
    doc: GpuTelemetry | None = None,
) -> NodeInfo:
    if doc is None and utilization is not None:
        doc = telemetry(utilization)
    return NodeInfo(
        name=name,
        region=region,
        zone=f"{region}a",
        capacity_type=capacity,
        gpu_product=product,
        gpu_memory_mib=memory,
        gpu_allocatable=gpus,
        gpu_requested=requested,
        taints=taints,
        ready=ready,
        unschedulable=unschedulable,
        telemetry=doc,
    )


def fleet_of(*nodes: NodeInfo) -> FleetSnapshot:
    return FleetSnapshot(nodes=tuple(nodes), observed_at=NOW)


def pools(spot_slots: int, reserved_slots: int) -> FleetSnapshot:
    """One spot and one reserved node offering exactly that many one-GPU replica slots."""
    return fleet_of(
        gpu_node(
            "spot-0", SPOT, gpus=max(spot_slots, 1), requested=max(spot_slots, 1) - spot_slots
        ),
        gpu_node(
            "reserved-0",
            RESERVED,
            gpus=max(reserved_slots, 1),
            requested=max(reserved_slots, 1) - reserved_slots,
        ),
    )


ROOMY = pools(100, 100)


def samples(loads: list[tuple[int, float]], *, every_minutes: int = 10) -> History:
    """History ending at NOW, one (replicas, utilization%) per step, oldest first."""
    start = NOW - timedelta(minutes=every_minutes * (len(loads) - 1))
    return History(
        samples=tuple(
            UtilizationSample(
                time=start + timedelta(minutes=every_minutes * i),
                utilization_percent=util,
                replicas=replicas,
            )
            for i, (replicas, util) in enumerate(loads)
        )
    )


# --- residency -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "namespace", "collection", "expected"),
    [
        (("eu-west-1",), None, None, ("eu-west-1",)),
        (("us-east-1", "eu-west-1"), None, None, ("eu-west-1", "us-east-1")),
        (("eu-west-1", "us-east-1"), {"eu-west-1"}, None, ("eu-west-1",)),
        (("eu-west-1", "us-east-1"), None, {"us-east-1"}, ("us-east-1",)),
        (
            ("eu-west-1", "eu-central-1", "us-east-1"),
            {"eu-west-1", "eu-central-1"},
            {"eu-central-1", "us-east-1"},
            ("eu-central-1",),
        ),
        (("eu-west-1",), {"us-east-1"}, None, ()),
        (("eu-west-1",), set(), None, ()),
        (("eu-west-1",), {"eu-west-1"}, {"us-east-1"}, ()),
    ],
)
def test_allowed_regions_are_the_spec_regions_narrowed_by_namespace_and_collection(
    requested: tuple[str, ...],
    namespace: set[str] | None,
    collection: set[str] | None,
    expected: tuple[str, ...],
) -> None:
    constraints = Constraints(
        namespace_regions=None if namespace is None else frozenset(namespace),
        collection_regions=None if collection is None else frozenset(collection),
    )
    assert allowed_regions(make_spec(regions=requested), constraints) == expected


def test_no_allowed_region_places_nothing_and_lists_every_side() -> None:
    placement = plan(
        make_spec(regions=("eu-west-1", "us-east-1")),
        ROOMY,
        NO_HISTORY,
        NOW,
        desired=3,
        constraints=Constraints(
            namespace_regions=frozenset({"eu-central-1"}),
            collection_regions=frozenset({"eu-west-1"}),
        ),
    )
    assert placement == Placement(
        desired=3,
        spot=0,
        reserved=0,
        allowed_regions=(),
        placed=False,
        placed_reason="NoAllowedRegion",
        reason=(
            "no region is allowed: requested eu-west-1, us-east-1; namespace "
            "tidal.dev/allowed-regions allows eu-central-1; vector collection allows eu-west-1"
        ),
    )


def test_no_allowed_region_without_a_collection_names_only_the_namespace_policy() -> None:
    placement = plan(
        make_spec(),
        ROOMY,
        NO_HISTORY,
        NOW,
        desired=1,
        constraints=Constraints(namespace_regions=frozenset()),
    )
    assert placement.reason == (
        "no region is allowed: requested eu-west-1; namespace tidal.dev/allowed-regions allows none"
    )


def test_capacity_in_a_forbidden_region_is_never_counted_or_preferred() -> None:
    fleet = fleet_of(
        gpu_node("spot-eu", SPOT, region="eu-west-1", gpus=1),
        gpu_node("spot-us", SPOT, region="us-east-1"),
        gpu_node("reserved-eu", RESERVED, region="eu-west-1"),
    )
    placement = plan(
        make_spec(regions=("eu-west-1", "us-east-1")),
        fleet,
        NO_HISTORY,
        NOW,
        desired=3,
        constraints=Constraints(namespace_regions=frozenset({"eu-west-1"})),
    )
    assert (placement.spot, placement.reserved, placement.allowed_regions) == (1, 2, ("eu-west-1",))
    assert "spot-us" not in dict(placement.preferred_nodes)


def test_a_node_without_a_region_label_is_in_no_allowed_region() -> None:
    fleet = fleet_of(gpu_node("spot", SPOT), replace(gpu_node("unlabelled", SPOT), region=None))
    placement = plan(make_spec(), fleet, NO_HISTORY, NOW, desired=2)
    assert [name for name, _ in placement.preferred_nodes] == ["spot"]


# --- GPU fit -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "quantization", "count", "expected_mib"),
    [
        (None, "None", 1, None),
        (70, "None", 1, 86016),  # 70 GiB x 1.2
        (70, "FP8", 1, 43008),
        (70, "INT8", 1, 43008),
        (70, "INT4", 1, 21504),
        (70, "None", 2, 43008),  # each GPU holds half
        (8, "INT4", 3, 820),  # ceil(2457.6 / 3)
    ],
)
def test_the_model_needs_its_quantized_weights_plus_overhead_shared_over_its_gpus(
    weights: int | None, quantization: str, count: int, expected_mib: int | None
) -> None:
    model: dict[str, Any] = {"quantization": quantization}
    if weights is not None:
        model["weightsGiB"] = weights
    spec = make_spec(model=model, gpu={"count": count})
    assert required_gpu_memory_mib(spec) == expected_mib


@pytest.mark.parametrize(
    ("weights", "quantization", "expected_mib"),
    [(None, "INT4", None), (1, "None", 1229), (70, "FP8", 43008), (405, "INT4", 124416)],
)
def test_model_memory_is_weights_times_quantization_times_overhead_rounded_up(
    weights: int | None, quantization: str, expected_mib: int | None
) -> None:
    model: dict[str, Any] = {"quantization": quantization}
    if weights is not None:
        model["weightsGiB"] = weights
    assert model_memory_mib(make_spec(model=model)) == expected_mib


@pytest.mark.parametrize(
    ("min_memory", "weights", "expected"),
    [(None, None, None), (40000, None, 40000), (40000, 70, 86016), (90000, 70, 90000)],
)
def test_the_gpu_memory_floor_is_the_larger_of_min_memory_and_the_models_share(
    min_memory: int | None, weights: int | None, expected: int | None
) -> None:
    gpu: dict[str, Any] = {} if min_memory is None else {"minMemoryMiB": min_memory}
    model: dict[str, Any] = {} if weights is None else {"weightsGiB": weights}
    assert required_gpu_memory_mib(make_spec(gpu=gpu, model=model)) == expected


@pytest.mark.parametrize(
    ("gpu", "model", "fits"),
    [
        ({}, {}, {"h100", "l4"}),
        ({"products": [L4]}, {}, {"l4"}),
        ({"products": [H100, L4]}, {}, {"h100", "l4"}),
        ({"count": 8}, {}, {"h100"}),  # the L4 node has 4
        ({"minMemoryMiB": 30000}, {}, {"h100"}),
        ({"minMemoryMiB": 23034}, {}, {"h100", "l4"}),
        ({}, {"weightsGiB": 60}, {"h100"}),  # 72 GiB
        ({}, {"weightsGiB": 30, "quantization": "INT8"}, {"h100", "l4"}),  # 18 GiB
        ({}, {"weightsGiB": 40, "quantization": "INT8"}, {"h100"}),  # 24 GiB > 22.5
        ({"count": 4}, {"weightsGiB": 70}, {"h100", "l4"}),  # 21 GiB per GPU
        ({"count": 2, "products": [L4]}, {"weightsGiB": 70, "quantization": "INT4"}, {"l4"}),
    ],
)
def test_only_nodes_whose_gpus_fit_the_spec_and_the_model_are_preferred(
    gpu: dict[str, Any], model: dict[str, Any], fits: set[str]
) -> None:
    fleet = fleet_of(
        gpu_node("h100", SPOT),
        gpu_node("l4", SPOT, product=L4, memory=L4_MIB, gpus=4),
    )
    placement = plan(make_spec(gpu=gpu, model=model), fleet, NO_HISTORY, NOW, desired=1)
    assert placement.placed_reason == "Placed"
    assert {name for name, _ in placement.preferred_nodes} == fits


@pytest.mark.parametrize(
    ("gpu", "model", "nodes", "message"),
    [
        (
            {},
            {"weightsGiB": 70},
            [gpu_node("h100", SPOT)],
            "no GPU in eu-west-1 fits: model needs 84.0 GiB (weightsGiB 70 at None x1 x1.2 "
            "overhead) but the largest allowed GPU set is 1x79.6 GiB NVIDIA-H100-80GB-HBM3",
        ),
        (
            {"count": 2, "products": [L4]},
            {"weightsGiB": 140, "quantization": "FP8"},
            [gpu_node("l4", SPOT, product=L4, memory=L4_MIB, gpus=4), gpu_node("h100", SPOT)],
            "no GPU in eu-west-1 fits: model needs 84.0 GiB (weightsGiB 140 at FP8 x0.5 x1.2 "
            "overhead) but the largest allowed GPU set is 2x22.5 GiB NVIDIA-L4",
        ),
        (
            {"products": ["NVIDIA-A100-SXM4-80GB"]},
            {},
            [gpu_node("h100", SPOT), gpu_node("l4", SPOT, product=L4)],
            "no GPU in eu-west-1 fits: gpu.products NVIDIA-A100-SXM4-80GB not found "
            "(there: NVIDIA-H100-80GB-HBM3, NVIDIA-L4)",
        ),
        (
            {"count": 16},
            {},
            [gpu_node("h100", SPOT)],
            "no GPU in eu-west-1 fits: gpu.count 16 exceeds the most GPUs on one node (8)",
        ),
        (
            {"minMemoryMiB": 100000},
            {},
            [gpu_node("h100", SPOT), gpu_node("l4", SPOT, product=L4, memory=L4_MIB)],
            "no GPU in eu-west-1 fits: gpu.minMemoryMiB 100000 exceeds the largest GPU "
            "(81559 MiB NVIDIA-H100-80GB-HBM3)",
        ),
        (
            {"minMemoryMiB": 1000},
            {},
            [gpu_node("unlabelled", SPOT, memory=None)],
            "no GPU in eu-west-1 fits: gpu.minMemoryMiB 1000 exceeds the largest GPU "
            "(no nvidia.com/gpu.memory label)",
        ),
        (
            {},
            {},
            [gpu_node("cpu", RESERVED, product=None, memory=None, gpus=0)],
            "no GPU in eu-west-1 fits: no node there has nvidia.com/gpu",
        ),
        (
            {},
            {},
            [gpu_node("far-away", SPOT, region="us-east-1")],
            "no GPU in eu-west-1 fits: no node there has nvidia.com/gpu",
        ),
    ],
)
def test_no_fitting_gpu_places_nothing_and_says_why(
    gpu: dict[str, Any], model: dict[str, Any], nodes: list[NodeInfo], message: str
) -> None:
    placement = plan(make_spec(gpu=gpu, model=model), fleet_of(*nodes), NO_HISTORY, NOW, desired=2)
    assert (placement.placed, placement.placed_reason) == (False, "NoFittingGPU")
    assert (placement.spot, placement.reserved, placement.allowed_regions) == (0, 0, ())
    assert placement.reason == message


def test_fit_is_judged_on_hardware_so_a_full_fitting_fleet_is_short_of_capacity_not_unfit() -> None:
    fleet = fleet_of(gpu_node("spot", SPOT, requested=8), gpu_node("res", RESERVED, requested=8))
    placement = plan(make_spec(), fleet, NO_HISTORY, NOW, desired=2)
    assert (placement.placed_reason, placement.spot, placement.reserved) == (
        "InsufficientCapacity",
        0,
        2,
    )


def test_the_placement_carries_the_gpu_memory_floor_for_the_deployments_affinity() -> None:
    spec = make_spec(model={"weightsGiB": 8})
    assert plan(spec, ROOMY, NO_HISTORY, NOW, desired=1).min_gpu_memory_mib == 9831


# --- usable nodes and pool capacity --------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "usable"),
    [
        (gpu_node("n", SPOT), True),
        (gpu_node("n", SPOT, ready=False), False),
        (gpu_node("n", SPOT, unschedulable=True), False),
        (
            gpu_node(
                "n",
                SPOT,
                taints=(GPU_TAINT, Taint("karpenter.sh/capacity-type", "spot", "NoSchedule")),
            ),
            True,
        ),
        (gpu_node("n", SPOT, taints=(Taint("example.com/team", "a", "NoSchedule"),)), False),
        (
            gpu_node("n", SPOT, taints=(Taint("node.kubernetes.io/unreachable", "", "NoExecute"),)),
            False,
        ),
        (gpu_node("n", SPOT, taints=(Taint("example.com/soft", "", "PreferNoSchedule"),)), True),
        (
            gpu_node(
                "n", RESERVED, taints=(Taint("cloud.google.com/gke-spot", "true", "NoSchedule"),)
            ),
            False,
        ),
    ],
)
def test_only_ready_schedulable_nodes_without_foreign_hard_taints_offer_capacity(
    node: NodeInfo, usable: bool
) -> None:
    placement = plan(make_spec(policy="SpotPreferred"), fleet_of(node), NO_HISTORY, NOW, desired=1)
    assert (placement.placed_reason == "Placed") is usable


SKU_GPU = Taint("sku", "gpu", "NoSchedule")


def with_pod_template(spec: InferenceEndpointSpec, **pod_spec: Any) -> InferenceEndpointSpec:
    """`spec` with a `spec.podTemplate.spec` of `pod_spec` (wire names)."""
    return spec.model_copy(update={"pod_template": PodTemplate.model_validate({"spec": pod_spec})})


@pytest.mark.parametrize(
    ("tolerations", "usable"),
    [
        ([], False),
        ([{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}], True),
        ([{"key": "sku", "value": "gpu"}], True),  # Equal by default, any effect
        ([{"key": "sku", "operator": "Exists"}], True),
        ([{"operator": "Exists"}], True),  # no key: every taint
        ([{"key": "sku", "value": "cpu"}], False),
        ([{"key": "sku", "operator": "Exists", "effect": "NoExecute"}], False),
        ([{"key": "other", "operator": "Exists"}], False),
    ],
)
def test_a_taint_the_pod_templates_tolerations_cover_no_longer_blocks_a_node(
    tolerations: list[dict[str, Any]], usable: bool
) -> None:
    # AKS taints its GPU pools sku=gpu:NoSchedule: with the toleration every replica carries,
    # the planner must count those nodes, or it would never place a replica there.
    node = gpu_node("aks-gpu", RESERVED, taints=(GPU_TAINT, SKU_GPU))
    spec = with_pod_template(make_spec(policy="ReservedOnly"), tolerations=tolerations)
    placement = plan(spec, fleet_of(node), NO_HISTORY, NOW, desired=1)
    assert (placement.placed_reason == "Placed") is usable


def test_a_pool_whose_taint_the_pod_template_tolerates_can_provision() -> None:
    pool = replace(ON_DEMAND_POOL, taints=(GPU_TAINT, SKU_GPU))
    spec = make_spec(policy="ReservedOnly")
    assert plan(spec, elastic(pool), NO_HISTORY, NOW, desired=1).placed_reason == "NoFittingGPU"
    tolerant = with_pod_template(spec, tolerations=[{"key": "sku", "operator": "Exists"}])
    placement = plan(tolerant, elastic(pool), NO_HISTORY, NOW, desired=1)
    assert (placement.reserved, placement.placed_reason) == (1, "Placed")


@pytest.mark.parametrize(
    ("pod_spec", "placed_on"),
    [
        ({}, {"pool-a", "pool-b", "plain"}),
        ({"nodeSelector": {"pool": "a"}}, {"pool-a"}),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "pool", "operator": "In", "values": ["b"]}
                                    ]
                                },
                                {"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]},
                            ]
                        }
                    }
                }
            },
            {"pool-b", "plain"},
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "rank", "operator": "Gt", "values": ["1"]}
                                    ]
                                }
                            ]
                        }
                    }
                }
            },
            {"pool-b"},
        ),
    ],
)
def test_only_nodes_the_pod_templates_node_requirements_admit_offer_capacity(
    pod_spec: dict[str, Any], placed_on: set[str]
) -> None:
    nodes = (
        replace(gpu_node("pool-a", RESERVED, gpus=1), labels={"pool": "a", "rank": "1"}),
        replace(gpu_node("pool-b", RESERVED, gpus=1), labels={"pool": "b", "rank": "2"}),
        replace(gpu_node("plain", RESERVED, gpus=1), labels={"rank": "x"}),
    )
    spec = with_pod_template(make_spec(policy="ReservedOnly"), **pod_spec)
    placement = plan(spec, fleet_of(*nodes), NO_HISTORY, NOW, desired=3)
    assert placement.reserved == 3
    # One GPU per node: the replicas fit exactly on the admitted nodes, the rest wait.
    assert placement.placed is (len(placed_on) == 3)
    assert {name for name, _ in placement.preferred_nodes} == placed_on


@pytest.mark.parametrize(
    ("count", "gpus", "requested", "own", "slots"),
    [
        (1, 8, 0, 0, 8),
        (1, 8, 5, 0, 3),
        (2, 8, 3, 0, 2),  # 5 free GPUs hold two 2-GPU replicas
        (4, 8, 5, 0, 0),
        (2, 8, 8, 4, 2),  # the endpoint's own 4 GPUs stay available to it
        (1, 8, 2, 6, 8),  # own GPUs never push a node past its allocatable
        (1, 8, 10, 0, 0),  # over-committed reads as full, not negative
    ],
)
def test_a_nodes_slots_are_its_free_gpus_plus_the_endpoints_own_over_gpu_count(
    count: int, gpus: int, requested: int, own: int, slots: int
) -> None:
    fleet = fleet_of(gpu_node("spot", SPOT, gpus=gpus, requested=requested))
    placement = plan(
        make_spec(policy="SpotPreferred", gpu={"count": count}),
        fleet,
        NO_HISTORY,
        NOW,
        desired=10,
        own=EndpointPods(gpus_by_node={"spot": own}),
    )
    assert placement.spot == slots


def test_pools_sum_slots_over_every_usable_fitting_node_in_allowed_regions() -> None:
    fleet = fleet_of(
        gpu_node("spot-a", SPOT, gpus=8, requested=6),
        gpu_node("spot-b", SPOT, gpus=8, requested=7, region="eu-central-1"),
        gpu_node("spot-c", SPOT, gpus=8, ready=False),
        gpu_node("spot-d", SPOT, product=L4, memory=L4_MIB, gpus=4),
    )
    spec = make_spec(regions=("eu-west-1", "eu-central-1"), gpu={"products": [H100]})
    placement = plan(spec, fleet, NO_HISTORY, NOW, desired=5)
    assert (placement.spot, placement.reserved) == (3, 2)
    assert placement.reason.startswith("3 spot, 2 reserved in eu-central-1, eu-west-1")


# --- policies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "min_reserved", "max_spot", "desired", "spot_slots", "reserved_slots", "expected"),
    [
        # ReservedOnly: everything reserved, spot ignored.
        ("ReservedOnly", 0, 100, 4, 100, 100, (0, 4, "Placed")),
        ("ReservedOnly", 0, 100, 4, 100, 2, (0, 4, "InsufficientCapacity")),
        ("ReservedOnly", 0, 0, 0, 0, 0, (0, 0, "Placed")),
        # SpotOnly: everything spot, never reserved, maxSpotPercent ignored.
        ("SpotOnly", 0, 100, 4, 100, 100, (4, 0, "Placed")),
        ("SpotOnly", 0, 50, 4, 100, 100, (4, 0, "Placed")),
        ("SpotOnly", 0, 100, 4, 1, 100, (4, 0, "InsufficientSpotCapacity")),
        ("SpotOnly", 0, 100, 4, 0, 100, (4, 0, "InsufficientSpotCapacity")),
        # SpotPreferred: spot up to the cap, minReserved on reserved, rest reserved.
        ("SpotPreferred", 0, 100, 4, 100, 100, (4, 0, "Placed")),
        ("SpotPreferred", 0, 75, 4, 100, 100, (3, 1, "Placed")),
        ("SpotPreferred", 0, 50, 5, 100, 100, (2, 3, "Placed")),  # the cap rounds spot down
        ("SpotPreferred", 0, 99, 4, 100, 100, (3, 1, "Placed")),
        ("SpotPreferred", 0, 0, 4, 100, 100, (0, 4, "Placed")),
        ("SpotPreferred", 2, 100, 4, 100, 100, (2, 2, "Placed")),
        ("SpotPreferred", 2, 75, 4, 100, 100, (2, 2, "Placed")),
        ("SpotPreferred", 5, 100, 3, 100, 100, (0, 3, "Placed")),  # minReserved > desired
        ("SpotPreferred", 0, 100, 1, 100, 100, (1, 0, "Placed")),
        ("SpotPreferred", 0, 100, 0, 100, 100, (0, 0, "Placed")),
        # ... shrunk to what the spot pool holds, the rest on reserved.
        ("SpotPreferred", 0, 100, 4, 1, 100, (1, 3, "Placed")),
        ("SpotPreferred", 0, 100, 4, 0, 100, (0, 4, "Placed")),
        ("SpotPreferred", 1, 75, 8, 2, 100, (2, 6, "Placed")),
        ("SpotPreferred", 0, 100, 4, 1, 2, (1, 3, "InsufficientCapacity")),
        ("SpotPreferred", 3, 100, 4, 100, 2, (1, 3, "InsufficientCapacity")),
        # Auto, one spot pool, the default budget: reserved carries the load the replicas are
        # sized for (2/3 each) when that pool is lost; the spec's bounds still apply.
        ("Auto", 0, 100, 4, 100, 100, (1, 3, "Placed")),
        ("Auto", 1, 75, 8, 100, 100, (2, 6, "Placed")),
        ("Auto", 0, 100, 4, 2, 100, (1, 3, "Placed")),
        ("Auto", 0, 100, 4, 0, 100, (0, 4, "Placed")),
        ("Auto", 0, 0, 4, 100, 100, (0, 4, "Placed")),
    ],
)
def test_each_policy_splits_desired_replicas_within_its_limits_and_the_pools(
    policy: str,
    min_reserved: int,
    max_spot: int,
    desired: int,
    spot_slots: int,
    reserved_slots: int,
    expected: tuple[int, int, str],
) -> None:
    spec = make_spec(policy=policy, min_reserved=min_reserved, max_spot=max_spot)
    placement = plan(spec, pools(spot_slots, reserved_slots), NO_HISTORY, NOW, desired=desired)
    assert (placement.spot, placement.reserved, placement.placed_reason) == expected
    assert placement.placed is (expected[2] == "Placed")
    assert placement.desired == desired


@pytest.mark.parametrize(
    ("policy", "min_reserved", "max_spot", "spot_slots", "reason"),
    [
        ("ReservedOnly", 0, 100, 100, "0 spot, 4 reserved in eu-west-1: policy ReservedOnly"),
        ("SpotOnly", 0, 100, 100, "4 spot, 0 reserved in eu-west-1: policy SpotOnly"),
        (
            "SpotOnly",
            0,
            100,
            1,
            "4 spot, 0 reserved in eu-west-1: policy SpotOnly; "
            "spot pool holds 1 of 4, the rest wait for spot capacity",
        ),
        ("SpotPreferred", 0, 100, 100, "4 spot, 0 reserved in eu-west-1: SpotPreferred"),
        (
            "SpotPreferred",
            0,
            75,
            100,
            "3 spot, 1 reserved in eu-west-1: SpotPreferred capped by maxSpotPercent=75",
        ),
        (
            "SpotPreferred",
            2,
            75,
            100,
            "2 spot, 2 reserved in eu-west-1: SpotPreferred minReservedReplicas=2 on reserved",
        ),
        (
            "SpotPreferred",
            1,
            75,
            100,
            "3 spot, 1 reserved in eu-west-1: SpotPreferred capped by maxSpotPercent=75, "
            "minReservedReplicas=1 on reserved",
        ),
        (
            "SpotPreferred",
            0,
            100,
            1,
            "1 spot, 3 reserved in eu-west-1: SpotPreferred; "
            "spot pool holds only 1: 3 moved to reserved",
        ),
        (
            "Auto",
            0,
            100,
            100,
            "1 spot, 3 reserved in eu-west-1: Auto within interruption budget 0.01%: 3 reserved "
            "for load 2.67 (what 4 replicas are sized for), recovery 660s (detection 60s + "
            "start 600s assumed); losing the largest spot "
            "pool "
            "eu-west-1/NVIDIA-H100-80GB-HBM3 (1 spot, 0.0417 reclaims/h), the rest "
            "carries the load; expected loss 0.0000% of requests",
        ),
        (
            "Auto",
            3,
            100,
            100,
            "1 spot, 3 reserved in eu-west-1: Auto within interruption budget 0.01%: 3 reserved "
            "for load 2.67 (what 4 replicas are sized for), recovery 660s (detection 60s + "
            "start 600s assumed); losing the largest spot "
            "pool "
            "eu-west-1/NVIDIA-H100-80GB-HBM3 (1 spot, 0.0417 reclaims/h), the rest "
            "carries the load; expected loss 0.0000% of requests; minReservedReplicas=3 on "
            "reserved",
        ),
    ],
)
def test_the_reason_is_one_line_naming_the_mix_the_policy_and_the_binding_limit(
    policy: str, min_reserved: int, max_spot: int, spot_slots: int, reason: str
) -> None:
    spec = make_spec(policy=policy, min_reserved=min_reserved, max_spot=max_spot)
    placement = plan(spec, pools(spot_slots, 100), NO_HISTORY, NOW, desired=4)
    assert placement.reason == reason
    assert "\n" not in placement.reason


def test_a_negative_replica_count_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        plan(make_spec(), ROOMY, NO_HISTORY, NOW, desired=-1)


# --- Auto: the interruption budget (the rule itself: test_placement_budget.py) -------------------


STEADY_TWO = samples([(2, 70.0)] * 12)  # 1.4 saturations all the time, over 110 min
BURSTY = samples([(1, 40.0)] * 9 + [(6, 90.0)] * 3)  # mostly 0.4, bursts to 5.4


@pytest.mark.parametrize(
    ("history", "load"),
    [
        (STEADY_TWO, 1.4),
        (BURSTY, 5.4),  # the peak of the last hour: a burst counts
        (samples([(4, 0.0)] * 12), 0.0),  # idle
        (samples([(5, 100.0)] * 12), 5.0),  # saturated
        (samples([(6, 90.0)] * 3 + [(1, 40.0)] * 9), 0.4),  # the burst was over an hour ago
        (samples([(1, 10.0 * i) for i in range(1, 13)], every_minutes=5), 1.2),
    ],
)
def test_auto_measures_the_peak_gpu_load_of_the_last_hour_in_saturations(
    history: History, load: float
) -> None:
    assert measured_load(history, NOW).load == pytest.approx(load)


@pytest.mark.parametrize(
    ("history", "why"),
    [
        (History(), "no samples"),
        (samples([(2, 70.0)] * 5, every_minutes=5), "too few samples"),
        (samples([(2, 70.0)] * 12, every_minutes=30), "only two in the last hour"),
        (
            History(
                samples=tuple(
                    replace(s, time=s.time + timedelta(hours=3)) for s in STEADY_TWO.samples
                )
            ),
            "in the future",
        ),
    ],
)
def test_too_little_recent_history_measures_no_load(history: History, why: str) -> None:
    assert measured_load(history, NOW).load is None, why


def spot_regions(*regions: str, reserved_region: str = "a") -> FleetSnapshot:
    """One roomy spot node per region and one roomy reserved node."""
    return fleet_of(
        *(gpu_node(f"spot-{r}", SPOT, region=r, gpus=100) for r in regions),
        gpu_node("reserved-0", RESERVED, region=reserved_region, gpus=100),
    )


def auto_spec(
    budget: str = "0.01", regions: tuple[str, ...] = ("a",), **more: Any
) -> InferenceEndpointSpec:
    spec = make_spec(policy="Auto", regions=regions, **more)
    capacity = spec.capacity.model_copy(update={"interruption_budget_percent": budget})
    return spec.model_copy(update={"capacity": capacity})


@pytest.mark.parametrize(
    ("regions", "budget", "history", "desired", "expected"),
    [
        # One pool: reserved alone must carry desired x 2/3 when it is lost.
        (("a",), "0.01", NO_HISTORY, 3, (1, 2)),
        (("a",), "0.01", NO_HISTORY, 6, (2, 4)),
        (("a",), "0.01", NO_HISTORY, 1, (0, 1)),
        (("a",), "0.01", NO_HISTORY, 0, (0, 0)),
        # Two regions spread: losing one loses half of spot.
        (("a", "b"), "0.01", NO_HISTORY, 6, (4, 2)),
        (("a", "b"), "0.01", NO_HISTORY, 9, (6, 3)),
        # Three: losing one region's third is carried by the rest, nothing on reserved.
        (("a", "b", "c"), "0.01", NO_HISTORY, 6, (6, 0)),
        # Measured load below what desired is sized for lowers the floor ...
        (("a",), "0.01", STEADY_TWO, 6, (4, 2)),
        (("a",), "0.01", samples([(4, 0.0)] * 12), 4, (4, 0)),
        # ... a higher one never raises it above the sized-for load.
        (("a",), "0.01", samples([(5, 100.0)] * 12), 3, (1, 2)),
        # The two ends: budget 100 is SpotPreferred, budget 0 reserves the whole load.
        (("a",), "100", NO_HISTORY, 6, (6, 0)),
        (("a", "b", "c"), "0", NO_HISTORY, 6, (2, 4)),
        # A budget that affords a reclaim: 0.5% of requests covers a shortfall of 2 of the 4
        # (0.0417/h x 660 s / 3600 s x 2/4 = 0.38%), not of 3 (0.57%).
        (("a",), "0.5", NO_HISTORY, 6, (4, 2)),
    ],
)
def test_auto_keeps_the_smallest_reserved_floor_within_the_interruption_budget(
    regions: tuple[str, ...],
    budget: str,
    history: History,
    desired: int,
    expected: tuple[int, int],
) -> None:
    placement = plan(
        auto_spec(budget, regions), spot_regions(*regions), history, NOW, desired=desired
    )
    assert (placement.spot, placement.reserved) == expected
    assert placement.spread_spot is (len(regions) > 1)


def test_auto_trusts_a_measured_cold_start_and_a_calmer_prior() -> None:
    # A 0.5% budget with the default prior keeps 2 of 6 on reserved (above); a pool reclaimed
    # once a week and a 60 s recovery afford losing the whole pool.
    calm = SpotRisk(
        prior=ReclaimPrior(reclaims_per_hour=1 / 168, detection_seconds=30),
        last_cold_start_seconds=30.0,
    )
    placement = plan(auto_spec("0.5"), spot_regions("a"), NO_HISTORY, NOW, desired=6, risk=calm)
    assert (placement.spot, placement.reserved) == (6, 0)
    assert "recovery 60s" in placement.reason
    # Observed reclaims raise the rate above the prior: 20 in 24 hours.
    stormy = SpotRisk(reclaims={"a/" + H100: Reclaims(episodes=20, hours=24)})
    placement = plan(auto_spec("0.5"), spot_regions("a"), NO_HISTORY, NOW, desired=6, risk=stormy)
    assert (placement.spot, placement.reserved) == (2, 4)


def test_the_auto_reason_names_the_budget_the_floor_the_largest_pool_and_the_loss() -> None:
    regions = ("a", "b")
    placement = plan(auto_spec(regions=regions), spot_regions(*regions), STEADY_TWO, NOW, desired=5)
    assert placement.reason == (
        "5 spot, 0 reserved in a, b: Auto within interruption budget 0.01%: 0 reserved for peak "
        "GPU load 1.40 over 1h, recovery 660s (detection 60s + start 600s assumed); losing the "
        "largest spot pool "
        "a/NVIDIA-H100-80GB-HBM3 (3 spot, 0.0417 reclaims/h), the rest carries the load; "
        "expected loss 0.0000% of requests; spot spread evenly over 2 regions"
    )
    assert "\n" not in placement.reason


def test_auto_counts_each_region_and_gpu_product_as_its_own_spot_pool() -> None:
    spec = auto_spec()
    fleet = fleet_of(
        gpu_node("spot-h100", SPOT, region="a", gpus=3),
        gpu_node("spot-l4", SPOT, region="a", product=L4, memory=L4_MIB, gpus=2),
        gpu_node("reserved-0", RESERVED, region="a", gpus=100),
    )
    pools = spot_pools(spec, fleet, NOW)
    assert [(p.name, p.region, p.room) for p in pools] == [
        ("a/" + H100, "a", 3),
        ("a/" + L4, "a", 2),
    ]
    # Without a spread within a region, the largest pool may take all it has room for.
    placement = plan(spec, fleet, NO_HISTORY, NOW, desired=6)
    assert (placement.spot, placement.reserved) == (2, 4)
    assert placement.spread_spot is False


def test_auto_counts_what_a_spot_node_pool_may_provision_per_region_and_product() -> None:
    spec = auto_spec(regions=("a", "b"), gpu={"products": [H100]})
    pool = ProvisionablePool("NodePool gpu-spot", SPOT, taints=(GPU_TAINT,), gpu_room=8)
    pools = spot_pools(spec, FleetSnapshot(provisionable=(pool,)), NOW)
    assert [(p.name, p.room) for p in pools] == [("a/" + H100, 8), ("b/" + H100, 8)]


def test_history_is_ignored_by_every_policy_but_auto() -> None:
    spec = make_spec(policy="SpotPreferred")
    assert plan(spec, ROOMY, STEADY_TWO, NOW, desired=4) == plan(
        spec, ROOMY, NO_HISTORY, NOW, desired=4
    )


# --- spot loss and return ------------------------------------------------------------------------


HOLD = 300
T = [NOW + timedelta(seconds=15 * i) for i in range(100)]  # reconcile times, 15 s apart


def step(
    spec: InferenceEndpointSpec,
    fleet: FleetSnapshot,
    previous: Placement | None,
    now: datetime,
    *,
    pending: int = 0,
) -> Placement:
    """One reconcile as the controller runs it: the last placement and its episode go back in."""
    health = SpotHealth(
        pending_spot_pods=pending,
        lost_since=previous.spot_lost_since if previous else None,
        recovered_since=previous.spot_recovered_since if previous else None,
        return_after_seconds=HOLD,
    )
    return plan(spec, fleet, NO_HISTORY, now, desired=4, spot_health=health, previous=previous)


def episode(placement: Placement) -> tuple[datetime | None, datetime | None]:
    return placement.spot_lost_since, placement.spot_recovered_since


def test_spot_loss_moves_the_spot_share_to_reserved_and_returns_only_after_the_hold() -> None:
    spec = make_spec(policy="SpotPreferred", min_reserved=1)
    healthy, gone = pools(100, 100), pools(0, 100)

    first = step(spec, healthy, None, T[0])
    assert (first.spot, first.reserved, episode(first)) == (3, 1, (None, None))

    lost = step(spec, gone, first, T[1])
    assert (lost.spot, lost.reserved, episode(lost)) == (0, 4, (T[1], None))
    assert lost.placed_reason == "Placed"
    assert lost.reason == (
        "0 spot, 4 reserved in eu-west-1: SpotPreferred minReservedReplicas=1 on reserved; "
        "spot pool holds only 0: 3 moved to reserved"
    )

    still_lost = step(spec, gone, lost, T[2])
    assert (still_lost, episode(still_lost)) == (lost, (T[1], None))

    back = step(spec, healthy, still_lost, T[3])
    assert (back.spot, back.reserved, episode(back)) == (0, 4, (T[1], T[3]))
    assert back.reason == (
        "0 spot, 4 reserved in eu-west-1: SpotPreferred minReservedReplicas=1 on reserved; "
        "spot stays at 0 until healthy for 5m "
        "(lost since 2026-11-29T16:00:15Z, healthy since 2026-11-29T16:00:45Z)"
    )

    held = step(spec, healthy, back, T[3] + timedelta(seconds=HOLD - 1))
    assert (held, episode(held)) == (back, (T[1], T[3]))

    returned = step(spec, healthy, held, T[3] + timedelta(seconds=HOLD))
    assert (returned.spot, returned.reserved, episode(returned)) == (3, 1, (None, None))
    assert returned == first


def test_the_episode_is_stable_while_nothing_changes_so_persisting_it_is_no_churn() -> None:
    spec = make_spec()
    previous = step(spec, pools(1, 100), step(spec, ROOMY, None, T[0]), T[1])
    for now in T[2:10]:
        placement = step(spec, pools(1, 100), previous, now)
        assert placement == previous
        previous = placement


def test_a_new_loss_during_the_hold_restarts_it() -> None:
    spec = make_spec()
    lost = step(spec, pools(1, 100), step(spec, ROOMY, None, T[0]), T[1])
    assert (lost.spot, episode(lost)) == (1, (T[1], None))
    back = step(spec, ROOMY, lost, T[2])
    assert (back.spot, episode(back)) == (1, (T[1], T[2]))
    # Partly back is still a loss: spot stays where it was, and the healthy clock is reset.
    again = step(spec, pools(2, 100), back, T[2] + timedelta(seconds=200))
    assert (again.spot, episode(again)) == (1, (T[1], None))
    healthy = T[2] + timedelta(seconds=215)
    held = step(spec, ROOMY, again, healthy)
    assert (held.spot, episode(held)) == (1, (T[1], healthy))
    held = step(spec, ROOMY, held, healthy + timedelta(seconds=HOLD - 1))
    assert held.spot == 1
    returned = step(spec, ROOMY, held, healthy + timedelta(seconds=HOLD))
    assert (returned.spot, episode(returned)) == (4, (None, None))


def test_spot_pods_stuck_pending_move_their_share_to_reserved() -> None:
    spec = make_spec(min_reserved=1)
    before = step(spec, ROOMY, None, T[0])
    assert before.spot == 3
    moved = step(spec, ROOMY, before, T[16], pending=2)
    assert (moved.spot, moved.reserved, episode(moved)) == (1, 3, (T[16], None))
    assert "2 spot pods unscheduled > 180s: 2 moved to reserved" in moved.reason
    # The pending pods went with the scale-down; the fleet still looks roomy, but spot holds.
    held = step(spec, ROOMY, moved, T[17])
    assert (held.spot, held.reserved, episode(held)) == (1, 3, (T[16], T[17]))


def test_pending_spot_pods_without_a_previous_placement_count_against_what_spot_would_get() -> None:
    placement = plan(
        make_spec(), ROOMY, NO_HISTORY, NOW, desired=4, spot_health=SpotHealth(pending_spot_pods=9)
    )
    assert (placement.spot, placement.reserved) == (0, 4)


def test_the_hold_never_lifts_spot_above_what_the_policy_and_pool_allow() -> None:
    previous = Placement(desired=4, spot=4, reserved=0, allowed_regions=("eu-west-1",))
    health = SpotHealth(lost_since=NOW - timedelta(seconds=10))
    placement = plan(
        make_spec(max_spot=50),
        ROOMY,
        NO_HISTORY,
        NOW,
        desired=4,
        spot_health=health,
        previous=previous,
    )
    assert (placement.spot, placement.reserved) == (2, 2)


def test_without_a_previous_placement_the_hold_has_nothing_to_bound() -> None:
    health = SpotHealth(lost_since=NOW - timedelta(seconds=10))
    placement = plan(make_spec(), ROOMY, NO_HISTORY, NOW, desired=4, spot_health=health)
    assert (placement.spot, episode(placement)) == (4, (NOW - timedelta(seconds=10), NOW))


@pytest.mark.parametrize("policy", ["SpotOnly", "ReservedOnly"])
def test_spot_loss_does_not_move_replicas_under_a_fixed_policy(policy: str) -> None:
    spec = make_spec(policy=policy)
    previous = Placement(desired=4, spot=0, reserved=4, allowed_regions=("eu-west-1",))
    health = SpotHealth(pending_spot_pods=3, lost_since=NOW - timedelta(seconds=10))
    placement = plan(
        spec, pools(0, 100), NO_HISTORY, NOW, desired=4, spot_health=health, previous=previous
    )
    assert placement.spot == (4 if policy == "SpotOnly" else 0)
    assert placement.spot + placement.reserved == 4
    assert episode(placement) == (None, None)


@pytest.mark.parametrize("reason", ["NoAllowedRegion", "NoFittingGPU"])
def test_a_spec_problem_keeps_the_spot_loss_episode_for_when_it_is_fixed(reason: str) -> None:
    lost_since, recovered_since = NOW - timedelta(seconds=20), NOW - timedelta(seconds=10)
    spec = make_spec(model={"weightsGiB": 8192} if reason == "NoFittingGPU" else {})
    constraints = Constraints(
        namespace_regions=frozenset() if reason == "NoAllowedRegion" else None
    )
    placement = plan(
        spec,
        ROOMY,
        NO_HISTORY,
        NOW,
        desired=2,
        constraints=constraints,
        spot_health=SpotHealth(lost_since=lost_since, recovered_since=recovered_since),
    )
    assert placement.placed_reason == reason
    assert episode(placement) == (lost_since, recovered_since)


@pytest.mark.parametrize(
    "lost_node",
    [
        gpu_node("spot-0", SPOT, ready=False),
        gpu_node("spot-0", SPOT, unschedulable=True),
        gpu_node(
            "spot-0", SPOT, taints=(GPU_TAINT, Taint("karpenter.sh/disrupted", "", "NoSchedule"))
        ),
        gpu_node(
            "spot-0",
            SPOT,
            taints=(GPU_TAINT, Taint("node.kubernetes.io/unreachable", "", "NoExecute")),
        ),
        None,  # deleted
    ],
)
def test_every_way_of_losing_a_spot_node_moves_its_replicas_to_reserved(
    lost_node: NodeInfo | None,
) -> None:
    reserved = gpu_node("reserved-0", RESERVED)
    fleet = fleet_of(reserved) if lost_node is None else fleet_of(lost_node, reserved)
    placement = plan(make_spec(), fleet, NO_HISTORY, NOW, desired=3)
    assert (placement.spot, placement.reserved, episode(placement)) == (0, 3, (NOW, None))


# --- hot nodes and preferences -------------------------------------------------------------------


def test_a_hot_node_is_avoided_while_the_others_hold_the_replicas() -> None:
    fleet = fleet_of(
        gpu_node("spot-cool", SPOT, utilization=10.0),
        gpu_node("spot-hot", SPOT, utilization=95.0),
        gpu_node("reserved-0", RESERVED, utilization=30.0),
    )
    placement = plan(make_spec(max_spot=75), fleet, NO_HISTORY, NOW, desired=4)
    assert (placement.spot, placement.reserved) == (3, 1)
    assert placement.avoided_nodes == ("spot-hot",)
    assert placement.preferred_nodes == (("spot-cool", 100), ("reserved-0", 80))
    assert placement.reason == (
        "3 spot, 1 reserved in eu-west-1: SpotPreferred capped by maxSpotPercent=75; "
        "avoided spot-hot (GPU 95% > 85%)"
    )


def test_a_hot_node_is_excluded_from_capacity_while_cool_nodes_suffice() -> None:
    fleet = fleet_of(
        gpu_node("spot-cool", SPOT, gpus=2, utilization=10.0),
        gpu_node("spot-hot", SPOT, gpus=8, utilization=95.0),
    )
    placement = plan(make_spec(), fleet, NO_HISTORY, NOW, desired=2)
    assert placement.avoided_nodes == ("spot-hot",)
    assert [name for name, _ in placement.preferred_nodes] == ["spot-cool"]


def test_when_only_hot_nodes_remain_they_are_used_and_the_reason_says_so() -> None:
    fleet = fleet_of(
        gpu_node("spot-cool", SPOT, gpus=1, utilization=10.0),
        gpu_node("spot-hot", SPOT, gpus=8, utilization=95.0),
    )
    placement = plan(make_spec(), fleet, NO_HISTORY, NOW, desired=3)
    assert (placement.spot, placement.reserved, placement.avoided_nodes) == (3, 0, ())
    assert placement.preferred_nodes == (("spot-cool", 100), ("spot-hot", 20))
    assert placement.reason == (
        "3 spot, 0 reserved in eu-west-1: SpotPreferred; "
        "only hot spot nodes left: using spot-hot (GPU 95% > 85%)"
    )


@pytest.mark.parametrize(
    ("utilization", "max_util", "hot"),
    [(85.0, 85, False), (85.5, 85, True), (50.0, 40, True), (100.0, 100, False), (None, 1, False)],
)
def test_a_node_is_hot_only_when_its_known_utilization_is_above_the_limit(
    utilization: float | None, max_util: int, hot: bool
) -> None:
    fleet = fleet_of(gpu_node("n", SPOT, utilization=utilization), gpu_node("other", SPOT))
    placement = plan(make_spec(max_util=max_util), fleet, NO_HISTORY, NOW, desired=1)
    assert (placement.avoided_nodes == ("n",)) is hot


def test_stale_telemetry_is_unknown_not_hot() -> None:
    stale = telemetry(99.0, age_seconds=121)
    fleet = fleet_of(gpu_node("n", SPOT, doc=stale), gpu_node("other", SPOT))
    placement = plan(make_spec(), fleet, NO_HISTORY, NOW, desired=1)
    assert placement.avoided_nodes == ()
    assert ("n", 50) in placement.preferred_nodes


def test_the_endpoints_own_load_never_makes_a_node_hot_to_it() -> None:
    own_pod = PodUsage(namespace="ml", name="llama-spot-1", gpu_indexes=[0, 1, 2])
    doc = telemetry(100.0, 100.0, 100.0, 20.0, pods=[own_pod])
    fleet = fleet_of(gpu_node("n", SPOT, gpus=4, requested=3, doc=doc), gpu_node("other", SPOT))
    own = EndpointPods(gpus_by_node={"n": 3}, keys=frozenset({("ml", "llama-spot-1")}))
    assert node_utilization(fleet.nodes[0], NOW) == 80.0
    assert node_utilization(fleet.nodes[0], NOW, own.keys) == 20.0
    placement = plan(make_spec(), fleet, NO_HISTORY, NOW, desired=4, own=own)
    assert placement.avoided_nodes == ()
    assert ("n", 80) in placement.preferred_nodes


@pytest.mark.parametrize(
    ("utilization", "weight"),
    [
        (0.0, 100),
        (19.9, 100),
        (20.0, 80),
        (45.0, 60),
        (79.9, 40),
        (84.0, 20),
        (None, 50),
    ],
)
def test_preferred_weights_fall_with_utilization_in_bands_and_unknown_sits_in_the_middle(
    utilization: float | None, weight: int
) -> None:
    placement = plan(
        make_spec(max_util=100),
        fleet_of(gpu_node("n", SPOT, utilization=utilization)),
        NO_HISTORY,
        NOW,
        desired=1,
    )
    assert placement.preferred_nodes == (("n", weight),)


def test_a_fully_busy_node_still_gets_the_least_weight_not_zero() -> None:
    fleet = fleet_of(gpu_node("n", SPOT, utilization=100.0))
    assert plan(make_spec(max_util=100), fleet, NO_HISTORY, NOW, desired=1).preferred_nodes == (
        ("n", 1),
    )


def test_preferences_list_the_best_nodes_first_then_by_name_and_stop_at_the_cap() -> None:
    nodes = [gpu_node(f"n{i:03d}", SPOT, gpus=1, utilization=float(i % 5 * 20)) for i in range(100)]
    placement = plan(make_spec(max_util=100), fleet_of(*nodes), NO_HISTORY, NOW, desired=100)
    assert len(placement.preferred_nodes) == MAX_PREFERRED_NODES
    weights = [w for _, w in placement.preferred_nodes]
    assert weights == sorted(weights, reverse=True)
    assert placement.preferred_nodes[:2] == (("n000", 100), ("n005", 100))


def test_nodes_without_room_for_a_replica_and_unused_pools_are_not_preferred() -> None:
    fleet = fleet_of(
        gpu_node("spot-full", SPOT, requested=8),
        gpu_node("spot-free", SPOT),
        gpu_node("reserved-free", RESERVED),
    )
    placement = plan(make_spec(), fleet, NO_HISTORY, NOW, desired=2)
    assert placement.preferred_nodes == (("spot-free", 50),)


def test_the_reason_names_at_most_three_avoided_nodes() -> None:
    hot = [gpu_node(f"hot-{i}", SPOT, utilization=99.0) for i in range(5)]
    placement = plan(
        make_spec(), fleet_of(*hot, gpu_node("cool", SPOT)), NO_HISTORY, NOW, desired=1
    )
    assert placement.avoided_nodes == tuple(f"hot-{i}" for i in range(5))
    assert placement.reason.endswith(
        "avoided hot-0 (GPU 99% > 85%), hot-1 (GPU 99% > 85%), hot-2 (GPU 99% > 85%) and 2 more"
    )


# --- determinism ---------------------------------------------------------------------------------


def test_the_order_of_nodes_in_the_snapshot_does_not_change_the_placement() -> None:
    nodes = [
        gpu_node("c", SPOT, utilization=50.0),
        gpu_node("a", RESERVED, utilization=10.0),
        gpu_node("b", SPOT, utilization=95.0),
        gpu_node("d", RESERVED),
    ]
    spec = make_spec(policy="Auto", max_spot=50)
    forward = plan(spec, fleet_of(*nodes), STEADY_TWO, NOW, desired=6)
    backward = plan(spec, fleet_of(*nodes[::-1]), STEADY_TWO, NOW, desired=6)
    assert forward == backward


def _utilization_by_definition(
    doc: GpuTelemetry, exclude: frozenset[tuple[str, str]]
) -> float | None:
    held = {i for p in doc.pods if (p.namespace, p.name) in exclude for i in p.gpu_indexes}
    known = [
        g.utilization_percent
        for g in doc.gpus
        if g.utilization_percent is not None and g.index not in held
    ]
    return sum(known) / len(known) if known else None


@given(
    values=st.lists(st.one_of(st.none(), st.floats(0, 100)), min_size=0, max_size=8),
    holders=st.lists(st.integers(0, 7), max_size=8),
    excluded=st.sets(st.integers(0, 9), max_size=4),
)
def test_node_utilization_leaves_out_exactly_the_excluded_pods_gpus(
    values: list[float | None], holders: list[int], excluded: set[int]
) -> None:
    pods = [
        PodUsage(namespace="ml", name=f"p{n}", gpu_indexes=[gpu]) for n, gpu in enumerate(holders)
    ]
    doc = telemetry(*values, pods=pods)
    node = gpu_node("n", doc=doc)
    exclude = frozenset(("ml", f"p{n}") for n in excluded)
    # Twice: the second call reads what the node object kept from the first.
    for _ in range(2):
        assert node_utilization(node, NOW, exclude) == _utilization_by_definition(doc, exclude)


# --- elastic capacity: what node autoscalers can still add --------------------------------------


def elastic(*pools: ProvisionablePool, nodes: tuple[NodeInfo, ...] = ()) -> FleetSnapshot:
    return FleetSnapshot(nodes=nodes, observed_at=NOW, provisionable=pools)


SPOT_POOL = ProvisionablePool("NodePool gpu-spot", SPOT, taints=(GPU_TAINT,))
ON_DEMAND_POOL = ProvisionablePool("NodePool gpu-on-demand", RESERVED, taints=(GPU_TAINT,))


@pytest.mark.parametrize(
    ("policy", "spot", "reserved"),
    # Auto: one spot pool (the NodePool in eu-west-1), so reserved carries the 2.0 of load.
    [("SpotPreferred", 3, 0), ("Auto", 1, 2), ("SpotOnly", 3, 0), ("ReservedOnly", 0, 3)],
)
def test_from_zero_gpu_nodes_replicas_are_asked_of_the_autoscaler(
    policy: str, spot: int, reserved: int
) -> None:
    placement = plan(
        make_spec(policy=policy), elastic(SPOT_POOL, ON_DEMAND_POOL), NO_HISTORY, NOW, desired=3
    )
    assert (placement.spot, placement.reserved, placement.placed) == (spot, reserved, True)
    assert placement.placed_reason == "Placed"
    assert placement.allowed_regions == ("eu-west-1",)
    if spot:
        assert f"{spot} spot to be provisioned by NodePool gpu-spot" in placement.reason
    if reserved:
        assert f"{reserved} reserved to be provisioned by NodePool gpu-on-demand" in (
            placement.reason
        )


def test_spot_is_asked_for_first_even_when_only_reserved_nodes_exist() -> None:
    fleet = elastic(SPOT_POOL, nodes=(gpu_node("r-0", RESERVED, gpus=8),))
    placement = plan(make_spec(), fleet, NO_HISTORY, NOW, desired=2)
    assert (placement.spot, placement.reserved) == (2, 0)
    assert "2 spot to be provisioned by NodePool gpu-spot" in placement.reason


def test_existing_spot_slots_are_used_before_new_nodes_are_asked_for() -> None:
    fleet = elastic(SPOT_POOL, nodes=(gpu_node("s-0", SPOT, gpus=2),))
    placement = plan(make_spec(), fleet, NO_HISTORY, NOW, desired=3)
    assert placement.spot == 3
    assert [name for name, _ in placement.preferred_nodes] == ["s-0"]
    assert "1 spot to be provisioned by NodePool gpu-spot" in placement.reason


def test_a_gpu_limit_bounds_what_a_pool_can_add_and_the_rest_goes_to_reserved() -> None:
    limited = replace(SPOT_POOL, gpu_room=4)
    spec = make_spec(gpu={"count": 2})
    placement = plan(spec, elastic(limited, ON_DEMAND_POOL), NO_HISTORY, NOW, desired=3)
    assert (placement.spot, placement.reserved) == (2, 1)
    assert "spot pool holds only 2: 1 moved to reserved" in placement.reason


@pytest.mark.parametrize(
    ("pool", "why"),
    [
        (replace(SPOT_POOL, regions=frozenset({"us-east-1"})), "regions us-east-1"),
        (replace(SPOT_POOL, gpus_per_node=1), "at most 1 GPUs per node"),
        (replace(SPOT_POOL, gpu_products=frozenset({L4})), f"GPUs {L4}"),
        (replace(SPOT_POOL, gpu_memory_mib=L4_MIB), f"{L4_MIB} MiB GPUs"),
        (
            replace(SPOT_POOL, taints=(Taint("dedicated", "batch", "NoSchedule"),)),
            "taint dedicated=batch:NoSchedule",
        ),
    ],
)
def test_a_pool_that_cannot_make_a_fitting_node_does_not_count_and_says_why(
    pool: ProvisionablePool, why: str
) -> None:
    spec = make_spec(gpu={"count": 2, "products": [H100]}, model={"weightsGiB": 60})
    placement = plan(spec, elastic(pool), NO_HISTORY, NOW, desired=1)
    assert (placement.spot, placement.reserved, placement.placed_reason) == (0, 0, "NoFittingGPU")
    assert f"nor can NodePool gpu-spot (spot): {why} provision one" in placement.reason


def test_a_full_pool_still_counts_as_fitting_so_replicas_wait_rather_than_nothing_placed() -> None:
    full = replace(ON_DEMAND_POOL, gpu_room=0)
    placement = plan(make_spec(policy="ReservedOnly"), elastic(full), NO_HISTORY, NOW, desired=2)
    assert (placement.reserved, placement.placed, placement.placed_reason) == (
        2,
        False,
        "InsufficientCapacity",
    )


def test_a_spot_taint_on_a_spot_pool_is_tolerated_by_its_replicas_only() -> None:
    tainted = Taint("karpenter.sh/capacity-type", "spot", "NoSchedule")
    spot = replace(SPOT_POOL, taints=(GPU_TAINT, tainted))
    placement = plan(make_spec(), elastic(spot), NO_HISTORY, NOW, desired=2)
    assert placement.spot == 2
    reserved = replace(ON_DEMAND_POOL, taints=(GPU_TAINT, tainted))
    refused = plan(make_spec(policy="ReservedOnly"), elastic(reserved), NO_HISTORY, NOW, desired=1)
    assert refused.placed_reason == "NoFittingGPU"
