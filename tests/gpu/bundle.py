"""Build the GPU test bundle: one folder with everything `tests/gpu` needs, and nothing else.

    python -m tests.gpu.bundle [--out build/gpu-bundle] [--wheels build/gpu-wheels]
                               [--python 3.11 --python 3.12 ...]          (`make gpu-bundle`)

A GPU machine may have no network and none of this project's packages, and what can be carried
to it is small (64 MiB), while the project's virtualenv is about 500 MB (kopf, kubernetes, the
dev tools). The bundle holds only:

- the pinned distributions, installed with `pip install --target` for each Python of `--python`
  (default 3.11, 3.12 and 3.13: the project's, a lent GPU machine's, the next): nvidia-ml-py,
  pydantic and pytest at the project's pins (pyproject.toml), and what they pull in at the pins
  of `TRANSITIVE` below; a distribution pinned nowhere stops the build. The Pythons share one
  folder: a compiled module (pydantic-core's) differs between them only in its file name
  (`_pydantic_core.cpython-312-x86_64-linux-gnu.so`), so each interpreter imports its own; any
  other file that differs stops the build;
- Tidal's NVML path (`TIDAL_MODULES`): the CLI, `tidal.agent.snapshot` and what they import,
  which is neither kopf nor kubernetes nor aiohttp. The bundle's unit test checks that a run
  imports every one of them, so the list cannot grow stale in either direction;
- `tests/__init__.py` and `tests/gpu/` (without this builder), `run.py` (`tests/gpu/run.py`,
  which runs the suite and writes the report) at the root, and `BUNDLE.json`, its manifest.

Owns: what goes in and the checks on it (pins, size). Must not: change anything but `--out`
and `--wheels`, or replace an `--out` that is not a bundle. Wheels are downloaded into
`--wheels` and installed from there alone; once they are there a rebuild needs no network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DIRECT",
    "LIMIT_BYTES",
    "PYTHONS",
    "TIDAL_MODULES",
    "TRANSITIVE",
    "Built",
    "BundleError",
    "build",
    "installed",
    "pins",
]

ROOT = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 64 * 1024 * 1024  # what a lent GPU machine takes along, the working tree included
PYTHONS = ("3.11", "3.12", "3.13")
MANIFEST = "BUNDLE.json"

# Pinned in pyproject.toml (the operator's dependencies and the dev extra).
DIRECT = ("nvidia-ml-py", "pydantic", "pytest")
# What DIRECT pulls in, which pyproject.toml does not pin: the versions the project's virtualenv
# resolved. pip checks them against DIRECT's requirements and refuses a conflict.
TRANSITIVE: Mapping[str, str] = {
    "annotated-types": "0.8.0",
    "iniconfig": "2.3.1",
    "packaging": "26.4",
    "pluggy": "1.7.0",
    "pydantic-core": "2.50.4",
    "pygments": "2.21.0",
    "typing-extensions": "4.16.0",
    "typing-inspection": "0.4.5",
}

# Under operator/tidal. The CLI builds every subcommand's flags, the gateway's included.
TIDAL_MODULES = (
    "__init__.py",
    "cli.py",
    "agent/__init__.py",
    "agent/attribution.py",
    "agent/averaging.py",
    "agent/config.py",
    "agent/publishing.py",
    "agent/snapshot.py",
    "api/__init__.py",
    "api/collection.py",
    "api/common.py",
    "api/endpoint.py",
    "api/podtemplate.py",
    "api/sources.py",
    "api/telemetry.py",
    "clients/__init__.py",
    "clients/nvml.py",
    "gateway/__init__.py",
    "gateway/config.py",
)
_NOT_SHIPPED = ("bundle.py", "run.py")  # of tests/gpu: the builder, and the runner (at the root)

_PLATFORMS = {
    "x86_64": ("manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "aarch64": ("manylinux_2_17_aarch64", "manylinux2014_aarch64"),
}
_EXTENSION = re.compile(r"\.(cpython-3\d+-[a-z0-9_]+-linux-gnu|abi3)\.so$")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!-]+)\s*$")


class BundleError(Exception):
    """The bundle cannot be built as asked: a pin, pip, a file differing by Python, its size."""


@dataclass(frozen=True)
class Built:
    path: Path
    size_bytes: int
    pythons: tuple[str, ...]
    packages: Mapping[str, str]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """Every distribution the bundle installs -> its version: DIRECT as pyproject.toml pins them
    (exactly, `name==version`), then TRANSITIVE."""
    project = tomllib.loads(pyproject.read_text())["project"]
    found: dict[str, str] = {}
    for spec in (
        *project["dependencies"],
        *project.get("optional-dependencies", {}).get("dev", []),
    ):
        match = _PIN.match(spec)
        if match:
            found[_normalize(match[1])] = match[2]
    missing = [name for name in DIRECT if name not in found]
    if missing:
        raise BundleError(f"not pinned (name==version) in {pyproject.name}: {', '.join(missing)}")
    return {**{name: found[name] for name in DIRECT}, **TRANSITIVE}


def build(
    out: Path,
    wheels: Path,
    *,
    pythons: Sequence[str] = PYTHONS,
    machine: str = "x86_64",
    root: Path = ROOT,
) -> Built:
    """Build the bundle into `out` (replaced whole, only if it is a bundle)."""
    if not pythons:
        raise BundleError("no Python to build for")
    if machine not in _PLATFORMS:
        raise BundleError(f"unknown machine {machine!r}: one of {', '.join(_PLATFORMS)}")
    if out.exists() and not (out / MANIFEST).is_file():
        raise BundleError(f"{out} exists and is not a bundle (no {MANIFEST}): not replacing it")
    versions = pins(root / "pyproject.toml")
    wheels.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as scratch:
        stage = Path(scratch) / "bundle"
        for n, python in enumerate(pythons):
            target = stage if n == 0 else Path(scratch) / f"python{python}"
            _install(target, wheels, python, machine, versions)
            if n > 0:
                _merge(stage, target, python)
        shutil.rmtree(stage / "bin", ignore_errors=True)  # console scripts: run.py calls pytest
        _check_installed(stage, versions)
        shipped = _copy_sources(stage, root)
        manifest = {
            "builtAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pythons": list(pythons),
            "machine": machine,
            "packages": versions,
            "tidal": shipped,
        }
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
        if size >= LIMIT_BYTES:
            raise BundleError(f"{size / 2**20:.1f} MiB: over the {LIMIT_BYTES // 2**20} MiB limit")
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    return Built(out, size, tuple(pythons), versions)


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _install(
    target: Path, wheels: Path, python: str, machine: str, versions: Mapping[str, str]
) -> None:
    """Install the pinned set for `python` into `target` from `wheels`, downloading into
    `wheels` first what is not there yet."""
    requirements = [f"{name}=={version}" for name, version in versions.items()]
    for_python = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for platform in _PLATFORMS[machine]:
        for_python += ["--platform", platform]
    install = (
        *("install", "--quiet", "--no-compile", "--target", str(target)),
        *("--no-index", "--find-links", str(wheels)),
        *for_python,
        *requirements,
    )
    if _pip(*install).returncode == 0:
        return
    shutil.rmtree(target, ignore_errors=True)
    download = _pip("download", "--quiet", "--dest", str(wheels), *for_python, *requirements)
    if download.returncode != 0:
        raise BundleError(f"pip download for Python {python} failed:\n{download.stderr[-3000:]}")
    installed = _pip(*install)
    if installed.returncode != 0:
        raise BundleError(f"pip install for Python {python} failed:\n{installed.stderr[-3000:]}")


def _merge(stage: Path, other: Path, python: str) -> None:
    """Add `other`'s compiled modules to `stage`; everything else must be the same bytes."""
    for path in sorted(other.rglob("*")):
        relative = path.relative_to(other)
        if path.is_dir() or relative.parts[0] == "bin" or relative.parts[0].endswith(".dist-info"):
            continue
        existing = stage / relative
        if not existing.exists():
            if not _EXTENSION.search(path.name):
                raise BundleError(f"{relative} is installed for Python {python} alone")
            existing.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, existing)
        elif existing.read_bytes() != path.read_bytes():
            raise BundleError(
                f"{relative} differs for Python {python}: one folder cannot serve both"
            )


def installed(folder: Path) -> dict[str, str]:
    """The distributions installed in `folder` -> their versions (from their .dist-info)."""
    found = {}
    for info in folder.glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
        found[_normalize(name)] = version
    return found


def _check_installed(stage: Path, versions: Mapping[str, str]) -> None:
    unpinned = {n: v for n, v in installed(stage).items() if versions.get(n) != v}
    if unpinned:
        listed = ", ".join(f"{n}=={v}" for n, v in sorted(unpinned.items()))
        raise BundleError(f"installed but not pinned (add to TRANSITIVE): {listed}")


def _copy_sources(stage: Path, root: Path) -> list[str]:
    """Copy Tidal's NVML path, the GPU tests and run.py; return the Tidal modules shipped."""
    package = root / "operator" / "tidal"
    modules = []
    for relative in TIDAL_MODULES:
        target = stage / "tidal" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(package / relative, target)
        parts = ("tidal", *Path(relative).with_suffix("").parts)
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    tests = root / "tests"
    (stage / "tests" / "gpu").mkdir(parents=True)
    shutil.copy2(tests / "__init__.py", stage / "tests" / "__init__.py")
    for source in sorted((tests / "gpu").glob("*.py")):
        if source.name not in _NOT_SHIPPED:
            shutil.copy2(source, stage / "tests" / "gpu" / source.name)
    shutil.copy2(tests / "gpu" / "run.py", stage / "run.py")
    return sorted(modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.gpu.bundle", description="Build the GPU test bundle."
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-bundle")
    parser.add_argument("--wheels", type=Path, default=ROOT / "build" / "gpu-wheels")
    parser.add_argument(
        "--python",
        action="append",
        dest="pythons",
        metavar="X.Y",
        help=f"a Python to install for; repeat for several (default {', '.join(PYTHONS)})",
    )
    parser.add_argument("--machine", choices=sorted(_PLATFORMS), default="x86_64")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        built = build(args.out, args.wheels, pythons=args.pythons or PYTHONS, machine=args.machine)
    except BundleError as err:
        print(f"gpu bundle: error: {err}", file=sys.stderr)
        return 1
    print(
        f"gpu bundle: {built.path} {built.size_bytes / 2**20:.1f} MiB"
        f" (limit {LIMIT_BYTES // 2**20} MiB), Python {', '.join(built.pythons)},"
        f" built in {time.monotonic() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
