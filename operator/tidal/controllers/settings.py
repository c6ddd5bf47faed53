"""Operator settings: what the environment may tune and how Kopf is configured for Tidal.

Owns the `TIDAL_*` environment variables the controllers read and `configure`, applied to Kopf's
settings at startup. Kopf keeps its bookkeeping in `tidal.dev/` annotations (never in status,
which is the user's view).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Final

import kopf

__all__ = ["RECONCILE_INTERVAL_SECONDS", "configure", "reconcile_interval_seconds"]

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


# Read once at import: Kopf's timer decorator takes the interval when handlers are registered.
RECONCILE_INTERVAL_SECONDS: Final = reconcile_interval_seconds()


def configure(settings: kopf.OperatorSettings, env: Mapping[str, str] = os.environ) -> None:
    """Apply Tidal's choices to Kopf's settings (called from the startup handler)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
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

    # Ask the server to end watches before the client gives up on them, so reconnects are clean.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = (1, 2, 5, 10, 20, 30)
