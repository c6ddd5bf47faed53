"""`make e2e-kind` helper: give kind's workers the GPU capacity the simulated fleet has.

kind has no GPUs and no device plugin; the scheduler only needs allocatable `nvidia.com/gpu`,
which an extended resource patched into node status provides (and the kubelet keeps). Usage:
`python -m tests.e2e.kind_fleet KUBECONFIG`. Untested here: this project's machines have no
Docker engine.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main(kubeconfig: str) -> None:
    def kubectl(*args: str) -> str:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    nodes = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
    for node in nodes:
        labels = node["metadata"]["labels"]
        if "nvidia.com/gpu.product" not in labels:
            continue
        name = node["metadata"]["name"]
        patch = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "4"}]
        kubectl(
            "patch", "node", name, "--subresource=status", "--type=json", "-p", json.dumps(patch)
        )
        if labels.get("tidal.dev/capacity-type") == "spot":
            kubectl("taint", "node", name, "tidal.dev/capacity-type=spot:NoSchedule", "--overwrite")
        print(f"kind node {name}: nvidia.com/gpu=4 ({labels['nvidia.com/gpu.product']})")


if __name__ == "__main__":
    main(sys.argv[1])
