"""Builds the local control plane's binaries from Go modules and caches them by version.

Owns: the pinned versions of etcd, Kubernetes and KWOK, the wrapper Go modules that make
`k8s.io/kubernetes` buildable outside its repository, the cache layout, and the progress line.
Must not: start anything (that is `cluster`), or write inside the repository.

Why wrapper modules: `k8s.io/kubernetes` requires every staging module at `v0.0.0` and replaces
them with `./staging/...` paths, so `go install k8s.io/kubernetes/cmd/...@vX` is refused. A module
of our own requires the release and replaces each staging module by its published `v0.Y.Z`; the
list is read from that release's own go.mod, never typed by hand. etcd's server module has
replace directives too, so it gets a wrapper of its own (sharing one would let minimal version
selection raise the dependencies both sides pin). KWOK has no replace directives and is
installed directly.

Pre-built binaries: point `TIDAL_BIN_DIR` at a folder holding all of `BINARIES`; nothing is
built then.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)
_K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """The control-plane binaries could not be built; the message says what to do."""


@dataclass(frozen=True)
class Versions:
    kubernetes: str = KUBERNETES_VERSION
    etcd: str = ETCD_VERSION
    kwok: str = KWOK_VERSION

    @property
    def key(self) -> str:
        """The cache key: a change of any version builds a fresh set beside the old one."""
        return f"k8s-{self.kubernetes}_etcd-{self.etcd}_kwok-{self.kwok}"

    @property
    def staging_version(self) -> str:
        """k8s.io/kubernetes v1.X.Y publishes its staging modules as v0.X.Y."""
        return "v0." + self.kubernetes.removeprefix("v1.")


def cache_root() -> Path:
    """`TIDAL_CACHE_DIR`, else `$XDG_CACHE_HOME/tidal`, else `~/.cache/tidal` (outside the repo)."""
    explicit = os.environ.get("TIDAL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tidal"


def bin_dir(versions: Versions = Versions()) -> Path:
    override = os.environ.get("TIDAL_BIN_DIR")
    if override:
        return Path(override)
    return cache_root() / "bin" / versions.key


def missing_binaries(directory: Path) -> list[str]:
    return [b for b in BINARIES if not os.access(directory / b, os.X_OK)]


def _stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ensure_binaries(versions: Versions = Versions(), progress: Progress = _stderr_progress) -> Path:
    """Return the folder with every binary, building what is missing (minutes when cold)."""
    target = bin_dir(versions)
    missing = missing_binaries(target)
    if not missing:
        return target
    if os.environ.get("TIDAL_BIN_DIR"):
        raise BuildError(
            f"TIDAL_BIN_DIR={target} lacks {', '.join(missing)}; "
            f"it must hold all of: {', '.join(BINARIES)}"
        )
    go = _find_go()
    work = cache_root() / "build" / versions.key
    work.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    progress(f"tidal: building control-plane binaries {versions.key} into {target}")
    if "etcd" in missing:
        _build_etcd(go, versions, work / "etcd", target, progress)
    if any(b in missing for b in _K8S_COMMANDS):
        _build_kubernetes(go, versions, work / "kubernetes", target, progress)
    if "kwok" in missing:
        _build_kwok(go, versions, target, progress)
    still = missing_binaries(target)
    if still:
        raise BuildError(f"build finished but {', '.join(still)} missing in {target}")
    progress(f"tidal: control-plane binaries ready in {time.monotonic() - started:.0f}s")
    return target


def _find_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is not installed (no `go` on PATH). Install Go >= 1.26 "
            "(Debian: `apt-get install golang-1.26` or https://go.dev/dl), "
            "or set TIDAL_BIN_DIR to a folder with pre-built " + ", ".join(BINARIES)
        )
    return go


def _go_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # A too-new `go` line must fail loudly rather than fetch a toolchain behind our back.
    env.setdefault("GOTOOLCHAIN", "local")
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    if extra:
        env.update(extra)
    return env


def _run(
    argv: Sequence[str], cwd: Path | None, label: str, progress: Progress, count_lines: int = 0
) -> str:
    """Run a go command; with `count_lines`, report every compiled package as progress."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=_go_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    last_report = time.monotonic()
    for done, line in enumerate(proc.stdout, start=1):
        lines.append(line)
        now = time.monotonic()
        if count_lines and now - last_report >= 15:
            pct = min(99, 100 * done // count_lines)
            progress(f"tidal: [{label}] compiled {done}/{count_lines} packages ({pct}%)")
            last_report = now
    rc = proc.wait()
    output = "".join(lines)
    if rc != 0:
        tail = "".join(lines[-40:])
        raise BuildError(f"[{label}] `{' '.join(argv)}` failed (exit {rc}):\n{tail}")
    return output


_LDFLAG_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")


def kubernetes_ldflags(version: str) -> str:
    """Stamp the exact release so `--version`, emulation-version checks and kubectl agree."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        raise BuildError(f"unexpected Kubernetes version {version!r}; want vMAJOR.MINOR.PATCH")
    major, minor = match.group(1), match.group(2)
    flags = ["-s", "-w"]
    for pkg in _LDFLAG_VERSION_PACKAGES:
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def staging_modules(release_go_mod: str) -> list[str]:
    """Modules that k8s.io/kubernetes requires at v0.0.0 or replaces with ./staging paths."""
    found: set[str] = set()
    for raw in release_go_mod.splitlines():
        parts = raw.split("//")[0].split()
        if parts[:1] in (["require"], ["replace"]):
            parts = parts[1:]
        if not parts or not parts[0].startswith("k8s.io/"):
            continue
        required_at_zero = len(parts) >= 2 and parts[1] == "v0.0.0"
        replaced_by_staging = (
            len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("./staging/")
        )
        if required_at_zero or replaced_by_staging:
            found.add(parts[0])
    return sorted(found)


def release_godebug(release_go_mod: str) -> str | None:
    """Upstream's `godebug default=go1.NN` line; only the main module's counts, so we copy it."""
    for raw in release_go_mod.splitlines():
        parts = raw.split()
        if parts[:1] == ["godebug"] and len(parts) == 2:
            return parts[1]
    return None


def _init_module(go: str, work: Path, name: str, progress: Progress, label: str) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    _run([go, "mod", "init", name], work, label, progress)


def _build_kubernetes(
    go: str, versions: Versions, work: Path, target: Path, progress: Progress
) -> None:
    label = f"kubernetes {versions.kubernetes}"
    progress(f"tidal: [{label}] resolving modules")
    _init_module(go, work, "example.invalid/tidal-k8s-bins", progress, label)
    info = json.loads(
        _run(
            [go, "mod", "download", "-json", f"k8s.io/kubernetes@{versions.kubernetes}"],
            work,
            label,
            progress,
        )
    )
    release_go_mod = Path(info["GoMod"]).read_text()
    edits = [f"-require=k8s.io/kubernetes@{versions.kubernetes}"]
    edits += [
        f"-replace={m}={m}@{versions.staging_version}" for m in staging_modules(release_go_mod)
    ]
    godebug = release_godebug(release_go_mod)
    if godebug:
        edits.append(f"-godebug={godebug}")
    _run([go, "mod", "edit", *edits], work, label, progress)
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in _K8S_COMMANDS)
    (work / "tools.go").write_text(
        "//go:build tools\n\n// Package tools pins the commands we build.\n"
        f"package tools\n\nimport (\n{imports}\n)\n"
    )
    _run([go, "mod", "tidy"], work, label, progress)
    packages = [f"k8s.io/kubernetes/cmd/{c}" for c in _K8S_COMMANDS]
    total = len(_run([go, "list", "-deps", *packages], work, label, progress).splitlines())
    progress(f"tidal: [{label}] compiling {total} packages (cold: about 4-10 min on 2 cores)")
    _go_build_into(
        go,
        work,
        target,
        ["-tags=selinux,notest,grpcnotrace", f"-ldflags={kubernetes_ldflags(versions.kubernetes)}"],
        packages,
        label,
        progress,
        total,
    )


def _build_etcd(go: str, versions: Versions, work: Path, target: Path, progress: Progress) -> None:
    label = f"etcd {versions.etcd}"
    progress(f"tidal: [{label}] resolving modules")
    _init_module(go, work, "example.invalid/tidal-etcd-bin", progress, label)
    _run([go, "get", f"go.etcd.io/etcd/server/v3@{versions.etcd}"], work, label, progress)
    (work / "tools.go").write_text(
        '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n'
    )
    _run([go, "mod", "tidy"], work, label, progress)
    pkg = "go.etcd.io/etcd/server/v3"
    total = len(_run([go, "list", "-deps", pkg], work, label, progress).splitlines())
    progress(f"tidal: [{label}] compiling {total} packages")
    ldflags = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={versions.etcd}"
    # The package is the module root, whose default binary name would be "v3".
    _go_build_into(
        go, work, target, [f"-ldflags={ldflags}"], [pkg], label, progress, total, rename="etcd"
    )


def _build_kwok(go: str, versions: Versions, target: Path, progress: Progress) -> None:
    label = f"kwok {versions.kwok}"
    progress(f"tidal: [{label}] compiling (go install)")
    with tempfile.TemporaryDirectory(prefix="tidal-kwok-") as tmp:
        env_bin = Path(tmp)
        proc = subprocess.run(
            [
                go,
                "install",
                "-v",
                "-trimpath",
                "-ldflags=-s -w",
                f"sigs.k8s.io/kwok/cmd/kwok@{versions.kwok}",
            ],
            env=_go_env({"GOBIN": str(env_bin), "GOFLAGS": "-buildvcs=false"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BuildError(f"[{label}] go install failed:\n{proc.stdout[-4000:]}")
        _install(env_bin / "kwok", target / "kwok")


def _go_build_into(
    go: str,
    work: Path,
    target: Path,
    flags: list[str],
    packages: list[str],
    label: str,
    progress: Progress,
    total: int,
    rename: str | None = None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="tidal-build-", dir=work) as tmp:
        out = Path(tmp)
        out_arg = str(out / rename) if rename else str(out) + "/"
        _run(
            [go, "build", "-v", "-trimpath", *flags, "-o", out_arg, *packages],
            work,
            label,
            progress,
            total,
        )
        for produced in out.iterdir():
            _install(produced, target / produced.name)


def _install(src: Path, dst: Path) -> None:
    """Move into place atomically, so an interrupted build never leaves a half-written binary."""
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.copy2(src, tmp)
    tmp.chmod(0o755)
    tmp.replace(dst)
