"""The gateway's load report: `GET /internal/inflight` on one gateway replica's admin port.

Owns the HTTP request and the translation of every failure into `tidal.errors`; the report's
format is `tidal.api.signals.GatewayReport`, shared with the gateway that writes it. Decides
nothing: `tidal.runtime.load` keeps the samples and `tidal.scaling.autoscale` judges them.

Error tree (nothing else leaves this module)::

    TemporaryError   the replica is unreachable, timed out, answered non-200, or sent garbage

Blocking (urllib): call it from a worker thread.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Final

from pydantic import ValidationError

from tidal.api.signals import GatewayReport
from tidal.errors import TemporaryError

__all__ = ["INFLIGHT_PATH", "fetch_report"]

INFLIGHT_PATH: Final = "/internal/inflight"
# A report is a few bytes per endpoint; anything much bigger is not one.
_MAX_BYTES: Final = 16 * 1024 * 1024


def fetch_report(url: str, *, timeout_seconds: float) -> GatewayReport:
    """The report of the gateway replica whose admin base URL is `url` (e.g. `http://gw:9090`)."""
    target = url.rstrip("/") + INFLIGHT_PATH
    try:
        with urllib.request.urlopen(target, timeout=timeout_seconds) as answer:
            raw = answer.read(_MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise TemporaryError(f"gateway {target} answered HTTP {exc.code}", delay=5) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TemporaryError(f"gateway {target} is unreachable: {exc}", delay=5) from exc
    if len(raw) > _MAX_BYTES:
        raise TemporaryError(f"gateway {target} sent more than {_MAX_BYTES} bytes", delay=5)
    try:
        return GatewayReport.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise TemporaryError(f"gateway {target} sent an unreadable report: {exc}", delay=5) from exc
