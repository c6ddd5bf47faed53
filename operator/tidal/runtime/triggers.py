"""Per-object triggers, serialized and coalesced: how every reconcile of every kind is started.

Owns: `Mode` (what a reconcile does beyond planning and writing status), the named modes the
handlers use, and `Triggers`, which runs one object's reconciles one at a time in a thread pool
of its own: while one runs, every further trigger folds into the one waiting behind it, which
reads the object and the indexes afresh when it starts. A burst of node events costs one extra
reconcile per object, not one per event. Must not: decide anything or touch the API.

Why a pool of its own: asyncio's default pool has only cores + 4 threads, a reconcile spends
most of its time waiting on the API server, and the default pool is shared with Kopf's sync
handlers and every `asyncio.to_thread` call (a queue of reconciles there delays the gateway
polls that wake endpoints).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Hashable
from typing import Final

__all__ = [
    "REFRESH",
    "SPEC_CHANGED",
    "TICK",
    "WAKE",
    "WORLD_CHANGED",
    "Mode",
    "Triggers",
]


@dataclasses.dataclass(frozen=True)
class Mode:
    """What one reconcile does beyond planning and writing status."""

    # Apply every child even if its stamp says nothing changed (repairs hand edits: drift).
    force_apply: bool
    # Add a GPU-utilization sample to the history (refreshes only, so samples are evenly
    # spaced rather than bunched around events).
    sample_history: bool
    # Skip when the spec's generation is not yet observed: the create/update handler is due
    # and must be the one to act on it.
    require_observed: bool

    def merge(self, other: Mode) -> Mode:
        return Mode(
            force_apply=self.force_apply or other.force_apply,
            sample_history=self.sample_history or other.sample_history,
            require_observed=self.require_observed and other.require_observed,
        )


SPEC_CHANGED: Final = Mode(force_apply=True, sample_history=False, require_observed=False)
# A refresh when the drift interval is due (every child re-applied) and when it is not.
TICK: Final = Mode(force_apply=True, sample_history=True, require_observed=False)
REFRESH: Final = Mode(force_apply=False, sample_history=True, require_observed=False)
WORLD_CHANGED: Final = Mode(force_apply=False, sample_history=False, require_observed=True)
# Something outside holds a request (a wake): act now, even on a spec still being handled.
WAKE: Final = Mode(force_apply=False, sample_history=False, require_observed=False)

# Called on the event loop once the object's turn has come, with the merged mode; returns the
# blocking reconcile to run in the pool (so what it captures from the indexes is current).
Prepare = Callable[[Mode], Callable[[], None]]


@dataclasses.dataclass
class _Slot:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    queued: Mode | None = None


class Triggers:
    """Serialize-and-coalesce per object key, blocking work in `workers` threads."""

    def __init__(self, workers: int, name: str) -> None:
        # One slot per object ever seen (small; not worth evicting). Event loop only.
        self._slots: dict[Hashable, _Slot] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name
        )

    async def trigger(self, key: Hashable, mode: Mode, prepare: Prepare) -> None:
        """Reconcile `key` in `mode`, after the reconcile running now, folded into the one
        already waiting if there is one (which then returns for both)."""
        slot = self._slots.setdefault(key, _Slot())
        if slot.queued is not None:
            # One reconcile is already waiting; it reads everything afresh when it starts.
            slot.queued = slot.queued.merge(mode)
            return
        slot.queued = mode
        async with slot.lock:
            mode, slot.queued = slot.queued, None
            job = prepare(mode)
            # Kopf's context (the logger's object, event posting) travels with the call, as
            # in asyncio.to_thread.
            call = functools.partial(contextvars.copy_context().run, job)
            await asyncio.get_running_loop().run_in_executor(self._pool, call)
