"""Entry point that runs the operator: registers Tidal's handlers and hands control to Kopf.

`tidal run` (the CLI) calls `run`; nothing else here. Logging follows Kopf's formatter so log
lines carry the object they concern (`[namespace/name]`); `TIDAL_LOG_FORMAT=json` switches to
JSON lines for log shippers.
"""

from __future__ import annotations

import os

import kopf

__all__ = ["run"]

_LOG_FORMATS = {
    "plain": kopf.LogFormat.PLAIN,
    "full": kopf.LogFormat.FULL,
    "json": kopf.LogFormat.JSON,
}


def run(namespace: str | None, liveness_endpoint: str | None) -> None:
    """Run the operator until it is stopped: cluster-wide when `namespace` is None.

    `liveness_endpoint` is Kopf's, e.g. `http://0.0.0.0:8080/healthz`; it reports the results of
    the `@kopf.on.probe` handlers.
    """
    # Imported for its side effect: registering the handlers with Kopf's default registry.
    from tidal.controllers import (
        admission,  # noqa: F401  (webhooks, when TIDAL_WEBHOOKS=1)
        collection,  # noqa: F401
        endpoint,  # noqa: F401
    )

    log_format = _LOG_FORMATS.get(os.environ.get("TIDAL_LOG_FORMAT", "full"), kopf.LogFormat.FULL)
    kopf.configure(
        verbose=os.environ.get("TIDAL_LOG_LEVEL", "").lower() == "debug",
        log_format=log_format,
        log_refkey="k8s",
    )
    kopf.run(
        clusterwide=namespace is None,
        namespaces=[namespace] if namespace is not None else (),
        liveness_endpoint=liveness_endpoint,
    )
