"""The agent's HTTP endpoints: `/metrics` (Prometheus), `/healthz` (liveness), `/readyz`.

Owns: the aiohttp application and its start/stop. Must not: compute anything: the handlers ask
the `Probe` the loop provides (what to expose, whether the loop is alive and has sampled).

- `/healthz` is 200 while the sampling loop keeps ticking; a wedged loop (a hung NVML call, a
  stuck thread) turns it 503 so the kubelet restarts the container. NVML being unavailable does
  NOT fail it: an agent on a node without a driver reports "unavailable" and stays up rather
  than crash-looping.
- `/readyz` is 200 once the first sample was taken (available or not).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from tidal.agent.exposition import CONTENT_TYPE

__all__ = ["Probe", "make_app", "start"]


class Probe(Protocol):
    def metrics(self) -> str: ...

    def alive(self) -> bool: ...

    def ready(self) -> bool: ...


def make_app(probe: Probe) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=probe.metrics().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        ok = probe.alive()
        return web.Response(
            text="ok\n" if ok else "sampling loop stalled\n", status=200 if ok else 503
        )

    async def readyz(_: web.Request) -> web.Response:
        ok = probe.ready()
        return web.Response(text="ok\n" if ok else "no sample yet\n", status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start(probe: Probe, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve on host:port (port 0 picks a free one); return the runner and the bound port."""
    runner = web.AppRunner(make_app(probe), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound
