"""The per-cloud GPU label profiles: reading a node's GPU, and the labels replicas require."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.test_render_endpoint import make_ie, share

from tidal.api.conventions import Conventions, parse_conventions
from tidal.api.gpulabels import GFD, GKE, KARPENTER_AWS, GpuLabelProfile, gpu_of
from tidal.api.labels import CapacityType
from tidal.errors import PermanentError
from tidal.render.endpoint import render_deployment


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, (None, None)),
        # GPU Feature Discovery, once the GPU operator ran on the node.
        (
            {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559"},
            ("NVIDIA-H100-80GB-HBM3", 81559),
        ),
        # Karpenter on AWS, from the instance type: before the node exists.
        (
            {
                "karpenter.k8s.aws/instance-gpu-name": "l4",
                "karpenter.k8s.aws/instance-gpu-memory": "23034",
            },
            ("NVIDIA-L4", 23034),
        ),
        # One name, two products: the memory tells them apart.
        (
            {
                "karpenter.k8s.aws/instance-gpu-name": "a100",
                "karpenter.k8s.aws/instance-gpu-memory": "40960",
            },
            ("NVIDIA-A100-SXM4-40GB", 40960),
        ),
        ({"karpenter.k8s.aws/instance-gpu-name": "a100"}, ("NVIDIA-A100-SXM4-80GB", None)),
        ({"cloud.google.com/gke-accelerator": "nvidia-l4"}, ("NVIDIA-L4", None)),
        # GFD's product wins; memory from whichever profile says it.
        (
            {
                "nvidia.com/gpu.product": "NVIDIA-L4",
                "karpenter.k8s.aws/instance-gpu-name": "l4",
                "karpenter.k8s.aws/instance-gpu-memory": "23034",
            },
            ("NVIDIA-L4", 23034),
        ),
        # A product no profile maps is named as the label spells it.
        ({"karpenter.k8s.aws/instance-gpu-name": "b200"}, ("b200", None)),
    ],
)
def test_a_nodes_gpu_is_read_from_the_first_profile_whose_labels_it_carries(
    labels: dict[str, str], expected: tuple[str | None, int | None]
) -> None:
    assert gpu_of(labels) == expected


def _terms(labels: GpuLabelProfile, spec: dict[str, Any]) -> list[dict[str, Any]]:
    conventions = Conventions(required_profile=labels.name)
    deployment = render_deployment(
        make_ie(spec),
        CapacityType.RESERVED,
        share(2, min_gpu_memory_mib=20000, conventions=conventions),
    )
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms: list[dict[str, Any]] = affinity["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    return terms


@pytest.mark.parametrize(
    ("labels", "product", "memory"),
    [
        (
            GFD,
            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4"]},
            {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["19999"]},
        ),
        (
            KARPENTER_AWS,
            {"key": "karpenter.k8s.aws/instance-gpu-name", "operator": "In", "values": ["l4"]},
            {"key": "karpenter.k8s.aws/instance-gpu-memory", "operator": "Gt", "values": ["19999"]},
        ),
        (
            GKE,
            {"key": "cloud.google.com/gke-accelerator", "operator": "In", "values": ["nvidia-l4"]},
            None,
        ),
    ],
)
def test_replicas_require_the_gpu_on_the_labels_of_the_chosen_profile(
    labels: GpuLabelProfile, product: dict[str, Any], memory: dict[str, Any] | None
) -> None:
    terms = _terms(labels, {"gpu": {"count": 1, "products": ["NVIDIA-L4"]}})
    for term in terms:
        expressions = term["matchExpressions"]
        assert product in expressions
        gpu_keys = {e["key"] for e in expressions} & {
            "nvidia.com/gpu.product",
            "nvidia.com/gpu.memory",
            "karpenter.k8s.aws/instance-gpu-name",
            "karpenter.k8s.aws/instance-gpu-memory",
            "cloud.google.com/gke-accelerator",
        }
        # Nothing else of another profile: its labels may not exist before the node does.
        assert gpu_keys == {product["key"]} | ({memory["key"]} if memory else set())
        if memory is not None:
            assert memory in expressions


def test_an_unknown_profile_is_refused_naming_the_known_ones() -> None:
    assert parse_conventions(None, "karpenter-aws").required is KARPENTER_AWS
    assert parse_conventions(None).required is GFD
    with pytest.raises(
        PermanentError, match=r"TIDAL_GPU_LABEL_PROFILE.*'aks'.*gfd, karpenter-aws, gke"
    ):
        parse_conventions(None, "aks")
