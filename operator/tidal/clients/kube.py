"""Kubernetes API access for the controllers: the only module in Tidal that imports `kubernetes`.

It owns the connection (`load_config`), server-side apply of rendered children, the few reads
the reconcile needs, status and annotation patches, and pod deletion (residency enforcement and
replicas on lost nodes). The fleet, namespaces and collections are not read here: the
controllers watch them through Kopf indexes. Objects travel as plain JSON dicts in wire form
(camelCase), exactly as the API server sends them, so pure modules can read them without the
client's generated models.

Every function is blocking: call it from a sync Kopf handler or through `asyncio.to_thread`.
Failures leave this module only as `tidal.errors` exceptions; `ApiException` and urllib3 errors
never do. This module decides nothing about the product.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from tidal.errors import ConflictError, PermanentError, TemporaryError, TidalError

__all__ = [
    "apply",
    "delete_pod",
    "get_node",
    "get_object",
    "list_deployments",
    "list_objects",
    "list_pods",
    "load_config",
    "patch_annotations",
    "patch_status",
    "request",
]

Object = dict[str, Any]
_T = TypeVar("_T")

FIELD_MANAGER: Final = "tidal"
# (connect, read) seconds; the API server answers a single-object request well within this.
_REQUEST_TIMEOUT: Final = (5.0, 30.0)
# Pauses between attempts when the API server answers 409 Conflict.
_CONFLICT_BACKOFFS: Final = (0.2, 0.5, 1.0)

# Kinds the operator reads or writes, so paths need no discovery round-trip.
_PLURALS: Final[Mapping[tuple[str, str], str]] = {
    ("v1", "Node"): "nodes",
    ("v1", "Pod"): "pods",
    ("v1", "Service"): "services",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Namespace"): "namespaces",
    ("v1", "Secret"): "secrets",
    ("v1", "ConfigMap"): "configmaps",
    ("tidal.dev/v1alpha1", "InferenceEndpoint"): "inferenceendpoints",
    ("tidal.dev/v1alpha1", "VectorCollection"): "vectorcollections",
}

_lock = threading.Lock()
_api_client: k8s.ApiClient | None = None


def load_config() -> None:
    """Connect with `$KUBECONFIG` when set, else in-cluster, else `~/.kube/config`."""
    global _api_client
    # The config loaders are untyped; they only mutate the client's default Configuration.
    try:
        if os.environ.get("KUBECONFIG"):
            # Passed explicitly: the client reads $KUBECONFIG once, when it is imported.
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ["KUBECONFIG"]
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as exc:
        raise PermanentError(f"cannot load Kubernetes configuration: {exc}") from exc
    with _lock:
        _api_client = k8s.ApiClient()


def apply(obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> Object:
    """Server-side apply `obj` (force: Tidal owns every field it renders) and return the result."""
    metadata = obj.get("metadata", {})
    path = _path(obj["apiVersion"], obj["kind"], metadata.get("namespace"), metadata["name"])
    query = [("fieldManager", field_manager), ("force", "true")]

    def attempt() -> Object:
        return _request("PATCH", path, query, body=obj, content_type="application/apply-patch+yaml")

    return _retrying_conflicts(attempt)


def get_object(api_version: str, kind: str, namespace: str | None, name: str) -> Object | None:
    """Read one object; None when it does not exist."""
    try:
        return _request("GET", _path(api_version, kind, namespace, name))
    except _NotFoundError:
        return None


def list_objects(
    api_version: str, kind: str, namespace: str | None, labels: Mapping[str, str]
) -> list[Object]:
    """List objects of a kind whose labels equal `labels` (all of them)."""
    query = [("labelSelector", _selector(labels))] if labels else []
    try:
        result = _request("GET", _path(api_version, kind, namespace, None), query)
    except _NotFoundError:
        return []
    items: list[Object] = result.get("items") or []
    # List items come without apiVersion/kind; fill them in so they read like single objects.
    for item in items:
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
    return items


def list_deployments(namespace: str, labels: Mapping[str, str]) -> list[Object]:
    """Deployments in `namespace` matching `labels`."""
    return list_objects("apps/v1", "Deployment", namespace, labels)


def list_pods(namespace: str, labels: Mapping[str, str]) -> list[Object]:
    """Pods in `namespace` matching `labels`."""
    return list_objects("v1", "Pod", namespace, labels)


def get_node(name: str) -> Object | None:
    """One Node; None when it is gone (nodes come and go, notably spot ones)."""
    return get_object("v1", "Node", None, name)


def delete_pod(namespace: str, name: str, *, uid: str | None = None) -> bool:
    """Delete a pod (its owner replaces it); False when it was already gone.

    With `uid`, only that incarnation is deleted: a pod recreated under the same name since it
    was observed answers 409 and is left alone (also False).
    """
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
    if uid:
        body["preconditions"] = {"uid": uid}
    try:
        _request(
            "DELETE",
            _path("v1", "Pod", namespace, name),
            body=body,
            content_type="application/json",
        )
    except (_NotFoundError, ConflictError):
        return False
    return True


def patch_annotations(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str,
    annotations: Mapping[str, str | None],
) -> Object:
    """JSON-merge-patch `metadata.annotations` (a None value removes that annotation)."""
    path = _path(api_version, kind, namespace, name)

    def attempt() -> Object:
        return _request(
            "PATCH",
            path,
            body={"metadata": {"annotations": dict(annotations)}},
            content_type="application/merge-patch+json",
        )

    return _retrying_conflicts(attempt)


def patch_status(
    api_version: str, kind: str, namespace: str | None, name: str, status: Mapping[str, Any]
) -> Object:
    """JSON-merge-patch the status subresource (lists such as conditions are replaced whole)."""
    path = _path(api_version, kind, namespace, name) + "/status"

    def attempt() -> Object:
        return _request(
            "PATCH",
            path,
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )

    return _retrying_conflicts(attempt)


# --- internals -------------------------------------------------------------------------------


class _NotFoundError(TidalError):
    """404, handled inside this module (reads turn it into None / an empty list)."""


def _client() -> k8s.ApiClient:
    global _api_client
    with _lock:
        if _api_client is None:
            # Callers forgot load_config(); the default Configuration may still be usable.
            _api_client = k8s.ApiClient()
        return _api_client


def _path(api_version: str, kind: str, namespace: str | None, name: str | None) -> str:
    try:
        plural = _PLURALS[(api_version, kind)]
    except KeyError:
        raise PermanentError(f"Tidal does not manage {kind} in {api_version}") from None
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        prefix += f"/namespaces/{namespace}"
    return f"{prefix}/{plural}" + (f"/{name}" if name else "")


def request(
    method: str,
    path: str,
    query: list[tuple[str, str]] | None = None,
    *,
    body: Mapping[str, Any] | None = None,
    content_type: str | None = None,
) -> Object:
    """One API call for the other clients (the agent's): the JSON answer, or our error.

    A 404 is temporary there: the object (a node) may be back, or the caller's view is stale.
    """
    try:
        return _request(method, path, query, body=body, content_type=content_type)
    except _NotFoundError as err:
        raise TemporaryError(str(err), delay=5) from err


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _request(
    method: str,
    path: str,
    query: list[tuple[str, str]] | None = None,
    *,
    body: Mapping[str, Any] | None = None,
    content_type: str | None = None,
) -> Object:
    api = _client()
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    what = f"{method} {path}"
    try:
        request = api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
        )
        response = api.call_api(*request, _request_timeout=_REQUEST_TIMEOUT)
        raw: bytes | None = response.read()  # type: ignore[no-untyped-call]
    except ApiException as exc:  # raised by the REST layer before any response exists
        raise _translate(exc.status or 0, str(exc.reason), None, what) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise TemporaryError(f"{what}: API server unreachable: {exc}", delay=5) from exc
    status = int(response.status)
    if not 200 <= status <= 299:
        raise _translate(status, _message(raw), response.headers.get("Retry-After"), what)
    try:
        data = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise TemporaryError(f"{what}: unreadable response", delay=5) from exc
    if not isinstance(data, dict):
        raise TemporaryError(f"{what}: unexpected response type {type(data).__name__}", delay=5)
    return data


def _message(raw: bytes | None) -> str:
    """The `message` of a Kubernetes Status body, or the raw text."""
    text = (raw or b"").decode("utf-8", errors="replace")
    try:
        status = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return text[:500]


def _translate(status: int, message: str, retry_after: str | None, what: str) -> TidalError:
    """Map an HTTP failure to our tree: what retrying can fix is temporary."""
    text = f"{what}: HTTP {status}: {message}"
    if status == 404:
        return _NotFoundError(text)
    if status == 409:
        return ConflictError(text, delay=1)
    if status in (400, 422):
        return PermanentError(text)
    if status == 429:
        return TemporaryError(text, delay=_retry_after(retry_after, default=5))
    if status in (401, 403):
        # Usually RBAC not (yet) granted by the installer: fixable without touching the spec.
        return TemporaryError(text, delay=30)
    return TemporaryError(text, delay=_retry_after(retry_after, default=5))


def _retry_after(header: str | None, *, default: float) -> float:
    try:
        return max(1.0, float(header)) if header else default
    except ValueError:
        return default


def _retrying_conflicts(attempt: Callable[[], _T]) -> _T:
    """Writes retry a few 409s here; a write to something missing is worth retrying later."""
    for pause in (*_CONFLICT_BACKOFFS, None):
        try:
            return attempt()
        except ConflictError:
            if pause is None:
                raise
            time.sleep(pause)
        except _NotFoundError as exc:
            raise TemporaryError(str(exc), delay=10) from exc
    raise AssertionError("unreachable")
