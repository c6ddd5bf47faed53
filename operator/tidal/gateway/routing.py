"""Which endpoint serves a request, and which pods are its replicas: pure functions of objects.

Owns: reading InferenceEndpoint and Pod objects (wire-form dicts, as the watch delivers them)
into `Route` and `Replica`, and `resolve`, the routing rule. Must not: do IO, keep state, or
know aiohttp.

The routing rule: a request's `model` is matched against `spec.model.name` of every
InferenceEndpoint the gateway watches (all namespaces, unless started with `--namespace`).
One match routes there; none is a 404; several (the same model served in two namespaces, or
twice in one) is a 409 listing the candidates, and the client picks one with the header
`X-Tidal-Endpoint: <namespace>/<name>`, which narrows the candidates to that endpoint.

Replicas are the endpoint's *ready Pods*: same namespace, labels `tidal.dev/endpoint=<name>`
and `app.kubernetes.io/managed-by=tidal` (both set by the operator's Deployments), phase
Running, condition Ready=True, a pod IP, and not being deleted. The gateway routes by Pods
rather than by the Service's EndpointSlices because it must see "zero ready replicas" the
moment it happens and react (hold and wake) instead of sending traffic into a Service with no
endpoints; a Pod watch gives the same readiness the EndpointSlice controller uses, one hop
earlier, and keeps working where EndpointSlices cannot hold the address (the local KWOK fleet).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from tidal.api.labels import (
    LABEL_ENDPOINT,
    LABEL_MANAGED_BY,
    LAST_REQUEST_TIME,
    MANAGER,
    WAKE_REQUESTED_AT,
)
from tidal.api.signals import endpoint_key
from tidal.api.wire import is_deleting, is_ready, parse_time, pod_phase

__all__ = [
    "ENDPOINT_HEADER",
    "POD_SELECTOR",
    "Ambiguous",
    "NotFound",
    "Replica",
    "Route",
    "replica_from_pod",
    "resolve",
    "route_from_endpoint",
]

ENDPOINT_HEADER: Final = "X-Tidal-Endpoint"
# The labels the operator puts on every replica pod (tidal.render.endpoint).
POD_SELECTOR: Final = f"{LABEL_ENDPOINT},{LABEL_MANAGED_BY}={MANAGER}"
DEFAULT_PORT: Final = 8000

Object = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Route:
    """An InferenceEndpoint as the gateway routes to it."""

    namespace: str
    name: str
    model: str
    port: int
    wake_requested_at: datetime | None = None
    scaled_to_zero_time: datetime | None = None
    last_request_time: datetime | None = None

    @property
    def key(self) -> str:
        return endpoint_key(self.namespace, self.name)


@dataclasses.dataclass(frozen=True)
class Replica:
    """A pod of an endpoint; `ready` replicas receive traffic."""

    namespace: str
    pod: str
    endpoint: str
    ip: str | None
    ready: bool

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}"

    @property
    def endpoint_key(self) -> str:
        return endpoint_key(self.namespace, self.endpoint)


@dataclasses.dataclass(frozen=True)
class NotFound:
    model: str


@dataclasses.dataclass(frozen=True)
class Ambiguous:
    model: str
    candidates: tuple[str, ...]


def route_from_endpoint(obj: Object) -> Route | None:
    """The route of an InferenceEndpoint; None when it cannot be routed (no model name)."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    model = (spec.get("model") or {}).get("name")
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not (isinstance(model, str) and model and namespace and name):
        return None
    port = (spec.get("runtime") or {}).get("port", DEFAULT_PORT)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        port = DEFAULT_PORT
    annotations = metadata.get("annotations") or {}
    return Route(
        namespace=str(namespace),
        name=str(name),
        model=model,
        port=port,
        wake_requested_at=parse_time(annotations.get(WAKE_REQUESTED_AT)),
        scaled_to_zero_time=parse_time(status.get("scaledToZeroTime")),
        last_request_time=parse_time(annotations.get(LAST_REQUEST_TIME)),
    )


def replica_from_pod(obj: Object) -> Replica | None:
    """The pod as a replica of its endpoint; None when it is not an endpoint's pod."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    endpoint = labels.get(LABEL_ENDPOINT)
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not (endpoint and namespace and name) or labels.get(LABEL_MANAGED_BY) != MANAGER:
        return None
    status = obj.get("status") or {}
    ip = status.get("podIP") or None
    ready = (
        is_ready(obj) and pod_phase(obj) == "Running" and ip is not None and not is_deleting(obj)
    )
    return Replica(
        namespace=str(namespace),
        pod=str(name),
        endpoint=str(endpoint),
        ip=str(ip) if ip else None,
        ready=ready,
    )


def resolve(
    routes: Iterable[Route], model: str, selector: str | None = None
) -> Route | NotFound | Ambiguous:
    """The route serving `model`, narrowed by `selector` (`<namespace>/<name>`) when given."""
    candidates = sorted(
        (r for r in routes if r.model == model and selector in (None, r.key)),
        key=lambda r: r.key,
    )
    if not candidates:
        return NotFound(model)
    if len(candidates) > 1:
        return Ambiguous(model, tuple(r.key for r in candidates))
    return candidates[0]
