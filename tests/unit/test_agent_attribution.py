"""Per-pod GPU use from one reading: measured where NVML samples processes, else apportioned."""

from __future__ import annotations

import pytest

from tidal.agent.attribution import attribute, gpu_sample
from tidal.clients.nvml import GpuReading, PodRef, ProcessReading, Reading

A = PodRef(uid="uid-a", namespace="team", name="llama-0", gpus=1)
B = PodRef(uid="uid-b", namespace="team", name="llama-1", gpus=1)
C = PodRef(uid="uid-c", namespace="other", name="batch", gpus=2)
PODS = {p.uid: p for p in (A, B, C)}


def _gpu(index: int, utilization: float | None, *, sampled: bool) -> GpuReading:
    return GpuReading(
        index=index,
        uuid=f"GPU-{index}",
        name="NVIDIA H100 80GB HBM3",
        utilization_percent=utilization,
        memory_used_mib=1000,
        memory_total_mib=81559,
        process_samples=sampled,
    )


def _proc(
    pid: int, gpu: int, uid: str | None, memory: int | None, util: float | None = None
) -> ProcessReading:
    return ProcessReading(
        pid=pid, gpu_index=gpu, memory_used_mib=memory, utilization_percent=util, pod_uid=uid
    )


def test_measured_utilization_is_the_sum_of_the_pods_process_samples() -> None:
    reading = Reading(
        source="nvml",
        gpus=(_gpu(0, 90, sampled=True),),
        processes=(
            _proc(1, 0, "uid-a", 1000, 30),
            _proc(2, 0, "uid-a", 1000, 25),
            _proc(3, 0, "uid-b", 2000, 20),
        ),
    )

    pods = {p.name: p for p in attribute(reading, PODS).pods}

    assert pods["llama-0"].utilization_percent == 55.0
    assert pods["llama-0"].memory_used_mib == 2000
    assert pods["llama-0"].utilization_source == "process-samples"
    assert pods["llama-1"].utilization_percent == 20.0


def test_measured_utilization_is_capped_at_100() -> None:
    reading = Reading(
        source="nvml",
        gpus=(_gpu(0, 100, sampled=True),),
        processes=(_proc(1, 0, "uid-a", 1, 80), _proc(2, 0, "uid-a", 1, 70)),
    )

    (pod,) = attribute(reading, PODS).pods

    assert pod.utilization_percent == 100.0


def test_without_samples_the_gpu_is_apportioned_by_memory_share() -> None:
    reading = Reading(
        source="nvml",
        gpus=(_gpu(0, 80, sampled=False),),
        processes=(_proc(1, 0, "uid-a", 3000), _proc(2, 0, "uid-b", 1000)),
    )

    pods = {p.name: p for p in attribute(reading, PODS).pods}

    assert pods["llama-0"].utilization_percent == 60.0
    assert pods["llama-1"].utilization_percent == 20.0
    assert {p.utilization_source for p in pods.values()} == {"apportioned"}


def test_without_memory_figures_the_gpu_is_shared_equally_per_process() -> None:
    reading = Reading(
        source="nvml",
        gpus=(_gpu(0, 90, sampled=False),),
        processes=(
            _proc(1, 0, "uid-a", None),
            _proc(2, 0, "uid-a", None),
            _proc(3, 0, "uid-b", 500),
        ),
    )

    pods = {p.name: p for p in attribute(reading, PODS).pods}

    assert pods["llama-0"].utilization_percent == 60.0
    assert pods["llama-1"].utilization_percent == 30.0
    assert pods["llama-0"].memory_used_mib is None


def test_processes_outside_pods_keep_their_share_and_are_counted() -> None:
    reading = Reading(
        source="nvml",
        gpus=(_gpu(0, 100, sampled=False),),
        processes=(
            _proc(1, 0, "uid-a", 1000),
            _proc(2, 0, None, 1000),  # a host process
            _proc(3, 0, "uid-unknown", 2000),  # a pod the agent has not listed yet
        ),
    )

    result = attribute(reading, PODS)

    (pod,) = result.pods
    assert pod.utilization_percent == 25.0
    assert result.unattributed_processes == 2


def test_a_pod_on_several_gpus_reports_the_mean_and_all_its_indexes() -> None:
    reading = Reading(
        source="nvml",
        gpus=(_gpu(0, 80, sampled=True), _gpu(1, 40, sampled=True)),
        processes=(_proc(1, 0, "uid-c", 10000, 80), _proc(1, 1, "uid-c", 6000, 40)),
    )

    (pod,) = attribute(reading, PODS).pods

    assert pod.gpu_indexes == [0, 1]
    assert pod.utilization_percent == 60.0
    assert pod.memory_used_mib == 16000


def test_one_apportioned_gpu_makes_the_pod_apportioned() -> None:
    reading = Reading(
        source="nvml",
        gpus=(_gpu(0, 80, sampled=True), _gpu(1, 40, sampled=False)),
        processes=(_proc(1, 0, "uid-c", 100, 80), _proc(1, 1, "uid-c", 100)),
    )

    (pod,) = attribute(reading, PODS).pods

    assert pod.utilization_source == "apportioned"
    assert pod.utilization_percent == 60.0


def test_unknown_gpu_utilization_without_samples_leaves_the_pod_unknown() -> None:
    reading = Reading(
        source="nvml",
        gpus=(_gpu(0, None, sampled=False),),  # e.g. MIG enabled
        processes=(_proc(1, 0, "uid-a", 5000),),
    )

    (pod,) = attribute(reading, PODS).pods

    assert pod.utilization_percent is None
    assert pod.utilization_source is None
    assert pod.memory_used_mib == 5000


def test_pods_are_sorted_by_namespace_and_name() -> None:
    reading = Reading(
        source="nvml",
        gpus=(_gpu(0, 10, sampled=True), _gpu(1, 10, sampled=True)),
        processes=(
            _proc(1, 0, "uid-b", 1, 1),
            _proc(2, 0, "uid-a", 1, 1),
            _proc(3, 1, "uid-c", 1, 1),
        ),
    )

    names = [(p.namespace, p.name) for p in attribute(reading, PODS).pods]

    assert names == [("other", "batch"), ("team", "llama-0"), ("team", "llama-1")]


@pytest.mark.parametrize("sampled", [True, False])
def test_a_gpu_without_processes_attributes_nothing(sampled: bool) -> None:
    reading = Reading(source="nvml", gpus=(_gpu(0, 70, sampled=sampled),))

    result = attribute(reading, PODS)

    assert result.pods == []
    assert result.unattributed_processes == 0


def test_gpu_sample_carries_the_label_form_of_the_product() -> None:
    sample = gpu_sample(_gpu(3, 12.345, sampled=False))

    assert sample.index == 3
    assert sample.product == "NVIDIA-H100-80GB-HBM3"
    assert sample.utilization_percent == 12.3
