"""Building and caching Karpenter (KWOK cloud provider) for the dev cluster: the cache layout,
the wrapper module's text, the cache hit, the pre-built overrides, and the build's use of the go
command (a shell script standing in for it, so no Go runs here)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tidal.devcluster import build

QUIET: build.Progress = lambda _: None  # noqa: E731 - a progress sink, named for reading


@pytest.fixture(autouse=True)
def tidal_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("TIDAL_KARPENTER_BIN", "TIDAL_KARPENTER_CRDS", "TIDAL_BIN_DIR"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("TIDAL_CACHE_DIR", str(cache))
    return cache


def _executable(path: Path, text: str = "#!/bin/sh\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _fill_cache(directory: Path) -> tuple[Path, tuple[Path, ...]]:
    binary = _executable(directory / build.KARPENTER_BINARY)
    (directory / "crds").mkdir()
    crds = tuple(
        directory / "crds" / n
        for n in ("karpenter.kwok.sh_kwoknodeclasses.yaml", "karpenter.sh_nodepools.yaml")
    )
    for crd in crds:
        crd.write_text("kind: CustomResourceDefinition\n")
    return binary, crds


def test_karpenter_is_cached_in_its_own_folder_beside_the_control_plane(tidal_cache: Path) -> None:
    assert build.karpenter_dir() == tidal_cache / "bin" / "karpenter-v1.15.0"
    assert build.karpenter_dir().parent == build.bin_dir().parent
    assert build.karpenter_dir("v1.14.3") == tidal_cache / "bin" / "karpenter-v1.14.3"


def test_the_static_fleet_does_not_need_karpenter() -> None:
    assert build.KARPENTER_BINARY not in build.BINARIES
    assert "karpenter" not in build.Versions().key


def test_the_wrapper_module_requires_the_pinned_release() -> None:
    assert build.karpenter_go_mod() == (
        "module example.invalid/tidal-karpenter-bin\n\ngo 1.26\n\n"
        "require sigs.k8s.io/karpenter v1.15.0\n"
    )
    assert "sigs.k8s.io/karpenter v1.14.3\n" in build.karpenter_go_mod("v1.14.3")


def test_the_wrapper_imports_what_the_kwok_main_package_needs() -> None:
    assert build.karpenter_tools_go() == (
        "//go:build tools\n\n"
        "// Package tools pins what Karpenter's KWOK build needs.\n"
        "package tools\n\n"
        "import (\n"
        '\t_ "sigs.k8s.io/karpenter/kwok/cloudprovider"\n'
        '\t_ "sigs.k8s.io/karpenter/pkg/operator"\n'
        '\t_ "sigs.k8s.io/karpenter/pkg/controllers"\n'
        ")\n"
    )


def test_a_cached_build_is_returned_without_go(monkeypatch: pytest.MonkeyPatch) -> None:
    binary, crds = _fill_cache(build.karpenter_dir())
    monkeypatch.setenv("PATH", "/nonexistent")  # building would fail: no go

    assert build.ensure_karpenter(progress=QUIET) == build.KarpenterBuild(binary, crds)


@pytest.mark.parametrize("damage", ["no binary", "binary not executable", "no crds"])
def test_an_incomplete_cache_is_not_a_cache_hit(damage: str) -> None:
    directory = build.karpenter_dir()
    binary, crds = _fill_cache(directory)
    if damage == "no binary":
        binary.unlink()
    elif damage == "binary not executable":
        binary.chmod(0o644)
    else:
        for crd in crds:
            crd.unlink()

    assert build.cached_karpenter(directory) is None


def test_a_prebuilt_binary_and_crds_are_used_as_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary, crds = _fill_cache(tmp_path / "prebuilt")
    monkeypatch.setenv("TIDAL_KARPENTER_BIN", str(binary))
    monkeypatch.setenv("TIDAL_KARPENTER_CRDS", str(tmp_path / "prebuilt" / "crds"))
    monkeypatch.setenv("PATH", "/nonexistent")

    assert build.ensure_karpenter(progress=QUIET) == build.KarpenterBuild(binary, crds)
    assert not build.karpenter_dir().exists()


@pytest.mark.parametrize(
    ("binary", "crds", "message"),
    [
        ("prebuilt/karpenter-kwok", None, "TIDAL_KARPENTER_CRDS must name a folder"),
        ("prebuilt/karpenter-kwok", "empty", r"holds no \*\.yaml files"),
        ("missing", "prebuilt/crds", "TIDAL_KARPENTER_BIN=.*missing is not an executable"),
        ("prebuilt", "prebuilt/crds", "is not an executable file"),
        (None, "prebuilt/crds", "TIDAL_KARPENTER_BIN is not; set both"),
    ],
)
def test_an_incomplete_override_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    binary: str | None,
    crds: str | None,
    message: str,
) -> None:
    _fill_cache(tmp_path / "prebuilt")
    (tmp_path / "empty").mkdir()
    if binary is not None:
        monkeypatch.setenv("TIDAL_KARPENTER_BIN", str(tmp_path / binary))
    if crds is not None:
        monkeypatch.setenv("TIDAL_KARPENTER_CRDS", str(tmp_path / crds))

    with pytest.raises(build.BuildError, match=message):
        build.ensure_karpenter(progress=QUIET)


def test_missing_go_points_at_the_karpenter_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(build.BuildError, match=r"Go is not installed.*TIDAL_KARPENTER_BIN"):
        build.ensure_karpenter(progress=QUIET)


# Stands in for the go command: logs each call with its GOTOOLCHAIN, answers `list -m` with a
# module folder, and for `build` writes the -o file then exits with FAKE_GO_BUILD_RC.
FAKE_GO = """\
#!/bin/sh
echo "GOTOOLCHAIN=$GOTOOLCHAIN $*" >> "$FAKE_GO_LOG"
if [ "$1 $2" = "list -m" ]; then echo "go: downloading nothing"; echo "$FAKE_MODULE"; exit 0; fi
if [ "$1" = "list" ]; then printf 'a\\nb\\n'; exit 0; fi
if [ "$1" = "build" ]; then
  while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
  printf 'binary' > "$out"
  chmod +x "$out"
  exit "${FAKE_GO_BUILD_RC:-0}"
fi
exit 0
"""


@pytest.fixture
def fake_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    _executable(tmp_path / "fakebin" / "go", FAKE_GO)
    module = tmp_path / "module"
    for crd in (
        "pkg/apis/crds/karpenter.sh_nodepools.yaml",
        "pkg/apis/crds/karpenter.sh_nodeclaims.yaml",
        "kwok/apis/crds/karpenter.kwok.sh_kwoknodeclasses.yaml",
        "kwok/apis/crds/not-ours.yaml",
    ):
        (module / crd).parent.mkdir(parents=True, exist_ok=True)
        (module / crd).write_text(f"# {crd}\n")
    log = tmp_path / "go.log"
    monkeypatch.setenv("PATH", f"{tmp_path / 'fakebin'}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_GO_LOG", str(log))
    monkeypatch.setenv("FAKE_MODULE", str(module))
    monkeypatch.setenv("GOTOOLCHAIN", "local")
    return log


def test_a_build_caches_the_binary_and_the_module_crds(fake_go: Path) -> None:
    lines: list[str] = []
    built = build.ensure_karpenter(progress=lines.append)

    target = build.karpenter_dir()
    assert built.binary == target / "karpenter-kwok"
    assert [c.name for c in built.crds] == [
        "karpenter.kwok.sh_kwoknodeclasses.yaml",
        "karpenter.sh_nodeclaims.yaml",
        "karpenter.sh_nodepools.yaml",
    ]
    assert all(c.parent == target / "crds" for c in built.crds)
    assert (target / "crds" / "karpenter.sh_nodepools.yaml").read_text() == (
        "# pkg/apis/crds/karpenter.sh_nodepools.yaml\n"
    )
    assert sorted(p.name for p in target.parent.iterdir()) == ["karpenter-v1.15.0"]
    assert lines[-1].startswith("tidal: Karpenter ready in ")


def test_only_the_karpenter_build_fetches_a_newer_toolchain(fake_go: Path) -> None:
    build.ensure_karpenter(progress=QUIET)

    calls = fake_go.read_text().splitlines()
    assert [c.split()[1:3] for c in calls] == [
        ["mod", "tidy"],
        ["list", "-deps"],
        ["build", "-v"],
        ["list", "-m"],
    ]
    assert all(c.startswith("GOTOOLCHAIN=go1.27.3 ") for c in calls)
    assert "-X sigs.k8s.io/karpenter/pkg/operator.Version=v1.15.0" in calls[2]
    assert calls[2].endswith(" sigs.k8s.io/karpenter/kwok")


def test_a_failed_build_leaves_no_half_cache(
    fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GO_BUILD_RC", "2")

    with pytest.raises(build.BuildError, match=r"\[karpenter v1\.15\.0\] .* failed \(exit 2\)"):
        build.ensure_karpenter(progress=QUIET)

    assert list(build.karpenter_dir().parent.iterdir()) == []


def test_a_module_without_the_expected_crds_is_refused(
    fake_go: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "bare").mkdir()
    monkeypatch.setenv("FAKE_MODULE", str(tmp_path / "bare"))

    with pytest.raises(build.BuildError, match="layout changed"):
        build.ensure_karpenter(progress=QUIET)

    assert list(build.karpenter_dir().parent.iterdir()) == []
