"""One request's life in the gateway: route, hold while waking, forward, relay, measure.

Owns: `Gateway`, whose `forward` handles the OpenAI API routes (the server module mounts it)
and whose `report` answers `/internal/inflight`. Must not: parse objects (`routing`), keep the
replica view (`pool.Catalog`), or talk to the API server (`signalling`).

- **Route** by the body's `model` (`routing.resolve`): 404 `model_not_found`, 409
  `ambiguous_model` listing candidates.
- **Hold** while the endpoint has no ready backend: ask for a wake (`Signals.request_wake`) and
  wait for the catalog to change, up to `cold_start_budget_seconds` from arrival; past it, 503
  `cold_start_timeout` with `Retry-After`. At most `max_held_requests` per endpoint are held
  (503 `too_many_held_requests` beyond), so a burst at a sleeping endpoint cannot exhaust
  memory. A gateway shutting down answers its held requests 503 at once.
- **Forward** to the least-loaded backend. A connection failure before any response byte
  (refused, reset, closed, unreachable) is retried on another replica, up to `max_attempts`;
  the request is replayed, which engines handle like any new request. When every replica has
  failed, 502 `upstream_unavailable`. A replica that stays silent past
  `upstream_timeout_seconds` before answering is a 504.
- **Relay** the response as it arrives, chunk by chunk (SSE is never buffered): status and
  headers minus hop-by-hop ones, `TokenCounter` watching the bytes go by. If the client goes
  away, the upstream connection is closed so the engine stops generating.

Headers sent upstream are the client's minus hop-by-hop ones, `Host`, `Accept-Encoding` (so
the bytes relayed are the bytes counted), `X-Tidal-Endpoint`, and `Authorization` when the
gateway checked it itself (the gateway's token is not the engine's).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tidal.api.signals import EndpointReport, GatewayReport
from tidal.gateway.config import GatewayConfig, Tokens
from tidal.gateway.errors import error_response
from tidal.gateway.metrics import GatewayMetrics
from tidal.gateway.pool import Backend, Catalog, EndpointState
from tidal.gateway.routing import ENDPOINT_HEADER, Ambiguous, NotFound
from tidal.gateway.signalling import Signals
from tidal.gateway.tokens import TokenCounter

__all__ = ["API_ROUTES", "Gateway"]

log = logging.getLogger("tidal.gateway")

API_ROUTES: Final = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")

_HOP_BY_HOP: Final = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
_NOT_UPSTREAM: Final = _HOP_BY_HOP | {"host", "content-length", "accept-encoding", "expect"}
_NOT_DOWNSTREAM: Final = _HOP_BY_HOP | {"content-length", "content-encoding"}
# A held request re-checks this often even without news (shutdown, its own budget).
_HOLD_RECHECK_SECONDS: Final = 5.0


class _RefusalError(Exception):
    """Answer the client with this response instead of forwarding."""

    def __init__(self, response: web.Response, counted_as: str | None = None) -> None:
        super().__init__(response.status)
        self.response = response
        self.counted_as = counted_as


class Gateway:
    """The gateway's request handling; one per process, shared by every request."""

    def __init__(
        self,
        config: GatewayConfig,
        catalog: Catalog,
        signals: Signals,
        metrics: GatewayMetrics,
        tokens: Tokens,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.signals = signals
        self.metrics = metrics
        self.tokens = tokens
        self.monotonic = monotonic
        self.stopping = False
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=0,  # the engines and max_held_requests bound concurrency, not a pool size
            keepalive_timeout=30,
            use_dns_cache=False,  # backends are IPs
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.config.connect_timeout_seconds,
                sock_read=self.config.upstream_timeout_seconds,
            ),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stop_holding(self) -> None:
        """Shutdown: held requests give up now (503) instead of keeping a replica alive."""
        self.stopping = True
        for state in self.catalog.states.values():
            state.notify()

    # --- the OpenAI routes --------------------------------------------------------------

    async def forward(self, request: web.Request) -> web.StreamResponse:
        """Handle one POST to an API route."""
        started = self.monotonic()
        route = request.path
        try:
            state, body, streaming = await self._admit(request)
        except _RefusalError as refusal:
            if refusal.counted_as:
                self.metrics.rejected.labels(reason=refusal.counted_as).inc()
            return refusal.response
        self.signals.touch(state)
        key = state.key
        # A request cut short by the client is recorded as 499 (nginx's "client closed").
        code = "499"
        try:
            response = await self._serve(request, state, body, streaming, started)
            code = str(response.status)
            return response
        except Exception:
            code = "500"
            raise
        finally:
            self.signals.touch(state)
            if not state.deleted:  # a deleted endpoint's series are gone; do not revive them
                self.metrics.requests.labels(key, route, code).inc()
                self.metrics.duration.labels(key, route).observe(self.monotonic() - started)

    async def _admit(self, request: web.Request) -> tuple[EndpointState, bytes, bool]:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            limit = self.config.max_request_bytes
            raise _RefusalError(
                error_response(
                    413,
                    f"The request body is larger than {limit} bytes.",
                    type_="invalid_request_error",
                    code="request_too_large",
                ),
                "too_large",
            ) from None
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        model = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or not isinstance(model, str) or not model:
            raise _RefusalError(
                error_response(
                    400,
                    "The request body must be a JSON object with a string 'model'.",
                    type_="invalid_request_error",
                    code="invalid_request",
                    param="model",
                ),
                "bad_request",
            )
        found = self.catalog.resolve(model, request.headers.get(ENDPOINT_HEADER) or None)
        if isinstance(found, NotFound):
            raise _RefusalError(
                error_response(
                    404,
                    f"The model '{model}' does not exist: no InferenceEndpoint serves it.",
                    type_="invalid_request_error",
                    code="model_not_found",
                    param="model",
                ),
                "unknown_model",
            )
        if isinstance(found, Ambiguous):
            raise _RefusalError(
                error_response(
                    409,
                    f"The model '{model}' is served by several InferenceEndpoints: "
                    f"{', '.join(found.candidates)}. Choose one with the header "
                    f"'{ENDPOINT_HEADER}: <namespace>/<name>'.",
                    type_="invalid_request_error",
                    code="ambiguous_model",
                    param="model",
                ),
                "ambiguous_model",
            )
        return found, body, payload.get("stream") is True

    # --- hold and forward ---------------------------------------------------------------

    async def _serve(
        self,
        request: web.Request,
        state: EndpointState,
        body: bytes,
        streaming: bool,
        started: float,
    ) -> web.StreamResponse:
        deadline = started + self.config.cold_start_budget_seconds
        tried: set[str] = set()
        attempts = 0
        hold = _Hold(self, state)
        try:
            while True:
                if state.deleted:
                    return error_response(
                        404,
                        f"The InferenceEndpoint {state.key} was deleted.",
                        type_="invalid_request_error",
                        code="model_not_found",
                        param="model",
                    )
                backend = state.pick(tried, self.monotonic())
                if backend is None and state.backends:
                    # Every ready replica refused: holding would not help, the client may retry.
                    return self._unavailable(state, attempts)
                if backend is None:
                    refusal = self._cannot_hold(state, hold, deadline)
                    if refusal is not None:
                        return refusal
                    hold.begin()
                    self.signals.request_wake(state)
                    remaining = deadline - self.monotonic()
                    await state.changed(min(remaining, _HOLD_RECHECK_SECONDS))
                    continue
                hold.release("forwarded")
                attempts += 1
                upstream = await self._connect(request, state, backend, body, attempts)
                if isinstance(upstream, web.Response):
                    return upstream
                if upstream is None:
                    tried.add(backend.replica)
                    if attempts >= self.config.max_attempts:
                        return self._unavailable(state, attempts)
                    continue
                return await self._relay(request, state, backend, upstream, streaming, started)
        finally:
            hold.release("deleted" if state.deleted else "cancelled")

    def _unavailable(self, state: EndpointState, attempts: int) -> web.Response:
        return error_response(
            502,
            f"No replica of {state.key} accepted a connection ({attempts} attempt(s)).",
            type_="server_error",
            code="upstream_unavailable",
            headers={"Retry-After": str(self.config.retry_after_seconds)},
        )

    def _cannot_hold(
        self, state: EndpointState, hold: _Hold, deadline: float
    ) -> web.Response | None:
        """The response that ends the wait for a replica, or None to keep holding."""
        budget = self.config.cold_start_budget_seconds
        retry = {"Retry-After": str(self.config.retry_after_seconds)}
        if self.stopping:
            hold.release("cancelled")
            return error_response(
                503,
                "The gateway is shutting down; retry the request.",
                type_="server_error",
                code="gateway_shutting_down",
                headers={"Retry-After": "1"},
            )
        if self.monotonic() >= deadline:
            hold.release("timeout")
            return error_response(
                503,
                f"{state.key} has no ready replica after waiting {budget:g}s for it to start "
                "(the gateway's cold-start budget). It is scaling up; retry later.",
                type_="server_error",
                code="cold_start_timeout",
                headers=retry,
            )
        if not hold.holding and state.held >= self.config.max_held_requests:
            return error_response(
                503,
                f"{state.key} is starting and already has {state.held} requests waiting; "
                "retry later.",
                type_="server_error",
                code="too_many_held_requests",
                headers=retry,
            )
        return None

    async def _connect(
        self,
        request: web.Request,
        state: EndpointState,
        backend: Backend,
        body: bytes,
        attempt: int,
    ) -> aiohttp.ClientResponse | web.Response | None:
        """The upstream response (headers read); None after a connection failure worth
        retrying elsewhere; an error response when the replica took the request and went
        silent (replaying it elsewhere would double the work)."""
        assert self._session is not None, "Gateway.start() was not awaited"
        url = backend.url + request.rel_url.path_qs
        state.in_flight += 1
        backend.in_flight += 1
        self.metrics.in_flight.labels(state.key).inc()
        try:
            return await self._session.post(
                url, data=body, headers=_upstream_headers(request, self.tokens.enabled)
            )
        except aiohttp.SocketTimeoutError:
            self._done(state, backend)
            timeout = self.config.upstream_timeout_seconds
            log.warning(
                "Replica silent endpoint=%s replica=%s for %gs", state.key, backend.replica, timeout
            )
            return error_response(
                504,
                f"The replica {backend.replica} did not answer within {timeout:g}s.",
                type_="server_error",
                code="upstream_timeout",
            )
        except aiohttp.ClientConnectionError as exc:
            # Refused, unreachable, reset or closed before any response (ClientConnectorError,
            # ConnectionTimeoutError, ServerDisconnectedError, ClientOSError): another replica
            # may well take it.
            self._done(state, backend)
            self.catalog.failed(backend)
            if attempt < self.config.max_attempts:
                self.metrics.retries.labels(state.key).inc()
            log.warning(
                "Replica connection failed endpoint=%s replica=%s attempt=%d: %r",
                state.key,
                backend.replica,
                attempt,
                exc,
            )
            return None
        except BaseException:
            self._done(state, backend)
            raise

    async def _relay(
        self,
        request: web.Request,
        state: EndpointState,
        backend: Backend,
        upstream: aiohttp.ClientResponse,
        streaming: bool,
        started: float,
    ) -> web.StreamResponse:
        key = state.key
        sse = upstream.content_type == "text/event-stream"
        counter = TokenCounter(streaming=sse)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        _copy_headers(upstream.headers, response.headers)
        if not sse and "Content-Encoding" not in upstream.headers:
            response.content_length = upstream.content_length
        complete = False
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                if counter.feed(chunk) and not state.deleted:
                    self.metrics.ttft.labels(key).observe(self.monotonic() - started)
                await response.write(chunk)
            await response.write_eof()
            complete = True
        except ConnectionResetError:
            log.debug("Client went away endpoint=%s replica=%s", key, backend.replica)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The replica failed mid-response: the status line is gone, so the only honest
            # signal left is to cut the client's connection rather than end the body cleanly.
            log.warning(
                "Replica failed mid-response endpoint=%s replica=%s streaming=%s: %r",
                key,
                backend.replica,
                streaming,
                exc,
            )
            if request.transport is not None:
                request.transport.close()
        finally:
            if complete:
                upstream.release()
            else:
                upstream.close()  # the engine sees the disconnect and stops generating
            self._done(state, backend)
            tokens = counter.tokens()
            if tokens and not state.deleted:
                self.metrics.tokens.labels(key).inc(tokens)
        return response

    def _done(self, state: EndpointState, backend: Backend) -> None:
        state.in_flight -= 1
        backend.in_flight -= 1
        if not state.deleted:
            self.metrics.in_flight.labels(state.key).dec()

    # --- /v1/models and /internal/inflight ----------------------------------------------

    def models(self) -> list[dict[str, object]]:
        """OpenAI's model list: one entry per model id, with the endpoints serving it."""
        by_model: dict[str, list[str]] = {}
        for route in self.catalog.routes():
            by_model.setdefault(route.model, []).append(route.key)
        return [
            {
                "id": model,
                "object": "model",
                "created": 0,
                "owned_by": "tidal",
                "endpoints": sorted(keys),
            }
            for model, keys in sorted(by_model.items())
        ]

    def report(self, now: datetime | None = None) -> GatewayReport:
        """This replica's load per endpoint (`GET /internal/inflight`)."""
        now = now or datetime.now(UTC)
        endpoints = {}
        for state in self.catalog.states.values():
            self.metrics.ready_replicas.labels(state.key).set(state.ready())
            endpoints[state.key] = EndpointReport(
                in_flight=state.in_flight,
                held=state.held,
                ready_replicas=state.ready(),
                last_request_time=self.signals.activity(state),
                wake_requested_at=self.signals.pending_wake(state),
            )
        return GatewayReport(gateway=self.config.name, time=now, endpoints=endpoints)


class _Hold:
    """A request's stay in the held count, released exactly once with its outcome."""

    def __init__(self, gateway: Gateway, state: EndpointState) -> None:
        self.gateway = gateway
        self.state = state
        self.since: float | None = None

    @property
    def holding(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        if self.since is not None:
            return
        self.since = self.gateway.monotonic()
        self.state.held += 1
        self.gateway.metrics.held.labels(self.state.key).inc()
        if self.state.held == 1:
            log.info("Holding requests endpoint=%s: no ready replica", self.state.key)

    def release(self, outcome: str) -> None:
        if self.since is None:
            return
        waited = self.gateway.monotonic() - self.since
        self.since = None
        self.state.held -= 1
        if not self.state.deleted:
            metrics = self.gateway.metrics
            metrics.held.labels(self.state.key).dec()
            metrics.cold_start_wait.labels(self.state.key, outcome).observe(waited)
        if outcome == "forwarded":
            log.info("Released held request endpoint=%s after %.1fs", self.state.key, waited)


def _upstream_headers(request: web.Request, consumed_authorization: bool) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    drop = _NOT_UPSTREAM | {ENDPOINT_HEADER.lower()}
    if consumed_authorization:
        drop = drop | {"authorization"}
    for name, value in request.headers.items():
        if name.lower() not in drop:
            headers.add(name, value)
    peer = request.remote
    if peer:
        prior = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    return headers


def _copy_headers(source: CIMultiDictProxy[str], target: CIMultiDict[str]) -> None:
    for name, value in _items(source):
        if name.lower() not in _NOT_DOWNSTREAM:
            target.add(name, value)


def _items(headers: CIMultiDictProxy[str]) -> Iterable[tuple[str, str]]:
    return headers.items()
