"""Fetching Prometheus Operator's PodMonitor CRD for the monitoring e2e test: the cache layout, the
cache hit, the offline override, and the `go mod download` it runs (a shell script standing in
for the go command, so nothing is downloaded here)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tidal.devcluster import build

QUIET: build.Progress = lambda _: None  # noqa: E731 - a progress sink, named for reading
MODULE = "github.com/prometheus-operator/prometheus-operator"

# Stands in for the go command: logs its arguments and working folder, and answers
# `mod download -json` as the go command does, with FAKE_GO_ANSWER (a JSON object).
FAKE_GO = """\
#!/bin/sh
echo "$(pwd) $*" >> "$FAKE_GO_LOG"
echo "$FAKE_GO_ANSWER"
exit "${FAKE_GO_RC:-0}"
"""


@pytest.fixture(autouse=True)
def tidal_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("TIDAL_PODMONITOR_CRD", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("TIDAL_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def module(tmp_path: Path) -> Path:
    folder = tmp_path / "modcache" / f"{MODULE}@{build.PROMETHEUS_OPERATOR_VERSION}"
    crd = folder / build.PODMONITOR_CRD_SOURCE
    crd.parent.mkdir(parents=True)
    crd.write_text("kind: CustomResourceDefinition\n")
    crd.chmod(0o444)  # the module cache's files are read-only
    return folder


@pytest.fixture
def fake_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: Path) -> Path:
    go = tmp_path / "fakebin" / "go"
    go.parent.mkdir()
    go.write_text(FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "go.log"
    answer = {"Path": MODULE, "Version": build.PROMETHEUS_OPERATOR_VERSION, "Dir": str(module)}
    monkeypatch.setenv("PATH", f"{go.parent}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_GO_LOG", str(log))
    monkeypatch.setenv("FAKE_GO_ANSWER", json.dumps(answer))
    return log


def test_the_crd_is_cached_beside_the_binaries_keyed_by_version(tidal_cache: Path) -> None:
    name = "monitoring.coreos.com_podmonitors.yaml"
    folder = f"prometheus-operator-{build.PROMETHEUS_OPERATOR_VERSION}"
    assert build.podmonitor_crd_path() == tidal_cache / "crds" / folder / name
    assert build.podmonitor_crd_path("v0.1.0").parent.name == "prometheus-operator-v0.1.0"


def test_the_module_is_downloaded_outside_any_module_and_its_crd_copied(fake_go: Path) -> None:
    lines: list[str] = []
    path = build.ensure_podmonitor_crd(progress=lines.append)

    assert path == build.podmonitor_crd_path()
    assert path.read_text() == "kind: CustomResourceDefinition\n"
    assert path.stat().st_mode & stat.S_IWUSR  # a copy of its own, not the read-only original
    (call,) = fake_go.read_text().splitlines()
    cwd, *argv = call.split(" ")
    assert argv == ["mod", "download", "-json", f"{MODULE}@{build.PROMETHEUS_OPERATOR_VERSION}"]
    assert not (Path(cwd) / "go.mod").exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging file left
    assert "fetching the PodMonitor CRD" in lines[0]


def test_a_cached_crd_is_returned_without_go(monkeypatch: pytest.MonkeyPatch) -> None:
    cached = build.podmonitor_crd_path()
    cached.parent.mkdir(parents=True)
    cached.write_text("cached\n")
    monkeypatch.setenv("PATH", "/nonexistent")

    assert build.ensure_podmonitor_crd(progress=QUIET) == cached


def test_a_given_file_is_used_and_nothing_fetched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = tmp_path / "podmonitors.yaml"
    given.write_text("given\n")
    monkeypatch.setenv("TIDAL_PODMONITOR_CRD", str(given))
    monkeypatch.setenv("PATH", "/nonexistent")

    assert build.ensure_podmonitor_crd(progress=QUIET) == given
    assert not build.podmonitor_crd_path().exists()


def test_a_given_path_that_is_no_file_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIDAL_PODMONITOR_CRD", str(tmp_path / "missing.yaml"))
    with pytest.raises(build.BuildError, match=r"TIDAL_PODMONITOR_CRD=.*is not a file"):
        build.ensure_podmonitor_crd(progress=QUIET)


def test_missing_go_points_at_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(build.BuildError, match=r"Go is not installed.*TIDAL_PODMONITOR_CRD"):
        build.ensure_podmonitor_crd(progress=QUIET)


def test_a_failed_download_is_a_build_error_and_caches_nothing(
    monkeypatch: pytest.MonkeyPatch, fake_go: Path
) -> None:
    monkeypatch.setenv("FAKE_GO_ANSWER", json.dumps({"Error": "403 Forbidden"}))
    monkeypatch.setenv("FAKE_GO_RC", "1")
    with pytest.raises(build.BuildError, match="403 Forbidden"):
        build.ensure_podmonitor_crd(progress=QUIET)
    assert not build.podmonitor_crd_path().exists()


def test_a_module_without_the_file_says_the_layout_changed(
    monkeypatch: pytest.MonkeyPatch, fake_go: Path, module: Path
) -> None:
    crd = module / build.PODMONITOR_CRD_SOURCE
    crd.chmod(0o644)
    crd.unlink()
    with pytest.raises(build.BuildError, match="layout changed"):
        build.ensure_podmonitor_crd(progress=QUIET)
