"""Operator settings: what the environment may tune and how Kopf is configured for Tidal.

Owns the `TIDAL_*` environment variables the controllers read and `configure`, applied to Kopf's
settings at startup. Kopf keeps its bookkeeping in `tidal.dev/` annotations (never in status,
which is the user's view).

Environment (read once at import; invalid or non-positive values fall back to the default):
- `TIDAL_RECONCILE_INTERVAL_SECONDS` (15): telemetry, utilization history and status refresh.
- `TIDAL_DRIFT_INTERVAL_SECONDS` (300): how often a refresh re-applies every child even if
  it looks unchanged (repairing hand edits that keep the render stamp and the replica count;
  a deleted child, another stamp or another replica count is repaired on its watch event).
- `TIDAL_RECONCILE_WORKERS` (16): the threads that run blocking reconciles; most of a
  reconcile is waiting on the API server, so more threads than cores keep it busy.
- `TIDAL_SPOT_PENDING_SECONDS` (the planner's `SPOT_PENDING_SECONDS`, 180): how long a spot
  replica may stay unscheduled before it counts as spot loss.
- `TIDAL_SPOT_PROVISION_TIMEOUT_SECONDS` (600): where a node autoscaler can provision spot
  (a Karpenter NodePool, a `tidal-capacity` pool), how long a spot replica may stay unscheduled
  before it counts as spot loss: GPU nodes take minutes to launch and install their driver, and
  a replica waiting for its node is no loss.
- `TIDAL_GPU_LABEL_PROFILE` (unset: the `tidal-capacity` conventions' `gpuLabelProfile`, else
  `gfd`): which labels a replica's required node affinity names the GPU product and memory by
  (`tidal.api.conventions`): `gfd` (NVIDIA GPU Feature Discovery), `karpenter-aws` (EKS with
  Karpenter), `gke`, `instance-type` (the conventions' `instanceTypes`), or a profile the
  conventions declare. On a cluster whose GPU nodes an autoscaler launches, choose the labels its
  nodes carry before they exist. An unknown name stops the operator at start, naming those
  there are (`tidal.runtime.capacity`).
- `TIDAL_CAPACITY_REFRESH_SECONDS` (30): how often NodePools and `tidal-capacity` are re-read.
- `TIDAL_SPOT_RETURN_AFTER_SECONDS` (the planner's default, 300): how long spot must stay
  healthy after a loss before replicas move back to it (hysteresis).
- `TIDAL_SPOT_RECLAIMS_PER_HOUR` (1/24 = 0.0417), `TIDAL_SPOT_RECLAIM_PRIOR_HOURS` (72),
  `TIDAL_SPOT_DETECTION_SECONDS` (60), `TIDAL_COLD_START_SECONDS` (600): the pessimistic prior
  of Auto's interruption budget (`tidal.placement.budget.ReclaimPrior`): a spot pool's reclaim
  rate before it has been observed, how many hours of observation that guess is worth, the time
  from a reclaim to its replacement starting, and the cold start of an endpoint that has never
  measured one (`status.lastReplicaStartSeconds` or `lastColdStartSeconds`). Zero is allowed
  for each.
- `TIDAL_SPOT_NOTICE_SECONDS` (0): how long before a spot reclaim the cluster gets its notice
  (120 on AWS with Karpenter's interruption queue or a termination handler; 30 on GCP and
  Azure; 0 when nodes may go without notice). Auto takes it off the recovery: replacements
  start at the notice while the leaving replicas serve.
- `TIDAL_SLO_INTERVAL_SECONDS` (30): the least time between two Prometheus measurements of one
  endpoint (measured on refreshes only; see `tidal.clients.prometheus` for `TIDAL_PROMETHEUS_*`).
- `TIDAL_VECTOR_SLO_INTERVAL_SECONDS` (300): the least time between two SLO probes of one
  VectorCollection (a probe runs `TIDAL_VECTOR_SLO_SAMPLE` indexed and as many exact queries,
  and the exact ones scan the whole collection); a changed spec is probed at once.
- `TIDAL_VECTOR_SLO_SAMPLE` (32): stored vectors queried per probe (1-10000).
- `TIDAL_PRICING_REFRESH_SECONDS` (60): how often the `tidal-pricing` ConfigMap is re-read.
- `TIDAL_NAMESPACE` (`tidal-system`): the operator's own namespace, where `tidal-pricing` lives.
- `TIDAL_METRICS_PORT` (8081; 0 turns it off): the port of the operator's `/metrics`.
- `TIDAL_GATEWAY_URLS` (also read as `TIDAL_GATEWAY_URL`; unset: no load-driven scaling and no
  scale to zero): comma-separated admin URLs of every gateway replica, e.g.
  `http://tidal-gateway-0.tidal-gateway.tidal-system:9090`.
- `TIDAL_GATEWAY_SELECTOR` (unset): instead of a URL list, find the gateway replicas as the
  Ready pods with these labels (`k=v,k=v`) in `TIDAL_NAMESPACE`, admin port
  `TIDAL_GATEWAY_ADMIN_PORT` (9090). The install manifests use this.
- `TIDAL_GATEWAY_POLL_SECONDS` (2): the least time between two polls of the gateways.
- `TIDAL_SCALE_*`, `TIDAL_LOAD_STALE_AFTER_SECONDS`, `TIDAL_MAX_WAKE_SECONDS`: the autoscaler's
  `Tuning` (`tidal.scaling.autoscale.Tuning.from_env`).
- `TIDAL_POD_MONITORS` (`auto`): `auto` gives every endpoint a PodMonitor where the API server
  serves Prometheus Operator's PodMonitor kind (`tidal.runtime.discovery`); `off` never creates,
  lists or asks about them (so the podmonitors RBAC rule may be dropped).
- `TIDAL_POD_MONITOR_LABELS` (unset): extra labels (`k=v,k=v`) on every PodMonitor, for a
  Prometheus whose `podMonitorSelector` asks for one (kube-prometheus-stack: `release=<name>`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Collection, Mapping
from typing import Final

import kopf

from tidal.api.common import is_label_value, is_qualified_name
from tidal.api.labels import KOPF_PREFIX
from tidal.errors import PermanentError
from tidal.placement.budget import DEFAULT_PRIOR, ReclaimPrior
from tidal.placement.model import SpotHealth
from tidal.placement.planner import SPOT_PENDING_SECONDS as PLANNER_SPOT_PENDING_SECONDS
from tidal.reconcile.observation import SIGNAL_ANNOTATIONS, STATE_ANNOTATIONS

__all__ = [
    "DRIFT_INTERVAL_SECONDS",
    "RECLAIM_PRIOR",
    "RECONCILE_INTERVAL_SECONDS",
    "RECONCILE_WORKERS",
    "SLO_INTERVAL_SECONDS",
    "SPOT_PENDING_SECONDS",
    "SPOT_PROVISION_TIMEOUT_SECONDS",
    "SPOT_RETURN_AFTER_SECONDS",
    "VECTOR_SLO_INTERVAL_SECONDS",
    "VECTOR_SLO_SAMPLE",
    "capacity_refresh_seconds",
    "configure",
    "drift_interval_seconds",
    "gateway_admin_port",
    "gateway_poll_seconds",
    "gateway_selector",
    "gateway_urls",
    "metrics_port",
    "operator_namespace",
    "peering_priority",
    "pod_monitor_labels",
    "pod_monitors",
    "pricing_refresh_seconds",
    "reclaim_prior",
    "reconcile_interval_seconds",
    "reconcile_workers",
    "slo_interval_seconds",
    "spot_pending_seconds",
    "spot_provision_timeout_seconds",
    "spot_return_after_seconds",
    "vector_slo_interval_seconds",
    "vector_slo_sample",
]

DEFAULT_RECONCILE_INTERVAL_SECONDS: Final = 15.0


def reconcile_interval_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_RECONCILE_INTERVAL_SECONDS` (default 15): how often drift and status are refreshed."""
    raw = env.get("TIDAL_RECONCILE_INTERVAL_SECONDS", "")
    try:
        value = float(raw) if raw else DEFAULT_RECONCILE_INTERVAL_SECONDS
    except ValueError:
        return DEFAULT_RECONCILE_INTERVAL_SECONDS
    return value if value > 0 else DEFAULT_RECONCILE_INTERVAL_SECONDS


DEFAULT_DRIFT_INTERVAL_SECONDS: Final = 300.0
DEFAULT_RECONCILE_WORKERS: Final = 16


def drift_interval_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_DRIFT_INTERVAL_SECONDS` (default 300): how often every child is re-applied."""
    return _positive(env, "TIDAL_DRIFT_INTERVAL_SECONDS", DEFAULT_DRIFT_INTERVAL_SECONDS)


def reconcile_workers(env: Mapping[str, str] = os.environ) -> int:
    """`TIDAL_RECONCILE_WORKERS` (default 16): threads for blocking reconciles."""
    raw = env.get("TIDAL_RECONCILE_WORKERS", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_RECONCILE_WORKERS


DEFAULT_SPOT_RETURN_AFTER_SECONDS: Final = SpotHealth().return_after_seconds


def spot_pending_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_SPOT_PENDING_SECONDS`: a spot replica unscheduled this long means spot loss."""
    return _positive(env, "TIDAL_SPOT_PENDING_SECONDS", float(PLANNER_SPOT_PENDING_SECONDS))


DEFAULT_SPOT_PROVISION_TIMEOUT_SECONDS: Final = 600.0
DEFAULT_CAPACITY_REFRESH_SECONDS: Final = 30.0


def spot_provision_timeout_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_SPOT_PROVISION_TIMEOUT_SECONDS`: where spot can be provisioned, a spot replica
    unscheduled this long means spot loss."""
    return _positive(
        env, "TIDAL_SPOT_PROVISION_TIMEOUT_SECONDS", DEFAULT_SPOT_PROVISION_TIMEOUT_SECONDS
    )


def capacity_refresh_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_CAPACITY_REFRESH_SECONDS`: how often provisionable capacity is re-read."""
    return _positive(env, "TIDAL_CAPACITY_REFRESH_SECONDS", DEFAULT_CAPACITY_REFRESH_SECONDS)


def spot_return_after_seconds(env: Mapping[str, str] = os.environ) -> int:
    """`TIDAL_SPOT_RETURN_AFTER_SECONDS`: healthy this long after a loss, spot is used again."""
    value = _positive(
        env, "TIDAL_SPOT_RETURN_AFTER_SECONDS", float(DEFAULT_SPOT_RETURN_AFTER_SECONDS)
    )
    return max(1, round(value))


def reclaim_prior(env: Mapping[str, str] = os.environ) -> ReclaimPrior:
    """`TIDAL_SPOT_RECLAIMS_PER_HOUR`, `TIDAL_SPOT_RECLAIM_PRIOR_HOURS`,
    `TIDAL_SPOT_DETECTION_SECONDS`, `TIDAL_COLD_START_SECONDS`, `TIDAL_SPOT_NOTICE_SECONDS`:
    Auto's pessimistic prior."""
    return ReclaimPrior(
        reclaims_per_hour=_non_negative(
            env, "TIDAL_SPOT_RECLAIMS_PER_HOUR", DEFAULT_PRIOR.reclaims_per_hour
        ),
        weight_hours=_non_negative(
            env, "TIDAL_SPOT_RECLAIM_PRIOR_HOURS", DEFAULT_PRIOR.weight_hours
        ),
        detection_seconds=_non_negative(
            env, "TIDAL_SPOT_DETECTION_SECONDS", DEFAULT_PRIOR.detection_seconds
        ),
        cold_start_seconds=_non_negative(
            env, "TIDAL_COLD_START_SECONDS", DEFAULT_PRIOR.cold_start_seconds
        ),
        notice_seconds=_non_negative(
            env, "TIDAL_SPOT_NOTICE_SECONDS", DEFAULT_PRIOR.notice_seconds
        ),
    )


def _non_negative(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if 0 <= value < float("inf") else default


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if 0 < value < float("inf") else default


DEFAULT_SLO_INTERVAL_SECONDS: Final = 30.0
DEFAULT_PRICING_REFRESH_SECONDS: Final = 60.0
DEFAULT_NAMESPACE: Final = "tidal-system"
DEFAULT_METRICS_PORT: Final = 8081


def slo_interval_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_SLO_INTERVAL_SECONDS`: the least time between two measurements of one endpoint.

    Prometheus queries are the slowest thing a reconcile could do; a p95 over a 5-minute window
    barely moves in 30 s, so measuring on every tick would only load Prometheus.
    """
    return _positive(env, "TIDAL_SLO_INTERVAL_SECONDS", DEFAULT_SLO_INTERVAL_SECONDS)


DEFAULT_VECTOR_SLO_INTERVAL_SECONDS: Final = 300.0
DEFAULT_VECTOR_SLO_SAMPLE: Final = 32
_MAX_VECTOR_SLO_SAMPLE: Final = 10_000


def vector_slo_interval_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_VECTOR_SLO_INTERVAL_SECONDS`: the least time between two probes of a collection.

    Recall moves with the data and the index, not second by second, and every probe makes the
    engine scan the collection once per sampled vector (the exact answers).
    """
    return _positive(env, "TIDAL_VECTOR_SLO_INTERVAL_SECONDS", DEFAULT_VECTOR_SLO_INTERVAL_SECONDS)


def vector_slo_sample(env: Mapping[str, str] = os.environ) -> int:
    """`TIDAL_VECTOR_SLO_SAMPLE`: stored vectors queried per probe (default 32, at most 10000)."""
    raw = env.get("TIDAL_VECTOR_SLO_SAMPLE", "").strip()
    if not raw.isdigit() or int(raw) <= 0:
        return DEFAULT_VECTOR_SLO_SAMPLE
    return min(int(raw), _MAX_VECTOR_SLO_SAMPLE)


def pricing_refresh_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_PRICING_REFRESH_SECONDS`: how often the `tidal-pricing` ConfigMap is read again."""
    return _positive(env, "TIDAL_PRICING_REFRESH_SECONDS", DEFAULT_PRICING_REFRESH_SECONDS)


def operator_namespace(env: Mapping[str, str] = os.environ) -> str:
    """`TIDAL_NAMESPACE`: the operator's namespace (the Deployment sets it, downward API)."""
    return env.get("TIDAL_NAMESPACE", "").strip() or DEFAULT_NAMESPACE


def metrics_port(env: Mapping[str, str] = os.environ) -> int | None:
    """`TIDAL_METRICS_PORT`: where `/metrics` is served; None when it is 0 (off).

    A value that is not a port number is a configuration error, raised rather than guessed.
    """
    raw = env.get("TIDAL_METRICS_PORT", "").strip()
    if not raw:
        return DEFAULT_METRICS_PORT
    try:
        port = int(raw)
    except ValueError:
        raise PermanentError(f"TIDAL_METRICS_PORT must be a port number, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise PermanentError(f"TIDAL_METRICS_PORT must be 0-65535, got {raw!r}")
    return port or None


DEFAULT_GATEWAY_POLL_SECONDS: Final = 2.0


def gateway_urls(env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """`TIDAL_GATEWAY_URLS` (or `TIDAL_GATEWAY_URL`): every gateway replica's admin base URL.

    Each replica counts only its own requests, so every replica must be listed (a Service URL in
    front of several would answer for one of them at random).
    """
    raw = env.get("TIDAL_GATEWAY_URLS", "") or env.get("TIDAL_GATEWAY_URL", "")
    urls = tuple(url.strip().rstrip("/") for url in raw.split(",") if url.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise PermanentError(f"TIDAL_GATEWAY_URLS must list http(s) URLs, got {url!r}")
    return urls


def gateway_selector(env: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """`TIDAL_GATEWAY_SELECTOR`: the gateway pods' labels (`k=v,k=v`); None when unset."""
    raw = env.get("TIDAL_GATEWAY_SELECTOR", "").strip()
    if not raw:
        return None
    labels: dict[str, str] = {}
    for part in raw.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key.strip():
            raise PermanentError(f"TIDAL_GATEWAY_SELECTOR must be k=v[,k=v], got {raw!r}")
        labels[key.strip()] = value.strip()
    return labels


def gateway_admin_port(env: Mapping[str, str] = os.environ) -> int:
    """`TIDAL_GATEWAY_ADMIN_PORT` (9090): the gateway pods' admin port, with the selector."""
    raw = env.get("TIDAL_GATEWAY_ADMIN_PORT", "").strip() or "9090"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise PermanentError(f"TIDAL_GATEWAY_ADMIN_PORT must be a port number, got {raw!r}")
    return int(raw)


def gateway_poll_seconds(env: Mapping[str, str] = os.environ) -> float:
    """`TIDAL_GATEWAY_POLL_SECONDS`: the least time between two polls of the gateways."""
    return _positive(env, "TIDAL_GATEWAY_POLL_SECONDS", DEFAULT_GATEWAY_POLL_SECONDS)


_POD_MONITORS_VALUES: Final = ("auto", "off")


def pod_monitors(env: Mapping[str, str] = os.environ) -> bool:
    """`TIDAL_POD_MONITORS` (`auto`, or `off`): whether endpoints get PodMonitors where the
    kind is served. Anything else is a configuration error, raised rather than guessed."""
    raw = env.get("TIDAL_POD_MONITORS", "").strip().lower() or "auto"
    if raw not in _POD_MONITORS_VALUES:
        raise PermanentError(f"TIDAL_POD_MONITORS must be auto or off, got {raw!r}")
    return raw == "auto"


def pod_monitor_labels(
    env: Mapping[str, str] = os.environ, reserved: Collection[str] = ()
) -> dict[str, str]:
    """`TIDAL_POD_MONITOR_LABELS`: extra labels (`k=v,k=v`) for every PodMonitor; empty when
    unset. A malformed pair, key or value, or a key in `reserved` (Tidal's own, which select
    the PodMonitors back), is a configuration error."""
    raw = env.get("TIDAL_POD_MONITOR_LABELS", "").strip()
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = (item.strip() for item in part.partition("="))
        if not sep or not is_qualified_name(key):
            raise PermanentError(f"TIDAL_POD_MONITOR_LABELS must be k=v[,k=v], got {part!r}")
        if not is_label_value(value):
            raise PermanentError(f"TIDAL_POD_MONITOR_LABELS: {value!r} is not a label value")
        if key in reserved:
            raise PermanentError(f"TIDAL_POD_MONITOR_LABELS may not set {key}: Tidal sets it")
        labels[key] = value
    return labels


# Read once at import: the refresh tickers are registered with the interval at import.
RECONCILE_INTERVAL_SECONDS: Final = reconcile_interval_seconds()
SPOT_PENDING_SECONDS: Final = spot_pending_seconds()
SPOT_PROVISION_TIMEOUT_SECONDS: Final = spot_provision_timeout_seconds()
SPOT_RETURN_AFTER_SECONDS: Final = spot_return_after_seconds()
RECLAIM_PRIOR: Final = reclaim_prior()
SLO_INTERVAL_SECONDS: Final = slo_interval_seconds()
VECTOR_SLO_INTERVAL_SECONDS: Final = vector_slo_interval_seconds()
VECTOR_SLO_SAMPLE: Final = vector_slo_sample()
DRIFT_INTERVAL_SECONDS: Final = drift_interval_seconds()
RECONCILE_WORKERS: Final = reconcile_workers()


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
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX,
        key="last-handled-configuration",
        # The controller's own state (utilization history, spot loss episode) is no change of
        # the user's intent: it must neither wake the update handler nor bloat the diff base.
        # The gateway's signals are no change of intent either: a wake has its own handler,
        # and the last request time, rewritten every few seconds under traffic, is read by the
        # next reconcile.
        ignored_fields=[
            ("metadata", "annotations", key) for key in (*STATE_ANNOTATIONS, *SIGNAL_ANNOTATIONS)
        ],
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
