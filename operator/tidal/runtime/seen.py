"""What each watch last delivered, to tell a change that matters from a watch event that
changes nothing a reconcile reads.

Owns: `LastSeen`, one value per object (a node's fingerprint, a namespace's policy, a
collection's regions), and `WakeWatch`, the `tidal.dev/wake-requested-at` each object had when
its watch last delivered it, by uid. Both kinds wake on a new value of that annotation from
its own watch event: Kopf's update handler does not see it, because the signals are left out of
Kopf's diff base. Touched only on the event loop. Must not: decide whether a wake is still
pending (the InferenceEndpoint controller asks `tidal.api.signals.wake_pending`), or reconcile.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Final, Generic, TypeVar

from tidal.api.labels import WAKE_REQUESTED_AT

__all__ = ["LastSeen", "WakeWatch"]

_UNSEEN: Final = object()
_DELETED: Final = "DELETED"
K = TypeVar("K", bound=Hashable)


class LastSeen(Generic[K]):
    """The value each object had when its watch last delivered it."""

    def __init__(self, *, appearing_counts: bool = False) -> None:
        self._seen: dict[K, object] = {}
        self._appearing_counts = appearing_counts

    def changed(self, key: K, value: object, event_type: str | None) -> bool:
        """Whether this watch event changes what was seen last of `key`.

        Never for the initial listing (`event_type` None: the resume handlers reconcile
        everything then); an object seen for the first time only with `appearing_counts`; a
        deletion whenever the object had been seen (and it is forgotten).
        """
        before = self._seen.get(key, _UNSEEN)
        if event_type == _DELETED:
            self._seen.pop(key, None)
        else:
            self._seen[key] = value
        if event_type is None:
            return False
        if before is _UNSEEN:
            return self._appearing_counts and event_type != _DELETED
        return event_type == _DELETED or before != value


class WakeWatch:
    """The wake annotation last seen per object uid."""

    def __init__(self) -> None:
        self._seen: LastSeen[str] = LastSeen()

    def new_wake(
        self, uid: str, event_type: str | None, annotations: Mapping[str, Any]
    ) -> str | None:
        """The wake request this watch event brings, or None: the initial listing (the resume
        handler's), a deletion (forgotten), an unchanged or a removed annotation."""
        wake = annotations.get(WAKE_REQUESTED_AT)
        if not self._seen.changed(uid, wake, event_type) or event_type == _DELETED:
            return None
        return None if wake is None else str(wake)
