"""The validating admission webhooks, served by the operator to the real API server.

An operator with `TIDAL_WEBHOOKS=1` (URL mode, 127.0.0.1) replaces the session operator for this
module (see tests/e2e/reliability.py). Every refusal is checked by its message, which must name
the offending field. The last test kills the operator (kill -9, so the webhook configuration
stays behind and failurePolicy Ignore is what lets the object in), creates an object the
namespace policy forbids, restarts the operator and asserts the reconcile keeps it out.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import REPO, Operator, wait_for
from tests.e2e.kube import Kube, condition
from tests.e2e.processes import free_port
from tests.e2e.reliability import (
    OperatorProcess,
    dump,
    session_operator_paused,
    webhook_configuration,
    webhook_env,
)
from tidal.api.labels import ALLOWED_REGIONS

SAMPLES = REPO / "manifests" / "samples"
ENDPOINT: dict[str, Any] = yaml.safe_load((SAMPLES / "inferenceendpoint-llama.yaml").read_text())
COLLECTION: dict[str, Any] = yaml.safe_load((SAMPLES / "vectorcollection-docs.yaml").read_text())
DENIED = 'admission webhook "{}.validate.tidal.dev" denied the request'


def endpoint(name: str, **spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(ENDPOINT)
    obj["metadata"] = {"name": name}
    obj["spec"].update(spec)
    return obj


def collection(name: str, **spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(COLLECTION)
    obj["metadata"] = {"name": name}
    obj["spec"].update(spec)
    return obj


@pytest.fixture(scope="module", autouse=True)
def webhooks(
    kube: Kube, crds: None, operator: Operator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    port = free_port()
    log = tmp_path_factory.mktemp("admission") / "webhook-operator.log"
    with session_operator_paused(operator):
        # Debug logging: the canary test below must find no secret even in Kopf's debug lines.
        served = OperatorProcess(kube, log, {**webhook_env(port), "TIDAL_LOG_LEVEL": "debug"})
        served.start()
        try:
            wait_for(
                "the operator to publish its four webhooks",
                lambda: _published(kube, port),
                timeout=90,
            )
            _wait_until_enforced(kube)
            yield served
        finally:
            served.stop()


def _published(kube: Kube, port: int) -> bool:
    config = webhook_configuration(kube) or {}
    urls = [w.get("clientConfig", {}).get("url", "") for w in config.get("webhooks") or []]
    return len(urls) == 4 and all(f"https://127.0.0.1:{port}/" in url for url in urls)


def _wait_until_enforced(kube: Kube) -> None:
    """The API server loads webhook configurations asynchronously: wait until one is called."""
    probe = endpoint("probe", residency={"regions": ["us-east-1"]})
    name = _policy_namespace(kube)
    try:
        wait_for(
            "the API server to call the webhook",
            lambda: not _dry_run(kube, probe, name)[0],
            timeout=60,
        )
    finally:
        kube.run("delete", "namespace", name, "--wait=false", check=False)


def _policy_namespace(kube: Kube) -> str:
    name = f"adm-{uuid.uuid4().hex[:8]}"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "annotations": {ALLOWED_REGIONS: "eu-west-1"}},
        }
    )
    return name


@pytest.fixture
def policy_namespace(kube: Kube, webhooks: OperatorProcess) -> Iterator[str]:
    """A namespace allowing eu-west-1 only."""
    name = _policy_namespace(kube)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


def _dry_run(kube: Kube, obj: dict[str, Any], namespace: str) -> tuple[bool, str]:
    try:
        kube.run("create", "--dry-run=server", "-n", namespace, "-f", "-", stdin=yaml.dump(obj))
    except AssertionError as err:
        return False, str(err)
    return True, ""


def _refused(kube: Kube, obj: dict[str, Any], namespace: str) -> str:
    accepted, message = kube.try_apply(obj, namespace)
    assert not accepted, f"{obj['kind']} {obj['metadata']['name']} was admitted"
    return message


# --- the managed configuration ---------------------------------------------------------------


def test_the_operator_manages_one_configuration_with_four_webhooks(
    kube: Kube, webhooks: OperatorProcess
) -> None:
    config = webhook_configuration(kube)
    assert config is not None
    hooks = {w["name"]: w for w in config["webhooks"]}
    assert set(hooks) == {
        "endpoint.validate.tidal.dev",
        "collection.validate.tidal.dev",
        "pricing.validate.tidal.dev",
        "capacity.validate.tidal.dev",
    }
    for hook in hooks.values():
        assert hook["failurePolicy"] == "Ignore"
        assert hook["sideEffects"] == "None"
        assert hook["clientConfig"]["caBundle"]
        (rule,) = hook["rules"]
        assert sorted(rule["operations"]) == ["CREATE", "UPDATE"]
    assert hooks["endpoint.validate.tidal.dev"]["rules"][0]["resources"] == ["inferenceendpoints"]
    for configmaps in ("pricing", "capacity"):
        assert hooks[f"{configmaps}.validate.tidal.dev"]["objectSelector"] == {
            "matchExpressions": [
                {"key": "app.kubernetes.io/part-of", "operator": "In", "values": ["tidal"]}
            ]
        }


# --- residency -------------------------------------------------------------------------------


def test_a_region_outside_the_namespace_policy_is_refused_naming_the_field(
    kube: Kube, policy_namespace: str
) -> None:
    message = _refused(
        kube,
        endpoint("abroad", residency={"regions": ["eu-west-1", "us-east-1"]}),
        policy_namespace,
    )
    assert DENIED.format("endpoint") in message
    assert "spec.residency.regions: us-east-1 not allowed" in message
    assert f"{ALLOWED_REGIONS}: eu-west-1" in message
    assert kube.get("inferenceendpoint", "abroad", policy_namespace) is None


def test_a_collection_outside_the_policy_is_refused_too(kube: Kube, policy_namespace: str) -> None:
    message = _refused(
        kube, collection("abroad", residency={"regions": ["us-east-1"]}), policy_namespace
    )
    assert DENIED.format("collection") in message
    assert "spec.residency.regions: us-east-1 not allowed" in message


def test_objects_inside_the_policy_are_admitted(kube: Kube, policy_namespace: str) -> None:
    assert kube.try_apply(collection("docs"), policy_namespace)[0]
    assert kube.try_apply(endpoint("home", scaling={"minReplicas": 0}), policy_namespace)[0]


# --- vectorCollectionRef ---------------------------------------------------------------------


def test_a_reference_to_a_missing_collection_is_refused(kube: Kube, policy_namespace: str) -> None:
    message = _refused(
        kube, endpoint("lonely", vectorCollectionRef={"name": "nowhere"}), policy_namespace
    )
    assert "spec.vectorCollectionRef.name: VectorCollection 'nowhere' not found" in message


def test_a_collection_sharing_no_allowed_region_is_refused(kube: Kube, namespace: str) -> None:
    kube.apply(collection("us-docs", residency={"regions": ["us-east-1"]}), namespace)
    message = _refused(kube, endpoint("eu-rag", vectorCollectionRef={"name": "us-docs"}), namespace)
    assert "spec.vectorCollectionRef.name: VectorCollection 'us-docs' lives in us-east-1" in message
    both = endpoint(
        "both-rag",
        vectorCollectionRef={"name": "us-docs"},
        residency={"regions": ["eu-west-1", "us-east-1"]},
        scaling={"minReplicas": 0},
    )
    assert kube.try_apply(both, namespace)[0]


# --- GPUs ------------------------------------------------------------------------------------


def test_gpus_too_small_for_the_model_are_refused(kube: Kube, namespace: str) -> None:
    big = endpoint(
        "big",
        model={"name": "meta-llama/Llama-3.1-70B-Instruct", "weightsGiB": 140},
        gpu={"count": 1, "products": ["NVIDIA-L4"]},
    )
    message = _refused(kube, big, namespace)
    assert "spec.model.weightsGiB:" in message
    assert "NVIDIA-L4: 23034 MiB" in message
    big["spec"]["gpu"] = {"count": 4, "products": ["NVIDIA-H100-80GB-HBM3"]}
    big["spec"]["scaling"] = {"minReplicas": 0}
    assert kube.try_apply(big, namespace)[0]


def test_more_gpus_than_any_node_has_is_admitted_with_a_warning(kube: Kube, namespace: str) -> None:
    wide = endpoint(
        "wide", gpu={"count": 16, "products": ["NVIDIA-L4"]}, scaling={"minReplicas": 0}
    )
    proc = subprocess.run(
        [str(kube.kubectl), f"--kubeconfig={kube.kubeconfig}", "apply", "-n", namespace, "-f", "-"],
        input=yaml.dump(wide),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "spec.gpu.count: 16 GPUs per replica" in proc.stderr, proc.stderr
    assert kube.get("inferenceendpoint", "wide", namespace) is not None


# --- updates ---------------------------------------------------------------------------------


def test_an_unrelated_update_passes_after_the_policy_tightened(kube: Kube, namespace: str) -> None:
    kube.apply(
        endpoint("legacy", residency={"regions": ["us-east-1"]}, scaling={"minReplicas": 0}),
        namespace,
    )
    kube.run("annotate", "namespace", namespace, f"{ALLOWED_REGIONS}=eu-west-1")
    wait_for(
        "the policy to be enforced",
        lambda: (
            not _dry_run(kube, endpoint("p", residency={"regions": ["us-east-1"]}), namespace)[0]
        ),
        timeout=30,
    )
    kube.run(
        "patch", "inferenceendpoint", "legacy", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"scaling": {"maxReplicas": 2}}}',
    )  # fmt: skip
    kube.run("label", "inferenceendpoint", "legacy", "-n", namespace, "team=search")
    refused = kube.run(
        "patch", "inferenceendpoint", "legacy", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"residency": {"regions": ["us-east-1", "us-west-2"]}}}',
        check=False,
    )  # fmt: skip
    assert "spec.residency.regions: us-east-1, us-west-2 not allowed" in refused


# --- spec.podTemplate ------------------------------------------------------------------------

SKU_GPU = {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}


def test_a_pod_template_overriding_what_tidal_owns_is_refused_naming_each_field(
    kube: Kube, namespace: str
) -> None:
    owned = endpoint(
        "owned",
        scaling={"minReplicas": 0},
        podTemplate={
            "metadata": {"labels": {"tidal.dev/endpoint": "other"}},
            "spec": {
                "nodeSelector": {"topology.kubernetes.io/region": "us-east-1"},
                "containers": [{"name": "engine", "resources": {"limits": {"nvidia.com/gpu": 8}}}],
            },
        },
    )
    message = _refused(kube, owned, namespace)
    assert DENIED.format("endpoint") in message
    for named in (
        'spec.podTemplate.spec.nodeSelector["topology.kubernetes.io/region"]: Tidal owns the '
        "region (spec.residency.regions)",
        'spec.podTemplate.metadata.labels["tidal.dev/endpoint"]: Tidal owns this label',
        'spec.podTemplate.spec.containers[0].resources.limits["nvidia.com/gpu"]: Tidal owns the '
        "GPU count (spec.gpu.count)",
    ):
        assert named in message, message
    assert kube.get("inferenceendpoint", "owned", namespace) is None

    # What a cluster needs is admitted; an update that adds a conflict is refused, and the API
    # server keeps the override it had.
    fitting = endpoint(
        "cluster-fit",
        scaling={"minReplicas": 0},
        podTemplate={"spec": {"tolerations": [SKU_GPU], "serviceAccountName": "inference"}},
    )
    assert kube.try_apply(fitting, namespace)[0]
    spot_only = {"nodeSelector": {"karpenter.sh/capacity-type": "spot"}}
    refused = kube.run(
        "patch", "inferenceendpoint", "cluster-fit", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"podTemplate": {"spec": spot_only}}}),
        check=False,
    )  # fmt: skip
    assert DENIED.format("endpoint") in refused
    assert (
        'spec.podTemplate.spec.nodeSelector["karpenter.sh/capacity-type"]: Tidal owns the '
        "capacity type (spec.capacity)"
    ) in refused
    stored = kube.get("inferenceendpoint", "cluster-fit", namespace)
    assert stored is not None
    assert stored["spec"]["podTemplate"] == fitting["spec"]["podTemplate"]


def test_a_pod_template_running_as_root_is_refused_by_the_crd_itself(
    kube: Kube, namespace: str
) -> None:
    # The security floor is CEL in the CRD: refused even when no webhook answers.
    root = endpoint(
        "root",
        scaling={"minReplicas": 0},
        podTemplate={"spec": {"securityContext": {"runAsUser": 0}}},
    )
    message = _refused(kube, root, namespace)
    assert "spec.podTemplate.spec.securityContext" in message
    assert "runAsUser cannot be 0: replicas never run as root" in message
    assert kube.get("inferenceendpoint", "root", namespace) is None


# --- the price table -------------------------------------------------------------------------


def test_a_broken_price_table_is_refused_naming_the_key(kube: Kube, namespace: str) -> None:
    shipped = yaml.safe_load((REPO / "manifests" / "pricing-configmap.yaml").read_text())
    pricing: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "tidal-pricing",
            "labels": {"app.kubernetes.io/part-of": "tidal"},
        },
        "data": {"pricing.yaml": shipped["data"]["pricing.yaml"]},
    }
    assert kube.try_apply(pricing, namespace)[0]
    broken = copy.deepcopy(pricing)
    broken["data"]["pricing.yaml"] += "\ncpuCoreHourlyUSD: 0.03\n"
    message = _refused(kube, broken, namespace)
    assert DENIED.format("pricing") in message
    assert "cpuCoreHourlyUSD" in message


def test_declared_autoscaler_pools_that_do_not_parse_are_refused_naming_the_field(
    kube: Kube, namespace: str
) -> None:
    capacity: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "tidal-capacity",
            "labels": {"app.kubernetes.io/part-of": "tidal"},
        },
        "data": {
            "capacity.yaml": (
                "pools:\n- {name: gpu-spot, capacityType: spot, regions: [eu-west-1],\n"
                "   gpusPerNode: 8, maxNodes: 4, nodeLabels: {pool: gpu-spot}}\n"
            )
        },
    }
    assert kube.try_apply(capacity, namespace)[0]
    broken = copy.deepcopy(capacity)
    broken["data"]["capacity.yaml"] = broken["data"]["capacity.yaml"].replace("spot,", "cheap,")
    message = _refused(kube, broken, namespace)
    assert DENIED.format("capacity") in message
    assert "pools.0.capacityType" in message
    # The cluster's conventions live beside the pools and are checked the same way.
    conventions = copy.deepcopy(capacity)
    conventions["data"]["conventions.yaml"] = "gpuLabelProfile: karpenter-aws\n"
    assert kube.try_apply(conventions, namespace)[0]
    conventions["data"]["conventions.yaml"] = "gpuLabelProfile: aks\n"
    message = _refused(kube, conventions, namespace)
    assert DENIED.format("capacity") in message
    assert "gpuLabelProfile: unknown GPU label profile 'aks'" in message


# --- secrets stay secret --------------------------------------------------------------------


def test_a_connection_secret_never_reaches_logs_status_or_events(
    kube: Kube, webhooks: OperatorProcess, namespace: str
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vector-db"},
            "stringData": {
                "url": f"https://tidal:{canary}@qdrant.tidal-e2e.invalid:6333",
                "apiKey": canary,
                "password": canary,
            },
        },
        namespace,
    )
    external = collection("external")
    external["spec"]["engine"] = {
        "type": "Qdrant",
        "mode": "External",
        "connectionSecretRef": {"name": "vector-db"},
    }
    kube.apply(external, namespace)

    def reported() -> dict[str, Any] | None:
        obj = kube.get("vectorcollection", "external", namespace)
        ready = condition(obj, "Ready")
        if (
            obj is None
            or ready is None
            or ready.get("observedGeneration") != obj["metadata"]["generation"]
        ):
            return None
        return obj

    obj = wait_for("a Ready condition on the External collection", reported, timeout=120)
    time.sleep(12)  # more timer ticks (every 5 s here) read the Secret again
    obj = kube.get("vectorcollection", "external", namespace) or obj
    events = kube.run("get", "events", "-n", namespace, "-o", "json")
    assert canary not in json.dumps(obj), "the canary is in the collection (status or metadata)"
    assert canary not in events, "the canary is in an Event"
    assert canary not in webhooks.text(), "the canary is in the operator log"
    assert f"tidal:{canary}" not in kube.run("get", "vectorcollection", "-A", "-o", "yaml")


# --- webhook down: the reconcile still enforces residency -------------------------------------


def test_with_the_webhook_down_the_reconcile_keeps_replicas_out_of_forbidden_regions(
    kube: Kube, webhooks: OperatorProcess, policy_namespace: str, tmp_path: Path
) -> None:
    webhooks.kill()  # kill -9: the configuration still points at a port nobody listens on
    try:
        smuggled = endpoint("smuggled", residency={"regions": ["us-east-1"]})
        smuggled["spec"]["scaling"] = {"minReplicas": 2, "maxReplicas": 2}
        accepted, message = kube.try_apply(smuggled, policy_namespace)
        assert accepted, f"failurePolicy Ignore should admit while the webhook is down: {message}"
    finally:
        webhooks.start()

    def refused_placement() -> dict[str, Any] | None:
        obj = kube.get("inferenceendpoint", "smuggled", policy_namespace)
        placed = condition(obj, "Placed")
        if obj is None or placed is None or placed["status"] != "False":
            return None
        if (obj.get("status") or {}).get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        return obj

    try:
        obj = wait_for("Placed=False on the smuggled endpoint", refused_placement, timeout=120)
    except BaseException:
        print(dump(kube, policy_namespace, webhooks))
        raise
    placed = condition(obj, "Placed")
    assert placed is not None
    assert placed["reason"] == "NoAllowedRegion"
    assert "us-east-1" in placed["message"]
    assert "eu-west-1" in placed["message"]
    pods = kube.list("pods", policy_namespace, selector="tidal.dev/endpoint=smuggled")
    assert pods == [], [p["metadata"]["name"] for p in pods]
    assert (obj["status"].get("placement") or {}).get("regions", []) == []
