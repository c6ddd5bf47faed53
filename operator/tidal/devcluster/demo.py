"""`make demo`: the product on the embedded local cluster, left running for you to explore.

Owns: the demo's sequence (cluster up, CRDs, operator process, samples, a printed summary) and
its teardown (`--down`). Must not: hold operator logic; the operator is the real `tidal run`,
started as a local process because this machine has no container runtime to run its image.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tidal.devcluster import cluster

REPO = Path(__file__).resolve().parents[3]
ELASTIC_CONVENTIONS = REPO / "manifests" / "examples" / "tidal-capacity-eks-karpenter.yaml"


def _say(line: str) -> None:
    print(line, flush=True)


def up(workdir: Path) -> int:
    state = cluster.up(workdir)

    def kube(*args: str) -> str:
        return cluster.kubectl(state, *args)

    _say("tidal: installing CRDs")
    kube("apply", "--server-side", "--force-conflicts", "-k", str(REPO / "crds"))
    kube(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/inferenceendpoints.tidal.dev",
        "crd/vectorcollections.tidal.dev",
    )
    if state.elastic:
        # The cluster's conventions, as on EKS with Karpenter: Karpenter's nodes carry its GPU
        # labels from birth (GPU Feature Discovery's only once the GPU operator ran), and its
        # spot marker is the one that matters. Read by the operator at start-up.
        _say(f"tidal: cluster conventions from {ELASTIC_CONVENTIONS.relative_to(REPO)}")
        kube("apply", "-f", str(REPO / "manifests" / "namespace.yaml"))
        kube("apply", "-f", str(ELASTIC_CONVENTIONS))
    pid = state.pids.get("tidal-operator")
    if pid is None or not cluster.alive(pid):
        log = Path(state.workdir) / "logs" / "tidal-operator.log"
        env = dict(os.environ, KUBECONFIG=str(state.kubeconfig), TIDAL_LOG_FORMAT="plain")
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tidal.cli", "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        state.pids["tidal-operator"] = proc.pid
        cluster.save_state(state)
        _say(f"tidal: operator running (pid {proc.pid}, log {log})")
    _say("tidal: applying samples (manifests/samples)")
    kube("apply", "-k", str(REPO / "manifests/samples"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        obj = json.loads(kube("get", "inferenceendpoint", "llama", "-n", "default", "-o", "json"))
        ready = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
        if ready and ready[0]["status"] == "True":
            break
        time.sleep(1)
    _say("\n$ kubectl get tidal -A")
    _say(kube("get", "tidal", "-A"))
    _say("$ kubectl get pods -A -o wide")
    _say(kube("get", "pods", "-A", "-o", "wide"))
    _say(
        f"The demo keeps running. Explore it with:\n"
        f"  export KUBECONFIG={state.kubeconfig}\n"
        f"  export PATH={state.bin_dir}:$PATH   # kubectl {state.bin_dir}/kubectl\n"
        f"  kubectl get ie -o wide; kubectl describe ie llama\n"
        f"Stop everything with: make demo-down"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tidal.devcluster.demo")
    parser.add_argument("--down", action="store_true", help="stop the demo")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = (args.workdir or cluster.default_workdir()).absolute()
    try:
        if args.down:
            cluster.down(workdir)
            return 0
        return up(workdir)
    except cluster.ClusterError as err:
        print(f"tidal: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
