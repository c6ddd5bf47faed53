"""Real Karpenter on the local control plane (the elastic fleet), and the cloud's part around it:
spot capacity that runs out and comes back, and spot interruptions.

Owns: installing Karpenter's CRDs, the KWOKNodeClass and the NodePools; the instance-types file in
the cluster's work dir (`karpenter-instance-types.json`); the `karpenter` process, an extra
process of the cluster (recorded in its state, stopped by `tidal dev down`, log in
`logs/karpenter.log`, bound to its parent with `bind_to_parent`); and the harness commands
`set_spot` (`tidal dev spot`) and `interrupt` (`tidal dev interrupt`), whose wait for the
deadline runs in a detached helper (`python -m tidal.devcluster.karpenter reclaim`, recorded in
the state's `helpers`). Must not: decide what instance types or NodePools look like (`fleet`
renders them), start the control plane (`cluster`), or build Karpenter (`build`).

How the cloud's events are played:

- Spot capacity runs out in a region (`set_spot(..., available=False)`): a cloud answers the
  launch with "insufficient capacity". Karpenter's KWOK provider (v1.15) cannot: it marks every
  offering of its file available when it reads it. So the region's spot offerings are left out of
  the file and Karpenter is restarted (it reads the file only at start-up); it then finds no spot
  offering there and launches nothing for pods that need one. The choice is kept in the cluster
  state, so a later restart keeps it; `available=True` puts them back.
- Spot interruption (`interrupt`): AWS gives a notice (2 minutes) and then takes the instance.
  Karpenter's interruption handling answers the notice by deleting the NodeClaim: its termination
  controller taints the node `karpenter.sh/disrupted:NoSchedule`, provisions for the pods and
  drains them, honouring PodDisruptionBudgets. Here the node is annotated with its termination
  time and tainted at once; the NodeClaim of a node Karpenter launched is deleted at once, as its
  interruption handling does (Karpenter also removes that taint from any node it is not deleting,
  so a taint alone would not last); at the deadline the Node and its NodeClaim are deleted,
  whatever the drain reached. A node Karpenter did not launch (the static fleet's) keeps its pods,
  tainted, until the deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml

from tidal.api.labels import KARPENTER_DISRUPTED_TAINT, SIMULATED_TERMINATION_TIME
from tidal.api.wire import format_time
from tidal.cost.defaults import DEFAULT_CATALOG
from tidal.devcluster import build, cluster
from tidal.devcluster import fleet as fleet_mod

__all__ = [
    "DEFAULT_NOTICE_SECONDS",
    "PROCESS",
    "Interruption",
    "install",
    "interrupt",
    "restart",
    "set_spot",
]

PROCESS: Final = "karpenter"
INSTANCE_TYPES_FILE: Final = "karpenter-instance-types.json"
# When the simulated cloud takes an interrupted node (RFC 3339). Not a Tidal label key: only the
# dev cluster's harness writes it, for people and tests to read.
DEFAULT_NOTICE_SECONDS: Final = 120.0
# Any existing namespace does: Karpenter keeps nothing there when leader election is off.
_SYSTEM_NAMESPACE: Final = "kube-system"
_READY_TIMEOUT: Final = 120.0
_STOP_TIMEOUT: Final = 15.0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- Installing and running Karpenter -----------------------------------------------------------


def install(
    state: cluster.ClusterState,
    fleet: fleet_mod.ElasticFleet,
    *,
    bind_to_parent: bool = False,
    progress: cluster.Progress = _stderr,
) -> None:
    """CRDs, node class, NodePools and the instance-types file, then the Karpenter process;
    returns once its health probe answers."""
    built = build.ensure_karpenter(progress=progress)
    progress(f"tidal: installing Karpenter's {len(built.crds)} CRDs, node class and NodePools")
    names = []
    for crd in built.crds:
        # Server-side: the NodePool CRD is too large for apply's last-applied annotation.
        cluster.kubectl(state, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
        names.append(f"crd/{yaml.safe_load(crd.read_text())['metadata']['name']}")
    cluster.kubectl(state, "wait", "--for=condition=Established", "--timeout=60s", *names)
    objects = fleet_mod.render_node_pools(fleet)
    listing = {"apiVersion": "v1", "kind": "List", "items": objects}
    cluster.kubectl(
        state, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(listing)
    )
    _write_instance_types(state, fleet)
    state.karpenter_bin = str(built.binary)
    _start(state, bind_to_parent=bind_to_parent, progress=progress)


def restart(
    state: cluster.ClusterState,
    *,
    bind_to_parent: bool = False,
    progress: cluster.Progress = _stderr,
) -> float:
    """Stop Karpenter and start it again on the same ports (it reads its instance-types file
    only at start-up); return the seconds until it answered its health probe again."""
    began = time.monotonic()
    pid = state.pids.pop(PROCESS, None)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        if not cluster.wait_gone(pid, _STOP_TIMEOUT):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            cluster.wait_gone(pid, 10)
    cluster.save_state(state)
    _start(state, bind_to_parent=bind_to_parent, progress=progress)
    return time.monotonic() - began


def _start(
    state: cluster.ClusterState, *, bind_to_parent: bool, progress: cluster.Progress
) -> None:
    workdir = Path(state.workdir)
    metrics = state.ports.setdefault("karpenter-metrics", cluster._free_port())
    health = state.ports.setdefault("karpenter-health", cluster._free_port())
    argv = [
        state.karpenter_bin,
        "--disable-leader-election",
        f"--instance-types-file-path={workdir / INSTANCE_TYPES_FILE}",
        f"--metrics-port={metrics}",
        f"--health-probe-port={health}",
        # Short batching windows: a Pending pod gets its NodeClaim within about a second.
        "--batch-idle-duration=200ms",
        "--batch-max-duration=2s",
    ]
    # No --kubeconfig flag exists (unknown flags make it panic): it reads KUBECONFIG.
    env = {"KUBECONFIG": str(state.kubeconfig), "SYSTEM_NAMESPACE": _SYSTEM_NAMESPACE}
    progress(f"tidal: starting Karpenter (KWOK provider; health on 127.0.0.1:{health})")
    state.pids[PROCESS] = cluster._spawn(PROCESS, argv, workdir, bind_to_parent, env=env)
    cluster.save_state(state)
    cluster._wait(
        "Karpenter's health probe (/readyz)",
        lambda: cluster._http_ok(f"http://127.0.0.1:{health}/readyz"),
        _READY_TIMEOUT,
        workdir / "logs" / f"{PROCESS}.log",
        state,
    )


def _write_instance_types(state: cluster.ClusterState, fleet: fleet_mod.ElasticFleet) -> None:
    types = fleet_mod.render_instance_types(fleet, DEFAULT_CATALOG, state.unavailable_spot)
    path = Path(state.workdir) / INSTANCE_TYPES_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(types, indent=1) + "\n")
    tmp.replace(path)


# --- The cloud: spot capacity -------------------------------------------------------------------


def set_spot(
    workdir: Path | None,
    region: str,
    *,
    available: bool,
    product: str | None = None,
    bind_to_parent: bool = False,
    progress: cluster.Progress = _stderr,
) -> list[str]:
    """Spot capacity for `product` (every GPU when None) in `region` runs out (`available`
    False) or comes back; Karpenter is restarted to see it. Returns the instance types changed."""
    state = _running(workdir)
    if not state.elastic:
        raise cluster.ClusterError(
            f"the cluster in {state.workdir} runs the static fleet; spot capacity can run out "
            "only in the elastic one (`tidal dev up --fleet elastic`)"
        )
    fleet = fleet_mod.load_elastic(Path(state.fleet))
    fleet.check_region(region)
    names = fleet.instance_type_names(product)
    gone = set(state.unavailable_spot.get(region, []))
    gone = gone - set(names) if available else gone | set(names)
    if gone:
        state.unavailable_spot[region] = sorted(gone)
    else:
        state.unavailable_spot.pop(region, None)
    cluster.save_state(state)
    _write_instance_types(state, fleet)
    word = "available again" if available else "unavailable"
    progress(f"tidal: spot {', '.join(names)} in {region} {word}; restarting Karpenter")
    restart(state, bind_to_parent=bind_to_parent, progress=progress)
    return names


# --- The cloud: spot interruptions --------------------------------------------------------------


@dataclass(frozen=True)
class Interruption:
    node: str
    nodeclaim: str | None
    deadline: float
    helper_pid: int | None


def interrupt(
    workdir: Path | None,
    node: str,
    notice: float = DEFAULT_NOTICE_SECONDS,
    *,
    wait: bool = False,
    bind_to_parent: bool = False,
    progress: cluster.Progress = _stderr,
) -> Interruption:
    """A spot interruption of `node` with `notice` seconds' warning (see the module docstring).

    Taints and annotates at once (the deadline is `notice` seconds after the taint); with
    `wait`, blocks until the node has been taken, otherwise returns at once and a detached
    helper takes it at the deadline.
    """
    if notice < 0:
        raise ValueError(f"the notice must be >= 0 seconds, got {notice}")
    state = _running(workdir)
    if not cluster.kubectl(state, "get", "node", node, "-o", "name", "--ignore-not-found"):
        raise cluster.ClusterError(f"no node {node!r} in the cluster in {state.workdir}")
    # The notice starts when the node is marked, as it does when a termination handler or
    # Karpenter taints it: the deadline counts from the taint, not from this call.
    cluster.kubectl(
        state, "taint", "node", node, "--overwrite", f"{KARPENTER_DISRUPTED_TAINT}:NoSchedule"
    )
    deadline = time.time() + notice
    stamp = format_time(datetime.fromtimestamp(deadline, UTC))
    cluster.kubectl(
        state, "annotate", "node", node, "--overwrite", f"{SIMULATED_TERMINATION_TIME}={stamp}"
    )
    claim = _nodeclaim_of(state, node) if state.elastic else None
    if claim is not None:
        cluster.kubectl(state, "delete", "nodeclaim", claim, "--wait=false", "--ignore-not-found")
    owner = f" (NodeClaim {claim} deleted: Karpenter drains it)" if claim else ""
    progress(f"tidal: node {node} interrupted, taken at {stamp}{owner}")
    if wait:
        _reclaim(state, node, claim, deadline)
        return Interruption(node, claim, deadline, None)
    argv = [
        sys.executable,
        "-m",
        "tidal.devcluster.karpenter",
        "reclaim",
        f"--workdir={state.workdir}",
        f"--node={node}",
        f"--at={deadline}",
    ]
    if claim is not None:
        argv.append(f"--nodeclaim={claim}")
    name = f"reclaim-{node}"
    pid = cluster._spawn(name, argv, Path(state.workdir), bind_to_parent)
    # Forget helpers that have ended (reaped, so no zombie or unwaited Popen is left behind);
    # `down` ends the ones still waiting.
    ended = {n: p for n, p in state.helpers.items() if not cluster.helper_alive(p)}
    for ended_pid in ended.values():
        cluster.wait_gone(ended_pid, 0)
    state.helpers = {n: p for n, p in state.helpers.items() if n not in ended}
    state.helpers[name] = pid
    cluster.save_state(state)
    return Interruption(node, claim, deadline, pid)


def _reclaim(state: cluster.ClusterState, node: str, claim: str | None, deadline: float) -> None:
    """At the deadline the cloud takes the instance: the Node and its NodeClaim go."""
    time.sleep(max(0.0, deadline - time.time()))
    cluster.kubectl(state, "delete", "node", node, "--wait=false", "--ignore-not-found")
    if claim is not None:
        cluster.kubectl(state, "delete", "nodeclaim", claim, "--wait=false", "--ignore-not-found")


def _nodeclaim_of(state: cluster.ClusterState, node: str) -> str | None:
    listing: dict[str, Any] = json.loads(cluster.kubectl(state, "get", "nodeclaims", "-o", "json"))
    for claim in listing["items"]:
        if (claim.get("status") or {}).get("nodeName") == node:
            return str(claim["metadata"]["name"])
    return None


def _running(workdir: Path | None) -> cluster.ClusterState:
    path = (workdir or cluster.default_workdir()).absolute()
    state = cluster.load_state(path)
    if state is None or not cluster.is_running(path):
        raise cluster.ClusterError(
            f"no local cluster running in {path} (start one with `tidal dev up --fleet elastic`)"
        )
    return state


def main(argv: list[str] | None = None) -> int:
    """The detached helper: `reclaim` waits for an interruption's deadline, then takes the node."""
    parser = argparse.ArgumentParser(prog="python -m tidal.devcluster.karpenter")
    sub = parser.add_subparsers(dest="command", required=True)
    reclaim = sub.add_parser("reclaim", help="take an interrupted node at its deadline")
    reclaim.add_argument("--workdir", type=Path, required=True)
    reclaim.add_argument("--node", required=True)
    reclaim.add_argument("--at", type=float, required=True, help="the deadline (Unix time)")
    reclaim.add_argument("--nodeclaim")
    args = parser.parse_args(argv)
    state = cluster.load_state(args.workdir)
    if state is None:
        print(f"tidal: no local cluster recorded in {args.workdir}", file=sys.stderr)
        return 1
    try:
        _reclaim(state, args.node, args.nodeclaim, args.at)
    except cluster.ClusterError as err:
        print(f"tidal: error: {err}", file=sys.stderr)
        return 1
    print(f"tidal: node {args.node} taken", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
