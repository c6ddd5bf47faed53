"""Telling a new wake request from any other watch event of the same object.

Owns: `WakeWatch`, the `tidal.dev/wake-requested-at` value each object had when its watch
last delivered it, by uid (touched only on the event loop). Both kinds wake on a new value of
that annotation from its own watch event: Kopf's update handler does not see it, because the
signals are left out of Kopf's diff base. Must not: decide whether the wake is still pending
(the InferenceEndpoint controller asks `tidal.api.signals.wake_pending`), or reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from tidal.api.labels import WAKE_REQUESTED_AT

__all__ = ["WakeWatch"]

_UNSEEN: Final = object()


class WakeWatch:
    """The wake annotation last seen per object uid."""

    def __init__(self) -> None:
        self._seen: dict[str, object] = {}

    def new_wake(
        self, uid: str, event_type: str | None, annotations: Mapping[str, Any]
    ) -> str | None:
        """The wake request this watch event brings, or None: the initial listing (the resume
        handler's), a deletion (forgotten), an unchanged or a removed annotation."""
        if event_type == "DELETED":
            self._seen.pop(uid, None)
            return None
        wake = annotations.get(WAKE_REQUESTED_AT)
        before = self._seen.get(uid, _UNSEEN)
        self._seen[uid] = wake
        if event_type is None or before is _UNSEEN or before == wake or wake is None:
            return None
        return str(wake)
