"""The shared model cache (`spec.model.cache`): the claim and loader Job rendered whole, the
replicas that read it, and the reconcile that waits for it (ModelCached, replicas held at 0)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from tests.unit.test_reconcile_endpoint import NOW, endpoint, view, world

from tidal.api.endpoint import InferenceEndpoint
from tidal.api.labels import LABEL_MODEL_CACHE
from tidal.api.parsing import parse_object
from tidal.errors import PermanentError
from tidal.reconcile.endpoint import Memory, cache_name, decide
from tidal.render.cache import completed, loader_bytes, model_cache, render_claim, render_loader_job
from tidal.render.engines import engine_pod, model_cache_name

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
HUB = f"hf://{MODEL}@0e9e39f"
CACHE = "tidal-model-" + hashlib.sha256(HUB.encode()).hexdigest()[:12]
SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
    "readOnlyRootFilesystem": True,
}
LABELS = {
    "app.kubernetes.io/managed-by": "tidal",
    "app.kubernetes.io/part-of": "tidal",
    LABEL_MODEL_CACHE: CACHE,
}
TOKEN = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}


def cached(uri: str = HUB, **cache: Any) -> dict[str, Any]:
    return endpoint(
        model={"name": MODEL, "uri": uri, "weightsGiB": 16, "cache": cache},
        runtime={"env": [TOKEN]},
    )


def parsed(raw: dict[str, Any]) -> InferenceEndpoint:
    return parse_object(InferenceEndpoint, raw)


# --- the API ------------------------------------------------------------------------------------


def test_a_cache_is_sized_from_the_weights_plus_a_fifth_unless_given() -> None:
    assert parsed(cached()).spec.model.cache_size == "20Gi"  # ceil(16 * 1.2)
    assert parsed(cached(size="100Gi")).spec.model.cache_size == "100Gi"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"name": MODEL, "cache": {}}, "model.cache.size is required"),
        (
            {"name": MODEL, "uri": "pvc://weights/llama", "cache": {"size": "20Gi"}},
            "cannot cache a pvc:// source",
        ),
    ],
)
def test_a_cache_without_a_size_or_of_a_volume_is_refused(
    model: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentError, match=message):
        parsed(endpoint(model=model))


# --- the claim and the loader Job -------------------------------------------------------------


def test_one_cache_per_source_uri_and_revision() -> None:
    cache = model_cache(parsed(cached()))
    assert cache is not None
    assert cache.name == CACHE == model_cache_name(cache.source)
    other = model_cache(parsed(cached(uri=f"hf://{MODEL}@main")))
    assert other is not None
    assert other.name != CACHE
    assert model_cache(parsed(endpoint())) is None


def test_the_claim_is_read_write_many_labelled_and_owned_by_nothing() -> None:
    ie = parsed(cached(storageClassName="efs"))
    cache = model_cache(ie)
    assert cache is not None
    assert render_claim(ie, cache) == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": CACHE,
            "namespace": "ml",
            "labels": LABELS,
            "annotations": {"tidal.dev/model-uri": HUB},
        },
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "20Gi"}},
            "storageClassName": "efs",
        },
    }
    # Unset: the cluster's default class.
    assert "storageClassName" not in render_claim(parsed(cached()), cache)["spec"]


def test_the_hub_loader_job_downloads_once_as_non_root_with_the_token_and_bounded() -> None:
    ie = parsed(cached())
    cache = model_cache(ie)
    assert cache is not None
    assert render_loader_job(ie, cache, "claim-uid") == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": CACHE,
            "namespace": "ml",
            "labels": LABELS,
            "annotations": {"tidal.dev/model-uri": HUB},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "name": CACHE,
                    "uid": "claim-uid",
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "backoffLimit": 3,
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "loader",
                            "image": "vllm/vllm-openai:v0.31.0",
                            # The copy, then the bytes it left on the volume as the
                            # termination message; the user's values stay positional.
                            "command": [
                                "/bin/sh",
                                "-c",
                                'set -e; "$@"; find /models -type f -exec stat -c %s {} + '
                                "| awk '{s += $1} END {printf \"%d\", s}' "
                                "> /dev/termination-log",
                                "loader",
                                "hf",
                                "download",
                                MODEL,
                                "--local-dir",
                                "/models",
                                "--revision",
                                "0e9e39f",
                            ],
                            "env": [
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "HF_HOME", "value": "/tmp/huggingface"},
                                {"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "1"},
                                TOKEN,
                            ],
                            "securityContext": SECURITY,
                            "volumeMounts": [
                                {"name": "model", "mountPath": "/models"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "1Gi"},
                                "limits": {"cpu": "2", "memory": "4Gi"},
                            },
                        }
                    ],
                    "volumes": [
                        {"name": "model", "persistentVolumeClaim": {"claimName": CACHE}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def test_a_bucket_loader_is_rclone_and_takes_the_pod_templates_identity_and_tolerations() -> None:
    raw = cached(uri="s3://models/llama-8b")
    raw["spec"]["podTemplate"] = {
        "spec": {
            "serviceAccountName": "model-reader",
            "tolerations": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        }
    }
    ie = parsed(raw)
    cache = model_cache(ie)
    assert cache is not None
    spec = render_loader_job(ie, cache, "u")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "model-reader"
    assert spec["tolerations"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    (loader,) = spec["containers"]
    assert loader["image"].startswith("rclone/rclone:")
    assert loader["command"][:2] == ["/bin/sh", "-c"]
    assert "args" not in loader
    assert loader["command"][3:7] == ["loader", "rclone", "copy", ":s3:models/llama-8b"]
    assert loader["command"][7] == "/models"
    assert loader["securityContext"]["readOnlyRootFilesystem"] is True
    assert TOKEN in loader["env"]


# --- the replicas read the cache ---------------------------------------------------------------


def test_replicas_mount_the_cache_read_only_and_serve_the_local_directory() -> None:
    pod = engine_pod(parsed(cached()))
    assert pod.args == ["/models", "--served-model-name", MODEL, "--port", "8000"]
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in pod.volume_mounts
    assert {
        "name": "model",
        "persistentVolumeClaim": {"claimName": CACHE, "readOnly": True},
    } in pod.volumes
    assert pod.init_containers == []
    assert pod.ephemeral_storage is None


def test_a_cached_bucket_is_read_from_the_volume_not_streamed_nor_fetched() -> None:
    for engine in ("VLLM", "TGI"):
        raw = cached(uri="s3://models/llama-8b")
        raw["spec"]["runtime"]["engine"] = engine
        pod = engine_pod(parsed(raw))
        assert "runai_streamer" not in pod.args
        assert "/models" in pod.args
        assert pod.init_containers == []
        assert pod.ephemeral_storage is None


def test_a_custom_engine_without_a_uri_cannot_use_a_cache() -> None:
    raw = endpoint(
        model={"name": "my-model", "weightsGiB": 4, "cache": {}},
        runtime={"engine": "Custom", "image": "me/engine:1"},
    )
    assert cache_name(raw) is None
    assert view(decide(raw, world(), Memory(), NOW))["conditions"] == {"Ready": "False/InvalidSpec"}


# --- the reconcile waits for the cache ---------------------------------------------------------


def claim(uid: str = "claim-uid") -> dict[str, Any]:
    return {"metadata": {"name": CACHE, "namespace": "ml", "uid": uid}, "status": {}}


def job(*conditions: dict[str, str], owner: str = "claim-uid", failed: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": "2026-12-01T11:50:00Z"}
    if failed:
        status["failed"] = failed
    if conditions:
        status["conditions"] = list(conditions)
        status["completionTime"] = "2026-12-01T11:51:33Z"
    return {
        "metadata": {
            "name": CACHE,
            "namespace": "ml",
            "ownerReferences": [{"kind": "PersistentVolumeClaim", "uid": owner}],
        },
        "status": status,
    }


COMPLETE = {"type": "Complete", "status": "True"}


def conditions(outcome: Any) -> dict[str, str]:
    return {
        c["type"]: f"{c['status']}/{c['reason']}: {c['message']}"
        for c in (outcome.status or {}).get("conditions", [])
        if c["type"] in ("ModelCached", "Ready")
    }


def test_without_its_cache_the_endpoint_creates_the_claim_and_holds_replicas_at_zero() -> None:
    outcome = decide(cached(), world(), Memory(), NOW)
    assert view(outcome)["children"] == [
        f"PersistentVolumeClaim/{CACHE}=None",
        "Service/chat=None",
        "PodDisruptionBudget/chat=None",
    ]
    cache = model_cache(parsed(cached()))
    assert cache is not None
    assert outcome.children[0] == render_claim(parsed(cached()), cache)
    assert view(outcome)["replicas"] == {"desired": 0, "ready": 0, "spot": 0, "reserved": 0}
    message = f"creating cache {CACHE} for {HUB}"
    assert conditions(outcome) == {
        "ModelCached": f"False/Filling: {message}",
        "Ready": f"False/Filling: {message}",
    }
    assert outcome.status is not None
    assert outcome.status["placement"]["reason"] == (
        f"replicas held at 0 until the model cache is filled: {message}"
    )


def test_once_the_claim_exists_its_loader_job_is_created_owned_by_it() -> None:
    outcome = decide(cached(), world(cache_claim=claim()), Memory(), NOW)
    kinds = [c["kind"] for c in outcome.children]
    assert kinds == ["Job", "Service", "PodDisruptionBudget"]
    assert outcome.children[0]["metadata"]["ownerReferences"][0]["uid"] == "claim-uid"
    assert view(outcome)["replicas"]["desired"] == 0
    assert conditions(outcome)["ModelCached"].startswith("False/Filling: starting loader Job")


def test_while_the_job_copies_nothing_is_created_and_replicas_stay_at_zero() -> None:
    outcome = decide(cached(), world(cache_claim=claim(), cache_job=job(failed=1)), Memory(), NOW)
    assert [c["kind"] for c in outcome.children] == ["Service", "PodDisruptionBudget"]
    assert conditions(outcome)["ModelCached"] == (
        f"False/Filling: loader Job {CACHE} is copying {HUB}, 1 failed attempt(s) of 4"
    )


def test_a_leftover_job_of_a_deleted_claim_is_not_taken_as_filled() -> None:
    stale = job(COMPLETE, owner="old-claim")
    outcome = decide(cached(), world(cache_claim=claim(), cache_job=stale), Memory(), NOW)
    assert view(outcome)["replicas"]["desired"] == 0
    assert conditions(outcome)["ModelCached"].startswith("False/Filling")
    assert [c["kind"] for c in outcome.children] == ["Service", "PodDisruptionBudget"]


def test_once_filled_replicas_start_mounting_the_cache_and_serving_the_local_path() -> None:
    outcome = decide(cached(), world(cache_claim=claim(), cache_job=job(COMPLETE)), Memory(), NOW)
    assert view(outcome)["children"][0] == "Deployment/chat-spot=2"
    assert conditions(outcome)["ModelCached"] == (
        f"True/Filled: cache {CACHE} holds {HUB}: size not reported by the loader (claim of "
        "21474836480 bytes), filled in 93 s"
    )
    assert conditions(outcome)["Ready"].startswith("False/ReplicasNotReady")
    pod = outcome.children[0]["spec"]["template"]["spec"]
    (engine,) = pod["containers"]
    assert engine["args"][:2] == ["/models", "--served-model-name"]
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in engine["volumeMounts"]
    assert {
        "name": "model",
        "persistentVolumeClaim": {"claimName": CACHE, "readOnly": True},
    } in pod["volumes"]
    assert "initContainers" not in pod or pod["initContainers"] == []
    assert "ephemeral-storage" not in engine["resources"].get("requests", {})


def test_a_failed_fill_is_reported_with_the_jobs_reason_and_nothing_starts() -> None:
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    }
    outcome = decide(cached(), world(cache_claim=claim(), cache_job=job(failed)), Memory(), NOW)
    assert view(outcome)["replicas"]["desired"] == 0
    expected = (
        f"False/FillFailed: loader Job {CACHE} for {HUB} failed (BackoffLimitExceeded: Job has "
        "reached the specified backoff limit); delete the Job to retry"
    )
    assert conditions(outcome) == {"ModelCached": expected, "Ready": expected}


def test_two_endpoints_with_the_same_model_share_one_claim_and_job() -> None:
    first, second = cached(), cached()
    second["metadata"] = {**second["metadata"], "name": "chat-b", "uid": "u-2"}
    assert cache_name(first) == cache_name(second) == CACHE
    made = [decide(raw, world(), Memory(), NOW).children[0] for raw in (first, second)]
    assert made[0] == made[1]
    jobs = [
        decide(raw, world(cache_claim=claim()), Memory(), NOW).children[0]
        for raw in (first, second)
    ]
    assert jobs[0] == jobs[1]
    # Filled once: the second endpoint creates nothing of the cache and starts its replicas.
    outcome = decide(second, world(cache_claim=claim(), cache_job=job(COMPLETE)), Memory(), NOW)
    assert [c["kind"] for c in outcome.children] == ["Deployment", "Service", "PodDisruptionBudget"]


def test_without_a_cache_nothing_of_one_is_rendered_or_reported() -> None:
    outcome = decide(endpoint(), world(), Memory(), NOW)
    assert "ModelCached" not in view(outcome)["conditions"]
    assert cache_name(endpoint()) is None
    assert not any(c["kind"] in ("PersistentVolumeClaim", "Job") for c in outcome.children)


def test_a_cache_removed_from_the_spec_takes_its_condition_with_it() -> None:
    raw = endpoint()
    raw["status"] = {
        "conditions": [
            {
                "type": "ModelCached",
                "status": "True",
                "reason": "Filled",
                "message": "old",
                "lastTransitionTime": "2026-12-01T11:51:33Z",
            }
        ]
    }
    outcome = decide(raw, world(), Memory(), NOW)
    assert outcome.status is not None
    assert "ModelCached" not in [c["type"] for c in outcome.status["conditions"]]


# --- what the fill copied, as the loader measured it -------------------------------------------


def loader_pod(phase: str, message: str | None, name: str = "loader") -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": 0 if phase == "Succeeded" else 1}
    if message is not None:
        terminated["message"] = message
    return {
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": name, "state": {"terminated": terminated}}],
        }
    }


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([loader_pod("Succeeded", "16060522496")], 16060522496),
        # A failed attempt before the success says nothing about the copy.
        ([loader_pod("Failed", "12"), loader_pod("Succeeded", "42")], 42),
        ([loader_pod("Succeeded", "42\n")], 42),
        ([loader_pod("Failed", "42")], None),
        ([loader_pod("Succeeded", None)], None),
        ([loader_pod("Succeeded", "find: /models: Permission denied")], None),
        ([loader_pod("Succeeded", "42", name="istio-proxy")], None),
        ([], None),
    ],
)
def test_the_bytes_copied_come_from_a_succeeded_loaders_termination_message(
    pods: list[dict[str, Any]], expected: int | None
) -> None:
    assert loader_bytes(pods) == expected


def test_once_recorded_on_the_claim_the_condition_says_the_bytes_copied() -> None:
    recorded = claim()
    recorded["metadata"]["annotations"] = {"tidal.dev/model-bytes": "16060522496"}
    outcome = decide(cached(), world(cache_claim=recorded, cache_job=job(COMPLETE)), Memory(), NOW)
    assert conditions(outcome)["ModelCached"] == (
        f"True/Filled: cache {CACHE} holds {HUB}: 16060522496 bytes copied, filled in 93 s"
    )


@pytest.mark.parametrize(
    ("job_status", "expected"),
    [
        ({"conditions": [COMPLETE]}, True),
        ({"conditions": [{"type": "Failed", "status": "True"}]}, False),
        ({"conditions": [{"type": "Complete", "status": "False"}]}, False),
        ({}, False),
    ],
)
def test_only_a_succeeded_job_is_completed(job_status: dict[str, Any], expected: bool) -> None:
    assert completed({"status": job_status}) is expected
    assert completed(None) is False


def test_the_loader_pod_carries_the_pod_templates_labels_and_annotations_under_tidals_own() -> None:
    raw = cached()
    raw["spec"]["podTemplate"] = {
        "metadata": {
            "labels": {"azure.workload.identity/use": "true"},
            "annotations": {"sidecar.istio.io/inject": "false"},
        }
    }
    ie = parsed(raw)
    cache = model_cache(ie)
    assert cache is not None
    metadata = render_loader_job(ie, cache, "u")["spec"]["template"]["metadata"]
    assert metadata["labels"]["azure.workload.identity/use"] == "true"
    assert metadata["labels"]["tidal.dev/model-cache"] == CACHE
    assert metadata["annotations"] == {"sidecar.istio.io/inject": "false"}
