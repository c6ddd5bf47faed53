"""Operator settings: what the environment may tune and how Kopf is configured for Tidal.

Owns the `TIDAL_*` environment variables the controllers read and `configure`, applied to Kopf's
settings at startup. Kopf keeps its bookkeeping in `tidal.dev/` annotations (never in status,
which is the user's view).

Environment (read once at import; invalid or non-positive values fall back to the default):
- `TIDAL_RECONCILE_INTERVAL_SECONDS` (15): drift, telemetry and status refresh.
- `TIDAL_SPOT_PENDING_SECONDS` (the planner's `SPOT_PENDING_SECONDS`, 180): how long a spot
  replica may stay unscheduled before it counts as spot loss.
- `TIDAL_SPOT_RETURN_AFTER_SECONDS` (the planner's default, 300): how long spot must stay
  healthy after a loss before replicas move back to it (hysteresis).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Mapping
from typing import Final

import kopf

from tidal.controllers.observation import STATE_ANNOTATIONS
from tidal.placement.model import SpotHealth
from tidal.placement.planner import SPOT_PENDING_SECONDS as PLANNER_SPOT_PENDING_SECONDS

__all__ = [
    "RECONCILE_INTERVAL_SECONDS",
    "SPOT_PENDING_SECONDS",
    "SPOT_RETURN_AFTER_SECONDS",
    "configure",
    "peering_priority",
    "reconcile_interval_seconds",
    "spot_pending_seconds",
    "spot_return_after_seconds",
]

ANNOTATION_PREFIX: Final = "tidal.dev"
DEFAULT_RECONCILE_INTERVAL_SECONDS: Final = 15.0


def reconcile_interval_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_RECONCILE_INTERVAL_SECONDS` (default 15): how often drift and status are refreshed."""
    raw = env.get("TIDAL_RECONCILE_INTERVAL_SECONDS", "")
    try:
        value = float(raw) if raw else DEFAULT_RECONCILE_INTERVAL_SECONDS
    except ValueError:
        return DEFAULT_RECONCILE_INTERVAL_SECONDS
    return value if value > 0 else DEFAULT_RECONCILE_INTERVAL_SECONDS


DEFAULT_SPOT_RETURN_AFTER_SECONDS: Final = SpotHealth().return_after_seconds


def spot_pending_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_SPOT_PENDING_SECONDS`: a spot replica unscheduled this long means spot loss."""
    return _positive(env, "TIDAL_SPOT_PENDING_SECONDS", float(PLANNER_SPOT_PENDING_SECONDS))


def spot_return_after_seconds(env: Mapping[str, str] = os.environ) -> int:
    """`TIDAL_SPOT_RETURN_AFTER_SECONDS`: healthy this long after a loss, spot is used again."""
    value = _positive(
        env, "TIDAL_SPOT_RETURN_AFTER_SECONDS", float(DEFAULT_SPOT_RETURN_AFTER_SECONDS)
    )
    return max(1, round(value))


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if 0 < value < float("inf") else default


# Read once at import: Kopf's timer decorator takes the interval when handlers are registered.
RECONCILE_INTERVAL_SECONDS: Final = reconcile_interval_seconds()
SPOT_PENDING_SECONDS: Final = spot_pending_seconds()
SPOT_RETURN_AFTER_SECONDS: Final = spot_return_after_seconds()


def peering_priority(env: Mapping[str, str] = os.environ) -> int:
    """`TIDAL_PEERING_PRIORITY`, else a random one: the highest live peer acts, the others wait.

    Kopf pauses *every* operator when peers share a priority (it cannot tell which should win),
    so replicas of one Deployment, which share their environment, must not share the default.
    """
    raw = env.get("TIDAL_PEERING_PRIORITY", "")
    try:
        return int(raw) if raw else secrets.randbelow(1 << 30) + 1
    except ValueError:
        return secrets.randbelow(1 << 30) + 1


def configure(settings: kopf.OperatorSettings, env: Mapping[str, str] = os.environ) -> None:
    """Apply Tidal's choices to Kopf's settings (called from the startup handler)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX,
        key="last-handled-configuration",
        # The controller's own state (utilization history, spot loss episode) is no change of
        # the user's intent: it must neither wake the update handler nor bloat the diff base.
        ignored_fields=[("metadata", "annotations", key) for key in STATE_ANNOTATIONS],
    )
    # No finalizer is needed: children go with the endpoint through ownerReferences.

    # Post explicit events (kopf.info/warn) but not every log line.
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "tidal"
    settings.posting.reporting_instance = env.get("POD_NAME") or socket.gethostname()
    settings.posting.event_name_prefix = "tidal-event-"

    # One replica by default; set TIDAL_PEERING=<name> to run several with leader election.
    peering = env.get("TIDAL_PEERING", "")
    settings.peering.standalone = not peering
    if peering:
        settings.peering.name = peering
        settings.peering.priority = peering_priority(env)
        # Stay paused until the peering object has been read: without this a replica starting
        # next to a running one would act before it learns of it (and, if the peering CRD is
        # missing, never act: asking for peering and running without it would double-act).
        settings.peering.mandatory = True

    # Ask the server to end watches before the client gives up on them, so reconnects are clean.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = (1, 2, 5, 10, 20, 30)
