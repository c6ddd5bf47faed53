"""`spec.podTemplate` as the API model parses it: the shape rules and the security floor that the
CRD's CEL rules also enforce, and what is kept of the open (schemaless) parts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tidal.api.endpoint import InferenceEndpointSpec
from tidal.api.podtemplate import PodTemplate, Toleration, TolerationOperator


def spec(pod_template: dict[str, Any]) -> InferenceEndpointSpec:
    return InferenceEndpointSpec.model_validate(
        {
            "model": {"name": "m"},
            "residency": {"regions": ["eu-west-1"]},
            "podTemplate": pod_template,
        }
    )


def pod_spec(**fields: Any) -> dict[str, Any]:
    return {"spec": fields}


def engine(**fields: Any) -> dict[str, Any]:
    return pod_spec(containers=[{"name": "engine", **fields}])


def test_no_pod_template_is_none_and_an_empty_one_says_nothing() -> None:
    bare = InferenceEndpointSpec.model_validate(
        {"model": {"name": "m"}, "residency": {"regions": ["eu-west-1"]}}
    )
    assert bare.pod_template is None
    assert spec({}).pod_template == PodTemplate()


def test_a_whole_pod_template_round_trips_on_the_wire() -> None:
    given = {
        "metadata": {"labels": {"team": "search"}, "annotations": {"example.com/a": "b"}},
        "spec": {
            "nodeSelector": {"kubernetes.azure.com/agentpool": "gpu"},
            "tolerations": [
                {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "pool", "operator": "Exists"}]}
                        ]
                    }
                },
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []},
            },
            "volumes": [{"name": "w", "csi": {"driver": "x", "volumeAttributes": {"a": "b"}}}],
            "containers": [
                {
                    "name": "engine",
                    "env": [{"name": "A", "value": "1"}],
                    "volumeMounts": [{"name": "w", "mountPath": "/w", "readOnly": True}],
                    "resources": {"limits": {"rdma/ib": "1"}},
                }
            ],
            "serviceAccountName": "inference",
            "imagePullSecrets": [{"name": "registry"}],
            "priorityClassName": "high",
            "runtimeClassName": "nvidia",
            "securityContext": {"runAsUser": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
        },
    }
    parsed = spec(given).pod_template
    assert parsed is not None
    wire = parsed.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    assert wire == given
    assert parsed.spec is not None
    # A volume's source is kept as given, camelCase and all.
    assert parsed.spec.volumes[0].source == {"csi": {"driver": "x", "volumeAttributes": {"a": "b"}}}
    assert parsed.spec.engine is not None
    assert parsed.spec.engine.env[0].name == "A"


@pytest.mark.parametrize(
    ("pod_template", "message"),
    [
        # The security floor: replicas never run as root.
        (pod_spec(securityContext={"runAsNonRoot": False}), "runAsNonRoot cannot be false"),
        (pod_spec(securityContext={"runAsUser": 0}), "runAsUser cannot be 0"),
        (pod_spec(securityContext={"seccompProfile": {"type": "Unconfined"}}), "RuntimeDefault"),
        (
            pod_spec(securityContext={"seccompProfile": {"type": "Localhost"}}),
            "localhostProfile is required with type Localhost",
        ),
        # Tolerations, as Kubernetes validates them.
        (
            pod_spec(tolerations=[{"key": "a", "operator": "Exists", "value": "b"}]),
            "operator Exists takes no value",
        ),
        (pod_spec(tolerations=[{"value": "b"}]), "without a key needs operator Exists"),
        (
            pod_spec(tolerations=[{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]),
            "tolerationSeconds needs effect NoExecute",
        ),
        # Node selector requirements.
        (
            pod_spec(
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "a", "operator": "In"}]}
                            ]
                        }
                    }
                }
            ),
            "In and NotIn need at least one",
        ),
        (
            pod_spec(
                affinity={
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 1,
                                "preference": {
                                    "matchExpressions": [
                                        {"key": "a", "operator": "Gt", "values": ["x"]}
                                    ]
                                },
                            }
                        ]
                    }
                }
            ),
            "Gt and Lt take exactly one integer",
        ),
        (
            pod_spec(
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
                    }
                }
            ),
            "at least 1 item",
        ),
        # Env and mounts.
        (
            engine(
                env=[{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]
            ),
            "either value or valueFrom",
        ),
        (
            engine(env=[{"name": "A", "valueFrom": {}}]),
            "exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef",
        ),
        (engine(env=[{"name": "A"}, {"name": "A"}]), "env: duplicate A"),
        (
            engine(volumeMounts=[{"name": "nowhere", "mountPath": "/x"}]),
            "volumeMounts: nowhere not in spec.podTemplate.spec.volumes",
        ),
        (
            {
                "spec": {
                    "volumes": [{"name": "v"}],
                    "containers": [
                        {"name": "engine", "volumeMounts": [{"name": "v", "mountPath": "rel/x"}]}
                    ],
                }
            },
            "should match pattern",
        ),
        (pod_spec(volumes=[{"name": "v"}, {"name": "v"}]), "volumes: duplicate v"),
        (pod_spec(containers=[{"name": "sidecar"}]), "'engine'"),
        # Keys Kubernetes would refuse on the pod.
        ({"metadata": {"labels": {"bad key": "x"}}}, "must be qualified names"),
        ({"metadata": {"annotations": {"a/b/c": "x"}}}, "must be qualified names"),
        (pod_spec(nodeSelector={"x" * 64: "y"}), "must be qualified names"),
        ({"metadata": {"labels": {"ok": "not a value"}}}, "should match pattern"),
    ],
)
def test_what_kubernetes_or_the_security_floor_refuses_is_invalid(
    pod_template: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(pod_template)


@pytest.mark.parametrize(
    "toleration",
    [
        {"operator": "Exists"},
        {"key": "sku", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "sku", "value": "gpu"},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "tolerationSeconds": 30},
    ],
)
def test_tolerations_kubernetes_accepts_are_valid(toleration: dict[str, Any]) -> None:
    parsed = Toleration.model_validate(toleration)
    expected = TolerationOperator(toleration.get("operator", "Equal"))
    assert parsed.effective_operator is expected


def test_root_is_refused_but_any_other_user_is_the_clusters_choice() -> None:
    parsed = spec(pod_spec(securityContext={"runAsUser": 1001, "runAsNonRoot": True}))
    assert parsed.pod_template is not None
    assert parsed.pod_template.spec is not None
    assert parsed.pod_template.spec.security_context is not None
    assert parsed.pod_template.spec.security_context.run_as_user == 1001
