"""When to write the telemetry annotation: on a meaningful change, else as a heartbeat.

Owns: the pure rate-limit decision `decide(previous, current, ...)`. Must not: read the clock,
do I/O or build documents.

Every Node write wakes every watcher of Nodes (the scheduler, the operator, kubelets' informers
in large clusters), so the agent writes only when a reader would act differently: utilization of
a GPU or a pod moved by more than `utilization_points`, memory by more than `memory_fraction` of
the GPU (of the pod's previous use for pods), the set of GPUs or pods changed, or availability
changed (source or error). Otherwise it writes a heartbeat every `heartbeat_seconds`, well inside
the readers' staleness limit (`api.telemetry.STALE_AFTER_SECONDS`, 120 s), so a live agent is
never mistaken for a dead one. Changes of numbers are also held back until `min_interval_seconds`
have passed since the last write; the first document and availability changes never are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from tidal.api.telemetry import STALE_AFTER_SECONDS, GpuTelemetry

__all__ = ["Decision", "Thresholds", "decide"]

Reason = Literal["first", "availability", "devices", "pods", "utilization", "memory", "heartbeat"]


@dataclass(frozen=True)
class Thresholds:
    utilization_points: float = 5.0
    memory_fraction: float = 0.05
    heartbeat_seconds: float = 60.0
    min_interval_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_seconds < STALE_AFTER_SECONDS:
            raise ValueError(
                f"heartbeat must be between 0 and {STALE_AFTER_SECONDS} s (readers' staleness)"
            )


DEFAULT: Final = Thresholds()


@dataclass(frozen=True)
class Decision:
    publish: bool
    reason: Reason | None = None  # why it publishes; or, when held back, what changed


def decide(
    previous: GpuTelemetry | None,
    previous_at: float | None,
    current: GpuTelemetry,
    now: float,
    thresholds: Thresholds = DEFAULT,
) -> Decision:
    """Whether to publish `current`, given the last published document and its time."""
    if previous is None or previous_at is None:
        return Decision(True, "first")
    if (previous.source, previous.error) != (current.source, current.error):
        return Decision(True, "availability")
    elapsed = now - previous_at
    change = _change(previous, current, thresholds)
    if change is not None:
        return Decision(elapsed >= thresholds.min_interval_seconds, change)
    if elapsed >= thresholds.heartbeat_seconds:
        return Decision(True, "heartbeat")
    return Decision(False)


def _change(old: GpuTelemetry, new: GpuTelemetry, limits: Thresholds) -> Reason | None:
    old_gpus = {g.index: g for g in old.gpus}
    new_gpus = {g.index: g for g in new.gpus}
    if set(old_gpus) != set(new_gpus) or any(
        (old_gpus[i].uuid, old_gpus[i].mig_mode) != (g.uuid, g.mig_mode)
        for i, g in new_gpus.items()
    ):
        return "devices"
    old_pods = {(p.namespace, p.name): p for p in old.pods}
    new_pods = {(p.namespace, p.name): p for p in new.pods}
    if set(old_pods) != set(new_pods) or any(
        old_pods[key].gpu_indexes != p.gpu_indexes for key, p in new_pods.items()
    ):
        return "pods"
    pairs = [(old_gpus[i], g) for i, g in new_gpus.items()]
    pod_pairs = [(old_pods[key], p) for key, p in new_pods.items()]
    utilizations = [(a.utilization_percent, b.utilization_percent) for a, b in pairs] + [
        (a.utilization_percent, b.utilization_percent) for a, b in pod_pairs
    ]
    if any(_moved(a, b, limits.utilization_points) for a, b in utilizations):
        return "utilization"
    for gpu_a, gpu_b in pairs:
        total = gpu_b.memory_total_mib or gpu_a.memory_total_mib
        limit = (
            limits.memory_fraction * total if total else _relative(gpu_a.memory_used_mib, limits)
        )
        if _moved(gpu_a.memory_used_mib, gpu_b.memory_used_mib, limit):
            return "memory"
    for pod_a, pod_b in pod_pairs:
        limit = _relative(pod_a.memory_used_mib, limits)
        if _moved(pod_a.memory_used_mib, pod_b.memory_used_mib, limit):
            return "memory"
    return None


def _relative(value: int | None, limits: Thresholds) -> float:
    return limits.memory_fraction * max(value or 0, 1)


def _moved(old: float | None, new: float | None, limit: float) -> bool:
    """A value appearing or disappearing is a change; so is a move by more than `limit`."""
    if old is None or new is None:
        return (old is None) != (new is None)
    return abs(new - old) > limit
