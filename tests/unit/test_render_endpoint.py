"""Builders of an InferenceEndpoint's Deployments and Service, tested against whole objects."""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

import pytest
from pydantic import ValidationError

from tidal.api.endpoint import InferenceEndpoint
from tidal.api.labels import RENDER_HASH, SPOT_MARKERS, TEMPLATE_HASH, CapacityType
from tidal.errors import PermanentError
from tidal.placement import fleet
from tidal.render.endpoint import (
    Share,
    child_labels,
    deployment_name,
    endpoint_url,
    keep_preferences,
    render_deployment,
    render_hash,
    render_service,
    stamp,
)

UID = "0b6f1a1e-3c59-4b53-9a57-1d2f3e4a5b6c"

# What Tidal adds to every Triton command line for its SLO queries (repeatable, never replaced).
TRITON_METRICS = [
    "--metrics-config=summary_latencies=true",
    "--metrics-config=histogram_latencies=true",
]


def make_ie(spec: dict[str, Any] | None = None, **metadata: Any) -> InferenceEndpoint:
    body_spec: dict[str, Any] = {
        "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "residency": {"regions": ["eu-west-1", "eu-central-1"]},
    }
    body_spec.update(spec or {})
    meta = {"name": "chat", "namespace": "ml", "uid": UID, "generation": 1, **metadata}
    return InferenceEndpoint.model_validate({"metadata": meta, "spec": body_spec})


REGIONS = ("eu-west-1", "eu-central-1")


def share(replicas: int = 1, **fields: Any) -> Share:
    """A share in the endpoint's two regions unless a test says otherwise."""
    return Share(replicas=replicas, regions=fields.pop("regions", REGIONS), **fields)


OWNER = {
    "apiVersion": "tidal.dev/v1alpha1",
    "kind": "InferenceEndpoint",
    "name": "chat",
    "uid": UID,
    "controller": True,
    "blockOwnerDeletion": True,
}
REGION = {
    "key": "topology.kubernetes.io/region",
    "operator": "In",
    "values": ["eu-west-1", "eu-central-1"],
}
MARKERS = [
    ("tidal.dev/capacity-type", "spot"),
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("cloud.google.com/gke-spot", "true"),
    ("cloud.google.com/gke-preemptible", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
]
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def expected_deployment(capacity_type: str, replicas: int) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": "tidal-inference",
        "app.kubernetes.io/instance": "chat",
        "app.kubernetes.io/managed-by": "tidal",
        "tidal.dev/endpoint": "chat",
        "tidal.dev/capacity-type": capacity_type,
    }
    if capacity_type == "spot":
        terms = [
            [REGION, {"key": key, "operator": "In", "values": [value]}] for key, value in MARKERS
        ]
        tolerations = [
            GPU_TOLERATION,
            *(
                {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
                for key, value in MARKERS
            ),
        ]
    else:
        terms = [
            [
                REGION,
                *({"key": key, "operator": "NotIn", "values": [value]} for key, value in MARKERS),
            ]
        ]
        tolerations = [GPU_TOLERATION]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"chat-{capacity_type}",
            "namespace": "ml",
            "labels": labels,
            "annotations": {TEMPLATE_HASH: ANY},
            "ownerReferences": [OWNER],
        },
        "spec": {
            "replicas": replicas,
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "tidal-inference",
                    "tidal.dev/endpoint": "chat",
                    "tidal.dev/capacity-type": capacity_type,
                }
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    # Lifted by the reconcile once the replica is Ready.
                    "annotations": {"karpenter.sh/do-not-disrupt": "true", TEMPLATE_HASH: ANY},
                },
                "spec": {
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": term} for term in terms]
                            }
                        }
                    },
                    "tolerations": tolerations,
                    "terminationGracePeriodSeconds": 90,
                    "containers": [
                        {
                            "name": "engine",
                            "image": "vllm/vllm-openai:v0.31.0",
                            "args": [
                                "meta-llama/Llama-3.1-8B-Instruct",
                                "--served-model-name",
                                "meta-llama/Llama-3.1-8B-Instruct",
                                "--port",
                                "8000",
                            ],
                            "env": [
                                {"name": "HOME", "value": "/var/cache/tidal"},
                                {"name": "USER", "value": "tidal"},
                                {"name": "LOGNAME", "value": "tidal"},
                                {"name": "HF_HOME", "value": "/var/cache/tidal/huggingface"},
                            ],
                            "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                            "resources": {"limits": {"nvidia.com/gpu": 1}},
                            "startupProbe": {
                                "httpGet": {"path": "/health", "port": "http"},
                                "periodSeconds": 5,
                                "timeoutSeconds": 5,
                                "failureThreshold": 360,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/health", "port": "http"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 5,
                                "failureThreshold": 6,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/health", "port": "http"},
                                "periodSeconds": 5,
                                "timeoutSeconds": 2,
                                "failureThreshold": 3,
                            },
                            "lifecycle": {"preStop": {"sleep": {"seconds": 60}}},
                            "securityContext": {
                                "runAsNonRoot": True,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "volumeMounts": [
                                {"name": "cache", "mountPath": "/var/cache/tidal"},
                                {"name": "dshm", "mountPath": "/dev/shm"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "cache", "emptyDir": {}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
                    ],
                },
            },
        },
    }


# --- whole objects ----------------------------------------------------------------------------


def test_reserved_deployment_of_a_minimal_vllm_endpoint() -> None:
    assert render_deployment(make_ie(), CapacityType.RESERVED, share(2)) == expected_deployment(
        "reserved", 2
    )


def test_spot_deployment_of_a_minimal_vllm_endpoint() -> None:
    assert render_deployment(make_ie(), CapacityType.SPOT, share(3)) == expected_deployment(
        "spot", 3
    )


def test_service_of_a_minimal_endpoint() -> None:
    assert render_service(make_ie()) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "chat",
            "namespace": "ml",
            "labels": {
                "app.kubernetes.io/name": "tidal-inference",
                "app.kubernetes.io/instance": "chat",
                "app.kubernetes.io/managed-by": "tidal",
                "tidal.dev/endpoint": "chat",
            },
            "ownerReferences": [OWNER],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": "tidal-inference", "tidal.dev/endpoint": "chat"},
            "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
        },
    }


# --- targeted properties ----------------------------------------------------------------------


def container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def terms(obj: dict[str, Any]) -> list[list[dict[str, Any]]]:
    affinity = obj["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    required = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    return [term["matchExpressions"] for term in required["nodeSelectorTerms"]]


def test_a_zero_share_is_rendered_as_zero_replicas_not_omitted() -> None:
    assert render_deployment(make_ie(), CapacityType.SPOT, share(0))["spec"]["replicas"] == 0


def test_negative_replicas_are_a_bug() -> None:
    with pytest.raises(ValueError, match="negative"):
        render_deployment(make_ie(), CapacityType.SPOT, share(-1))


def test_the_service_selects_the_pods_of_both_deployments_and_no_others() -> None:
    ie = make_ie()
    selector = render_service(ie)["spec"]["selector"]
    for capacity_type in CapacityType:
        pod_labels = render_deployment(ie, capacity_type, share(1))["spec"]["template"]["metadata"]
        assert selector.items() <= pod_labels["labels"].items()
    other = make_ie(name="chat2")
    other_labels = render_deployment(other, CapacityType.SPOT, share(1))["spec"]["template"][
        "metadata"
    ]["labels"]
    assert not selector.items() <= other_labels.items()


def test_each_deployment_selects_only_its_own_pods() -> None:
    ie = make_ie()
    spot = render_deployment(ie, CapacityType.SPOT, share(1))
    reserved = render_deployment(ie, CapacityType.RESERVED, share(1))
    spot_selector = spot["spec"]["selector"]["matchLabels"]
    reserved_pods = reserved["spec"]["template"]["metadata"]["labels"]
    assert spot_selector.items() <= spot["spec"]["template"]["metadata"]["labels"].items()
    assert not spot_selector.items() <= reserved_pods.items()


def test_child_labels_list_back_every_child() -> None:
    ie = make_ie()
    selector = child_labels("chat")
    for obj in (
        render_deployment(ie, CapacityType.SPOT, share(1)),
        render_deployment(ie, CapacityType.RESERVED, share(1)),
    ):
        assert selector.items() <= obj["metadata"]["labels"].items()
        assert selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
    assert selector.items() <= render_service(ie)["metadata"]["labels"].items()


def test_names_are_deterministic() -> None:
    assert deployment_name("chat", CapacityType.SPOT) == "chat-spot"
    assert deployment_name("chat", CapacityType.RESERVED) == "chat-reserved"
    assert render_service(make_ie())["metadata"]["name"] == "chat"


def test_url_is_the_service_cluster_dns_name_and_port() -> None:
    ie = make_ie({"runtime": {"port": 9000}})
    assert endpoint_url(ie) == "http://chat.ml.svc.cluster.local:9000"
    assert render_service(ie)["spec"]["ports"][0]["port"] == 9000
    assert (
        container(render_deployment(ie, CapacityType.SPOT, share(1)))["ports"][0]["containerPort"]
        == 9000
    )


def node_matches(term: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    """Evaluate one node selector term the way the scheduler does (In/NotIn/Gt only)."""
    for expr in term:
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
        if expr["operator"] == "Gt" and (value is None or int(value) <= int(expr["values"][0])):
            return False
    return True


def schedulable(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    return any(node_matches(term, labels) for term in terms(obj))


EU = {"topology.kubernetes.io/region": "eu-west-1"}


@pytest.mark.parametrize(
    ("node_labels", "expected"),
    [
        ({}, "reserved"),  # no marker at all is reserved
        ({"tidal.dev/capacity-type": "reserved"}, "reserved"),
        ({"tidal.dev/capacity-type": "spot"}, "spot"),
        ({"karpenter.sh/capacity-type": "on-demand"}, "reserved"),
        ({"karpenter.sh/capacity-type": "spot"}, "spot"),
        ({"eks.amazonaws.com/capacityType": "ON_DEMAND"}, "reserved"),
        ({"eks.amazonaws.com/capacityType": "SPOT"}, "spot"),
        ({"cloud.google.com/gke-spot": "true"}, "spot"),
        ({"cloud.google.com/gke-preemptible": "true"}, "spot"),
        ({"kubernetes.azure.com/scalesetpriority": "regular"}, "reserved"),
        ({"kubernetes.azure.com/scalesetpriority": "spot"}, "spot"),
        # Any spot marker wins: the cloud reclaims the node whatever Tidal's label claims.
        ({"tidal.dev/capacity-type": "reserved", "karpenter.sh/capacity-type": "spot"}, "spot"),
        ({"tidal.dev/capacity-type": "spot", "karpenter.sh/capacity-type": "on-demand"}, "spot"),
        ({"tidal.dev/capacity-type": "reserved", "eks.amazonaws.com/capacityType": "SPOT"}, "spot"),
    ],
)
def test_every_node_is_eligible_for_exactly_one_capacity_type_the_planners(
    node_labels: dict[str, str], expected: str
) -> None:
    ie = make_ie()
    labels = {**EU, **node_labels}
    eligible = {
        ct for ct in CapacityType if schedulable(render_deployment(ie, ct, share(1)), labels)
    }
    assert eligible == {expected}
    # The planner counts a node as capacity of the same type the scheduler will use it for.
    assert fleet.capacity_type(labels).value == expected


def test_no_replica_is_eligible_outside_the_regions_of_its_share() -> None:
    ie = make_ie()
    for ct in CapacityType:
        obj = render_deployment(ie, ct, share(1))
        assert all(REGION in term for term in terms(obj))
        assert not schedulable(obj, {"topology.kubernetes.io/region": "us-east-1"})
        assert not schedulable(obj, {})  # a node without a region is not in any region
        # The share's regions, not the spec's: a policy may have removed some.
        narrowed = render_deployment(ie, ct, share(1, regions=("eu-central-1",)))
        node = {"tidal.dev/capacity-type": ct}
        assert not schedulable(narrowed, {**EU, **node})
        assert schedulable(narrowed, {"topology.kubernetes.io/region": "eu-central-1", **node})


def test_without_an_allowed_region_no_node_matches_even_when_scaled_by_hand() -> None:
    obj = render_deployment(make_ie(), CapacityType.RESERVED, share(0, regions=()))
    assert obj["spec"]["replicas"] == 0
    for term in terms(obj):
        operators = {e["operator"] for e in term if e["key"] == "topology.kubernetes.io/region"}
        assert operators == {"Exists", "DoesNotExist"}  # contradictory: matches nothing
    assert all("values" not in e or e["values"] for term in terms(obj) for e in term)


def test_gpu_products_and_memory_bound_every_term() -> None:
    ie = make_ie(
        {"gpu": {"count": 2, "products": ["NVIDIA-H100-80GB-HBM3"], "minMemoryMiB": 81000}}
    )
    obj = render_deployment(ie, CapacityType.RESERVED, share(1))
    for term in terms(obj):
        assert {
            "key": "nvidia.com/gpu.product",
            "operator": "In",
            "values": ["NVIDIA-H100-80GB-HBM3"],
        } in term
        assert {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["80999"]} in term
    h100 = {
        **EU,
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.memory": "81559",
    }
    assert schedulable(obj, h100)
    assert not schedulable(obj, {**h100, "nvidia.com/gpu.memory": "40960"})
    assert not schedulable(obj, {**h100, "nvidia.com/gpu.product": "NVIDIA-A10G"})
    assert container(obj)["resources"]["limits"] == {"nvidia.com/gpu": 2}


def test_the_planners_memory_floor_raises_the_specs() -> None:
    ie = make_ie({"gpu": {"minMemoryMiB": 20000}})
    obj = render_deployment(ie, CapacityType.SPOT, share(1, min_gpu_memory_mib=40000))
    for term in terms(obj):
        assert {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["39999"]} in term
    # A lower planner floor never lowers the spec's.
    obj = render_deployment(ie, CapacityType.SPOT, share(1, min_gpu_memory_mib=10000))
    for term in terms(obj):
        assert {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["19999"]} in term


def test_avoided_nodes_are_excluded_from_every_term() -> None:
    obj = render_deployment(
        make_ie(), CapacityType.SPOT, share(2, avoided_nodes=("hot-b", "hot-a"))
    )
    avoid = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["hot-a", "hot-b"]}
    assert all(avoid in term for term in terms(obj))
    node = {**EU, "tidal.dev/capacity-type": "spot"}
    assert not schedulable(obj, {**node, "kubernetes.io/hostname": "hot-a"})
    assert schedulable(obj, {**node, "kubernetes.io/hostname": "cool"})


def test_preferred_nodes_become_one_weighted_term_per_weight_heaviest_first() -> None:
    preferred = (("n3", 40), ("n1", 100), ("n2", 100), ("n4", 50))
    obj = render_deployment(make_ie(), CapacityType.SPOT, share(2, preferred_nodes=preferred))
    affinity = obj["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    hostname = "kubernetes.io/hostname"
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "weight": 100,
            "preference": {
                "matchExpressions": [{"key": hostname, "operator": "In", "values": ["n1", "n2"]}]
            },
        },
        {
            "weight": 50,
            "preference": {
                "matchExpressions": [{"key": hostname, "operator": "In", "values": ["n4"]}]
            },
        },
        {
            "weight": 40,
            "preference": {
                "matchExpressions": [{"key": hostname, "operator": "In", "values": ["n3"]}]
            },
        },
    ]


def test_no_preferences_render_no_preferred_affinity() -> None:
    affinity = render_deployment(make_ie(), CapacityType.SPOT, share(1))["spec"]["template"]["spec"]
    assert (
        "preferredDuringSchedulingIgnoredDuringExecution"
        not in affinity["affinity"]["nodeAffinity"]
    )


def test_preferences_do_not_change_the_template_hash_but_hard_constraints_do() -> None:
    ie = make_ie()

    def template_hash(**fields: Any) -> str:
        return str(
            render_deployment(ie, CapacityType.SPOT, share(1, **fields))["metadata"]["annotations"][
                TEMPLATE_HASH
            ]
        )

    base = template_hash()
    assert template_hash(preferred_nodes=(("n1", 100),)) == base
    assert template_hash(avoided_nodes=("n1",)) != base
    assert template_hash(regions=("eu-west-1",)) != base
    assert template_hash(min_gpu_memory_mib=1) != base
    assert (
        render_deployment(ie, CapacityType.SPOT, share(5))["metadata"]["annotations"][TEMPLATE_HASH]
        == base
    )


def test_pods_carry_their_deployments_template_hash() -> None:
    obj = render_deployment(make_ie(), CapacityType.SPOT, share(1, preferred_nodes=(("n1", 100),)))
    assert (
        obj["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH]
        == obj["metadata"]["annotations"][TEMPLATE_HASH]
    )


def preferred_of(obj: dict[str, Any]) -> Any:
    affinity = obj["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    return affinity.get("preferredDuringSchedulingIgnoredDuringExecution")


def test_running_replicas_keep_their_preferences_while_nothing_else_changes() -> None:
    ie = make_ie()
    applied = render_deployment(ie, CapacityType.SPOT, share(2, preferred_nodes=(("old", 100),)))
    fresh = render_deployment(ie, CapacityType.SPOT, share(3, preferred_nodes=(("new", 100),)))

    kept = keep_preferences(fresh, applied)

    assert preferred_of(kept) == preferred_of(applied)
    assert kept["spec"]["replicas"] == 3  # everything else is the fresh rendering
    assert preferred_of(fresh) != preferred_of(applied)  # the input is not modified


def test_fresh_preferences_when_they_cost_no_restart() -> None:
    ie = make_ie()
    new = (("new", 100),)
    applied = render_deployment(ie, CapacityType.SPOT, share(2, preferred_nodes=(("old", 100),)))
    # No Deployment yet.
    assert preferred_of(
        keep_preferences(
            render_deployment(ie, CapacityType.SPOT, share(2, preferred_nodes=new)), None
        )
    ) == preferred_of(render_deployment(ie, CapacityType.SPOT, share(2, preferred_nodes=new)))
    # The rest of the template changes anyway (a node to avoid): the rollout takes them along.
    moved = render_deployment(
        ie, CapacityType.SPOT, share(2, preferred_nodes=new, avoided_nodes=("hot",))
    )
    assert preferred_of(keep_preferences(moved, applied)) == preferred_of(moved)
    # Scaling up from zero: nothing runs that a new template would restart.
    idle = render_deployment(ie, CapacityType.SPOT, share(0, preferred_nodes=(("old", 100),)))
    waking = render_deployment(ie, CapacityType.SPOT, share(2, preferred_nodes=new))
    assert preferred_of(keep_preferences(waking, idle)) == preferred_of(waking)


def test_kept_preferences_may_be_none() -> None:
    ie = make_ie()
    applied = render_deployment(ie, CapacityType.SPOT, share(2))
    fresh = render_deployment(ie, CapacityType.SPOT, share(2, preferred_nodes=(("new", 100),)))
    assert preferred_of(keep_preferences(fresh, applied)) is None


def test_the_render_stamp_changes_with_the_object_and_ignores_itself() -> None:
    ie = make_ie()
    one = stamp(render_deployment(ie, CapacityType.SPOT, share(1)))
    assert one["metadata"]["annotations"][RENDER_HASH] == render_hash(one)
    assert stamp(render_deployment(ie, CapacityType.SPOT, share(1))) == one
    two = stamp(render_deployment(ie, CapacityType.SPOT, share(2)))
    assert (
        two["metadata"]["annotations"][RENDER_HASH] != one["metadata"]["annotations"][RENDER_HASH]
    )
    assert RENDER_HASH in stamp(render_service(ie))["metadata"]["annotations"]


def test_only_spot_replicas_tolerate_spot_taints() -> None:
    ie = make_ie()
    reserved = render_deployment(ie, CapacityType.RESERVED, share(1))["spec"]["template"]["spec"][
        "tolerations"
    ]
    spot = render_deployment(ie, CapacityType.SPOT, share(1))["spec"]["template"]["spec"][
        "tolerations"
    ]
    assert reserved == [GPU_TOLERATION]
    assert GPU_TOLERATION in spot
    assert {
        "key": "kubernetes.azure.com/scalesetpriority",
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    } in spot


def test_cpu_and_memory_become_equal_requests_and_limits() -> None:
    ie = make_ie({"runtime": {"cpu": 8, "memory": "64Gi"}, "gpu": {"count": 4}})
    assert container(render_deployment(ie, CapacityType.SPOT, share(1)))["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi"},
        "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 4},
    }


@pytest.mark.parametrize(
    ("runtime", "model", "args", "probe"),
    [
        (
            {"engine": "VLLM", "args": ["--max-model-len", "8192"]},
            {"quantization": "FP8"},
            [
                "org/m",
                "--served-model-name",
                "org/m",
                "--quantization",
                "fp8",
                "--port",
                "8000",
                "--max-model-len",
                "8192",
            ],
            {"httpGet": {"path": "/health", "port": "http"}},
        ),
        (
            {"engine": "VLLM"},
            {"quantization": "INT4"},
            ["org/m", "--served-model-name", "org/m", "--port", "8000"],
            {"httpGet": {"path": "/health", "port": "http"}},
        ),
        (
            {"engine": "TGI", "port": 8080},
            {"quantization": "FP8"},
            ["--model-id", "org/m", "--num-shard", "1", "--quantize", "fp8", "--port", "8080"],
            {"httpGet": {"path": "/health", "port": "http"}},
        ),
        (
            {"engine": "Triton"},
            {"uri": "s3://models/repo"},
            [
                "tritonserver",
                "--model-repository=s3://models/repo",
                "--http-port=8000",
                *TRITON_METRICS,
            ],
            {"httpGet": {"path": "/v2/health/ready", "port": "http"}},
        ),
        (
            {"engine": "Triton"},
            {"uri": "pvc://models/repo"},
            [
                "tritonserver",
                "--model-repository=/models/repo",
                "--http-port=8000",
                *TRITON_METRICS,
            ],
            {"httpGet": {"path": "/v2/health/ready", "port": "http"}},
        ),
        (
            {"engine": "Custom", "image": "example.com/server:1", "args": ["serve", "--fast"]},
            {},
            ["serve", "--fast"],
            {"tcpSocket": {"port": "http"}},
        ),
    ],
)
def test_engine_arguments_and_readiness(
    runtime: dict[str, Any], model: dict[str, Any], args: list[str], probe: dict[str, Any]
) -> None:
    ie = make_ie({"runtime": runtime, "model": {"name": "org/m", **model}})
    engine = container(render_deployment(ie, CapacityType.RESERVED, share(1)))
    assert engine["args"] == args
    assert probe.items() <= engine["readinessProbe"].items()


@pytest.mark.parametrize(
    ("spec", "image"),
    [
        ({"runtime": {"engine": "TGI"}}, "ghcr.io/huggingface/text-generation-inference:3.3.7"),
        (
            {"runtime": {"engine": "Triton"}, "model": {"name": "m", "uri": "pvc://models"}},
            "nvcr.io/nvidia/tritonserver:26.09-py3",
        ),
        (
            {"runtime": {"engine": "VLLM", "image": "registry.local/vllm:pinned"}},
            "registry.local/vllm:pinned",
        ),
    ],
)
def test_image_is_the_override_or_the_engine_default(spec: dict[str, Any], image: str) -> None:
    assert (
        container(render_deployment(make_ie(spec), CapacityType.SPOT, share(1)))["image"] == image
    )


def test_user_env_is_kept_and_overrides_defaults_by_name() -> None:
    env = [
        {"name": "HF_HOME", "value": "/models/hf"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
    ]
    ie = make_ie({"runtime": {"env": env}})
    assert container(render_deployment(ie, CapacityType.SPOT, share(1)))["env"] == [
        {"name": "HOME", "value": "/var/cache/tidal"},
        {"name": "USER", "value": "tidal"},
        {"name": "LOGNAME", "value": "tidal"},
        {"name": "HF_HOME", "value": "/models/hf"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
    ]


def test_rendering_is_deterministic_and_does_not_share_state() -> None:
    ie = make_ie()
    first = render_deployment(ie, CapacityType.SPOT, share(1))
    first["spec"]["template"]["spec"]["tolerations"].clear()
    first["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    first_terms = terms(first)
    first_terms[0][0]["values"].append("us-east-1")
    assert "x" not in first["metadata"]["labels"]
    assert all(term[0] == REGION for term in first_terms[1:])
    # The tolerations and the spot terms read one shared marker list: none of it leaked.
    assert SPOT_MARKERS[0] == ("tidal.dev/capacity-type", "spot")
    assert render_deployment(ie, CapacityType.SPOT, share(1)) == expected_deployment("spot", 1)


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"uid": None}, "uid"),
        ({"name": "x" * 64}, "DNS-1035"),
        ({"name": "1chat"}, "DNS-1035"),
        ({"name": "chat.v1"}, "DNS-1035"),
        ({"namespace": None}, "namespace"),
    ],
)
def test_objects_that_cannot_be_named_or_owned_are_permanent_errors(
    metadata: dict[str, Any], match: str
) -> None:
    ie = make_ie(**metadata)
    with pytest.raises(PermanentError, match=match):
        render_deployment(ie, CapacityType.SPOT, share(1))
    with pytest.raises(PermanentError, match=match):
        render_service(ie)


@pytest.mark.parametrize(
    ("runtime", "sleep", "grace"),
    [
        ({}, 60, 90),  # the default drain: a minute of streams finish
        ({"drainSeconds": 300}, 300, 330),
        ({"drainSeconds": 0}, None, 30),  # no pause: the engine is told to stop at once
    ],
)
def test_a_stopping_replica_drains_before_its_engine_is_told_to_stop(
    runtime: dict[str, Any], sleep: int | None, grace: int
) -> None:
    deployment = render_deployment(make_ie({"runtime": runtime}), CapacityType.SPOT, share(1))
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    if sleep is None:
        assert "lifecycle" not in container
    else:
        # The kubelet's own sleep action: no shell needed in the engine's image.
        assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": sleep}}}
    # The grace period covers the drain and the engine's own shutdown after SIGTERM.
    assert pod["terminationGracePeriodSeconds"] == grace


def test_drain_seconds_are_bounded() -> None:
    with pytest.raises(ValidationError, match="drainSeconds"):
        make_ie({"runtime": {"drainSeconds": 3601}})


def test_a_spread_share_limits_each_region_to_its_even_share_of_the_replicas() -> None:
    spread = render_deployment(make_ie(), CapacityType.SPOT, share(4, spread_regions=True))
    assert spread["spec"]["template"]["spec"]["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/region",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": spread["spec"]["selector"]["matchLabels"]},
        }
    ]
    # Part of the template: turning the spread on or off rolls the replicas, so the placement
    # decides it from the pools that exist, never from the replica count.
    plain = render_deployment(make_ie(), CapacityType.SPOT, share(4))
    assert "topologySpreadConstraints" not in plain["spec"]["template"]["spec"]
    assert plain["metadata"]["annotations"] != spread["metadata"]["annotations"]
