"""Fault injection for the local control plane: kill a component and start it again as it was.

Owns: `kill` (a signal to the component's process group, waiting until it is gone), `start`
(the same command line, ports and work dir as `cluster.up` used, then its health check) and
`restart` (both, timed). The fault tests use it to restart etcd and kube-apiserver under a
running operator. Must not: change what a component runs with (that is `cluster`), or touch
anything the cluster did not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Final

from tidal.devcluster import cluster
from tidal.devcluster import pki as pki_mod

__all__ = ["RESTARTABLE", "kill", "restart", "start"]

# Components with a health endpoint this module knows how to wait for.
RESTARTABLE: Final = ("etcd", "kube-apiserver")
_GONE_TIMEOUT: Final = 15.0
_READY_TIMEOUT: Final = 120.0


def kill(state: cluster.ClusterState, component: str, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the component's process group and wait until the process has exited."""
    pid = _pid(state, component)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    if not cluster.wait_gone(pid, _GONE_TIMEOUT):
        raise cluster.ClusterError(f"{component} (pid {pid}) survived signal {sig}")


def start(state: cluster.ClusterState, component: str, *, bind_to_parent: bool = True) -> None:
    """Start `component` with the command line `cluster.up` gave it; return once it is healthy.

    The new pid replaces the old one in `state` and in the state file, so `tidal dev down` and
    the test fixtures still stop it.
    """
    if component not in RESTARTABLE:
        raise ValueError(f"cannot restart {component}; restartable: {', '.join(RESTARTABLE)}")
    workdir = Path(state.workdir)
    pki = pki_mod.Pki(workdir / "pki")
    argv = cluster._command_lines(state, pki)[component]
    state.pids[component] = cluster._spawn(component, argv, workdir, bind_to_parent)
    cluster.save_state(state)
    logs = workdir / "logs"
    cluster._wait(
        "etcd /health",
        lambda: cluster._http_ok(f"http://127.0.0.1:{state.ports['etcd']}/health"),
        _READY_TIMEOUT,
        logs / "etcd.log",
        state,
    )
    context = cluster._admin_ssl(pki)
    cluster._wait(
        "kube-apiserver /readyz",
        lambda: cluster._http_ok(f"{state.server}/readyz", context),
        _READY_TIMEOUT,
        logs / "kube-apiserver.log",
        state,
    )


def restart(
    state: cluster.ClusterState,
    component: str,
    *,
    down_seconds: float = 0.0,
    sig: int = signal.SIGKILL,
    bind_to_parent: bool = True,
) -> float:
    """Kill `component`, keep it down `down_seconds`, start it again; return the seconds from
    the kill until the API server was ready again."""
    began = time.monotonic()
    kill(state, component, sig)
    time.sleep(down_seconds)
    start(state, component, bind_to_parent=bind_to_parent)
    return time.monotonic() - began


def _pid(state: cluster.ClusterState, component: str) -> int:
    try:
        return state.pids[component]
    except KeyError:
        raise cluster.ClusterError(f"{component} is not running in {state.workdir}") from None
