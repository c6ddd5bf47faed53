"""`tidal gateway`: wire the pieces together and run until SIGTERM.

Owns: the process: connecting to the API server, the two informers, the listeners, the
signalling loop, the address-map and token-file reloads, and an orderly shutdown (stop being
ready, answer held requests, let streams finish for `shutdown_grace_seconds`). Must not: hold
logic of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable

from tidal.clients import gatewaykube
from tidal.errors import TidalError
from tidal.gateway.addressing import Addresses, AddressMap, PodNetwork
from tidal.gateway.config import GatewayConfig, Tokens
from tidal.gateway.metrics import GatewayMetrics
from tidal.gateway.pool import Catalog
from tidal.gateway.proxy import Gateway
from tidal.gateway.routing import POD_SELECTOR
from tidal.gateway.server import make_admin_app, make_api_app, start_site
from tidal.gateway.signalling import Annotator, KubeAnnotator, Signals
from tidal.gateway.watching import Informer, WatchSource

__all__ = ["build", "run", "serve"]

log = logging.getLogger("tidal.gateway")

_RELOAD_SECONDS = 1.0


def build(
    config: GatewayConfig,
    annotator: Annotator,
    *,
    metrics: GatewayMetrics | None = None,
    addresses: Addresses | None = None,
) -> Gateway:
    """A gateway with its catalog and signalling, not yet serving (tests start it themselves)."""
    metrics = metrics or GatewayMetrics()
    if addresses is None:
        addresses = AddressMap(config.pod_address_map) if config.pod_address_map else PodNetwork()
    catalog = Catalog(addresses, on_forget=metrics.forget)
    signals = Signals(
        catalog, annotator, metrics, interval_seconds=config.last_request_interval_seconds
    )
    tokens = Tokens(config.token, config.token_file)
    return Gateway(config, catalog, signals, metrics, tokens)


async def serve(
    gateway: Gateway,
    sources: tuple[WatchSource, WatchSource],
    stop: asyncio.Event,
    *,
    on_listening: Callable[[int, int], None] | None = None,
) -> None:
    """Watch, listen and signal until `stop` is set, then shut down in order."""
    config = gateway.config
    loop = asyncio.get_running_loop()
    catalog = gateway.catalog
    endpoints, pods = sources
    informers = [
        Informer(
            "inferenceendpoints", endpoints, loop, catalog.replace_routes, catalog.apply_route
        ),
        Informer("pods", pods, loop, catalog.replace_replicas, catalog.apply_replica),
    ]
    await gateway.start()
    for informer in informers:
        informer.start()
    grace = config.shutdown_grace_seconds
    api, api_port = await start_site(
        make_api_app(gateway), config.listen_host, config.listen_port, shutdown_timeout=grace
    )
    admin, admin_port = await start_site(
        make_admin_app(gateway), config.admin_host, config.admin_port, shutdown_timeout=1.0
    )
    log.info(
        "Tidal gateway serving the OpenAI API on http://%s:%d, admin on http://%s:%d "
        "(auth %s, cold-start budget %gs%s)",
        config.listen_host,
        api_port,
        config.admin_host,
        admin_port,
        "on" if gateway.tokens.enabled else "off",
        config.cold_start_budget_seconds,
        f", pod address map {config.pod_address_map}" if config.pod_address_map else "",
    )
    if on_listening is not None:
        on_listening(api_port, admin_port)
    signalling = asyncio.create_task(gateway.signals.run(stop))
    reloading = asyncio.create_task(_reload(gateway, stop))
    try:
        await stop.wait()
    finally:
        log.info("Tidal gateway stopping: not ready, answering held requests")
        gateway.stop_holding()
        await api.cleanup()  # waits up to the grace for streams in progress
        await admin.cleanup()
        for task in (signalling, reloading):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await gateway.signals.drain()
        for informer in informers:
            informer.stop(timeout=0.1)
        await gateway.close()
        log.info("Tidal gateway stopped")


async def _reload(gateway: Gateway, stop: asyncio.Event) -> None:
    """Re-read the address map (tests) and the token file (rotation) when they change."""
    addresses = gateway.catalog.addresses
    while not stop.is_set():
        if isinstance(addresses, AddressMap) and addresses.reload():
            gateway.catalog.refresh_addresses()
        gateway.tokens.reload()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=_RELOAD_SECONDS)


def _configure_logging() -> None:
    level = (
        logging.DEBUG if os.environ.get("TIDAL_LOG_LEVEL", "").lower() == "debug" else logging.INFO
    )
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def run(config: GatewayConfig) -> int:
    """The process: connect, serve until SIGTERM/SIGINT. Returns the exit code."""
    _configure_logging()
    try:
        gatewaykube.connect()
        gateway = build(config, KubeAnnotator())
    except (TidalError, ValueError) as exc:
        log.error("Cannot start the gateway: %s", exc)
        return 1
    sources = (
        gatewaykube.endpoints(config.namespace),
        gatewaykube.pods(POD_SELECTOR, config.namespace),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(gateway, sources, stop)

    try:
        asyncio.run(main())
    except OSError as exc:  # the listen address is taken or not ours
        log.error("Cannot listen: %s", exc)
        return 1
    return 0
