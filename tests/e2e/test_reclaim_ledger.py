"""The spot reclaims the operator observed survive its restart (`tidal.runtime.reclaims`).

A real operator process reads the `tidal-spot-reclaims` ConfigMap (the install's empty one,
seeded here with 1,000 calm hours), writes its checkpoint back, counts a reclaim of the spot
node under an endpoint's replica (a Karpenter disruption taint), is killed with -9 and started
again. Judged on the state of the world: the ConfigMap's ledger, and the reclaim rate the
endpoint's `status.placement.reason` quotes, which only the restored ledger can give (the prior
alone reads 0.0417 reclaims/h; a second count of the same node, 0.00466).

The session operator is paused for this module: two cluster-wide operators would both act.
The nodes are the test's own, in a region no other module uses.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import REPO, Operator, wait_for
from tests.e2e.fleet_ops import extra_nodes, extra_region_nodes
from tests.e2e.kube import Kube
from tests.e2e.reliability import OperatorProcess, session_operator_paused
from tidal.api.labels import KARPENTER_DISRUPTED_TAINT, LABEL_CAPACITY_TYPE, NODE_GPU_PRODUCT
from tidal.placement.budget import Reclaims, reclaim_rate
from tidal.runtime.reclaims import CONFIGMAP_NAME, DATA_KEY

REGION = "ap-southeast-2"
H100 = "NVIDIA-H100-80GB-HBM3"
POOL = f"{REGION}/{H100}"
CALM_HOURS = 1000.0


@pytest.fixture(scope="module")
def paused(operator: Operator, crds: None) -> Iterator[None]:
    with session_operator_paused(operator):
        yield


@pytest.fixture
def namespaces(kube: Kube, paused: None) -> Iterator[tuple[str, str]]:
    """(the operator's own namespace, the endpoint's), deleted afterwards."""
    suffix = uuid.uuid4().hex[:6]
    created = (f"tidal-ledger-{suffix}", f"ledger-{suffix}")
    for name in created:
        kube.run("create", "namespace", name)
    yield created
    for name in created:
        kube.run("delete", "namespace", name, "--wait=false", check=False)


def _ledger(kube: Kube, namespace: str) -> dict[str, Any] | None:
    configmap = kube.get("configmap", CONFIGMAP_NAME, namespace) or {}
    raw = (configmap.get("data") or {}).get(DATA_KEY)
    return json.loads(raw) if raw else None


def _reason(kube: Kube, namespace: str, name: str) -> str:
    endpoint = kube.get("inferenceendpoint", name, namespace) or {}
    return str(((endpoint.get("status") or {}).get("placement") or {}).get("reason", ""))


def _rate(episodes: int) -> str:
    # The hours watched grow by the test's minutes: far below the quoted 3 digits.
    return f"{reclaim_rate(Reclaims(episodes=episodes, hours=CALM_HOURS)):.3g} reclaims/h"


def _spot_node_of_replica(kube: Kube, namespace: str, name: str) -> str | None:
    nodes = kube.nodes()
    for pod in kube.list("pods", namespace, selector=f"tidal.dev/endpoint={name}"):
        node = nodes.get(pod["spec"].get("nodeName") or "")
        labels = (node or {}).get("metadata", {}).get("labels") or {}
        if (
            (pod.get("status") or {}).get("phase") == "Running"
            and labels.get(LABEL_CAPACITY_TYPE) == "spot"
            and labels.get(NODE_GPU_PRODUCT) == H100
        ):
            return str(node["metadata"]["name"]) if node else None
    return None


def test_reclaims_observed_survive_a_restart_and_hours_down_are_not_calm(
    kube: Kube, namespaces: tuple[str, str], tmp_path: Path
) -> None:
    operator_ns, ns = namespaces
    shipped = yaml.safe_load((REPO / "manifests" / "reclaims-configmap.yaml").read_text())
    shipped["metadata"]["namespace"] = operator_ns
    seeded = {
        "version": 1,
        "watchedHours": CALM_HOURS,
        "savedTime": "2026-01-01T00:00:00Z",
        "pools": {},
        "countedNodes": [],
    }
    shipped["data"] = {DATA_KEY: json.dumps(seeded)}
    kube.apply(shipped)
    op = OperatorProcess(kube, tmp_path / "operator.log", {"TIDAL_NAMESPACE": operator_ns})
    endpoint = {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": "ledger"},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "gpu": {"count": 1, "products": [H100]},
            # All of it may go to spot, so a spot node holds the replica to be reclaimed; the
            # reason still quotes the pool's reclaim rate.
            "capacity": {"policy": "Auto", "interruptionBudgetPercent": "100"},
            "residency": {"regions": [REGION]},
            "scaling": {"minReplicas": 1, "maxReplicas": 1},
        },
    }
    with extra_nodes(kube, extra_region_nodes(REGION, reserved=1, spot=2)):
        op.start()
        try:
            kube.apply(endpoint, ns)
            # The saved calm hours are read back: the rate is the calm one, not the prior's.
            wait_for(
                f"the reason to quote {_rate(0)}",
                lambda: _rate(0) in _reason(kube, ns, "ledger"),
                timeout=120,
            )
            # And written back, the minutes of this run added (the months since savedTime,
            # when no operator watched, are not).
            first = wait_for(
                "the operator's first checkpoint",
                lambda: (
                    (led := _ledger(kube, operator_ns))
                    and led["savedTime"] != seeded["savedTime"]
                    and led
                ),
                timeout=60,
            )
            assert CALM_HOURS <= first["watchedHours"] < CALM_HOURS + 0.5
            assert first["pools"] == {}

            node = wait_for(
                "the replica Running on a spot node",
                lambda: _spot_node_of_replica(kube, ns, "ledger"),
                timeout=120,
            )
            kube.run("taint", "node", node, f"{KARPENTER_DISRUPTED_TAINT}=:NoSchedule")
            reclaimed = wait_for(
                "the reclaim saved as an episode of its pool",
                lambda: (
                    (led := _ledger(kube, operator_ns))
                    and led["pools"].get(POOL, {}).get("episodes") == 1
                    and led
                ),
                timeout=120,
            )
            assert node in reclaimed["countedNodes"]
            wait_for(
                f"the reason to quote {_rate(1)}",
                lambda: _rate(1) in _reason(kube, ns, "ledger"),
                timeout=60,
            )

            op.kill()
            # Status is an observation: blank the reason, so only the restarted operator's
            # own reconcile can write the rate back.
            kube.run(
                "patch",
                "inferenceendpoint",
                "ledger",
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": {"placement": {"reason": "blanked by the test"}}}),
            )
            op.start()
            wait_for(
                f"the restarted operator to quote {_rate(1)}",
                lambda: _rate(1) in _reason(kube, ns, "ledger"),
                timeout=120,
            )
            after = _ledger(kube, operator_ns)
            assert after is not None
            assert after["pools"][POOL]["episodes"] == 1
            assert not op.tracebacks(), op.tracebacks()[0]
        finally:
            # Deleted while its operator runs, so Kopf's finalizer goes with it.
            kube.run(
                "delete", "inferenceendpoint", "ledger", "-n", ns, "--timeout=60s", check=False
            )
            op.stop()
