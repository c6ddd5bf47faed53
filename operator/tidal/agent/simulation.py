"""Simulated GPUs for the local (KWOK) fleet: a `GpuBackend` driven by a scenario file.

Owns: the scenario schema (curves per node and per pod), the curves themselves, the override
annotation, and `SimulatedBackend`, which invents NVML-like readings for one simulated node and
the GPU pods bound to it. Must not: do I/O besides loading a scenario file, read the clock
(`now` is a parameter) or know anything about publishing. Every value is a pure function of
(scenario, seed, node, pod, now), so tests are deterministic and restarts change nothing.

Scenario file (YAML; the default is `scenarios/default.yaml`)::

    seed: 7
    defaults:
      node: {kind: steady, percent: 0}          # GPUs no pod uses ("background")
      pod: {kind: diurnal, minPercent: 35, maxPercent: 75, periodSeconds: 600}
    nodes:                                      # first match wins; fnmatch on the node name
      - match: "h100-spot-*"
        curve: {kind: bursty, basePercent: 10, burstPercent: 80, burstProbability: 0.25}
    pods:                                       # "ns/name" glob, or a name glob (any namespace)
      - match: "default/llama-*"
        curve: {kind: steady, percent: 60, memoryPercent: 85}

Curves (all clamped to 0-100 %; `noisePercent` adds deterministic jitter per second;
`memoryPercent` is the GPU memory in use, and follows utilization when omitted):
- steady: `percent`;
- diurnal: a sine between `minPercent` and `maxPercent` over `periodSeconds`, starting at
  `phaseSeconds` (default: a phase derived from the seed and the node or pod, so nodes differ);
- bursty: `basePercent`, and `burstPercent` during a burst; time is cut into `burstSeconds`
  slots and each slot is a burst with `burstProbability`, drawn from the seed.

Overrides, so tests and demos can make a node hot or cold at will: the annotation
`tidal.dev/simulated-gpu-utilization: "95"` on a Node sets every GPU of it (and its pods) to
95 %; on a Pod it sets that pod's utilization. A pod's own override wins over its node's.
Remove the annotation to return to the scenario. The simulated agent re-reads annotations every
few seconds; the averaging window then takes `windowSeconds` to converge.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tidal.api.labels import (
    GPU_RESOURCE,
    NODE_GPU_COUNT,
    NODE_GPU_MEMORY_MIB,
    NODE_GPU_PRODUCT,
    SIMULATED_GPU_UTILIZATION,
)
from tidal.clients.nvml import GpuReading, PodRef, ProcessReading, Reading

__all__ = [
    "DEFAULT_SCENARIO",
    "Scenario",
    "SimulatedBackend",
    "backend_for_node",
    "curve_value",
    "load_scenario",
    "parse_override",
]

DEFAULT_SCENARIO: Final = Path(__file__).parent / "scenarios" / "default.yaml"

Percent = Annotated[float, Field(ge=0, le=100)]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _Curve(_Model):
    noise_percent: float = Field(default=0, ge=0, le=50)
    memory_percent: Percent | None = None


class Steady(_Curve):
    kind: Literal["steady"]
    percent: Percent = 0


class Diurnal(_Curve):
    kind: Literal["diurnal"]
    min_percent: Percent = 0
    max_percent: Percent = 100
    period_seconds: float = Field(default=86400, gt=0)
    phase_seconds: float | None = None


class Bursty(_Curve):
    kind: Literal["bursty"]
    base_percent: Percent = 0
    burst_percent: Percent = 100
    burst_probability: float = Field(default=0.1, ge=0, le=1)
    burst_seconds: float = Field(default=30, gt=0)


Curve = Annotated[Steady | Diurnal | Bursty, Field(discriminator="kind")]


class Rule(_Model):
    match: str = Field(min_length=1)
    curve: Curve


class Defaults(_Model):
    node: Curve = Field(default_factory=lambda: Steady(kind="steady", percent=0))
    pod: Curve = Field(
        default_factory=lambda: Diurnal(
            kind="diurnal", min_percent=35, max_percent=75, period_seconds=600
        )
    )


class Scenario(_Model):
    seed: int = 0
    defaults: Defaults = Field(default_factory=Defaults)
    nodes: list[Rule] = Field(default_factory=list)
    pods: list[Rule] = Field(default_factory=list)

    def node_curve(self, node: str) -> Steady | Diurnal | Bursty:
        for rule in self.nodes:
            if fnmatch.fnmatchcase(node, rule.match):
                return rule.curve
        return self.defaults.node

    def pod_curve(self, namespace: str, name: str) -> Steady | Diurnal | Bursty:
        for rule in self.pods:
            subject = f"{namespace}/{name}" if "/" in rule.match else name
            if fnmatch.fnmatchcase(subject, rule.match):
                return rule.curve
        return self.defaults.pod


def load_scenario(path: Path | None = None) -> Scenario:
    raw = yaml.safe_load((path or DEFAULT_SCENARIO).read_text()) or {}
    return Scenario.model_validate(raw)


def _unit(*key: object) -> float:
    """A deterministic number in [0, 1) for `key` (Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def curve_value(curve: Steady | Diurnal | Bursty, now: float, seed: int, key: str) -> float:
    """The curve's utilization (%) at Unix time `now` for the node or pod named `key`."""
    if isinstance(curve, Steady):
        value = curve.percent
    elif isinstance(curve, Diurnal):
        phase = (
            curve.phase_seconds
            if curve.phase_seconds is not None
            else _unit(seed, key, "phase") * curve.period_seconds
        )
        # Starts at the minimum at phase 0, peaks half a period later.
        angle = 2 * math.pi * ((now + phase) % curve.period_seconds) / curve.period_seconds
        value = (
            curve.min_percent + (curve.max_percent - curve.min_percent) * (1 - math.cos(angle)) / 2
        )
    else:
        slot = math.floor(now / curve.burst_seconds)
        burst = _unit(seed, key, "burst", slot) < curve.burst_probability
        value = curve.burst_percent if burst else curve.base_percent
    if curve.noise_percent:
        value += (_unit(seed, key, "noise", math.floor(now)) * 2 - 1) * curve.noise_percent
    return min(100.0, max(0.0, value))


def _memory_percent(curve: Steady | Diurnal | Bursty, utilization: float) -> float:
    return curve.memory_percent if curve.memory_percent is not None else utilization


def parse_override(annotations: Mapping[str, str] | None) -> float | None:
    """The override in `annotations`, clamped to 0-100; None when absent or not a number."""
    raw = (annotations or {}).get(SIMULATED_GPU_UTILIZATION)
    if raw is None:
        return None
    try:
        value = float(raw.strip().rstrip("%"))
    except ValueError:
        return None
    if math.isnan(value):
        return None
    return min(100.0, max(0.0, value))


# Board power (W) by product family, for plausible DCGM_FI_DEV_POWER_USAGE numbers.
_TDP_WATTS: Final = (
    ("H200", 700.0),
    ("H100", 700.0),
    ("A100", 400.0),
    ("L40S", 350.0),
    ("L4", 72.0),
    ("A10G", 300.0),
    ("T4", 70.0),
)


def _tdp(product: str) -> float:
    for family, watts in _TDP_WATTS:
        if family in product.upper().split("-"):
            return watts
    return 300.0


class SimulatedBackend:
    """One simulated node's GPUs. Pods requesting GPUs get consecutive GPU indexes in creation
    order (as a device plugin would hand them out), one invented process per pod and GPU."""

    source: Final = "simulated"

    def __init__(
        self,
        node: str,
        scenario: Scenario,
        *,
        product: str = "NVIDIA-H100-80GB-HBM3",
        gpu_count: int = 8,
        memory_total_mib: int = 81559,
    ) -> None:
        self.node = node
        self.scenario = scenario
        self.product = product
        self.gpu_count = max(0, gpu_count)
        self.memory_total_mib = memory_total_mib
        self.override: float | None = None

    def set_override(self, value: float | None) -> None:
        self.override = value

    def close(self) -> None:
        pass

    def read(self, now: float, pods: Sequence[PodRef] = ()) -> Reading:
        seed = self.scenario.seed
        node_curve = self.scenario.node_curve(self.node)
        background = (
            self.override
            if self.override is not None
            else curve_value(node_curve, now, seed, self.node)
        )
        background_memory = _memory_percent(node_curve, background)
        users: dict[int, list[tuple[PodRef, float, int]]] = {}
        next_index = 0
        gpu_pods = sorted(
            (p for p in pods if p.gpus > 0), key=lambda p: (p.created, p.namespace, p.name)
        )
        for pod in gpu_pods:
            curve = self.scenario.pod_curve(pod.namespace, pod.name)
            own = parse_override(pod.annotations)
            if own is not None:
                value = own
            elif self.override is not None:
                value = self.override
            else:
                value = curve_value(curve, now, seed, f"{pod.namespace}/{pod.name}")
            memory = round(self.memory_total_mib * _memory_percent(curve, value) / 100)
            for _ in range(pod.gpus):
                if self.gpu_count:
                    users.setdefault(next_index % self.gpu_count, []).append((pod, value, memory))
                next_index += 1
        gpus: list[GpuReading] = []
        processes: list[ProcessReading] = []
        for index in range(self.gpu_count):
            on_gpu = users.get(index, [])
            if on_gpu:
                utilization = min(100.0, sum(v for _, v, _ in on_gpu))
                memory_used = min(self.memory_total_mib, sum(m for _, _, m in on_gpu))
            else:
                utilization = background
                memory_used = round(self.memory_total_mib * background_memory / 100)
            for pod, value, memory in on_gpu:
                processes.append(
                    ProcessReading(
                        pid=10000 + len(processes),
                        gpu_index=index,
                        memory_used_mib=memory,
                        utilization_percent=round(value, 1),
                        pod_uid=pod.uid,
                    )
                )
            tdp = _tdp(self.product)
            gpus.append(
                GpuReading(
                    index=index,
                    uuid=f"GPU-{uuid.uuid5(uuid.NAMESPACE_URL, f'tidal-sim:{self.node}/{index}')}",
                    name=self.product.replace("-", " "),
                    utilization_percent=round(utilization, 1),
                    memory_used_mib=memory_used,
                    memory_total_mib=self.memory_total_mib,
                    power_watts=round(tdp * (0.1 + 0.9 * utilization / 100), 1),
                    temperature_c=round(30 + utilization / 2),
                    mig_mode=False,
                    process_samples=True,
                )
            )
        return Reading(
            source="simulated",
            gpus=tuple(gpus),
            processes=tuple(processes),
            driver_version="simulated",
        )


def backend_for_node(node: Mapping[str, Any], scenario: Scenario) -> SimulatedBackend:
    """A simulated backend shaped like the Node object (its GPU labels and allocatable)."""
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    count = _int(allocatable.get(GPU_RESOURCE), _int(labels.get(NODE_GPU_COUNT), 1))
    backend = SimulatedBackend(
        metadata["name"],
        scenario,
        product=labels.get(NODE_GPU_PRODUCT) or "NVIDIA-GPU",
        gpu_count=count,
        memory_total_mib=_int(labels.get(NODE_GPU_MEMORY_MIB), 81559),
    )
    backend.set_override(parse_override(metadata.get("annotations")))
    return backend


def _int(raw: object, default: int) -> int:
    try:
        return int(str(raw))
    except ValueError:
        return default
