"""Who uses which GPU: one backend reading turned into the document's per-GPU and per-pod parts.

Owns: the pure mapping `Reading` -> `GpuSample`s and `Reading` + the node's pods -> `PodUsage`s,
including the apportioning rule used when the driver gives no per-process samples. Must not: do
I/O, keep state or average over time (`averaging` does that).

Per pod and GPU, utilization is either measured or apportioned:
- "process-samples": the sum of the pod's processes' NVML samples on that GPU (capped at 100);
- "apportioned": the GPU's utilization times the pod's share of the GPU memory held by all
  compute processes on it (an equal share per process when memory is unknown). Processes outside
  any pod count in the denominator: they use the GPU too.
A pod on several GPUs reports the mean over them (as the node reports the mean over its GPUs),
and "apportioned" if any of its GPUs was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tidal.api.telemetry import GpuSample, PodUsage
from tidal.clients.nvml import GpuReading, PodRef, ProcessReading, Reading, normalize_product

__all__ = ["Attribution", "attribute", "gpu_sample"]


@dataclass(frozen=True)
class Attribution:
    pods: list[PodUsage]
    # Compute processes that map to no known pod (host processes, or a pod not listed yet).
    unattributed_processes: int


def gpu_sample(gpu: GpuReading) -> GpuSample:
    return GpuSample(
        index=gpu.index,
        uuid=gpu.uuid,
        product=normalize_product(gpu.name),
        utilization_percent=_round(gpu.utilization_percent),
        memory_used_mib=gpu.memory_used_mib,
        memory_total_mib=gpu.memory_total_mib,
        power_watts=_round(gpu.power_watts),
        temperature_c=gpu.temperature_c,
        mig_mode=gpu.mig_mode,
    )


def attribute(reading: Reading, pods: Mapping[str, PodRef]) -> Attribution:
    """Per-pod GPU use in one reading; `pods` maps pod UID -> the pod (those on this node)."""
    gpus = {g.index: g for g in reading.gpus}
    on_gpu: dict[int, list[ProcessReading]] = {}
    for proc in reading.processes:
        on_gpu.setdefault(proc.gpu_index, []).append(proc)

    # uid -> gpu index -> (memory MiB or None, utilization or None, measured?)
    per_pod: dict[str, dict[int, tuple[int | None, float | None, bool]]] = {}
    unattributed = 0
    for index, procs in sorted(on_gpu.items()):
        gpu = gpus.get(index)
        for uid, mine in _by_pod(procs, pods).items():
            if uid is None:
                unattributed += len(mine)
                continue
            memory = _sum_known([p.memory_used_mib for p in mine])
            measured = gpu is not None and gpu.process_samples
            if measured:
                utilization: float | None = min(
                    100.0, sum(p.utilization_percent or 0.0 for p in mine)
                )
            else:
                utilization = _apportion(gpu, mine, procs)
            per_pod.setdefault(uid, {})[index] = (memory, utilization, measured)

    usages = []
    for uid, by_gpu in per_pod.items():
        pod = pods[uid]
        known = [u for _, u, _ in by_gpu.values() if u is not None]
        utilization = sum(known) / len(known) if known else None
        source = None
        if utilization is not None:
            measured_all = all(m for _, _, m in by_gpu.values())
            source = "process-samples" if measured_all else "apportioned"
        usages.append(
            PodUsage(
                namespace=pod.namespace,
                name=pod.name,
                uid=uid,
                gpu_indexes=sorted(by_gpu),
                memory_used_mib=_sum_known([m for m, _, _ in by_gpu.values()]),
                utilization_percent=_round(utilization),
                utilization_source=source,
            )
        )
    usages.sort(key=lambda u: (u.namespace, u.name))
    return Attribution(pods=usages, unattributed_processes=unattributed)


def _by_pod(
    procs: list[ProcessReading], pods: Mapping[str, PodRef]
) -> dict[str | None, list[ProcessReading]]:
    grouped: dict[str | None, list[ProcessReading]] = {}
    for proc in procs:
        uid = proc.pod_uid if proc.pod_uid in pods else None
        grouped.setdefault(uid, []).append(proc)
    return grouped


def _apportion(
    gpu: GpuReading | None, mine: list[ProcessReading], everyone: list[ProcessReading]
) -> float | None:
    if gpu is None or gpu.utilization_percent is None:
        return None
    memories = [p.memory_used_mib for p in everyone]
    total = sum(m for m in memories if m is not None)
    if all(m is not None for m in memories) and total > 0:
        share = sum(p.memory_used_mib or 0 for p in mine) / total
    else:
        share = len(mine) / len(everyone)
    return gpu.utilization_percent * share


def _sum_known(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
