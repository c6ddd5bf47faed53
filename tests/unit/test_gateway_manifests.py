"""manifests/gateway/: the gateway's Deployment, Services, RBAC and admission policy, read as
data. The policy's CEL is judged by a real API server in tests/e2e/test_gateway.py."""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidal.api.labels import LAST_REQUEST_TIME, WAKE_REQUESTED_AT
from tidal.gateway import config

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
GATEWAY = MANIFESTS / "gateway"
NAMESPACE = "tidal-system"
SERVICE_ACCOUNT = "tidal-gateway"
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
POD_LABELS = {"app.kubernetes.io/name": "tidal", "app.kubernetes.io/component": "gateway"}

Obj = dict[str, Any]


def _kustomization(directory: Path) -> Obj:
    loaded = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@functools.cache
def _objects() -> tuple[Obj, ...]:
    found: list[Obj] = []
    for path in sorted(GATEWAY.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return tuple(found)


def _the(kind: str, name: str) -> Obj:
    matches = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _pod() -> Obj:
    pod: Obj = _the("Deployment", "tidal-gateway")["spec"]["template"]
    return pod


def _container() -> Obj:
    (container,) = _pod()["spec"]["containers"]
    return dict(container)


def _env() -> dict[str, Obj]:
    return {e["name"]: e for e in _container()["env"]}


# --- kustomization ----------------------------------------------------------------------------


def test_the_base_installs_the_gateway_directory() -> None:
    assert "gateway" in _kustomization(MANIFESTS)["resources"]


def test_the_kustomization_lists_every_file_and_keeps_labels_out_of_selectors() -> None:
    kustomization = _kustomization(GATEWAY)
    files = {p.name for p in GATEWAY.glob("*.yaml")} - {"kustomization.yaml"}

    assert set(kustomization["resources"]) == files
    assert "namespace" not in kustomization
    (labels,) = kustomization["labels"]
    assert labels["includeSelectors"] is False
    assert labels["pairs"] == _kustomization(MANIFESTS)["labels"][0]["pairs"]


def test_every_namespaced_object_lives_in_tidal_system() -> None:
    for obj in _objects():
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


# --- the Deployment ---------------------------------------------------------------------------


def test_two_replicas_roll_without_losing_one_and_spread_over_nodes() -> None:
    deployment = _the("Deployment", "tidal-gateway")
    spec = deployment["spec"]

    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["selector"]["matchLabels"] == POD_LABELS
    assert POD_LABELS.items() <= _pod()["metadata"]["labels"].items()
    keys = {c["topologyKey"] for c in _pod()["spec"]["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys
    assert _the("PodDisruptionBudget", "tidal-gateway")["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": POD_LABELS},
    }


def test_the_pod_runs_as_a_fixed_non_root_user_with_the_runtime_default_seccomp() -> None:
    security = _pod()["spec"]["securityContext"]

    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["runAsGroup"] == 65532
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in _pod()["spec"]
    assert "hostPID" not in _pod()["spec"]


def test_the_container_is_read_only_unprivileged_and_drops_every_capability() -> None:
    container = _container()
    security = container["securityContext"]

    assert security == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    (tmp,) = _pod()["spec"]["volumes"]
    assert "emptyDir" in tmp


def test_the_command_is_a_valid_tidal_gateway_invocation_with_its_environment() -> None:
    container = _container()
    env = {name: e["value"] for name, e in _env().items() if "value" in e}
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, env)

    assert container["command"] == ["tidal"]
    assert container["args"][0] == "gateway"
    settings = config.from_args(parser.parse_args(container["args"][1:]), env)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (settings.listen_port, settings.admin_port) == (ports["http"], ports["admin"])
    assert settings.cold_start_budget_seconds == 600
    assert settings.pod_address_map is None  # the test hook is never set in production


def test_the_token_comes_from_an_optional_secret_and_the_name_from_the_downward_api() -> None:
    env = _env()

    assert env["TIDAL_GATEWAY_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "tidal-gateway-auth",
        "key": "token",
        "optional": True,
    }
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize(
    ("probe", "path"),
    [("startupProbe", "/readyz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")],
)
def test_probes_ask_the_admin_port(probe: str, path: str) -> None:
    get = _container()[probe]["httpGet"]

    assert (get["path"], get["port"]) == (path, "admin")


def test_shutdown_leaves_time_for_the_service_to_drop_the_pod_and_streams_to_end() -> None:
    pre_stop = _container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = _pod()["spec"]["terminationGracePeriodSeconds"]

    assert pre_stop >= 5
    assert grace >= pre_stop + config.GatewayConfig().shutdown_grace_seconds


def test_requests_and_limits_are_set() -> None:
    resources = _container()["resources"]

    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


# --- Services ---------------------------------------------------------------------------------


def test_the_api_service_targets_the_http_port_and_the_admin_one_is_headless() -> None:
    api = _the("Service", "tidal-gateway")["spec"]
    admin = _the("Service", "tidal-gateway-admin")["spec"]

    assert api["selector"] == POD_LABELS
    assert [(p["port"], p["targetPort"]) for p in api["ports"]] == [(80, "http")]
    assert admin["clusterIP"] == "None"
    assert admin["selector"] == POD_LABELS
    assert [p["targetPort"] for p in admin["ports"]] == ["admin"]
    # The admin port is never behind the API Service.
    assert "admin" not in {p["targetPort"] for p in api["ports"]}


# --- RBAC -------------------------------------------------------------------------------------


def _permissions(role: Obj) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_rbac_reads_endpoints_and_pods_and_patches_only_endpoints() -> None:
    role = _the("ClusterRole", "tidal-gateway")

    assert _permissions(role) == {
        ("tidal.dev", "inferenceendpoints"): {"get", "list", "watch", "patch"},
        ("", "pods"): {"list", "watch"},
    }
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field]


def test_the_binding_grants_the_role_to_the_gateway_service_account_only() -> None:
    binding = _the("ClusterRoleBinding", "tidal-gateway")
    account = _the("ServiceAccount", SERVICE_ACCOUNT)

    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "tidal-gateway",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
    ]
    assert account["metadata"]["namespace"] == NAMESPACE
    assert _pod()["spec"]["serviceAccountName"] == SERVICE_ACCOUNT


# --- the admission policy ---------------------------------------------------------------------


def test_the_policy_applies_to_the_gateway_service_account_only() -> None:
    policy = _the("ValidatingAdmissionPolicy", "tidal-gateway-signals-only")["spec"]
    (condition,) = policy["matchConditions"]

    user = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    assert condition["expression"] == f'request.userInfo.username == "{user}"'
    assert policy["failurePolicy"] == "Fail"
    (rule,) = policy["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["inferenceendpoints"]
    assert rule["apiGroups"] == ["tidal.dev"]
    assert "UPDATE" in rule["operations"]


def test_the_policy_allows_exactly_the_annotations_the_gateway_writes() -> None:
    policy = _the("ValidatingAdmissionPolicy", "tidal-gateway-signals-only")["spec"]
    allowed = next(v for v in policy["variables"] if v["name"] == "allowed")["expression"]

    assert set(re.findall(r"'([^']+)'", allowed)) == {WAKE_REQUESTED_AT, LAST_REQUEST_TIME}
    expressions = " ".join(v["expression"] for v in policy["validations"])
    for guarded in ("object.spec", "metadata.labels", "metadata.finalizers", "ownerReferences"):
        assert guarded in expressions


def test_the_policy_is_bound_to_deny() -> None:
    binding = _the("ValidatingAdmissionPolicyBinding", "tidal-gateway-signals-only")["spec"]

    assert binding == {"policyName": "tidal-gateway-signals-only", "validationActions": ["Deny"]}
