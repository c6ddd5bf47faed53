"""manifests/agent/: the GPU agent's namespace, DaemonSet, RBAC and admission policy, read as
data. The policy's CEL is judged by a real API server in tests/e2e/test_agent.py."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidal.api.labels import GPU_TELEMETRY
from tidal.cli import _parser

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
AGENT = MANIFESTS / "agent"
NAMESPACE = "tidal-agent"
SERVICE_ACCOUNT = "tidal-agent"
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
# DESIGN.md "Cluster conventions": the taints of spot capacity in each cloud's convention.
SPOT_TAINT_KEYS = {
    "tidal.dev/capacity-type",
    "karpenter.sh/capacity-type",
    "eks.amazonaws.com/capacityType",
    "cloud.google.com/gke-spot",
    "kubernetes.azure.com/scalesetpriority",
}

Obj = dict[str, Any]


def _kustomization(directory: Path) -> Obj:
    loaded = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@functools.cache
def _objects() -> tuple[Obj, ...]:
    found: list[Obj] = []
    for path in sorted(AGENT.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return tuple(found)


def _the(kind: str, name: str | None = None) -> Obj:
    matches = [o for o in _objects() if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def _pod() -> Obj:
    pod: Obj = _the("DaemonSet", "tidal-agent")["spec"]["template"]
    return pod


def _container() -> Obj:
    (container,) = _pod()["spec"]["containers"]
    return dict(container)


# --- kustomization ----------------------------------------------------------------------------


def test_the_base_installs_the_agent_directory() -> None:
    assert "agent" in _kustomization(MANIFESTS)["resources"]


def test_the_agent_kustomization_lists_every_file_and_moves_nothing_between_namespaces() -> None:
    kustomization = _kustomization(AGENT)
    files = {p.name for p in AGENT.glob("*.yaml")} - {"kustomization.yaml"}

    assert set(kustomization["resources"]) == files
    assert "namespace" not in kustomization
    (labels,) = kustomization["labels"]
    assert labels["includeSelectors"] is False
    assert labels["pairs"] == _kustomization(MANIFESTS)["labels"][0]["pairs"]


def test_every_namespaced_object_names_the_agent_namespace() -> None:
    for obj in _objects():
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_the_namespace_allows_host_pid_and_audits_anything_beyond_baseline() -> None:
    labels = _the("Namespace", NAMESPACE)["metadata"]["labels"]

    # hostPID is forbidden by "baseline" and "restricted"; tidal-system enforces "restricted".
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == "privileged"  # no warning on every apply
    assert labels["pod-security.kubernetes.io/audit"] == "baseline"


# --- the DaemonSet ----------------------------------------------------------------------------


def test_runs_only_on_gpu_nodes_and_tolerates_gpu_and_every_spot_taint() -> None:
    spec = _pod()["spec"]
    tolerated = {t["key"] for t in spec["tolerations"] if t["operator"] == "Exists"}

    assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert {"nvidia.com/gpu", *SPOT_TAINT_KEYS} <= tolerated


def test_gets_nvml_from_the_nvidia_runtime_without_requesting_a_gpu() -> None:
    container = _container()
    env = {e["name"]: e for e in container["env"]}

    assert _pod()["spec"]["runtimeClassName"] == "nvidia"
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    for section in ("requests", "limits"):
        assert "nvidia.com/gpu" not in container["resources"].get(section, {})


def test_shares_only_the_host_pid_namespace() -> None:
    spec = _pod()["spec"]

    assert spec["hostPID"] is True
    assert not spec.get("hostNetwork", False)
    assert not spec.get("hostIPC", False)
    assert all("hostPath" not in v for v in spec.get("volumes", []))


def test_learns_its_node_from_the_downward_api() -> None:
    env = {e["name"]: e for e in _container()["env"]}

    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_runs_as_non_root_with_nothing_to_escalate() -> None:
    pod_security = _pod()["spec"]["securityContext"]
    security = _container()["securityContext"]

    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == 65532
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_has_a_writable_tmp_on_its_read_only_root() -> None:
    mounts = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod()["spec"]["volumes"]}

    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_metrics_port_and_probes_match_what_the_agent_serves() -> None:
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = _parser().parse_args(container["args"])

    assert container["command"] == ["tidal"]
    assert args.command == "agent"
    assert args.metrics_address == f"0.0.0.0:{ports['metrics']}"
    assert ports["metrics"] == 9400  # DCGM exporter's
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_uses_the_operator_image() -> None:
    operator = yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())

    assert _container()["image"] == operator["spec"]["template"]["spec"]["containers"][0]["image"]


def test_selector_matches_the_pod_labels_and_has_resources() -> None:
    daemonset = _the("DaemonSet", "tidal-agent")
    selector = daemonset["spec"]["selector"]["matchLabels"]

    assert selector.items() <= _pod()["metadata"]["labels"].items()
    assert _container()["resources"]["limits"]["memory"]
    assert _pod()["spec"]["serviceAccountName"] == SERVICE_ACCOUNT


# --- RBAC and the admission policy ------------------------------------------------------------


def test_rbac_grants_exactly_node_get_patch_and_pod_reads() -> None:
    role = _the("ClusterRole", "tidal-agent")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])

    assert granted == {("", "nodes"): {"get", "patch"}, ("", "pods"): {"get", "list", "watch"}}


def test_the_binding_grants_the_role_to_the_agent_only() -> None:
    binding = _the("ClusterRoleBinding", "tidal-agent")
    _the("ServiceAccount", SERVICE_ACCOUNT)

    assert binding["roleRef"]["name"] == "tidal-agent"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
    ]


def _policy() -> Obj:
    return _the("ValidatingAdmissionPolicy")


def test_the_policy_matches_node_updates_by_the_agents_service_account() -> None:
    spec = _policy()["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    (condition,) = spec["matchConditions"]

    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == (
        [""],
        ["nodes"],
        ["UPDATE"],
    )
    assert f'"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"' in condition["expression"]
    assert spec["failurePolicy"] == "Fail"


def test_the_policy_ties_the_write_to_the_node_in_the_token_and_to_one_annotation() -> None:
    spec = _policy()["spec"]
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    expressions = " ".join(v["expression"] for v in spec["validations"])

    assert "authentication.kubernetes.io/node-name" in variables["tokenNode"]
    assert "variables.tokenNode == [object.metadata.name]" in expressions
    assert variables["telemetry"] == f"'{GPU_TELEMETRY}'"
    for guarded in ("labels", "spec", "finalizers", "ownerReferences"):
        assert f"object.metadata.{guarded}" in expressions or f"object.{guarded}" in expressions
    assert all(v["reason"] == "Forbidden" for v in spec["validations"])


def test_the_policy_binding_denies() -> None:
    binding = _the("ValidatingAdmissionPolicyBinding")

    assert binding["spec"]["policyName"] == _policy()["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]


@pytest.mark.parametrize("kind", ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"])
def test_the_policy_uses_the_ga_api(kind: str) -> None:
    assert _the(kind)["apiVersion"] == "admissionregistration.k8s.io/v1"
