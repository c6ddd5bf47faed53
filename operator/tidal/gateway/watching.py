"""Keeping the catalog in step with the API server: list, then watch, forever.

Owns: `Informer`, one thread per watched kind that lists, hands the full list to the event
loop, then watches from that resource version and hands over each change; it lists again when
the version expires (410) and backs off on errors. Must not: interpret objects (the callbacks
do, on the loop thread) or import kubernetes (the `WatchSource` is `clients.gatewaykube`'s).

Why threads: the kubernetes client blocks, and a watch blocks for as long as it runs. Each
informer's callbacks run on the event loop via `call_soon_threadsafe`, so the catalog is only
ever touched from one thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol

from tidal.clients.gatewaykube import WatchExpiredError
from tidal.errors import TidalError

__all__ = ["Informer", "WatchSource"]

log = logging.getLogger("tidal.gateway")

Object = dict[str, Any]
_MAX_BACKOFF: Final = 30.0


class WatchSource(Protocol):
    def list_all(self) -> tuple[list[Object], str]: ...

    def watch(
        self, resource_version: str, stop: threading.Event
    ) -> Iterator[tuple[str, Object]]: ...


class Informer:
    """List+watch `source` in a daemon thread; report to `on_list` / `on_event` on `loop`."""

    def __init__(
        self,
        what: str,
        source: WatchSource,
        loop: asyncio.AbstractEventLoop,
        on_list: Callable[[list[Object]], None],
        on_event: Callable[[str, Object], None],
    ) -> None:
        self.what = what
        self.source = source
        self.loop = loop
        self.on_list = on_list
        self.on_event = on_event
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{what}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the thread to end; it does at its next event or when the server ends the watch
        (a daemon thread, so a process exit never waits for it)."""
        self.stop_event.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        backoff = 1.0
        failing = False
        while not self.stop_event.is_set():
            try:
                items, version = self.source.list_all()
                self._hand_over(self.on_list, items)
                if failing:
                    log.info("Watching %s again", self.what)
                failing, backoff = False, 1.0
                while not self.stop_event.is_set():
                    version = self._watch(version)
            except WatchExpiredError as exc:
                log.debug("Listing %s again: %s", self.what, exc)
            except TidalError as exc:
                if not failing:
                    log.warning("Cannot watch %s (retrying): %s", self.what, exc)
                failing = True
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            except Exception:
                log.exception("Watching %s failed unexpectedly (retrying)", self.what)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    def _watch(self, version: str) -> str:
        """One watch request; returns the version to continue from."""
        for kind, obj in self.source.watch(version, self.stop_event):
            new_version = (obj.get("metadata") or {}).get("resourceVersion")
            if new_version:
                version = str(new_version)
            if kind != "BOOKMARK":
                self._hand_over(self.on_event, kind, obj)
        return version

    def _hand_over(self, callback: Callable[..., None], *args: Any) -> None:
        if self.loop.is_closed():
            self.stop_event.set()
            return
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed between the check and the call
            self.stop_event.set()
