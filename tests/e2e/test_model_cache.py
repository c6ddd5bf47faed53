"""`spec.model.cache` on a real API server, scheduler, Job controller and volume binder: the cache
is filled once by a loader Job, then replicas mount it read-only and none downloads.

There is no storage provisioner in the local cluster, so the module pre-creates the
ReadWriteMany PersistentVolume the cache's claim binds to (a storage class of its own, so no
other claim takes it). KWOK plays the loader pod: it runs, then succeeds (`pod-succeeded`), and
the Job controller marks the Job Complete. Every assertion reads what the API server holds: the
claim, the Job, the replicas' pods and templates, the endpoints' conditions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import REPO, wait_for
from tests.e2e.kube import Kube, condition
from tidal.api.labels import (
    LABEL_MODEL_CACHE,
    MODEL_CACHE_BYTES,
    SIMULATED_STARTUP,
    SIMULATED_WEIGHTS_BYTES,
)

SAMPLE: dict[str, Any] = yaml.safe_load(
    (REPO / "manifests/samples/inferenceendpoint-llama.yaml").read_text()
)
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
URI = f"hf://{MODEL}@main"
# The simulated weights (1,800 MiB): KWOK's loader takes 6 s to "download" them at the static
# fleet's 300 MiB/s, then reports their size as its termination message, as the real loader
# does after measuring its copy (`tidal.devcluster.fleet.ModelLoad`).
WEIGHTS_BYTES = 1800 * 1024 * 1024
DOWNLOAD_SECONDS = 6


@pytest.fixture
def storage_class(kube: Kube, namespace: str) -> Iterator[str]:
    """A ReadWriteMany volume of a class of this test's own, for the cache's claim to bind."""
    name = f"tidal-cache-{namespace}"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "2Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": name,
                "hostPath": {"path": f"/tmp/{name}"},
            },
        }
    )
    try:
        yield name
    finally:
        kube.run("delete", "pv", name, "--wait=false", check=False)


def _endpoint(name: str, storage_class: str) -> dict[str, Any]:
    obj = copy.deepcopy(SAMPLE)
    obj["metadata"] = {"name": name}
    obj["spec"]["model"] = {
        "name": MODEL,
        "uri": URI,
        "cache": {"storageClassName": storage_class, "size": "2Gi"},
    }
    obj["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 1}
    # Replicas start at once here (the start-up annotation wins for them; the loader ignores it):
    # what reading from the cache costs is the wake-from-zero benchmark's to measure.
    obj["spec"]["podTemplate"] = {
        "metadata": {
            "annotations": {SIMULATED_WEIGHTS_BYTES: str(WEIGHTS_BYTES), SIMULATED_STARTUP: "0s"}
        }
    }
    return obj


def _ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    obj = kube.get("inferenceendpoint", name, namespace)
    ready = condition(obj, "Ready")
    if obj is None or ready is None or ready["status"] != "True":
        return None
    if ready.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    return obj


def _pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        pod
        for pod in kube.list("pods", namespace, selector=f"tidal.dev/endpoint={name}")
        if not pod["metadata"].get("deletionTimestamp")
    ]


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _reads_the_cache_only(pod: dict[str, Any], claim: str) -> None:
    """The replica mounts the cache read-only, serves the local directory, fetches nothing."""
    spec = pod["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    (engine,) = spec["containers"]
    mounts = [m for m in engine["volumeMounts"] if m["name"] == "model"]
    assert mounts == [{"name": "model", "mountPath": "/models", "readOnly": True}]
    assert engine["args"][:3] == ["/models", "--served-model-name", MODEL]
    assert "--revision" not in engine["args"]
    assert not spec.get("initContainers")
    assert "ephemeral-storage" not in (engine.get("resources") or {}).get("requests", {})


def _loaded_once(kube: Kube, namespace: str, claim: dict[str, Any]) -> dict[str, Any]:
    """The cache's loader Job: owned by the claim, succeeded once after the simulated download,
    non-root, its copy measured by a shell that never parses the user's values."""
    name = claim["metadata"]["name"]
    (job,) = kube.list("jobs", namespace, selector=f"{LABEL_MODEL_CACHE}={name}")
    assert job["metadata"]["name"] == name
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("PersistentVolumeClaim", claim["metadata"]["uid"])
    assert condition(job, "Complete") is not None
    assert job["status"]["succeeded"] == 1
    took = _time(job["status"]["completionTime"]) - _time(job["status"]["startTime"])
    # Whole seconds on both stamps: at least the download less one second of truncation.
    assert took.total_seconds() >= DOWNLOAD_SECONDS - 1, took
    loader = job["spec"]["template"]["spec"]
    assert loader["securityContext"]["runAsNonRoot"] is True
    (container,) = loader["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The copy runs under a shell that then measures it; the Hub client's arguments stay
    # positional, never parsed by the shell.
    assert container["command"][:2] == ["/bin/sh", "-c"]
    assert container["command"][4:7] == ["hf", "download", MODEL]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    return job


def test_cache_fill_job_then_replicas_mount_it_read_only_and_none_downloads(
    kube: Kube, namespace: str, storage_class: str
) -> None:
    kube.apply(_endpoint("first", storage_class), namespace)

    def cached() -> dict[str, Any] | None:
        obj = kube.get("inferenceendpoint", "first", namespace)
        found = condition(obj, "ModelCached")
        return found if found is not None and found["status"] == "True" else None

    filled = wait_for("ModelCached True on the first endpoint", cached, timeout=240)
    assert filled["reason"] == "Filled"
    assert URI in filled["message"]
    # The bytes the loader measured, recorded once on the claim.
    assert f"{WEIGHTS_BYTES} bytes copied" in filled["message"]

    (claim,) = kube.list("persistentvolumeclaims", namespace, selector=LABEL_MODEL_CACHE)
    name = claim["metadata"]["name"]
    assert name.startswith("tidal-model-")
    assert name in filled["message"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == storage_class
    assert claim["metadata"]["annotations"]["tidal.dev/model-uri"] == URI
    assert claim["metadata"]["annotations"][MODEL_CACHE_BYTES] == str(WEIGHTS_BYTES)
    assert not claim["metadata"].get("ownerReferences")  # outlives its endpoints
    assert claim["status"]["phase"] == "Bound"

    job = _loaded_once(kube, namespace, claim)

    wait_for("the first endpoint Ready", lambda: _ready(kube, namespace, "first"), timeout=240)
    (pod,) = _pods(kube, namespace, "first")
    _reads_the_cache_only(pod, name)
    # No replica existed before the cache was filled: none could have downloaded.
    assert _time(pod["metadata"]["creationTimestamp"]) >= _time(job["status"]["completionTime"])

    # A second endpoint of the same model reuses the filled cache: no second claim or Job.
    kube.apply(_endpoint("second", storage_class), namespace)
    second = wait_for(
        "the second endpoint Ready", lambda: _ready(kube, namespace, "second"), timeout=240
    )
    assert condition(second, "ModelCached")["status"] == "True"  # type: ignore[index]
    (pod,) = _pods(kube, namespace, "second")
    _reads_the_cache_only(pod, name)
    jobs = kube.list("jobs", namespace, selector=LABEL_MODEL_CACHE)
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]]
    claims = kube.list("persistentvolumeclaims", namespace, selector=LABEL_MODEL_CACHE)
    assert [c["metadata"]["uid"] for c in claims] == [claim["metadata"]["uid"]]

    # Deleting both endpoints keeps the cache (and its record, the Job) for the next one.
    kube.run("delete", "inferenceendpoint", "first", "second", "-n", namespace)
    wait_for(
        "the endpoints' Deployments gone",
        lambda: not kube.list("deployments", namespace, selector="tidal.dev/endpoint"),
        timeout=120,
    )
    kept = kube.get("persistentvolumeclaim", name, namespace)
    assert kept is not None
    assert kept["metadata"]["uid"] == claim["metadata"]["uid"]
    assert not kept["metadata"].get("deletionTimestamp")
    assert kube.get("job", name, namespace) is not None
