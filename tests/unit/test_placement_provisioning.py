"""What node autoscalers can still add: Karpenter NodePools and declared pools -> pools."""

from __future__ import annotations

from typing import Any

import pytest

from tidal.api.labels import CapacityType
from tidal.placement.model import NodeInfo, ProvisionablePool, Taint
from tidal.placement.provisioning import (
    CapacityError,
    declared_pools,
    nodepool_pools,
    provisionable,
)

SPOT, RESERVED = CapacityType.SPOT, CapacityType.RESERVED
GPU_TAINT = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}


def nodepool(
    name: str = "gpu",
    *,
    requirements: list[dict[str, Any]] | None = None,
    taints: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": labels or {}},
                "spec": {
                    "requirements": requirements or [],
                    "taints": [GPU_TAINT] if taints is None else taints,
                    "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass"},
                },
            },
            "limits": limits or {},
        },
        "status": status or {},
    }


def req(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


CT = "karpenter.sh/capacity-type"


@pytest.mark.parametrize(
    ("requirements", "labels", "expected"),
    [
        # Karpenter launches on-demand unless told otherwise.
        ([], {}, [RESERVED]),
        ([req(CT, "In", "spot")], {}, [SPOT]),
        ([req(CT, "In", "spot", "on-demand")], {}, [RESERVED, SPOT]),
        ([req(CT, "In", "on-demand", "reserved")], {}, [RESERVED]),
        ([req(CT, "NotIn", "spot")], {}, [RESERVED]),
        ([req(CT, "Exists")], {}, [RESERVED, SPOT]),
        ([], {CT: "spot"}, [SPOT]),
    ],
)
def test_a_nodepool_gives_one_pool_per_capacity_type_it_launches(
    requirements: list[dict[str, Any]], labels: dict[str, str], expected: list[CapacityType]
) -> None:
    pools = nodepool_pools([nodepool(requirements=requirements, labels=labels)])
    assert sorted(p.capacity_type for p in pools) == sorted(expected)
    assert {p.name for p in pools} == {"NodePool gpu"}


def test_a_nodepool_reads_its_regions_gpu_shape_taints_and_room() -> None:
    (pool,) = nodepool_pools(
        [
            nodepool(
                "h100-spot",
                requirements=[
                    req(CT, "In", "spot"),
                    req("topology.kubernetes.io/region", "In", "eu-west-1", "eu-central-1"),
                    req("nvidia.com/gpu.product", "In", "NVIDIA-H100-80GB-HBM3"),
                    req("karpenter.k8s.aws/instance-gpu-count", "In", "4", "8"),
                    req("karpenter.k8s.aws/instance-gpu-memory", "Lt", "81921"),
                ],
                limits={"cpu": "1000", "nvidia.com/gpu": "64"},
                status={"resources": {"nvidia.com/gpu": "16", "cpu": "384"}},
            )
        ]
    )
    assert pool == ProvisionablePool(
        name="NodePool h100-spot",
        capacity_type=SPOT,
        regions=frozenset({"eu-west-1", "eu-central-1"}),
        gpu_products=frozenset({"NVIDIA-H100-80GB-HBM3"}),
        gpus_per_node=8,
        gpu_memory_mib=81920,
        gpu_room=48,
        taints=(Taint("nvidia.com/gpu", "", "NoSchedule"),),
    )


def test_a_nodepool_without_a_gpu_limit_has_unlimited_room_and_a_full_one_none() -> None:
    (unlimited,) = nodepool_pools([nodepool()])
    assert unlimited.gpu_room is None
    (full,) = nodepool_pools(
        [nodepool(limits={"nvidia.com/gpu": "8"}, status={"resources": {"nvidia.com/gpu": "9"}})]
    )
    assert full.gpu_room == 0


def test_nodepools_that_do_not_mention_gpus_or_are_not_ready_provision_nothing() -> None:
    general = nodepool("general", taints=[], requirements=[req(CT, "In", "spot")])
    broken = nodepool(status={"conditions": [{"type": "Ready", "status": "False"}]})
    by_name = nodepool(
        "by-gpu-name",
        taints=[],
        requirements=[req("karpenter.k8s.aws/instance-gpu-name", "In", "h100")],
    )
    by_limit = nodepool("by-limit", taints=[], limits={"nvidia.com/gpu": "16"})
    names = {p.name for p in nodepool_pools([general, broken, by_name, by_limit])}
    assert names == {"NodePool by-gpu-name", "NodePool by-limit"}


CAPACITY = """
pools:
- name: gpu-spot-eu
  capacityType: spot
  regions: [eu-west-1]
  gpusPerNode: 8
  gpuMemoryMiB: 81559
  gpuProducts: [NVIDIA-H100-80GB-HBM3]
  maxNodes: 4
  nodeLabels: {eks.amazonaws.com/nodegroup: gpu-spot-eu}
  taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
"""


def node(name: str, group: str) -> NodeInfo:
    return NodeInfo(name, "eu-west-1", None, SPOT, labels={"eks.amazonaws.com/nodegroup": group})


def test_a_declared_pool_can_add_its_max_nodes_less_the_nodes_it_made() -> None:
    declared = declared_pools({"capacity.yaml": CAPACITY})
    fleet = [node("a", "gpu-spot-eu"), node("b", "gpu-spot-eu"), node("c", "other")]
    (pool,) = provisionable((), declared, fleet)
    assert pool == ProvisionablePool(
        name="declared pool gpu-spot-eu",
        capacity_type=SPOT,
        regions=frozenset({"eu-west-1"}),
        gpu_products=frozenset({"NVIDIA-H100-80GB-HBM3"}),
        gpus_per_node=8,
        gpu_memory_mib=81559,
        gpu_room=16,  # (4 - 2) nodes x 8 GPUs
        taints=(Taint("nvidia.com/gpu", "", "NoSchedule"),),
    )
    assert declared_pools(None) == ()
    assert declared_pools({"other": "x"}) == ()


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("pools: [{name: a}]", "pools.0.capacityType: Field required"),
        (CAPACITY.replace("capacityType: spot", "capacityType: cheap"), "pools.0.capacityType"),
        (CAPACITY.replace("maxNodes: 4", "maxNodes: -1"), "pools.0.maxNodes"),
        (CAPACITY.replace("gpusPerNode", "gpusPerNod"), "pools.0.gpusPerNod"),
        (CAPACITY + CAPACITY.replace("pools:\n", ""), "pools.name repeated: gpu-spot-eu"),
        ("pools: [", "not YAML"),
    ],
)
def test_a_capacity_configmap_that_does_not_parse_names_the_field(text: str, names: str) -> None:
    with pytest.raises(CapacityError, match=names.replace(".", r"\.")):
        declared_pools({"capacity.yaml": text})


def test_a_nodepool_pinning_gpus_by_an_autoscaler_label_gives_their_gfd_names() -> None:
    (pool,) = nodepool_pools(
        [nodepool(requirements=[req("karpenter.k8s.aws/instance-gpu-name", "In", "a100", "l4")])]
    )
    assert pool.gpu_products == frozenset(
        {"NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-SXM4-40GB", "NVIDIA-L4"}
    )
