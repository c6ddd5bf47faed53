"""The install manifests under manifests/: pod security, least-privilege RBAC, prices, samples.

The YAML is read as data: no cluster, no kustomize binary. What only a real API server can judge
(CRD schema validation of the samples, RBAC escalation checks) belongs to the e2e suite; this
module catches the mistakes a reviewer would otherwise have to spot by eye.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NAMESPACE = "tidal-system"
SERVICE_ACCOUNT = "tidal-operator"

Obj = dict[str, Any]


@functools.cache
def _documents() -> tuple[tuple[Path, Obj], ...]:
    found: list[tuple[Path, Obj]] = []
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path, doc))
    return tuple(found)


def _objects() -> Iterator[Obj]:
    """Kubernetes objects only: kustomization files are build instructions, not objects."""
    for _, doc in _documents():
        if doc.get("kind") != "Kustomization":
            yield doc


def _objects_of(kind: str) -> list[Obj]:
    return [obj for obj in _objects() if obj["kind"] == kind]


def _the(kind: str, name: str) -> Obj:
    matches = [obj for obj in _objects_of(kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected exactly one {kind} {name}, found {len(matches)}"
    return matches[0]


def _kustomization(directory: Path) -> Obj:
    loaded = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _operator_pod() -> Obj:
    pod: Obj = _the("Deployment", "tidal-operator")["spec"]["template"]
    return pod


def _operator_container() -> Obj:
    containers: list[Obj] = _operator_pod()["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _rules() -> Iterator[tuple[str, Obj]]:
    for obj in _objects():
        if obj["kind"] in {"Role", "ClusterRole"}:
            for rule in obj["rules"]:
                yield f"{obj['kind']}/{obj['metadata']['name']}", rule


# --- files and kustomizations ---------------------------------------------------------------


def test_every_manifest_file_holds_at_least_one_document() -> None:
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert files
    loaded = {path for path, _ in _documents()}
    assert set(files) == loaded


def test_every_object_has_an_api_version_kind_and_name() -> None:
    for obj in _objects():
        assert obj.get("apiVersion"), obj
        assert obj.get("kind"), obj
        assert obj.get("metadata", {}).get("name"), obj


def test_every_base_resource_exists_as_a_file_or_a_kustomization_directory() -> None:
    for entry in _kustomization(MANIFESTS)["resources"]:
        target = (MANIFESTS / entry).resolve()
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), entry
        else:
            # Loose files outside the root are refused by kustomize's load restrictor.
            assert target.is_file(), entry
            assert MANIFESTS in target.parents, f"{entry} is a file outside manifests/"


def test_base_installs_every_object_file_except_the_samples() -> None:
    listed = {(MANIFESTS / entry).resolve() for entry in _kustomization(MANIFESTS)["resources"]}
    # Directories the base includes (agent/) list their own files; their tests check those.
    included_dirs = {path for path in listed if path.is_dir()}
    object_files = {
        path
        for path, doc in _documents()
        if doc.get("kind") != "Kustomization"
        # peering/ is optional (several replicas): test_security_manifests.py checks it.
        # examples/ are per-cloud ConfigMaps a user picks one of (test_api_conventions.py).
        # monitoring/ needs Prometheus Operator's CRDs (test_monitoring_manifests.py).
        and not {"samples", "peering", "examples", "monitoring"} & set(path.parts)
        and not included_dirs & set(path.parents)
    }
    assert object_files == {path for path in listed if path.is_file()}


@pytest.mark.parametrize("optional", ["samples", "monitoring"])
def test_samples_and_monitoring_are_not_installed_by_the_base(optional: str) -> None:
    # monitoring/: a cluster without Prometheus Operator has no PodMonitor kind to apply.
    for entry in _kustomization(MANIFESTS)["resources"]:
        assert optional not in Path(entry).parts


def test_base_keeps_common_labels_out_of_selectors() -> None:
    (labels,) = _kustomization(MANIFESTS)["labels"]
    assert labels["includeSelectors"] is False
    assert labels["pairs"] == {
        "app.kubernetes.io/name": "tidal",
        "app.kubernetes.io/part-of": "tidal",
    }


def test_base_installs_into_tidal_system() -> None:
    # No `namespace:` transformer: it would also move the agent's own namespace (tidal-agent,
    # tested in test_agent_manifests.py), so every operator object names tidal-system itself.
    assert "namespace" not in _kustomization(MANIFESTS)
    cluster_scoped = {"Kustomization", "Namespace", "ClusterRole", "ClusterRoleBinding"}
    for path, doc in _documents():
        # gateway/ is checked in test_gateway_manifests.py (its admission policy is cluster-scoped),
        # monitoring/ in test_monitoring_manifests.py (the agent's PodMonitor is in tidal-agent).
        if doc["kind"] not in cluster_scoped and not {
            "samples",
            "agent",
            "peering",
            "gateway",
            "monitoring",
        } & set(path.parts):
            assert doc["metadata"].get("namespace") == NAMESPACE, path
    _the("Namespace", NAMESPACE)


# --- the operator Deployment ----------------------------------------------------------------


def test_operator_runs_as_a_fixed_non_root_user() -> None:
    security = _operator_pod()["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["runAsGroup"] == 65532
    assert security["fsGroup"] == 65532
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_operator_root_filesystem_is_read_only_with_a_writable_tmp() -> None:
    container = _operator_container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in _operator_pod()["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_operator_cannot_escalate_privileges_and_drops_all_capabilities() -> None:
    security = _operator_container()["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert not security.get("privileged", False)


@pytest.mark.parametrize("probe", ["livenessProbe", "readinessProbe"])
def test_operator_probes_kopf_health_endpoint_on_port_8080(probe: str) -> None:
    container = _operator_container()
    http = container[probe]["httpGet"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert http["path"] == "/healthz"
    assert ports.get(http["port"], http["port"]) == 8080
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["command"] + container["args"]


def test_operator_serves_metrics_on_its_named_port() -> None:
    ports = {port["name"]: port["containerPort"] for port in _operator_container()["ports"]}
    env = {var["name"]: var.get("value") for var in _operator_container()["env"]}
    assert ports["metrics"] == 9090
    assert env["TIDAL_METRICS_PORT"] == str(ports["metrics"])


def test_operator_has_resource_requests_and_limits() -> None:
    resources = _operator_container()["resources"]
    assert resources["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert resources["limits"] == {"cpu": "1", "memory": "512Mi"}


def test_operator_learns_its_namespace_from_the_downward_api() -> None:
    env = {var["name"]: var for var in _operator_container()["env"]}
    assert env["TIDAL_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_operator_deployment_selector_matches_its_pod_labels() -> None:
    deployment = _the("Deployment", "tidal-operator")
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_operator_runs_as_its_own_service_account() -> None:
    spec = _operator_pod()["spec"]
    assert spec["serviceAccountName"] == SERVICE_ACCOUNT
    assert spec["automountServiceAccountToken"] is True
    _the("ServiceAccount", SERVICE_ACCOUNT)


# --- RBAC -----------------------------------------------------------------------------------

# The whole cluster-wide grant, spelled out: widening it must be a deliberate edit here too.
OPERATOR_CLUSTER_PERMISSIONS = {
    ("tidal.dev", "inferenceendpoints"): {"get", "list", "watch", "patch", "update"},
    ("tidal.dev", "vectorcollections"): {"get", "list", "watch", "patch", "update"},
    ("tidal.dev", "inferenceendpoints/status"): {"get", "patch", "update"},
    ("tidal.dev", "vectorcollections/status"): {"get", "patch", "update"},
    ("tidal.dev", "inferenceendpoints/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("monitoring.coreos.com", "podmonitors"): {"get", "list", "create", "patch"},
    ("", "pods"): {"get", "list", "watch", "patch", "delete"},
    ("", "persistentvolumeclaims"): {"get", "list", "watch", "create", "patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch"},
    ("", "nodes"): {"get", "list", "watch"},
    ("storage.k8s.io", "storageclasses"): {"get", "list", "watch"},
    ("karpenter.sh", "nodepools"): {"get", "list"},
    ("", "namespaces"): {"get", "list", "watch"},
    ("", "events"): {"create", "patch", "get", "list"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): {"create", "patch"},
}


def _permissions(role: Obj) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_operator_cluster_role_grants_exactly_what_the_operator_touches() -> None:
    role = _the("ClusterRole", "tidal-operator")
    assert _permissions(role) == OPERATOR_CLUSTER_PERMISSIONS
    # The one rule narrowed by name: Kopf patches only Tidal's own webhook configuration.
    named = [rule for rule in role["rules"] if "resourceNames" in rule]
    assert named == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": ["validate.tidal.dev"],
            "verbs": ["patch"],
        }
    ]


@pytest.mark.parametrize("field", ["apiGroups", "resources", "verbs", "resourceNames"])
def test_no_role_grants_a_wildcard(field: str) -> None:
    for role, rule in _rules():
        assert "*" not in rule.get(field, []), f"{role} has * in {field}"
        assert "nonResourceURLs" not in rule, role


def test_secrets_are_only_ever_read_or_created_each_in_its_own_role() -> None:
    # get: a Secret named to the operator; create: a generated one, once. Never list, watch,
    # patch, update or delete: no Secret can be enumerated or changed.
    held: dict[str, list[str]] = {}
    for role, rule in _rules():
        if "secrets" in rule["resources"]:
            assert rule["resources"] == ["secrets"], role
            held[role] = rule["verbs"]
    assert held == {
        "ClusterRole/tidal-operator-secrets-reader": ["get"],
        "ClusterRole/tidal-operator-secrets-creator": ["create"],
    }


def test_configmaps_are_reachable_only_by_name_and_only_tidals_own() -> None:
    rules = [(role, rule) for role, rule in _rules() if "configmaps" in rule["resources"]]
    assert {role for role, _ in rules} == {"Role/tidal-operator"}
    granted = {tuple(rule["resourceNames"]): set(rule["verbs"]) for _, rule in rules}
    assert granted.keys() == {("tidal-capacity", "tidal-pricing"), ("tidal-spot-reclaims",)}
    assert granted[("tidal-capacity", "tidal-pricing")] <= {"get", "list", "watch"}
    # The reclaim ledger is written, but only into the ConfigMap the install created.
    assert granted[("tidal-spot-reclaims",)] == {"get", "patch"}


def test_namespaced_role_lives_in_tidal_system() -> None:
    for role in _objects_of("Role"):
        assert role["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("kind", ["RoleBinding", "ClusterRoleBinding"])
def test_every_binding_grants_a_role_defined_here_to_the_operator_only(kind: str) -> None:
    # The GPU agent's and the gateway's own bindings are checked in test_agent_manifests.py and
    # test_gateway_manifests.py.
    bindings = [
        doc
        for path, doc in _documents()
        if doc["kind"] == kind and not {"agent", "gateway"} & set(path.parts)
    ]
    assert bindings
    for binding in bindings:
        ref = binding["roleRef"]
        _the(ref["kind"], ref["name"])
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
        ]


# --- the default price table ----------------------------------------------------------------

GPU_PRODUCTS = {
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-H200",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-A100-SXM4-40GB",
    "NVIDIA-L40S",
    "NVIDIA-L4",
    "NVIDIA-A10G",
}
CAPACITY_TYPES = {"spot", "reserved"}
REGIONS = {"eu-west-1", "us-east-1", "us-west-2"}
DECIMAL = re.compile(r"\d+(\.\d+)?")


def _pricing() -> Obj:
    configmap = _the("ConfigMap", "tidal-pricing")
    assert configmap["metadata"]["namespace"] == NAMESPACE
    table = yaml.safe_load(configmap["data"]["pricing.yaml"])
    assert isinstance(table, dict)
    return table


def _leaves(node: object, path: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}")
    else:
        yield path, node


def test_every_price_is_a_positive_decimal_string() -> None:
    # gpuAliases maps names to names; tidal.cost's unit tests parse the whole table.
    prices = {k: v for k, v in _pricing().items() if k != "gpuAliases"}
    leaves = list(_leaves(prices))
    assert len(leaves) == len(GPU_PRODUCTS) * len(CAPACITY_TYPES) * len(REGIONS) + 4
    for path, price in leaves:
        assert isinstance(price, str), f"{path} is {price!r}, not a string"
        assert DECIMAL.fullmatch(price), f"{path} is {price!r}, not a plain decimal"
        assert Decimal(price) > 0, path


def test_pricing_covers_every_gpu_product_capacity_type_and_region() -> None:
    gpus = _pricing()["gpuHourlyUSD"]
    assert set(gpus) == GPU_PRODUCTS
    for product, by_capacity in gpus.items():
        assert set(by_capacity) == CAPACITY_TYPES, product
        for capacity, by_region in by_capacity.items():
            assert set(by_region) == REGIONS, (product, capacity)


def test_spot_is_cheaper_than_reserved_for_every_gpu_and_region() -> None:
    for product, by_capacity in _pricing()["gpuHourlyUSD"].items():
        for region in REGIONS:
            spot = Decimal(by_capacity["spot"][region])
            reserved = Decimal(by_capacity["reserved"][region])
            assert spot < reserved, (product, region)


def test_pricing_has_cpu_memory_and_storage_rates() -> None:
    table = _pricing()
    assert set(table) == {
        "gpuHourlyUSD",
        "gpuAliases",
        "cpuCoreHourlyUSD",
        "memoryGiBHourlyUSD",
        "storageGiBMonthlyUSD",
    }
    assert set(table["storageGiBMonthlyUSD"]) == {"ssd", "objectStore"}


# --- samples --------------------------------------------------------------------------------

# Wire names from DESIGN.md §1, top level of spec and the nested objects the samples may use.
KNOWN_SPEC_KEYS: dict[str, dict[str, set[str]]] = {
    "InferenceEndpoint": {
        "": {
            "model",
            "runtime",
            "gpu",
            "capacity",
            "residency",
            "scaling",
            "slo",
            "cost",
            "vectorCollectionRef",
        },
        "model": {"name", "uri", "quantization", "weightsGiB"},
        "runtime": {"engine", "image", "args", "env", "port", "cpu", "memory"},
        "gpu": {"count", "products", "minMemoryMiB"},
        "capacity": {
            "policy",
            "minReservedReplicas",
            "maxSpotPercent",
            "maxNodeGpuUtilizationPercent",
        },
        "residency": {"regions", "dataClassification"},
        "scaling": {
            "minReplicas",
            "maxReplicas",
            "idleSecondsBeforeScaleToZero",
            "targetInFlightRequests",
        },
        "slo": {"p95LatencyMs", "p95TimeToFirstTokenMs", "minTokensPerSecond"},
        "cost": {"maxHourlyUSD"},
        "vectorCollectionRef": {"name"},
    },
    "VectorCollection": {
        "": {
            "engine",
            "dimension",
            "metric",
            "expectedVectors",
            "payloadBytesPerVector",
            "index",
            "quantization",
            "shards",
            "replicas",
            "storage",
            "residency",
            "scaling",
            "slo",
        },
        "engine": {"type", "mode", "url", "connectionSecretRef", "image"},
        "index": {"type", "m", "efConstruct", "efSearch"},
        "quantization": {"type", "rescore"},
        "storage": {"tier", "storageClassName", "size", "coldTier"},
        "residency": {"regions", "dataClassification"},
        "scaling": {"minReplicas", "idleSecondsBeforeScaleToZero"},
        "slo": {"p95LatencyMs", "minRecallPercent"},
    },
}

SAMPLE_FILES = sorted((MANIFESTS / "samples").glob("*.yaml"))
SAMPLES = [
    (path, doc)
    for path in SAMPLE_FILES
    if path.name != "kustomization.yaml"
    for doc in yaml.safe_load_all(path.read_text())
]


def test_samples_cover_both_kinds_and_are_all_listed_in_their_kustomization() -> None:
    assert {doc["kind"] for _, doc in SAMPLES} == set(KNOWN_SPEC_KEYS)
    listed = set(_kustomization(MANIFESTS / "samples")["resources"])
    assert listed == {path.name for path, _ in SAMPLES}


@pytest.mark.parametrize(("path", "sample"), SAMPLES, ids=[p.name for p, _ in SAMPLES])
def test_sample_uses_only_known_spec_keys(path: Path, sample: Obj) -> None:
    assert sample["apiVersion"] == "tidal.dev/v1alpha1", path
    known = KNOWN_SPEC_KEYS[sample["kind"]]
    spec = sample["spec"]
    assert set(spec) <= known[""], path
    for section, keys in known.items():
        if section and isinstance(spec.get(section), dict):
            assert set(spec[section]) <= keys, (path, section)


@pytest.mark.parametrize(("path", "sample"), SAMPLES, ids=[p.name for p, _ in SAMPLES])
def test_sample_declares_its_namespace_and_regions(path: Path, sample: Obj) -> None:
    assert sample["metadata"]["namespace"] == "default", path
    assert sample["spec"]["residency"]["regions"] == ["eu-west-1"], path
