"""The real collector against the real NVML: what `NvmlBackend` reads on this machine's GPUs.

Prints what it read; the bundle's `run.py` keeps each test's output in its report, so a run on a
GPU machine doubles as a record of the readings. Imports only what the GPU bundle ships
(`make gpu-bundle`): pytest, pynvml, and Tidal's NVML path (no kopf, kubernetes or aiohttp).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest

from tests.gpu import cuda
from tidal.agent.averaging import Window
from tidal.api.telemetry import GpuTelemetry
from tidal.cli import main as cli
from tidal.clients.nvml import NvmlBackend, ProcessReading, Reading, pod_uid_from_cgroup


@pytest.fixture
def backend() -> Iterator[NvmlBackend]:
    nvml = NvmlBackend(Path("/proc"))
    try:
        yield nvml
    finally:
        nvml.close()


def _device_count() -> int:
    pynvml.nvmlInit()
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def test_every_gpu_is_read_with_plausible_values(backend: NvmlBackend) -> None:
    reading = backend.read(time.time())
    print(f"\ndriver {reading.driver_version}")
    for gpu in reading.gpus:
        print(
            f"GPU {gpu.index}: {gpu.name} {gpu.uuid} util={gpu.utilization_percent}% "
            f"mem={gpu.memory_used_mib}/{gpu.memory_total_mib} MiB power={gpu.power_watts} W "
            f"temp={gpu.temperature_c} C mig={gpu.mig_mode}"
        )

    assert reading.source == "nvml", reading.error
    assert reading.driver_version
    assert len(reading.gpus) == _device_count()
    for gpu in reading.gpus:
        assert gpu.error is None
        assert gpu.uuid is not None
        assert gpu.uuid.startswith("GPU-")
        assert gpu.name
        assert gpu.memory_total_mib is not None
        assert gpu.memory_total_mib > 1024
        assert gpu.memory_used_mib is not None
        assert 0 <= gpu.memory_used_mib <= gpu.memory_total_mib
        if gpu.mig_mode:
            continue  # utilization is not reported for a MIG-enabled GPU as a whole
        assert gpu.utilization_percent is not None
        assert 0 <= gpu.utilization_percent <= 100


def test_the_document_names_products_in_label_form(backend: NvmlBackend) -> None:
    now = time.time()
    window = Window(10)
    window.add(now, backend.read(now))
    summary = window.summary(now, {})

    assert summary is not None
    doc = summary.document
    print(f"\n{doc.to_annotation()}")
    assert doc.source == "nvml"
    for gpu in doc.gpus:
        assert gpu.product
        assert " " not in gpu.product


def test_the_cli_prints_one_nvml_reading(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["agent", "--once", "--node-name", "gpu-test"]) == 0

    doc = GpuTelemetry.model_validate_json(capsys.readouterr().out)
    assert doc.source == "nvml"
    assert len(doc.gpus) == _device_count()


@pytest.fixture
def cuda_process() -> Iterator[int]:
    """This process's pid, while it holds a CUDA context on GPU 0."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(cuda.context())
        except cuda.CudaUnavailableError as exc:
            pytest.skip(f"{exc}: cannot start a GPU process")
        yield os.getpid()


def test_a_process_holding_a_cuda_context_is_listed_with_its_memory(
    backend: NvmlBackend, cuda_process: int
) -> None:
    mine: list[ProcessReading] = []
    reading: Reading | None = None
    for _ in range(20):
        reading = backend.read(time.time())
        mine = [p for p in reading.processes if p.pid == cuda_process]
        if mine:
            break
        time.sleep(0.25)
    assert reading is not None
    print("\n" + json.dumps([vars(p) for p in reading.processes], default=str))
    if not mine and reading.processes == ():
        pytest.skip("the driver lists no processes to this user (see the DaemonSet notes)")
    assert mine, f"pid {cuda_process} not among {[p.pid for p in reading.processes]}"
    (proc,) = mine
    assert proc.gpu_index == 0
    # None outside a pod; inside one (a GPU machine may be a pod), the pod its cgroup names.
    assert proc.pod_uid == pod_uid_from_cgroup(Path("/proc/self/cgroup").read_text())
    assert proc.memory_used_mib is None or proc.memory_used_mib > 0
    assert reading.gpus[0].process_samples or proc.utilization_percent is None
