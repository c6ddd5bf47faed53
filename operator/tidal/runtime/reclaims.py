"""The spot reclaims the operator has seen, per spot pool, for Auto's interruption budget.

Owns: the process-wide ledger of reclaim episodes (`ReclaimLedger`, `ledger`) that every
endpoint's reconcile feeds with what it observed (`tidal.reconcile.endpoint.reclaimed_spot_nodes`)
and reads back as `placement.budget.Reclaims` per pool (`region/product`, as
`placement.planner.spot_pools` names them).

How episodes are counted:
- a spot node counts once, however many endpoints' replicas it held and however long it lingers;
- reclaims of one pool within `WAVE_SECONDS` of the episode's first are one episode (a cloud
  reclaims a market's capacity in waves, and the budget's model takes a pool's reclaim as one
  event that takes everything there);
- the hours observed run from when the ledger started (the operator's start): a pool the
  operator watched calm for longer than the prior's weight earns a lower rate, one reclaimed
  often a higher one (`placement.budget.reclaim_rate`).

The ledger lives in memory: a restarted operator starts again from the configured prior alone,
which is the pessimistic side. Must not: decide anything (the planner does) or do I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from tidal.placement.budget import Reclaims

__all__ = ["WAVE_SECONDS", "ReclaimLedger", "ledger"]

# Reclaims of one pool this close together are one episode.
WAVE_SECONDS: Final = 900.0
# Nodes remembered as already counted (a bounded set: old names age out first).
_REMEMBERED: Final = 4096


@dataclass
class ReclaimLedger:
    """Reclaim episodes per pool since `started`; thread-safe (reconciles run in a pool)."""

    started: datetime | None = None
    _episodes: dict[str, int] = field(default_factory=dict)
    _last_wave: dict[str, datetime] = field(default_factory=dict)
    _counted: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, reclaimed: Iterable[tuple[str, str]], now: datetime) -> None:
        """Record `(node, pool)` pairs seen reclaimed at `now`; a node already counted is not
        counted again, and a pool's reclaims within `WAVE_SECONDS` of its episode's first are
        that episode."""
        with self._lock:
            if self.started is None:
                self.started = now
            for node, pool in reclaimed:
                if node in self._counted:
                    continue
                self._counted[node] = None
                if len(self._counted) > _REMEMBERED:
                    del self._counted[next(iter(self._counted))]
                first = self._last_wave.get(pool)
                if first is not None and (now - first).total_seconds() < WAVE_SECONDS:
                    continue
                self._last_wave[pool] = now
                self._episodes[pool] = self._episodes.get(pool, 0) + 1

    def observed(self, now: datetime) -> tuple[Mapping[str, Reclaims], float]:
        """Episodes per pool reclaimed at least once, and the hours watched (every pool not
        listed was watched as long, and stayed calm)."""
        with self._lock:
            if self.started is None:
                self.started = now
            hours = max(0.0, (now - self.started).total_seconds() / 3600)
            by_pool = {
                pool: Reclaims(episodes=n, hours=hours) for pool, n in self._episodes.items()
            }
            return by_pool, hours


ledger = ReclaimLedger()
