"""NvmlBackend against a fake `pynvml` module: every branch without a GPU.

The fake is `tests/fakes/nvml.py`: tests describe GPUs as `FakeGpu` values and make any call fail
by naming it in `FakeGpu.fail` (per device) or `FakeNvml.fail` (library-wide).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pynvml
import pytest
from tests.fakes.nvml import FakeGpu, FakeNvml, FakeProcess

from tidal.agent.averaging import Window
from tidal.clients.nvml import NvmlBackend, Reading

# --- helpers ----------------------------------------------------------------------------------

POD_A = "0b5e7f1c-8a2d-4c3e-9f1a-2b3c4d5e6f70"
POD_B = "5d6e7f80-1111-4222-8333-944455556666"


def _proc_root(tmp_path: Path, cgroups: dict[int, str]) -> Path:
    for pid, text in cgroups.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(text)
    return tmp_path


def _backend(nvml: FakeNvml, proc_root: Path | None = None, **kwargs: Any) -> NvmlBackend:
    return NvmlBackend(proc_root or Path("/nonexistent"), nvml=nvml, **kwargs)


# --- availability -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 not found"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "no permission"),
        (pynvml.NVML_ERROR_GPU_IS_LOST, "GPU is lost"),
    ],
)
def test_init_failure_gives_an_unavailable_reading_that_says_why(code: int, hint: str) -> None:
    nvml = FakeNvml([FakeGpu()])
    nvml.fail["nvmlInit"] = code

    reading = _backend(nvml).read(0.0)

    assert reading.source == "unavailable"
    assert reading.gpus == ()
    assert reading.error is not None
    assert hint in reading.error


def test_unavailable_is_logged_once_not_on_every_sample(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml([FakeGpu()])
    nvml.fail["nvmlInit"] = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    backend = _backend(nvml, retry_init_seconds=0)

    with caplog.at_level(logging.INFO, logger="tidal.agent.nvml"):
        for now in range(5):
            backend.read(float(now))

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "GPU telemetry unavailable" in warnings[0].getMessage()


def test_init_is_retried_only_after_the_retry_interval() -> None:
    nvml = FakeNvml([FakeGpu()])
    nvml.fail["nvmlInit"] = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    backend = _backend(nvml, retry_init_seconds=60)

    backend.read(0.0)
    backend.read(30.0)
    assert nvml.calls.count("nvmlInit") == 1

    del nvml.fail["nvmlInit"]  # the driver got loaded
    assert backend.read(59.0).source == "unavailable"
    reading = backend.read(60.0)

    assert nvml.calls.count("nvmlInit") == 2
    assert reading.source == "nvml"


def test_recovery_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml([FakeGpu()])
    nvml.fail["nvmlInit"] = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    backend = _backend(nvml, retry_init_seconds=0)
    backend.read(0.0)
    del nvml.fail["nvmlInit"]

    with caplog.at_level(logging.INFO, logger="tidal.agent.nvml"):
        backend.read(1.0)

    assert any("available again" in r.getMessage() for r in caplog.records)


def test_device_count_failure_shuts_nvml_down_and_reinitializes_later() -> None:
    nvml = FakeNvml([FakeGpu()])
    backend = _backend(nvml, retry_init_seconds=10)
    assert backend.read(0.0).source == "nvml"

    nvml.fail["nvmlDeviceGetCount"] = pynvml.NVML_ERROR_GPU_IS_LOST
    lost = backend.read(1.0)
    assert lost.source == "unavailable"
    assert lost.error is not None
    assert "GPU is lost" in lost.error
    assert not nvml.initialized

    del nvml.fail["nvmlDeviceGetCount"]
    assert backend.read(5.0).source == "unavailable"  # within the retry interval
    assert backend.read(11.0).source == "nvml"
    assert nvml.calls.count("nvmlInit") == 2


def test_a_node_without_gpus_is_nvml_with_an_empty_list_not_an_error() -> None:
    reading = _backend(FakeNvml([])).read(0.0)

    assert reading == Reading(source="nvml", driver_version="580.65.06")


def test_close_shuts_nvml_down_once() -> None:
    nvml = FakeNvml([FakeGpu()])
    backend = _backend(nvml)
    backend.read(0.0)

    backend.close()
    backend.close()

    assert nvml.calls.count("nvmlShutdown") == 1


def test_close_tolerates_a_failing_shutdown() -> None:
    nvml = FakeNvml([FakeGpu()])
    backend = _backend(nvml)
    backend.read(0.0)
    nvml.fail["nvmlShutdown"] = pynvml.NVML_ERROR_GPU_IS_LOST

    backend.close()
    del nvml.fail["nvmlShutdown"]

    assert nvml.calls.count("nvmlShutdown") == 1
    assert backend.read(1.0).source == "nvml"
    assert nvml.calls.count("nvmlInit") == 2


# --- several GPUs, fields, MIG ----------------------------------------------------------------


def test_several_gpus_are_read_with_every_field_in_our_units() -> None:
    nvml = FakeNvml(
        [
            FakeGpu(uuid="GPU-a", utilization=40, used_mib=2048, power_mw=301_234, temperature=55),
            FakeGpu(uuid="GPU-b", name=b"NVIDIA L4", utilization=0, used_mib=0, total_mib=23034),
        ]
    )

    reading = _backend(nvml).read(0.0)

    assert reading.source == "nvml"
    assert reading.error is None
    first, second = reading.gpus
    assert (first.index, first.uuid, first.name) == (0, "GPU-a", "NVIDIA H100 80GB HBM3")
    assert first.utilization_percent == 40.0
    assert (first.memory_used_mib, first.memory_total_mib) == (2048, 81559)
    assert first.power_watts == 301.2
    assert first.temperature_c == 55
    assert first.mig_mode is False
    assert (second.index, second.name, second.utilization_percent) == (1, "NVIDIA L4", 0.0)
    assert second.memory_total_mib == 23034


def test_mig_enabled_gpu_reports_mig_mode_and_unknown_utilization() -> None:
    gpu = FakeGpu(mig=pynvml.NVML_DEVICE_MIG_ENABLE)
    gpu.fail["nvmlDeviceGetUtilizationRates"] = pynvml.NVML_ERROR_NOT_SUPPORTED

    (reading,) = _backend(FakeNvml([gpu])).read(0.0).gpus

    assert reading.mig_mode is True
    assert reading.utilization_percent is None
    assert reading.memory_used_mib == 1000


@pytest.mark.parametrize(
    ("call", "field_name"),
    [
        ("nvmlDeviceGetPowerUsage", "power_watts"),
        ("nvmlDeviceGetTemperature", "temperature_c"),
        ("nvmlDeviceGetMigMode", "mig_mode"),
        ("nvmlDeviceGetUUID", "uuid"),
        ("nvmlDeviceGetName", "name"),
        ("nvmlDeviceGetMemoryInfo", "memory_used_mib"),
    ],
)
def test_an_unsupported_field_is_unknown_not_zero(call: str, field_name: str) -> None:
    gpu = FakeGpu()
    gpu.fail[call] = pynvml.NVML_ERROR_NOT_SUPPORTED

    reading = _backend(FakeNvml([gpu])).read(0.0)

    assert reading.source == "nvml"
    assert getattr(reading.gpus[0], field_name) is None
    assert reading.gpus[0].error is None


def test_one_lost_gpu_is_reported_with_its_error_and_the_others_still_read() -> None:
    lost = FakeGpu(uuid="GPU-lost")
    lost.fail["nvmlDeviceGetHandleByIndex"] = pynvml.NVML_ERROR_GPU_IS_LOST

    reading = _backend(FakeNvml([FakeGpu(uuid="GPU-ok"), lost])).read(0.0)

    assert reading.source == "nvml"
    assert reading.gpus[0].uuid == "GPU-ok"
    assert reading.gpus[1].uuid is None
    assert reading.gpus[1].utilization_percent is None
    assert reading.error is not None
    assert reading.error.startswith("GPU 1: ")


def test_every_gpu_unreadable_makes_the_reading_unavailable() -> None:
    gpus = [FakeGpu(), FakeGpu()]
    for gpu in gpus:
        gpu.fail["nvmlDeviceGetHandleByIndex"] = pynvml.NVML_ERROR_NO_PERMISSION

    reading = _backend(FakeNvml(gpus)).read(0.0)

    assert reading.source == "unavailable"
    assert reading.error is not None
    assert "GPU 0" in reading.error
    assert "GPU 1" in reading.error


def test_driver_version_is_text_whether_pynvml_returns_bytes_or_str() -> None:
    assert _backend(FakeNvml([], driver="550.1")).read(0.0).driver_version == "550.1"
    assert _backend(FakeNvml([], driver=b"550.2")).read(0.0).driver_version == "550.2"


# --- processes and pods -----------------------------------------------------------------------

SYSTEMD_V2 = (
    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/"
    "cri-containerd-abc.scope\n"
)


def test_processes_map_to_pods_through_their_cgroup(tmp_path: Path) -> None:
    gpu = FakeGpu(processes=[FakeProcess(101, 3000), FakeProcess(102, 500), FakeProcess(103, 1)])
    root = _proc_root(
        tmp_path,
        {
            101: SYSTEMD_V2.format(uid=POD_A.replace("-", "_")),
            102: f"0::/kubepods/besteffort/pod{POD_B}/0123456789abcdef\n",
            # 103 exited before its cgroup was read: not attributable, not an error
        },
    )

    reading = _backend(FakeNvml([gpu]), root).read(0.0)

    by_pid = {p.pid: p for p in reading.processes}
    assert by_pid[101].pod_uid == POD_A
    assert by_pid[101].memory_used_mib == 3000
    assert by_pid[102].pod_uid == POD_B
    assert by_pid[103].pod_uid is None
    assert {p.gpu_index for p in reading.processes} == {0}


def test_process_samples_give_mean_utilization_per_process() -> None:
    gpu = FakeGpu(processes=[FakeProcess(1, 10, samples=[40, 60]), FakeProcess(2, 10)])

    reading = _backend(FakeNvml([gpu])).read(0.0)

    assert reading.gpus[0].process_samples is True
    by_pid = {p.pid: p.utilization_percent for p in reading.processes}
    # A process without a sample since the last read ran no kernel: 0, measured.
    assert by_pid == {1: 50.0, 2: 0.0}


def test_process_samples_resume_from_the_newest_timestamp_seen() -> None:
    gpu = FakeGpu(processes=[FakeProcess(1, 10, samples=[40, 60])])
    nvml = FakeNvml([gpu])
    backend = _backend(nvml)

    backend.read(0.0)
    backend.read(1.0)

    assert nvml.sample_timestamps == [0, 2000]


def test_no_samples_since_the_last_read_means_idle_processes() -> None:
    gpu = FakeGpu(processes=[FakeProcess(1, 10)])  # the fake answers NOT_FOUND

    reading = _backend(FakeNvml([gpu])).read(0.0)

    assert reading.gpus[0].process_samples is True
    assert reading.processes[0].utilization_percent == 0.0


def test_unsupported_process_samples_leave_process_utilization_unknown() -> None:
    gpu = FakeGpu(processes=[FakeProcess(1, 10, samples=[90])])
    gpu.fail["nvmlDeviceGetProcessUtilization"] = pynvml.NVML_ERROR_NOT_SUPPORTED

    reading = _backend(FakeNvml([gpu])).read(0.0)

    assert reading.gpus[0].process_samples is False
    assert reading.processes[0].utilization_percent is None


def test_process_memory_the_driver_cannot_give_is_unknown() -> None:
    gpu = FakeGpu(processes=[FakeProcess(1, None)])

    assert _backend(FakeNvml([gpu])).read(0.0).processes[0].memory_used_mib is None


def test_a_failing_process_list_drops_the_processes_not_the_gpu() -> None:
    gpu = FakeGpu(processes=[FakeProcess(1, 10)])
    gpu.fail["nvmlDeviceGetComputeRunningProcesses"] = pynvml.NVML_ERROR_NO_PERMISSION

    reading = _backend(FakeNvml([gpu])).read(0.0)

    assert reading.processes == ()
    assert reading.gpus[0].utilization_percent == 50.0


# --- end to end through the window: the document the agent would publish ---------------------


def test_nvml_reading_becomes_a_document_with_pod_attribution(tmp_path: Path) -> None:
    from tidal.clients.nvml import PodRef

    gpu0 = FakeGpu(uuid="GPU-0", utilization=80, processes=[FakeProcess(7, 30000, samples=[70])])
    gpu1 = FakeGpu(uuid="GPU-1", utilization=10)
    root = _proc_root(tmp_path, {7: f"0::/kubepods/pod{POD_A}/c1\n"})
    backend = _backend(FakeNvml([gpu0, gpu1]), root)
    pods = {POD_A: PodRef(uid=POD_A, namespace="team", name="llama-spot-abc", gpus=1)}
    window = Window(10)

    window.add(100.0, backend.read(100.0))
    summary = window.summary(100.0, pods)

    assert summary is not None
    doc = summary.document
    assert doc.source == "nvml"
    assert doc.driver_version == "580.65.06"
    assert [g.product for g in doc.gpus] == ["NVIDIA-H100-80GB-HBM3"] * 2
    assert doc.utilization_percent == 45.0
    (pod,) = doc.pods
    assert (pod.namespace, pod.name, pod.uid) == ("team", "llama-spot-abc", POD_A)
    assert pod.gpu_indexes == [0]
    assert pod.memory_used_mib == 30000
    assert (pod.utilization_percent, pod.utilization_source) == (70.0, "process-samples")


def test_unavailable_nvml_becomes_an_unavailable_document() -> None:
    nvml = FakeNvml([FakeGpu()])
    nvml.fail["nvmlInit"] = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    window = Window(10)

    window.add(5.0, _backend(nvml).read(5.0))
    summary = window.summary(5.0, {})

    assert summary is not None
    doc = summary.document
    assert doc.source == "unavailable"
    assert doc.gpus == []
    assert doc.pods == []
    assert doc.error is not None
    assert "NVML" in doc.error
