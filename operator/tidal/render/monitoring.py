"""The PodMonitor of an InferenceEndpoint: how Prometheus Operator finds its replicas' metrics.

One `monitoring.coreos.com/v1` PodMonitor per endpoint, named like it, selecting exactly the
pods its Service selects (both Deployments' replicas, spot and reserved) and scraping the
engine's `/metrics` on the named container port the engine serves it on
(`render.engines.metrics_port_name`: the HTTP port for vLLM and TGI, Triton's own metrics
port). A Custom engine gets none: Tidal does not know whether or where it serves metrics.

No relabeling is rendered, on purpose. For every PodMonitor target Prometheus Operator itself
sets `namespace` (the pod's namespace), `pod` (the pod's name), `container` and `endpoint` (the
port name), and with `honorLabels` unset those target labels win over any the engine exports.
Those are exactly the labels the engine SLO queries select on (`tidal.clients.prometheus`:
`namespace="<ns>",pod=~"<name>-(spot|reserved)-<hash>-<suffix>"`); a relabeling here could only
drift from them. `tests/e2e/test_monitoring.py` checks the queries' matchers against the labels
a real Prometheus gives these targets.

`labels` are extra labels for the PodMonitor's metadata (`TIDAL_POD_MONITOR_LABELS`), for a
Prometheus whose `podMonitorSelector` wants one (kube-prometheus-stack's wants
`release: <its release>` unless told otherwise); Tidal's own labels win over them.

Owns: the PodMonitor builder and the coordinates of the kind. Must not: do IO, or decide
whether the cluster serves the kind (the runtime observes that, the reconcile decides).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from tidal.api.endpoint import InferenceEndpoint
from tidal.api.labels import LABEL_ENDPOINT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME
from tidal.render.endpoint import render_service
from tidal.render.engines import METRICS_PATH, metrics_port_name

__all__ = [
    "OWN_LABELS",
    "POD_MONITORS",
    "POD_MONITOR_API_VERSION",
    "POD_MONITOR_GROUP",
    "POD_MONITOR_KIND",
    "POD_MONITOR_VERSION",
    "render_pod_monitor",
]

POD_MONITOR_GROUP: Final = "monitoring.coreos.com"
POD_MONITOR_VERSION: Final = "v1"
POD_MONITOR_API_VERSION: Final = f"{POD_MONITOR_GROUP}/{POD_MONITOR_VERSION}"
POD_MONITOR_KIND: Final = "PodMonitor"
# The resource's plural, as the API server serves it (discovery, watches, RBAC).
POD_MONITORS: Final = "podmonitors"
# The label keys Tidal puts on a PodMonitor (those of every shared child): the index selects
# PodMonitors back by them, so extra labels may not replace them.
OWN_LABELS: Final = (LABEL_NAME, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_ENDPOINT)

Object = dict[str, Any]


def render_pod_monitor(
    ie: InferenceEndpoint, labels: Mapping[str, str] | None = None
) -> Object | None:
    """The PodMonitor `<name>` scraping the endpoint's replicas, with `labels` added to its own
    (Tidal's win); None when the engine's metrics are unknown (Custom)."""
    port = metrics_port_name(ie.spec.runtime.engine)
    if port is None:
        return None
    # What the Service selects are the replicas; its metadata is every shared child's.
    service = render_service(ie)
    metadata: Object = dict(service["metadata"])
    metadata["labels"] = {**(labels or {}), **metadata["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": dict(service["spec"]["selector"])},
            "podMetricsEndpoints": [{"port": port, "path": METRICS_PATH}],
        },
    }
