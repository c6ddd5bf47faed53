"""Kubernetes API access for the controllers: the only module in Tidal that imports `kubernetes`.

It owns the connection (`load_config`), server-side apply of rendered children, the few reads
the reconcile needs, discovery of the optional kinds (`served_resources`), status and annotation
patches, and pod deletion (residency enforcement and replicas on lost nodes). The fleet,
namespaces and collections are not read here: the controllers watch them through Kopf indexes.
Objects travel as plain JSON dicts in wire form (camelCase), exactly as the API server sends
them, so pure modules can read them without the client's generated models.

The other clients (the agent's `nodes`, the gateway's `gatewaykube`) reach the API server
through `request` and `watch` here, so every caller shares one connection, one set of timeouts
and one translation of failures.

Every function is blocking: call it from a sync Kopf handler or through `asyncio.to_thread`.
Failures leave this module only as `tidal.errors` exceptions; `ApiException` and urllib3 errors
never do. This module decides nothing about the product.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from tidal.errors import ConflictError, PermanentError, TemporaryError, TidalError

__all__ = [
    "ExpiredError",
    "apply",
    "create",
    "delete_pod",
    "get_node",
    "get_object",
    "list_deployments",
    "list_objects",
    "list_pod_events",
    "list_pods",
    "load_config",
    "merge_configmap_data",
    "patch_annotations",
    "patch_pod_annotations",
    "patch_status",
    "request",
    "served_resources",
    "watch",
]

Object = dict[str, Any]
_T = TypeVar("_T")

FIELD_MANAGER: Final = "tidal"
# (connect, read) seconds; the API server answers a single-object request well within this.
_REQUEST_TIMEOUT: Final = (5.0, 30.0)
# Pauses between attempts when the API server answers 409 Conflict.
_CONFLICT_BACKOFFS: Final = (0.2, 0.5, 1.0)
# A watch may stay quiet this much longer than the `timeoutSeconds` it asked the server for, so
# a quiet watch ends by the server closing it rather than by a client-side read timeout.
_WATCH_GRACE_SECONDS: Final = 15.0
# A watch line is one object; a Pod or a custom resource is far below this.
_MAX_WATCH_LINE: Final = 8 << 20

# Kinds the operator reads or writes, so paths need no discovery round-trip.
_PLURALS: Final[Mapping[tuple[str, str], str]] = {
    ("v1", "Node"): "nodes",
    ("v1", "Pod"): "pods",
    ("v1", "Service"): "services",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    # A shared model cache's loader (`tidal.render.cache`).
    ("batch/v1", "Job"): "jobs",
    ("v1", "Namespace"): "namespaces",
    # Read by name; created once (a Managed engine's generated credentials), never changed.
    ("v1", "Secret"): "secrets",
    ("v1", "ConfigMap"): "configmaps",
    ("tidal.dev/v1alpha1", "InferenceEndpoint"): "inferenceendpoints",
    ("tidal.dev/v1alpha1", "VectorCollection"): "vectorcollections",
    # Read only: what Karpenter can still provision (absent without Karpenter: lists empty).
    ("karpenter.sh/v1", "NodePool"): "nodepools",
    # Read only: what the autoscaler said about a pod it could not provision a node for.
    ("v1", "Event"): "events",
    # Read only, through an index: whether a Managed engine's volumes can bind.
    ("storage.k8s.io/v1", "StorageClass"): "storageclasses",
    # Prometheus Operator's: an endpoint's PodMonitor, applied only where the kind is served.
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitors",
}

_lock = threading.Lock()
_api_client: k8s.ApiClient | None = None


class ExpiredError(TemporaryError):
    """410 Gone: the resource version asked for is older than the server keeps (compacted).

    Retrying the same request cannot help; list again and watch from the new version.
    """


# Connections kept open to the API server. The client's default is 5 per CPU: fewer than the
# threads that call it concurrently (the reconcile pool), so every call beyond it opened, and
# then discarded, a TLS connection of its own.
POOL_SIZE: Final = 32


def load_config(pool_size: int = POOL_SIZE) -> None:
    """Connect with `$KUBECONFIG` when set, else in-cluster, else `~/.kube/config`, keeping up to
    `pool_size` connections open (at least the number of threads that call this module)."""
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
    configuration = k8s.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = pool_size
    with _lock:
        _api_client = k8s.ApiClient(configuration)


def apply(obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> Object:
    """Server-side apply `obj` (force: Tidal owns every field it renders) and return the result."""
    metadata = obj.get("metadata", {})
    path = _path(obj["apiVersion"], obj["kind"], metadata.get("namespace"), metadata["name"])
    query = [("fieldManager", field_manager), ("force", "true")]

    def attempt() -> Object:
        return _request("PATCH", path, query, body=obj, content_type="application/apply-patch+yaml")

    return _retrying_conflicts(attempt)


def create(obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> bool:
    """Create `obj` unless an object of its name exists, which is kept as it is: True when
    created. For objects written once (a generated Secret), where an apply would overwrite."""
    metadata = obj.get("metadata", {})
    path = _path(obj["apiVersion"], obj["kind"], metadata.get("namespace"), None)
    try:
        _request("POST", path, [("fieldManager", field_manager)], body=obj)
    except ConflictError:
        return False  # 409 AlreadyExists: whoever created it first wins
    return True


def get_object(api_version: str, kind: str, namespace: str | None, name: str) -> Object | None:
    """Read one object; None when it does not exist."""
    try:
        return _request("GET", _path(api_version, kind, namespace, name))
    except _NotFoundError:
        return None


def list_objects(
    api_version: str,
    kind: str,
    namespace: str | None,
    labels: Mapping[str, str],
    *,
    fields: Mapping[str, str] | None = None,
) -> list[Object]:
    """List objects of a kind whose labels equal `labels` and fields equal `fields` (all)."""
    query = [("labelSelector", _selector(labels))] if labels else []
    if fields:
        query.append(("fieldSelector", _selector(fields)))
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


def list_pod_events(namespace: str, name: str, uid: str | None) -> list[Object]:
    """The Events about one pod (by name, and uid when given: never a same-named successor)."""
    fields = {"involvedObject.kind": "Pod", "involvedObject.name": name}
    if uid:
        fields["involvedObject.uid"] = uid
    return list_objects("v1", "Event", namespace, {}, fields=fields)


def served_resources(api_version: str) -> frozenset[str]:
    """The resources (plurals) the API server serves in `api_version` now, by discovery (which
    every authenticated client may read, so it needs no RBAC); empty when it serves no such
    group or version, as for a CRD that is not installed."""
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    try:
        found = _request("GET", path)
    except _NotFoundError:
        return frozenset()
    resources = found.get("resources")
    if not isinstance(resources, list):
        return frozenset()
    return frozenset(
        str(item["name"]) for item in resources if isinstance(item, dict) and item.get("name")
    )


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


def patch_pod_annotations(
    namespace: str, name: str, annotations: Mapping[str, str | None], *, uid: str | None = None
) -> bool:
    """Merge-patch one pod's annotations (None removes one), only if it is still the pod with
    `uid` (never a same-named successor); False when it is gone."""
    metadata: dict[str, Any] = {"annotations": dict(annotations)}
    if uid:
        metadata["uid"] = uid  # a precondition: the API server refuses a patch on another uid
    try:
        _request(
            "PATCH",
            _path("v1", "Pod", namespace, name),
            body={"metadata": metadata},
            content_type="application/merge-patch+json",
        )
    except (_NotFoundError, ConflictError):
        return False
    return True


def merge_configmap_data(namespace: str, name: str, data: Mapping[str, str]) -> bool:
    """Merge-patch keys into an existing ConfigMap's data; False when there is no such
    ConfigMap (never created here: RBAC grants patch on named ConfigMaps only)."""
    try:
        _request(
            "PATCH",
            _path("v1", "ConfigMap", namespace, name),
            body={"data": dict(data)},
            content_type="application/merge-patch+json",
        )
    except _NotFoundError:
        return False
    return True


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


def watch(
    path: str,
    query: list[tuple[str, str]],
    resource_version: str,
    stop: threading.Event,
    *,
    timeout_seconds: int,
) -> Iterator[tuple[str, Object]]:
    """Changes to the collection at `path` after `resource_version`, as (type, object), until
    the server ends the watch (after `timeout_seconds`) or `stop` is set.

    BOOKMARK events carry only a version. A version the server no longer has raises
    `ExpiredError`; a dropped or stalled connection ends the watch with a `TemporaryError`.
    A 404 is temporary, as in `request`.
    """
    query = [
        *query,
        ("watch", "true"),
        ("allowWatchBookmarks", "true"),
        ("timeoutSeconds", str(timeout_seconds)),
    ]
    if resource_version:
        query.append(("resourceVersion", resource_version))
    what = f"WATCH {path}"
    timeout = (_REQUEST_TIMEOUT[0], timeout_seconds + _WATCH_GRACE_SECONDS)
    try:
        # The REST layer wraps urllib3's response without reading it; the watch streams from it.
        response = _call("GET", path, query, what, timeout=timeout).response
    except _NotFoundError as err:
        raise TemporaryError(str(err), delay=5) from err
    try:
        for line in _lines(response, what):
            if stop.is_set():
                return
            yield _event(line, what)
    finally:
        # Closed, not returned to the pool: a watch left mid-stream has unread bytes.
        response.close()


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
    what = f"{method} {path}"
    response = _call(method, path, query or [], what, body=body, content_type=content_type)
    raw = _read(response, what)
    try:
        data = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise TemporaryError(f"{what}: unreadable response", delay=5) from exc
    if not isinstance(data, dict):
        raise TemporaryError(f"{what}: unexpected response type {type(data).__name__}", delay=5)
    return data


def _call(
    method: str,
    path: str,
    query: list[tuple[str, str]],
    what: str,
    *,
    body: Mapping[str, Any] | None = None,
    content_type: str | None = None,
    timeout: tuple[float, float] = _REQUEST_TIMEOUT,
) -> Any:
    """Send one request: the REST layer's response, its body unread, or our error."""
    api = _client()
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    try:
        request = api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params=headers,
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
        )
        response = api.call_api(*request, _request_timeout=timeout)
    except ApiException as exc:  # raised by the REST layer before any response exists
        raise _translate(exc.status or 0, str(exc.reason), None, what) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise TemporaryError(f"{what}: API server unreachable: {exc}", delay=5) from exc
    status = int(response.status)
    if not 200 <= status <= 299:
        message = _message(_read(response, what))
        raise _translate(status, message, response.headers.get("Retry-After"), what)
    return response


def _read(response: Any, what: str) -> bytes | None:
    try:
        raw: bytes | None = response.read()
    except urllib3.exceptions.HTTPError as exc:
        raise TemporaryError(f"{what}: API server unreachable: {exc}", delay=5) from exc
    return raw


def _lines(response: Any, what: str) -> Iterator[bytes]:
    """Newline-delimited JSON from a streaming response, one complete line at a time."""
    buffer = b""
    try:
        for chunk in response.stream(amt=None, decode_content=True):
            buffer += chunk
            if len(buffer) > _MAX_WATCH_LINE:
                raise TemporaryError(f"{what}: watch line over {_MAX_WATCH_LINE} bytes", delay=5)
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                if line.strip():
                    yield line
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        # A read timeout or a dropped connection ends this watch; the caller watches again.
        raise TemporaryError(f"{what}: watch interrupted: {exc}", delay=1) from exc
    if buffer.strip():
        yield buffer


def _event(line: bytes, what: str) -> tuple[str, Object]:
    """One watch event; an ERROR event (the server's Status) becomes our error."""
    try:
        event = json.loads(line)
        kind, obj = str(event["type"]), event["object"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TemporaryError(f"{what}: unreadable watch event", delay=5) from exc
    if not isinstance(obj, dict):
        raise TemporaryError(f"{what}: unreadable watch event", delay=5)
    if kind == "ERROR":
        code = obj.get("code")
        message = str(obj.get("message") or "watch error")
        if code == 410:
            # Expected on every long-lived watch: list again at once.
            raise ExpiredError(f"{what}: HTTP 410: {message}", delay=0)
        error = _translate(code if isinstance(code, int) else 500, message, None, what)
        if isinstance(error, _NotFoundError):
            raise TemporaryError(str(error), delay=5)
        raise error
    return kind, obj


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
    if status == 410:
        return ExpiredError(text, delay=_retry_after(retry_after, default=5))
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
