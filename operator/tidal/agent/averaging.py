"""The averaging window: the last few seconds of readings of one node -> one telemetry document.

Owns: which readings count (those of the last `seconds`, of the same source as the newest) and
how each field is combined. Must not: read the clock (`now` is a parameter), do I/O or decide
whether to publish (`publishing` does).

Combining, per GPU and per pod: utilization and power are means over the window (a duty cycle
sampled every few seconds is noisy; one sample would make the rate limiter publish on noise);
memory, temperature, UUID, product and MIG mode are the newest values (they are levels, and
memory is what a placement decision must fit into now). A GPU or pod present in the newest
reading only is reported from that reading; one that vanished is dropped at once. When the
newest reading is unavailable the document is unavailable too: stale numbers are never averaged
into a document that says NVML has failed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import fmean
from typing import TypeVar

from tidal.agent.attribution import attribute, gpu_sample
from tidal.api.telemetry import GpuSample, GpuTelemetry, PodUsage
from tidal.clients.nvml import PodRef, Reading

__all__ = ["Summary", "Window"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Summary:
    """The document plus what the metrics need and the document does not carry."""

    document: GpuTelemetry
    model_names: dict[int, str] = field(default_factory=dict)  # GPU index -> NVML name
    unattributed_processes: int = 0
    readings: int = 0


class Window:
    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("the averaging window must be positive")
        self.seconds = seconds
        self._entries: deque[tuple[float, Reading]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, now: float, reading: Reading) -> None:
        self._entries.append((now, reading))
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._entries and self._entries[0][0] <= now - self.seconds:
            self._entries.popleft()

    def summary(self, now: float, pods: Mapping[str, PodRef]) -> Summary | None:
        """The document for the window ending at `now`; None before the first reading."""
        self._prune(now)
        if not self._entries:
            return None
        newest = self._entries[-1][1]
        header = {
            "time": datetime.fromtimestamp(now, UTC).replace(microsecond=0),
            "window_seconds": round(self.seconds),
            "source": newest.source,
            "driver_version": newest.driver_version,
            "error": newest.error,
        }
        if newest.source == "unavailable":
            return Summary(document=GpuTelemetry.model_validate(header), readings=1)
        readings = [r for _, r in self._entries if r.source == newest.source]
        attributions = [attribute(r, pods) for r in readings]
        doc = GpuTelemetry.model_validate(
            {
                **header,
                "gpus": _combine_gpus([[gpu_sample(g) for g in r.gpus] for r in readings]),
                "pods": _combine_pods([a.pods for a in attributions]),
            }
        )
        return Summary(
            document=doc,
            model_names={g.index: g.name for g in newest.gpus if g.name},
            unattributed_processes=attributions[-1].unattributed_processes,
            readings=len(readings),
        )


def _combine_gpus(history: list[list[GpuSample]]) -> list[GpuSample]:
    newest = history[-1]
    combined = []
    for gpu in newest:
        same = [g for sample in history for g in sample if g.index == gpu.index]
        combined.append(
            gpu.model_copy(
                update={
                    "utilization_percent": _mean(same, lambda g: g.utilization_percent),
                    "power_watts": _mean(same, lambda g: g.power_watts),
                }
            )
        )
    return combined


def _combine_pods(history: list[list[PodUsage]]) -> list[PodUsage]:
    newest = history[-1]
    combined = []
    for pod in newest:
        same = [p for sample in history for p in sample if p.uid == pod.uid]
        combined.append(
            pod.model_copy(
                update={"utilization_percent": _mean(same, lambda p: p.utilization_percent)}
            )
        )
    return combined


def _mean(items: list[_T], value: Callable[[_T], float | None]) -> float | None:
    known = [v for v in map(value, items) if v is not None]
    return round(fmean(known), 1) if known else None
