"""`tidal agent --once`: one reading of this node's GPUs, and the document the agent would
publish from it.

Owns: `take` (one backend reading -> a `Snapshot`: the raw reading and the window's summary)
and `once` (the annotation's JSON, for the CLI). Must not: talk to the API server, or import
what only the loop needs: kubernetes (through `cluster`), aiohttp (`server`) and, unless a
simulated snapshot is asked for, YAML (`simulation`). The GPU test bundle (`make gpu-bundle`)
ships this path with pydantic and nvidia-ml-py alone, and runs it where no other package is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tidal.agent.averaging import Summary, Window
from tidal.agent.config import Config, configure_logging
from tidal.api.telemetry import GpuTelemetry
from tidal.clients.nvml import GpuBackend, NvmlBackend, PodRef, Reading

__all__ = ["Snapshot", "once", "take"]


@dataclass(frozen=True)
class Snapshot:
    reading: Reading  # what the backend said, process by process
    summary: Summary  # what the agent makes of it

    @property
    def document(self) -> GpuTelemetry:
        return self.summary.document


def take(
    backend: GpuBackend, now: float, *, window_seconds: float = 10.0, pods: Sequence[PodRef] = ()
) -> Snapshot:
    """Read `backend` once (blocking: NVML) and summarize that reading as a window of one.

    `pods` are the pods the agent would know on this node; without them (`--once`, which lists
    nothing) every GPU process counts as unattributed."""
    reading = backend.read(now, pods)
    window = Window(window_seconds)
    window.add(now, reading)
    summary = window.summary(now, {p.uid: p for p in pods})
    if summary is None:  # unreachable: a reading was just added
        raise AssertionError("empty window after a reading")
    return Snapshot(reading, summary)


def once(config: Config) -> str:
    """One reading of this node's GPUs as the annotation's JSON; touches no API server."""
    configure_logging()
    backend = _backend(config)
    try:
        snapshot = take(backend, time.time(), window_seconds=config.window_seconds)
        return snapshot.document.to_annotation()
    finally:
        backend.close()


def _backend(config: Config) -> GpuBackend:
    if not config.simulate:
        return NvmlBackend(config.proc_root)
    # Imported here, not above: the simulation needs YAML, which reading NVML must not.
    from tidal.agent.simulation import SimulatedBackend, load_scenario

    return SimulatedBackend(config.node_name or "simulated", load_scenario(config.scenario))
