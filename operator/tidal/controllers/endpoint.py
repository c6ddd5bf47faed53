"""Kopf handlers for InferenceEndpoint: trigger -> observe -> `reconcile.endpoint.decide` -> apply.

What triggers a reconcile: create, update and resume; a periodic refresh (`tidal.runtime.refresh`:
telemetry, utilization history, service levels, prices, spot hysteresis, drift); changes of the
endpoint's own Deployments (so Ready follows pod readiness within seconds); a wake annotation
from the gateway (within a second: the gateway holds a request); and changes elsewhere that can
move its replicas: a Node it runs on deleted, NotReady, cordoned, tainted or relabelled, its
Namespace's residency policy, its paired VectorCollection's regions; a model cache's claim or
loader Job in its namespace changing (`model.cache`: replicas wait for the fill). Those arrive
through Kopf indexes (`tidal.runtime.indexes`), so a spot node's loss replans exactly the
endpoints with replicas on it, without a per-node API call. Triggers of one endpoint are
serialized and coalesced (`tidal.runtime.triggers`).

One reconcile (`_sync`, blocking, in the triggers' pool): read the endpoint afresh (each trigger
must see what the previous one wrote), freeze the indexes, ask the API server about the nodes
the indexes say are lost, take the latest measurement, prices and gateway load, call the pure
`decide`, then carry out its Outcome: apply the children (a rejection writes `ApplyRejected`
and stops; a best-effort child, the PodMonitor, that fails is logged and stops nothing), delete
the pods it names, patch annotations and status, post the Events, mirror status into /metrics,
keep the memory.

Service levels: each refresh first measures the endpoint through Prometheus (in a thread, not
more often than `TIDAL_SLO_INTERVAL_SECONDS`) and re-reads prices, provisionable capacity
(`tidal.runtime.capacity`) and the optional kinds served (`tidal.runtime.discovery`: whether
endpoints get PodMonitors) when due; every reconcile then judges the latest measurement and
prices the replicas running now.

Must not: decide anything (that is `tidal.reconcile`), touch the Kubernetes API other than
through `tidal.clients.kube`, block the event loop, or return values (Kopf would write them into
status).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from tidal import metrics
from tidal.api import signals
from tidal.api.collection import PLURAL as COLLECTIONS_PLURAL
from tidal.api.common import API_VERSION, GROUP, VERSION
from tidal.api.endpoint import KIND, PLURAL
from tidal.api.labels import (
    ALLOWED_REGIONS,
    LABEL_ENDPOINT,
    LABEL_MANAGED_BY,
    LABEL_MODEL_CACHE,
    MANAGER,
    MODEL_CACHE_BYTES,
)
from tidal.api.wire import format_time, parse_time
from tidal.clients import kube
from tidal.errors import PermanentError, TidalError
from tidal.reconcile import endpoint as reconcile
from tidal.reconcile import observation as obs
from tidal.reconcile.world import Inputs
from tidal.render import cache as cache_lib
from tidal.render.monitoring import POD_MONITOR_KIND
from tidal.render.status import APPLY_REJECTED
from tidal.runtime import indexes as idx
from tidal.runtime import refresh
from tidal.runtime import settings as tidal_settings
from tidal.runtime.errors import kopf_errors
from tidal.runtime.memory import EndpointMemory
from tidal.runtime.objects import controlling_owner, log_outcome, post_events
from tidal.runtime.seen import LastSeen, WakeWatch
from tidal.runtime.services import services
from tidal.runtime.services import start as start_services
from tidal.runtime.triggers import (
    REFRESH,
    SPEC_CHANGED,
    TICK,
    WAKE,
    WORLD_CHANGED,
    Mode,
    Triggers,
)

__all__ = [
    "child_deployment_changed",
    "collection_changed",
    "endpoint_changed",
    "model_cache_claim_changed",
    "model_cache_job_changed",
    "namespace_changed",
    "node_changed",
    "probe_time",
    "reconcile_endpoint",
    "startup",
    "stop_refreshing",
]

# The watch handlers whose routine successes are not logged (one per watch event).
_WATCH_HANDLERS: Final = (
    "node_changed",
    "namespace_changed",
    "collection_changed",
    "child_deployment_changed",
    "endpoint_changed",
    "model_cache_claim_changed",
    "model_cache_job_changed",
)
_triggers: Final = Triggers(tidal_settings.RECONCILE_WORKERS, "tidal-reconcile")
_memory: Final = EndpointMemory()
# When each endpoint's children were last all applied (time.monotonic()). Event loop only.
_forced_at: dict[tuple[str, str], float] = {}
# Refreshes run outside any handler, so they log (and name the endpoint) through their own.
_refresh_logger: Final = logging.getLogger("tidal.controllers.endpoint")


@kopf.on.startup()
@kopf_errors
def startup(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    """Configure Kopf and connect what every reconcile uses (`tidal.runtime.services`)."""
    start_services(settings, logger, _WATCH_HANDLERS)


@kopf.on.probe(id="now")
def probe_time(**_: Any) -> str:
    """Liveness: the event loop still runs handlers. Deliberately not an API-server check, so an
    API-server outage does not restart every operator replica."""
    return format_time(datetime.now(UTC))


@kopf.on.cleanup()
async def stop_refreshing(**_: Any) -> None:
    """Stop the refresh tickers with the operator."""
    await refresh.stop()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf_errors
async def reconcile_endpoint(
    namespace: str | None, name: str | None, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Bring an endpoint's children in line with its spec and write its status."""
    if namespace and name:
        await _trigger(namespace, name, SPEC_CHANGED, kwargs, logger)


async def _refresh(target: refresh.Target, indexes: Mapping[str, Any]) -> None:
    """One endpoint's periodic refresh: re-read prices and gateway load and measure service
    levels when due, then reconcile (re-applying every child when the drift interval is due)."""
    namespace, name, uid = target.namespace, target.name, target.uid
    endpoints: Mapping[str, Iterable[idx.EndpointEntry]] = indexes.get(idx.ENDPOINTS) or {}
    entry = next((e for e in endpoints.get(namespace, ()) if e.name == name), None)
    if entry is None:
        return  # deleted since the ticker looked
    await asyncio.to_thread(services.refresh_shared)
    if uid:
        await _memory.measure_if_due(
            services.reader, namespace, name, uid, entry.engine, _refresh_logger
        )
    forced = _forced_at.get((namespace, name))
    due = forced is None or time.monotonic() - forced >= tidal_settings.DRIFT_INTERVAL_SECONDS
    await _trigger(namespace, name, TICK if due else REFRESH, indexes, _refresh_logger)


refresh.register(
    KIND,
    tidal_settings.RECONCILE_INTERVAL_SECONDS,
    lambda indexes: refresh.targets_of(indexes.get(idx.ENDPOINTS) or {}),
    _refresh,
)


_wakes: Final = WakeWatch()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def endpoint_changed(
    body: kopf.Body,
    event: kopf.RawEvent,
    namespace: str | None,
    name: str,
    uid: str | None,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Act on a wake at once, and forget a deleted endpoint.

    A new `tidal.dev/wake-requested-at` from the gateway reconciles the endpoint now rather
    than at the next tick: the gateway is holding a request. (Kopf's update handler does not see
    it: the signals are left out of its diff base.)

    Deletion is handled here rather than with `@kopf.on.delete`: nothing here may delay it, so
    no finalizer is wanted, and an optional delete handler is not called for an object that is
    gone before Kopf sees it marked. The endpoint's /metrics series and cached state go.
    """
    refresh.start(idx.of_handler(kwargs))
    if namespace is None or not uid:
        return
    wake = _wakes.new_wake(uid, event.get("type"), body.metadata.annotations)
    if event.get("type") == "DELETED":
        _forced_at.pop((namespace, name), None)
        metrics.forget_endpoint(namespace, name)
        services.load.forget(signals.endpoint_key(namespace, name))
        services.monitors.forget(namespace, name)
        _memory.forget(uid)
        return
    if wake is None:
        return
    status = body.get("status") or {}
    if signals.wake_pending(parse_time(wake), parse_time(status.get("scaledToZeroTime"))):
        logger.info("Wake requested at %s; reconciling now", wake)
        await _trigger(namespace, name, WAKE, kwargs, logger)


@kopf.on.event(
    "apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGER, LABEL_ENDPOINT: kopf.PRESENT}
)
@kopf_errors
async def child_deployment_changed(body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
    """Refresh the owning endpoint when one of its Deployments changes (readiness, a deletion,
    a hand edit); a child that differs from its rendering is re-applied."""
    namespace = body.metadata.namespace
    # By ownerReference: labels can be copied, the controller reference cannot.
    owner = controlling_owner(body.metadata, KIND)
    if namespace is not None and owner is not None:
        await _trigger(namespace, owner, WORLD_CHANGED, kwargs, logger)


# A model cache's claim and loader Job, which several endpoints may share and none owns.
_MODEL_CACHE: Final[Mapping[str, Any]] = {
    LABEL_MANAGED_BY: MANAGER,
    LABEL_MODEL_CACHE: kopf.PRESENT,
}


@kopf.on.event("", "v1", "persistentvolumeclaims", labels=_MODEL_CACHE)
@kopf_errors
async def model_cache_claim_changed(
    namespace: str | None, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Reconcile the namespace's endpoints when a model cache's claim appears, binds or goes:
    the endpoints using it create its loader Job (which needs the claim's uid) or recreate it."""
    await _caches_changed(namespace, kwargs, logger)


@kopf.on.event("batch", "v1", "jobs", labels=_MODEL_CACHE)
@kopf_errors
async def model_cache_job_changed(
    namespace: str | None, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Reconcile the namespace's endpoints when a model cache's loader Job progresses: the
    endpoints waiting on it start their replicas once it succeeds (ModelCached)."""
    await _caches_changed(namespace, kwargs, logger)


async def _caches_changed(
    namespace: str | None, indexes: Mapping[str, Any], logger: kopf.Logger
) -> None:
    # Every endpoint of the namespace, not only those using this cache: caches change rarely
    # (created, bound, filled), a reconcile that finds nothing new applies nothing, and this
    # needs no index of which endpoint uses which cache.
    if namespace is None:
        return
    targets = idx.endpoints_in_namespace(indexes.get(idx.ENDPOINTS) or {}, namespace)
    if targets:
        await _trigger_all(targets, indexes, logger)


# What the watch handlers saw last (event loop only): a node's fingerprint, a namespace's
# policy, a collection's regions (a collection appearing or going matters too: the endpoint's
# regions are intersected with its collection's only while it exists).
_nodes: Final[LastSeen[str]] = LastSeen()
_policies: Final[LastSeen[str]] = LastSeen()
_collections: Final[LastSeen[tuple[str, str]]] = LastSeen(appearing_counts=True)


@kopf.on.event("", "v1", "nodes")
async def node_changed(
    body: kopf.Body, event: kopf.RawEvent, name: str, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Replan the endpoints with replicas on a node that was deleted or changed in a way that
    matters (readiness, taints, cordon, labels, GPUs). Telemetry-only changes are left to the
    periodic refresh; a new node runs nothing yet."""
    refresh.start(idx.of_handler(kwargs))
    kind = event.get("type")
    if not _nodes.changed(name, obs.node_fingerprint(body), kind):
        return
    targets = idx.endpoints_on_node(kwargs.get(idx.GPU_PODS) or {}, name)
    if targets:
        logger.info(
            "Replanning endpoints after a node change node=%s deleted=%s endpoints=%s",
            name,
            kind == "DELETED",
            ",".join(f"{ns}/{ep}" for ns, ep in sorted(targets)),
        )
        await _trigger_all(targets, kwargs, logger)


@kopf.on.event("", "v1", "namespaces")
async def namespace_changed(
    body: kopf.Body, event: kopf.RawEvent, name: str, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Replan a namespace's endpoints when its `tidal.dev/allowed-regions` changes, so a
    tightened policy moves running replicas at once."""
    refresh.start(idx.of_handler(kwargs))
    value = body.metadata.annotations.get(ALLOWED_REGIONS)
    kind = event.get("type")
    if not _policies.changed(name, value, kind) or kind == "DELETED":
        return  # a deleted namespace takes its endpoints with it
    targets = idx.endpoints_in_namespace(kwargs.get(idx.ENDPOINTS) or {}, name)
    if targets:
        logger.info(
            "Replanning endpoints after a residency policy change namespace=%s policy=%r",
            name,
            value,
        )
        await _trigger_all(targets, kwargs, logger)


@kopf.on.event(GROUP, VERSION, COLLECTIONS_PLURAL)
async def collection_changed(
    body: kopf.Body,
    event: kopf.RawEvent,
    namespace: str | None,
    name: str,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Replan the endpoints paired with a VectorCollection whose regions changed (or which
    appeared or went: the intersection applies only while it exists)."""
    if namespace is None:
        return
    regions = idx.collection_regions(body)
    if not _collections.changed((namespace, name), regions, event.get("type")):
        return
    targets = idx.endpoints_in_namespace(
        kwargs.get(idx.ENDPOINTS) or {}, namespace, collection=name
    )
    if targets:
        await _trigger_all(targets, kwargs, logger)


# --- triggering and the reconcile -------------------------------------------------------------


async def _trigger(
    namespace: str, name: str, mode: Mode, indexes: Mapping[str, Any], logger: kopf.Logger
) -> None:
    """Reconcile one endpoint, serialized with and coalesced into its other triggers."""

    def prepare(mode: Mode) -> Callable[[], None]:
        # On the event loop, when the endpoint's turn has come: the indexes as they are now.
        inputs = idx.capture(indexes, namespace, datetime.now(UTC), name)
        if mode.force_apply:
            _forced_at[(namespace, name)] = time.monotonic()
        return lambda: _sync(namespace, name, mode, inputs, logger)

    await _triggers.trigger((namespace, name), mode, prepare)


async def _trigger_all(
    targets: Iterable[tuple[str, str]], indexes: Mapping[str, Any], logger: kopf.Logger
) -> None:
    """Replan several endpoints concurrently; one failing does not stop the others (each is
    retried at its next refresh)."""
    ordered = sorted(targets)
    results = await asyncio.gather(
        *(_trigger(ns, ep, WORLD_CHANGED, indexes, logger) for ns, ep in ordered),
        return_exceptions=True,
    )
    for (ns, ep), result in zip(ordered, results, strict=True):
        if isinstance(result, BaseException):
            logger.warning("Replanning failed endpoint=%s/%s error=%s", ns, ep, result)


def _record_cache_bytes(
    namespace: str, cache: str, claim: dict[str, Any], job: dict[str, Any] | None
) -> dict[str, Any]:
    """Once a cache's loader Job has succeeded, record on its claim the bytes the loader says it
    copied, so later reconciles read them from the claim instead of listing the loader's pods
    (the claim as patched, or as given when there is nothing to record yet)."""
    if not cache_lib.completed(job):
        return claim
    copied = cache_lib.loader_bytes(kube.list_pods(namespace, {LABEL_MODEL_CACHE: cache}))
    if copied is None:
        return claim
    return kube.patch_annotations(
        "v1", "PersistentVolumeClaim", namespace, cache, {MODEL_CACHE_BYTES: str(copied)}
    )


def _sync(namespace: str, name: str, mode: Mode, inputs: Inputs, logger: kopf.Logger) -> None:
    """Observe, decide, and carry out the Outcome for one endpoint (blocking)."""
    raw = kube.get_object(API_VERSION, KIND, namespace, name)
    if raw is None:
        return  # the endpoint is gone; the garbage collector takes its children
    uid = str((raw.get("metadata") or {}).get("uid", ""))
    # A model cache is read here rather than indexed: few endpoints have one, and a shared
    # cache is nobody's child (two GETs, only for those endpoints).
    cache = reconcile.cache_name(raw)
    claim = kube.get_object("v1", "PersistentVolumeClaim", namespace, cache) if cache else None
    cache_job = kube.get_object("batch/v1", "Job", namespace, cache) if cache else None
    if cache and claim is not None and cache_lib.recorded_bytes(claim) is None:
        claim = _record_cache_bytes(namespace, cache, claim, cache_job)
    now = datetime.now(UTC)
    # The endpoint's PodMonitor is no Kopf index's (`tidal.runtime.podmonitors` says why).
    inputs = dataclasses.replace(inputs, pod_monitors=services.monitors.of(namespace, name))
    suspects = reconcile.suspected_lost_nodes(inputs)
    reclaim_ledger = services.reclaims.ledger(now)  # the saved history, read once
    reclaim_ledger.note(reconcile.reclaimed_spot_nodes(inputs), now)
    reclaims, watched_hours = reclaim_ledger.observed(now)
    services.reclaims.save_if_due(now)
    waiting = reconcile.unscheduled_spot_pod(inputs)
    world = reconcile.World(
        inputs=inputs,
        settings=reconcile.Settings(
            spot_pending_seconds=tidal_settings.SPOT_PENDING_SECONDS,
            spot_return_after_seconds=tidal_settings.SPOT_RETURN_AFTER_SECONDS,
            spot_provision_timeout_seconds=tidal_settings.SPOT_PROVISION_TIMEOUT_SECONDS,
            reclaim_prior=tidal_settings.RECLAIM_PRIOR,
            conventions=services.capacity.conventions,
            pod_monitor_labels=services.pod_monitor_labels,
        ),
        catalog=(prices := services.pricing.current()).catalog,
        prices_source=prices.source,
        load=services.load.view(signals.endpoint_key(namespace, name)),
        measured=_memory.measured(uid),
        # Ask the API server before deleting a replica for its node: the index may lag a node
        # that was just added or became Ready again. Only suspected nodes cost a request.
        lost_nodes=reconcile.confirmed_lost({n: kube.get_node(n) for n in suspects}, now),
        nodepools=(capacity := services.capacity.current()).nodepools,
        declared_pools=capacity.declared,
        # What a node autoscaler said about the spot replica waiting longest, if one waits.
        spot_pod_events=tuple(kube.list_pod_events(namespace, waiting.name, waiting.uid))
        if waiting
        else (),
        cache_claim=claim,
        cache_job=cache_job,
        reclaims=reclaims,
        watched_hours=watched_hours,
        pod_monitors=services.pod_monitors(),
        force_apply=mode.force_apply,
        sample_history=mode.sample_history,
        require_observed=mode.require_observed,
    )
    with metrics.observe_reconcile(KIND):
        outcome = reconcile.decide(raw, world, _memory.memory(uid), now)
        try:
            failed = _apply(outcome.children, logger)
        except PermanentError as exc:
            outcome = reconcile.rejected(raw, APPLY_REJECTED, str(exc), now, outcome.memory)
        else:
            outcome = reconcile.unapplied(outcome, failed) if failed else outcome
        for pod in outcome.delete_pods:
            kube.delete_pod(namespace, pod.name, uid=pod.uid)
        for pod, values in outcome.pod_annotations:
            kube.patch_pod_annotations(namespace, pod.name, values, uid=pod.uid)
        if outcome.annotations:
            kube.patch_annotations(API_VERSION, KIND, namespace, name, dict(outcome.annotations))
        if outcome.status is not None:
            kube.patch_status(API_VERSION, KIND, namespace, name, dict(outcome.status))
    _memory.keep(uid, outcome.memory)
    if outcome.levels is not None:
        metrics.record_endpoint_cost(namespace, name, outcome.levels.cost)
        if outcome.levels.slo is not None:
            metrics.record_endpoint_slo(namespace, name, outcome.levels.slo, outcome.levels.slo_met)
    log_outcome(outcome, logger)
    post_events(raw, logger, outcome.events, "endpoint")


def _apply(children: Iterable[Mapping[str, Any]], logger: kopf.Logger) -> list[dict[str, Any]]:
    """Apply `children` in order; those `reconcile.best_effort` names that fail are logged and
    returned, any other failure raises (a PermanentError: the API server refused the spec)."""
    failed: list[dict[str, Any]] = []
    for child in children:
        try:
            result = kube.apply(child)
        except TidalError as exc:
            if not reconcile.best_effort(child):
                raise
            metadata = child.get("metadata") or {}
            logger.warning(
                "Cannot apply %s %s/%s, the reconcile goes on without it: %s",
                child.get("kind"),
                metadata.get("namespace"),
                metadata.get("name"),
                exc,
            )
            failed.append(dict(child))
        else:
            if child.get("kind") == POD_MONITOR_KIND:
                services.monitors.applied(result)
    return failed
