"""Kopf handlers for InferenceEndpoint: parse -> observe -> decide -> apply -> status.

One level-based reconcile serves every trigger: create, update, resume, a timer (drift and status
refresh) and changes of the endpoint's own Deployments (so Ready follows pod readiness within
seconds rather than a timer tick). Each run applies the full set of children with server-side
apply, which makes it idempotent and safe to run concurrently with itself.

What these handlers must not do: decide anything (that is `tidal.placement` / `tidal.render`),
touch the Kubernetes API other than through `tidal.clients.kube`, or return values (Kopf would
write them into status). Status is written with an explicit patch of the status subresource,
conditions as a whole list, so every trigger writes it the same way.
Handlers are sync: the kubernetes client blocks, and Kopf runs sync handlers in its executor.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from tidal.api.common import API_VERSION, GROUP, VERSION
from tidal.api.inference import KIND, PLURAL, InferenceEndpoint
from tidal.clients import kube
from tidal.controllers import settings as tidal_settings
from tidal.controllers._errors import kopf_errors
from tidal.errors import PermanentError
from tidal.placement.split import desired_replicas, explain_split, split_replicas
from tidal.render.events import Event, apply_events, status_events
from tidal.render.inference import (
    LABEL_ENDPOINT,
    LABEL_MANAGED_BY,
    MANAGER,
    NODE_REGION,
    child_labels,
    render_deployment,
    render_service,
)
from tidal.render.status import (
    INVALID_SPEC,
    Observed,
    failed_status,
    format_time,
    parse_conditions,
    scheduled_nodes,
    summarize,
)

__all__ = ["child_deployment_changed", "probe_time", "reconcile_endpoint", "startup"]

Raw = dict[str, Any]

# The API server refused a rendered child (HTTP 400/422) although the spec parsed.
APPLY_REJECTED = "ApplyRejected"
# How many validation errors an InvalidSpec message lists before eliding the rest.
_MAX_VALIDATION_ERRORS = 5


@kopf.on.startup()
@kopf_errors
def startup(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    """Configure Kopf for Tidal and connect the kubernetes client."""
    tidal_settings.configure(settings)
    kube.load_config()
    logger.info(
        "Started Tidal operator reconcile_interval_seconds=%s standalone=%s",
        tidal_settings.RECONCILE_INTERVAL_SECONDS,
        settings.peering.standalone,
    )


@kopf.on.probe(id="now")
def probe_time(**_: Any) -> str:
    """Liveness: the event loop still runs handlers. Deliberately not an API-server check, so an
    API-server outage does not restart every operator replica."""
    return format_time(datetime.now(UTC))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf.on.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=tidal_settings.RECONCILE_INTERVAL_SECONDS,
    # create/resume already reconciled; the first tick is for drift.
    initial_delay=tidal_settings.RECONCILE_INTERVAL_SECONDS,
)
@kopf_errors
def reconcile_endpoint(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Bring an endpoint's children in line with its spec and write its status."""
    namespace, name = body.metadata.namespace, body.metadata.name
    if namespace is None or name is None:
        return
    _sync(namespace, name, logger, apply_children=True, only_when_observed=False)


@kopf.on.event(
    "apps",
    "v1",
    "deployments",
    labels={LABEL_MANAGED_BY: MANAGER, LABEL_ENDPOINT: kopf.PRESENT},
)
@kopf_errors
def child_deployment_changed(
    body: kopf.Body, event: kopf.RawEvent, logger: kopf.Logger, **_: Any
) -> None:
    """Refresh the owning endpoint's status when one of its Deployments changes.

    A deleted child is re-applied at once instead of waiting for the timer. The refresh is
    skipped while the endpoint's own reconcile is due (its generation is not yet observed), so
    this never writes a status computed from a spec that has not been applied.
    """
    namespace = body.metadata.namespace
    owner = _owning_endpoint(body)
    if namespace is None or owner is None:
        return
    deleted = event.get("type") == "DELETED"
    _sync(namespace, owner, logger, apply_children=deleted, only_when_observed=True)


def _sync(
    namespace: str,
    name: str,
    logger: kopf.Logger,
    *,
    apply_children: bool,
    only_when_observed: bool,
) -> None:
    """Reconcile one endpoint from its latest stored state and write its status.

    Runs are serialized per endpoint and read the object afresh under the lock: the create,
    update, timer and child-event triggers may fire together, and each must see the status
    the previous one wrote, or transitions (and their Events) would be reported twice.
    """
    with _endpoint_lock(namespace, name):
        raw = kube.get_object(API_VERSION, KIND, namespace, name)
        if raw is None:
            return  # the endpoint is gone; the garbage collector takes its children
        before = raw.get("status") or {}
        generation = (raw.get("metadata") or {}).get("generation")
        if only_when_observed and before.get("observedGeneration") != generation:
            return
        status = _reconcile(raw, logger, apply_children=apply_children)
        if status is not None and any(before.get(key) != value for key, value in status.items()):
            kube.patch_status(API_VERSION, KIND, namespace, name, status)


_locks_guard = threading.Lock()
_locks: dict[tuple[str, str], threading.Lock] = {}


@contextlib.contextmanager
def _endpoint_lock(namespace: str, name: str) -> Iterator[None]:
    # One small lock per endpoint ever seen; not worth evicting for the number of endpoints.
    with _locks_guard:
        lock = _locks.setdefault((namespace, name), threading.Lock())
    with lock:
        yield


def _reconcile(raw: Raw, logger: kopf.Logger, *, apply_children: bool) -> dict[str, Any] | None:
    """Parse, observe, decide, (apply,) and return the status patch; None when there is nothing
    to do (the endpoint is being deleted)."""
    metadata = raw.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return None
    generation = metadata.get("generation")
    before = raw.get("status") or {}
    conditions = parse_conditions(before)
    now = format_time(datetime.now(UTC))

    try:
        ie = _parse(raw)
        desired = desired_replicas(ie.spec)
        spot, reserved = split_replicas(ie.spec, desired)
        children = [
            render_deployment(ie, "spot", spot),
            render_deployment(ie, "reserved", reserved),
            render_service(ie),
        ]
    except PermanentError as exc:
        status = failed_status(
            reason=INVALID_SPEC,
            message=str(exc),
            generation=generation,
            conditions=conditions,
            now=now,
        )
        _post(raw, logger, status_events(before, status))
        return status

    namespace, name = metadata["namespace"], metadata["name"]
    labels = child_labels(name)
    deployments = kube.list_deployments(namespace, labels)
    if apply_children:
        existing = [*deployments, *kube.list_objects("v1", "Service", namespace, labels)]
        try:
            applied = [kube.apply(child) for child in children]
        except PermanentError as exc:
            status = failed_status(
                reason=APPLY_REJECTED,
                message=str(exc),
                generation=generation,
                conditions=conditions,
                now=now,
            )
            _post(raw, logger, status_events(before, status))
            return status
        _post(raw, logger, apply_events(existing, children))
        deployments = [obj for obj in applied if obj.get("kind") == "Deployment"]

    pods = kube.list_pods(namespace, labels)
    observed = Observed(
        deployments=deployments, pods=pods, node_regions=_node_regions(scheduled_nodes(pods))
    )
    status = summarize(
        ie,
        desired=desired,
        spot=spot,
        reserved=reserved,
        reason=explain_split(ie.spec, spot, reserved),
        observed=observed,
        generation=generation,
        conditions=conditions,
        now=now,
    )
    _post(raw, logger, status_events(before, status))
    replicas = status["replicas"]
    logger.debug(
        "Reconciled InferenceEndpoint desired=%s ready=%s spot=%s reserved=%s",
        replicas["desired"],
        replicas["ready"],
        replicas["spot"],
        replicas["reserved"],
    )
    return status


def _parse(raw: Raw) -> InferenceEndpoint:
    """The typed endpoint; an invalid spec is a PermanentError carrying a readable message.

    Status is left out on purpose: a status written by another version must never make the
    spec unreconcilable.
    """
    try:
        return InferenceEndpoint.model_validate(
            {"metadata": raw.get("metadata") or {}, "spec": raw.get("spec") or {}}
        )
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        parts = [
            f"{'.'.join(str(loc) for loc in error['loc'])}: {error['msg']}"
            for error in errors[:_MAX_VALIDATION_ERRORS]
        ]
        if len(errors) > _MAX_VALIDATION_ERRORS:
            parts.append(f"and {len(errors) - _MAX_VALIDATION_ERRORS} more")
        raise PermanentError("; ".join(parts)) from exc


def _node_regions(names: list[str]) -> dict[str, str]:
    regions: dict[str, str] = {}
    for name in names:
        node = kube.get_node(name)
        region = (((node or {}).get("metadata") or {}).get("labels") or {}).get(NODE_REGION)
        if region:
            regions[name] = str(region)
    return regions


def _owning_endpoint(body: kopf.Body) -> str | None:
    """The InferenceEndpoint controlling this child, by ownerReference (labels can be copied)."""
    for ref in body.metadata.get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("apiVersion") == API_VERSION
            and ref.get("kind") == KIND
        ):
            return str(ref.get("name"))
    return None


def _post(raw: Raw, logger: kopf.Logger, events: list[Event]) -> None:
    """Post each event on the endpoint and log it (Kopf does not log explicit events).

    The logger may belong to a child Deployment, so the line names the endpoint too.
    """
    metadata = raw.get("metadata") or {}
    endpoint = f"{metadata.get('namespace')}/{metadata.get('name')}"
    target = kopf.Body(raw)  # type: ignore[arg-type]  # a plain dict is a RawBody at runtime
    for event in events:
        if event.type == "Warning":
            logger.warning("%s: %s endpoint=%s", event.reason, event.message, endpoint)
            kopf.warn(target, reason=event.reason, message=event.message)
        else:
            logger.info("%s: %s endpoint=%s", event.reason, event.message, endpoint)
            kopf.info(target, reason=event.reason, message=event.message)
