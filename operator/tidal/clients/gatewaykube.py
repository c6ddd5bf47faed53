"""Kubernetes access for the gateway: list and watch InferenceEndpoints and their Pods, and
write the gateway's two annotations on an InferenceEndpoint.

Owns: the gateway's API calls (`connect`, `Source` for list+watch of one kind, and
`annotate_endpoint`). Besides `kube.py` and `nodes.py` this is the only module that imports
`kubernetes`, and the gateway's only way to the API server. Must not: decide anything (what
to route, when to wake: `tidal.gateway`), or let client exceptions escape: failures leave as
`tidal.errors` exceptions (`WatchExpiredError` for a resource version the server has compacted).

Objects travel as wire-form JSON dicts. Annotation writes are JSON merge patches of
`metadata.annotations` only, the one change the gateway's ValidatingAdmissionPolicy admits
(manifests/gateway). Every function blocks: the gateway runs each watch in its own thread and
writes through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Final

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tidal.clients import kube
from tidal.errors import PermanentError, TemporaryError, TidalError

__all__ = ["Source", "WatchExpiredError", "annotate_endpoint", "connect", "endpoints", "pods"]

Object = dict[str, Any]

_GROUP_VERSION: Final = "tidal.dev/v1alpha1"
_PLURAL: Final = "inferenceendpoints"
_REQUEST_TIMEOUT: Final = (5.0, 30.0)
# The server ends each watch after this long; the read timeout is longer so that a quiet watch
# ends cleanly rather than by a client-side timeout.
WATCH_SECONDS: Final = 30
_WATCH_TIMEOUT: Final = (5.0, WATCH_SECONDS + 15.0)
# A watch line is one object; a Pod or an endpoint is far below this.
_MAX_LINE: Final = 8 << 20

_lock = threading.Lock()
_api_client: k8s.ApiClient | None = None


class WatchExpiredError(TemporaryError):
    """The resource version is too old (410 Gone): list again and watch from there."""


def connect() -> None:
    """Load the configuration (`$KUBECONFIG`, else in-cluster, else ~/.kube/config)."""
    global _api_client
    kube.load_config()
    with _lock:
        _api_client = k8s.ApiClient()


class Source:
    """List and watch one kind, in one namespace or all."""

    def __init__(self, path: str, label_selector: str | None = None) -> None:
        self.path = path
        self.label_selector = label_selector

    def __repr__(self) -> str:
        selector = f"?labelSelector={self.label_selector}" if self.label_selector else ""
        return f"Source({self.path}{selector})"

    def list_all(self) -> tuple[list[Object], str]:
        """Every object now, and the resource version to watch from."""
        result = _request("GET", self.path, self._query())
        items: list[Object] = result.get("items") or []
        version = str((result.get("metadata") or {}).get("resourceVersion") or "")
        return items, version

    def watch(self, resource_version: str, stop: threading.Event) -> Iterator[tuple[str, Object]]:
        """Changes after `resource_version` as (type, object) until the server ends the watch
        (about `WATCH_SECONDS`) or `stop` is set. BOOKMARK events carry only a version."""
        query = [
            *self._query(),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        what = f"WATCH {self.path}"
        response = _open(self.path, query, what)
        try:
            for line in _lines(response, what):
                if stop.is_set():
                    return
                yield _event(line, what)
        finally:
            # Closed, not returned to the pool: a watch left mid-stream has unread bytes.
            response.close()

    def _query(self) -> list[tuple[str, str]]:
        return [("labelSelector", self.label_selector)] if self.label_selector else []


def endpoints(namespace: str | None = None) -> Source:
    """InferenceEndpoints in `namespace`, or in all namespaces."""
    scope = f"/namespaces/{namespace}" if namespace else ""
    return Source(f"/apis/{_GROUP_VERSION}{scope}/{_PLURAL}")


def pods(label_selector: str, namespace: str | None = None) -> Source:
    """Pods matching `label_selector` in `namespace`, or in all namespaces."""
    scope = f"/namespaces/{namespace}" if namespace else ""
    return Source(f"/api/v1{scope}/pods", label_selector)


def annotate_endpoint(namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
    """Merge-patch these annotations onto one InferenceEndpoint (None removes one)."""
    _request(
        "PATCH",
        f"/apis/{_GROUP_VERSION}/namespaces/{namespace}/{_PLURAL}/{name}",
        body={"metadata": {"annotations": dict(annotations)}},
        content_type="application/merge-patch+json",
    )


# --- internals -------------------------------------------------------------------------------


def _client() -> k8s.ApiClient:
    global _api_client
    with _lock:
        if _api_client is None:
            _api_client = k8s.ApiClient()
        return _api_client


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
    """The raw urllib3 response of one request; HTTP errors are translated, body unread."""
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
    except ApiException as exc:
        raise _translate(exc.status or 0, str(exc.reason), what) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise TemporaryError(f"{what}: API server unreachable: {exc}", delay=5) from exc
    status = int(response.status)
    if not 200 <= status <= 299:
        try:
            raw: bytes | None = response.read()  # type: ignore[no-untyped-call]
        except urllib3.exceptions.HTTPError:
            raw = None
        raise _translate(status, _message(raw), what)
    return response


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
    try:
        raw: bytes | None = response.read()
    except urllib3.exceptions.HTTPError as exc:
        raise TemporaryError(f"{what}: connection lost: {exc}", delay=5) from exc
    try:
        data = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise TemporaryError(f"{what}: unreadable response", delay=5) from exc
    if not isinstance(data, dict):
        raise TemporaryError(f"{what}: unexpected response type {type(data).__name__}", delay=5)
    return data


def _open(path: str, query: list[tuple[str, str]], what: str) -> Any:
    # The REST layer wraps urllib3's response without reading it; the watch streams from it.
    return _call("GET", path, query, what, timeout=_WATCH_TIMEOUT).response


def _lines(response: Any, what: str) -> Iterator[bytes]:
    """Newline-delimited JSON from a streaming response, one complete line at a time."""
    buffer = b""
    try:
        for chunk in response.stream(amt=None, decode_content=True):
            buffer += chunk
            if len(buffer) > _MAX_LINE:
                raise TemporaryError(f"{what}: watch line over {_MAX_LINE} bytes", delay=5)
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
    try:
        event = json.loads(line)
        kind, obj = str(event["type"]), event["object"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TemporaryError(f"{what}: unreadable watch event", delay=5) from exc
    if not isinstance(obj, dict):
        raise TemporaryError(f"{what}: unreadable watch event", delay=5)
    if kind == "ERROR":
        code = obj.get("code")
        message = f"{what}: {obj.get('message') or 'watch error'}"
        if code == 410:
            raise WatchExpiredError(message, delay=0)
        raise _translate(int(code) if isinstance(code, int) else 500, message, what)
    return kind, obj


def _message(raw: bytes | None) -> str:
    text = (raw or b"").decode("utf-8", errors="replace")
    try:
        status = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])
    return text[:500]


def _translate(status: int, message: str, what: str) -> TidalError:
    text = f"{what}: HTTP {status}: {message}"
    if status == 410:
        return WatchExpiredError(text, delay=0)
    if status in (400, 422):
        return PermanentError(text)
    # 403 is RBAC or the admission policy (the installer's to fix, not a faster retry's); 404 an
    # endpoint deleted under us or CRDs not installed yet; both are worth another try later.
    return TemporaryError(text, delay=30 if status in (401, 403) else 5)
