"""A simulated OpenAI-compatible model server: tokens at a set rate after a set latency.

It answers what Tidal's gateway forwards, the way vLLM's OpenAI server does:

- `POST /v1/chat/completions` and `/v1/completions`: `max_tokens` (default
  `Behaviour.tokens`) tokens, the first after `ttft_seconds`, then one every
  1/`tokens_per_second`. With `"stream": true`, Server-Sent Events: an opening role-only chunk
  (as vLLM sends), one chunk per token, a usage chunk when `stream_options.include_usage`, then
  `data: [DONE]`. Without, one JSON body with `usage` once every token is "generated".
- `POST /v1/embeddings`: a small vector per input after `ttft_seconds`; usage without
  completion tokens.
- `GET /v1/models`, `GET /health`.
- `GET /fake/stats`: requests seen, in flight now, most in flight at once, and the headers of
  the last request, so tests can tell which replica served what.

Tokens are the words `tok0 tok1 ...`, so a test can check a stream arrived whole and in order.

Three ways to run it:
- in a test's own event loop: `server = await ModelServer(Behaviour(...)).start("127.0.0.1")`;
- from synchronous code (the e2e fixture, the benchmark): `ServerThread` runs servers on an
  event loop in a background thread;
- as a process: `python -m tests.fakes.model_server --model NAME [--host H --port P ...]`,
  printing `listening http://H:P` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from aiohttp import web

__all__ = ["Behaviour", "ModelServer", "ServerThread"]

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """How a simulated replica behaves."""

    model: str = "fake/model"
    ttft_seconds: float = 0.0
    tokens_per_second: float = 1000.0
    tokens: int = 8
    # A server that answers every completion with this status (failure tests).
    status: int = 200


class ModelServer:
    """One simulated replica listening on one address."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.last_headers: dict[str, str] = {}
        self.host = ""
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> ModelServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/fake/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.host, self.port = str(address[0]), int(address[1])
                break
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers -----------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        body = await self._enter(request)
        try:
            if self.behaviour.status != 200:
                return web.json_response(
                    {"error": {"message": "simulated failure", "type": "server_error"}},
                    status=self.behaviour.status,
                )
            count = int(body.get("max_tokens") or self.behaviour.tokens)
            if body.get("stream") is True:
                usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return await self._stream(request, chat=chat, count=count, usage=usage)
            await self._pace(count)
            text = " ".join(f"tok{i}" for i in range(count))
            choice: dict[str, Any] = (
                {"index": 0, "message": {"role": "assistant", "content": text}}
                if chat
                else {"index": 0, "text": text}
            )
            choice["finish_reason"] = "length"
            return web.json_response(
                {
                    "id": "cmpl-fake",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": int(time.time()),
                    "model": self.behaviour.model,
                    "choices": [choice],
                    "usage": _usage(count),
                }
            )
        finally:
            self.in_flight -= 1

    async def _stream(
        self, request: web.Request, *, chat: bool, count: int, usage: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            event: dict[str, Any] = {
                "id": "cmpl-fake",
                "object": kind,
                "model": self.behaviour.model,
            }
            event.update(choices=choices, **extra)
            await response.write(f"data: {json.dumps(event)}\n\n".encode())

        if chat:
            await send([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
        started = time.monotonic()
        for i in range(count):
            await self._until(started, i)
            piece = f"tok{i}" if i == 0 else f" tok{i}"
            choice = (
                {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            )
            await send([choice])
        if usage:
            await send([], usage=_usage(count))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._enter(request)
        try:
            await asyncio.sleep(self.behaviour.ttft_seconds)
            inputs = body.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            return web.json_response(
                {
                    "object": "list",
                    "model": self.behaviour.model,
                    "data": [
                        {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                        for i in range(len(items))
                    ],
                    "usage": {"prompt_tokens": len(items), "total_tokens": len(items)},
                }
            )
        finally:
            self.in_flight -= 1

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.behaviour.model, "object": "model"}]}
        )

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.requests,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "last_headers": self.last_headers,
            }
        )

    # --- helpers ------------------------------------------------------------------------

    async def _enter(self, request: web.Request) -> dict[str, Any]:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.last_headers = dict(request.headers)
        try:
            body = await request.json()
        except ValueError:
            body = {}
        return body if isinstance(body, dict) else {}

    async def _pace(self, count: int) -> None:
        rate = self.behaviour.tokens_per_second
        await asyncio.sleep(self.behaviour.ttft_seconds + max(0, count - 1) / rate)

    async def _until(self, started: float, token: int) -> None:
        """Sleep until token `token` is due: ttft, then one per 1/rate seconds."""
        due = started + self.behaviour.ttft_seconds + token / self.behaviour.tokens_per_second
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _usage(completion: int) -> dict[str, int]:
    return {"prompt_tokens": 5, "completion_tokens": completion, "total_tokens": 5 + completion}


class ServerThread:
    """An event loop in a background thread hosting any number of `ModelServer`s.

    For synchronous callers (pytest e2e tests, the benchmark). `close()` stops every server and
    the thread; use it as a context manager.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.servers: list[ModelServer] = []

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 30) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self, behaviour: Behaviour, host: str = "127.0.0.1", port: int = 0) -> ModelServer:
        server = self.call(ModelServer(behaviour).start(host, port))
        self.servers.append(server)
        return server

    def stop(self, server: ModelServer) -> None:
        self.call(server.stop())
        if server in self.servers:
            self.servers.remove(server)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        for server in list(self.servers):
            with contextlib.suppress(Exception):
                self.stop(server)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextlib.contextmanager
def running(behaviours: Sequence[Behaviour]) -> Iterator[list[ModelServer]]:
    """Servers on 127.0.0.1 for the duration of a `with` block (synchronous callers)."""
    with ServerThread() as thread:
        yield [thread.start(b) for b in behaviours]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default=Behaviour.model)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds to the first token")
    parser.add_argument("--tokens-per-second", type=float, default=1000.0)
    parser.add_argument("--tokens", type=int, default=8, help="tokens when max_tokens is unset")
    args = parser.parse_args(argv)
    behaviour = Behaviour(args.model, args.ttft, args.tokens_per_second, args.tokens)

    async def serve() -> None:
        server = await ModelServer(behaviour).start(args.host, args.port)
        print(f"listening {server.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
