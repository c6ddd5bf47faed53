"""The agent's Prometheus metrics, rendered in the text exposition format (version 0.0.4).

Owns: metric names, help texts, labels and the rendering. Must not: do I/O or hold state beyond
the `NodeStats` counters the loop increments.

Where a metric exists in NVIDIA's DCGM exporter, the name, unit and labels are DCGM's, so
dashboards and alerts written for DCGM work on nodes running this agent instead:

    DCGM_FI_DEV_GPU_UTIL     gauge  GPU utilization (%), window mean
    DCGM_FI_DEV_FB_USED      gauge  framebuffer memory used (MiB)
    DCGM_FI_DEV_FB_FREE      gauge  framebuffer memory free (MiB)
    DCGM_FI_DEV_POWER_USAGE  gauge  power draw (W), window mean
    DCGM_FI_DEV_GPU_TEMP     gauge  GPU temperature (C)
        labels: gpu (index), UUID, modelName (NVML's name), Hostname (the node)

Tidal's own, for pod attribution and the publisher (label Hostname on each):

    tidal_agent_pod_gpu_utilization_percent{namespace,pod,source}  gauge
    tidal_agent_pod_gpu_memory_used_mib{namespace,pod}             gauge
    tidal_agent_pod_gpus{namespace,pod}                            gauge  GPUs the pod uses
    tidal_agent_telemetry_available{source}                        gauge  1, or 0 when unavailable
    tidal_agent_unattributed_processes                             gauge  GPU processes in no pod
    tidal_agent_samples_total                                      counter
    tidal_agent_publishes_total{reason}                            counter
    tidal_agent_publishes_skipped_total                            counter  held back (limiter)
    tidal_agent_publish_errors_total                               counter
    tidal_agent_last_publish_timestamp_seconds                     gauge

A value the agent does not know is not exported (DCGM does the same), never exported as 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tidal.agent.averaging import Summary

__all__ = ["CONTENT_TYPE", "NodeStats", "NodeView", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = dict[str, str]


@dataclass
class NodeStats:
    """Counters of one node's loop; the loop increments them, `render` reads them."""

    samples: int = 0
    publishes: dict[str, int] = field(default_factory=dict)  # reason -> count
    publishes_skipped: int = 0
    publish_errors: int = 0
    last_publish_time: float | None = None


@dataclass(frozen=True)
class NodeView:
    hostname: str
    summary: Summary | None
    stats: NodeStats


_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    (
        "tidal_agent_pod_gpu_utilization_percent",
        "gauge",
        "GPU utilization attributed to the pod (%), mean over its GPUs.",
    ),
    ("tidal_agent_pod_gpu_memory_used_mib", "gauge", "GPU memory used by the pod's processes."),
    ("tidal_agent_pod_gpus", "gauge", "Number of GPUs the pod's processes use."),
    (
        "tidal_agent_telemetry_available",
        "gauge",
        "1 when the GPU backend answers, 0 when telemetry is unavailable.",
    ),
    (
        "tidal_agent_unattributed_processes",
        "gauge",
        "GPU compute processes that map to no pod on this node.",
    ),
    ("tidal_agent_samples_total", "counter", "GPU backend samples taken."),
    ("tidal_agent_publishes_total", "counter", "Telemetry annotation writes, by reason."),
    (
        "tidal_agent_publishes_skipped_total",
        "counter",
        "Changes held back by the minimum interval between writes.",
    ),
    ("tidal_agent_publish_errors_total", "counter", "Failed telemetry annotation writes."),
    (
        "tidal_agent_last_publish_timestamp_seconds",
        "gauge",
        "Unix time of the last successful annotation write.",
    ),
)


def render(nodes: Sequence[NodeView]) -> str:
    samples: dict[str, list[tuple[Labels, float]]] = {name: [] for name, _, _ in _FAMILIES}
    for node in nodes:
        for name, labels, value in _node_samples(node):
            samples[name].append((labels, value))
    lines: list[str] = []
    for name, kind, text in _FAMILIES:
        if not samples[name]:
            continue
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{_labels(labels)} {_value(value)}" for labels, value in samples[name])
    return "\n".join(lines) + "\n" if lines else ""


def _node_samples(node: NodeView) -> Iterable[tuple[str, Labels, float]]:  # noqa: C901
    host = {"Hostname": node.hostname}
    stats = node.stats
    yield "tidal_agent_samples_total", host, stats.samples
    for reason, count in sorted(stats.publishes.items()):
        yield "tidal_agent_publishes_total", {**host, "reason": reason}, count
    yield "tidal_agent_publishes_skipped_total", host, stats.publishes_skipped
    yield "tidal_agent_publish_errors_total", host, stats.publish_errors
    if stats.last_publish_time is not None:
        yield "tidal_agent_last_publish_timestamp_seconds", host, stats.last_publish_time
    if node.summary is None:
        return
    doc = node.summary.document
    available = 0.0 if doc.source == "unavailable" else 1.0
    yield "tidal_agent_telemetry_available", {**host, "source": doc.source}, available
    if doc.source == "unavailable":
        return
    yield "tidal_agent_unattributed_processes", host, node.summary.unattributed_processes
    for gpu in doc.gpus:
        labels = {
            "gpu": str(gpu.index),
            "UUID": gpu.uuid or "",
            "modelName": node.summary.model_names.get(gpu.index, gpu.product or ""),
            **host,
        }
        if gpu.utilization_percent is not None:
            yield "DCGM_FI_DEV_GPU_UTIL", labels, gpu.utilization_percent
        if gpu.memory_used_mib is not None:
            yield "DCGM_FI_DEV_FB_USED", labels, gpu.memory_used_mib
            if gpu.memory_total_mib is not None:
                free = max(0, gpu.memory_total_mib - gpu.memory_used_mib)
                yield "DCGM_FI_DEV_FB_FREE", labels, free
        if gpu.power_watts is not None:
            yield "DCGM_FI_DEV_POWER_USAGE", labels, gpu.power_watts
        if gpu.temperature_c is not None:
            yield "DCGM_FI_DEV_GPU_TEMP", labels, gpu.temperature_c
    for pod in doc.pods:
        labels = {**host, "namespace": pod.namespace, "pod": pod.name}
        if pod.utilization_percent is not None:
            yield (
                "tidal_agent_pod_gpu_utilization_percent",
                {**labels, "source": pod.utilization_source or ""},
                pod.utilization_percent,
            )
        if pod.memory_used_mib is not None:
            yield "tidal_agent_pod_gpu_memory_used_mib", labels, pod.memory_used_mib
        yield "tidal_agent_pod_gpus", labels, len(pod.gpu_indexes)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    body = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))
