"""Kopf handlers for InferenceEndpoint: parse -> observe -> plan -> render -> apply -> status.

One level-based reconcile serves every trigger: create, update, resume, a periodic refresh
(`tidal.controllers.resync`: telemetry, utilization history, spot hysteresis, drift), changes
of the endpoint's own Deployments (so Ready follows pod readiness within seconds), and changes
elsewhere that can move its replicas: a Node it runs on deleted, NotReady, cordoned, tainted or
relabelled; its Namespace's residency policy; its paired VectorCollection's regions. Those
arrive through Kopf indexes and event handlers (`tidal.controllers.indexes`), so a spot node's
loss replans exactly the endpoints with replicas on it, within seconds, without a per-node API
call.

Service levels and dollars: each refresh first measures the endpoint through Prometheus
(`tidal.clients.prometheus`, blocking, so in a thread, outside the endpoint's serialized
reconcile, and no more often than `TIDAL_SLO_INTERVAL_SECONDS` per endpoint) and re-reads the
`tidal-pricing` ConfigMap when due (`tidal.controllers.pricing`). Every reconcile then judges the
latest measurement against `spec.slo` (`tidal.slo`) and prices the replicas running now
(`tidal.cost`), so `status.cost` follows placement changes at once while Prometheus is asked
only on ticks. A Prometheus that is not configured or not reachable makes `SLOMet` Unknown
(`NoData`), never a failed reconcile. The operator's own `/metrics` (`tidal.metrics`) mirrors
status.

How many replicas: `tidal.scaling.autoscale.decide`, from the load the gateway replicas report
(`tidal.controllers.load`, polled on refreshes), the gateway's annotations
(`tidal.dev/wake-requested-at`, `tidal.dev/last-request-time`) and the `ScaledToZero`
condition, which holds the scale-to-zero state machine so a restart resumes it from the object.
A wake annotation triggers a reconcile from its own watch event, within a second; placement
then splits the count between spot and reserved as before. With no gateway configured (neither
`TIDAL_GATEWAY_URLS` nor `TIDAL_GATEWAY_SELECTOR`) there is no load to scale on: the count is
`scaling.replicas.desired_replicas` (never 0).

Triggers for one endpoint are serialized and coalesced: while a reconcile runs, every further
trigger folds into the one waiting behind it, which reads the object and the indexes afresh when
it starts. A burst of node events costs one extra reconcile per endpoint, not one per event.

What these handlers must not do: decide anything (`tidal.placement`, `tidal.render`,
`tidal.residency`, `tidal.scaling`), touch the Kubernetes API other than through
`tidal.clients.kube`, block the event loop (the blocking reconcile runs in a thread), or return
values (Kopf would write them into status). Status is written with an explicit patch of the
status subresource, conditions as a whole list, so every trigger writes it the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import kopf
from pydantic import ValidationError

from tidal import metrics
from tidal.api import signals
from tidal.api.common import API_VERSION, GROUP, SLO_MET, VERSION, Event, get_condition
from tidal.api.inference import (
    KIND,
    PLURAL,
    CostStatus,
    Engine,
    InferenceEndpoint,
    InferenceEndpointStatus,
)
from tidal.api.labels import (
    ALLOWED_REGIONS,
    LABEL_ENDPOINT,
    LABEL_MANAGED_BY,
    MANAGER,
    RENDER_HASH,
    UTILIZATION_HISTORY,
    WAKE_REQUESTED_AT,
    CapacityType,
)
from tidal.api.vector import PLURAL as COLLECTIONS_PLURAL
from tidal.api.wire import format_time, format_time_ms, parse_time
from tidal.clients import kube
from tidal.clients.inflight import fetch_report
from tidal.clients.prometheus import PrometheusReader, PrometheusSettings, connect
from tidal.controllers import indexes as idx
from tidal.controllers import observation as obs
from tidal.controllers import resync
from tidal.controllers import settings as tidal_settings
from tidal.controllers._errors import kopf_errors
from tidal.controllers._objects import controlling_owner, post_events
from tidal.controllers._parsing import parse_object
from tidal.controllers.load import LoadTracker
from tidal.controllers.pricing import INVALID_PRICING, PricingCache
from tidal.cost import budget_condition, endpoint_cost
from tidal.errors import PermanentError, TidalError
from tidal.placement import fleet, history, planner
from tidal.placement.fleet import endpoint_pods
from tidal.placement.model import (
    Constraints,
    FleetSnapshot,
    History,
    Placement,
    SpotHealth,
)
from tidal.render.events import (
    apply_events,
    budget_events,
    lost_nodes_event,
    residency_event,
    spot_events,
    status_events,
)
from tidal.render.inference import (
    CAPACITY_TYPES,
    deployment_name,
    keep_preferences,
    render_deployment,
    render_service,
    stamp,
)
from tidal.render.status import (
    INVALID_SPEC,
    Decision,
    Observed,
    ResidencyReport,
    Scaling,
    ServiceLevels,
    failed_status,
    parse_conditions,
    summarize,
)
from tidal.residency import checks
from tidal.residency.policy import NamespacePolicy, parse
from tidal.scaling.autoscale import ScalingDecision, ScalingState, Tuning, decide
from tidal.scaling.replicas import desired_replicas
from tidal.slo import Measurement, evaluate, transition_event

__all__ = [
    "child_deployment_changed",
    "collection_changed",
    "endpoint_changed",
    "namespace_changed",
    "node_changed",
    "probe_time",
    "reconcile_endpoint",
    "startup",
    "stop_refreshing",
]

Raw = dict[str, Any]

# The API server refused a rendered child (HTTP 400/422) although the spec parsed.
APPLY_REJECTED: Final = "ApplyRejected"
# status.placement.reason's and status.cost.basis's schema bound.
_REASON_MAX: Final = 1024


@dataclasses.dataclass(frozen=True)
class Mode:
    """What one reconcile does beyond planning and writing status."""

    # Apply every child even if its stamp says nothing changed (repairs hand edits: drift).
    force_apply: bool
    # Add a GPU-utilization sample to the history (refreshes only, so samples are evenly
    # spaced rather than bunched around events).
    sample_history: bool
    # Skip when the spec's generation is not yet observed: the create/update handler is due
    # and must be the one to act on it.
    require_observed: bool

    def merge(self, other: Mode) -> Mode:
        return Mode(
            force_apply=self.force_apply or other.force_apply,
            sample_history=self.sample_history or other.sample_history,
            require_observed=self.require_observed and other.require_observed,
        )


SPEC_CHANGED: Final = Mode(force_apply=True, sample_history=False, require_observed=False)
# A refresh when the drift interval is due (every child re-applied) and when it is not.
TICK: Final = Mode(force_apply=True, sample_history=True, require_observed=False)
REFRESH: Final = Mode(force_apply=False, sample_history=True, require_observed=False)
WORLD_CHANGED: Final = Mode(force_apply=False, sample_history=False, require_observed=True)
# The gateway holds a request: act now, even on a spec whose update is still being handled.
WAKE: Final = Mode(force_apply=False, sample_history=False, require_observed=False)


# --- handlers --------------------------------------------------------------------------------


class _QuietWatchHandlers(logging.Filter):
    """Drop Kopf's "Handler 'x' succeeded." for the handlers that run on every watch event.

    Kopf logs each successful handler call at INFO; for `node_changed` that is one line per
    telemetry update per node (hundreds a minute on a large fleet), and it says nothing.
    Failures, and the lines the handlers log when they act, still pass.
    """

    _QUIET: Final = frozenset(
        f"Handler {name!r} succeeded."
        for name in (
            "node_changed",
            "namespace_changed",
            "collection_changed",
            "child_deployment_changed",
            "endpoint_changed",
        )
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self._QUIET


@dataclasses.dataclass
class _Services:
    """What startup connects once and every reconcile uses."""

    reader: PrometheusReader
    pricing: PricingCache
    load: LoadTracker
    metrics_server: metrics.MetricsServer | None = None


# Seconds one gateway replica has to answer GET /internal/inflight.
_GATEWAY_TIMEOUT_SECONDS: Final = 2.0


def _fetch_gateway(url: str) -> signals.GatewayReport:
    return fetch_report(url, timeout_seconds=_GATEWAY_TIMEOUT_SECONDS)


def _load_tracker(env: Mapping[str, str]) -> LoadTracker:
    """Gateways from `TIDAL_GATEWAY_URLS`, else found by `TIDAL_GATEWAY_SELECTOR`, else none."""
    targets: Sequence[str] | Callable[[], Sequence[str]] = tidal_settings.gateway_urls(env)
    selector = tidal_settings.gateway_selector(env)
    if not targets and selector is not None:
        namespace = tidal_settings.operator_namespace(env)
        port = tidal_settings.gateway_admin_port(env)

        def discover() -> Sequence[str]:
            return obs.gateway_admin_urls(kube.list_pods(namespace, selector), port)

        targets = discover
    return LoadTracker(
        _fetch_gateway,
        targets,
        tidal_settings.gateway_poll_seconds(env),
        Tuning.from_env(env),
    )


def _fetch_configmap(namespace: str, name: str) -> Mapping[str, Any] | None:
    return kube.get_object("v1", "ConfigMap", namespace, name)


def _describe_gateways(env: Mapping[str, str]) -> str:
    urls = tidal_settings.gateway_urls(env)
    if urls:
        return ",".join(urls)
    selector = tidal_settings.gateway_selector(env)
    if selector is not None:
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        return f"pods {labels} in {tidal_settings.operator_namespace(env)}"
    return "none (scale to zero off)"


def _report_pricing(configmap: Mapping[str, Any], message: str) -> None:
    """A Warning Event on the refused ConfigMap (the pricing cache has logged it already)."""
    target = kopf.Body(dict(configmap))  # type: ignore[arg-type]  # a dict is a RawBody
    # Outside a Kopf context (no event poster yet) only the log line tells.
    with contextlib.suppress(LookupError):
        kopf.warn(target, reason=INVALID_PRICING, message=message)


# Until startup has run (unit tests): no Prometheus, and prices read lazily from the ConfigMap.
_services = _Services(
    reader=connect(PrometheusSettings()),
    pricing=PricingCache(
        _fetch_configmap,
        tidal_settings.operator_namespace(),
        tidal_settings.pricing_refresh_seconds(),
        report=_report_pricing,
    ),
    load=LoadTracker(_fetch_gateway, (), 1.0, Tuning()),
)


@kopf.on.startup()
@kopf_errors
def startup(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    """Configure Kopf for Tidal, connect the kubernetes client and Prometheus, read the prices
    and serve the operator's /metrics.

    Bad Prometheus or metrics settings stop the operator here, naming the variable; an
    unreachable Prometheus or API server does not (measurements and prices are retried later).
    """
    tidal_settings.configure(settings)
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietWatchHandlers) for f in objects.filters):
        objects.addFilter(_QuietWatchHandlers())
    # Every reconcile thread, plus the handlers Kopf runs in its own threads, may call at once.
    kube.load_config(pool_size=max(kube.POOL_SIZE, tidal_settings.RECONCILE_WORKERS + 16))
    prometheus = PrometheusSettings.from_env()
    port = tidal_settings.metrics_port()
    _services.reader = connect(prometheus)
    _services.load = _load_tracker(os.environ)
    _services.pricing = PricingCache(
        _fetch_configmap,
        tidal_settings.operator_namespace(),
        tidal_settings.pricing_refresh_seconds(),
        report=_report_pricing,
    )
    prices = _services.pricing.refresh()
    if port is not None and _services.metrics_server is None:
        try:
            _services.metrics_server = metrics.start_metrics_server(port)
        except OSError as exc:
            # The operator's own metrics are worth a loud log line, not an outage.
            logger.error("Cannot serve /metrics port=%s error=%s", port, exc)
    logger.info(
        "Started Tidal operator reconcile_interval_seconds=%s spot_pending_seconds=%s "
        "spot_return_after_seconds=%s standalone=%s prometheus=%s slo_window_seconds=%s "
        "slo_interval_seconds=%s prices=%r metrics_port=%s gateways=%s",
        tidal_settings.RECONCILE_INTERVAL_SECONDS,
        tidal_settings.SPOT_PENDING_SECONDS,
        tidal_settings.SPOT_RETURN_AFTER_SECONDS,
        settings.peering.standalone,
        prometheus.url or "none",
        prometheus.window_seconds,
        tidal_settings.SLO_INTERVAL_SECONDS,
        prices.source,
        port if _services.metrics_server is not None else "off",
        _describe_gateways(os.environ),
    )


@kopf.on.probe(id="now")
def probe_time(**_: Any) -> str:
    """Liveness: the event loop still runs handlers. Deliberately not an API-server check, so an
    API-server outage does not restart every operator replica."""
    return format_time(datetime.now(UTC))


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


@kopf.on.cleanup()
async def stop_refreshing(**_: Any) -> None:
    """Stop the refresh tickers with the operator."""
    await resync.stop()


def _refresh_targets(indexes: Mapping[str, Any]) -> list[resync.Target]:
    return resync.targets_of(indexes.get(idx.ENDPOINTS) or {})


async def _refresh(target: resync.Target, indexes: Mapping[str, Any]) -> None:
    """One endpoint's periodic refresh: measure service levels and re-read prices when due,
    then replan from fresh telemetry, sample utilization, re-apply every child when the drift
    interval is due, and refresh status."""
    namespace, name, uid = target.namespace, target.name, target.uid
    endpoints: Mapping[str, Iterable[idx.EndpointEntry]] = indexes.get(idx.ENDPOINTS) or {}
    entry = next((e for e in endpoints.get(namespace, ()) if e.name == name), None)
    if entry is None:
        return  # deleted since the ticker looked
    await asyncio.to_thread(_services.pricing.refresh)
    await asyncio.to_thread(_services.load.poll)
    if uid:
        await _measure_if_due(namespace, name, uid, entry.engine, _refresh_logger)
    forced = _forced_at.get((namespace, name))
    due = forced is None or time.monotonic() - forced >= tidal_settings.DRIFT_INTERVAL_SECONDS
    mode = TICK if due else REFRESH
    await _trigger(namespace, name, mode, indexes, _refresh_logger)


resync.register(KIND, tidal_settings.RECONCILE_INTERVAL_SECONDS, _refresh_targets, _refresh)
# Refreshes run outside any handler, so they log (and name the endpoint) through their own.
_refresh_logger: Final = logging.getLogger("tidal.controllers.inference")


# The wake annotation each endpoint had when last seen, by uid. Touched only on the event loop.
_wakes: dict[str, str | None] = {}


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
    resync.start({key: kwargs[key] for key in idx.ALL if key in kwargs})
    if namespace is None or not uid:
        return
    if event.get("type") == "DELETED":
        _forced_at.pop((namespace, name), None)
        metrics.forget_endpoint(namespace, name)
        _services.load.forget(signals.endpoint_key(namespace, name))
        _wakes.pop(uid, None)
        with _state_guard:
            _measured.pop(uid, None)
            _histories.pop(uid, None)
        return
    wake = body.metadata.annotations.get(WAKE_REQUESTED_AT)
    before = _wakes.get(uid, _UNSEEN)
    _wakes[uid] = wake
    if event.get("type") is None or before is _UNSEEN or before == wake or wake is None:
        return  # the initial listing is the resume handler's; nothing new otherwise
    status = body.get("status") or {}
    scaled_at = parse_time(status.get("scaledToZeroTime"))
    if signals.wake_pending(parse_time(wake), scaled_at):
        logger.info("Wake requested at %s; reconciling now", wake)
        await _trigger(namespace, name, WAKE, kwargs, logger)


@kopf.on.event(
    "apps",
    "v1",
    "deployments",
    labels={LABEL_MANAGED_BY: MANAGER, LABEL_ENDPOINT: kopf.PRESENT},
)
@kopf_errors
async def child_deployment_changed(body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
    """Refresh the owning endpoint when one of its Deployments changes (readiness, a deletion,
    a hand edit); a child that differs from its rendering is re-applied."""
    namespace = body.metadata.namespace
    owner = _owning_endpoint(body)
    if namespace is not None and owner is not None:
        await _trigger(namespace, owner, WORLD_CHANGED, kwargs, logger)


_UNSEEN: Final = object()
# What the event handlers saw last, to tell a change that matters from a watch event that
# changes nothing we read. Touched only on the event loop.
_node_fingerprints: dict[str, tuple[Any, ...]] = {}
_namespace_policies: dict[str, str | None] = {}
_collection_regions: dict[tuple[str, str], tuple[str, ...] | None] = {}


@kopf.on.event("", "v1", "nodes")
async def node_changed(
    body: kopf.Body, event: kopf.RawEvent, name: str, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Replan the endpoints with replicas on a node that was deleted or changed in a way that
    matters (readiness, taints, cordon, labels, GPUs). Telemetry-only changes are left to the
    periodic refresh."""
    resync.start({key: kwargs[key] for key in idx.ALL if key in kwargs})
    deleted = event.get("type") == "DELETED"
    before = _node_fingerprints.get(name, _UNSEEN)
    if deleted:
        _node_fingerprints.pop(name, None)
    else:
        _node_fingerprints[name] = obs.node_fingerprint(body)
    if event.get("type") is None or before is _UNSEEN:
        return  # the initial listing, or a new node: nothing runs there yet
    if not deleted and before == _node_fingerprints[name]:
        return
    targets = idx.endpoints_on_node(kwargs.get(idx.GPU_PODS) or {}, name)
    if targets:
        logger.info(
            "Replanning endpoints after a node change node=%s deleted=%s endpoints=%s",
            name,
            deleted,
            ",".join(f"{ns}/{ep}" for ns, ep in sorted(targets)),
        )
        await _trigger_all(targets, kwargs, logger)


@kopf.on.event("", "v1", "namespaces")
async def namespace_changed(
    body: kopf.Body, event: kopf.RawEvent, name: str, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Replan a namespace's endpoints when its `tidal.dev/allowed-regions` changes, so a
    tightened policy moves running replicas at once."""
    resync.start({key: kwargs[key] for key in idx.ALL if key in kwargs})
    value = body.metadata.annotations.get(ALLOWED_REGIONS)
    before = _namespace_policies.get(name, _UNSEEN)
    if event.get("type") == "DELETED":
        _namespace_policies.pop(name, None)
        return
    _namespace_policies[name] = value
    if event.get("type") is None or before is _UNSEEN or before == value:
        return
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
    key = (namespace, name)
    value = None if event.get("type") == "DELETED" else idx.collection_regions(body)
    before = _collection_regions.get(key, _UNSEEN)
    _collection_regions[key] = value
    if event.get("type") is None or before == value:
        return
    targets = idx.endpoints_in_namespace(
        kwargs.get(idx.ENDPOINTS) or {}, namespace, collection=name
    )
    if targets:
        await _trigger_all(targets, kwargs, logger)


# --- triggering ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Slot:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    queued: Mode | None = None


# One slot per endpoint ever seen (small; not worth evicting). Touched only on the event loop.
_slots: dict[tuple[str, str], _Slot] = {}
# When each endpoint's children were last all applied (time.monotonic()). Event loop only.
_forced_at: dict[tuple[str, str], float] = {}
# The threads blocking reconciles run in: asyncio's default pool has only cores + 4 threads,
# and a reconcile spends most of its time waiting on the API server.
_reconcilers: Final = concurrent.futures.ThreadPoolExecutor(
    max_workers=tidal_settings.RECONCILE_WORKERS, thread_name_prefix="tidal-reconcile"
)


Reconcile = Callable[[str, str, Mode, idx.Inputs, kopf.Logger], None]


async def _trigger(
    namespace: str,
    name: str,
    mode: Mode,
    indexes: Mapping[str, Any],
    logger: kopf.Logger,
    *,
    run: Reconcile | None = None,
) -> None:
    """Reconcile one endpoint, serialized with and coalesced into its other triggers.

    `run` is the blocking reconcile (`_sync`; tests pass their own).
    """
    slot = _slots.setdefault((namespace, name), _Slot())
    if slot.queued is not None:
        # One reconcile is already waiting; it reads everything afresh when it starts.
        slot.queued = slot.queued.merge(mode)
        return
    slot.queued = mode
    async with slot.lock:
        mode, slot.queued = slot.queued, None
        inputs = idx.capture(indexes, namespace, datetime.now(UTC), name)
        if mode.force_apply:
            _forced_at[(namespace, name)] = time.monotonic()
        # Kopf's context (the logger's object, event posting) travels with the call, as in
        # asyncio.to_thread.
        call = functools.partial(
            contextvars.copy_context().run, run or _sync, namespace, name, mode, inputs, logger
        )
        await asyncio.get_running_loop().run_in_executor(_reconcilers, call)


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


# --- measuring (blocking Prometheus queries, in a thread, on refreshes) -----------------------


@dataclasses.dataclass(frozen=True)
class _Measured:
    """The latest measurement of one endpoint, when it was taken and, if it failed, why."""

    measurement: Measurement
    at: datetime
    error: str | None = None


# The latest measurement per endpoint uid. After a restart the first tick measures again.
_measured: dict[str, _Measured] = {}


async def _measure_if_due(
    namespace: str, name: str, uid: str, raw_engine: str | None, logger: kopf.Logger
) -> None:
    """Measure the endpoint unless it was measured less than TIDAL_SLO_INTERVAL_SECONDS ago."""
    with _state_guard:
        last = _measured.get(uid)
    now = datetime.now(UTC)
    if not obs.measurement_due(last.at if last else None, now, tidal_settings.SLO_INTERVAL_SECONDS):
        return
    try:
        engine = Engine(raw_engine or Engine.VLLM)
    except ValueError:
        return  # an invalid spec: the reconcile reports it
    measured = await asyncio.to_thread(_measure, namespace, name, engine, now)
    # Once per outage, not once per tick: the condition's message carries the current error.
    if measured.error is not None and (last is None or last.error is None):
        logger.warning("Cannot measure service levels: %s", measured.error)
    with _state_guard:
        _measured[uid] = measured


def _measure(namespace: str, name: str, engine: Engine, now: datetime) -> _Measured:
    reader = _services.reader
    try:
        return _Measured(reader.measure(namespace, name, engine), now)
    except TidalError as exc:
        return _Measured(Measurement(window_seconds=reader.window_seconds), now, str(exc))


def _service_levels(
    ie: InferenceEndpoint, pods: Sequence[Mapping[str, Any]], inputs: idx.Inputs
) -> ServiceLevels:
    """status.slo, status.cost and their conditions, from the latest measurement and the
    replicas running now."""
    uid = str(ie.metadata.get("uid", ""))
    generation = ie.metadata.get("generation")
    with _state_guard:
        measured = _measured.get(uid)
    prices = _services.pricing.current()
    measurement = measured.measurement if measured is not None else None
    cost = endpoint_cost(
        obs.placed_replicas(pods, inputs.fleet),
        measurement.tokens_per_second if measurement is not None else None,
        prices.catalog,
        tokens_source=measurement.describe() if measurement is not None else None,
    )
    cost = _with_basis(cost, f"prices: {prices.source}")
    within_budget = budget_condition(ie.spec.cost, cost, generation=generation)
    if measured is None:
        return ServiceLevels(cost=cost, within_budget=within_budget)
    slo, slo_met = evaluate(ie.spec.slo, measured.measurement, measured.at, generation=generation)
    if measured.error is not None:
        slo_met = slo_met.model_copy(
            update={"message": _clip(f"{slo_met.message}; cannot measure: {measured.error}")}
        )
    return ServiceLevels(cost=cost, within_budget=within_budget, slo=slo, slo_met=slo_met)


def _with_basis(cost: CostStatus, note: str) -> CostStatus:
    basis = f"{cost.basis}; {note}" if cost.basis else note
    return cost.model_copy(update={"basis": _clip(basis, _REASON_MAX)})


def _clip(text: str, limit: int = 4096) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _record_metrics(namespace: str, name: str, levels: ServiceLevels) -> None:
    """Mirror status.cost and status.slo into the operator's /metrics."""
    metrics.record_endpoint_cost(namespace, name, levels.cost)
    if levels.slo is not None:
        metrics.record_endpoint_slo(namespace, name, levels.slo, levels.slo_met)


# --- the reconcile (blocking; runs in a worker thread) ---------------------------------------


def _sync(namespace: str, name: str, mode: Mode, inputs: idx.Inputs, logger: kopf.Logger) -> None:
    """Reconcile one endpoint from its latest stored state and write what changed.

    The object is read afresh: each trigger must see the status (and the state annotations)
    the previous one wrote, or transitions and their Events would be reported twice.
    """
    raw = kube.get_object(API_VERSION, KIND, namespace, name)
    if raw is None:
        return  # the endpoint is gone; the garbage collector takes its children
    metadata = raw.get("metadata") or {}
    before = raw.get("status") or {}
    if mode.require_observed and before.get("observedGeneration") != metadata.get("generation"):
        return
    if metadata.get("deletionTimestamp"):
        return
    with metrics.observe_reconcile(KIND):
        result = _reconcile(raw, mode, inputs, logger)
        if result.annotations:
            kube.patch_annotations(API_VERSION, KIND, namespace, name, result.annotations)
        if any(
            _without_nulls(before.get(key)) != _without_nulls(value)
            for key, value in result.status.items()
        ):
            kube.patch_status(API_VERSION, KIND, namespace, name, result.status)
    _post(raw, logger, result.events)


def _without_nulls(value: Any) -> Any:
    """`value` as the API server stores it after a merge patch: null fields are absent."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class _Result:
    status: dict[str, Any]
    annotations: dict[str, str | None] = dataclasses.field(default_factory=dict)
    events: list[Event] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Plan:
    placement: Placement
    # The regions residency allows (whether or not anything fits there).
    allowed: tuple[str, ...]
    previous: Placement | None
    was_lost: bool
    history: History


def _reconcile(raw: Raw, mode: Mode, inputs: idx.Inputs, logger: kopf.Logger) -> _Result:
    """parse -> observe -> plan -> render/apply -> enforce -> status, for one endpoint."""
    metadata = raw.get("metadata") or {}
    generation = metadata.get("generation")
    annotations: dict[str, str] = dict(metadata.get("annotations") or {})
    before = raw.get("status") or {}
    conditions = parse_conditions(before)
    now = datetime.now(UTC)

    def failed(reason: str, exc: PermanentError) -> _Result:
        status = failed_status(
            reason=reason,
            message=str(exc),
            generation=generation,
            conditions=conditions,
            now=format_time(now),
        )
        return _Result(status=status, events=status_events(before, status))

    try:
        ie = _parse(raw)
    except PermanentError as exc:
        return failed(INVALID_SPEC, exc)
    namespace, name = metadata["namespace"], metadata["name"]

    # Observed: the endpoint's own children and the world around it, all from the indexes.
    deployments, services = list(inputs.deployments), list(inputs.services)
    pods = list(inputs.pods)
    live = obs.own_pods(pods)

    scaling = _scale(raw, ie, live, inputs, now)
    desired = scaling.desired if scaling is not None else desired_replicas(ie.spec)
    plan = _plan(ie, annotations, before, inputs, pods, mode, now, desired)
    placement = plan.placement
    existing = {(obj.get("kind"), _name_of(obj)): obj for obj in [*deployments, *services]}
    try:
        children = _render(ie, placement, inputs, existing, live)
    except PermanentError as exc:
        return failed(INVALID_SPEC, exc)
    try:
        events, deployments = _apply(children, existing, mode)
    except PermanentError as exc:
        return failed(APPLY_REJECTED, exc)
    violation, deleted, enforced = _enforce(namespace, live, inputs, plan.allowed)
    events += enforced
    if scaling is not None:
        events += [Event(e.type, e.reason, e.message) for e in scaling.events]
        if scaling.woke:
            _log_wake(annotations, scaling, logger)

    node_regions = {node.name: node.region for node in inputs.fleet.nodes if node.region}
    running = [pod for pod in live if _name_of(pod) not in deleted]
    levels = _service_levels(ie, running, inputs)
    status = summarize(
        ie,
        decision=Decision(
            desired=placement.desired,
            spot=placement.spot,
            reserved=placement.reserved,
            reason=placement.reason,
            placed=placement.placed,
            placed_reason=placement.placed_reason,
        ),
        residency=ResidencyReport(
            allowed_regions=plan.allowed,
            violation=violation,
            excluded_regions=tuple(r for r in ie.spec.residency.regions if r not in plan.allowed),
        ),
        observed=Observed(deployments=deployments, pods=running, node_regions=node_regions),
        generation=generation,
        conditions=conditions,
        now=format_time(now),
        levels=levels,
        scaling=_scaling_report(ie, scaling),
    )
    previous = plan.previous
    events += spot_events(
        before=(previous.spot, previous.reserved) if previous is not None else None,
        after=(placement.spot, placement.reserved),
        was_lost=plan.was_lost,
        lost=placement.spot_lost_since is not None,
        reason=placement.reason,
    )
    events += status_events(before, status)
    events += budget_events(before, status)
    if levels.slo_met is not None:
        slo_event = transition_event(get_condition(conditions, SLO_MET), levels.slo_met)
        if slo_event is not None:
            events.append(slo_event)
    _record_metrics(namespace, name, levels)
    changes = obs.episode_annotations(placement, annotations)
    changes.update(_history_changes(plan.history, annotations))
    logger.debug(
        "Reconciled InferenceEndpoint desired=%s spot=%s reserved=%s placed=%s",
        placement.desired,
        placement.spot,
        placement.reserved,
        placement.placed_reason,
    )
    return _Result(status=status, annotations=changes, events=events)


def _scale(
    raw: Raw,
    ie: InferenceEndpoint,
    live: Sequence[Mapping[str, Any]],
    inputs: idx.Inputs,
    now: datetime,
) -> ScalingDecision | None:
    """How many replicas, from load, idle time and wakes; None without a gateway to tell."""
    tracker = _services.load
    if not tracker.configured:
        return None
    namespace, name = str(ie.metadata["namespace"]), str(ie.metadata["name"])
    key = signals.endpoint_key(namespace, name)
    first_ready = obs.first_ready_time(live)
    if first_ready is not None:
        # Kubernetes stamps conditions to the second: the replica became ready within the
        # second after the stamp, and no later than now. The later bound never reports a cold
        # start shorter than it was (a fast start would otherwise read as 0 s).
        first_ready = min(first_ready + timedelta(seconds=1), now)
    state = ScalingState.observe(
        _with_status(ie, raw),
        ready_replicas=sum(obs.serving_replicas(live, inputs.fleet).values()),
        load=tracker.samples(key),
        gateway_last_request_time=tracker.last_request_time(key),
        first_ready_time=first_ready,
    )
    decision = decide(ie.spec.scaling, state, now, tracker.tuning)
    if decision.desired != state.current_replicas:
        logger = logging.getLogger("tidal.scaling")
        logger.info(
            "Scaling InferenceEndpoint endpoint=%s from=%s to=%s reason=%r",
            key,
            state.current_replicas,
            decision.desired,
            decision.reason,
        )
    return decision


def _with_status(ie: InferenceEndpoint, raw: Raw) -> InferenceEndpoint:
    """`ie` with the status Tidal wrote (the scaling state machine lives there); a status that
    does not parse counts as none, as in `_parse`."""
    try:
        status = InferenceEndpointStatus.model_validate(raw.get("status") or {})
    except ValidationError:
        return ie
    return ie.model_copy(update={"status": status})


def _scaling_report(ie: InferenceEndpoint, decision: ScalingDecision | None) -> Scaling | None:
    if decision is None:
        return None
    spec = ie.spec.scaling
    return Scaling(
        condition=decision.condition,
        floor=min(max(1, spec.min_replicas), spec.effective_max_replicas),
        scaled_to_zero_time=_stamp(decision.scaled_to_zero_time),
        last_request_time=_stamp(decision.last_request_time),
        last_cold_start_seconds=decision.cold_start_seconds,
    )


def _stamp(moment: datetime | None) -> str | None:
    return format_time_ms(moment) if moment is not None else None


def _log_wake(
    annotations: Mapping[str, str], decision: ScalingDecision, logger: kopf.Logger
) -> None:
    """The operator's share of a cold start: wake requested -> replicas asked for (applied)."""
    wake = parse_time(annotations.get(WAKE_REQUESTED_AT))
    share = (datetime.now(UTC) - wake).total_seconds() if wake is not None else None
    logger.info(
        "Waking from zero desired=%s wake_requested_at=%s operator_share_seconds=%s",
        decision.desired,
        annotations.get(WAKE_REQUESTED_AT),
        f"{share:.3f}" if share is not None else "unknown",
    )


def _plan(
    ie: InferenceEndpoint,
    annotations: Mapping[str, str],
    before: Mapping[str, Any],
    inputs: idx.Inputs,
    pods: list[Raw],
    mode: Mode,
    now: datetime,
    desired: int,
) -> _Plan:
    """The planner's inputs from what was observed, and its decision."""
    namespace = str(ie.metadata.get("namespace", ""))
    live = obs.own_pods(pods)
    policy = parse(inputs.namespace_policy) if inputs.namespace_policy is not None else None
    ref = ie.spec.vector_collection_ref
    constraints = Constraints(
        namespace_regions=policy.regions if policy is not None else None,
        collection_regions=inputs.collection_regions(ref.name if ref is not None else None),
    )
    lost_since, recovered_since = obs.episode(annotations)
    spot_health = SpotHealth(
        pending_spot_pods=obs.pending_spot_pods(pods, now, tidal_settings.SPOT_PENDING_SECONDS),
        lost_since=lost_since,
        recovered_since=recovered_since,
        return_after_seconds=tidal_settings.SPOT_RETURN_AFTER_SECONDS,
    )
    uid = str(ie.metadata.get("uid", ""))
    utilization = _history(uid, annotations)
    if mode.sample_history:
        keys = {(namespace, _name_of(pod)) for pod in live}
        # A pod's telemetry is on the node it runs on: only those nodes need reading.
        hosts = {_node_of(pod) for pod in live}
        nearby = FleetSnapshot(nodes=tuple(n for n in inputs.fleet.nodes if n.name in hosts))
        sample = history.sample_from_fleet(nearby, keys, now)
        if sample is not None:
            utilization = history.append(utilization, sample)
            _remember_history(uid, utilization)
    previous = obs.previous_placement(before)
    placement = planner.plan(
        ie.spec,
        inputs.fleet,
        utilization,
        now,
        desired=desired,
        constraints=constraints,
        spot_health=spot_health,
        previous=previous,
        own=endpoint_pods(live),
    )
    return _Plan(
        placement=_with_policy_error(placement, policy),
        allowed=planner.allowed_regions(ie.spec, constraints),
        previous=previous,
        was_lost=lost_since is not None,
        history=utilization,
    )


def _render(
    ie: InferenceEndpoint,
    placement: Placement,
    inputs: idx.Inputs,
    existing: Mapping[tuple[Any, str], Raw],
    live: Sequence[Mapping[str, Any]],
) -> list[Raw]:
    """The children for `placement`, stamped, replicas handed over make-before-break.

    A capacity type that has never run a replica gets no Deployment: an empty Deployment still
    costs the Deployment and ReplicaSet controllers a ReplicaSet and its status writes, which at
    1,000 endpoints doubled their work (docs/benchmarks.md). Once created, a Deployment stays,
    scaled to 0 when its share is, so the mix stays visible and coming back is a patch.
    """
    name = str(ie.metadata["name"])
    shares = obs.shares(placement, inputs.fleet)
    current = obs.current_replicas(
        [obj for (kind, _), obj in existing.items() if kind == "Deployment"], name
    )
    asked = obs.handover(
        {kind: shares[kind].replicas for kind in shares},
        current,
        obs.serving_replicas(live, inputs.fleet),
    )
    return [
        stamp(
            keep_preferences(
                render_deployment(
                    ie, kind, dataclasses.replace(shares[kind], replicas=asked[kind])
                ),
                existing.get(("Deployment", deployment_name(name, kind))),
            )
        )
        for kind in CAPACITY_TYPES
        if asked[kind] or ("Deployment", deployment_name(name, kind)) in existing
    ] + [stamp(render_service(ie))]


def _apply(
    children: list[Raw], existing: Mapping[tuple[Any, str], Raw], mode: Mode
) -> tuple[list[Event], list[Raw]]:
    """Apply the children that changed (all of them when `mode.force_apply`); the Events for
    it, and the Deployments as they are now."""
    stale = [child for child in children if mode.force_apply or _differs(child, existing)]
    applied = {(obj.get("kind"), _name_of(obj)): obj for obj in map(kube.apply, stale)}
    current = {**existing, **applied}
    deployments = [obj for (kind, _), obj in current.items() if kind == "Deployment"]
    return apply_events(existing.values(), stale), deployments


def _enforce(
    namespace: str,
    live: Sequence[Mapping[str, Any]],
    inputs: idx.Inputs,
    allowed: tuple[str, ...],
) -> tuple[str | None, set[str], list[Event]]:
    """Delete the replicas running outside the allowed regions and those stranded on lost
    nodes; their Deployments, whose affinity names only allowed, live capacity, replace them.

    Returns the residency violation (one line, None when compliant), the deleted pods' names,
    and the Events.
    """
    node_regions = {node.name: node.region for node in inputs.fleet.nodes}
    events: list[Event] = []
    deleted: set[str] = set()
    outside = checks.violations(live, node_regions, set(allowed))
    violation = checks.describe(outside, allowed) if outside else None
    if violation is not None:
        events.append(residency_event(violation))
        for found in outside:
            kube.delete_pod(namespace, found.pod, uid=found.uid or None)
            deleted.add(found.pod)
    stranded = [
        (pod, why)
        for pod, why in obs.lost_node_pods(live, inputs.fleet)
        if _name_of(pod) not in deleted and _confirmed_lost(_node_of(pod))
    ]
    if stranded:
        events.append(
            lost_nodes_event(f"{_name_of(pod)} on {_node_of(pod)} ({why})" for pod, why in stranded)
        )
        for pod, _why in stranded:
            kube.delete_pod(namespace, _name_of(pod), uid=(pod.get("metadata") or {}).get("uid"))
            deleted.add(_name_of(pod))
    return violation, deleted, events


def _confirmed_lost(node_name: str) -> bool:
    """Ask the API server before deleting a replica for its node: the index may lag a node
    that was just added (or just became Ready again). Only suspected nodes cost a request."""
    node = kube.get_node(node_name)
    if node is None:
        return True
    info = fleet.node_info(node, 0, datetime.now(UTC))
    return not info.ready and info.capacity_type is CapacityType.SPOT


def _parse(raw: Raw) -> InferenceEndpoint:
    """The typed endpoint; an invalid spec is a PermanentError carrying a readable message.

    Status is left out on purpose: a status written by another version must never make the
    spec unreconcilable.
    """
    return parse_object(InferenceEndpoint, raw)


def _with_policy_error(placement: Placement, policy: NamespacePolicy | None) -> Placement:
    """The placement whose reason also says what was wrong with the namespace policy."""
    if policy is None or policy.error is None:
        return placement
    reason = f"{placement.reason}; {policy.error}"
    if len(reason) > _REASON_MAX:
        reason = reason[: _REASON_MAX - 1] + "…"
    return dataclasses.replace(placement, reason=reason)


def _differs(child: Mapping[str, Any], existing: Mapping[tuple[Any, str], Raw]) -> bool:
    """Whether applying `child` could change anything: it is missing, carries another stamp, or
    runs another replica count (`kubectl scale` leaves the stamp alone). Other hand edits are
    repaired by the periodic forced apply (`TIDAL_DRIFT_INTERVAL_SECONDS`)."""
    live = existing.get((child.get("kind"), _name_of(child)))
    if live is None:
        return True
    stamped = ((live.get("metadata") or {}).get("annotations") or {}).get(RENDER_HASH)
    if stamped != ((child.get("metadata") or {}).get("annotations") or {}).get(RENDER_HASH):
        return True
    wanted = (child.get("spec") or {}).get("replicas")
    return wanted is not None and wanted != (live.get("spec") or {}).get("replicas")


# The utilization history, per endpoint uid, as this process has accumulated it: samples merge
# within a bucket here and reach the annotation once per bucket (annotation writes are API
# writes). After a restart it starts from the annotation. Reconciles of different endpoints
# run in different threads, hence the guard (which guards `_measured` too).
_histories: dict[str, History] = {}
_state_guard = threading.Lock()


def _history(uid: str, annotations: Mapping[str, str]) -> History:
    with _state_guard:
        cached = _histories.get(uid)
    return cached if cached is not None else history.loads(annotations.get(UTILIZATION_HISTORY))


def _remember_history(uid: str, utilization: History) -> None:
    with _state_guard:
        _histories[uid] = utilization


def _history_changes(current: History, annotations: Mapping[str, str]) -> dict[str, str | None]:
    """The history annotation to write: when a new bucket has begun since the stored one."""
    if not current.samples:
        return {}
    stored = history.loads(annotations.get(UTILIZATION_HISTORY))
    if stored.samples and _bucket(stored) == _bucket(current):
        return {}
    return {UTILIZATION_HISTORY: history.dumps(current)}


def _bucket(samples: History) -> int:
    newest = samples.samples[-1].time
    return int(newest.timestamp()) // history.HISTORY_BUCKET_SECONDS


def _name_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _node_of(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _owning_endpoint(body: kopf.Body) -> str | None:
    """The InferenceEndpoint controlling this child, by ownerReference (labels can be copied)."""
    return controlling_owner(body.metadata, KIND)


def _post(raw: Raw, logger: kopf.Logger, events: list[Event]) -> None:
    post_events(raw, logger, events, "endpoint")
