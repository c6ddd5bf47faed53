"""The gateway end to end in one process: real HTTP on loopback to simulated model servers.

The catalog is fed endpoint and pod objects directly (the watch is tested on its own), pod IPs
map to fake servers through a test `Addresses`, and annotation writes land in a recording
`Annotator`. Everything else is the production code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.fakes.model_server import Behaviour, ModelServer

from tidal.api.labels import WAKE_REQUESTED_AT
from tidal.api.signals import GatewayReport
from tidal.api.wire import format_time_ms, parse_time
from tidal.gateway.config import GatewayConfig
from tidal.gateway.main import build
from tidal.gateway.proxy import Gateway
from tidal.gateway.routing import Replica
from tidal.gateway.server import make_admin_app, make_api_app, start_site

_T = TypeVar("_T")
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
TOKEN = "s3cr3t-token-value"


def run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coroutine)


def endpoint(
    name: str = "llama",
    namespace: str = "ml",
    model: str = MODEL,
    *,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"model": {"name": model}, "runtime": {"port": 8000}},
        "status": status or {},
    }


def pod(name: str, ip: str, endpoint_name: str = "llama", namespace: str = "ml") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "tidal.dev/endpoint": endpoint_name,
                "app.kubernetes.io/managed-by": "tidal",
            },
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


class TestAddresses:
    """Pod IP -> a fake server's address (the production rule would dial the pod IP)."""

    __test__ = False

    def __init__(self) -> None:
        self.by_ip: dict[str, tuple[str, int]] = {}

    def address(self, replica: Replica, port: int) -> tuple[str, int] | None:
        return self.by_ip.get(replica.ip or "")


@dataclass
class RecordingAnnotator:
    writes: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    async def annotate(self, namespace: str, name: str, annotations: Any) -> None:
        self.writes.append((namespace, name, dict(annotations)))

    def values(self, key: str) -> list[str]:
        return [a[key] for _, _, a in self.writes if key in a]


@dataclass
class Harness:
    gateway: Gateway
    addresses: TestAddresses
    annotator: RecordingAnnotator
    url: str
    admin_url: str
    session: aiohttp.ClientSession
    servers: list[ModelServer] = field(default_factory=list)

    def endpoints(self, *objects: dict[str, Any]) -> None:
        self.gateway.catalog.replace_routes(list(objects))

    async def replica(
        self, name: str, ip: str, behaviour: Behaviour | None = None, **kw: Any
    ) -> ModelServer:
        server = await ModelServer(behaviour or Behaviour(model=MODEL)).start("127.0.0.1")
        self.servers.append(server)
        self.addresses.by_ip[ip] = ("127.0.0.1", server.port)
        self.gateway.catalog.apply_replica("ADDED", pod(name, ip, **kw))
        return server

    def dead_replica(self, name: str, ip: str, port: int) -> None:
        self.addresses.by_ip[ip] = ("127.0.0.1", port)
        self.gateway.catalog.apply_replica("ADDED", pod(name, ip))

    async def post(
        self,
        body: Any,
        path: str = "/v1/chat/completions",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(self.url + path, data=data, headers=headers) as response:
            raw = await response.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw
            return response.status, dict(response.headers), parsed

    async def get(
        self, path: str, admin: bool = False, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        base = self.admin_url if admin else self.url
        async with self.session.get(base + path, headers=headers) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    def sample(self, name: str, **labels: str) -> float | None:
        return self.gateway.metrics.registry.get_sample_value(name, labels)

    async def until(self, what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def harness(**overrides: Any) -> AsyncIterator[Harness]:
    config = replace(
        GatewayConfig(
            listen_host="127.0.0.1",
            listen_port=0,
            admin_host="127.0.0.1",
            admin_port=0,
            cold_start_budget_seconds=5.0,
            connect_timeout_seconds=1.0,
            shutdown_grace_seconds=0.5,
        ),
        **overrides,
    )
    addresses = TestAddresses()
    annotator = RecordingAnnotator()
    gateway = build(config, annotator, addresses=addresses)
    gateway.catalog.replace_routes([endpoint()])
    gateway.catalog.replace_replicas([])
    await gateway.start()
    api, port = await start_site(make_api_app(gateway), "127.0.0.1", 0, shutdown_timeout=0.5)
    admin, admin_port = await start_site(
        make_admin_app(gateway), "127.0.0.1", 0, shutdown_timeout=0.5
    )
    session = aiohttp.ClientSession()
    h = Harness(
        gateway,
        addresses,
        annotator,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{admin_port}",
        session,
    )
    try:
        yield h
    finally:
        await session.close()
        gateway.stop_holding()
        await api.cleanup()
        await admin.cleanup()
        await gateway.signals.drain()
        await gateway.close()
        for server in h.servers:
            await server.stop()


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
KEY = "ml/llama"


# --- routing --------------------------------------------------------------------------------


def test_a_request_is_routed_by_model_to_a_replica_and_relayed_whole() -> None:
    async def scenario() -> None:
        async with harness() as h:
            server = await h.replica("llama-spot-1", "10.244.0.5")

            status, headers, body = await h.post({**CHAT, "max_tokens": 4})

            assert status == 200
            assert body["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3"
            assert body["usage"]["completion_tokens"] == 4
            assert headers["Content-Type"].startswith("application/json")
            assert server.requests == 1
            assert h.sample("tidal_gateway_generated_tokens_total", tidal_endpoint=KEY) == 4
            assert (
                h.sample(
                    "tidal_gateway_requests_total",
                    tidal_endpoint=KEY,
                    route="/v1/chat/completions",
                    code="200",
                )
                == 1
            )
            assert (
                h.sample(
                    "tidal_gateway_request_duration_seconds_count",
                    tidal_endpoint=KEY,
                    route="/v1/chat/completions",
                )
                == 1
            )
            # Not streamed: no first token to time.
            assert (
                h.sample("tidal_gateway_time_to_first_token_seconds_count", tidal_endpoint=KEY)
                is None
            )

    run(scenario())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 3}),
        ("/v1/embeddings", {"model": MODEL, "input": ["a", "b"]}),
    ],
)
def test_completions_and_embeddings_are_forwarded_too(path: str, body: dict[str, Any]) -> None:
    async def scenario() -> None:
        async with harness() as h:
            await h.replica("llama-spot-1", "10.244.0.5")

            status, _, answer = await h.post(body, path)

            assert status == 200
            if path == "/v1/embeddings":
                assert len(answer["data"]) == 2
                assert h.sample("tidal_gateway_generated_tokens_total", tidal_endpoint=KEY) is None
            else:
                assert answer["choices"][0]["text"] == "tok0 tok1 tok2"
                assert h.sample("tidal_gateway_generated_tokens_total", tidal_endpoint=KEY) == 3

    run(scenario())


def test_an_unknown_model_is_a_404_in_openai_shape_without_its_name_in_metrics() -> None:
    async def scenario() -> None:
        async with harness() as h:
            status, headers, body = await h.post({**CHAT, "model": "no/such-model"})

            assert status == 404
            assert headers["Content-Type"].startswith("application/json")
            assert body == {
                "error": {
                    "message": (
                        "The model 'no/such-model' does not exist: no InferenceEndpoint serves it."
                    ),
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            }
            assert h.sample("tidal_gateway_rejected_requests_total", reason="unknown_model") == 1
            exposition = (await h.get("/metrics", admin=True))[1]
            assert "no/such-model" not in exposition

    run(scenario())


def test_a_model_served_twice_is_a_409_naming_candidates_until_the_client_picks_one() -> None:
    async def scenario() -> None:
        async with harness() as h:
            h.endpoints(endpoint(), endpoint(namespace="team-b"))
            await h.replica("llama-spot-b", "10.244.1.1", namespace="team-b")

            status, _, body = await h.post(CHAT)
            picked, _, _ = await h.post(CHAT, headers={"X-Tidal-Endpoint": "team-b/llama"})
            wrong, _, _ = await h.post(CHAT, headers={"X-Tidal-Endpoint": "team-c/llama"})

            assert status == 409
            assert body["error"]["code"] == "ambiguous_model"
            assert "ml/llama, team-b/llama" in body["error"]["message"]
            assert "X-Tidal-Endpoint" in body["error"]["message"]
            assert picked == 200
            assert wrong == 404

    run(scenario())


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_request"),
        (b"[1, 2]", "invalid_request"),
        (json.dumps({"messages": []}).encode(), "invalid_request"),
        (json.dumps({"model": 7}).encode(), "invalid_request"),
    ],
)
def test_a_body_without_a_model_is_a_400(body: bytes, code: str) -> None:
    async def scenario() -> None:
        async with harness() as h:
            status, _, answer = await h.post(body)

            assert status == 400
            assert answer["error"]["code"] == code
            assert answer["error"]["param"] == "model"

    run(scenario())


def test_models_lists_every_served_model_and_finds_ids_with_slashes() -> None:
    async def scenario() -> None:
        async with harness() as h:
            h.endpoints(endpoint(), endpoint("mini", model="acme/mini"), endpoint(namespace="b"))

            status, listing = await h.get("/v1/models")
            one, entry = await h.get(f"/v1/models/{MODEL}")
            missing, error = await h.get("/v1/models/nope")

            assert status == 200
            assert listing["object"] == "list"
            assert [m["id"] for m in listing["data"]] == ["acme/mini", MODEL]
            assert listing["data"][1]["endpoints"] == ["b/llama", "ml/llama"]
            assert (one, entry["id"], entry["object"]) == (200, MODEL, "model")
            assert (missing, error["error"]["code"]) == (404, "model_not_found")

    run(scenario())


def test_unknown_paths_and_methods_answer_json_errors() -> None:
    async def scenario() -> None:
        async with harness() as h:
            status, body = await h.get("/v1/chat/completions")
            other, nothing = await h.get("/v2/whatever")

            assert status == 405
            assert body["error"]["code"] == "method_not_allowed"
            assert other == 404
            assert nothing["error"]["code"] == "not_found"

    run(scenario())


# --- streaming ------------------------------------------------------------------------------


def test_sse_is_passed_through_as_it_is_generated_not_buffered() -> None:
    async def scenario() -> None:
        async with harness() as h:
            # 5 tokens, 0.15 s apart: the whole stream takes 0.6 s after the first token.
            await h.replica(
                "llama-spot-1", "10.244.0.5", Behaviour(model=MODEL, tokens_per_second=1 / 0.15)
            )
            arrivals: list[tuple[float, bytes]] = []
            body = {**CHAT, "stream": True, "max_tokens": 5}
            started = time.monotonic()
            async with h.session.post(h.url + "/v1/chat/completions", json=body) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/event-stream")
                async for chunk in response.content.iter_any():
                    arrivals.append((time.monotonic() - started, chunk))

            text = b"".join(c for _, c in arrivals).decode()
            contents = [
                json.loads(line[6:])["choices"][0]["delta"].get("content")
                for line in text.splitlines()
                if line.startswith("data: {")
            ]
            assert contents == ["", "tok0", " tok1", " tok2", " tok3", " tok4"]
            assert text.rstrip().endswith("data: [DONE]")
            first_token = next(t for t, c in arrivals if b"tok0" in c)
            last_token = next(t for t, c in arrivals if b"tok4" in c)
            # Buffering would deliver everything at once, at the end.
            assert last_token - first_token >= 0.45
            assert first_token < 0.3
            assert (
                h.sample("tidal_gateway_time_to_first_token_seconds_count", tidal_endpoint=KEY) == 1
            )
            ttft = h.sample("tidal_gateway_time_to_first_token_seconds_sum", tidal_endpoint=KEY)
            assert ttft is not None
            assert ttft < 0.3
            assert h.sample("tidal_gateway_generated_tokens_total", tidal_endpoint=KEY) == 5

    run(scenario())


def test_stream_usage_from_the_server_wins_over_counting_chunks() -> None:
    async def scenario() -> None:
        async with harness() as h:
            await h.replica("llama-spot-1", "10.244.0.5")
            body = {
                **CHAT,
                "stream": True,
                "max_tokens": 6,
                "stream_options": {"include_usage": True},
            }

            status, _, raw = await h.post(body)

            assert status == 200
            assert b'"completion_tokens": 6' in raw
            assert h.sample("tidal_gateway_generated_tokens_total", tidal_endpoint=KEY) == 6

    run(scenario())


def test_a_client_leaving_mid_stream_stops_the_generation_upstream() -> None:
    async def scenario() -> None:
        async with harness() as h:
            server = await h.replica(
                "llama-spot-1", "10.244.0.5", Behaviour(model=MODEL, tokens_per_second=10)
            )
            body = {**CHAT, "stream": True, "max_tokens": 100}  # 10 s if read to the end
            response = await h.session.post(h.url + "/v1/chat/completions", json=body)
            await response.content.readuntil(b"tok1")
            response.close()

            await h.until("the replica to see the disconnect", lambda: server.in_flight == 0, 3)
            await h.until(
                "the gateway's in-flight count to drop",
                lambda: h.gateway.catalog.states[KEY].in_flight == 0,
                3,
            )
            assert h.sample("tidal_gateway_in_flight_requests", tidal_endpoint=KEY) == 0

    run(scenario())


# --- balancing and retries ----------------------------------------------------------------


def test_requests_go_to_the_replica_with_the_fewest_in_flight() -> None:
    async def scenario() -> None:
        async with harness() as h:
            slow = Behaviour(model=MODEL, ttft_seconds=0.5)
            a = await h.replica("llama-spot-a", "10.244.0.5", slow)
            b = await h.replica("llama-spot-b", "10.244.0.6", slow)

            results = await asyncio.gather(*(h.post(CHAT) for _ in range(6)))

            assert [r[0] for r in results] == [200] * 6
            assert (a.requests, b.requests) == (3, 3)
            assert (a.max_in_flight, b.max_in_flight) == (3, 3)

    run(scenario())


def test_a_busy_replica_is_skipped_while_an_idle_one_exists() -> None:
    async def scenario() -> None:
        async with harness() as h:
            five_per_second = Behaviour(model=MODEL, tokens_per_second=5)
            a = await h.replica("llama-spot-a", "10.244.0.5", five_per_second)
            b = await h.replica("llama-spot-b", "10.244.0.6", five_per_second)
            long = asyncio.create_task(h.post({**CHAT, "max_tokens": 5}))  # about 0.8 s
            await h.until("a long request in flight", lambda: a.in_flight + b.in_flight == 1)
            busy, idle = (a, b) if a.in_flight else (b, a)

            for _ in range(4):
                assert (await h.post({**CHAT, "max_tokens": 1}))[0] == 200  # instant

            assert idle.requests == 4
            assert busy.requests == 1
            assert busy.in_flight == 1
            await long

    run(scenario())


def test_a_refused_connection_is_retried_on_another_replica() -> None:
    async def scenario() -> None:
        async with harness() as h:
            server = await h.replica("llama-spot-live", "10.244.0.5")
            h.dead_replica("llama-spot-dead", "10.244.0.9", _closed_port())

            results = [await h.post(CHAT) for _ in range(4)]

            assert [r[0] for r in results] == [200] * 4
            assert server.requests == 4
            # The dead replica refused once, then sat out its cooldown.
            assert h.sample("tidal_gateway_upstream_retries_total", tidal_endpoint=KEY) == 1

    run(scenario())


def test_when_every_replica_refuses_the_answer_is_502() -> None:
    async def scenario() -> None:
        async with harness(max_attempts=3) as h:
            h.dead_replica("llama-spot-a", "10.244.0.8", _closed_port())
            h.dead_replica("llama-spot-b", "10.244.0.9", _closed_port())

            status, headers, body = await h.post(CHAT)

            assert status == 502
            assert body["error"]["code"] == "upstream_unavailable"
            assert "2 attempt(s)" in body["error"]["message"]
            assert "Retry-After" in headers

    run(scenario())


def test_a_replica_silent_past_the_upstream_timeout_is_a_504_not_a_replay() -> None:
    async def scenario() -> None:
        async with harness(upstream_timeout_seconds=0.2) as h:
            a = await h.replica(
                "llama-spot-a", "10.244.0.5", Behaviour(model=MODEL, ttft_seconds=1)
            )
            b = await h.replica(
                "llama-spot-b", "10.244.0.6", Behaviour(model=MODEL, ttft_seconds=1)
            )

            status, _, body = await h.post(CHAT)

            assert status == 504
            assert body["error"]["code"] == "upstream_timeout"
            assert a.requests + b.requests == 1

    run(scenario())


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- holding through a cold start ---------------------------------------------------------


def test_a_request_at_zero_replicas_asks_for_a_wake_is_held_then_forwarded() -> None:
    async def scenario() -> None:
        async with harness() as h:
            asleep = datetime.now(UTC) - timedelta(minutes=5)
            h.endpoints(endpoint(status={"scaledToZeroTime": format_time_ms(asleep)}))
            request = asyncio.create_task(h.post(CHAT))
            state = h.gateway.catalog.states[KEY]
            await h.until("the request to be held", lambda: state.held == 1)
            await h.until(
                "the wake annotation", lambda: bool(h.annotator.values(WAKE_REQUESTED_AT))
            )
            (wake,) = h.annotator.values(WAKE_REQUESTED_AT)
            woke_at = parse_time(wake)
            assert woke_at is not None
            assert woke_at > asleep
            assert h.sample("tidal_gateway_held_requests", tidal_endpoint=KEY) == 1
            _, report = await h.get("/internal/inflight", admin=True)
            assert report["endpoints"][KEY]["held"] == 1
            assert report["endpoints"][KEY]["wakeRequestedAt"] == wake
            await asyncio.sleep(0.3)
            assert not request.done()

            await h.replica("llama-spot-1", "10.244.0.5")  # the operator scaled up; it is ready
            status, _, body = await request

            assert status == 200
            assert body["choices"][0]["message"]["content"]
            assert state.held == 0
            assert (
                h.sample(
                    "tidal_gateway_cold_start_wait_seconds_count",
                    tidal_endpoint=KEY,
                    outcome="forwarded",
                )
                == 1
            )
            assert h.sample("tidal_gateway_wake_signals_total", tidal_endpoint=KEY) == 1
            # One wake per cold start, however many requests wait.
            assert len(h.annotator.values(WAKE_REQUESTED_AT)) == 1

    run(scenario())


def test_past_the_cold_start_budget_the_answer_is_503_with_retry_after() -> None:
    async def scenario() -> None:
        async with harness(cold_start_budget_seconds=0.3, retry_after_seconds=45) as h:
            started = time.monotonic()
            status, headers, body = await h.post(CHAT)
            waited = time.monotonic() - started

            assert status == 503
            assert headers["Retry-After"] == "45"
            assert body["error"]["code"] == "cold_start_timeout"
            assert body["error"]["type"] == "server_error"
            assert "ml/llama has no ready replica after waiting 0.3s" in body["error"]["message"]
            assert 0.3 <= waited < 2
            assert h.gateway.catalog.states[KEY].held == 0
            assert (
                h.sample(
                    "tidal_gateway_cold_start_wait_seconds_count",
                    tidal_endpoint=KEY,
                    outcome="timeout",
                )
                == 1
            )
            assert h.sample("tidal_gateway_held_requests", tidal_endpoint=KEY) == 0

    run(scenario())


def test_a_pending_wake_is_not_written_again() -> None:
    async def scenario() -> None:
        async with harness(cold_start_budget_seconds=0.2) as h:
            now = datetime.now(UTC)
            h.endpoints(
                endpoint(
                    annotations={WAKE_REQUESTED_AT: format_time_ms(now - timedelta(seconds=10))},
                    status={"scaledToZeroTime": format_time_ms(now - timedelta(minutes=5))},
                )
            )

            assert (await h.post(CHAT))[0] == 503
            assert h.annotator.values(WAKE_REQUESTED_AT) == []

    run(scenario())


def test_a_wake_lands_after_a_scale_to_zero_stamped_by_a_clock_ahead_of_ours() -> None:
    async def scenario() -> None:
        async with harness(cold_start_budget_seconds=0.3) as h:
            ahead = datetime.now(UTC) + timedelta(hours=1)
            h.endpoints(endpoint(status={"scaledToZeroTime": format_time_ms(ahead)}))

            await h.post(CHAT)

            (wake,) = h.annotator.values(WAKE_REQUESTED_AT)
            assert wake == format_time_ms(ahead + timedelta(milliseconds=1))

    run(scenario())


def test_holding_is_bounded_per_endpoint() -> None:
    async def scenario() -> None:
        async with harness(max_held_requests=2, cold_start_budget_seconds=2) as h:
            held = [asyncio.create_task(h.post(CHAT)) for _ in range(2)]
            state = h.gateway.catalog.states[KEY]
            await h.until("two held requests", lambda: state.held == 2)

            status, headers, body = await h.post(CHAT)

            assert status == 503
            assert body["error"]["code"] == "too_many_held_requests"
            assert "Retry-After" in headers
            await h.replica("llama-spot-1", "10.244.0.5")
            assert [r[0] for r in await asyncio.gather(*held)] == [200, 200]

    run(scenario())


def test_a_client_giving_up_on_a_held_request_frees_its_place() -> None:
    async def scenario() -> None:
        async with harness() as h:
            request = asyncio.create_task(h.post(CHAT))
            state = h.gateway.catalog.states[KEY]
            await h.until("the request to be held", lambda: state.held == 1)

            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request

            await h.until("the hold to be released", lambda: state.held == 0)
            await h.until(
                "the cancelled wait to be recorded",
                lambda: (
                    h.sample(
                        "tidal_gateway_cold_start_wait_seconds_count",
                        tidal_endpoint=KEY,
                        outcome="cancelled",
                    )
                    == 1
                ),
            )

    run(scenario())


def test_a_held_request_for_a_deleted_endpoint_is_a_404() -> None:
    async def scenario() -> None:
        async with harness() as h:
            request = asyncio.create_task(h.post(CHAT))
            await h.until("the request to be held", lambda: h.gateway.catalog.states[KEY].held == 1)

            h.gateway.catalog.apply_route("DELETED", endpoint())
            status, _, body = await request

            assert status == 404
            assert "was deleted" in body["error"]["message"]
            _, text = await h.get("/metrics", admin=True)
            assert KEY not in text  # the held request's end did not revive the series

    run(scenario())


def test_shutting_down_answers_held_requests_at_once() -> None:
    async def scenario() -> None:
        async with harness() as h:
            request = asyncio.create_task(h.post(CHAT))
            await h.until("the request to be held", lambda: h.gateway.catalog.states[KEY].held == 1)

            h.gateway.stop_holding()
            status, headers, body = await request
            ready, _ = await h.get("/readyz", admin=True)

            assert status == 503
            assert body["error"]["code"] == "gateway_shutting_down"
            assert headers["Retry-After"] == "1"
            assert ready == 503

    run(scenario())


# --- auth and limits ----------------------------------------------------------------------


def test_with_a_token_every_api_call_needs_it_and_the_engine_never_sees_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with harness(token=TOKEN) as h:
            server = await h.replica("llama-spot-1", "10.244.0.5")
            good = {"Authorization": f"Bearer {TOKEN}"}

            missing = await h.post(CHAT)
            wrong = await h.post(CHAT, headers={"Authorization": "Bearer nope"})
            basic = await h.post(CHAT, headers={"Authorization": f"Basic {TOKEN}"})
            ok = await h.post(CHAT, headers=good)
            models_without, _ = await h.get("/v1/models")
            models_with, _ = await h.get("/v1/models", headers=good)
            metrics, _ = await h.get("/metrics", admin=True)

            for status, headers, body in (missing, wrong, basic):
                assert status == 401
                assert headers["WWW-Authenticate"].startswith("Bearer")
                assert body["error"]["type"] == "authentication_error"
            assert ok[0] == 200
            assert "Authorization" not in server.last_headers
            assert (models_without, models_with, metrics) == (401, 200, 200)
            assert h.sample("tidal_gateway_rejected_requests_total", reason="unauthorized") == 4

    run(scenario())
    assert TOKEN not in caplog.text


def test_without_a_token_the_clients_authorization_reaches_the_engine() -> None:
    async def scenario() -> None:
        async with harness() as h:
            server = await h.replica("llama-spot-1", "10.244.0.5")

            await h.post(
                CHAT, headers={"Authorization": "Bearer engine-key", "X-Tidal-Endpoint": KEY}
            )

            assert server.last_headers["Authorization"] == "Bearer engine-key"
            assert "X-Tidal-Endpoint" not in server.last_headers
            assert server.last_headers["X-Forwarded-For"] == "127.0.0.1"

    run(scenario())


def test_a_body_over_the_size_limit_is_a_413() -> None:
    async def scenario() -> None:
        async with harness(max_request_bytes=1024) as h:
            server = await h.replica("llama-spot-1", "10.244.0.5")

            status, _, body = await h.post({**CHAT, "padding": "x" * 2048})
            small, _, _ = await h.post(CHAT)

            assert status == 413
            assert body["error"]["code"] == "request_too_large"
            assert small == 200
            assert server.requests == 1

    run(scenario())


# --- what the operator reads ----------------------------------------------------------------


def test_internal_inflight_reports_each_endpoint_for_the_operator() -> None:
    async def scenario() -> None:
        async with harness() as h:
            h.endpoints(endpoint(), endpoint("idle", model="acme/idle"))
            await h.replica("llama-spot-1", "10.244.0.5", Behaviour(model=MODEL, ttft_seconds=0.5))
            request = asyncio.create_task(h.post(CHAT))
            await h.until(
                "a request in flight", lambda: h.gateway.catalog.states[KEY].in_flight == 1
            )

            status, raw = await h.get("/internal/inflight", admin=True)
            report = GatewayReport.model_validate(raw)

            assert status == 200
            assert report.gateway == h.gateway.config.name
            llama = report.endpoints[KEY]
            assert (llama.in_flight, llama.held, llama.ready_replicas) == (1, 0, 1)
            assert llama.last_request_time is not None
            idle = report.endpoints["ml/idle"]
            assert (idle.in_flight, idle.ready_replicas, idle.last_request_time) == (0, 0, None)
            await request

    run(scenario())


def test_metrics_are_served_on_the_admin_port_with_the_endpoint_label() -> None:
    async def scenario() -> None:
        async with harness() as h:
            await h.replica("llama-spot-1", "10.244.0.5")
            await h.post(CHAT)

            status, text = await h.get("/metrics", admin=True)
            families = {f.name: f for f in text_string_to_metric_families(text)}

            assert status == 200
            assert {
                "tidal_gateway_requests",
                "tidal_gateway_request_duration_seconds",
                "tidal_gateway_time_to_first_token_seconds",
                "tidal_gateway_generated_tokens",
                "tidal_gateway_in_flight_requests",
                "tidal_gateway_held_requests",
                "tidal_gateway_cold_start_wait_seconds",
                "tidal_gateway_ready_replicas",
            } <= set(families)
            ready = [s for s in families["tidal_gateway_ready_replicas"].samples]
            assert [(s.labels, s.value) for s in ready] == [({"tidal_endpoint": KEY}, 1.0)]
            on_api, _ = await h.get("/metrics")
            assert on_api == 404

    run(scenario())


def test_a_deleted_endpoint_leaves_no_series_behind() -> None:
    async def scenario() -> None:
        async with harness() as h:
            await h.replica("llama-spot-1", "10.244.0.5")
            await h.post(CHAT)
            assert h.sample("tidal_gateway_generated_tokens_total", tidal_endpoint=KEY) == 8

            h.gateway.catalog.apply_route("DELETED", endpoint())

            _, text = await h.get("/metrics", admin=True)
            assert KEY not in text

    run(scenario())
