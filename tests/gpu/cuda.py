"""A CUDA context held for a block, so this process shows up in NVML's list of GPU processes.

Owns: the few CUDA driver API calls (through ctypes and `libcuda.so.1`, no CUDA toolkit or
Python package) that make a compute process without running a kernel. The GPU tests and the
bundle's report both use it: the report lists this process's attribution even on a machine
where nothing else runs on the GPU.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CudaError", "CudaUnavailableError", "context"]

# cuInit's answer when the driver is there but sees no GPU (CUDA_ERROR_NO_DEVICE).
_NO_DEVICE = 100


class CudaUnavailableError(Exception):
    """This machine cannot start a GPU process: no libcuda.so.1, or it sees no GPU."""


class CudaError(RuntimeError):
    """A CUDA driver call failed where it should have worked."""


def _check(result: int, call: str) -> None:
    if result != 0:
        raise CudaError(f"{call} returned CUDA error {result}")


@contextmanager
def context(device: int = 0) -> Iterator[None]:
    """Hold a CUDA context on GPU `device` for the block."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise CudaUnavailableError(f"libcuda.so.1 not loadable ({exc})") from exc
    result = cuda.cuInit(0)
    if result == _NO_DEVICE:
        raise CudaUnavailableError("libcuda.so.1 finds no GPU (cuInit: CUDA_ERROR_NO_DEVICE)")
    _check(result, "cuInit")
    handle = ctypes.c_int()
    _check(cuda.cuDeviceGet(ctypes.byref(handle), device), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    _check(cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, handle), "cuCtxCreate_v2")
    try:
        yield
    finally:
        cuda.cuCtxDestroy_v2(ctx)
