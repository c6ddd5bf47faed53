"""A real Prometheus for the tests: Debian's `prometheus` binary on a loopback port.

`ensure_installed` installs the Debian package when `/usr/bin/prometheus` is missing (the same
step as `make prometheus`). The package's systemd unit is never used (there is no systemd on the
build machines); the binary is started directly with a generated config that scrapes the given
targets every second (or runs the scrape configs a test gives it), a throwaway TSDB folder, and
the lifecycle API off. The `prometheus`
fixture starts servers on demand and stops every one it started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import processes
from tests.e2e.processes import free_port

BINARY = Path("/usr/bin/prometheus")
SCRAPE_INTERVAL_SECONDS = 1


def ensure_installed() -> Path:
    """The prometheus binary, installing Debian's package first when it is missing."""
    if BINARY.exists():
        return BINARY
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        [*sudo, "apt-get", "update"],
        [*sudo, "apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    if not BINARY.exists():
        raise RuntimeError(f"installed the prometheus package but {BINARY} is missing")
    return BINARY


class PrometheusServer:
    """One running Prometheus; `url` is its HTTP API, `stop()` ends it and removes its data."""

    def __init__(
        self,
        targets: Sequence[str],
        port: int | None = None,
        scrape_configs: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        self.binary = ensure_installed()
        self.workdir = Path(tempfile.mkdtemp(prefix="tidal-prometheus-"))
        self.targets = list(targets)
        # A given port: one a running operator was told to query before this server existed.
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                "scrape_timeout": f"{SCRAPE_INTERVAL_SECONDS}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
            },
            "scrape_configs": list(scrape_configs)
            if scrape_configs is not None
            else [
                {
                    "job_name": "simulated",
                    # Keep the namespace/pod labels the simulator writes, as a Kubernetes scrape
                    # would have attached them.
                    "honor_labels": True,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._log = (self.workdir / "prometheus.log").open("w")
        try:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except OSError:
            self._log.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        try:
            self._wait_ready(timeout=30)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.log()}")

    def wait_scraped(self, timeout: float = 60) -> None:
        """Until every target has been scraped successfully once. A rate over a window that
        begins before the first scrape reads low (Prometheus extrapolates only part of the
        way to the window's start), and "ready" comes before the first scrape, by up to a
        scrape interval and by longer on a busy machine."""
        deadline = time.monotonic() + timeout
        query = urllib.parse.urlencode({"query": 'up{job="simulated"} == 1'})
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=2) as rsp:
                    result = json.loads(rsp.read())["data"]["result"]
                if len(result) >= len(self.targets):
                    return
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus did not scrape {self.targets} in {timeout}s:\n{self.log()}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result list (empty when Prometheus does not answer yet)."""
        encoded = urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{encoded}", timeout=2) as rsp:
                result: list[dict[str, Any]] = json.loads(rsp.read())["data"]["result"]
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            return []
        return result

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        processes.stop(self.process, timeout=15)
        self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


StartPrometheus = Callable[[Sequence[str]], PrometheusServer]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[StartPrometheus]:
    """`prometheus(targets)` starts a server; every one started is stopped after the module."""
    started: list[PrometheusServer] = []

    def start(targets: Sequence[str]) -> PrometheusServer:
        server = PrometheusServer(targets)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
