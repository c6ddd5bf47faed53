"""The operator's own Prometheus metrics: reconcile activity per kind and per-resource SLO and cost.

Owns the metric definitions (names, labels, buckets) in one registry, the small functions the
controllers call to record into them, and the `/metrics` HTTP server. Per-resource gauges mirror
`status.slo` and `status.cost`: a value the status does not have (no data, unknown price) is
*removed* from the gauge, never exported as 0, so dashboards show a gap instead of a lie.

Must not: decide anything or read Kubernetes. It uses `prometheus_client` (the exporter library),
never `prometheus_api_client` (the query library, `tidal.clients.prometheus` only).

Metric names (all prefixed `tidal_`):

- `tidal_reconciles_total{kind}`, `tidal_reconcile_errors_total{kind,error}`,
  `tidal_reconcile_duration_seconds{kind}` (histogram);
- `tidal_endpoint_p95_latency_seconds`, `tidal_endpoint_p95_time_to_first_token_seconds`,
  `tidal_endpoint_tokens_per_second`, `tidal_endpoint_slo_met` (1 met, 0 missed; absent unknown),
  `tidal_endpoint_cost_hourly_usd`, `tidal_endpoint_cost_per_million_tokens_usd`,
  `tidal_endpoint_spot_savings_ratio` (0-1), all `{namespace,name}`;
- `tidal_vectorcollection_cost_hourly_usd{namespace,name}`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from tidal.api.collection import CollectionCostStatus
from tidal.api.common import Condition
from tidal.api.endpoint import EndpointCostStatus, EndpointSLOStatus

__all__ = [
    "DEFAULT_METRICS_PORT",
    "REGISTRY",
    "MetricsServer",
    "forget_endpoint",
    "forget_vector_collection",
    "observe_reconcile",
    "record_endpoint_cost",
    "record_endpoint_slo",
    "record_vector_collection_cost",
    "start_metrics_server",
]

DEFAULT_METRICS_PORT = 8081

# Our own registry rather than prometheus_client's global one, so nothing a library registers
# globally leaks into the operator's /metrics; the runtime collectors are added on purpose.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

RECONCILES = Counter(
    "tidal_reconciles",
    "Reconciles started, by resource kind.",
    ["kind"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "tidal_reconcile_errors",
    "Reconciles that raised, by resource kind and error class (e.g. TemporaryError).",
    ["kind", "error"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "tidal_reconcile_duration_seconds",
    "Wall time of one reconcile, by resource kind.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)

_RESOURCE = ["namespace", "name"]
P95_LATENCY = Gauge(
    "tidal_endpoint_p95_latency_seconds",
    "Measured p95 request latency of an InferenceEndpoint (status.slo.p95LatencyMs).",
    _RESOURCE,
    registry=REGISTRY,
)
P95_TTFT = Gauge(
    "tidal_endpoint_p95_time_to_first_token_seconds",
    "Measured p95 time to first token of an InferenceEndpoint.",
    _RESOURCE,
    registry=REGISTRY,
)
TOKENS_PER_SECOND = Gauge(
    "tidal_endpoint_tokens_per_second",
    "Measured generated tokens per second of an InferenceEndpoint.",
    _RESOURCE,
    registry=REGISTRY,
)
SLO_MET = Gauge(
    "tidal_endpoint_slo_met",
    "1 when the SLOMet condition is True, 0 when False; absent while Unknown.",
    _RESOURCE,
    registry=REGISTRY,
)
COST_HOURLY = Gauge(
    "tidal_endpoint_cost_hourly_usd",
    "What an InferenceEndpoint costs per hour, in US dollars (status.cost.hourlyUSD).",
    _RESOURCE,
    registry=REGISTRY,
)
COST_PER_MILLION = Gauge(
    "tidal_endpoint_cost_per_million_tokens_usd",
    "US dollars per million generated tokens (status.cost.perMillionTokensUSD).",
    _RESOURCE,
    registry=REGISTRY,
)
SPOT_SAVINGS = Gauge(
    "tidal_endpoint_spot_savings_ratio",
    "What spot saves against all-reserved capacity, 0-1 (status.cost.spotSavingsPercent / 100).",
    _RESOURCE,
    registry=REGISTRY,
)
VECTOR_COST_HOURLY = Gauge(
    "tidal_vectorcollection_cost_hourly_usd",
    "What a VectorCollection costs per hour, in US dollars (status.cost.hourlyUSD).",
    _RESOURCE,
    registry=REGISTRY,
)

_ENDPOINT_GAUGES = (P95_LATENCY, P95_TTFT, TOKENS_PER_SECOND, SLO_MET)
_ENDPOINT_COST_GAUGES = (COST_HOURLY, COST_PER_MILLION, SPOT_SAVINGS)


@contextlib.contextmanager
def observe_reconcile(kind: str) -> Iterator[None]:
    """Count and time one reconcile of `kind`; an exception is counted by class and re-raised."""
    RECONCILES.labels(kind=kind).inc()
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        RECONCILE_ERRORS.labels(kind=kind, error=type(exc).__name__).inc()
        raise
    finally:
        RECONCILE_DURATION.labels(kind=kind).observe(time.perf_counter() - started)


def record_endpoint_slo(
    namespace: str, name: str, slo: EndpointSLOStatus, condition: Condition | None = None
) -> None:
    """Mirror `status.slo` (and the `SLOMet` condition, when given) of one endpoint."""
    _set(P95_LATENCY, namespace, name, _seconds(slo.p95_latency_ms))
    _set(P95_TTFT, namespace, name, _seconds(slo.p95_time_to_first_token_ms))
    _set(TOKENS_PER_SECOND, namespace, name, slo.tokens_per_second)
    met = None
    if condition is not None and condition.status != "Unknown":
        met = 1.0 if condition.status == "True" else 0.0
    _set(SLO_MET, namespace, name, met)


def record_endpoint_cost(namespace: str, name: str, cost: EndpointCostStatus) -> None:
    """Mirror `status.cost` of one endpoint."""
    _set(COST_HOURLY, namespace, name, _dollars(cost.hourly_usd))
    _set(COST_PER_MILLION, namespace, name, _dollars(cost.per_million_tokens_usd))
    savings = cost.spot_savings_percent
    _set(SPOT_SAVINGS, namespace, name, None if savings is None else savings / 100)


def record_vector_collection_cost(namespace: str, name: str, cost: CollectionCostStatus) -> None:
    """Mirror `status.cost.hourlyUSD` of one vector collection."""
    _set(VECTOR_COST_HOURLY, namespace, name, _dollars(cost.hourly_usd))


def forget_endpoint(namespace: str, name: str) -> None:
    """Drop a deleted endpoint's series so they do not linger at their last value."""
    for gauge in (*_ENDPOINT_GAUGES, *_ENDPOINT_COST_GAUGES):
        _remove(gauge, namespace, name)


def forget_vector_collection(namespace: str, name: str) -> None:
    """Drop a deleted collection's series."""
    _remove(VECTOR_COST_HOURLY, namespace, name)


class MetricsServer:
    """The running `/metrics` endpoint; `stop()` closes it (tests, clean shutdown)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(port: int = DEFAULT_METRICS_PORT, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve `REGISTRY` at `http://addr:port/metrics` from a daemon thread (port 0: any free)."""
    server, thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return MetricsServer(server, thread)


def _set(gauge: Gauge, namespace: str, name: str, value: float | None) -> None:
    if value is None:
        _remove(gauge, namespace, name)
    else:
        gauge.labels(namespace=namespace, name=name).set(value)


def _remove(gauge: Gauge, namespace: str, name: str) -> None:
    # remove() raises KeyError for a label set never recorded; forgetting twice is fine.
    with contextlib.suppress(KeyError):
        gauge.remove(namespace, name)


def _seconds(milliseconds: int | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1000


def _dollars(amount: str | None) -> float | None:
    # Floats are fine here: a gauge is for plotting, status keeps the exact decimal string.
    return None if amount is None else float(Decimal(amount))
