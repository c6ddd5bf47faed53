"""The Prometheus reader: PromQL per source, source preference, no data, errors, settings.

The reader's IO seam is a query function; these tests pass one that answers from a table (and
records what was asked), so no Prometheus and no network is needed. `tests/e2e` runs the same
reader against a real Prometheus.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_api_client.exceptions import PrometheusApiClientException

from tidal.api.endpoint import Engine
from tidal.clients.prometheus import (
    DEFAULT_TEMPLATES,
    PrometheusReader,
    PrometheusSettings,
    SourceQueries,
    connect,
    load_templates,
    render_queries,
    render_scraped_until,
    render_selector,
)
from tidal.errors import PermanentError, TemporaryError
from tidal.slo import Measurement

VLLM = DEFAULT_TEMPLATES.engines[Engine.VLLM]
TGI = DEFAULT_TEMPLATES.engines[Engine.TGI]
TRITON = DEFAULT_TEMPLATES.engines[Engine.Triton]
GATEWAY = DEFAULT_TEMPLATES.gateway
PODS = r'namespace="ml",pod=~"llama-(spot|reserved)-[a-z0-9]+-[a-z0-9]+"'


def render(queries: SourceQueries, name: str = "llama", window: int = 300) -> dict[str, str | None]:
    rendered = render_queries(queries, namespace="ml", name=name, window_seconds=window)
    return {str(quantity): promql for quantity, promql in rendered.items()}


# --- PromQL ---------------------------------------------------------------------------------


def test_vllm_queries_select_the_endpoints_pods_and_aggregate_across_them() -> None:
    assert render(VLLM) == {
        "p95_latency": "histogram_quantile(0.95, sum by (le) (rate("
        f"vllm:e2e_request_latency_seconds_bucket{{{PODS}}}[300s])))",
        "p95_time_to_first_token": "histogram_quantile(0.95, sum by (le) (rate("
        f"vllm:time_to_first_token_seconds_bucket{{{PODS}}}[300s])))",
        "tokens_per_second": f"sum(rate(vllm:generation_tokens_total{{{PODS}}}[300s]))",
    }


def test_the_selector_is_what_every_query_of_a_source_puts_in_braces() -> None:
    for source in (VLLM, TGI, TRITON):
        selector = render_selector(source, namespace="ml", name="llama")
        assert selector == PODS
        for promql in render(source).values():
            # The selector opens the braces (a query may add a label of its own after it).
            assert promql is None or f"{{{selector}}}" in promql or f"{{{selector}," in promql
    assert render_selector(GATEWAY, namespace="ml", name="llama") == 'tidal_endpoint="ml/llama"'


def test_tgi_queries_use_its_duration_histogram_and_has_no_time_to_first_token() -> None:
    assert render(TGI) == {
        "p95_latency": "histogram_quantile(0.95, sum by (le) (rate("
        f"tgi_request_duration_bucket{{{PODS}}}[300s])))",
        "p95_time_to_first_token": None,
        "tokens_per_second": f"sum(rate(tgi_request_generated_tokens_sum{{{PODS}}}[300s]))",
    }


def test_triton_queries_take_the_worst_replicas_p95_summary_and_its_first_response_histogram() -> (
    None
):
    assert render(TRITON) == {
        # A summary's quantiles cannot be added across replicas: the worst one's, in seconds.
        "p95_latency": f'max(nv_inference_request_summary_us{{{PODS},quantile="0.95"}}) / 1e6',
        "p95_time_to_first_token": "histogram_quantile(0.95, sum by (le) (rate("
        f"nv_inference_first_response_histogram_ms_bucket{{{PODS}}}[300s]))) / 1e3",
        # Triton counts inferences, not tokens: unknown, never zero.
        "tokens_per_second": None,
    }
    assert render_scraped_until(TRITON, namespace="ml", name="llama") == (
        f"min(timestamp(nv_inference_request_success{{{PODS}}}))"
    )


def test_triton_is_read_from_its_own_metrics_when_the_gateway_has_none() -> None:
    prometheus = FakePrometheus(
        {
            "max(nv_inference_request_summary_us": [series("0.812")],
            "rate(nv_inference_first_response_histogram_ms_bucket": [series("0.095")],
        }
    )
    measured = PrometheusReader(prometheus).measure("ml", "resnet", Engine.Triton)
    assert measured.source == "triton"
    assert measured.p95_latency_seconds == 0.812
    assert measured.p95_time_to_first_token_seconds == 0.095
    assert measured.tokens_per_second is None


def test_gateway_queries_select_by_the_endpoint_label() -> None:
    selector = 'tidal_endpoint="ml/llama"'
    assert render(GATEWAY, window=60) == {
        "p95_latency": "histogram_quantile(0.95, sum by (le) (rate("
        f"tidal_gateway_request_duration_seconds_bucket{{{selector}}}[60s])))",
        "p95_time_to_first_token": "histogram_quantile(0.95, sum by (le) (rate("
        f"tidal_gateway_time_to_first_token_seconds_bucket{{{selector}}}[60s])))",
        "tokens_per_second": (
            f"sum(rate(tidal_gateway_generated_tokens_total{{{selector}}}[60s]))"
        ),
    }


def pod_regex(name: str) -> str:
    """The pod regex as Prometheus receives it (PromQL string escapes undone)."""
    query = render(VLLM, name=name)["tokens_per_second"]
    assert query is not None
    match = re.search(r'pod=~"((?:[^"\\]|\\.)*)"', query)
    assert match is not None
    return match.group(1).replace("\\\\", "\\")


@pytest.mark.parametrize(
    ("endpoint", "pod", "selected"),
    [
        ("llama", "llama-spot-5d8f7c9b4-x7k2p", True),
        ("llama", "llama-reserved-5d8f7c9b4-x7k2p", True),
        ("llama", "llama-spot-spot-5d8f7c9b4-x7k2p", False),  # a pod of endpoint llama-spot
        ("llama", "llama2-spot-5d8f7c9b4-x7k2p", False),
        ("llama", "llama-canary-5d8f7c9b4-x7k2p", False),
        ("llama-spot", "llama-spot-spot-5d8f7c9b4-x7k2p", True),
        ("v1.2", "v1.2-spot-5d8f7c9b4-x7k2p", True),
        ("v1.2", "v112-spot-5d8f7c9b4-x7k2p", False),  # the dot is literal
    ],
)
def test_the_pod_selector_matches_exactly_the_endpoints_own_deployments(
    endpoint: str, pod: str, selected: bool
) -> None:
    # Prometheus anchors =~ at both ends, as fullmatch does.
    assert (re.fullmatch(pod_regex(endpoint), pod) is not None) is selected


def test_label_values_are_escaped_inside_promql_strings() -> None:
    queries = load_templates("gateway: {selector: 'tidal_endpoint=\"$namespace/$name\"'}").gateway
    rendered = render_queries(queries, namespace='a"b', name="c\\d", window_seconds=5)
    assert rendered["tokens_per_second"] == (
        'sum(rate(tidal_gateway_generated_tokens_total{tidal_endpoint="a\\"b/c\\\\d"}[5s]))'
    )


def test_a_window_shorter_than_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        render(VLLM, window=0)


# --- reading --------------------------------------------------------------------------------


def series(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1_700_000_000.0, value]}


class FakePrometheus:
    """Answers queries whose text contains a key; records every query asked and its time.

    Quantity keys are given as `rate(<metric>` so they never answer the window-end query
    (`timestamp(<metric>`), which tests answer on purpose or not at all."""

    def __init__(self, answers: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.at: list[float | None] = []

    def __call__(self, promql: str, at: float | None) -> Sequence[Mapping[str, Any]]:
        self.asked.append(promql)
        self.at.append(at)
        for key, result in self.answers.items():
            if key in promql:
                return result
        return []


VLLM_ANSWERS = {
    "rate(vllm:e2e_request_latency_seconds_bucket": [series("1.234")],
    "rate(vllm:time_to_first_token_seconds_bucket": [series("0.2")],
    "rate(vllm:generation_tokens_total": [series("2000")],
}
SERVER_NOW = 1_800_000_000.0


def reader(answers: Mapping[str, Sequence[Mapping[str, Any]]]) -> PrometheusReader:
    return PrometheusReader(FakePrometheus(answers), window_seconds=120)


def test_engine_metrics_are_read_when_the_gateway_has_no_series() -> None:
    assert reader(VLLM_ANSWERS).measure("ml", "llama", Engine.VLLM) == Measurement(
        window_seconds=120,
        p95_latency_seconds=1.234,
        p95_time_to_first_token_seconds=0.2,
        tokens_per_second=2000.0,
        source="vllm",
    )


def test_the_gateway_is_preferred_and_the_engine_is_then_not_asked() -> None:
    prometheus = FakePrometheus(
        {**VLLM_ANSWERS, "rate(tidal_gateway_generated_tokens_total": [series("50")]}
    )
    measured = PrometheusReader(prometheus).measure("ml", "llama", Engine.VLLM)
    assert measured.source == "gateway"
    assert measured.tokens_per_second == 50.0
    assert measured.p95_latency_seconds is None  # the gateway measured no latency
    assert not any("vllm:" in query for query in prometheus.asked)


def test_an_endpoint_without_series_measures_none_everywhere() -> None:
    measured = reader({}).measure("ml", "ghost", Engine.VLLM)
    assert measured == Measurement(window_seconds=120)
    assert not measured.has_data


def test_nan_and_infinite_quantiles_are_no_data_not_zero() -> None:
    # Series exist but saw no requests in the window: histogram_quantile answers NaN.
    measured = reader(
        {
            "rate(vllm:e2e_request_latency_seconds_bucket": [series("NaN")],
            "rate(vllm:time_to_first_token_seconds_bucket": [series("+Inf")],
            "rate(vllm:generation_tokens_total": [series("0")],
        }
    ).measure("ml", "llama", Engine.VLLM)
    assert measured.source == "vllm"
    assert measured.p95_latency_seconds is None
    assert measured.p95_time_to_first_token_seconds is None
    assert measured.tokens_per_second == 0.0  # a counter that did not move is a measured zero


def test_several_series_add_up_for_rates_and_take_the_worst_for_quantiles() -> None:
    measured = reader(
        {
            "rate(vllm:e2e_request_latency_seconds_bucket": [series("0.5"), series("0.9")],
            "rate(vllm:generation_tokens_total": [series("10"), series("5"), series("NaN")],
        }
    ).measure("ml", "llama", Engine.VLLM)
    assert measured.p95_latency_seconds == 0.9
    assert measured.tokens_per_second == 15.0


def test_tgi_is_never_asked_for_a_time_to_first_token() -> None:
    prometheus = FakePrometheus({"rate(tgi_request_duration_bucket": [series("1.5")]})
    measured = PrometheusReader(prometheus).measure("ml", "mistral", Engine.TGI)
    assert measured.source == "tgi"
    assert measured.p95_time_to_first_token_seconds is None
    # The gateway's window end and three quantities, then TGI's window end and two quantities.
    assert len(prometheus.asked) == 1 + 3 + 1 + 2
    assert not any("time_to_first_token" in query for query in prometheus.asked[4:])


@pytest.mark.parametrize("engine", [Engine.Custom])
def test_engines_without_templates_are_measured_through_the_gateway_only(engine: Engine) -> None:
    prometheus = FakePrometheus({})
    assert PrometheusReader(prometheus).measure("ml", "x", engine).source is None
    assert all("tidal_gateway_" in query for query in prometheus.asked)


def test_the_window_can_be_chosen_per_measurement() -> None:
    prometheus = FakePrometheus(VLLM_ANSWERS)
    measured = PrometheusReader(prometheus).measure("ml", "llama", Engine.VLLM, window_seconds=30)
    assert measured.window_seconds == 30
    quantities = [query for query in prometheus.asked if "timestamp(" not in query]
    assert len(quantities) == 3 + 3  # the gateway's (no series), then the engine's
    assert all(query.count("[30s]") == 1 for query in quantities)


# --- the window's end -----------------------------------------------------------------------


def scraped_until(value: float, now: float = SERVER_NOW) -> list[dict[str, Any]]:
    """The answer to `min(timestamp(...))`: evaluated at the server's `now`, valued `value`."""
    return [{"metric": {}, "value": [now, str(value)]}]


def test_the_window_end_query_is_the_newest_sample_every_selected_series_has() -> None:
    assert render_scraped_until(VLLM, namespace="ml", name="llama") == (
        f"min(timestamp(vllm:generation_tokens_total{{{PODS}}}))"
    )
    assert render_scraped_until(TGI, namespace="ml", name="llama") == (
        f"min(timestamp(tgi_request_generated_tokens_sum{{{PODS}}}))"
    )


@pytest.mark.parametrize(
    ("lag_seconds", "window_seconds", "evaluated_lag"),
    [
        (0.0, 120, 0.0),  # the newest scrape landed this instant
        (1.7, 15, 1.7),  # a scrape in flight: the window ends at the one before it
        (29.5, 300, 29.5),  # a 30 s scrape interval, just before the next scrape
        (7.5, 15, 7.5),  # exactly half the window back: still anchored there
        (200.0, 300, 150.0),  # a series whose scrapes stopped unmarked: half the window at most
        (-3.0, 60, 0.0),  # a sample stamped in the future (skewed clock): never after now
    ],
)
def test_every_quantity_is_evaluated_at_the_newest_sample_of_all_series(
    lag_seconds: float, window_seconds: int, evaluated_lag: float
) -> None:
    prometheus = FakePrometheus(
        {**VLLM_ANSWERS, "timestamp(vllm:": scraped_until(SERVER_NOW - lag_seconds)}
    )
    measured = PrometheusReader(prometheus, window_seconds=window_seconds).measure(
        "ml", "llama", Engine.VLLM
    )
    engine = [(q, at) for q, at in zip(prometheus.asked, prometheus.at, strict=True) if "vllm" in q]
    assert engine[0] == (render_scraped_until(VLLM, namespace="ml", name="llama"), None)
    expected = SERVER_NOW - evaluated_lag
    assert [at for _, at in engine[1:]] == [expected] * 3
    assert measured.window_end == datetime.fromtimestamp(expected, UTC)
    assert measured.tokens_per_second == 2000.0


@pytest.mark.parametrize(
    "answer",
    [
        [],  # no series of the counter (yet)
        [{"metric": {}, "value": [SERVER_NOW, "NaN"]}],
        [{"metric": {}}],  # unreadable: measured at the server's now rather than not at all
    ],
)
def test_without_a_window_end_the_quantities_are_evaluated_at_the_servers_now(
    answer: list[dict[str, Any]],
) -> None:
    prometheus = FakePrometheus({**VLLM_ANSWERS, "timestamp(vllm:": answer})
    measured = PrometheusReader(prometheus).measure("ml", "llama", Engine.VLLM)
    assert measured.tokens_per_second == 2000.0
    assert measured.window_end is None
    assert set(prometheus.at) == {None}


def test_an_override_can_turn_the_window_end_query_off() -> None:
    templates = load_templates("engines: {VLLM: {scrapedUntil: null}}")
    assert templates.engines[Engine.VLLM].scraped_until is None
    assert templates.gateway.scraped_until == GATEWAY.scraped_until
    prometheus = FakePrometheus(VLLM_ANSWERS)
    PrometheusReader(prometheus, templates=templates).measure("ml", "llama", Engine.VLLM)
    assert not any("timestamp(vllm" in query for query in prometheus.asked)


# --- errors ---------------------------------------------------------------------------------


def failing(exc: Exception) -> PrometheusReader:
    def query(_promql: str, _at: float | None) -> Sequence[Mapping[str, Any]]:
        raise exc

    return PrometheusReader(query, describe="Prometheus at http://prom:9090")


@pytest.mark.parametrize(
    "exc",
    [
        requests.ConnectionError("Connection refused"),
        requests.ReadTimeout("read timed out"),
        requests.exceptions.RetryError("too many 503 error responses"),
    ],
)
def test_connection_failures_are_temporary_errors_with_the_cause_chained(exc: Exception) -> None:
    with pytest.raises(
        TemporaryError, match="Prometheus at http://prom:9090 is unreachable"
    ) as raised:
        failing(exc).measure("ml", "llama", Engine.VLLM)
    assert raised.value.__cause__ is exc
    assert raised.value.delay > 0


def test_a_rejected_query_is_a_permanent_error() -> None:
    exc = PrometheusApiClientException("HTTP Status Code 400 (b'bad_data: parse error')")
    with pytest.raises(PermanentError, match="rejected") as raised:
        failing(exc).measure("ml", "llama", Engine.VLLM)
    assert not isinstance(raised.value, TemporaryError)


@pytest.mark.parametrize("status", [429, 503])
def test_an_overloaded_prometheus_is_a_temporary_error(status: int) -> None:
    exc = PrometheusApiClientException(f"HTTP Status Code {status} (b'busy')")
    with pytest.raises(TemporaryError, match="failed to answer"):
        failing(exc).measure("ml", "llama", Engine.VLLM)


def test_an_unreadable_answer_is_a_temporary_error() -> None:
    with pytest.raises(TemporaryError, match="unreadable answer"):
        failing(KeyError("data")).measure("ml", "llama", Engine.VLLM)


# --- template overrides ---------------------------------------------------------------------


def test_an_override_replaces_only_the_keys_it_names() -> None:
    templates = load_templates(
        """
        gateway:
          selector: 'exported_tidal_endpoint="$namespace/$name"'
        engines:
          VLLM:
            p95TimeToFirstTokenSeconds: null
        """
    )
    assert templates.gateway.selector == 'exported_tidal_endpoint="$namespace/$name"'
    assert templates.gateway.p95_latency == GATEWAY.p95_latency
    assert templates.engines[Engine.VLLM].p95_time_to_first_token is None
    assert templates.engines[Engine.VLLM].p95_latency == VLLM.p95_latency
    assert templates.engines[Engine.TGI] == TGI


def test_a_new_engine_can_be_configured_with_its_own_selector_and_queries() -> None:
    templates = load_templates(
        """
        engines:
          Custom:
            selector: 'namespace="$namespace",pod=~"$pods"'
            tokensPerSecond: 'sum(rate(my_tokens_total{$selector}[$window]))'
        """
    )
    rendered = render(templates.engines[Engine.Custom])
    assert rendered["tokens_per_second"] == f"sum(rate(my_tokens_total{{{PODS}}}[300s]))"
    assert rendered["p95_latency"] is None


def test_an_engine_backend_that_counts_tokens_can_be_named_for_triton() -> None:
    templates = load_templates(
        """
        engines:
          Triton:
            tokensPerSecond: 'sum(rate(vllm:generation_tokens_total{$selector}[$window]))'
        """
    )
    rendered = render(templates.engines[Engine.Triton])
    assert rendered["tokens_per_second"] == (
        f"sum(rate(vllm:generation_tokens_total{{{PODS}}}[300s]))"
    )
    assert rendered["p95_latency"] == render(TRITON)["p95_latency"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("engines: {VLLM: {p95Latency: x}}", "engines.VLLM.p95Latency: Extra inputs"),
        ("engines: {Ollama: {selector: x}}", "engines.Ollama.[key]: Input should be"),
        ("engines: {Custom: {tokensPerSecond: x}}", "engines.Custom.selector: is required"),
        ("gateway: {selector: 'tidal_endpoint=\"$endpoint\"'}", "gateway: bad placeholder"),
        ("engines: {TGI: {tokensPerSecond: 'rate(x[$windw])'}}", "engines.TGI: bad placeholder"),
        ("engines: {TGI: {scrapedUntil: 'timestamp(x[$window])'}}", "engines.TGI: bad placeholder"),
        ("engines: [", "not valid YAML"),
    ],
)
def test_a_bad_override_file_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(PermanentError) as raised:
        load_templates(text)
    assert message in str(raised.value)


# --- settings -------------------------------------------------------------------------------


def test_settings_default_to_no_prometheus_a_five_second_timeout_and_a_five_minute_window() -> None:
    assert PrometheusSettings.from_env({}) == PrometheusSettings(
        url=None, timeout_seconds=5.0, window_seconds=300, templates=DEFAULT_TEMPLATES
    )


def test_settings_are_read_from_the_environment(tmp_path: Path) -> None:
    queries = tmp_path / "queries.yaml"
    queries.write_text("engines: {VLLM: {p95TimeToFirstTokenSeconds: null}}")
    settings = PrometheusSettings.from_env(
        {
            "TIDAL_PROMETHEUS_URL": "http://prometheus.monitoring:9090/",
            "TIDAL_PROMETHEUS_TIMEOUT_SECONDS": "2.5",
            "TIDAL_SLO_WINDOW_SECONDS": "600",
            "TIDAL_PROMETHEUS_QUERIES": str(queries),
        }
    )
    assert settings.url == "http://prometheus.monitoring:9090"
    assert settings.timeout_seconds == 2.5
    assert settings.window_seconds == 600
    assert settings.templates.engines[Engine.VLLM].p95_time_to_first_token is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIDAL_PROMETHEUS_URL": "prometheus:9090"}, "must be an http(s) URL"),
        ({"TIDAL_PROMETHEUS_TIMEOUT_SECONDS": "soon"}, "must be a number"),
        ({"TIDAL_SLO_WINDOW_SECONDS": "0"}, "must be positive"),
        ({"TIDAL_SLO_WINDOW_SECONDS": "nan"}, "must be positive"),
        ({"TIDAL_PROMETHEUS_QUERIES": "/nonexistent/queries.yaml"}, "cannot read"),
    ],
)
def test_bad_settings_fail_loudly_instead_of_falling_back(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(PermanentError) as raised:
        PrometheusSettings.from_env(env)
    assert message in str(raised.value)


def test_without_a_url_the_reader_measures_nothing_and_sends_nothing() -> None:
    measured = connect(PrometheusSettings(window_seconds=60)).measure("ml", "llama", Engine.VLLM)
    assert measured == Measurement(window_seconds=60)
