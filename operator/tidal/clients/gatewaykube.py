"""Kubernetes access for the gateway: list and watch InferenceEndpoints and their Pods, and
write the gateway's two annotations on an InferenceEndpoint.

Owns: what the gateway reads and writes (`Source` for list+watch of one kind, the two sources
`endpoints` and `pods`, and `annotate_endpoint`), and how long each watch runs. The requests
themselves, the watch stream and the translation of failures into `tidal.errors` are
`kube.py`'s (`request`, `watch`, `patch_annotations`), shared with the controllers and the
agent. Must not: decide anything (what to route, when to wake: `tidal.gateway`), or import
`kubernetes` itself. Failures leave as `tidal.errors` exceptions (`WatchExpiredError` for a
resource version the server has compacted).

Objects travel as wire-form JSON dicts. Annotation writes are JSON merge patches of
`metadata.annotations` only, the one change the gateway's ValidatingAdmissionPolicy admits
(manifests/gateway). Every function blocks: the gateway runs each watch in its own thread and
writes through `asyncio.to_thread`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any, Final

from tidal.clients import kube

__all__ = ["Source", "WatchExpiredError", "annotate_endpoint", "connect", "endpoints", "pods"]

Object = dict[str, Any]

_GROUP_VERSION: Final = "tidal.dev/v1alpha1"
_KIND: Final = "InferenceEndpoint"
_PLURAL: Final = "inferenceendpoints"
# The server ends each watch after this long, so a stopped informer's thread ends soon after.
WATCH_SECONDS: Final = 30

# The gateway's informers list again on this one (`tidal.gateway.watching`).
WatchExpiredError = kube.ExpiredError


def connect() -> None:
    """Load the configuration (`$KUBECONFIG`, else in-cluster, else ~/.kube/config)."""
    kube.load_config()


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
        result = kube.request("GET", self.path, self._query())
        items: list[Object] = result.get("items") or []
        version = str((result.get("metadata") or {}).get("resourceVersion") or "")
        return items, version

    def watch(self, resource_version: str, stop: threading.Event) -> Iterator[tuple[str, Object]]:
        """Changes after `resource_version` as (type, object) until the server ends the watch
        (about `WATCH_SECONDS`) or `stop` is set. BOOKMARK events carry only a version."""
        return kube.watch(
            self.path, self._query(), resource_version, stop, timeout_seconds=WATCH_SECONDS
        )

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
    kube.patch_annotations(_GROUP_VERSION, _KIND, namespace, name, annotations)
