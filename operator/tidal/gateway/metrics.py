"""The gateway's Prometheus metrics: what clients experience, per endpoint.

Owns: the metric definitions (names, labels, buckets) in one registry per gateway (tests build
their own) and forgetting a deleted endpoint's series. Must not: decide anything.

Every per-endpoint series is labelled `tidal_endpoint="<namespace>/<name>"` (not `endpoint`:
Prometheus Operator's ServiceMonitors attach a target label `endpoint` (the port name), which
would rename ours to `exported_endpoint`). Labels never carry what a client typed: an unknown
model is counted without its name, so a client cannot blow up cardinality.

- `tidal_gateway_requests_total{tidal_endpoint,route,code}`: answered requests;
- `tidal_gateway_request_duration_seconds{tidal_endpoint,route}`: arrival to last byte, holding
  through a cold start included (what the client waited);
- `tidal_gateway_time_to_first_token_seconds{tidal_endpoint}`: arrival to the first SSE event
  carrying output (streaming requests only);
- `tidal_gateway_generated_tokens_total{tidal_endpoint}`: see `tokens`;
- `tidal_gateway_in_flight_requests{tidal_endpoint}`: forwarded, not finished;
- `tidal_gateway_held_requests{tidal_endpoint}`: waiting for a ready replica;
- `tidal_gateway_cold_start_wait_seconds{tidal_endpoint,outcome}`: how long held requests
  waited (outcome `forwarded`, `timeout`, `cancelled`, `deleted`);
- `tidal_gateway_ready_replicas{tidal_endpoint}`: backends this gateway routes to;
- `tidal_gateway_wake_signals_total{tidal_endpoint}`: wake annotations written;
- `tidal_gateway_upstream_retries_total{tidal_endpoint}`: connection failures retried on
  another replica;
- `tidal_gateway_rejected_requests_total{reason}`: refused before routing (`unauthorized`,
  `too_large`, `bad_request`, `unknown_model`, `ambiguous_model`);
- `tidal_gateway_annotation_errors_total{annotation}`: failed writes to the API server.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

ENDPOINT_LABEL = "tidal_endpoint"

# Seconds; from a quick embedding to a long generation held through a GPU cold start.
LATENCY_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
    60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 900.0,
)  # fmt: skip
TTFT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0,
)  # fmt: skip
COLD_START_BUCKETS = (
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    180.0,
    300.0,
    450.0,
    600.0,
    900.0,
)


class GatewayMetrics:
    """One registry with every gateway metric."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r, e = self.registry, ENDPOINT_LABEL
        self.requests = Counter(
            "tidal_gateway_requests",
            "Requests answered, by endpoint, API route and HTTP status code.",
            [e, "route", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "tidal_gateway_request_duration_seconds",
            "Request latency seen by clients (arrival to last byte; holding included).",
            [e, "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tidal_gateway_time_to_first_token_seconds",
            "Time from arrival to the first generated token of streaming requests.",
            [e],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tidal_gateway_generated_tokens",
            "Tokens generated through the gateway (usage when reported, else stream chunks).",
            [e],
            registry=r,
        )
        self.in_flight = Gauge(
            "tidal_gateway_in_flight_requests",
            "Requests forwarded to a replica and not finished.",
            [e],
            registry=r,
        )
        self.held = Gauge(
            "tidal_gateway_held_requests",
            "Requests held while the endpoint has no ready replica.",
            [e],
            registry=r,
        )
        self.cold_start_wait = Histogram(
            "tidal_gateway_cold_start_wait_seconds",
            "How long held requests waited for a ready replica, by outcome.",
            [e, "outcome"],
            buckets=COLD_START_BUCKETS,
            registry=r,
        )
        self.ready_replicas = Gauge(
            "tidal_gateway_ready_replicas",
            "Ready replicas the gateway routes to.",
            [e],
            registry=r,
        )
        self.wake_signals = Counter(
            "tidal_gateway_wake_signals",
            "Wake requests written on the InferenceEndpoint (tidal.dev/wake-requested-at).",
            [e],
            registry=r,
        )
        self.retries = Counter(
            "tidal_gateway_upstream_retries",
            "Connection failures to a replica that were retried on another one.",
            [e],
            registry=r,
        )
        self.rejected = Counter(
            "tidal_gateway_rejected_requests",
            "Requests refused before routing, by reason.",
            ["reason"],
            registry=r,
        )
        self.annotation_errors = Counter(
            "tidal_gateway_annotation_errors",
            "Failed writes of the gateway's annotations, by annotation.",
            ["annotation"],
            registry=r,
        )

    def forget(self, endpoint: str) -> None:
        """Drop a deleted endpoint's series so they do not linger at their last value."""
        for metric in (
            self.ttft,
            self.tokens,
            self.in_flight,
            self.held,
            self.ready_replicas,
            self.wake_signals,
            self.retries,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(endpoint)
        labelled: tuple[tuple[Counter | Histogram, tuple[str, ...]], ...] = (
            (self.requests, (ENDPOINT_LABEL, "route", "code")),
            (self.duration, (ENDPOINT_LABEL, "route")),
            (self.cold_start_wait, (ENDPOINT_LABEL, "outcome")),
        )
        for metric, names in labelled:
            for labels in _label_sets(metric, names):
                if labels[0] == endpoint:
                    with contextlib.suppress(KeyError):
                        metric.remove(*labels)


def _label_sets(metric: Counter | Histogram, names: tuple[str, ...]) -> list[tuple[str, ...]]:
    # prometheus_client has no public way to list a metric's children; collect() yields samples
    # whose labels we can read back.
    seen: set[tuple[str, ...]] = set()
    for family in metric.collect():
        for sample in family.samples:
            if all(n in sample.labels for n in names):
                seen.add(tuple(sample.labels[n] for n in names))
    return sorted(seen)
