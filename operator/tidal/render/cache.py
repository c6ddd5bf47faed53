"""A shared model cache (`spec.model.cache`): its claim, its loader Job, and how far it got.

One ReadWriteMany PersistentVolumeClaim per model source (URI and revision) and namespace, named
`tidal-model-<hash of the URI>` (`engines.model_cache_name`), so every endpoint serving the same
weights in a namespace finds the same one; a loader Job of the same name fills it once, and the
replicas mount it read-only (`engines.cached_source`).

Who owns what, so the garbage collector keeps the right things:
- the claim is owned by nothing: it outlives the endpoints that use it (deleting the last one
  keeps the weights for the next, which then starts without a download). The way to remove it
  is explicit: `kubectl delete pvc -l tidal.dev/model-cache=<name>` (the ModelCached condition
  names the cache).
- the Job is owned by the claim: deleting the claim deletes the Job and its pod, and a Job whose
  owner is not the claim seen now (a claim deleted and recreated) is a leftover on its way out,
  never a record that the new claim is filled. Because the Job needs the claim's uid, the claim
  is created first and the Job on the reconcile after the claim appears.
- the succeeded Job is the record that the cache is filled; a failed one stays failed (its pod
  retried `backoffLimit` times): delete the Job to try again.
- what the fill copied is measured by the loader itself: after the copy it sums the sizes of the
  files under the volume and writes the number as its termination message. The controller
  records it once on the claim (`tidal.dev/model-bytes`, `loader_bytes`), so the ModelCached
  condition says the bytes copied, not the bytes requested, without reading pods again.

Must not: do IO, read the clock, or decide replicas (`tidal.reconcile.endpoint` holds them at 0
while `CacheProgress.filled` is False).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tidal.api.common import MODEL_CACHED, Condition
from tidal.api.endpoint import Engine, InferenceEndpoint, default_image
from tidal.api.labels import (
    LABEL_MANAGED_BY,
    LABEL_MODEL_CACHE,
    LABEL_PART_OF,
    MANAGER,
    MODEL_CACHE_BYTES,
    MODEL_CACHE_URI,
)
from tidal.api.sources import HubSource, ObjectStoreSource
from tidal.api.wire import parse_time, quantity_int
from tidal.render.engines import (
    CONTAINER_SECURITY_CONTEXT,
    MODEL_DIR,
    cacheable_source,
    fetch_weights_container,
    merge_env,
    model_cache_name,
)

__all__ = [
    "FILLED",
    "FILLING",
    "FILL_FAILED",
    "LOADER_BACKOFF_LIMIT",
    "CacheProgress",
    "ModelCache",
    "completed",
    "loader_bytes",
    "model_cache",
    "progress",
    "recorded_bytes",
    "render_claim",
    "render_loader_job",
]

Object = dict[str, Any]

FILLED: Final = "Filled"
FILLING: Final = "Filling"
FILL_FAILED: Final = "FillFailed"
# A download interrupted by a node going away or a throttled store is worth retrying; rclone
# and the Hub client both resume, skipping the files already complete.
LOADER_BACKOFF_LIMIT: Final = 3
_LOADER: Final = "loader"
_TMP_VOLUME: Final = "tmp"
_VOLUME: Final = "model"
# The loader moves bytes: a little CPU and memory, bounded so it never starves a node.
_LOADER_RESOURCES: Final[Mapping[str, Mapping[str, str]]] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "4Gi"},
}
# Any non-root uid works for the engines, which only read; fsGroup makes the fresh volume
# writable by it where the volume type supports ownership management.
_LOADER_UID: Final = 1000


@dataclass(frozen=True)
class ModelCache:
    """The cache an endpoint uses: its name (claim and Job), the source it holds, its size."""

    name: str
    namespace: str
    source: HubSource | ObjectStoreSource
    size: str


def model_cache(ie: InferenceEndpoint) -> ModelCache | None:
    """The cache `ie` uses; None without `model.cache` (PermanentError naming the field when the
    source cannot be cached)."""
    size = ie.spec.model.cache_size  # None exactly when there is no cache
    if size is None:
        return None
    source = cacheable_source(ie)
    return ModelCache(
        name=model_cache_name(source),
        namespace=str(ie.metadata.get("namespace", "")),
        source=source,
        size=size,
    )


def _labels(cache: ModelCache) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGER, LABEL_PART_OF: MANAGER, LABEL_MODEL_CACHE: cache.name}


def render_claim(ie: InferenceEndpoint, cache: ModelCache) -> Object:
    """The cache's ReadWriteMany claim (owned by nothing: it outlives its endpoints)."""
    spec: Object = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": cache.size}},
    }
    settings = ie.spec.model.cache
    if settings is not None and settings.storage_class_name is not None:
        spec["storageClassName"] = settings.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": cache.name,
            "namespace": cache.namespace,
            "labels": _labels(cache),
            "annotations": {MODEL_CACHE_URI: cache.source.uri},
        },
        "spec": spec,
    }


# Runs the copy (the positional arguments: the copying command and its arguments, so nothing the
# user wrote is ever parsed by the shell), then writes the bytes now under the volume as the
# container's termination message, where `loader_bytes` reads them. POSIX sh, find, stat -c and
# awk: in both the vLLM image (Ubuntu) and rclone's (Alpine, BusyBox).
_MEASURE_SCRIPT: Final = (
    'set -e; "$@"; '
    f"find {MODEL_DIR} -type f -exec stat -c %s {{}} + "
    "| awk '{s += $1} END {printf \"%d\", s}' > /dev/termination-log"
)


def _measured(container: Object) -> Object:
    """`container` running its copy through `_MEASURE_SCRIPT`."""
    copying = [*container.pop("command", ["rclone"]), *container.pop("args", [])]
    container["command"] = ["/bin/sh", "-c", _MEASURE_SCRIPT, _LOADER, *copying]
    return container


def _loader_container(ie: InferenceEndpoint, cache: ModelCache) -> Object:
    """What copies the weights onto the volume: rclone for a bucket (the same container a
    replica's fetch uses), the Hub's own client for hf://."""
    user_env = [var.to_wire() for var in ie.spec.runtime.env]  # the token, store credentials
    resources = copy.deepcopy(dict(_LOADER_RESOURCES))
    source = cache.source
    if isinstance(source, ObjectStoreSource):
        container = fetch_weights_container(
            source, MODEL_DIR, volume=_VOLUME, env=user_env, resources=resources, name=_LOADER
        )
    else:
        # `hf download` (huggingface_hub's CLI) from the pinned vLLM image: it ships the client
        # vLLM itself downloads with (hf_transfer/Xet included), resumes interrupted files,
        # reads HF_TOKEN from runtime.env, and a node that runs the loader has then pulled the
        # image its replicas run. --local-dir writes plain files (no symlinked blob cache), so
        # the volume's root is a model directory any engine loads.
        args = ["download", source.repo, "--local-dir", MODEL_DIR]
        if source.revision:
            args += ["--revision", source.revision]
        env = [
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HOME", "value": "/tmp/huggingface"},
            {"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "1"},
        ]
        container = {
            "name": _LOADER,
            "image": default_image(Engine.VLLM),
            "command": ["hf"],
            "args": args,
            "env": merge_env(env, user_env),
            "securityContext": copy.deepcopy(dict(CONTAINER_SECURITY_CONTEXT)),
            "volumeMounts": [{"name": _VOLUME, "mountPath": MODEL_DIR}],
            "resources": resources,
        }
    container["securityContext"]["readOnlyRootFilesystem"] = True
    container["volumeMounts"].append({"name": _TMP_VOLUME, "mountPath": "/tmp"})
    return _measured(container)


def render_loader_job(ie: InferenceEndpoint, cache: ModelCache, claim_uid: str) -> Object:
    """The Job that fills the cache once, owned by its claim (uid `claim_uid`).

    The loader runs with the endpoint's runtime.env (a Hub token, store credentials) and, from
    its podTemplate, what lets a pod reach the store and a node (serviceAccountName for
    IRSA/workload identity, imagePullSecrets, tolerations, nodeSelector) and its pod labels and
    annotations (AKS workload identity is a pod label, `azure.workload.identity/use`; a mesh's
    sidecar opt-out is an annotation); the first endpoint to create the cache sets them.
    """
    labels = _labels(cache)
    pod_metadata: Object = {"labels": dict(labels)}
    pod_spec: Object = {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": _LOADER_UID,
            "runAsGroup": _LOADER_UID,
            "fsGroup": _LOADER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_loader_container(ie, cache)],
        "volumes": [
            {"name": _VOLUME, "persistentVolumeClaim": {"claimName": cache.name}},
            {"name": _TMP_VOLUME, "emptyDir": {}},
        ],
    }
    overrides = ie.spec.pod_template.spec if ie.spec.pod_template is not None else None
    if overrides is not None:
        if overrides.service_account_name is not None:
            pod_spec["serviceAccountName"] = overrides.service_account_name
        if overrides.image_pull_secrets:
            pod_spec["imagePullSecrets"] = [s.to_wire() for s in overrides.image_pull_secrets]
        if overrides.tolerations:
            pod_spec["tolerations"] = [t.to_wire() for t in overrides.tolerations]
        if overrides.node_selector:
            pod_spec["nodeSelector"] = dict(overrides.node_selector)
    extra = ie.spec.pod_template.metadata if ie.spec.pod_template is not None else None
    if extra is not None:
        # Tidal's own labels win: they are how the Job finds its pods and the cache its Job.
        pod_metadata["labels"] = {**(extra.labels or {}), **labels}
        if extra.annotations:
            pod_metadata["annotations"] = dict(extra.annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": cache.name,
            "namespace": cache.namespace,
            "labels": labels,
            "annotations": {MODEL_CACHE_URI: cache.source.uri},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "name": cache.name,
                    "uid": claim_uid,
                    "controller": True,
                    # Nothing waits on the Job to delete the claim (and setting it would need
                    # update on persistentvolumeclaims/finalizers where owner references are
                    # enforced).
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "backoffLimit": LOADER_BACKOFF_LIMIT,
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }


@dataclass(frozen=True)
class CacheProgress:
    """How far the cache is: `filled` (replicas may start), the ModelCached condition, and the
    objects to create (the claim, or the Job once the claim exists; never re-applied: a claim's
    spec is immutable, and so is a Job's template)."""

    filled: bool
    condition: Condition
    create: tuple[Object, ...] = ()


def progress(
    ie: InferenceEndpoint,
    cache: ModelCache,
    claim: Mapping[str, Any] | None,
    job: Mapping[str, Any] | None,
) -> CacheProgress:
    """The cache's progress from its claim and Job as observed (None: absent)."""
    generation = ie.metadata.get("generation")
    name, uri = cache.name, cache.source.uri

    def condition(status: str, reason: str, message: str) -> Condition:
        return Condition.model_validate(
            {
                "type": MODEL_CACHED,
                "status": status,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
            }
        )

    if claim is None:
        return CacheProgress(
            filled=False,
            condition=condition("False", FILLING, f"creating cache {name} for {uri}"),
            create=(render_claim(ie, cache),),
        )
    claim_uid = str((claim.get("metadata") or {}).get("uid") or "")
    if job is None or not _owned_by(job, claim_uid):
        create = (render_loader_job(ie, cache, claim_uid),) if job is None and claim_uid else ()
        return CacheProgress(
            filled=False,
            condition=condition("False", FILLING, f"starting loader Job {name} for {uri}"),
            create=create,
        )
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            seconds = _seconds(status.get("startTime"), status.get("completionTime"))
            took = f" in {seconds} s" if seconds is not None else ""
            copied = recorded_bytes(claim)
            size = (
                f"{copied} bytes copied"
                if copied is not None
                else f"size not reported by the loader (claim of {quantity_int(cache.size)} bytes)"
            )
            return CacheProgress(
                filled=True,
                condition=condition(
                    "True", FILLED, f"cache {name} holds {uri}: {size}, filled{took}"
                ),
            )
        if cond.get("type") == "Failed":
            why = cond.get("reason") or "Failed"
            detail = cond.get("message") or ""
            return CacheProgress(
                filled=False,
                condition=condition(
                    "False",
                    FILL_FAILED,
                    f"loader Job {name} for {uri} failed ({why}{': ' + detail if detail else ''})"
                    f"; delete the Job to retry",
                ),
            )
    failed = int(status.get("failed") or 0)
    retries = f", {failed} failed attempt(s) of {LOADER_BACKOFF_LIMIT + 1}" if failed else ""
    return CacheProgress(
        filled=False,
        condition=condition("False", FILLING, f"loader Job {name} is copying {uri}{retries}"),
    )


def completed(job: Mapping[str, Any] | None) -> bool:
    """Whether a loader Job has succeeded."""
    conditions = ((job or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


def recorded_bytes(claim: Mapping[str, Any] | None) -> int | None:
    """The bytes the loader copied, as recorded on the cache's claim (None: not yet)."""
    value = ((claim or {}).get("metadata") or {}).get("annotations", {}).get(MODEL_CACHE_BYTES)
    return int(value) if isinstance(value, str) and value.isdigit() else None


def loader_bytes(pods: Sequence[Mapping[str, Any]]) -> int | None:
    """The bytes a succeeded loader pod reported (its termination message), None when no
    succeeded pod reported a number (an older loader, or a message cut short)."""
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Succeeded":
            continue
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != _LOADER:
                continue
            message = str(
                ((status.get("state") or {}).get("terminated") or {}).get("message") or ""
            )
            if message.strip().isdigit():
                return int(message.strip())
    return None


def _owned_by(job: Mapping[str, Any], uid: str) -> bool:
    owners = (job.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(ref.get("uid") == uid for ref in owners)


def _seconds(start: str | None, end: str | None) -> int | None:
    began, ended = parse_time(start), parse_time(end)
    if began is None or ended is None:
        return None
    return max(0, int((ended - began).total_seconds()))
