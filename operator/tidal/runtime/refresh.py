"""Periodic refreshes ("resync"): one ticker per kind instead of a Kopf timer per object.

Every object is refreshed once per interval (telemetry, utilization history, service levels,
prices, drift). Kopf's `@kopf.on.timer` would do that, but it puts a finalizer on every object
that has a timer, so that it can stop the timer before the object goes: deleting an endpoint
then waits on the operator (and never completes once the operator is uninstalled), each
creation costs an extra PATCH and watch event, and each object keeps a timer task of its own.
A refresh is level-based and needs none of that: if the object is gone, its tick finds nothing.

Each object ticks at a fixed phase within the interval, taken from a hash of its uid, so a
thousand objects created in one burst refresh evenly over the interval rather than together.

Each controller `register`s its kind's ticker at import; the watch-event handlers call `start`
with their keyword arguments (Kopf's live indexes), which starts every registered ticker once.
Starting from a handler matters twice: Kopf holds every handler back until its indexes are
filled, so no ticker plans against an empty fleet, and the tickers inherit that handler's
context, which is where Kopf keeps its event poster.

Owns: the ticker loop, the phase rule (`phase`, `due`) and the registry of tickers. Must not:
reconcile anything itself (it calls its kind's `tick` for each due object), call the API
server, or register Kopf handlers (the controllers do).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Protocol

__all__ = ["Target", "Ticker", "due", "phase", "register", "start", "stop", "targets_of"]

# How often the ticker wakes at most; each wake ticks the objects whose phase has passed.
_STEP_SECONDS: Final = 1.0


@dataclasses.dataclass(frozen=True)
class Target:
    """One object to refresh."""

    namespace: str
    name: str
    uid: str


class _Entry(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def uid(self) -> str: ...


def targets_of(index: Mapping[str, Iterable[_Entry]]) -> list[Target]:
    """The targets of a Kopf index keyed by namespace whose entries have a name and a uid."""
    return [
        Target(namespace, entry.name, entry.uid)
        for namespace, entries in index.items()
        for entry in entries
    ]


def phase(uid: str, interval: float) -> float:
    """The object's moment within each interval, in seconds from its start: stable across
    restarts and replicas (a hash of the uid), spread evenly over [0, interval)."""
    return (zlib.crc32(uid.encode()) / 2**32) * interval


def due(targets: Iterable[Target], start: float, end: float, interval: float) -> list[Target]:
    """The targets whose phase passed in the clock window (start, end] (seconds on any
    monotonic clock), each at most once however long the window; in phase order."""
    if end <= start:
        return []
    if end - start >= interval:
        found = list(targets)
    else:
        lo, hi = start % interval, end % interval
        found = [
            t
            for t in targets
            if (lo < phase(t.uid, interval) <= hi)
            or (hi < lo and (phase(t.uid, interval) > lo or phase(t.uid, interval) <= hi))
        ]
    return sorted(found, key=lambda t: (phase(t.uid, interval), t.namespace, t.name))


Tick = Callable[[Target], Awaitable[None]]


class Ticker:
    """Refresh every target once per `interval`, each at its phase.

    `targets` is read at every wake (the controller's index of the kind); `tick` runs for each
    due target as its own task, so a slow one never delays the others, and a target whose
    previous tick still runs is skipped (its next phase comes round soon enough). A failing
    tick is logged; its object is retried at its next phase.
    """

    def __init__(
        self,
        kind: str,
        interval: float,
        targets: Callable[[], Iterable[Target]],
        tick: Tick,
        *,
        clock: Callable[[], float] | None = None,
        step: float = _STEP_SECONDS,
    ) -> None:
        self.kind = kind
        self.interval = interval
        self._targets = targets
        self._tick = tick
        self._clock = clock
        self._step = min(step, interval / 10)
        self._running: dict[Target, asyncio.Task[None]] = {}
        self._logger = logging.getLogger(f"tidal.resync.{kind.lower()}")

    async def run(self) -> None:
        """Tick until cancelled, each target first at its next phase after the start."""
        loop = asyncio.get_running_loop()
        clock = self._clock or loop.time
        last = clock()
        try:
            while True:
                await asyncio.sleep(self._step)
                now = clock()
                for target in due(self._targets(), last, now, self.interval):
                    if target not in self._running:
                        self._running[target] = asyncio.create_task(self._guarded(target))
                last = now
        finally:
            for task in list(self._running.values()):
                task.cancel()

    async def _guarded(self, target: Target) -> None:
        try:
            await self._tick(target)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the object is retried at its next phase
            self._logger.warning(
                "Refresh failed kind=%s object=%s/%s error=%s",
                self.kind,
                target.namespace,
                target.name,
                exc,
            )
        finally:
            self._running.pop(target, None)


# --- the tickers of this process -------------------------------------------------------------

Indexes = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class _Registration:
    kind: str
    interval: float
    targets: Callable[[Indexes], Iterable[Target]]
    tick: Callable[[Target, Indexes], Awaitable[None]]


_registered: dict[str, _Registration] = {}
# Event loop only.
_tasks: dict[str, asyncio.Task[None]] = {}


def register(
    kind: str,
    interval: float,
    targets: Callable[[Indexes], Iterable[Target]],
    tick: Callable[[Target, Indexes], Awaitable[None]],
) -> None:
    """Refresh every object of `kind` (as `targets` reads them from the indexes) with `tick`,
    once per `interval`, once `start` has been called."""
    _registered[kind] = _Registration(kind, interval, targets, tick)


def start(indexes: Indexes) -> None:
    """Start each registered ticker that is not running, reading `indexes` (a handler's keyword
    arguments: Kopf's indexes are live objects). Call from an async handler."""
    live = dict(indexes)
    for kind, entry in _registered.items():
        task = _tasks.get(kind)
        if task is not None and not task.done():
            continue
        ticker = Ticker(
            kind,
            entry.interval,
            functools.partial(entry.targets, live),
            functools.partial(_tick_with, entry.tick, live),
        )
        _tasks[kind] = asyncio.get_running_loop().create_task(
            ticker.run(), name=f"tidal-refresh-{kind.lower()}"
        )


async def _tick_with(
    tick: Callable[[Target, Indexes], Awaitable[None]], indexes: Indexes, target: Target
) -> None:
    await tick(target, indexes)


async def stop() -> None:
    """Stop every ticker (operator shutdown)."""
    tasks = [task for task in _tasks.values() if not task.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    _tasks.clear()
