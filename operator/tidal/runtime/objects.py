"""Small helpers every controller shares: who controls a child, and posting decision Events.

Owns: reading the controlling ownerReference, turning `tidal.api.common.Event`s into Kubernetes
Events plus log lines, and the log lines of an endpoint's Outcome. Must not: decide which events
to post (the pure modules do).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from tidal.api.common import API_VERSION, Event
from tidal.api.wire import parse_time
from tidal.reconcile import endpoint

__all__ = ["controlling_owner", "log_outcome", "post_events"]


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


def log_outcome(outcome: endpoint.Outcome, logger: kopf.Logger) -> None:
    """The log lines an endpoint's reconcile deserves: a replica-count change, a wake (with the
    operator's share of the cold start), and at debug the placement."""
    note = outcome.scaling
    if note is not None and note.before != note.after:
        logging.getLogger("tidal.scaling").info(
            "Scaling InferenceEndpoint endpoint=%s from=%s to=%s reason=%r",
            note.endpoint,
            note.before,
            note.after,
            note.reason,
        )
    if note is not None and note.woke:
        # The operator's share of a cold start: wake requested -> replicas asked for (applied).
        requested = parse_time(note.wake_requested_at)
        share = (datetime.now(UTC) - requested).total_seconds() if requested else None
        logger.info(
            "Waking from zero desired=%s wake_requested_at=%s operator_share_seconds=%s",
            note.after,
            note.wake_requested_at,
            f"{share:.3f}" if share is not None else "unknown",
        )
    placement = outcome.placement
    if placement is not None:
        logger.debug(
            "Reconciled InferenceEndpoint desired=%s spot=%s reserved=%s placed=%s",
            placement.desired,
            placement.spot,
            placement.reserved,
            placement.placed_reason,
        )
