"""Builds the local control plane's binaries from Go modules and caches them by version.

Owns: the pinned versions of etcd, Kubernetes, KWOK and Karpenter, the wrapper Go modules that
make `k8s.io/kubernetes` (and Karpenter's KWOK build) buildable outside their repositories, the
cache layout, and the progress line.
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

Karpenter is built apart, by `ensure_karpenter`, because only the autoscaling dev cluster runs it
(the static fleet must never wait for it). The binary is `sigs.k8s.io/karpenter/kwok`, Karpenter
wired to its KWOK cloud provider, built in a wrapper module; the CRDs it needs installed ship in
the module and are copied beside it, into `bin/karpenter-<version>/` (binary) and
`bin/karpenter-<version>/crds/`. Karpenter's go.mod asks for a newer Go than this project
requires, so its go commands alone run with `GOTOOLCHAIN=KARPENTER_TOOLCHAIN`, which the go
command fetches once from the module proxy; every other build keeps `GOTOOLCHAIN=local`. The
folder is assembled beside its final place and renamed into it, so it is complete or absent.
Pre-built Karpenter: `TIDAL_KARPENTER_BIN` names the binary and `TIDAL_KARPENTER_CRDS` a folder
with its CRD files (`*.yaml`); the two go together, and nothing is built then.

Prometheus Operator's PodMonitor CRD, which the monitoring e2e test installs, is fetched by
`ensure_podmonitor_crd`, not built: it ships as data in the Go module
`github.com/prometheus-operator/prometheus-operator` (the file its own install applies), so
`go mod download` brings exactly the release pinned here, checked against the checksum database
like every other module, and the file is copied into `crds/prometheus-operator-<version>/`.
Nothing is vendored into the repository: the CRD is 70 KB of generated schema that must match
the release it came from. Offline: `TIDAL_PODMONITOR_CRD` names the file, and nothing is fetched.
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
KARPENTER_VERSION = "v1.15.0"
# The S3-compatible server the cold-tier e2e tests store snapshots in (Apache-2.0, a gateway
# over a POSIX directory; tests/e2e/s3.py).
VERSITYGW_VERSION = "v1.8.0"
# Karpenter's go.mod declares `go 1.26.9`, newer than the Go this project asks users for.
KARPENTER_TOOLCHAIN = "go1.27.3"
KARPENTER_BINARY = "karpenter-kwok"

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


def _find_go(
    prebuilt: str = "TIDAL_BIN_DIR to a folder with pre-built " + ", ".join(BINARIES),
) -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is not installed (no `go` on PATH). Install Go >= 1.26 "
            "(Debian: `apt-get install golang-1.26` or https://go.dev/dl), "
            f"or set {prebuilt}"
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
    argv: Sequence[str],
    cwd: Path | None,
    label: str,
    progress: Progress,
    count_lines: int = 0,
    env: dict[str, str] | None = None,
) -> str:
    """Run a go command; with `count_lines`, report every compiled package as progress."""
    lines: list[str] = []
    with subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=_go_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
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


_KARPENTER_MODULE = "sigs.k8s.io/karpenter"
_KARPENTER_MAIN = f"{_KARPENTER_MODULE}/kwok"
_KARPENTER_IMPORTS = tuple(
    f"{_KARPENTER_MODULE}/{p}" for p in ("kwok/cloudprovider", "pkg/operator", "pkg/controllers")
)
PROMETHEUS_OPERATOR_VERSION = "v0.94.1"
_PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
# Inside that module: the PodMonitor CRD, as Prometheus Operator's own install applies it.
PODMONITOR_CRD_SOURCE = "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml"


def podmonitor_crd_path(version: str = PROMETHEUS_OPERATOR_VERSION) -> Path:
    """Beside the binaries, keyed by version: another release is fetched afresh."""
    folder = cache_root() / "crds" / f"prometheus-operator-{version}"
    return folder / Path(PODMONITOR_CRD_SOURCE).name


def ensure_podmonitor_crd(
    version: str = PROMETHEUS_OPERATOR_VERSION, progress: Progress = _stderr_progress
) -> Path:
    """Return the PodMonitor CRD file of Prometheus Operator `version`, fetching it with
    `go mod download` when it is not cached (seconds: one module of about 4 MB)."""
    prebuilt = os.environ.get("TIDAL_PODMONITOR_CRD")
    if prebuilt:
        if not Path(prebuilt).is_file():
            raise BuildError(
                f"TIDAL_PODMONITOR_CRD={prebuilt} is not a file; point it at "
                f"{PODMONITOR_CRD_SOURCE} from {_PROMETHEUS_OPERATOR_MODULE}, or unset it"
            )
        return Path(prebuilt)
    target = podmonitor_crd_path(version)
    if target.is_file():
        return target
    go = _find_go(f"TIDAL_PODMONITOR_CRD to its {Path(PODMONITOR_CRD_SOURCE).name}")
    label = f"prometheus-operator {version}"
    progress(f"tidal: [{label}] fetching the PodMonitor CRD into {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Outside any module (a temporary folder): `go mod download` of one module@version.
    with tempfile.TemporaryDirectory(prefix="tidal-go-") as work:
        out = _run(
            [go, "mod", "download", "-json", f"{_PROMETHEUS_OPERATOR_MODULE}@{version}"],
            Path(work),
            label,
            progress,
        )
    source = _module_dir(out, label) / PODMONITOR_CRD_SOURCE
    if not source.is_file():
        raise BuildError(
            f"{_PROMETHEUS_OPERATOR_MODULE}@{version} has no {PODMONITOR_CRD_SOURCE}; its layout "
            f"changed, so update PODMONITOR_CRD_SOURCE in {__name__}"
        )
    # Copied beside its final name and renamed into place: the file is whole or absent.
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(source, staging)  # copyfile: the module cache's files are read-only
    staging.replace(target)
    return target


def _module_dir(download_json: str, label: str) -> Path:
    """The module's folder from `go mod download -json` (which reports errors in it too)."""
    try:
        info = json.loads(download_json[download_json.index("{") :])
    except ValueError as exc:
        raise BuildError(
            f"[{label}] unreadable `go mod download` output:\n{download_json}"
        ) from exc
    if not isinstance(info, dict) or info.get("Error") or not info.get("Dir"):
        raise BuildError(f"[{label}] `go mod download` found no module: {download_json.strip()}")
    return Path(str(info["Dir"]))


# Inside the module: Karpenter's own CRDs (NodePool, NodeClaim, ...) and the provider's node class.
KARPENTER_CRD_SOURCES = (
    "pkg/apis/crds/*.yaml",
    "kwok/apis/crds/karpenter.kwok.sh_kwoknodeclasses.yaml",
)
_KARPENTER_ENV_HINT = (
    "TIDAL_KARPENTER_BIN to a pre-built Karpenter (KWOK provider) and TIDAL_KARPENTER_CRDS "
    "to a folder with its CRDs"
)


@dataclass(frozen=True)
class KarpenterBuild:
    """Karpenter with the KWOK cloud provider, and the CRDs to install before starting it."""

    binary: Path
    crds: tuple[Path, ...]


def karpenter_dir(version: str = KARPENTER_VERSION) -> Path:
    """Beside the control-plane sets in `bin/`, keyed by version: an upgrade builds afresh."""
    return cache_root() / "bin" / f"karpenter-{version}"


def cached_karpenter(directory: Path) -> KarpenterBuild | None:
    """The build in `directory` when its binary and CRDs are both there, else None."""
    binary = directory / KARPENTER_BINARY
    crds = tuple(sorted((directory / "crds").glob("*.yaml")))
    if not (binary.is_file() and os.access(binary, os.X_OK)) or not crds:
        return None
    return KarpenterBuild(binary, crds)


def karpenter_go_mod(version: str = KARPENTER_VERSION) -> str:
    """The wrapper module; `go mod tidy` completes it (and raises its `go` line as needed)."""
    return (
        "module example.invalid/tidal-karpenter-bin\n\n"
        "go 1.26\n\n"
        f"require {_KARPENTER_MODULE} {version}\n"
    )


def karpenter_tools_go() -> str:
    """Blank imports so `go mod tidy` keeps every module the KWOK build needs."""
    imports = "\n".join(f'\t_ "{i}"' for i in _KARPENTER_IMPORTS)
    return (
        "//go:build tools\n\n// Package tools pins what Karpenter's KWOK build needs.\n"
        f"package tools\n\nimport (\n{imports}\n)\n"
    )


def ensure_karpenter(
    version: str = KARPENTER_VERSION, progress: Progress = _stderr_progress
) -> KarpenterBuild:
    """Return Karpenter's binary and CRDs, building them when not cached (minutes when cold)."""
    prebuilt = _prebuilt_karpenter()
    if prebuilt is not None:
        return prebuilt
    target = karpenter_dir(version)
    cached = cached_karpenter(target)
    if cached is not None:
        return cached
    go = _find_go(_KARPENTER_ENV_HINT)
    started = time.monotonic()
    progress(f"tidal: building Karpenter {version} (KWOK cloud provider) into {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        staging.chmod(0o755)
        work = cache_root() / "build" / f"karpenter-{version}"
        _build_karpenter(go, version, work, staging, progress)
        _move_dir_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    built = cached_karpenter(target)
    if built is None:
        raise BuildError(f"Karpenter build finished but {target} lacks its binary or CRDs")
    progress(f"tidal: Karpenter ready in {time.monotonic() - started:.0f}s")
    return built


def _prebuilt_karpenter() -> KarpenterBuild | None:
    binary = os.environ.get("TIDAL_KARPENTER_BIN")
    crds_dir = os.environ.get("TIDAL_KARPENTER_CRDS")
    if not binary:
        if crds_dir:
            raise BuildError(
                "TIDAL_KARPENTER_CRDS is set but TIDAL_KARPENTER_BIN is not; set both "
                "(a pre-built binary and its CRDs) or neither (to build Karpenter)"
            )
        return None
    path = Path(binary)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BuildError(
            f"TIDAL_KARPENTER_BIN={binary} is not an executable file; point it at Karpenter "
            f"built with the KWOK cloud provider ({_KARPENTER_MAIN}), or unset it to build "
            f"{KARPENTER_VERSION}"
        )
    wanted = " and ".join(KARPENTER_CRD_SOURCES)
    if not crds_dir:
        raise BuildError(
            "TIDAL_KARPENTER_BIN is set, so TIDAL_KARPENTER_CRDS must name a folder with "
            f"Karpenter's CRDs ({wanted} from {_KARPENTER_MODULE} at the binary's version)"
        )
    crds = tuple(sorted(Path(crds_dir).glob("*.yaml")))
    if not crds:
        raise BuildError(
            f"TIDAL_KARPENTER_CRDS={crds_dir} holds no *.yaml files; copy Karpenter's CRDs "
            f"({wanted} from {_KARPENTER_MODULE}) into it"
        )
    return KarpenterBuild(path, crds)


def _build_karpenter(go: str, version: str, work: Path, out: Path, progress: Progress) -> None:
    label = f"karpenter {version}"
    env = {"GOTOOLCHAIN": KARPENTER_TOOLCHAIN}
    progress(f"tidal: [{label}] resolving modules (toolchain {KARPENTER_TOOLCHAIN}, fetched once)")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "go.mod").write_text(karpenter_go_mod(version))
    (work / "tools.go").write_text(karpenter_tools_go())
    _run([go, "mod", "tidy"], work, label, progress, env=env)
    deps = _run([go, "list", "-deps", _KARPENTER_MAIN], work, label, progress, env=env)
    total = len(deps.splitlines())
    progress(f"tidal: [{label}] compiling {total} packages (cold: about 3 min on 2 cores)")
    # Stamped as upstream's release does: the version shows in its log, metrics and user agent.
    ldflags = f"-s -w -X {_KARPENTER_MODULE}/pkg/operator.Version={version}"
    binary = str(out / KARPENTER_BINARY)
    _run(
        [go, "build", "-v", "-trimpath", f"-ldflags={ldflags}", "-o", binary, _KARPENTER_MAIN],
        work,
        label,
        progress,
        total,
        env=env,
    )
    listed = _run(
        [go, "list", "-m", "-f", "{{.Dir}}", _KARPENTER_MODULE], work, label, progress, env=env
    )
    # The last line: the go command may have said something about downloads before it.
    _copy_karpenter_crds(Path(listed.strip().splitlines()[-1]), out / "crds")


def _copy_karpenter_crds(module_dir: Path, dest: Path) -> None:
    dest.mkdir()
    for pattern in KARPENTER_CRD_SOURCES:
        found = sorted(module_dir.glob(pattern))
        if not found:
            raise BuildError(
                f"{_KARPENTER_MODULE} in {module_dir} has no {pattern}; its layout changed, "
                f"so update KARPENTER_CRD_SOURCES in {__name__}"
            )
        for src in found:
            # copyfile, not copy2: the module cache's files are read-only.
            shutil.copyfile(src, dest / src.name)


def _move_dir_into_place(staging: Path, target: Path) -> None:
    """Rename a finished folder into place; a stale, incomplete one there is replaced."""
    if target.exists() and cached_karpenter(target) is None:
        shutil.rmtree(target)
    try:
        staging.rename(target)
    except OSError:
        # Another build finished first; its result is as good as ours.
        if cached_karpenter(target) is None:
            raise


# --- versitygw: a real S3 server for the cold-tier tests -------------------------------------


def versitygw_path(version: str = VERSITYGW_VERSION) -> Path:
    """`TIDAL_VERSITYGW_BIN`, else the cached build beside the control-plane sets in `bin/`."""
    override = os.environ.get("TIDAL_VERSITYGW_BIN")
    if override:
        return Path(override)
    return cache_root() / "bin" / f"versitygw-{version}" / "versitygw"


def ensure_versitygw(
    version: str = VERSITYGW_VERSION, progress: Progress = _stderr_progress
) -> Path:
    """The versitygw binary, built from its Go module when not cached (about a minute cold)."""
    target = versitygw_path(version)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    if os.environ.get("TIDAL_VERSITYGW_BIN"):
        raise BuildError(f"TIDAL_VERSITYGW_BIN={target} is not an executable file")
    go = _find_go("TIDAL_VERSITYGW_BIN to a pre-built versitygw")
    label = f"versitygw {version}"
    progress(f"tidal: [{label}] compiling (go install) into {target.parent}")
    with tempfile.TemporaryDirectory(prefix="tidal-versitygw-") as tmp:
        proc = subprocess.run(
            [
                go,
                "install",
                "-trimpath",
                "-ldflags=-s -w",
                f"github.com/versity/versitygw/cmd/versitygw@{version}",
            ],
            env=_go_env({"GOBIN": tmp, "GOFLAGS": "-buildvcs=false"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BuildError(f"[{label}] go install failed:\n{proc.stdout[-4000:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        _install(Path(tmp) / "versitygw", target)
    return target
