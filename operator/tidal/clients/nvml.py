"""GPU readings from NVML (nvidia-ml-py, module `pynvml`): the only module in Tidal that imports it.

Owns: the GPU backend interface the node agent samples (`GpuBackend`, a Protocol, and the plain
data it returns: `Reading`, `GpuReading`, `ProcessReading`), its real implementation
`NvmlBackend`, and the mapping of a GPU process to the pod that runs it (`/proc/<pid>/cgroup` ->
pod UID). Must not: average, decide when to publish or talk to the API server (the agent does);
and never let an NVML exception escape: every failure becomes data (`Reading.error`,
`GpuReading.error`, or a null field), because a node agent that raises on a node without a
driver would crash-loop.

What NVML may refuse, and what the reading says then:

    nvmlInit: library missing, driver not loaded,      -> Reading(source="unavailable", error=...),
      no permission, driver/library mismatch              retried every `retry_init_seconds`
    nvmlDeviceGetCount fails (GPU lost, reset needed)  -> same; NVML is shut down and re-initialized
    one device's handle fails (GPU lost, permission)   -> that GPU's fields null, its error set
    one field is not supported (power on some boards,  -> that field null ("unknown", never 0)
      utilization on a MIG-enabled GPU)

Every call blocks (NVML is a C library): the agent calls `read` through `asyncio.to_thread`.
The `nvml` constructor argument is the module to use: the real `pynvml` by default, a fake one in
the unit tests (the seam that lets every branch be tested without a GPU).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import pynvml

__all__ = [
    "GpuBackend",
    "GpuReading",
    "NvmlBackend",
    "PodRef",
    "ProcessReading",
    "Reading",
    "normalize_product",
    "pod_uid_from_cgroup",
    "pod_uid_of_process",
]

log = logging.getLogger("tidal.agent.nvml")

Source = Literal["nvml", "simulated", "unavailable"]

_MIB: Final = 1024 * 1024


@dataclass(frozen=True)
class PodRef:
    """A pod bound to the node, as the API server describes it (the agent lists them)."""

    uid: str
    namespace: str
    name: str
    node_name: str | None = None
    gpus: int = 0  # nvidia.com/gpu requested by its containers (limits; requests must equal them)
    created: str = ""  # creationTimestamp, for a stable order
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one instant. None means the driver could not say (not the same as 0)."""

    index: int
    uuid: str | None = None
    name: str | None = None  # as NVML reports it, e.g. "NVIDIA H100 80GB HBM3"
    utilization_percent: float | None = None
    memory_used_mib: int | None = None
    memory_total_mib: int | None = None
    power_watts: float | None = None
    temperature_c: int | None = None
    mig_mode: bool | None = None
    # True when the driver answered nvmlDeviceGetProcessUtilization for this GPU: processes then
    # carry measured utilization (0 for a process with no sample since the previous read).
    process_samples: bool = False
    error: str | None = None


@dataclass(frozen=True)
class ProcessReading:
    """A compute process on one GPU; `pod_uid` None when it runs outside any pod (or is gone)."""

    pid: int
    gpu_index: int
    memory_used_mib: int | None = None
    utilization_percent: float | None = None
    pod_uid: str | None = None


@dataclass(frozen=True)
class Reading:
    """Everything one sample of a node's GPUs produced."""

    source: Source
    gpus: tuple[GpuReading, ...] = ()
    processes: tuple[ProcessReading, ...] = ()
    driver_version: str | None = None
    error: str | None = None


class GpuBackend(Protocol):
    """What the agent samples: NVML on a real node, a scenario in the simulated fleet."""

    def read(self, now: float, pods: Sequence[PodRef]) -> Reading:
        """One sample at `now` (Unix seconds). `pods` are the pods bound to this node: the NVML
        backend finds processes itself and ignores them; the simulated one has no processes and
        invents them for these pods."""
        ...

    def close(self) -> None:
        """Release the library (idempotent)."""
        ...


# --- product names ---------------------------------------------------------------------------

_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def normalize_product(name: str | bytes | None) -> str | None:
    """NVML's product name in the form of the `nvidia.com/gpu.product` label.

    GPU feature discovery writes the name with spaces replaced by dashes ("NVIDIA H100 80GB HBM3"
    -> "NVIDIA-H100-80GB-HBM3"); anything else a label value cannot hold also becomes a dash,
    and the result is trimmed to a valid label value (63 characters, alphanumeric at both ends).
    """
    if name is None:
        return None
    text = name.decode(errors="replace") if isinstance(name, bytes) else name
    value = _LABEL_UNSAFE.sub("-", text.strip())[:63].strip("-._")
    return value or None


# --- process -> pod ---------------------------------------------------------------------------

_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# One path segment naming a pod's cgroup, for both cgroup drivers:
#   cgroupfs: ".../pod<uid>"                       (uid with dashes)
#   systemd:  ".../kubepods-<qos>-pod<uid>.slice"  (uid with underscores; no <qos> if Guaranteed;
#             a kubelet with --cgroup-root adds its own prefix, e.g. "kubelet-kubepods-...")
_POD_SEGMENT = re.compile(rf"^(?:[a-z][a-z0-9]*(?:-[a-z0-9]+)*-)?pod(?P<uid>{_UUID})(?:\.slice)?$")


def pod_uid_from_cgroup(text: str) -> str | None:
    """The pod UID in the content of a `/proc/<pid>/cgroup` file, or None for a process that
    does not run in a pod.

    Handles cgroup v1 (`<id>:<controllers>:<path>` per hierarchy) and v2 (`0::<path>`), both the
    cgroupfs and the systemd cgroup driver, every QoS class, and paths made relative by a cgroup
    namespace (`0::/../../kubepods-besteffort-pod<uid>.slice/...`). The segment is matched
    whole, so a container ID that merely contains "pod" is never mistaken for a pod.
    """
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        for segment in parts[2].split("/"):
            match = _POD_SEGMENT.match(segment)
            if match:
                return match["uid"].replace("_", "-")
    return None


def pod_uid_of_process(proc_root: Path, pid: int) -> str | None:
    """The pod UID of process `pid` as seen under `proc_root` (the host's /proc with hostPID)."""
    try:
        return pod_uid_from_cgroup((proc_root / str(pid) / "cgroup").read_text())
    except (OSError, UnicodeDecodeError):
        # The process exited between NVML's list and this read, or lives in a PID namespace
        # the agent cannot see (no hostPID): it cannot be attributed, which is not an error.
        return None


# --- the NVML backend -------------------------------------------------------------------------


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlBackend:
    """Reads every GPU of this node through NVML; never raises out of `read`."""

    source: Final = "nvml"

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        *,
        nvml: Any = None,
        retry_init_seconds: float = 60.0,
    ) -> None:
        self._nvml: Any = nvml if nvml is not None else pynvml
        self._proc_root = proc_root
        self._retry_init_seconds = retry_init_seconds
        self._initialized = False
        self._last_init_attempt: float | None = None
        self._init_error: str | None = None
        self._logged_error: str | None = None
        # Per GPU, the driver timestamp (µs) of the newest process sample already consumed.
        self._last_sample_us: dict[int, int] = {}

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        self._last_init_attempt = None  # a read after close() initializes again at once
        if self._initialized:
            self._initialized = False
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()

    def _ensure_initialized(self, now: float) -> bool:
        if self._initialized:
            return True
        if (
            self._last_init_attempt is not None
            and now - self._last_init_attempt < self._retry_init_seconds
        ):
            return False
        self._last_init_attempt = now
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            self._init_error = f"NVML unavailable: {self._describe(exc)}"
            return False
        self._initialized = True
        self._init_error = None
        self._last_sample_us.clear()
        return True

    def _describe(self, exc: BaseException) -> str:
        value = getattr(exc, "value", None)
        hints = {
            self._nvml.NVML_ERROR_LIBRARY_NOT_FOUND: (
                "libnvidia-ml.so.1 not found (is the NVIDIA container runtime in use, "
                "runtimeClassName: nvidia, NVIDIA_VISIBLE_DEVICES=all?)"
            ),
            self._nvml.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA driver is not loaded",
            self._nvml.NVML_ERROR_NO_PERMISSION: (
                "no permission to open the GPU devices (run with device access or as root)"
            ),
            self._nvml.NVML_ERROR_GPU_IS_LOST: "a GPU is lost (fell off the bus; needs a reset)",
        }
        try:
            text = str(exc)
        except Exception:  # pynvml's __str__ calls into the library, which may be gone
            text = repr(exc)
        hint = hints.get(value)
        return f"{text}: {hint}" if hint else text

    def _unavailable(self, error: str) -> Reading:
        if error != self._logged_error:
            # One line per distinct failure, not one per sample: a node without a driver would
            # otherwise log every few seconds forever.
            log.warning("GPU telemetry unavailable: %s", error)
            self._logged_error = error
        return Reading(source="unavailable", error=error)

    # --- reading ------------------------------------------------------------------------

    def read(self, now: float, pods: Sequence[PodRef] = ()) -> Reading:
        if not self._ensure_initialized(now):
            return self._unavailable(self._init_error or "NVML unavailable")
        nvml = self._nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            # Whole-system failure (GPU lost, reset required): start over on the next attempt.
            self.close()
            self._last_init_attempt = now
            self._init_error = f"NVML device count failed: {self._describe(exc)}"
            return self._unavailable(self._init_error)
        driver = self._optional(nvml.nvmlSystemGetDriverVersion)
        gpus: list[GpuReading] = []
        processes: list[ProcessReading] = []
        for index in range(count):
            gpu, procs = self._read_device(index)
            gpus.append(gpu)
            processes.extend(procs)
        errors = [f"GPU {g.index}: {g.error}" for g in gpus if g.error]
        if gpus and len(errors) == len(gpus):
            return self._unavailable("; ".join(errors))
        if self._logged_error is not None:
            log.info("GPU telemetry available again: %d GPU(s)", len(gpus))
            self._logged_error = None
        return Reading(
            source="nvml",
            gpus=tuple(gpus),
            processes=tuple(processes),
            driver_version=_text(driver) if driver is not None else None,
            error="; ".join(errors) or None,
        )

    def _optional(self, fn: Any, *args: Any) -> Any:
        """fn(*args), or None when NVML cannot answer this one question."""
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def _read_device(self, index: int) -> tuple[GpuReading, list[ProcessReading]]:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except nvml.NVMLError as exc:
            return GpuReading(index=index, error=self._describe(exc)), []
        uuid = self._optional(nvml.nvmlDeviceGetUUID, handle)
        name = self._optional(nvml.nvmlDeviceGetName, handle)
        rates = self._optional(nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = self._optional(nvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = self._optional(nvml.nvmlDeviceGetPowerUsage, handle)
        temperature = self._optional(
            nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
        )
        mig = self._optional(nvml.nvmlDeviceGetMigMode, handle)
        samples = self._process_samples(index, handle)
        procs: list[ProcessReading] = []
        for proc in self._optional(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []:
            pid = int(proc.pid)
            used = getattr(proc, "usedGpuMemory", None)
            utilization: float | None = None
            if samples is not None:
                utilization = samples.get(pid, 0.0)
            procs.append(
                ProcessReading(
                    pid=pid,
                    gpu_index=index,
                    memory_used_mib=int(used) // _MIB if used is not None else None,
                    utilization_percent=utilization,
                    pod_uid=pod_uid_of_process(self._proc_root, pid),
                )
            )
        gpu = GpuReading(
            index=index,
            uuid=_text(uuid) if uuid is not None else None,
            name=_text(name) if name is not None else None,
            utilization_percent=float(rates.gpu) if rates is not None else None,
            memory_used_mib=int(memory.used) // _MIB if memory is not None else None,
            memory_total_mib=int(memory.total) // _MIB if memory is not None else None,
            power_watts=round(power_mw / 1000.0, 1) if power_mw is not None else None,
            temperature_c=int(temperature) if temperature is not None else None,
            mig_mode=(mig[0] == nvml.NVML_DEVICE_MIG_ENABLE) if mig is not None else None,
            process_samples=samples is not None,
        )
        return gpu, procs

    def _process_samples(self, index: int, handle: Any) -> dict[int, float] | None:
        """Mean SM utilization per pid since the previous read; None if the driver gives none.

        NVML answers NOT_FOUND when no process ran a kernel since the timestamp: sampling works,
        and every process was idle ({}). NOT_SUPPORTED (and anything else) means no samples, and
        the agent falls back to apportioning the GPU's utilization.
        """
        nvml = self._nvml
        try:
            raw = nvml.nvmlDeviceGetProcessUtilization(handle, self._last_sample_us.get(index, 0))
        except nvml.NVMLError as exc:
            return {} if getattr(exc, "value", None) == nvml.NVML_ERROR_NOT_FOUND else None
        by_pid: dict[int, list[float]] = {}
        newest = self._last_sample_us.get(index, 0)
        for sample in raw:
            by_pid.setdefault(int(sample.pid), []).append(float(sample.smUtil))
            newest = max(newest, int(sample.timeStamp))
        self._last_sample_us[index] = newest
        return {pid: min(100.0, sum(v) / len(v)) for pid, v in by_pid.items()}
