"""The cluster's conventions: parsing `conventions.yaml`, and every reader and writer of node labels
following them (node parsing, NodePools, the planner's taint check, the rendered affinity)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.test_placement_provisioning import nodepool
from tests.unit.test_render_endpoint import make_ie, share

from tidal.api.conventions import (
    DEFAULT_CONVENTIONS,
    Conventions,
    ConventionsError,
    UnknownProfileError,
    parse_conventions,
)
from tidal.api.labels import SPOT_MARKERS, CapacityType
from tidal.placement.fleet import node_info, untolerated
from tidal.placement.provisioning import declared_pools, nodepool_pools, provisionable
from tidal.render.endpoint import render_deployment

NOW = datetime(2026, 12, 6, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]

AKS = """
regionLabel: example.com/region
zoneLabel: example.com/zone
spotMarkers:
  - {key: kubernetes.azure.com/scalesetpriority, value: spot}
gpuLabelProfile: instance-type
instanceTypes:
  Standard_NC24ads_A100_v4: {gpuProduct: NVIDIA-A100-SXM4-80GB, gpuCount: 1, gpuMemoryMiB: 81920}
  Standard_ND96asr_v4: {gpuProduct: NVIDIA-A100-SXM4-40GB, gpuCount: 8, gpuMemoryMiB: 40960}
  Standard_NC4as_T4_v3: {gpuProduct: Tesla-T4, gpuCount: 1}
"""

CUSTOM = """
gpuLabelProfile: acme
gpuLabelProfiles:
  - name: acme
    productLabel: acme.example/gpu
    memoryLabel: acme.example/gpu-mib
    values: {NVIDIA-H100-80GB-HBM3: [h100, h100-sxm]}
"""


def parsed(text: str | None, override: str | None = None) -> Conventions:
    return parse_conventions(None if text is None else {"conventions.yaml": text}, override)


# --- parsing ------------------------------------------------------------------------------------


def test_no_document_is_the_cloud_defaults() -> None:
    assert parsed(None) == DEFAULT_CONVENTIONS
    assert parsed("") == DEFAULT_CONVENTIONS
    assert DEFAULT_CONVENTIONS.spot_markers == SPOT_MARKERS
    assert DEFAULT_CONVENTIONS.required.name == "gfd"


def test_a_document_sets_labels_markers_profile_and_instance_types() -> None:
    aks = parsed(AKS)
    assert (aks.region_label, aks.zone_label) == ("example.com/region", "example.com/zone")
    # Tidal's own marker is always kept, first.
    assert aks.spot_markers == (
        ("tidal.dev/capacity-type", "spot"),
        ("kubernetes.azure.com/scalesetpriority", "spot"),
    )
    assert aks.required.name == "instance-type"
    assert aks.required.product_label == "node.kubernetes.io/instance-type"
    assert aks.required.values_of("NVIDIA-A100-SXM4-80GB") == ("Standard_NC24ads_A100_v4",)
    assert [name for name, _ in aks.instance_types] == sorted(
        ["Standard_NC24ads_A100_v4", "Standard_ND96asr_v4", "Standard_NC4as_T4_v3"]
    )


@pytest.mark.parametrize(
    ("text", "override", "message"),
    [
        ("spotMarkers: [{key: 'bad key!', value: spot}]", None, r"spotMarkers\.0\.key"),
        ("spotMarkers: [{key: a.b/c, value: 'no spaces'}]", None, r"spotMarkers\.0\.value"),
        ("regionLabel: ''", None, r"regionLabel"),
        ("instanceTypes: {x: {gpuProduct: NVIDIA-L4, gpuCount: 0}}", None, r"gpuCount"),
        ("instanceTypes: {x: {gpuCount: 1}}", None, r"instanceTypes\.x\.gpuProduct"),
        ("spotMarker: []", None, r"spotMarker: Extra inputs are not permitted"),
        ("[unclosed", None, r"conventions.yaml: not YAML"),
        ("gpuLabelProfile: aks", None, r"gpuLabelProfile: unknown GPU label profile 'aks' "),
        (
            "gpuLabelProfile: instance-type",
            None,
            r"one of: gfd, karpenter-aws, gke\) \(instance-type needs instanceTypes\)",
        ),
        (
            "gpuLabelProfiles: [{name: gke, productLabel: a/b}]",
            None,
            r"gpuLabelProfiles.name 'gke' is taken",
        ),
        (None, "aks", r"TIDAL_GPU_LABEL_PROFILE: unknown GPU label profile 'aks'"),
    ],
)
def test_a_bad_document_is_refused_naming_the_field(
    text: str | None, override: str | None, message: str
) -> None:
    with pytest.raises(ConventionsError, match=message):
        parsed(text, override)


def test_the_environment_names_the_profile_over_the_document() -> None:
    assert parsed(AKS, "karpenter-aws").required.name == "karpenter-aws"
    with pytest.raises(UnknownProfileError) as error:
        parsed(AKS, "nope")
    assert error.value.from_environment
    with pytest.raises(UnknownProfileError) as error:
        parsed("gpuLabelProfile: nope")
    assert not error.value.from_environment


# --- reading nodes ------------------------------------------------------------------------------


def node(labels: dict[str, str], taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "n1", "labels": labels},
        "spec": {"taints": taints or []},
        "status": {"allocatable": {"nvidia.com/gpu": "1"}},
    }


def test_a_node_is_read_by_the_clusters_conventions() -> None:
    labels = {
        "example.com/region": "westeurope",
        "example.com/zone": "westeurope-1",
        "topology.kubernetes.io/region": "not-this-one",
        "kubernetes.azure.com/scalesetpriority": "spot",
        "node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4",
    }
    info = node_info(node(labels), 0, NOW, parsed(AKS))
    assert (info.region, info.zone) == ("westeurope", "westeurope-1")
    assert info.capacity_type is CapacityType.SPOT
    assert (info.gpu_product, info.gpu_memory_mib) == ("NVIDIA-A100-SXM4-80GB", 81920)
    # The defaults know neither the region label nor the instance type.
    plain = node_info(node(labels), 0, NOW)
    assert (plain.region, plain.gpu_product) == ("not-this-one", None)


def test_markers_the_cluster_left_out_no_longer_mark_spot() -> None:
    # Karpenter-only markers: a GKE spot label means nothing on this cluster.
    karpenter = parsed("spotMarkers: [{key: karpenter.sh/capacity-type, value: spot}]")
    gke = {"cloud.google.com/gke-spot": "true"}
    assert karpenter.capacity_type(gke) is CapacityType.RESERVED
    assert DEFAULT_CONVENTIONS.capacity_type(gke) is CapacityType.SPOT


def test_a_custom_profile_reads_a_nodes_gpu_and_is_required_by_replicas() -> None:
    acme = parsed(CUSTOM)
    labels = {"acme.example/gpu": "h100-sxm", "acme.example/gpu-mib": "81559"}
    assert acme.gpu_of(labels) == ("NVIDIA-H100-80GB-HBM3", 81559)
    # GFD's labels are still read first.
    assert acme.gpu_of({**labels, "nvidia.com/gpu.product": "NVIDIA-L4"})[0] == "NVIDIA-L4"
    deployment = render_deployment(
        make_ie({"gpu": {"products": ["NVIDIA-H100-80GB-HBM3"]}}),
        CapacityType.RESERVED,
        share(1, min_gpu_memory_mib=70000, conventions=acme),
    )
    expressions = _terms(deployment)[0]["matchExpressions"]
    assert {"key": "acme.example/gpu", "operator": "In", "values": ["h100", "h100-sxm"]} in (
        expressions
    )
    assert {"key": "acme.example/gpu-mib", "operator": "Gt", "values": ["69999"]} in expressions


def test_spot_taints_are_the_conventions_markers() -> None:
    aks = parsed(AKS)
    taints = [
        {"key": "kubernetes.azure.com/scalesetpriority", "value": "spot", "effect": "NoSchedule"},
        {"key": "cloud.google.com/gke-spot", "value": "true", "effect": "NoSchedule"},
    ]
    info = node_info(node({}, taints), 0, NOW, aks)
    blocking = untolerated(info.taints, CapacityType.SPOT)
    # The AKS taint is a spot marker here (tolerated); GKE's is not on this cluster.
    assert [t.key for t in blocking] == ["cloud.google.com/gke-spot"]
    assert untolerated(node_info(node({}, taints), 0, NOW).taints, CapacityType.SPOT) == ()


# --- writing affinity ---------------------------------------------------------------------------


def _terms(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    terms: list[dict[str, Any]] = spec["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    return terms


def test_replicas_require_instance_types_region_label_and_markers_of_the_cluster() -> None:
    aks = parsed(AKS)
    ie = make_ie({"gpu": {"products": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-SXM4-40GB"]}})
    spot = render_deployment(ie, CapacityType.SPOT, share(1, conventions=aks))
    terms = _terms(spot)
    assert len(terms) == 2  # one per spot marker
    for term, marker in zip(terms, aks.spot_markers, strict=True):
        expressions = term["matchExpressions"]
        assert expressions[0] == {
            "key": "example.com/region",
            "operator": "In",
            "values": ["eu-west-1", "eu-central-1"],
        }
        assert {
            "key": "node.kubernetes.io/instance-type",
            "operator": "In",
            "values": ["Standard_NC24ads_A100_v4", "Standard_ND96asr_v4"],
        } in expressions
        assert expressions[-1] == {"key": marker[0], "operator": "In", "values": [marker[1]]}
        # No GPU label that appears only once the GPU operator ran.
        assert not any(e["key"].startswith("nvidia.com/") for e in expressions)
    tolerated = {
        (t["key"], t.get("value")) for t in spot["spec"]["template"]["spec"]["tolerations"]
    }
    assert tolerated == {("nvidia.com/gpu", None), *aks.spot_markers}

    reserved = render_deployment(ie, CapacityType.RESERVED, share(1, conventions=aks))
    (term,) = _terms(reserved)
    assert [e for e in term["matchExpressions"] if e["operator"] == "NotIn"] == [
        {"key": key, "operator": "NotIn", "values": [value]} for key, value in aks.spot_markers
    ]


@pytest.mark.parametrize(
    ("gpu", "floor", "types"),
    [
        ({}, None, ["Standard_NC24ads_A100_v4", "Standard_NC4as_T4_v3", "Standard_ND96asr_v4"]),
        ({"count": 2}, None, ["Standard_ND96asr_v4"]),  # one GPU is too few
        ({}, 50000, ["Standard_NC24ads_A100_v4", "Standard_NC4as_T4_v3"]),  # T4: memory unknown
        ({"products": ["Tesla-T4"], "count": 4}, None, []),
    ],
)
def test_replicas_require_the_instance_types_they_fit(
    gpu: dict[str, Any], floor: int | None, types: list[str]
) -> None:
    deployment = render_deployment(
        make_ie({"gpu": gpu}),
        CapacityType.RESERVED,
        share(1, min_gpu_memory_mib=floor, conventions=parsed(AKS)),
    )
    expressions = _terms(deployment)[0]["matchExpressions"]
    on_type = [e for e in expressions if e["key"] == "node.kubernetes.io/instance-type"]
    if types:
        assert on_type == [
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": types}
        ]
    else:  # nothing fits: a valid pair that matches no node
        assert [e["operator"] for e in on_type] == ["Exists", "DoesNotExist"]


# --- what autoscalers can add -------------------------------------------------------------------


def test_a_nodepool_pinned_to_mapped_instance_types_is_a_gpu_pool_of_their_products() -> None:
    aks = parsed(AKS)
    pinned = nodepool(
        "a100",
        taints=[],
        requirements=[
            {
                "key": "node.kubernetes.io/instance-type",
                "operator": "In",
                "values": ["Standard_NC24ads_A100_v4", "Standard_ND96asr_v4"],
            },
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
        ],
    )
    (pool,) = nodepool_pools([pinned], aks)
    assert pool.gpu_products == frozenset({"NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-SXM4-40GB"})
    assert (pool.gpus_per_node, pool.gpu_memory_mib) == (8, 81920)
    # Without the mapping nothing says the pool makes GPUs: not counted.
    assert nodepool_pools([pinned]) == ()
    # One unmapped type: the products are not known, so the pool is not counted by its types.
    mixed = nodepool(
        "mixed",
        taints=[],
        requirements=[
            {
                "key": "node.kubernetes.io/instance-type",
                "operator": "In",
                "values": ["Standard_NC24ads_A100_v4", "Standard_D4s_v5"],
            }
        ],
    )
    assert nodepool_pools([mixed], aks) == ()


def test_pool_taints_are_judged_by_the_conventions() -> None:
    aks = parsed(AKS)
    text = """
pools:
- name: aks-spot
  capacityType: spot
  regions: [westeurope]
  gpusPerNode: 1
  maxNodes: 2
  nodeLabels: {kubernetes.azure.com/agentpool: gpuspot}
  taints: [{key: kubernetes.azure.com/scalesetpriority, value: spot, effect: NoSchedule}]
"""
    (pool,) = provisionable((), declared_pools({"capacity.yaml": text}), (), aks)
    assert untolerated(pool.taints, CapacityType.SPOT) == ()
    assert len(untolerated(pool.taints, CapacityType.RESERVED)) == 1


@pytest.mark.parametrize(
    "example", sorted((REPO / "manifests" / "examples").glob("tidal-capacity-*.yaml"))
)
def test_the_shipped_examples_parse(example: Path) -> None:
    configmap = yaml.safe_load(example.read_text())
    assert configmap["metadata"]["name"] == "tidal-capacity"
    assert configmap["metadata"]["labels"] == {"app.kubernetes.io/part-of": "tidal"}
    conventions = parse_conventions(configmap["data"])
    assert conventions != DEFAULT_CONVENTIONS
    declared_pools(configmap["data"])  # raises on a bad pool
