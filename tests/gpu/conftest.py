"""The GPU suite runs only where NVML finds a GPU; everywhere else every test is skipped with
the reason NVML gave. `make test-gpu` runs it; `make test` does not (CI has no GPU)."""

from __future__ import annotations

import functools

import pynvml
import pytest


@functools.cache
def nvml_unavailable() -> str | None:
    """Why the real NVML cannot be used here, or None when it finds at least one GPU."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"NVML unavailable ({exc}): no NVIDIA driver or GPU on this machine"
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    return None if count > 0 else "NVML works but finds no GPU"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = nvml_unavailable()
    if reason is None:
        return
    for item in items:
        item.add_marker(pytest.mark.skip(reason=reason))
