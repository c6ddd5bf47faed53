"""The gateway's two HTTP listeners: the OpenAI API, and the admin port for the cluster.

Owns: the aiohttp applications, their routes and middlewares (bearer auth, JSON errors for
whatever aiohttp itself refuses), and starting/stopping their sites. Must not: handle a request
beyond that (`proxy.Gateway` does).

API (`--listen`, the Service's port): `POST /v1/chat/completions`, `/v1/completions`,
`/v1/embeddings`; `GET /v1/models`, `GET /v1/models/{id}`. Everything under `/v1/` needs the
bearer token when one is configured; other paths are JSON 404s.

Admin (`--admin-listen`; never behind the public Service): `GET /metrics` (Prometheus),
`GET /internal/inflight` (`tidal.api.signals.GatewayReport`, for the operator), `/healthz`
(the event loop answers) and `/readyz` (the first list of endpoints and pods is in; 503 again
while shutting down, so the Service stops sending before the listener closes). No auth: it
carries counts and endpoint names only, and sits on a port the public Service does not expose.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tidal.gateway.errors import error_response
from tidal.gateway.proxy import API_ROUTES, Gateway

__all__ = ["make_admin_app", "make_api_app", "start_site"]

log = logging.getLogger("tidal.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_api_app(gateway: Gateway) -> web.Application:
    """The OpenAI-compatible application."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/v1/") and not gateway.tokens.allows(
            request.headers.get("Authorization")
        ):
            gateway.metrics.rejected.labels(reason="unauthorized").inc()
            return error_response(
                401,
                "Missing or invalid bearer token.",
                type_="authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="tidal"'},
            )
        return await handler(request)

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
            return error_response(
                exc.status,
                f"{request.method} {request.path}: {exc.reason}",
                type_="invalid_request_error",
                code=code.get(exc.status, "invalid_request"),
                headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
            )

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": gateway.models()})

    async def model(request: web.Request) -> web.Response:
        wanted = request.match_info["model"]
        for entry in gateway.models():
            if entry["id"] == wanted:
                return web.json_response(entry)
        return error_response(
            404,
            f"The model '{wanted}' does not exist: no InferenceEndpoint serves it.",
            type_="invalid_request_error",
            code="model_not_found",
            param="model",
        )

    app = web.Application(
        middlewares=[json_errors, authenticate],
        client_max_size=gateway.config.max_request_bytes,
    )
    for path in API_ROUTES:
        app.router.add_post(path, gateway.forward)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model:.+}", model)
    return app


def make_admin_app(gateway: Gateway) -> web.Application:
    """Metrics, the operator's in-flight report and the probes."""

    async def metrics(_: web.Request) -> web.Response:
        gateway.report()  # refreshes the ready-replica gauges
        return web.Response(
            body=generate_latest(gateway.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def inflight(_: web.Request) -> web.Response:
        return web.json_response(gateway.report().to_json())

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if gateway.stopping:
            return web.Response(text="shutting down\n", status=503)
        if not gateway.catalog.synced:
            return web.Response(text="endpoints and pods not listed yet\n", status=503)
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/internal/inflight", inflight)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_site(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = 30.0
) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: any free port); return the runner and the bound port.

    Handlers are cancelled when their client disconnects, so a client that gives up on a held
    request or a stream stops holding a slot and its upstream generation.
    """
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound
