# ruff: noqa: N802  (the fake mirrors pynvml's camelCase C API names)
"""A fake `pynvml` module: NVML without a GPU, for the unit tests and the GPU bundle's own test.

`FakeNvml` has just enough of pynvml's surface for `tidal.clients.nvml.NvmlBackend`. Tests
describe GPUs as `FakeGpu` values and make any call fail by naming it in `FakeGpu.fail` (per
device) or `FakeNvml.fail` (library-wide) with the NVML error code to raise. Error codes and
constants are the real module's, so a renamed constant in nvidia-ml-py breaks these tests too.

`fake_pynvml()` is the hook the GPU bundle's `run.py --fake-nvml FILE` calls: it installs the
returned object as the `pynvml` module before anything imports it, so the whole GPU suite and
its report run on a machine without a GPU. This module must therefore import nothing but the
standard library and the real pynvml (which the bundle ships; importing it loads no library).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

__all__ = ["MIB", "FakeGpu", "FakeNvml", "FakeProcess", "NVMLError", "fake_pynvml"]

MIB = 1024 * 1024


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return f"NVML error {self.value}"


@dataclass
class FakeProcess:
    pid: int
    used_mib: int | None
    samples: list[int] = field(default_factory=list)  # smUtil of each sample since the last read


@dataclass
class FakeGpu:
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    name: Any = "NVIDIA H100 80GB HBM3"
    utilization: int = 50
    used_mib: int = 1000
    total_mib: int = 81559
    power_mw: int = 300_500
    temperature: int = 60
    mig: int = 0
    processes: list[FakeProcess] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code


class FakeNvml:
    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
    NVML_ERROR_NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE

    def __init__(self, gpus: list[FakeGpu] | None = None, driver: Any = b"580.65.06") -> None:
        self.gpus = gpus if gpus is not None else []
        self.driver = driver
        self.fail: dict[str, int] = {}
        self.calls: list[str] = []
        self.initialized = False
        self.sample_timestamps: list[int] = []

    def _check(self, name: str, gpu: FakeGpu | None = None) -> None:
        self.calls.append(name)
        code = self.fail.get(name) or (gpu.fail.get(name) if gpu else None)
        if code:
            raise NVMLError(code)

    def nvmlInit(self) -> None:
        self._check("nvmlInit")
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> Any:
        self._check("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        gpu = self.gpus[index]
        self._check("nvmlDeviceGetHandleByIndex", gpu)
        return gpu

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        self._check("nvmlDeviceGetUUID", gpu)
        return gpu.uuid

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> Any:
        self._check("nvmlDeviceGetName", gpu)
        return gpu.name

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> SimpleNamespace:
        self._check("nvmlDeviceGetUtilizationRates", gpu)
        return SimpleNamespace(gpu=gpu.utilization, memory=10)

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> SimpleNamespace:
        self._check("nvmlDeviceGetMemoryInfo", gpu)
        return SimpleNamespace(used=gpu.used_mib * MIB, total=gpu.total_mib * MIB)

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        self._check("nvmlDeviceGetPowerUsage", gpu)
        return gpu.power_mw

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        self._check("nvmlDeviceGetTemperature", gpu)
        return gpu.temperature

    def nvmlDeviceGetMigMode(self, gpu: FakeGpu) -> list[int]:
        self._check("nvmlDeviceGetMigMode", gpu)
        return [gpu.mig, gpu.mig]

    def nvmlDeviceGetComputeRunningProcesses(self, gpu: FakeGpu) -> list[SimpleNamespace]:
        self._check("nvmlDeviceGetComputeRunningProcesses", gpu)
        return [
            SimpleNamespace(
                pid=p.pid, usedGpuMemory=None if p.used_mib is None else p.used_mib * MIB
            )
            for p in gpu.processes
        ]

    def nvmlDeviceGetProcessUtilization(self, gpu: FakeGpu, since: int) -> list[SimpleNamespace]:
        self.sample_timestamps.append(since)
        self._check("nvmlDeviceGetProcessUtilization", gpu)
        samples = [
            SimpleNamespace(pid=p.pid, timeStamp=since + 1000 * (n + 1), smUtil=value)
            for p in gpu.processes
            for n, value in enumerate(p.samples)
        ]
        if not samples:
            raise NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return samples


def fake_pynvml() -> FakeNvml:
    """A node like a lent GPU machine: two H100s, this process holding 512 MiB on GPU 0."""
    return FakeNvml(
        [
            FakeGpu(
                uuid="GPU-11111111-2222-3333-4444-555555555555",
                utilization=37,
                used_mib=1536,
                processes=[FakeProcess(os.getpid(), 512, samples=[20, 30])],
            ),
            FakeGpu(uuid="GPU-66666666-7777-8888-9999-000000000000", utilization=0, used_mib=0),
        ]
    )
