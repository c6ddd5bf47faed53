"""Small helpers every controller shares: who controls a child, and posting decision Events.

Owns: reading the controlling ownerReference and turning `tidal.api.common.Event`s into Kubernetes
Events plus log lines. Must not: decide which events to post (the pure modules do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from tidal.api.common import API_VERSION, Event

__all__ = ["controlling_owner", "post_events"]


def controlling_owner(metadata: Mapping[str, Any], kind: str) -> str | None:
    """The name of the tidal.dev `kind` controlling this child, by ownerReference (labels can
    be copied; the controller reference cannot be faked by a copy)."""
    for ref in metadata.get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("apiVersion") == API_VERSION
            and ref.get("kind") == kind
        ):
            return str(ref.get("name"))
    return None


def post_events(
    raw: Mapping[str, Any], logger: kopf.Logger, events: Iterable[Event], key: str
) -> None:
    """Post each event on the object and log it (Kopf does not log explicit events).

    The logger may belong to a child or a Node, so the line names the object as `key=ns/name`.
    """
    metadata = raw.get("metadata") or {}
    name = f"{metadata.get('namespace')}/{metadata.get('name')}"
    target = kopf.Body(dict(raw))  # type: ignore[arg-type]  # a plain dict is a RawBody at runtime
    for event in events:
        if event.type == "Warning":
            logger.warning("%s: %s %s=%s", event.reason, event.message, key, name)
            kopf.warn(target, reason=event.reason, message=event.message)
        else:
            logger.info("%s: %s %s=%s", event.reason, event.message, key, name)
            kopf.info(target, reason=event.reason, message=event.message)
