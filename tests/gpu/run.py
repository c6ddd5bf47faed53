"""Run Tidal's GPU tests from the folder `make gpu-bundle` builds, and write a report.

Shipped as `run.py` at the bundle's root (`tests/gpu/bundle.py` copies it there; it runs only
from there):

    python3 run.py [--report FILE] [--fake-nvml FILE] [-- PYTEST-ARGS...]

Owns: isolating the run, the pytest invocation and the report. Must not: use anything from
outside its folder. It re-executes itself as `python3 -I -S` (no PYTHONPATH, no user or site
packages: neither the project's virtualenv nor the machine's own packages are visible), puts
its own folder alone on `sys.path`, ignores pytest configuration files above it, and writes no
bytecode, so the folder stays as it was built and can be copied on.

The report (JSON; `gpu-report.json` in the current directory unless `--report` says where):
the machine and Python; the bundle's manifest and size; what was imported (no kopf or
kubernetes); NVML's answer (driver version, or why NVML is unavailable); per GPU its reading
(model, UUID, utilization, memory, power, temperature, MIG mode); per compute process its GPU,
memory, utilization and pod, read while this process holds a CUDA context, so at least this
process is listed wherever CUDA works; the `tidal.dev/gpu-telemetry` document the agent would
publish from that reading; each test's outcome, reason and printed output. A part that fails
says why in its place. The readings are written before the tests run, so a test that takes the
process down still leaves them behind.

`--fake-nvml FILE` replaces `pynvml` with what FILE's `fake_pynvml()` returns, before anything
imports it: the bundle's unit test runs it all on a machine without a GPU that way.

Exit status: pytest's (0 when every test passed or was skipped, as all are where NVML finds no
GPU), 2 for a command line or a Python this bundle cannot serve.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

    from tidal.agent.snapshot import Snapshot
    from tidal.clients.nvml import GpuBackend

BUNDLE = Path(__file__).resolve().parent
MANIFEST = BUNDLE / "BUNDLE.json"
_OLDEST_PYTHON = (3, 11)  # Tidal's own requirement (StrEnum, tomllib, datetime.UTC)
# Where this process waits for its own CUDA context to show up in NVML's process list.
_PROCESS_WAIT_SECONDS = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description="Tidal's GPU tests from this bundle, with a report."
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("gpu-report.json"),
        help="where to write the JSON report (default ./gpu-report.json)",
    )
    parser.add_argument(
        "--fake-nvml",
        type=Path,
        metavar="FILE",
        help="use FILE's fake_pynvml() as pynvml (testing the bundle without a GPU)",
    )
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest, after --")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not (sys.flags.isolated and sys.flags.no_site):
        script = str(Path(__file__).resolve())
        os.execv(sys.executable, [sys.executable, "-I", "-S", script, *argv])
    if not MANIFEST.is_file():
        print(f"run.py: {MANIFEST} missing: run the copy `make gpu-bundle` built", file=sys.stderr)
        return 2
    manifest = json.loads(MANIFEST.read_text())
    running = (sys.version_info.major, sys.version_info.minor)
    version = ".".join(map(str, running))
    if version not in manifest["pythons"]:
        fix = f"rebuild it with GPU_BUNDLE_PYTHONS={version}"
        if running < _OLDEST_PYTHON:
            fix = f"Tidal needs Python {'.'.join(map(str, _OLDEST_PYTHON))} or later"
        built_for = ", ".join(manifest["pythons"])
        print(f"run.py: built for Python {built_for}, not {version}: {fix}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(BUNDLE))
    sys.dont_write_bytecode = True
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    if args.fake_nvml is not None:
        _install_fake_nvml(args.fake_nvml)

    report: dict[str, Any] = {
        "time": _now(),
        "machine": {
            "hostname": platform.node(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "executable": sys.executable,
        },
        "bundle": {"path": str(BUNDLE), "sizeBytes": _size(BUNDLE), **manifest},
        "fakeNvml": None if args.fake_nvml is None else str(args.fake_nvml),
        **_section("readings", _readings),
        "tests": "running",
    }
    _write(args.report, report)
    results = _Results()
    exit_code = _pytest(args.pytest_args, results)
    report["tests"] = {
        "exitCode": exit_code,
        "counts": results.counts(),
        "results": list(results.tests.values()),
    }
    report["isolation"] = {
        "sysPath": list(sys.path),
        "modules": _imported(),
        "tidalModules": sorted(m for m in sys.modules if m.partition(".")[0] == "tidal"),
    }
    _write(args.report, report)
    _summarize(report, args.report)
    return exit_code


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def _install_fake_nvml(path: Path) -> None:
    spec = importlib.util.spec_from_file_location("_fake_nvml", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"run.py: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    sys.modules["pynvml"] = module.fake_pynvml()


# --- the tests -------------------------------------------------------------------------------


class _Results:
    """A pytest plugin keeping each test's outcome, reason and printed output."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.setdefault(
            report.nodeid,
            {"test": report.nodeid, "outcome": "passed", "seconds": 0.0, "reason": None},
        )
        entry["seconds"] = round(entry["seconds"] + report.duration, 3)
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["reason"] = report.longreprtext
        elif report.skipped:
            entry["outcome"] = "skipped"
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            entry["reason"] = reason.removeprefix("Skipped: ")
        if report.when == "call" and report.capstdout:
            entry["output"] = report.capstdout

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.tests.values():
            counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
        return counts


def _pytest(extra: list[str], results: _Results) -> int:
    import pytest

    return int(
        pytest.main(
            [
                str(BUNDLE / "tests" / "gpu"),
                *("-q", "-rs", "-W", "error", "-p", "no:cacheprovider"),
                # Only this folder: no pyproject.toml or pytest.ini from where it was copied.
                *("-c", os.devnull, "--rootdir", str(BUNDLE)),
                *extra,
            ],
            plugins=[results],
        )
    )


# --- the readings ----------------------------------------------------------------------------


def _readings() -> dict[str, Any]:
    from tests.gpu import cuda
    from tidal.clients.nvml import NvmlBackend

    backend = NvmlBackend(Path("/proc"))
    try:
        with contextlib.ExitStack() as stack:
            holder: dict[str, Any] = {"pid": os.getpid(), "held": False}
            try:
                stack.enter_context(cuda.context())
                holder["held"] = True
            except (cuda.CudaUnavailableError, cuda.CudaError) as exc:
                holder["reason"] = str(exc)
            snapshot = _snapshot(backend, os.getpid() if holder["held"] else None)
    finally:
        backend.close()
    reading = snapshot.reading
    return {
        "nvml": {
            "source": reading.source,
            "driverVersion": reading.driver_version,
            "error": reading.error,
        },
        "gpus": [_camel(dataclasses.asdict(gpu)) for gpu in reading.gpus],
        "cudaContext": holder,
        "processes": [_camel(dataclasses.asdict(proc)) for proc in reading.processes],
        "unattributedProcesses": snapshot.summary.unattributed_processes,
        "document": json.loads(snapshot.document.to_annotation()),
    }


def _snapshot(backend: GpuBackend, pid: int | None) -> Snapshot:
    """One snapshot; with `pid`, the first that lists it, or the last within the wait."""
    from tidal.agent.snapshot import take

    deadline = time.monotonic() + _PROCESS_WAIT_SECONDS
    while True:
        snapshot = take(backend, time.time())
        listed = any(p.pid == pid for p in snapshot.reading.processes)
        if pid is None or listed or time.monotonic() >= deadline:
            return snapshot
        time.sleep(0.25)


# --- the report ------------------------------------------------------------------------------


def _section(name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return build()
    except Exception:
        return {f"{name}Error": traceback.format_exc()}


def _camel(fields: dict[str, Any]) -> dict[str, Any]:
    """snake_case names as the telemetry document spells them (memory_used_mib -> memoryUsedMiB)."""
    out = {}
    for name, value in fields.items():
        first, *rest = name.split("_")
        out[first + "".join("MiB" if w == "mib" else w.capitalize() for w in rest)] = value
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _imported() -> list[str]:
    """The top-level packages this run imported that are not Python's own."""
    names = {name.partition(".")[0] for name in list(sys.modules)}
    return sorted(n for n in names if n not in sys.stdlib_module_names and not n.startswith("_"))


def _summarize(report: dict[str, Any], path: Path) -> None:
    lines = [""]
    nvml = report.get("nvml", {})
    lines.append(f"NVML: {nvml.get('source')} driver={nvml.get('driverVersion')}")
    if nvml.get("error"):
        lines.append(f"  error: {nvml['error']}")
    for gpu in report.get("gpus", []):
        lines.append(
            f"GPU {gpu['index']}: {gpu['name']} util={gpu['utilizationPercent']}%"
            f" mem={gpu['memoryUsedMiB']}/{gpu['memoryTotalMiB']} MiB power={gpu['powerWatts']} W"
            f" temp={gpu['temperatureC']} C mig={gpu['migMode']}"
        )
    for proc in report.get("processes", []):
        lines.append(
            f"process {proc['pid']} on GPU {proc['gpuIndex']}: {proc['memoryUsedMiB']} MiB"
            f" util={proc['utilizationPercent']} pod={proc['podUid']}"
        )
    if "readingsError" in report:
        lines.append(f"readings failed:\n{report['readingsError']}")
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(report["tests"]["counts"].items()))
    lines.append(f"tests: {counts or 'none ran'} (exit {report['tests']['exitCode']})")
    lines.append(f"report: {path.resolve()}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
