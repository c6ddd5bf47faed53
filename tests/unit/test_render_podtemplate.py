"""`spec.podTemplate` merged into the replicas' pod template: every field, every conflict.

Expected objects are built from what Tidal renders without an override (so these tests state the
merge rules, not the engine container's details, which `test_render_endpoint` pins) plus the
edit each rule makes; whole pod templates are compared.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tidal.api.conventions import DEFAULT_CONVENTIONS, Conventions
from tidal.api.endpoint import InferenceEndpoint
from tidal.api.gpulabels import InstanceGpus
from tidal.api.labels import TEMPLATE_HASH, CapacityType
from tidal.render.endpoint import Share, keep_preferences, render_deployment
from tidal.render.podtemplate import (
    PodTemplateError,
    merge_pod_template,
    owned_node_labels,
)

Object = dict[str, Any]
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
SKU_GPU = {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}


def make_ie(pod_template: Mapping[str, Any] | None = None, **spec: Any) -> InferenceEndpoint:
    body: Object = {
        "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        "residency": {"regions": ["eu-west-1"]},
        **spec,
    }
    if pod_template is not None:
        body["podTemplate"] = pod_template
    meta = {"name": "chat", "namespace": "ml", "uid": "u-1"}
    return InferenceEndpoint.model_validate({"metadata": meta, "spec": body})


def deployment(
    ie: InferenceEndpoint,
    capacity_type: CapacityType = CapacityType.RESERVED,
    conventions: Conventions = DEFAULT_CONVENTIONS,
    preferred: tuple[tuple[str, int], ...] = (),
) -> Object:
    share = Share(
        replicas=1, regions=("eu-west-1",), preferred_nodes=preferred, conventions=conventions
    )
    return render_deployment(ie, capacity_type, share)


def pod(ie: InferenceEndpoint, capacity_type: CapacityType = CapacityType.RESERVED) -> Object:
    """The pod template, without the hash (compared separately)."""
    template: Object = copy.deepcopy(deployment(ie, capacity_type)["spec"]["template"])
    del template["metadata"]["annotations"][TEMPLATE_HASH]
    return template


def alone(capacity_type: CapacityType = CapacityType.RESERVED) -> Object:
    """What Tidal renders without an override."""
    return pod(make_ie(), capacity_type)


def engine(template: Object) -> Object:
    container: Object = template["spec"]["containers"][0]
    assert container["name"] == "engine"
    return container


def template_hash(ie: InferenceEndpoint) -> str:
    return str(deployment(ie)["metadata"]["annotations"][TEMPLATE_HASH])


# --- no override ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {},
        {"metadata": {}, "spec": {}},
        {
            "metadata": {"labels": {}, "annotations": {}},
            "spec": {"tolerations": [], "volumes": [], "nodeSelector": {}, "affinity": {}},
        },
        {"spec": {"containers": [{"name": "engine", "env": [], "volumeMounts": []}]}},
        {"spec": {"affinity": {"nodeAffinity": {}}, "securityContext": {}}},
    ],
)
def test_an_override_that_says_nothing_renders_what_tidal_renders_alone(
    override: Object,
) -> None:
    # Same object, same hash: adding `podTemplate: {}` to an endpoint restarts nothing.
    for kind in CapacityType:
        assert deployment(make_ie(override), kind) == deployment(make_ie(), kind)


def test_without_an_override_the_template_is_returned_as_it_is() -> None:
    template = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}
    assert merge_pod_template(template, make_ie(), DEFAULT_CONVENTIONS) == template


def test_the_merge_does_not_modify_what_tidal_rendered() -> None:
    rendered = {"metadata": {"labels": {"a": "b"}}, "spec": {"tolerations": [SKU_GPU]}}
    before = copy.deepcopy(rendered)
    ie = make_ie({"metadata": {"labels": {"team": "x"}}, "spec": {"tolerations": [SKU_GPU]}})
    merged = merge_pod_template(rendered, ie, DEFAULT_CONVENTIONS)
    assert rendered == before
    assert merged["metadata"]["labels"] == {"a": "b", "team": "x"}


# --- every field -----------------------------------------------------------------------------


def _labels(t: Object) -> None:
    t["metadata"]["labels"]["team"] = "search"


def _annotations(t: Object) -> None:
    t["metadata"]["annotations"]["sidecar.istio.io/inject"] = "false"
    # The dev cluster's simulated model load: a tidal.dev key Tidal itself does not write.
    t["metadata"]["annotations"]["tidal.dev/simulated-startup"] = "45s"


def _node_selector(t: Object) -> None:
    t["spec"]["nodeSelector"] = {"kubernetes.azure.com/agentpool": "gpu"}


def _tolerations(t: Object) -> None:
    t["spec"]["tolerations"].append(SKU_GPU)


def _volumes(t: Object) -> None:
    t["spec"]["volumes"].append({"name": "weights", "persistentVolumeClaim": {"claimName": "w"}})
    engine(t)["volumeMounts"].append({"name": "weights", "mountPath": "/weights", "readOnly": True})


def _env(t: Object) -> None:
    engine(t)["env"].append({"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"})
    engine(t)["env"].append(
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    )


def _resources(t: Object) -> None:
    resources = engine(t)["resources"]
    resources.setdefault("requests", {})["ephemeral-storage"] = "200Gi"
    resources["limits"]["rdma/ib"] = "1"


def _pod_fields(t: Object) -> None:
    t["spec"]["serviceAccountName"] = "inference"
    t["spec"]["imagePullSecrets"] = [{"name": "registry"}]
    t["spec"]["priorityClassName"] = "inference-high"
    t["spec"]["runtimeClassName"] = "nvidia"


def _security_context(t: Object) -> None:
    t["spec"]["securityContext"].update(
        {"runAsUser": 2000, "runAsGroup": 2000, "fsGroupChangePolicy": "OnRootMismatch"}
    )


ANTI_AFFINITY: Object = {
    "preferredDuringSchedulingIgnoredDuringExecution": [
        {
            "weight": 50,
            "podAffinityTerm": {
                "labelSelector": {"matchLabels": {"tidal.dev/endpoint": "chat"}},
                "topologyKey": "topology.kubernetes.io/zone",
            },
        }
    ]
}


def _anti_affinity(t: Object) -> None:
    t["spec"]["affinity"]["podAntiAffinity"] = ANTI_AFFINITY


@pytest.mark.parametrize(
    ("override", "edit"),
    [
        ({"metadata": {"labels": {"team": "search"}}}, _labels),
        (
            {
                "metadata": {
                    "annotations": {
                        "sidecar.istio.io/inject": "false",
                        "tidal.dev/simulated-startup": "45s",
                    }
                }
            },
            _annotations,
        ),
        ({"spec": {"nodeSelector": {"kubernetes.azure.com/agentpool": "gpu"}}}, _node_selector),
        ({"spec": {"tolerations": [SKU_GPU]}}, _tolerations),
        (
            {
                "spec": {
                    "volumes": [{"name": "weights", "persistentVolumeClaim": {"claimName": "w"}}],
                    "containers": [
                        {
                            "name": "engine",
                            "volumeMounts": [
                                {"name": "weights", "mountPath": "/weights", "readOnly": True}
                            ],
                        }
                    ],
                }
            },
            _volumes,
        ),
        (
            {
                "spec": {
                    "containers": [
                        {
                            "name": "engine",
                            "env": [
                                {"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"},
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                            ],
                        }
                    ]
                }
            },
            _env,
        ),
        (
            {
                "spec": {
                    "containers": [
                        {
                            "name": "engine",
                            "resources": {
                                "requests": {"ephemeral-storage": "200Gi"},
                                "limits": {"rdma/ib": 1},
                            },
                        }
                    ]
                }
            },
            _resources,
        ),
        (
            {
                "spec": {
                    "serviceAccountName": "inference",
                    "imagePullSecrets": [{"name": "registry"}],
                    "priorityClassName": "inference-high",
                    "runtimeClassName": "nvidia",
                }
            },
            _pod_fields,
        ),
        (
            {
                "spec": {
                    "securityContext": {
                        "runAsUser": 2000,
                        "runAsGroup": 2000,
                        "fsGroupChangePolicy": "OnRootMismatch",
                    }
                }
            },
            _security_context,
        ),
        ({"spec": {"affinity": {"podAntiAffinity": ANTI_AFFINITY}}}, _anti_affinity),
    ],
    ids=[
        "labels",
        "annotations",
        "nodeSelector",
        "tolerations",
        "volumes-and-mounts",
        "env",
        "resources",
        "pod-fields",
        "securityContext",
        "podAntiAffinity",
    ],
)
@pytest.mark.parametrize("capacity_type", list(CapacityType))
def test_each_field_is_merged_into_both_deployments(
    override: Object, edit: Callable[[Object], None], capacity_type: CapacityType
) -> None:
    expected = alone(capacity_type)
    edit(expected)
    assert pod(make_ie(override), capacity_type) == expected


def test_a_toleration_tidal_already_has_is_not_repeated() -> None:
    gpu = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert gpu in alone()["spec"]["tolerations"]
    merged = pod(make_ie({"spec": {"tolerations": [gpu, SKU_GPU]}}))
    assert merged["spec"]["tolerations"] == [*alone()["spec"]["tolerations"], SKU_GPU]


def test_an_env_default_of_tidal_is_replaced_in_place_like_runtime_env_does() -> None:
    default = engine(alone())["env"][0]["name"]
    override = {"spec": {"containers": [{"name": "engine", "env": [{"name": default}]}]}}
    env = engine(pod(make_ie(override)))["env"]
    assert env[0] == {"name": default}
    assert [v["name"] for v in env] == [v["name"] for v in engine(alone())["env"]]


def test_a_resource_tidal_renders_by_default_is_replaced() -> None:
    # Whatever default Tidal renders besides GPUs, CPU and memory is the cluster's to size.
    rendered = {
        "spec": {
            "containers": [
                {"name": "engine", "resources": {"requests": {"ephemeral-storage": "50Gi"}}}
            ]
        }
    }
    ie = make_ie(
        {
            "spec": {
                "containers": [
                    {"name": "engine", "resources": {"requests": {"ephemeral-storage": "300Gi"}}}
                ]
            }
        }
    )
    merged = merge_pod_template(rendered, ie, DEFAULT_CONVENTIONS)
    assert merged["spec"]["containers"][0]["resources"] == {
        "requests": {"ephemeral-storage": "300Gi"}
    }


# --- node affinity: ANDed with Tidal's ------------------------------------------------------


def _terms(template: Object) -> list[list[Object]]:
    affinity = template["spec"]["affinity"]["nodeAffinity"][REQUIRED]
    return [term["matchExpressions"] for term in affinity["nodeSelectorTerms"]]


def _matches(terms: list[list[Object]], labels: Mapping[str, str]) -> bool:
    """A node selector as the scheduler reads it: any term, every expression of it."""

    def holds(e: Object) -> bool:
        value = labels.get(e["key"])
        if e["operator"] == "In":
            return value in e["values"]
        if e["operator"] == "NotIn":
            return value not in e["values"]
        if e["operator"] == "Exists":
            return value is not None
        if e["operator"] == "DoesNotExist":
            return value is None
        raise AssertionError(e)

    return any(all(holds(e) for e in term) for term in terms)


POOL_A = {"key": "pool", "operator": "In", "values": ["a"]}
ZONE_B = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1b"]}


@pytest.mark.parametrize("capacity_type", list(CapacityType))
def test_one_required_term_is_appended_to_every_term_of_tidals(
    capacity_type: CapacityType,
) -> None:
    override = {
        "spec": {
            "affinity": {
                "nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": [POOL_A]}]}}
            }
        }
    }
    tidal = _terms(alone(capacity_type))
    assert _terms(pod(make_ie(override), capacity_type)) == [[*t, POOL_A] for t in tidal]


@pytest.mark.parametrize("capacity_type", list(CapacityType))
def test_several_required_terms_are_anded_with_tidals_not_ored(
    capacity_type: CapacityType,
) -> None:
    # Kubernetes ORs terms: appending the user's as new terms would let a replica onto any node
    # in pool a, whatever its region or capacity type.
    user = [{"matchExpressions": [POOL_A]}, {"matchExpressions": [ZONE_B]}]
    override = {"spec": {"affinity": {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": user}}}}}
    tidal = _terms(alone(capacity_type))
    merged = _terms(pod(make_ie(override), capacity_type))
    assert len(merged) == 2 * len(tidal)
    region = {"topology.kubernetes.io/region": "eu-west-1"}
    spot = {"karpenter.sh/capacity-type": "spot"} if capacity_type == CapacityType.SPOT else {}
    nodes = [
        {**region, **spot, "pool": "a"},
        {**region, **spot, "topology.kubernetes.io/zone": "eu-west-1b"},
        {**region, **spot},
        {**spot, "pool": "a"},
        {"topology.kubernetes.io/region": "us-east-1", **spot, "pool": "a"},
        {**region, "pool": "a", "cloud.google.com/gke-spot": "true"},
    ]
    for labels in nodes:
        either = _matches([[POOL_A], [ZONE_B]], labels)
        assert _matches(merged, labels) == (_matches(tidal, labels) and either), labels


def test_preferred_terms_follow_tidals_own_preferences() -> None:
    user = {"weight": 10, "preference": {"matchExpressions": [POOL_A]}}
    ie = make_ie({"spec": {"affinity": {"nodeAffinity": {PREFERRED: [user]}}}})
    affinity = deployment(ie, preferred=(("node-1", 80),))["spec"]["template"]["spec"]["affinity"]
    tidal = deployment(make_ie(), preferred=(("node-1", 80),))["spec"]["template"]["spec"]
    assert affinity["nodeAffinity"][PREFERRED] == [
        *tidal["affinity"]["nodeAffinity"][PREFERRED],
        user,
    ]
    # Without preferences of Tidal's, the user's stand alone.
    alone_affinity = deployment(ie)["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert alone_affinity[PREFERRED] == [user]


# --- the template hash ---------------------------------------------------------------------


def test_an_override_is_part_of_the_template_so_changing_it_rolls_the_replicas() -> None:
    first = make_ie({"spec": {"tolerations": [SKU_GPU]}})
    second = make_ie({"spec": {"tolerations": [{**SKU_GPU, "value": "a100"}]}})
    assert len({template_hash(make_ie()), template_hash(first), template_hash(second)}) == 3
    # Pods carry the hash too: status counts replicas on the current template from them.
    rendered = deployment(first)
    assert (
        rendered["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH]
        == rendered["metadata"]["annotations"][TEMPLATE_HASH]
    )


def test_running_replicas_keep_their_preferences_and_the_users_while_nothing_changes() -> None:
    user = {"weight": 10, "preference": {"matchExpressions": [POOL_A]}}
    ie = make_ie({"spec": {"affinity": {"nodeAffinity": {PREFERRED: [user]}}}})
    applied = deployment(ie, preferred=(("node-1", 80),))
    fresh = deployment(ie, preferred=(("node-2", 90),))
    kept = keep_preferences(fresh, applied)
    assert kept["spec"]["template"] == applied["spec"]["template"]
    # A changed override changes the hash, so the fresh preferences go in with it.
    changed = make_ie(
        {"spec": {"affinity": {"nodeAffinity": {PREFERRED: [{**user, "weight": 20}]}}}}
    )
    rolled = deployment(changed, preferred=(("node-2", 90),))
    assert keep_preferences(rolled, applied) == rolled


# --- conflicts -------------------------------------------------------------------------------

INSTANCE_TYPES = Conventions(
    instance_types=(("Standard_NC24ads_A100_v4", InstanceGpus("NVIDIA-A100-SXM4-80GB", 1)),),
    required_profile="instance-type",
)
CUSTOM_REGION = Conventions(region_label="example.com/region")
P = "spec.podTemplate"
NS = f"{P}.spec.nodeSelector"


def _node_selector_case(key: str) -> Object:
    return {"spec": {"nodeSelector": {key: "x"}}}


@pytest.mark.parametrize(
    ("override", "conventions", "expected"),
    [
        # The labels that select the pods, and what others own.
        (
            {"metadata": {"labels": {"tidal.dev/endpoint": "other"}}},
            DEFAULT_CONVENTIONS,
            f'{P}.metadata.labels["tidal.dev/endpoint"]: Tidal owns this label: it selects '
            "the endpoint's pods",
        ),
        (
            {"metadata": {"labels": {"app.kubernetes.io/name": "x"}}},
            DEFAULT_CONVENTIONS,
            f'{P}.metadata.labels["app.kubernetes.io/name"]: Tidal owns this label',
        ),
        (
            {"metadata": {"labels": {"tidal.dev/capacity-type": "spot"}}},
            DEFAULT_CONVENTIONS,
            f'{P}.metadata.labels["tidal.dev/capacity-type"]: Tidal owns this label',
        ),
        (
            {"metadata": {"labels": {"app.kubernetes.io/instance": "x"}}},
            DEFAULT_CONVENTIONS,
            f'{P}.metadata.labels["app.kubernetes.io/instance"]: Tidal sets this label on every '
            "replica",
        ),
        (
            {"metadata": {"labels": {"pod-template-hash": "x"}}},
            DEFAULT_CONVENTIONS,
            f'{P}.metadata.labels["pod-template-hash"]: the Deployment controller owns this label',
        ),
        (
            {"metadata": {"annotations": {"tidal.dev/template-hash": "x"}}},
            DEFAULT_CONVENTIONS,
            f'{P}.metadata.annotations["tidal.dev/template-hash"]: Tidal owns this annotation',
        ),
        (
            {"metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "false"}}},
            DEFAULT_CONVENTIONS,
            f'{P}.metadata.annotations["karpenter.sh/do-not-disrupt"]: Tidal owns this annotation',
        ),
        (
            {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "9"}}},
            DEFAULT_CONVENTIONS,
            f'{P}.metadata.annotations["controller.kubernetes.io/pod-deletion-cost"]: Tidal owns',
        ),
        # Node labels Tidal's placement decides.
        (
            _node_selector_case("topology.kubernetes.io/region"),
            DEFAULT_CONVENTIONS,
            f'{NS}["topology.kubernetes.io/region"]: Tidal owns the region '
            "(spec.residency.regions)",
        ),
        (
            _node_selector_case("example.com/region"),
            CUSTOM_REGION,
            f'{NS}["example.com/region"]: Tidal owns the region (spec.residency.regions)',
        ),
        (
            _node_selector_case("karpenter.sh/capacity-type"),
            DEFAULT_CONVENTIONS,
            f'{NS}["karpenter.sh/capacity-type"]: Tidal owns the capacity type (spec.capacity)',
        ),
        (
            _node_selector_case("kubernetes.azure.com/scalesetpriority"),
            DEFAULT_CONVENTIONS,
            f'{NS}["kubernetes.azure.com/scalesetpriority"]: Tidal owns the capacity type',
        ),
        (
            _node_selector_case("tidal.dev/capacity-type"),
            DEFAULT_CONVENTIONS,
            f'{NS}["tidal.dev/capacity-type"]: Tidal owns the capacity type',
        ),
        (
            _node_selector_case("nvidia.com/gpu.product"),
            DEFAULT_CONVENTIONS,
            f'{NS}["nvidia.com/gpu.product"]: Tidal owns the GPU choice (spec.gpu)',
        ),
        (
            _node_selector_case("cloud.google.com/gke-accelerator"),
            DEFAULT_CONVENTIONS,
            f'{NS}["cloud.google.com/gke-accelerator"]: Tidal owns the GPU choice (spec.gpu)',
        ),
        (
            _node_selector_case("karpenter.k8s.aws/instance-gpu-memory"),
            DEFAULT_CONVENTIONS,
            f'{NS}["karpenter.k8s.aws/instance-gpu-memory"]: Tidal owns the GPU choice',
        ),
        (
            _node_selector_case("nvidia.com/gpu.count"),
            DEFAULT_CONVENTIONS,
            f'{NS}["nvidia.com/gpu.count"]: Tidal owns the GPU choice',
        ),
        (
            _node_selector_case("node.kubernetes.io/instance-type"),
            INSTANCE_TYPES,
            f'{NS}["node.kubernetes.io/instance-type"]: Tidal owns the GPU choice (spec.gpu)',
        ),
        (
            _node_selector_case("kubernetes.io/hostname"),
            DEFAULT_CONVENTIONS,
            f'{NS}["kubernetes.io/hostname"]: Tidal owns which nodes replicas prefer and avoid',
        ),
        (
            {
                "spec": {
                    "affinity": {
                        "nodeAffinity": {
                            REQUIRED: {
                                "nodeSelectorTerms": [
                                    {"matchExpressions": [POOL_A]},
                                    {
                                        "matchExpressions": [
                                            POOL_A,
                                            {
                                                "key": "topology.kubernetes.io/region",
                                                "operator": "NotIn",
                                                "values": ["us-east-1"],
                                            },
                                        ]
                                    },
                                ]
                            }
                        }
                    }
                }
            },
            DEFAULT_CONVENTIONS,
            f"{P}.spec.affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms[1]"
            ".matchExpressions[1].key: Tidal owns the region",
        ),
        (
            {
                "spec": {
                    "affinity": {
                        "nodeAffinity": {
                            PREFERRED: [
                                {
                                    "weight": 5,
                                    "preference": {
                                        "matchExpressions": [
                                            {
                                                "key": "nvidia.com/gpu.product",
                                                "operator": "In",
                                                "values": ["NVIDIA-L4"],
                                            }
                                        ]
                                    },
                                }
                            ]
                        }
                    }
                }
            },
            DEFAULT_CONVENTIONS,
            f"{P}.spec.affinity.nodeAffinity.{PREFERRED}[0].preference.matchExpressions[0].key: "
            "Tidal owns the GPU choice",
        ),
        # The engine container: GPUs, and what spec.runtime sets.
        (
            {
                "spec": {
                    "containers": [
                        {"name": "engine", "resources": {"limits": {"nvidia.com/gpu": 8}}}
                    ]
                }
            },
            DEFAULT_CONVENTIONS,
            f'{P}.spec.containers[0].resources.limits["nvidia.com/gpu"]: Tidal owns the GPU count '
            "(spec.gpu.count)",
        ),
        (
            {
                "spec": {
                    "containers": [
                        {"name": "engine", "resources": {"requests": {"nvidia.com/gpu": 8}}}
                    ]
                }
            },
            DEFAULT_CONVENTIONS,
            f'{P}.spec.containers[0].resources.requests["nvidia.com/gpu"]: Tidal owns the GPU',
        ),
        (
            {"spec": {"containers": [{"name": "engine", "resources": {"requests": {"cpu": 4}}}]}},
            DEFAULT_CONVENTIONS,
            f'{P}.spec.containers[0].resources.requests["cpu"]: set it in spec.runtime.cpu',
        ),
        (
            {
                "spec": {
                    "containers": [{"name": "engine", "resources": {"limits": {"memory": "1Gi"}}}]
                }
            },
            DEFAULT_CONVENTIONS,
            f'{P}.spec.containers[0].resources.limits["memory"]: set it in spec.runtime.memory',
        ),
        (
            {
                "spec": {
                    "containers": [
                        {
                            "name": "engine",
                            "env": [
                                {"name": "A", "value": "1"},
                                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                            ],
                        }
                    ]
                }
            },
            DEFAULT_CONVENTIONS,
            f"{P}.spec.containers[0].env[1].name: NVIDIA_VISIBLE_DEVICES: Tidal owns it: a "
            "replica sees the GPUs allocated to it (spec.gpu.count)",
        ),
    ],
)
def test_an_override_of_what_tidal_owns_is_refused_naming_the_field(
    override: Object, conventions: Conventions, expected: str
) -> None:
    with pytest.raises(PodTemplateError) as caught:
        deployment(make_ie(override), conventions=conventions)
    (conflict,) = caught.value.conflicts
    assert str(conflict).startswith(expected), str(conflict)
    assert str(caught.value) == str(conflict)


def test_a_variable_runtime_env_also_sets_is_refused() -> None:
    ie = make_ie(
        {"spec": {"containers": [{"name": "engine", "env": [{"name": "HF_TOKEN", "value": "x"}]}]}},
        runtime={
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}]
        },
    )
    with pytest.raises(PodTemplateError, match=r"env\[0\]\.name: HF_TOKEN is set in spec\.runtime"):
        deployment(ie)


def test_a_volume_name_or_mount_path_tidal_uses_is_refused() -> None:
    # Taken from what Tidal renders, so the test follows its volumes wherever they go.
    volume = alone()["spec"]["volumes"][0]["name"]
    mount = engine(alone())["volumeMounts"][-1]
    ie = make_ie(
        {
            "spec": {
                "volumes": [{"name": volume, "emptyDir": {}}, {"name": "mine", "emptyDir": {}}],
                "containers": [
                    {
                        "name": "engine",
                        "volumeMounts": [{"name": "mine", "mountPath": mount["mountPath"]}],
                    }
                ],
            }
        }
    )
    with pytest.raises(PodTemplateError) as caught:
        deployment(ie)
    assert [str(c) for c in caught.value.conflicts] == [
        f"{P}.spec.volumes[0].name: Tidal renders a volume named {volume!r}; choose another name",
        f"{P}.spec.containers[0].volumeMounts[0].mountPath: Tidal mounts its volume "
        f"{mount['name']!r} at {mount['mountPath']}",
    ]


def test_every_conflict_is_named_at_once() -> None:
    ie = make_ie(
        {
            "metadata": {"labels": {"tidal.dev/endpoint": "x", "team": "ok"}},
            "spec": {
                "nodeSelector": {"topology.kubernetes.io/region": "eu-west-1", "pool": "ok"},
                "containers": [{"name": "engine", "resources": {"limits": {"nvidia.com/gpu": 2}}}],
            },
        }
    )
    with pytest.raises(PodTemplateError) as caught:
        deployment(ie)
    assert [c.field for c in caught.value.conflicts] == [
        f'{P}.metadata.labels["tidal.dev/endpoint"]',
        f'{NS}["topology.kubernetes.io/region"]',
        f'{P}.spec.containers[0].resources.limits["nvidia.com/gpu"]',
    ]
    assert str(caught.value).count("; ") == 2


def test_the_instance_type_is_the_clusters_unless_it_names_the_gpus() -> None:
    override = _node_selector_case("node.kubernetes.io/instance-type")
    assert deployment(make_ie(override))["spec"]["template"]["spec"]["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "x"
    }
    assert "node.kubernetes.io/instance-type" in owned_node_labels(INSTANCE_TYPES)
    assert "node.kubernetes.io/instance-type" not in owned_node_labels(DEFAULT_CONVENTIONS)


def test_any_label_tidals_required_affinity_names_is_owned() -> None:
    # A label the conventions do not list but the rendered affinity uses (here, handed in).
    rendered = {
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    REQUIRED: {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "example.com/fit", "operator": "Exists"}]}
                        ]
                    }
                }
            }
        }
    }
    with pytest.raises(PodTemplateError, match="Tidal's required node affinity constrains"):
        merge_pod_template(
            rendered, make_ie(_node_selector_case("example.com/fit")), DEFAULT_CONVENTIONS
        )


def test_a_container_tidal_does_not_render_is_refused() -> None:
    rendered = {"spec": {"containers": [{"name": "server"}]}}
    ie = make_ie({"spec": {"containers": [{"name": "engine", "env": [{"name": "A"}]}]}})
    with pytest.raises(
        PodTemplateError, match=r"containers\[0\]\.name: Tidal renders no container"
    ):
        merge_pod_template(rendered, ie, DEFAULT_CONVENTIONS)


def test_a_pod_field_tidal_sets_differently_is_refused() -> None:
    rendered = {"spec": {"serviceAccountName": "tidal-engine"}}
    ie = make_ie({"spec": {"serviceAccountName": "mine", "priorityClassName": "p"}})
    with pytest.raises(
        PodTemplateError, match=r"serviceAccountName: Tidal sets it to 'tidal-engine'"
    ):
        merge_pod_template(rendered, ie, DEFAULT_CONVENTIONS)
    same = make_ie({"spec": {"serviceAccountName": "tidal-engine"}})
    assert merge_pod_template(rendered, same, DEFAULT_CONVENTIONS) == rendered
