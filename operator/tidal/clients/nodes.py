"""Kubernetes access for the node agent: read Nodes and the pods bound to them, write the
telemetry annotation on a Node.

Owns: the agent's few API calls (`list_gpu_nodes`, `list_pods_on_node`, `list_bound_pods`,
`annotate_node`). Besides `clients/kube.py` (the controllers' module, whose connection this one
shares through `kube.load_config`), this is the only module that imports `kubernetes`. Must not:
decide anything (what to write and when is the agent's), or let client exceptions escape: every
failure leaves as a `tidal.errors` exception.

Objects travel as wire-form JSON dicts, as in `kube.py`. Pod lists use field selectors
(`spec.nodeName=<node>`), so a DaemonSet agent on each of N nodes lists only its own pods, and
node patches are JSON merge patches of one annotation, the only change the agent's
ValidatingAdmissionPolicy (manifests/agent) admits. Every function blocks: call it through
`asyncio.to_thread`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, Final

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tidal.clients import kube
from tidal.errors import PermanentError, TemporaryError, TidalError

__all__ = [
    "GPU_NODE_LABEL",
    "annotate_node",
    "connect",
    "list_bound_pods",
    "list_gpu_nodes",
    "list_pods_on_node",
]

Object = dict[str, Any]

# Set by NVIDIA GPU feature discovery on every GPU node (and by the simulated fleet).
GPU_NODE_LABEL: Final = "nvidia.com/gpu.present"
_REQUEST_TIMEOUT: Final = (5.0, 30.0)

_lock = threading.Lock()
_api_client: k8s.ApiClient | None = None


def connect() -> None:
    """Load the configuration (`$KUBECONFIG`, else in-cluster, else ~/.kube/config)."""
    global _api_client
    kube.load_config()
    with _lock:
        _api_client = k8s.ApiClient()


def list_gpu_nodes() -> list[Object]:
    """Every Node labelled `nvidia.com/gpu.present=true`."""
    return _items("/api/v1/nodes", [("labelSelector", f"{GPU_NODE_LABEL}=true")])


def list_pods_on_node(node: str) -> list[Object]:
    """Pods bound to `node`, in every namespace (finished ones included; the caller filters)."""
    return _items("/api/v1/pods", [("fieldSelector", f"spec.nodeName={node}")])


def list_bound_pods() -> list[Object]:
    """Pods bound to any node (the simulated all-nodes agent groups them by `spec.nodeName`)."""
    return _items("/api/v1/pods", [("fieldSelector", "spec.nodeName!=")])


def annotate_node(node: str, annotations: Mapping[str, str | None]) -> None:
    """Merge-patch these annotations onto `node` (None removes one)."""
    _request(
        "PATCH",
        f"/api/v1/nodes/{node}",
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


def _items(path: str, query: list[tuple[str, str]]) -> list[Object]:
    items: list[Object] = _request("GET", path, query).get("items") or []
    return items


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
    except ApiException as exc:
        raise _translate(exc.status or 0, str(exc.reason), what) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise TemporaryError(f"{what}: API server unreachable: {exc}", delay=5) from exc
    status = int(response.status)
    if not 200 <= status <= 299:
        raise _translate(status, _message(raw), what)
    try:
        data = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise TemporaryError(f"{what}: unreadable response", delay=5) from exc
    if not isinstance(data, dict):
        raise TemporaryError(f"{what}: unexpected response type {type(data).__name__}", delay=5)
    return data


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
    if status in (400, 422):
        return PermanentError(text)
    # 403 is usually RBAC or the admission policy (fixable by the installer, not by retrying
    # faster); 404 a node that is gone; both are worth another try later.
    return TemporaryError(text, delay=30 if status in (401, 403) else 5)
