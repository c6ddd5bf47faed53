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

Kept across restarts (`ReclaimStore`): the ledger is checkpointed into the `tidal-spot-reclaims`
ConfigMap in the operator's namespace (key `ledger.json`), at once when an episode is counted and
otherwise every `CHECKPOINT_SECONDS`, and read back once, before the first reconcile uses it. What
is saved is the hours watched so far (not a start time: the hours the operator was down were not
watched, and are not counted as calm), each pool's episodes and the start of its latest wave, and
the nodes already counted. A missing ConfigMap (an install that predates it) or one that does not
parse leaves the ledger in memory only, logged once: the prior alone is the pessimistic side, so
nothing fails. At most `CHECKPOINT_SECONDS` of calm watching is lost by a crash (episodes are
saved when counted), which again errs pessimistic.

Must not: decide anything (the planner does) or talk to the API server except through the
functions `ReclaimStore` is given (the controllers pass `tidal.clients.kube`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import pydantic

from tidal.errors import TidalError
from tidal.placement.budget import Reclaims

__all__ = [
    "CHECKPOINT_SECONDS",
    "CONFIGMAP_NAME",
    "DATA_KEY",
    "WAVE_SECONDS",
    "LedgerError",
    "ReclaimLedger",
    "ReclaimStore",
    "ledger",
]

# Reclaims of one pool this close together are one episode.
WAVE_SECONDS: Final = 900.0
# Nodes remembered as already counted (a bounded set: old names age out first).
_REMEMBERED: Final = 4096
# Counted nodes saved with a checkpoint: the latest ones, enough to cover nodes that linger
# through a restart (a reclaimed node is gone within minutes).
_SAVED_NODES: Final = 256
# The ConfigMap the ledger is checkpointed into, in the operator's namespace, and its key.
CONFIGMAP_NAME: Final = "tidal-spot-reclaims"
DATA_KEY: Final = "ledger.json"
# Calm hours are saved this often; an episode is saved when it is counted.
CHECKPOINT_SECONDS: Final = 600.0

_logger = logging.getLogger("tidal.reclaims")


class LedgerError(ValueError):
    """A saved ledger that cannot be read back (the message says which field)."""


class _SavedPool(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)
    episodes: int = pydantic.Field(ge=0)
    last_wave_time: pydantic.AwareDatetime = pydantic.Field(alias="lastWaveTime")


class _Saved(pydantic.BaseModel):
    """`ledger.json`, version 1."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)
    version: int = pydantic.Field(ge=1, le=1)
    watched_hours: float = pydantic.Field(ge=0, alias="watchedHours")
    saved_time: pydantic.AwareDatetime = pydantic.Field(alias="savedTime")
    pools: dict[str, _SavedPool] = pydantic.Field(default_factory=dict)
    counted_nodes: list[str] = pydantic.Field(default_factory=list, alias="countedNodes")


@dataclass
class ReclaimLedger:
    """Reclaim episodes per pool since `started`; thread-safe (reconciles run in a pool)."""

    started: datetime | None = None
    # Hours watched by earlier runs of the operator (restored from a checkpoint).
    watched_before_hours: float = 0.0
    _episodes: dict[str, int] = field(default_factory=dict)
    _last_wave: dict[str, datetime] = field(default_factory=dict)
    _counted: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Counts the episodes ever counted by this run: a checkpoint is due when it moved.
    _revision: int = 0

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
                self._revision += 1

    def observed(self, now: datetime) -> tuple[Mapping[str, Reclaims], float]:
        """Episodes per pool reclaimed at least once, and the hours watched (every pool not
        listed was watched as long, and stayed calm)."""
        with self._lock:
            if self.started is None:
                self.started = now
            hours = self._hours(now)
            by_pool = {
                pool: Reclaims(episodes=n, hours=hours) for pool, n in self._episodes.items()
            }
            return by_pool, hours

    @property
    def revision(self) -> int:
        """Moves with every episode counted (a checkpoint taken at an older one is stale)."""
        return self._revision

    def snapshot(self, now: datetime) -> tuple[int, dict[str, str]]:
        """The ConfigMap data that `restore` reads back: the ledger as of `now`, with the
        `revision` it holds."""
        with self._lock:
            if self.started is None:
                self.started = now
            saved = _Saved(
                version=1,
                watched_hours=round(self._hours(now), 6),
                saved_time=now,
                pools={
                    pool: _SavedPool(episodes=n, last_wave_time=self._last_wave[pool])
                    for pool, n in sorted(self._episodes.items())
                },
                counted_nodes=list(self._counted)[-_SAVED_NODES:],
            )
            revision = self._revision
        return revision, {DATA_KEY: saved.model_dump_json(by_alias=True)}

    def restore(self, data: Mapping[str, str] | None, now: datetime) -> int:
        """Take up a checkpoint (`snapshot`'s data; None or no key: nothing saved yet) as the
        history before `now`, when this run starts watching; the episodes restored. Raises
        `LedgerError` naming the field when the data does not parse (the ledger is unchanged)."""
        raw = (data or {}).get(DATA_KEY)
        if not raw:
            return 0
        try:
            saved = _Saved.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            prefix = f"{DATA_KEY}: {where}" if where else DATA_KEY
            raise LedgerError(f"{prefix}: {error['msg']}") from None
        with self._lock:
            self.started = now
            self.watched_before_hours = saved.watched_hours
            self._episodes = {pool: p.episodes for pool, p in saved.pools.items()}
            self._last_wave = {pool: p.last_wave_time for pool, p in saved.pools.items()}
            self._counted = dict.fromkeys(saved.counted_nodes)
            return sum(self._episodes.values())

    def _hours(self, now: datetime) -> float:
        assert self.started is not None
        return self.watched_before_hours + max(0.0, (now - self.started).total_seconds() / 3600)


Fetch = Callable[[str, str], Mapping[str, Any] | None]
"""(namespace, name) -> the ConfigMap as the API server sends it, or None when it is missing."""

Save = Callable[[str, str, Mapping[str, str]], bool]
"""(namespace, name, data): merge `data` into the ConfigMap; False when it does not exist."""


class ReclaimStore:
    """The ledger, read back once from its ConfigMap and checkpointed into it when due.

    Safe to call from several reconcile threads at once. Failures are logged once per distinct
    message and never raised: the ledger keeps counting in memory.
    """

    def __init__(
        self,
        ledger: ReclaimLedger,
        fetch: Fetch,
        save: Save,
        namespace: str,
        *,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        self._ledger = ledger
        self._fetch = fetch
        self._save = save
        self._namespace = namespace
        self._checkpoint_seconds = checkpoint_seconds
        self._lock = threading.Lock()
        self._loaded = False
        self._saved_at: datetime | None = None
        self._saved_revision = 0
        self._told: str | None = None

    def ledger(self, now: datetime) -> ReclaimLedger:
        """The ledger, with the saved history taken up on the first call."""
        with self._lock:
            if not self._loaded:
                self._loaded = True
                self._load(now)
        return self._ledger

    def save_if_due(self, now: datetime) -> bool:
        """Checkpoint the ledger when an episode is unsaved or `checkpoint_seconds` passed since
        the last checkpoint; True when it was written."""
        with self._lock:
            if not self._loaded:
                return False  # nothing observed yet: never overwrite what is saved with nothing
            due = self._saved_at is None or (
                (now - self._saved_at).total_seconds() >= self._checkpoint_seconds
            )
            if not due and self._ledger.revision == self._saved_revision:
                return False
            # Whatever the outcome, calm hours wait for the next checkpoint; an unsaved
            # episode is tried again on the next call.
            self._saved_at = now
            revision, data = self._ledger.snapshot(now)
            try:
                written = self._save(self._namespace, CONFIGMAP_NAME, data)
            except TidalError as exc:
                self._tell(
                    f"Cannot save the spot reclaim ledger configmap={CONFIGMAP_NAME} error={exc}"
                )
                return False
            if not written:
                self._tell(
                    f"No ConfigMap {self._namespace}/{CONFIGMAP_NAME}: spot reclaims observed "
                    "are kept in memory only, and a restart starts again from the prior"
                )
                self._saved_revision = revision  # nowhere to save it: do not retry each call
                return False
            self._saved_revision = revision
            return True

    def _load(self, now: datetime) -> None:
        try:
            configmap = self._fetch(self._namespace, CONFIGMAP_NAME)
        except TidalError as exc:
            self._tell(
                f"Cannot read the spot reclaim ledger configmap={CONFIGMAP_NAME} error={exc}"
            )
            return
        data = (configmap or {}).get("data") or {}
        try:
            episodes = self._ledger.restore(data, now)
        except LedgerError as exc:
            self._tell(
                f"Ignoring the saved spot reclaim ledger configmap={CONFIGMAP_NAME} error={exc}"
            )
            return
        if data.get(DATA_KEY):
            _logger.info(
                "Restored the spot reclaim ledger configmap=%s watched_hours=%.1f episodes=%d",
                CONFIGMAP_NAME,
                self._ledger.watched_before_hours,
                episodes,
            )

    def _tell(self, message: str) -> None:
        if message != self._told:
            self._told = message
            _logger.warning(message)


ledger = ReclaimLedger()
