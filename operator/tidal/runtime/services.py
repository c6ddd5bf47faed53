"""What the operator connects once at startup and both kinds' reconciles use.

Owns: `services` (the Prometheus reader, the one price cache, the one cache of provisionable
capacity, the spot reclaim ledger's store, the optional kinds the API server serves, the
endpoints' PodMonitors, the gateway load tracker, the operator's /metrics server, the
PodMonitors' extra labels) and `start`, which configures Kopf, connects
all of them from the environment, reads the prices once and logs one line saying how the
operator runs. Until `start` runs (unit tests, tools importing a
controller) the services measure nothing, poll no gateway and read prices lazily. Must not:
decide anything or register Kopf handlers (the controllers do, and call `start` from theirs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import kopf

from tidal import metrics
from tidal.api.labels import LABEL_MANAGED_BY, MANAGER
from tidal.api.signals import GatewayReport
from tidal.clients import kube
from tidal.clients.inflight import fetch_report
from tidal.clients.prometheus import PrometheusReader, PrometheusSettings, connect
from tidal.reconcile.observation import gateway_admin_urls
from tidal.render.monitoring import (
    OWN_LABELS,
    POD_MONITOR_API_VERSION,
    POD_MONITOR_KIND,
    POD_MONITORS,
)
from tidal.runtime import settings as tidal_settings
from tidal.runtime.capacity import CapacityCache
from tidal.runtime.discovery import ServedKinds
from tidal.runtime.load import LoadTracker
from tidal.runtime.podmonitors import PodMonitorCache
from tidal.runtime.pricing import INVALID_PRICING, PricingCache
from tidal.runtime.reclaims import ReclaimStore, ledger
from tidal.scaling.autoscale import Tuning

__all__ = [
    "QuietWatchHandlers",
    "Services",
    "capacity_cache",
    "pricing_cache",
    "reclaim_store",
    "served_kinds",
    "services",
    "start",
]

# Seconds one gateway replica has to answer GET /internal/inflight.
_GATEWAY_TIMEOUT_SECONDS: Final = 2.0


@dataclasses.dataclass
class Services:
    """What startup connects once and every reconcile uses."""

    reader: PrometheusReader
    pricing: PricingCache
    capacity: CapacityCache
    load: LoadTracker
    kinds: ServedKinds
    monitors: PodMonitorCache
    # Spot reclaims observed, kept across restarts in the tidal-spot-reclaims ConfigMap.
    reclaims: ReclaimStore
    metrics_server: metrics.MetricsServer | None = None
    # Extra labels on every PodMonitor (`TIDAL_POD_MONITOR_LABELS`).
    pod_monitor_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def refresh_shared(self) -> None:
        """Re-read what every endpoint's refresh shares, each only when it is due (prices,
        provisionable capacity, served kinds, PodMonitors, gateway load): one thread hop for all
        of them. Blocking: call it off the event loop."""
        self.pricing.refresh()
        self.capacity.refresh()
        self.kinds.refresh()
        self.monitors.refresh(self.pod_monitors())
        self.load.poll()

    def pod_monitors(self) -> bool:
        """Whether endpoints get PodMonitors now: the kind is served (and, with
        `TIDAL_POD_MONITORS=off`, never asked about)."""
        return self.kinds.serves(POD_MONITOR_API_VERSION, POD_MONITORS)


class QuietWatchHandlers(logging.Filter):
    """Drop Kopf's "Handler 'x' succeeded." for the handlers that run on every watch event.

    Kopf logs each successful handler call at INFO; for a node handler that is one line per
    telemetry update per node (hundreds a minute on a large fleet), and it says nothing.
    Failures, and the lines the handlers log when they act, still pass.
    """

    def __init__(self, handlers: Sequence[str]) -> None:
        super().__init__()
        self._quiet = frozenset(f"Handler {name!r} succeeded." for name in handlers)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self._quiet


def _fetch_gateway(url: str) -> GatewayReport:
    return fetch_report(url, timeout_seconds=_GATEWAY_TIMEOUT_SECONDS)


def _fetch_configmap(namespace: str, name: str) -> Mapping[str, Any] | None:
    return kube.get_object("v1", "ConfigMap", namespace, name)


def _save_configmap(namespace: str, name: str, data: Mapping[str, str]) -> bool:
    return kube.merge_configmap_data(namespace, name, data)


def _list_nodepools() -> list[dict[str, Any]]:
    return kube.list_objects("karpenter.sh/v1", "NodePool", None, {})


def _warn(configmap: Mapping[str, Any], reason: str, message: str) -> None:
    """A Warning Event with `reason` on a ConfigMap (the cache has logged it already)."""
    target = kopf.Body(dict(configmap))  # type: ignore[arg-type]  # a dict is a RawBody
    # Outside a Kopf context (no event poster yet) only the log line tells.
    with contextlib.suppress(LookupError):
        kopf.warn(target, reason=reason, message=message)


def _warn_on(reason: str) -> Callable[[Mapping[str, Any], str], None]:
    """A Warning Event with `reason` on a refused ConfigMap."""
    return lambda configmap, message: _warn(configmap, reason, message)


def pricing_cache(env: Mapping[str, str]) -> PricingCache:
    """The one price cache: `tidal-pricing` in the operator's namespace, re-read when due."""
    return PricingCache(
        _fetch_configmap,
        tidal_settings.operator_namespace(env),
        tidal_settings.pricing_refresh_seconds(env),
        report=_warn_on(INVALID_PRICING),
    )


def capacity_cache(env: Mapping[str, str]) -> CapacityCache:
    """The one cache of provisionable capacity: Karpenter NodePools and `tidal-capacity`."""
    return CapacityCache(
        _fetch_configmap,
        _list_nodepools,
        tidal_settings.operator_namespace(env),
        tidal_settings.capacity_refresh_seconds(env),
        report=_warn,
        profile_override=env.get("TIDAL_GPU_LABEL_PROFILE"),
    )


def reclaim_store(env: Mapping[str, str]) -> ReclaimStore:
    """The one reclaim ledger, saved into `tidal-spot-reclaims` in the operator's namespace."""
    return ReclaimStore(
        ledger, _fetch_configmap, _save_configmap, tidal_settings.operator_namespace(env)
    )


def served_kinds(env: Mapping[str, str]) -> ServedKinds:
    """The optional kinds discovery is read for: the PodMonitor, unless `TIDAL_POD_MONITORS`
    is off (then nothing is read, and nothing counts as served)."""
    wanted = [(POD_MONITOR_API_VERSION, POD_MONITORS)] if tidal_settings.pod_monitors(env) else []
    return ServedKinds(kube.served_resources, wanted)


def _list_pod_monitors() -> list[dict[str, Any]]:
    return kube.list_objects(
        POD_MONITOR_API_VERSION, POD_MONITOR_KIND, None, {LABEL_MANAGED_BY: MANAGER}
    )


def _load_tracker(env: Mapping[str, str]) -> LoadTracker:
    """Gateways from `TIDAL_GATEWAY_URLS`, else found by `TIDAL_GATEWAY_SELECTOR`, else none."""
    targets: Sequence[str] | Callable[[], Sequence[str]] = tidal_settings.gateway_urls(env)
    selector = tidal_settings.gateway_selector(env)
    if not targets and selector is not None:
        namespace = tidal_settings.operator_namespace(env)
        port = tidal_settings.gateway_admin_port(env)

        def discover() -> Sequence[str]:
            return gateway_admin_urls(kube.list_pods(namespace, selector), port)

        targets = discover
    return LoadTracker(
        _fetch_gateway,
        targets,
        tidal_settings.gateway_poll_seconds(env),
        Tuning.from_env(env),
    )


def _describe_gateways(env: Mapping[str, str]) -> str:
    urls = tidal_settings.gateway_urls(env)
    if urls:
        return ",".join(urls)
    selector = tidal_settings.gateway_selector(env)
    if selector is not None:
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        return f"pods {labels} in {tidal_settings.operator_namespace(env)}"
    return "none (scale to zero off)"


# Until `start` has run: no Prometheus, no gateways, and prices read lazily from the ConfigMap.
services: Final = Services(
    reader=connect(PrometheusSettings()),
    pricing=pricing_cache(os.environ),
    capacity=capacity_cache(os.environ),
    load=LoadTracker(_fetch_gateway, (), 1.0, Tuning()),
    kinds=ServedKinds(kube.served_resources, ()),
    monitors=PodMonitorCache(_list_pod_monitors),
    reclaims=reclaim_store(os.environ),
)


def start(settings: kopf.OperatorSettings, logger: kopf.Logger, quiet: Sequence[str]) -> None:
    """Configure Kopf for Tidal, connect the kubernetes client and Prometheus, find the
    gateways, read the prices and serve the operator's /metrics.

    Bad Prometheus or metrics settings stop the operator here, naming the variable; an
    unreachable Prometheus or API server does not (measurements and prices are retried later).
    `quiet` names the watch handlers whose routine successes are not logged.
    """
    tidal_settings.configure(settings)
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietWatchHandlers) for f in objects.filters):
        objects.addFilter(QuietWatchHandlers(quiet))
    # Every reconcile thread, plus the handlers Kopf runs in its own threads, may call at once.
    kube.load_config(pool_size=max(kube.POOL_SIZE, tidal_settings.RECONCILE_WORKERS + 16))
    prometheus = PrometheusSettings.from_env()
    port = tidal_settings.metrics_port()
    services.reader = connect(prometheus)
    services.load = _load_tracker(os.environ)
    services.pricing = pricing_cache(os.environ)
    prices = services.pricing.refresh()
    services.reclaims = reclaim_store(os.environ)
    services.capacity = capacity_cache(os.environ)
    capacity = services.capacity.refresh()  # fixes the conventions; a bad profile name stops
    conventions = services.capacity.conventions
    services.pod_monitor_labels = tidal_settings.pod_monitor_labels(os.environ, OWN_LABELS)
    services.kinds = served_kinds(os.environ)
    services.kinds.refresh()
    services.monitors = PodMonitorCache(_list_pod_monitors)
    services.monitors.refresh(services.pod_monitors())
    if port is not None and services.metrics_server is None:
        try:
            services.metrics_server = metrics.start_metrics_server(port)
        except OSError as exc:
            # The operator's own metrics are worth a loud log line, not an outage.
            logger.error("Cannot serve /metrics port=%s error=%s", port, exc)
    logger.info(
        "Started Tidal operator reconcile_interval_seconds=%s spot_pending_seconds=%s "
        "spot_return_after_seconds=%s standalone=%s prometheus=%s slo_window_seconds=%s "
        "slo_interval_seconds=%s prices=%r metrics_port=%s gateways=%s "
        "spot_provision_timeout_seconds=%s provisionable_pools=%s gpu_label_profile=%s "
        "region_label=%s spot_markers=%s instance_types=%s pod_monitors=%s",
        tidal_settings.RECONCILE_INTERVAL_SECONDS,
        tidal_settings.SPOT_PENDING_SECONDS,
        tidal_settings.SPOT_RETURN_AFTER_SECONDS,
        settings.peering.standalone,
        prometheus.url or "none",
        prometheus.window_seconds,
        tidal_settings.SLO_INTERVAL_SECONDS,
        prices.source,
        port if services.metrics_server is not None else "off",
        _describe_gateways(os.environ),
        tidal_settings.SPOT_PROVISION_TIMEOUT_SECONDS,
        len(capacity.nodepools) + len(capacity.declared),
        conventions.required.name,
        conventions.region_label,
        ",".join(f"{key}={value}" for key, value in conventions.spot_markers),
        len(conventions.instance_types),
        _describe_pod_monitors(os.environ),
    )


def _describe_pod_monitors(env: Mapping[str, str]) -> str:
    if not tidal_settings.pod_monitors(env):
        return "off"
    return "on" if services.pod_monitors() else "auto (kind not served yet)"
