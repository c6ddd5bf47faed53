"""Process -> pod mapping from /proc/<pid>/cgroup, and GPU product names in label form."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidal.clients.nvml import normalize_product, pod_uid_from_cgroup, pod_uid_of_process

UID = "0b5e7f1c-8a2d-4c3e-9f1a-2b3c4d5e6f70"
UID_ = UID.replace("-", "_")
CID = "4f1c2a7b9e0d3c5a8b6f1e2d7c9a0b3e5f8d1c4a7b0e3d6f9c2a5b8e1d4f7a0c"

V1_CONTROLLERS = ("12:memory", "11:devices", "4:cpu,cpuacct", "1:name=systemd")


def _v1(path: str) -> str:
    return "".join(f"{c}:{path}\n" for c in V1_CONTROLLERS)


CASES = {
    # cgroup v1, cgroupfs driver
    "v1 cgroupfs guaranteed": _v1(f"/kubepods/pod{UID}/{CID}"),
    "v1 cgroupfs burstable": _v1(f"/kubepods/burstable/pod{UID}/{CID}"),
    "v1 cgroupfs besteffort": _v1(f"/kubepods/besteffort/pod{UID}/{CID}"),
    # cgroup v1, systemd driver (UIDs with underscores)
    "v1 systemd guaranteed": _v1(
        f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"
    ),
    "v1 systemd burstable": _v1(
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope"
    ),
    "v1 systemd besteffort": _v1(
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"docker-{CID}.scope"
    ),
    # cgroup v2 (unified), systemd driver
    "v2 systemd guaranteed": f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope\n",
    "v2 systemd burstable": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n"
    ),
    "v2 systemd besteffort": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n"
    ),
    # cgroup v2, cgroupfs driver
    "v2 cgroupfs guaranteed": f"0::/kubepods/pod{UID}/{CID}\n",
    "v2 cgroupfs burstable": f"0::/kubepods/burstable/pod{UID}/{CID}\n",
    "v2 cgroupfs besteffort": f"0::/kubepods/besteffort/pod{UID}/{CID}\n",
    # hybrid: v1 hierarchies plus the unified one
    "hybrid": _v1(f"/kubepods/burstable/pod{UID}/{CID}") + f"0::/kubepods/burstable/pod{UID}\n",
    # the reader in its own cgroup namespace sees other pods' paths relative to its root
    "v2 cgroup namespace, systemd": (
        f"0::/../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n"
    ),
    "v2 cgroup namespace, cgroupfs": f"0::/../../../besteffort/pod{UID}/{CID}\n",
    # kind / nested: the node itself runs in a container's cgroup
    "nested under a node container": (
        f"0::/system.slice/docker-abc.scope/kubelet.slice/kubelet-kubepods.slice/"
        f"kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n"
    ),
    "pod cgroup itself (the pause process)": f"0::/kubepods/burstable/pod{UID}\n",
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_the_pod_uid_is_found_in_every_cgroup_layout(text: str) -> None:
    assert pod_uid_from_cgroup(text) == UID


NOT_PODS = {
    "host service": "0::/system.slice/containerd.service\n",
    "user session": "0::/user.slice/user-1000.slice/session-3.scope\n",
    "root cgroup": "0::/\n",
    "v1 host process": _v1("/system.slice/sshd.service"),
    "empty file": "",
    "garbage": "not a cgroup file\n",
    "container id that happens to contain 'pod'": f"0::/system.slice/podman-pod{CID}.scope\n",
    "truncated uid": "0::/kubepods/burstable/pod0b5e7f1c-8a2d-4c3e-9f1a/abc\n",
    "uppercase uid is not kubelet's": f"0::/kubepods/burstable/pod{UID.upper()}/{CID}\n",
}


@pytest.mark.parametrize("text", NOT_PODS.values(), ids=NOT_PODS.keys())
def test_processes_outside_pods_have_no_pod_uid(text: str) -> None:
    assert pod_uid_from_cgroup(text) is None


def test_kubelet_mangled_systemd_uid_is_given_back_with_dashes() -> None:
    text = f"0::/kubepods.slice/kubepods-pod{UID_}.slice/x.scope\n"

    uid = pod_uid_from_cgroup(text)

    assert uid == UID
    assert "_" not in (uid or "")


def test_pod_uid_of_a_process_reads_its_cgroup_under_the_proc_root(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text(CASES["v2 systemd burstable"])

    assert pod_uid_of_process(tmp_path, 4242) == UID
    assert pod_uid_of_process(tmp_path, 4243) is None  # gone, or in another PID namespace


def test_an_unreadable_cgroup_file_is_no_pod_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_bytes(b"\xff\xfe\x00garbage")

    assert pod_uid_of_process(tmp_path, 7) is None


# --- product names ----------------------------------------------------------------------------

PRODUCTS = {
    "NVIDIA H100 80GB HBM3": "NVIDIA-H100-80GB-HBM3",
    "NVIDIA A100-SXM4-80GB": "NVIDIA-A100-SXM4-80GB",
    "NVIDIA L4": "NVIDIA-L4",
    "Tesla T4": "Tesla-T4",
    "NVIDIA GeForce RTX 4090": "NVIDIA-GeForce-RTX-4090",
    "NVIDIA H100 NVL": "NVIDIA-H100-NVL",
    "  NVIDIA  L40S  ": "NVIDIA-L40S",
    "NVIDIA RTX A6000 (rev 1)": "NVIDIA-RTX-A6000-rev-1",
    "NVIDIA-H200": "NVIDIA-H200",
}


@pytest.mark.parametrize(("name", "label"), PRODUCTS.items())
def test_products_take_the_gpu_feature_discovery_label_form(name: str, label: str) -> None:
    assert normalize_product(name) == label


def test_product_from_bytes_is_decoded() -> None:
    assert normalize_product(b"NVIDIA L4") == "NVIDIA-L4"


@pytest.mark.parametrize("name", [None, "", "   ", "***"])
def test_no_product_name_is_unknown(name: str | None) -> None:
    assert normalize_product(name) is None


def test_a_long_product_name_still_fits_in_a_label_value() -> None:
    label = normalize_product("NVIDIA " + "Very Long Name " * 10)

    assert label is not None
    assert len(label) <= 63
    assert label[0].isalnum()
    assert label[-1].isalnum()
