"""Periodic refreshes ("resync"): one ticker per kind instead of a Kopf timer per object.

Every object is refreshed once per interval (telemetry, utilization history, service levels,
prices, drift). Kopf's `@kopf.on.timer` would do that, but it puts a finalizer on every object
that has a timer, so that it can stop the timer before the object goes: deleting an endpoint
then waits on the operator (and never completes once the operator is uninstalled), each
creation costs an extra PATCH and watch event, and each object keeps a timer task of its own.
A refresh is level-based and needs none of that: if the object is gone, its tick finds nothing.

Each object ticks at a fixed phase within the interval, taken from a hash of its uid, so a
thousand objects created in one burst refresh evenly over the interval rather than together.

Owns: the ticker loop and the phase rule (`phase`, `due`). Must not: reconcile anything itself
(it calls its kind's `tick` for each due object), call the API server, or start before Kopf's
indexes are filled: the controller starts it from its first watch-event handler (Kopf holds
every handler back until the indexes are filled, and the ticker inherits that handler's context,
which is where Kopf's event poster lives).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

__all__ = ["Target", "Ticker", "due", "phase"]

# How often the ticker wakes at most; each wake ticks the objects whose phase has passed.
_STEP_SECONDS: Final = 1.0


@dataclasses.dataclass(frozen=True)
class Target:
    """One object to refresh."""

    namespace: str
    name: str
    uid: str


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
