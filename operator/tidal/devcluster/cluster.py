"""Runs a real Kubernetes control plane as local processes: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and KWOK, on free loopback ports.

Owns: the process lifecycle (start in order, wait for health, stop everything it started), the
kubeconfigs, the state file that lets `tidal dev status|down` find a running cluster, the
effective KWOK configuration (rendered into the work dir with the fleet's simulated replica
start-up time), and creating the simulated fleet with one simulated GPU telemetry agent for all
its GPU nodes (`tidal agent --simulate --all-nodes`, recorded as the extra process
`tidal-agent`). For the elastic fleet it hands over to `karpenter`, which starts Karpenter as
one more extra process. Must not: build binaries (`build`), decide what nodes look like
(`fleet`), or hold Karpenter's setup (`karpenter`).

Everything lives in one work dir (default `./.tidal/dev`): `state.json`, `kubeconfig`, `pki/`,
`etcd/`, `kwok.yaml`, `logs/<component>.log`. Each component runs in its own session (process
group) so `down` can stop it with its children; with `bind_to_parent`, components also receive
SIGTERM when the process that started them dies (Linux `PR_SET_PDEATHSIG`), so a test run killed
with -9 leaves nothing behind. Short-lived helpers (a spot interruption waiting for its
deadline) are recorded apart, in `helpers`: they end on their own, and `down` ends them early.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tidal.api.labels import NOT_READY_TAINT
from tidal.devcluster import fleet as fleet_mod
from tidal.devcluster import pki as pki_mod
from tidal.devcluster.build import Versions, ensure_binaries

# The simulated replica start-up time for every fleet, over the fleet file's own (seconds).
STARTUP_ENV = "TIDAL_SIM_STARTUP_SECONDS"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.96.0.0/16"

Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The local control plane could not start or be reached; the message names the log."""


@dataclass
class ClusterState:
    workdir: str
    bin_dir: str
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    ready_seconds: float = 0.0
    nodes: int = 0
    # The fleet file `up` used, whether it is elastic (Karpenter runs), and the simulated
    # replica start-up time KWOK was configured with.
    fleet: str = ""
    elastic: bool = False
    startup_seconds: float = 0.0
    # Elastic fleet: region -> instance types whose spot capacity has run out (`tidal dev spot`),
    # kept so that a restart of Karpenter keeps them out.
    unavailable_spot: dict[str, list[str]] = field(default_factory=dict)
    # Elastic fleet: the Karpenter binary `up` started (a restart runs the same one).
    karpenter_bin: str = ""
    # Short-lived helper processes (name -> pid) that end on their own; `down` ends them early.
    helpers: dict[str, int] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return Path(self.workdir) / "kubeconfig"

    @property
    def kwok_config(self) -> Path:
        return Path(self.workdir) / "kwok.yaml"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"


def default_workdir() -> Path:
    return Path(os.environ.get("TIDAL_DEV_DIR", ".tidal/dev")).absolute()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _state_path(workdir: Path) -> Path:
    return workdir / "state.json"


def load_state(workdir: Path) -> ClusterState | None:
    path = _state_path(workdir)
    if not path.exists():
        return None
    return ClusterState(**json.loads(path.read_text()))


def save_state(state: ClusterState) -> None:
    path = _state_path(Path(state.workdir))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state too.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def is_running(workdir: Path) -> bool:
    state = load_state(workdir)
    return state is not None and all(alive(p) for p in state.pids.values()) and bool(state.pids)


def write_kubeconfig(path: Path, server: str, pki: pki_mod.Pki, who: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "tidal-dev",
                "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": who,
                "user": {
                    "client-certificate": str(pki.client_cert(who)),
                    "client-key": str(pki.client_key(who)),
                },
            }
        ],
        "contexts": [{"name": "tidal-dev", "context": {"cluster": "tidal-dev", "user": who}}],
        "current-context": "tidal-dev",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _die_with_parent() -> None:
    # SIGKILL, not SIGTERM: once the parent is gone nobody stops the rest in order, and a
    # graceful shutdown can hang on a peer that died with it (an API server waiting for etcd,
    # Karpenter for the API server) and outlive the run. A test run's cluster is disposable.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


# Popen objects of the components this process started, kept so they are reaped (and not
# reported as still running when garbage-collected) when `stop_processes` ends them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(
    name: str,
    argv: list[str],
    workdir: Path,
    bind_to_parent: bool,
    env: dict[str, str] | None = None,
) -> int:
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
            preexec_fn=_die_with_parent if bind_to_parent else None,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _wait(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    log: Path | None,
    state: ClusterState | None = None,
) -> None:
    """Poll `check`; fail at once, naming the log, if a component we started has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        dead = [n for n, pid in (state.pids.items() if state else []) if not alive(pid)]
        if dead:
            logs = (
                ", ".join(str(Path(state.workdir) / "logs" / f"{n}.log") for n in dead)
                if state
                else ""
            )
            raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}; see {logs}")
        time.sleep(0.25)
    hint = f"; see {log}" if log else ""
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{hint}")


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _admin_ssl(pki: pki_mod.Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert("admin")), str(pki.client_key("admin")))
    return context


def kubectl(state: ClusterState, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
    """Run the cluster's own kubectl against it; raise ClusterError with its stderr on failure."""
    proc = subprocess.run(
        [str(Path(state.bin_dir) / "kubectl"), f"--kubeconfig={state.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _command_lines(state: ClusterState, pki: pki_mod.Pki) -> dict[str, list[str]]:
    b, w, p = Path(state.bin_dir), Path(state.workdir), state.ports
    etcd_url = f"http://127.0.0.1:{p['etcd']}"
    peer_url = f"http://127.0.0.1:{p['etcd-peer']}"
    common_component = [
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
    ]
    return {
        "etcd": [
            str(b / "etcd"),
            "--name=tidal-dev",
            f"--data-dir={w / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=tidal-dev={peer_url}",
            # A throwaway test cluster: durability is not worth fsync latency on shared disks.
            "--unsafe-no-fsync=true",
            "--auto-compaction-retention=1",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(b / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['apiserver']}",
            # Without a default route the API server cannot pick an address to advertise.
            "--advertise-address=127.0.0.1",
            # Endpoints reject 127.0.0.0/8, so the server must not publish its own Endpoints.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki.server_cert}",
            f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
        ],
        "kube-controller-manager": [
            str(b / "kube-controller-manager"),
            *common_component,
            f"--kubeconfig={w / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={w / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={w / 'controller-manager.kubeconfig'}",
            f"--secure-port={p['controller-manager']}",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.sa_key}",
            # Each controller acts as its own service account, as kubeadm sets it up, so the
            # bootstrap RBAC roles (node-controller, garbage-collector, ...) apply.
            "--use-service-account-credentials=true",
            "--node-monitor-period=5s",
            "--node-monitor-grace-period=40s",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ],
        "kube-scheduler": [
            str(b / "kube-scheduler"),
            *common_component,
            f"--kubeconfig={w / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={w / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={w / 'scheduler.kubeconfig'}",
            f"--secure-port={p['scheduler']}",
        ],
        "kwok": [
            str(b / "kwok"),
            f"--kubeconfig={w / 'kwok.kubeconfig'}",
            f"--config={state.kwok_config}",
        ],
    }


def up(
    workdir: Path | None = None,
    fleet_file: Path | str | None = None,
    *,
    bind_to_parent: bool = False,
    progress: Progress = _stderr,
    versions: Versions | None = None,
    startup_seconds: float | None = None,
) -> ClusterState:
    """Start the control plane and the simulated fleet; return once every node is Ready (and,
    for an elastic fleet, Karpenter answers its health check).

    `fleet_file` is `static`, `elastic` or a fleet file (default: `TIDAL_FLEET`, else static).
    `startup_seconds` is how long simulated replicas stay Running but not Ready (default:
    `TIDAL_SIM_STARTUP_SECONDS`, else the fleet file's `startupSeconds`: 0 static, 30 elastic).
    """
    workdir = (workdir or default_workdir()).absolute()
    fleet_path = fleet_mod.resolve(fleet_file or os.environ.get("TIDAL_FLEET") or "static")
    fleet = fleet_mod.load_any(fleet_path)
    startup = _startup_seconds(startup_seconds, fleet)
    if is_running(workdir):
        state = load_state(workdir)
        assert state is not None
        progress(f"tidal: local cluster already running ({state.server})")
        if state.fleet and state.fleet != str(fleet_path.absolute()):
            progress(f"tidal: it runs the fleet {state.fleet}; `tidal dev down` to change it")
        return state
    down(workdir, progress=lambda _: None)
    bins = ensure_binaries(versions or Versions(), progress)
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("etcd", "logs"):
        subprocess.run(["rm", "-rf", str(workdir / stale)], check=True)
    started = time.monotonic()
    pki = pki_mod.generate(workdir / "pki")
    ports = {
        name: _free_port()
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")
    }
    state = ClusterState(
        workdir=str(workdir),
        bin_dir=str(bins),
        ports=ports,
        started_at=time.time(),
        fleet=str(fleet_path.absolute()),
        elastic=isinstance(fleet, fleet_mod.ElasticFleet),
        startup_seconds=startup,
    )
    state.kwok_config.write_text(
        fleet_mod.render_kwok_config(fleet_mod.KWOK_TEMPLATE.read_text(), startup, fleet.model_load)
    )
    write_kubeconfig(state.kubeconfig, state.server, pki, "admin")
    for who in ("controller-manager", "scheduler", "kwok"):
        write_kubeconfig(workdir / f"{who}.kubeconfig", state.server, pki, who)
    commands = _command_lines(state, pki)
    logs = workdir / "logs"
    try:

        def start(name: str) -> None:
            state.pids[name] = _spawn(name, commands[name], workdir, bind_to_parent)
            save_state(state)

        progress(f"tidal: starting etcd on 127.0.0.1:{ports['etcd']}")
        start("etcd")
        _wait(
            "etcd /health",
            lambda: _http_ok(f"http://127.0.0.1:{ports['etcd']}/health"),
            60,
            logs / "etcd.log",
        )
        progress(f"tidal: starting kube-apiserver on {state.server}")
        start("kube-apiserver")
        context = _admin_ssl(pki)
        _wait(
            "kube-apiserver /readyz",
            lambda: _http_ok(f"{state.server}/readyz", context),
            180,
            logs / "kube-apiserver.log",
        )
        progress("tidal: starting kube-controller-manager, kube-scheduler, kwok")
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            start(name)
        _wait(
            "the default ServiceAccount (controller manager running)",
            lambda: _quiet_ok(state, "get", "serviceaccount", "default", "-n", "default"),
            120,
            logs / "kube-controller-manager.log",
        )
        _populate(state, fleet, bind_to_parent, progress)
    except BaseException:
        stop_processes(state)
        raise
    state.ready_seconds = round(time.monotonic() - started, 1)
    save_state(state)
    elastic = ", GPU nodes from Karpenter" if state.elastic else ""
    progress(
        f"tidal: local cluster ready in {state.ready_seconds}s "
        f"({state.nodes} nodes{elastic}); KUBECONFIG={state.kubeconfig}"
    )
    return state


def _populate(
    state: ClusterState, fleet: fleet_mod.Fleet, bind_to_parent: bool, progress: Progress
) -> None:
    """The fleet's static nodes, the simulated GPU agent, and Karpenter for an elastic fleet."""
    nodes = fleet_mod.render_nodes(fleet)
    progress(f"tidal: creating {len(nodes)} simulated nodes")
    create_nodes(state, nodes)
    _wait(
        f"{len(nodes)} nodes Ready and schedulable",
        lambda: _nodes_ready(state) >= len(nodes),
        180,
        Path(state.workdir) / "logs" / "kwok.log",
    )
    state.nodes = len(nodes)
    _start_agent(state, bind_to_parent, progress)
    if isinstance(fleet, fleet_mod.ElasticFleet):
        # Imported here: `karpenter` builds on this module's process helpers.
        import tidal.devcluster.karpenter as karpenter

        karpenter.install(state, fleet, bind_to_parent=bind_to_parent, progress=progress)


def _startup_seconds(given: float | None, fleet: fleet_mod.Fleet) -> float:
    if given is not None:
        return given
    from_env = os.environ.get(STARTUP_ENV)
    if from_env:
        try:
            return float(from_env)
        except ValueError:
            raise ClusterError(f"{STARTUP_ENV}={from_env!r} is not a number of seconds") from None
    return fleet.startup_seconds


def _start_agent(state: ClusterState, bind_to_parent: bool, progress: Progress) -> None:
    """One simulated GPU telemetry agent for every GPU node (`tidal agent --simulate
    --all-nodes`), so the fleet carries live `tidal.dev/gpu-telemetry` annotations."""
    workdir = Path(state.workdir)
    port = state.ports["tidal-agent"] = _free_port()
    argv = [
        "env",
        f"KUBECONFIG={state.kubeconfig}",
        sys.executable,
        "-m",
        "tidal.cli",
        "agent",
        "--simulate",
        "--all-nodes",
        "--interval=1",
        "--window=5",
        f"--metrics-address=127.0.0.1:{port}",
    ]
    progress(f"tidal: starting the simulated GPU agent (metrics on 127.0.0.1:{port})")
    state.pids["tidal-agent"] = _spawn("tidal-agent", argv, workdir, bind_to_parent)
    save_state(state)
    _wait(
        "the simulated GPU agent's first telemetry (/readyz)",
        lambda: _http_ok(f"http://127.0.0.1:{port}/readyz"),
        60,
        workdir / "logs" / "tidal-agent.log",
        state,
    )


def _quiet_ok(state: ClusterState, *args: str) -> bool:
    try:
        kubectl(state, *args)
    except (ClusterError, subprocess.TimeoutExpired):
        return False
    return True


def create_nodes(state: ClusterState, nodes: list[dict[str, Any]]) -> None:
    """Create Nodes with their status (the API server keeps status given on create)."""
    existing = set(kubectl(state, "get", "nodes", "-o", "name").split())
    fresh = [n for n in nodes if f"node/{n['metadata']['name']}" not in existing]
    if fresh:
        kubectl(
            state,
            "create",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": fresh}),
        )


def _nodes_ready(state: ClusterState) -> int:
    try:
        listing = json.loads(kubectl(state, "get", "nodes", "-o", "json"))
    except (ClusterError, subprocess.TimeoutExpired):
        return 0
    ready = 0
    for node in listing["items"]:
        conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        taints = {t["key"] for t in node.get("spec", {}).get("taints") or []}
        if conditions.get("Ready") == "True" and NOT_READY_TAINT not in taints:
            ready += 1
    return ready


def stop_processes(state: ClusterState, timeout: float = 15) -> None:
    """SIGTERM every component's process group, in reverse start order; SIGKILL stragglers."""
    stop_helpers(state)
    # Extra processes (the demo's operator, Karpenter) go first: they depend on the control plane.
    extras = [n for n in state.pids if n not in COMPONENTS]
    order = extras + [c for c in reversed(COMPONENTS) if c in state.pids]
    for name in order:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(state.pids[name], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name in order:
        pid = state.pids[name]
        if not wait_gone(pid, max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            # SIGKILL is not instant: wait so that none outlives the caller.
            wait_gone(pid, 10)
    state.pids.clear()


# Every helper's command line carries this, so a pid reused by another process is never signalled.
HELPER_MARK = "tidal.devcluster"


def helper_alive(pid: int) -> bool:
    """Whether `pid` is still one of our helpers, not a process that reused its number."""
    if not alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return HELPER_MARK.encode() in cmdline


def stop_helpers(state: ClusterState) -> None:
    """End the helpers still running (their process groups) and forget them all."""
    for pid in state.helpers.values():
        if helper_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            if not wait_gone(pid, 5):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                wait_gone(pid, 5)
        else:
            # Ended on its own: reap it through its Popen (a helper this process started), or
            # Python reports it "still running" when that Popen is collected.
            wait_gone(pid, 0)
    state.helpers.clear()


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to exit; whether it did.

    A process this one started is waited for through its Popen, which reaps it and records its
    exit: `alive` cannot tell, as a Go binary's main thread shows as a zombie while its other
    threads are still exiting, and a Popen never waited for is reported as still running when
    it is garbage-collected. Any other process counts as gone once only a zombie is left (reaped
    here when it is a child of ours after all).
    """
    child = _CHILDREN.get(pid)
    if child is not None:
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        del _CHILDREN[pid]
        return True
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return True


def down(workdir: Path | None = None, *, progress: Progress = _stderr) -> bool:
    """Stop what `up` started in this work dir. Returns whether anything was running."""
    workdir = (workdir or default_workdir()).absolute()
    state = load_state(workdir)
    if state is None or not state.pids:
        progress(f"tidal: no local cluster recorded in {workdir}")
        return False
    running = [n for n, p in state.pids.items() if alive(p)]
    running += [n for n, p in state.helpers.items() if helper_alive(p)]
    stop_processes(state)
    save_state(state)
    progress(f"tidal: stopped {', '.join(running) or 'nothing (already stopped)'}")
    return bool(running)


def status(workdir: Path | None = None) -> str:
    """A human summary: each component, its pid and port, and the nodes the API server holds."""
    workdir = (workdir or default_workdir()).absolute()
    state = load_state(workdir)
    if state is None or not state.pids:
        return f"no local cluster in {workdir} (start one with `tidal dev up`)"
    port_of = {
        "etcd": "etcd",
        "kube-apiserver": "apiserver",
        "kube-controller-manager": "controller-manager",
        "kube-scheduler": "scheduler",
    }
    lines = [
        f"workdir     {workdir}",
        f"kubeconfig  {state.kubeconfig}",
        f"binaries    {state.bin_dir}",
    ]
    port_of |= {"tidal-agent": "tidal-agent", "karpenter": "karpenter-health"}
    extras = [n for n in state.pids if n not in COMPONENTS]
    for name in (*COMPONENTS, *extras):
        pid = state.pids.get(name)
        running = pid is not None and alive(pid)
        port = state.ports.get(port_of.get(name, ""), "")
        where = f"127.0.0.1:{port}" if port else "-"
        lines.append(
            f"{name:<24} {'running' if running else 'STOPPED':<8} pid={pid} {where}  "
            f"log={workdir / 'logs' / (name + '.log')}"
        )
    for name, pid in state.helpers.items():
        if helper_alive(pid):
            lines.append(f"{name:<24} {'running':<8} pid={pid} (helper)")
    if state.elastic:
        gone = ", ".join(f"{r}: {', '.join(t)}" for r, t in state.unavailable_spot.items() if t)
        lines.append(f"fleet       elastic ({state.fleet}); spot unavailable: {gone or 'none'}")
    lines.append(f"startup     simulated replicas become Ready after {state.startup_seconds:g}s")
    if state.pids.get("kube-apiserver") and alive(state.pids["kube-apiserver"]):
        if state.elastic:
            lines.append(f"nodes ready {_nodes_ready(state)} ({state.nodes} static)")
        else:
            lines.append(f"nodes ready {_nodes_ready(state)}/{state.nodes}")
    return "\n".join(lines)
