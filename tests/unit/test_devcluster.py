"""The local control plane's pure parts: wrapper-module generation, version stamps, the fleet;
and how its component processes are stopped and reaped (local child processes, no cluster)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tidal.api.labels import KWOK_NODE
from tidal.devcluster import build, chaos, cluster, fleet, pki
from tidal.devcluster.cluster import write_kubeconfig

RELEASE_GO_MOD = """\
module k8s.io/kubernetes

go 1.25.0

godebug default=go1.25

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0 // indirect
\tk8s.io/klog/v2 v2.130.1
)

require k8s.io/kubelet v0.0.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/sample-controller => ./staging/src/k8s.io/sample-controller
\tk8s.io/not-staging => k8s.io/not-staging v1.2.3
)
"""


def test_staging_modules_are_read_from_requires_at_zero_and_staging_replaces() -> None:
    assert build.staging_modules(RELEASE_GO_MOD) == [
        "k8s.io/api",
        "k8s.io/client-go",
        "k8s.io/kubelet",
        "k8s.io/sample-controller",
    ]


def test_real_dependencies_are_not_taken_for_staging_modules() -> None:
    modules = build.staging_modules(RELEASE_GO_MOD)

    assert "k8s.io/klog/v2" not in modules
    assert "k8s.io/not-staging" not in modules


def test_the_release_godebug_line_is_copied() -> None:
    assert build.release_godebug(RELEASE_GO_MOD) == "default=go1.25"
    assert build.release_godebug("module x\n") is None


def test_staging_version_follows_the_release_minor_and_patch() -> None:
    assert build.Versions(kubernetes="v1.35.4").staging_version == "v0.35.4"


def test_ldflags_stamp_the_exact_version_in_both_version_packages() -> None:
    flags = build.kubernetes_ldflags("v1.35.4")

    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.35.4" in flags
        assert f"-X {pkg}.gitMinor=35" in flags


def test_a_malformed_version_is_refused() -> None:
    with pytest.raises(build.BuildError, match=r"vMAJOR\.MINOR\.PATCH"):
        build.kubernetes_ldflags("1.35")


def test_cache_key_changes_with_every_version() -> None:
    base = build.Versions()
    keys = {
        base.key,
        build.Versions(kubernetes="v1.36.3").key,
        build.Versions(etcd="v3.6.15").key,
        build.Versions(kwok="v0.7.0").key,
    }
    assert len(keys) == 4


def test_binaries_come_from_tidal_bin_dir_when_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIDAL_BIN_DIR", str(tmp_path))

    assert build.bin_dir() == tmp_path
    with pytest.raises(build.BuildError, match="lacks etcd"):
        build.ensure_binaries(progress=lambda _: None)


def test_the_cache_lives_outside_the_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TIDAL_BIN_DIR", raising=False)
    monkeypatch.setenv("TIDAL_CACHE_DIR", str(tmp_path))

    assert build.bin_dir() == tmp_path / "bin" / build.Versions().key


def test_missing_go_is_reported_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(build.BuildError, match="Go is not installed"):
        build._find_go()


def _nodes() -> dict[str, dict[str, Any]]:
    return {n["metadata"]["name"]: n for n in fleet.render_nodes(fleet.load(fleet.DEFAULT_FLEET))}


def test_default_fleet_spans_two_regions_with_spot_reserved_and_cpu_nodes() -> None:
    nodes = _nodes()
    regions = {n["metadata"]["labels"]["topology.kubernetes.io/region"] for n in nodes.values()}

    assert regions == {"eu-west-1", "us-east-1"}
    for region in regions:
        in_region = [
            n
            for n in nodes.values()
            if n["metadata"]["labels"]["topology.kubernetes.io/region"] == region
        ]
        gpu = [n for n in in_region if "nvidia.com/gpu" in n["status"]["allocatable"]]
        spot = [n for n in gpu if any("spot" in t["value"] for t in n["spec"]["taints"])]
        assert spot, f"no spot GPU node in {region}"
        assert len(spot) < len(gpu), f"no reserved GPU node in {region}"
        assert len(gpu) < len(in_region), f"no CPU-only node in {region}"


def test_gpu_nodes_carry_feature_discovery_labels_capacity_and_a_gpu_taint() -> None:
    node = _nodes()["h100-spot-eu-west-1-0"]
    labels = node["metadata"]["labels"]

    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert labels["tidal.dev/capacity-type"] == "spot"
    assert labels["topology.kubernetes.io/zone"] == "eu-west-1a"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    # Room for replicas that download their weights (they request ephemeral storage).
    assert node["status"]["capacity"]["ephemeral-storage"] == "2Ti"
    assert node["status"]["allocatable"] == node["status"]["capacity"]
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"][
        "taints"
    ]
    assert node["metadata"]["annotations"][KWOK_NODE] == "fake"


@pytest.mark.parametrize(
    ("style", "key", "spot_value", "reserved_value"),
    [
        ("tidal", "tidal.dev/capacity-type", "spot", "reserved"),
        ("karpenter", "karpenter.sh/capacity-type", "spot", "on-demand"),
        ("eks", "eks.amazonaws.com/capacityType", "SPOT", "ON_DEMAND"),
        ("gke", "cloud.google.com/gke-spot", "true", None),
        ("aks", "kubernetes.azure.com/scalesetpriority", "spot", None),
    ],
)
def test_each_cloud_label_convention_marks_spot_and_taints_it(
    style: str, key: str, spot_value: str, reserved_value: str | None
) -> None:
    def node(capacity: str) -> dict[str, Any]:
        group = fleet.NodeGroup(
            name="g",
            regions=["r1"],
            capacity_type=capacity,
            label_style=style,
        )
        return fleet.render_nodes(fleet.Fleet(node_groups=[group]))[0]

    spot, reserved = node("spot"), node("reserved")

    assert spot["metadata"]["labels"][key] == spot_value
    assert any(t["key"] == key for t in spot["spec"]["taints"])
    assert reserved["metadata"]["labels"].get(key) == reserved_value
    assert reserved["spec"]["taints"] == []


def test_a_fleet_file_with_a_typo_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("nodeGroups:\n- name: a\n  regions: [r]\n  capacityTyp: spot\n")

    with pytest.raises(ValidationError, match="capacityTyp"):
        fleet.load(path)


def test_kwok_config_declares_every_stage_it_needs() -> None:
    docs = list(yaml.safe_load_all((Path(fleet.__file__).parent / "data/kwok.yaml").read_text()))
    stages = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Stage"}

    assert docs[0]["kind"] == "KwokConfiguration"
    assert set(stages) == {
        "node-ready",
        "node-heartbeat",
        "pod-running",
        "pod-ready",
        "pod-succeeded",
        "pod-remove",
    }
    assert stages["pod-remove"]["spec"]["next"]["delete"] is True


def test_pki_and_kubeconfig_reference_each_other(tmp_path: Path) -> None:
    keys = pki.generate(tmp_path / "pki")
    path = tmp_path / "kubeconfig"

    write_kubeconfig(path, "https://127.0.0.1:6443", keys, "admin")

    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0]["cluster"]["certificate-authority"] == str(keys.ca_cert)
    user = config["users"][0]["user"]
    assert Path(user["client-certificate"]).read_text().startswith("-----BEGIN CERTIFICATE")
    assert Path(user["client-key"]).stat().st_mode & 0o077 == 0
    assert pki.generate(tmp_path / "pki").ca_cert.read_bytes() == keys.ca_cert.read_bytes()


# A component whose main thread has exited while another thread runs on, as a Go binary's may
# for a moment after a signal: /proc shows the process as a zombie, yet it cannot be reaped.
# It ignores SIGTERM, so only SIGKILL ends it.
_LINGERING = """
import ctypes, signal, threading, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
threading.Thread(target=time.sleep, args=(60,)).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


def _spawn_lingering(state: cluster.ClusterState, name: str, workdir: Path) -> None:
    state.pids[name] = cluster._spawn(name, [sys.executable, "-c", _LINGERING], workdir, False)
    log = workdir / "logs" / f"{name}.log"
    deadline = time.monotonic() + 10
    while "ready" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the lingering component did not start"
        time.sleep(0.02)


def test_stopped_and_killed_components_are_waited_for_and_reaped(tmp_path: Path) -> None:
    state = cluster.ClusterState(
        workdir=str(tmp_path), bin_dir=str(tmp_path), ports={}, started_at=0.0
    )
    _spawn_lingering(state, "etcd", tmp_path)
    _spawn_lingering(state, "kube-apiserver", tmp_path)
    processes = [cluster._CHILDREN[pid] for pid in state.pids.values()]

    chaos.kill(state, "etcd", signal.SIGKILL)
    assert processes[0].returncode == -signal.SIGKILL
    cluster.stop_processes(state, timeout=0.5)  # SIGTERM is ignored: SIGKILL after the timeout

    assert processes[1].returncode == -signal.SIGKILL
    assert not set(cluster._CHILDREN) & {p.pid for p in processes}
