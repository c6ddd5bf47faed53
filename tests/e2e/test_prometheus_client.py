"""SLO measurement end to end: simulator -> real Prometheus -> `tidal.clients.prometheus` -> slo.

The traffic simulator exports vLLM, TGI and gateway metrics with known log-normal latency and
time-to-first-token distributions and known token rates; Debian's Prometheus scrapes it every
second; the operator's reader measures over a short window. No Kubernetes cluster is involved.

Tolerances, stated: a p95 read from a histogram is linearly interpolated inside its bucket, so
even perfect data reads off the true p95 by a bias fixed by the bucket layout (computed here by
`histogram_quantile`). The measured p95 must be within 3 % of that noiseless histogram estimate
and within 10 % of the distribution's true p95; tokens per second within 5 % of the configured
rate.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.processes import free_port
from tests.e2e.prometheus import PrometheusServer, StartPrometheus
from tests.e2e.prometheus import prometheus as prometheus  # the fixture
from tests.traffic.simulator import (
    TGI_DURATION_BUCKETS,
    VLLM_E2E_BUCKETS,
    VLLM_TTFT_BUCKETS,
    LogNormal,
    Profile,
    SimulatedEndpoint,
    Simulator,
    histogram_quantile,
)
from tidal import metrics
from tidal.api.endpoint import EndpointCostStatus, EndpointSLOSpec, Engine
from tidal.clients.prometheus import PrometheusSettings, connect
from tidal.errors import TemporaryError
from tidal.slo import evaluate, transition_event
from tidal.slo.evaluation import LATENCY_ABOVE_TARGET, WITHIN_TARGETS

WINDOW_SECONDS = 12
NS = "ml"

HEALTHY = Profile(
    requests_per_second=50,
    latency=LogNormal(median_seconds=0.9, p95_seconds=1.4),
    ttft=LogNormal(median_seconds=0.15, p95_seconds=0.45),
    tokens_per_request=40,
)
# TGI's buckets are wider (x1.5 apart): this p95 sits well inside (1.68 s, 2.53 s].
TGI_PROFILE = Profile(
    requests_per_second=40,
    latency=LogNormal(median_seconds=0.92, p95_seconds=2.3),
    ttft=LogNormal(median_seconds=0.2, p95_seconds=0.5),
    tokens_per_request=50,
)
# What the gateway sees of `chat` (queueing included) differs from what its engine reports.
GATEWAY_VIEW = Profile(
    requests_per_second=30,
    latency=LogNormal(median_seconds=1.0, p95_seconds=1.9),
    ttft=LogNormal(median_seconds=0.3, p95_seconds=0.7),
    tokens_per_request=50,
)
DEGRADED = Profile(
    requests_per_second=50,
    latency=LogNormal(median_seconds=1.4, p95_seconds=2.4),
    ttft=LogNormal(median_seconds=0.15, p95_seconds=0.45),
    tokens_per_request=40,
)

LLAMA = SimulatedEndpoint(NS, "llama", "vllm", HEALTHY, pods=2)
MISTRAL = SimulatedEndpoint(NS, "mistral", "tgi", TGI_PROFILE, pods=1)
CHAT_ENGINE = SimulatedEndpoint(NS, "chat", "vllm", HEALTHY, pods=1)
CHAT_GATEWAY = SimulatedEndpoint(NS, "chat", "gateway", GATEWAY_VIEW, pods=0)
QWEN = SimulatedEndpoint(NS, "qwen", "vllm", HEALTHY, pods=1)
# A neighbour whose pods must not leak into llama's selector (llama-spot's pods start "llama-").
LLAMA_SPOT = SimulatedEndpoint(NS, "llama-spot", "vllm", DEGRADED, pods=1)


class Stack:
    def __init__(
        self, simulator: Simulator, server: PrometheusServer, operator: metrics.MetricsServer
    ) -> None:
        self.simulator = simulator
        self.server = server
        self.operator = operator
        self.reader = connect(
            PrometheusSettings(url=server.url, timeout_seconds=5, window_seconds=WINDOW_SECONDS)
        )


@pytest.fixture(scope="module")
def stack(prometheus: StartPrometheus) -> Iterator[Stack]:
    endpoints = [LLAMA, MISTRAL, CHAT_ENGINE, CHAT_GATEWAY, QWEN, LLAMA_SPOT]
    # The operator's own /metrics, scraped by the same Prometheus as a real install would.
    operator = metrics.start_metrics_server(0, addr="127.0.0.1")
    metrics.record_endpoint_cost(NS, "llama", EndpointCostStatus(hourly_usd="15.15"))
    try:
        with Simulator.running(endpoints) as simulator:
            server = prometheus([simulator.target, f"127.0.0.1:{operator.port}"])
            _wait_for_full_window(server)
            yield Stack(simulator, server, operator)
    finally:
        operator.stop()
        metrics.forget_endpoint(NS, "llama")


def _wait_for_full_window(server: PrometheusServer) -> None:
    """Until the window holds a scrape at each end (plus one, so the window is all traffic)."""
    deadline = time.monotonic() + WINDOW_SECONDS + 30
    query = f'min(count_over_time(up{{job="simulated"}}[{WINDOW_SECONDS}s]))'
    while time.monotonic() < deadline:
        result = _instant(server, query)
        if result and float(result[0]["value"][1]) >= WINDOW_SECONDS:
            time.sleep(1)
            return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus did not fill a {WINDOW_SECONDS}s window:\n{server.log()}")


def _instant(server: PrometheusServer, query: str) -> list[dict[str, Any]]:
    url = f"{server.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as response:
        result: list[dict[str, Any]] = json.load(response)["data"]["result"]
        return result


def assert_rate(measured: float | None, profile: Profile) -> None:
    assert measured is not None
    print(f"tokens/s: measured {measured:.1f}, configured {profile.tokens_per_second:.1f}")
    assert measured == pytest.approx(profile.tokens_per_second, rel=0.05)


def assert_p95(measured: float | None, dist: LogNormal, buckets: tuple[float, ...]) -> None:
    assert measured is not None
    estimate = histogram_quantile(0.95, buckets, dist)
    # Shown when an assertion fails (pytest -s shows it always): the numbers behind the verdict.
    print(f"p95: measured {measured:.4f}s, from buckets {estimate:.4f}s, true {dist.p95_seconds}s")
    assert measured == pytest.approx(estimate, rel=0.03), (measured, estimate)
    assert measured == pytest.approx(dist.p95_seconds, rel=0.10), (measured, dist.p95_seconds)


def test_vllm_p95s_and_tokens_per_second_match_the_known_distributions(stack: Stack) -> None:
    measured = stack.reader.measure(NS, "llama", Engine.VLLM)

    assert measured.source == "vllm"
    assert measured.window_seconds == WINDOW_SECONDS
    assert_p95(measured.p95_latency_seconds, HEALTHY.latency, VLLM_E2E_BUCKETS)
    assert_p95(measured.p95_time_to_first_token_seconds, HEALTHY.ttft, VLLM_TTFT_BUCKETS)
    assert_rate(measured.tokens_per_second, HEALTHY)


def test_tgi_reports_latency_and_tokens_and_no_time_to_first_token(stack: Stack) -> None:
    measured = stack.reader.measure(NS, "mistral", Engine.TGI)

    assert measured.source == "tgi"
    assert_p95(measured.p95_latency_seconds, TGI_PROFILE.latency, TGI_DURATION_BUCKETS)
    assert measured.p95_time_to_first_token_seconds is None
    assert_rate(measured.tokens_per_second, TGI_PROFILE)


def test_the_gateway_is_preferred_over_the_engine_when_it_has_series(stack: Stack) -> None:
    measured = stack.reader.measure(NS, "chat", Engine.VLLM)

    assert measured.source == "gateway"
    assert_p95(measured.p95_latency_seconds, GATEWAY_VIEW.latency, VLLM_E2E_BUCKETS)
    assert_p95(measured.p95_time_to_first_token_seconds, GATEWAY_VIEW.ttft, VLLM_TTFT_BUCKETS)
    assert_rate(measured.tokens_per_second, GATEWAY_VIEW)


def test_an_endpoint_without_series_measures_none_not_zero(stack: Stack) -> None:
    measured = stack.reader.measure(NS, "ghost", Engine.VLLM)

    assert measured.source is None
    assert measured.p95_latency_seconds is None
    assert measured.p95_time_to_first_token_seconds is None
    assert measured.tokens_per_second is None
    status, condition = evaluate(EndpointSLOSpec(p95_latency_ms=800), measured, _now())
    assert status.p95_latency_ms is None
    assert (condition.status, condition.reason) == ("Unknown", "NoData")


def test_slo_met_flips_to_false_when_the_simulated_endpoint_degrades(stack: Stack) -> None:
    slo = EndpointSLOSpec(p95_latency_ms=2000, min_tokens_per_second=1500)
    _, healthy = evaluate(slo, stack.reader.measure(NS, "qwen", Engine.VLLM), _now())
    assert (healthy.status, healthy.reason) == ("True", WITHIN_TARGETS), healthy.message

    stack.simulator.set_profile(QWEN, DEGRADED)
    time.sleep(WINDOW_SECONDS + 2)  # the window now holds degraded traffic only

    measured = stack.reader.measure(NS, "qwen", Engine.VLLM)
    assert_p95(measured.p95_latency_seconds, DEGRADED.latency, VLLM_E2E_BUCKETS)
    status, degraded = evaluate(slo, measured, _now())
    assert (degraded.status, degraded.reason) == ("False", LATENCY_ABOVE_TARGET)
    assert status.p95_latency_ms is not None
    assert status.p95_latency_ms > 2000
    event = transition_event(healthy, degraded)
    assert event is not None
    assert (event.type, event.reason) == ("Warning", "SLOMissed")


# How long the slow engine holds each /metrics reply: its newest sample reaches storage that long
# after its timestamp, so at a random instant the newest stored sample is 0.4-1.4 scrape intervals
# old, and in about a third of instants more than the 1.1 intervals past which Prometheus stops
# extrapolating a window's end. Below the 1 s scrape timeout with room for a busy machine.
SLOW_SCRAPE_SECONDS = 0.4
SLOW_LLAMA = SimulatedEndpoint(NS, "slow", "vllm", HEALTHY, pods=2)


def test_tokens_per_second_holds_at_any_instant_while_scrapes_land_late(
    prometheus: StartPrometheus,
) -> None:
    """The cause of the SLO e2e test's 11 %-low readings, reproduced on purpose: asked at the
    server's now, `rate()` read short whenever the newest scrape had not landed yet. Measured at
    instants spread over a scrape interval, every reading must hold, not just most."""
    with Simulator.running([SLOW_LLAMA], scrape_delay_seconds=SLOW_SCRAPE_SECONDS) as simulator:
        server = prometheus([simulator.target])
        _wait_for_full_window(server)
        reader = connect(PrometheusSettings(url=server.url, window_seconds=WINDOW_SECONDS))
        readings = []
        for _ in range(12):
            measured = reader.measure(NS, "slow", Engine.VLLM)
            asked = _now()
            assert measured.tokens_per_second is not None
            assert measured.window_end is not None
            readings.append((measured.tokens_per_second, (asked - measured.window_end)))
            time.sleep(0.29)  # 12 readings at phases spread over more than 3 scrape intervals
    print("tokens/s, window end's lag behind the time of asking:")
    for rate, lag in readings:
        print(f"  {rate:8.1f}  {lag.total_seconds():.2f}s")
    for rate, _ in readings:
        assert rate == pytest.approx(HEALTHY.tokens_per_second, rel=0.02)
    # Ends anchored at the newest landed scrape: never after it was asked, never a window back.
    assert all(timedelta(0) <= lag < timedelta(seconds=WINDOW_SECONDS / 2) for _, lag in readings)


def test_the_operators_own_metrics_are_scraped_by_prometheus(stack: Stack) -> None:
    result = _instant(stack.server, f'tidal_endpoint_cost_hourly_usd{{namespace="{NS}"}}')
    assert [(r["metric"]["name"], r["value"][1]) for r in result] == [("llama", "15.15")]


def test_an_unreachable_prometheus_is_a_temporary_error() -> None:
    reader = connect(PrometheusSettings(url=f"http://127.0.0.1:{free_port()}", timeout_seconds=2))
    started = time.monotonic()
    with pytest.raises(TemporaryError, match="unreachable"):
        reader.measure(NS, "llama", Engine.VLLM)
    assert time.monotonic() - started < 10


def _now() -> datetime:
    return datetime.now(UTC)
