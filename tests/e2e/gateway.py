"""E2E helpers for the gateway: simulated model servers behind Running pods, the gateway process.

How simulated pods get a server (issue 6, option (a) with an address map): KWOK gives pods IPs
from 10.244.0.0/16 that nothing listens on, and EndpointSlices refuse loopback addresses, so
KWOK's CIDR stays as it is. Instead `FakeReplicas` starts one `tests.fakes.model_server` per
Running pod, bound to a loopback address derived from the pod IP (10.244.3.7 -> 127.244.3.7,
the whole 127.0.0.0/8 is local on Linux), and writes `{"<podIP>": "<host>:<port>"}` to a file
the gateway reads through its test hook `--pod-address-map`. A pod without a server yet is not
routable, exactly like a pod that is not ready. All traffic stays on this machine.

`GatewayProcess` runs `tidal gateway` as a child process with a kubeconfig holding the
`tidal-gateway` ServiceAccount's token, so its RBAC and admission policy (manifests/gateway) are
the ones in force. Every process and thread these helpers start, they stop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import processes
from tests.e2e.conftest import REPO
from tests.e2e.kube import Kube
from tests.e2e.processes import free_port
from tests.fakes.model_server import Behaviour, ModelServer, ServerThread

GATEWAY_DIR = REPO / "manifests" / "gateway"
SERVICE_ACCOUNT = "tidal-gateway"
NAMESPACE = "tidal-system"


def loopback_for(pod_ip: str) -> str:
    """10.244.3.7 -> 127.244.3.7: one loopback address per pod, stable and readable."""
    return "127." + ".".join(pod_ip.split(".")[1:])


def install_access(kube: Kube) -> None:
    """The gateway's ServiceAccount, RBAC and admission policy (not its Deployment)."""
    kube.run("apply", "--server-side", "-f", str(REPO / "manifests" / "namespace.yaml"))
    for name in ("serviceaccount.yaml", "rbac.yaml", "admission-policy.yaml"):
        kube.run("apply", "--server-side", "-f", str(GATEWAY_DIR / name))


def remove_access(kube: Kube) -> None:
    for name in ("admission-policy.yaml", "rbac.yaml", "serviceaccount.yaml"):
        kube.run("delete", "-f", str(GATEWAY_DIR / name), "--wait=false", check=False)


def token_kubeconfig(kube: Kube, directory: Path, duration: str = "1h") -> Path:
    """A kubeconfig that authenticates as the gateway's ServiceAccount."""
    token = kube.run(
        "create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, f"--duration={duration}"
    ).strip()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    (cluster,) = config["clusters"]
    path = directory / "gateway.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "gateway", "user": {"token": token}}],
                "contexts": [
                    {"name": "gateway", "context": {"cluster": cluster["name"], "user": "gateway"}}
                ],
                "current-context": "gateway",
            }
        )
    )
    return path


# Longer than the gateway's address-map reload interval (`gateway.main._RELOAD_SECONDS`).
_RETIRE_AFTER_SECONDS = 5.0


class FakeReplicas:
    """Simulated model servers for Running pods, and the address map the gateway reads."""

    def __init__(self, kube: Kube, map_file: Path) -> None:
        self.kube = kube
        self.map_file = map_file
        self.thread = ServerThread()
        # Pod IP -> (the pod's uid, its server). KWOK hands a deleted pod's IP to the next pod,
        # so an address belongs to a server only while the same pod holds it.
        self.by_ip: dict[str, tuple[str, ModelServer]] = {}
        self._lock = threading.Lock()
        self._followed: dict[tuple[str, str], Behaviour] = {}
        # Servers replaced because a new pod got their IP, stopped only after the gateway has
        # had time to re-read the map (its reload interval): a map entry never points at a
        # server that is already gone, as a real pod's address never names a dead process.
        self._retired: list[tuple[float, ModelServer]] = []
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._write()

    def running_pods(self, namespace: str, endpoint: str) -> list[dict[str, Any]]:
        return self.running_pods_of(self.kube, namespace, endpoint)

    @staticmethod
    def running_pods_of(kube: Kube, namespace: str, endpoint: str) -> list[dict[str, Any]]:
        pods = kube.list("pods", namespace, selector=f"tidal.dev/endpoint={endpoint}")
        return [
            p
            for p in pods
            if p["status"].get("phase") == "Running"
            and p["status"].get("podIP")
            and not p["metadata"].get("deletionTimestamp")
        ]

    def serve(self, namespace: str, endpoint: str, behaviour: Behaviour) -> list[ModelServer]:
        """Start a server for every Running pod of the endpoint that has none; drop servers of
        pods that are gone. Returns the endpoint's servers."""
        pods = {
            p["status"]["podIP"]: p["metadata"]["uid"]
            for p in self.running_pods(namespace, endpoint)
        }
        with self._lock:
            for ip, uid in sorted(pods.items()):
                known = self.by_ip.get(ip)
                if known is not None and known[0] != uid:  # a reused IP: the old pod is gone
                    # Make before break: the new server first, the old one stops later.
                    self._retired.append((time.monotonic() + _RETIRE_AFTER_SECONDS, known[1]))
                    known = None
                if known is None:
                    self.by_ip[ip] = (uid, self.thread.start(behaviour, host=loopback_for(ip)))
            self._write()
            self._stop_retired()
            return [self.by_ip[ip][1] for ip in sorted(pods)]

    def _stop_retired(self, everything: bool = False) -> None:
        now = time.monotonic()
        due = [s for at, s in self._retired if everything or at <= now]
        self._retired = [(at, s) for at, s in self._retired if not (everything or at <= now)]
        for server in due:
            self.thread.stop(server)

    def follow(self, namespace: str, endpoint: str, behaviour: Behaviour) -> None:
        """Keep serving the endpoint's pods as they come and go (scaling tests)."""
        self._followed[(namespace, endpoint)] = behaviour
        if self._follower is None:
            self._follower = threading.Thread(target=self._follow, daemon=True)
            self._follower.start()

    def forget_all(self) -> None:
        """Stop every server and empty the map (between tests: their pods are going away)."""
        self._followed.clear()
        with self._lock:
            for _, server in self.by_ip.values():
                self.thread.stop(server)
            self.by_ip.clear()
            self._stop_retired(everything=True)
            self._write()

    def _follow(self) -> None:
        while not self._stop.wait(1.0):
            for (namespace, endpoint), behaviour in list(self._followed.items()):
                try:
                    self.serve(namespace, endpoint, behaviour)
                except AssertionError:  # a kubectl hiccup; try again next round
                    continue

    def _write(self) -> None:
        mapping = {ip: server.address for ip, (_, server) in self.by_ip.items()}
        partial = self.map_file.with_suffix(".tmp")
        partial.write_text(json.dumps(mapping))
        partial.replace(self.map_file)  # atomic: the gateway never reads half a file

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=10)
        self.thread.close()


@dataclass
class GatewayProcess:
    """`tidal gateway` as a child process."""

    url: str
    admin_url: str
    log: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, kubeconfig: Path, map_file: Path, log: Path, *extra: str) -> GatewayProcess:
        port, admin = free_port(), free_port()
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), PYTHONUNBUFFERED="1")
        env.pop("TIDAL_GATEWAY_TOKEN", None)
        command = [
            sys.executable,
            "-m",
            "tidal.cli",
            "gateway",
            f"--listen=127.0.0.1:{port}",
            f"--admin-listen=127.0.0.1:{admin}",
            f"--pod-address-map={map_file}",
            "--name=e2e-gateway",
            *extra,
        ]
        with log.open("ab") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
            )
        gateway = cls(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", log, process)
        try:
            gateway.wait_ready()
        except BaseException:
            gateway.stop()  # the caller never gets it to stop
            raise
        return gateway

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the gateway exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.admin_url + "/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"the gateway did not become ready:\n{self.tail()}")

    def inflight(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.admin_url + "/internal/inflight", timeout=5) as answer:
            report: dict[str, Any] = json.load(answer)
            return report

    def metrics(self) -> str:
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=5) as answer:
            return str(answer.read().decode())

    def tail(self, lines: int = 80) -> str:
        if not self.log.exists():
            return "(no gateway log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        processes.stop(self.process, timeout=20)


def post(
    url: str, body: dict[str, Any], timeout: float = 60, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST JSON; (status, headers, body) for any status."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
