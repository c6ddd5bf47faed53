"""Prometheus access for SLO measurement: the only module that imports prometheus_api_client.

It owns the PromQL that turns an endpoint's metrics into a `tidal.slo.Measurement` (p95 latency,
p95 time to first token, generated tokens per second over a window), the per-source query
templates and their overrides, the connection settings, and the translation of every failure into
`tidal.errors`. It decides nothing about SLOs: `tidal.slo` judges what this module measured.

Sources, in order of preference:

1. Tidal's gateway (`tidal_gateway_*`, label `tidal_endpoint="<namespace>/<name>"`; not
   `endpoint`, which Prometheus Operator's scrape configs set to the port name and would rename
   ours to `exported_endpoint`): it sees what clients see, queueing and wake-from-zero
   included. Used whenever it has series for the endpoint.
2. The engine's own metrics, selected by namespace and the pod names of the endpoint's two
   Deployments (`<name>-spot-…`, `<name>-reserved-…`): vLLM (`vllm:*`), TGI (`tgi_*`) or Triton
   (`nv_inference_*`). TGI exports no time-to-first-token metric and Triton no token count, so
   those report as unknown, never as zero.

Every quantity of one measurement is evaluated at one instant, the window's end: the newest
sample that *every* selected series already has (`scrapedUntil`, by default
`min(timestamp(<counter>{$selector}))`), not the moment of asking. Asked at "now", `rate()` reads
up to a scrape interval short whenever the newest scrape is still in flight or a little late:
Prometheus extrapolates a window's end only when the last sample is within 1.1 average sample
intervals of it, and otherwise by half an interval, so a 15 s window scraped every second read
11 % low on a busy machine and a 300 s window scraped every 30 s can read 10 % low. Anchored at
the newest common sample, the end needs no extrapolation and the start (where the first sample
is less than an interval in) extrapolates fully. The anchor is never further back than half the
window (a series whose scrapes stopped without a staleness marker must not freeze the window);
without an anchor (no series, or a template override set to null) the server's now is used.
The instant is returned as `Measurement.window_end`, which status reports as `evaluatedTime`.

No data is not zero: an empty result (no series) and NaN (series, but no requests in the window)
both become `None`. A counter that exists but did not move is a measured `0.0` tokens/s.

Templates are `string.Template` strings (PromQL itself uses braces, so placeholders are `$name`):
`$selector` (the source's series selector, itself a template), `$window` (e.g. `300s`),
`$namespace`, `$name`, `$pods` (an anchored regex of the endpoint's pod names). Override any of
them with a YAML file named by `TIDAL_PROMETHEUS_QUERIES` (see `load_templates`).

Error tree (nothing else leaves this module)::

    TemporaryError   Prometheus unreachable, timed out, answered 5xx/429, or sent garbage
    PermanentError   Prometheus rejected the query (4xx: a bad template), or bad settings

Every call is blocking (requests underneath): call it from a sync handler or through
`asyncio.to_thread`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any, Final, Literal

import yaml
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from urllib3.util.retry import Retry

from tidal.api.endpoint import Engine
from tidal.errors import PermanentError, TemporaryError
from tidal.slo.measurement import Measurement

__all__ = [
    "DEFAULT_TEMPLATES",
    "GATEWAY_SOURCE",
    "PrometheusReader",
    "PrometheusSettings",
    "QueryFn",
    "QueryTemplates",
    "SourceQueries",
    "connect",
    "load_templates",
    "render_queries",
    "render_scraped_until",
    "render_selector",
]

QueryFn = Callable[[str, float | None], Sequence[Mapping[str, Any]]]
"""Runs one instant PromQL query at a Unix time (None: the server's now) and returns the API's
`data.result` list (the IO seam)."""

GATEWAY_SOURCE: Final = "gateway"
DEFAULT_WINDOW_SECONDS: Final = 300
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
# Seconds a controller should wait before retrying after Prometheus was unreachable.
RETRY_DELAY_SECONDS: Final = 30.0

Quantity = Literal["p95_latency", "p95_time_to_first_token", "tokens_per_second"]
# The window's end is never anchored further back than this share of the window.
_MAX_ANCHOR_LAG_SHARE: Final = 0.5
_QUANTITIES: Final[tuple[Quantity, ...]] = (
    "p95_latency",
    "p95_time_to_first_token",
    "tokens_per_second",
)


@dataclasses.dataclass(frozen=True)
class SourceQueries:
    """The PromQL templates of one metric source; None: the source does not measure it.

    `scraped_until` answers the Unix time up to which every selected series has been scraped
    (the instant the quantities are evaluated at); None evaluates them at the server's now.
    """

    selector: str
    p95_latency: str | None
    p95_time_to_first_token: str | None
    tokens_per_second: str | None
    scraped_until: str | None = None


def _p95(bucket: str) -> str:
    return f"histogram_quantile(0.95, sum by (le) (rate({bucket}{{$selector}}[$window])))"


def _rate(counter: str) -> str:
    return f"sum(rate({counter}{{$selector}}[$window]))"


def _scraped_until(counter: str) -> str:
    return f"min(timestamp({counter}{{$selector}}))"


_POD_SELECTOR: Final = 'namespace="$namespace",pod=~"$pods"'


@dataclasses.dataclass(frozen=True)
class QueryTemplates:
    """Templates for the gateway and for each engine (keyed by `spec.runtime.engine`)."""

    gateway: SourceQueries
    engines: Mapping[Engine, SourceQueries]


DEFAULT_TEMPLATES: Final = QueryTemplates(
    gateway=SourceQueries(
        selector='tidal_endpoint="$namespace/$name"',
        p95_latency=_p95("tidal_gateway_request_duration_seconds_bucket"),
        p95_time_to_first_token=_p95("tidal_gateway_time_to_first_token_seconds_bucket"),
        tokens_per_second=_rate("tidal_gateway_generated_tokens_total"),
        scraped_until=_scraped_until("tidal_gateway_generated_tokens_total"),
    ),
    engines={
        Engine.VLLM: SourceQueries(
            selector=_POD_SELECTOR,
            p95_latency=_p95("vllm:e2e_request_latency_seconds_bucket"),
            p95_time_to_first_token=_p95("vllm:time_to_first_token_seconds_bucket"),
            tokens_per_second=_rate("vllm:generation_tokens_total"),
            scraped_until=_scraped_until("vllm:generation_tokens_total"),
        ),
        # TGI's router: tgi_request_duration is end-to-end latency; tgi_request_generated_tokens
        # is a histogram of tokens per request, so its _sum counts every generated token.
        Engine.TGI: SourceQueries(
            selector=_POD_SELECTOR,
            p95_latency=_p95("tgi_request_duration_bucket"),
            p95_time_to_first_token=None,
            tokens_per_second=_rate("tgi_request_generated_tokens_sum"),
            scraped_until=_scraped_until("tgi_request_generated_tokens_sum"),
        ),
        # Triton (its metrics server, port 8002; Tidal starts it with
        # `--metrics-config=summary_latencies=true` and `histogram_latencies=true`). Its request
        # latency is a summary, whose quantiles cannot be added across replicas: the p95 is the
        # worst replica's, over Triton's own sliding window. Time to first response is a
        # histogram (ms). Triton counts inferences, not tokens: tokens per second is unknown
        # (a backend that exports them, e.g. vLLM's `vllm:*`, can be named by an override).
        Engine.Triton: SourceQueries(
            selector=_POD_SELECTOR,
            p95_latency=('max(nv_inference_request_summary_us{$selector,quantile="0.95"}) / 1e6'),
            p95_time_to_first_token=(
                "histogram_quantile(0.95, sum by (le) "
                "(rate(nv_inference_first_response_histogram_ms_bucket{$selector}[$window])))"
                " / 1e3"
            ),
            tokens_per_second=None,
            scraped_until=_scraped_until("nv_inference_request_success"),
        ),
    },
)


# --- template overrides --------------------------------------------------------------------


class _Override(BaseModel):
    """One source's overrides in the YAML file; a key left out keeps the default, null drops it."""

    model_config = ConfigDict(extra="forbid")

    selector: str | None = None
    p95_latency: str | None = Field(default=None, alias="p95LatencySeconds")
    p95_time_to_first_token: str | None = Field(default=None, alias="p95TimeToFirstTokenSeconds")
    tokens_per_second: str | None = Field(default=None, alias="tokensPerSecond")
    scraped_until: str | None = Field(default=None, alias="scrapedUntil")


class _OverrideFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gateway: _Override | None = None
    engines: dict[Engine, _Override] = {}


def load_templates(text: str, base: QueryTemplates = DEFAULT_TEMPLATES) -> QueryTemplates:
    """`base` with the overrides in `text` applied, or `PermanentError` naming the bad key.

    The file (YAML)::

        gateway:                     # optional; same keys as an engine
          selector: 'tidal_endpoint="$namespace/$name",job="tidal-gateway"'
        engines:
          VLLM:
            selector: 'namespace="$namespace",pod=~"$pods"'
            p95LatencySeconds: 'histogram_quantile(0.95, ...)'
            p95TimeToFirstTokenSeconds: null      # null: this source does not measure it
            tokensPerSecond: 'sum(rate(...[$window]))'
            scrapedUntil: 'min(timestamp(...{$selector}))'  # null: evaluate at the server's now
          Triton: {...}              # a new engine needs a selector and its queries
    """
    try:
        raw = yaml.safe_load(text) or {}
        parsed = _OverrideFile.model_validate(raw)
    except yaml.YAMLError as exc:
        raise PermanentError(f"Prometheus query templates are not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            ".".join(str(p) for p in error["loc"]) + f": {error['msg']}" for error in exc.errors()
        )
        raise PermanentError(f"Prometheus query templates are invalid: {problems}") from exc

    gateway = _merge("gateway", base.gateway, parsed.gateway)
    engines = dict(base.engines)
    for engine, override in parsed.engines.items():
        engines[engine] = _merge(f"engines.{engine}", engines.get(engine), override)
    templates = QueryTemplates(gateway=gateway, engines=engines)
    _check(templates)
    return templates


def _merge(path: str, base: SourceQueries | None, override: _Override | None) -> SourceQueries:
    if override is None:
        if base is None:  # pragma: no cover - only reached with a new engine and no override
            raise PermanentError(f"{path}: no templates")
        return base
    given = override.model_dump(exclude_unset=True, by_alias=False)
    selector = given.get("selector", base.selector if base else None)
    if selector is None:
        raise PermanentError(f"{path}.selector: is required for an engine without defaults")
    values: dict[str, str | None] = {
        field: getattr(base, field) if base else None for field in _QUANTITIES
    }
    for field in _QUANTITIES:
        if field in given:
            values[field] = given[field]
    return SourceQueries(
        selector=selector,
        p95_latency=values["p95_latency"],
        p95_time_to_first_token=values["p95_time_to_first_token"],
        tokens_per_second=values["tokens_per_second"],
        scraped_until=given.get("scraped_until", base.scraped_until if base else None),
    )


def _check(templates: QueryTemplates) -> None:
    """Render every template once so a misspelt placeholder fails at startup, not per query."""
    sources = {"gateway": templates.gateway} | {
        f"engines.{engine}": queries for engine, queries in templates.engines.items()
    }
    for path, queries in sources.items():
        try:
            render_queries(queries, namespace="ns", name="n", window_seconds=60)
            render_scraped_until(queries, namespace="ns", name="n")
        except (KeyError, ValueError) as exc:
            raise PermanentError(f"{path}: bad placeholder in template: {exc}") from exc


# --- rendering -----------------------------------------------------------------------------


def render_queries(
    queries: SourceQueries, *, namespace: str, name: str, window_seconds: int
) -> dict[Quantity, str | None]:
    """The PromQL of each quantity for one endpoint (None where the source has no query)."""
    if window_seconds < 1:
        raise ValueError(f"window_seconds must be at least 1, got {window_seconds}")
    values = _placeholders(queries, namespace, name) | {"window": f"{window_seconds}s"}
    return {quantity: _substitute(getattr(queries, quantity), values) for quantity in _QUANTITIES}


def render_scraped_until(queries: SourceQueries, *, namespace: str, name: str) -> str | None:
    """The PromQL of the window's end for one endpoint (None: evaluate at the server's now)."""
    return _substitute(queries.scraped_until, _placeholders(queries, namespace, name))


def render_selector(queries: SourceQueries, *, namespace: str, name: str) -> str:
    """The source's series selector for one endpoint: the label matchers every one of its
    queries puts in braces (what a scrape must give the series for the queries to find them)."""
    return _placeholders(queries, namespace, name)["selector"]


def _placeholders(queries: SourceQueries, namespace: str, name: str) -> dict[str, str]:
    values = {
        "namespace": _string_literal(namespace),
        "name": _string_literal(name),
        "pods": _string_literal(_pod_regex(name)),
    }
    return values | {"selector": Template(queries.selector).substitute(values)}


def _substitute(template: str | None, values: Mapping[str, str]) -> str | None:
    return None if template is None else Template(template).substitute(values)


def _pod_regex(name: str) -> str:
    # Pods of the Deployments <name>-spot and <name>-reserved: <deployment>-<rs hash>-<suffix>.
    # Hash and suffix have no dashes, so endpoint `a` never matches the pods of `a-spot`.
    return re.escape(name) + "-(spot|reserved)-[a-z0-9]+-[a-z0-9]+"


def _string_literal(value: str) -> str:
    """`value` escaped for a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


# --- reading -------------------------------------------------------------------------------


class PrometheusReader:
    """Measures endpoints through `query`, one instant query per quantity.

    `query` is the IO seam: `connect` passes the real client's; tests pass a function.
    """

    def __init__(
        self,
        query: QueryFn,
        *,
        templates: QueryTemplates = DEFAULT_TEMPLATES,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
        describe: str = "Prometheus",
    ) -> None:
        self._query = query
        self._templates = templates
        self._window_seconds = window_seconds
        self._describe = describe

    @property
    def window_seconds(self) -> int:
        return self._window_seconds

    def measure(
        self, namespace: str, name: str, engine: Engine, *, window_seconds: int | None = None
    ) -> Measurement:
        """p95 latency, p95 TTFT and tokens/s of endpoint `namespace/name` over the window.

        The gateway's metrics win when it has any series for the endpoint; otherwise the
        engine's. An engine without templates (Triton, Custom unless configured) and an endpoint
        without series measure as all-None with `source=None`.
        """
        window = window_seconds or self._window_seconds
        gateway = self._read(self._templates.gateway, namespace, name, window)
        if gateway is not None:
            return dataclasses.replace(gateway, source=GATEWAY_SOURCE)
        queries = self._templates.engines.get(engine)
        if queries is not None:
            measured = self._read(queries, namespace, name, window)
            if measured is not None:
                return dataclasses.replace(measured, source=engine.value.lower())
        return Measurement(window_seconds=window)

    def _read(
        self, queries: SourceQueries, namespace: str, name: str, window: int
    ) -> Measurement | None:
        """The source's measurement, or None when it has no series for this endpoint at all."""
        at = self._window_end(queries, namespace, name, window)
        rendered = render_queries(queries, namespace=namespace, name=name, window_seconds=window)
        found = False
        values: dict[Quantity, float | None] = {}
        for quantity, promql in rendered.items():
            if promql is None:
                values[quantity] = None
                continue
            result = self._run(promql, at)
            found = found or bool(result)
            values[quantity] = _value(result, total=quantity == "tokens_per_second")
        if not found:
            return None
        return Measurement(
            window_seconds=window,
            p95_latency_seconds=values["p95_latency"],
            p95_time_to_first_token_seconds=values["p95_time_to_first_token"],
            tokens_per_second=values["tokens_per_second"],
            window_end=None if at is None else datetime.fromtimestamp(at, UTC),
        )

    def _window_end(
        self, queries: SourceQueries, namespace: str, name: str, window: int
    ) -> float | None:
        """The Unix time up to which every series of the source has been scraped, at most half
        the window back from the server's now; None when unknown (evaluate at the server's now).
        """
        promql = render_scraped_until(queries, namespace=namespace, name=name)
        if promql is None:
            return None
        result = self._run(promql, None)
        try:
            server_now, scraped = (float(v) for v in result[0]["value"])
        except (IndexError, KeyError, TypeError, ValueError):
            return None
        if not (math.isfinite(server_now) and math.isfinite(scraped)):
            return None
        return min(server_now, max(scraped, server_now - window * _MAX_ANCHOR_LAG_SHARE))

    def _run(self, promql: str, at: float | None) -> Sequence[Mapping[str, Any]]:
        try:
            return self._query(promql, at)
        # requests' RequestException (connection refused, timeout, retries exhausted) is an OSError.
        except OSError as exc:
            raise TemporaryError(
                f"{self._describe} is unreachable: {exc}", delay=RETRY_DELAY_SECONDS
            ) from exc
        except PrometheusApiClientException as exc:
            status = _http_status(str(exc))
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                raise PermanentError(f"{self._describe} rejected {promql!r}: {exc}") from exc
            raise TemporaryError(
                f"{self._describe} failed to answer {promql!r}: {exc}", delay=RETRY_DELAY_SECONDS
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise TemporaryError(
                f"{self._describe} sent an unreadable answer to {promql!r}: {exc!r}",
                delay=RETRY_DELAY_SECONDS,
            ) from exc


def _value(result: Sequence[Mapping[str, Any]], *, total: bool) -> float | None:
    """One number from an instant-vector result; None for no series or only NaN/Inf samples.

    Templates are meant to return one series. If a custom one returns several, rates add up and
    quantiles take the worst, which never hides a slow replica.
    """
    numbers = []
    for series in result:
        try:
            number = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isfinite(number) and number >= 0:
            numbers.append(number)
    if not numbers:
        return None
    return sum(numbers) if total else max(numbers)


def _http_status(message: str) -> int | None:
    # prometheus_api_client reports a non-200 answer only as text: "HTTP Status Code 400 (...)".
    match = re.match(r"HTTP Status Code (\d{3})", message)
    return int(match.group(1)) if match else None


# --- settings and connection ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PrometheusSettings:
    """Where Prometheus is and how to ask it; read from the environment by `from_env`."""

    url: str | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    window_seconds: int = DEFAULT_WINDOW_SECONDS
    templates: QueryTemplates = DEFAULT_TEMPLATES

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> PrometheusSettings:
        """Settings from `TIDAL_PROMETHEUS_*` and `TIDAL_SLO_WINDOW_SECONDS`.

        - `TIDAL_PROMETHEUS_URL`: e.g. `http://prometheus.monitoring:9090`; unset means
          no measurements (SLOs report NoData).
        - `TIDAL_PROMETHEUS_TIMEOUT_SECONDS`: per query, default 5.
        - `TIDAL_SLO_WINDOW_SECONDS`: the measurement window, default 300.
        - `TIDAL_PROMETHEUS_QUERIES`: path of a YAML file of template overrides.

        A value that does not parse raises `PermanentError`: a misconfigured operator should
        fail at startup, not measure silently with defaults.
        """
        url = env.get("TIDAL_PROMETHEUS_URL", "").strip() or None
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise PermanentError(f"TIDAL_PROMETHEUS_URL must be an http(s) URL, got {url!r}")
        timeout = _positive(env, "TIDAL_PROMETHEUS_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS)
        window = int(_positive(env, "TIDAL_SLO_WINDOW_SECONDS", DEFAULT_WINDOW_SECONDS))
        templates = DEFAULT_TEMPLATES
        path = env.get("TIDAL_PROMETHEUS_QUERIES", "").strip()
        if path:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise PermanentError(
                    f"TIDAL_PROMETHEUS_QUERIES: cannot read {path}: {exc}"
                ) from exc
            templates = load_templates(text)
        return cls(
            url=url.rstrip("/") if url else None,
            timeout_seconds=timeout,
            window_seconds=window,
            templates=templates,
        )


def _positive(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise PermanentError(f"{key} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise PermanentError(f"{key} must be positive, got {raw!r}")
    return value


def connect(settings: PrometheusSettings) -> PrometheusReader:
    """A reader for `settings.url`; without a URL, one that measures nothing (all None).

    Nothing is sent until the first `measure`: the operator starts even while Prometheus is down.
    """
    if settings.url is None:
        return PrometheusReader(
            _no_prometheus,
            templates=settings.templates,
            window_seconds=settings.window_seconds,
            describe="Prometheus (not configured)",
        )
    client = PrometheusConnect(
        url=settings.url,
        # Annotated `int` upstream, but handed straight to requests, which takes seconds as float.
        timeout=settings.timeout_seconds,  # type: ignore[arg-type]
        # One quick retry for a dropped connection or a busy server; the reconcile timer is the
        # real retry loop, and a handler must not block for long.
        retry=Retry(
            total=1,
            backoff_factor=0.2,
            status_forcelist=(502, 503, 504),
            allowed_methods=("GET", "POST"),
        ),
    )
    # Prometheus also stops evaluating at this bound, so a heavy query cannot pile up server-side.
    params = {"timeout": f"{settings.timeout_seconds:g}s"}

    def query(promql: str, at: float | None) -> Sequence[Mapping[str, Any]]:
        asked = dict(params) if at is None else params | {"time": f"{at:.3f}"}
        result = client.custom_query(promql, params=asked)
        if not isinstance(result, list):
            raise TypeError(f"expected a result list, got {type(result).__name__}")
        return result

    return PrometheusReader(
        query,
        templates=settings.templates,
        window_seconds=settings.window_seconds,
        describe=f"Prometheus at {settings.url}",
    )


def _no_prometheus(_promql: str, _at: float | None) -> Sequence[Mapping[str, Any]]:
    return []
