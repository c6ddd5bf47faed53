"""Helpers for the reliability e2e tests (admission, bad input, faults): operator processes the
test starts, kills and restarts itself, and a pause of the session operator around them.

Isolation: the session `operator` fixture runs one cluster-wide operator for the whole suite.
These tests need operators with other settings (webhooks on, peering, kill -9), and two
cluster-wide operators would both act on every object. So each of these test modules stops
the session operator for its duration (`session_operator_paused`) and starts its own; the
session operator is started again afterwards, before the next module's tests run (the e2e
suite runs in file order, `-p no:randomly`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.e2e import processes
from tests.e2e.conftest import REPO, Operator
from tests.e2e.kube import Kube

# A Python traceback in an operator log means a handler or Kopf itself crashed (unanchored: in
# JSON logs it sits escaped inside a field).
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


class OperatorProcess:
    """One `tidal run` the test controls: extra environment, signals, restarts, its own log."""

    def __init__(
        self,
        kube: Kube,
        log: Path,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.kube = kube
        self.log = log
        self.env = dict(env or {})
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kube.kubeconfig),
            TIDAL_RECONCILE_INTERVAL_SECONDS="5",
            TIDAL_LOG_FORMAT="plain",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env)
        with self.log.open("ab") as out:
            out.write(f"\n===== start #{self.starts + 1} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tidal.cli", "run", *self.args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None, "operator not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no cleanup of any kind (peering entries, webhook configuration, handlers)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, as a rollout would: Kopf finishes and cleans up."""
        if self.proc is None:
            return
        processes.stop(self.proc, timeout=30)
        self.proc = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 120) -> str:
        return "\n".join(self.text().splitlines()[-lines:]) or "(empty log)"

    def tracebacks(self) -> list[str]:
        """Each traceback in the log with the lines around it (empty when there is none)."""
        text = self.text()
        return [text[max(0, m.start() - 400) : m.start() + 1600] for m in TRACEBACK.finditer(text)]

    def wait_for_log(self, pattern: str, timeout: float = 60, since: int = 0) -> re.Match[str]:
        """Wait until the log (from character offset `since`, see `size`) matches `pattern`."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = compiled.search(self.text()[since:])
            if found:
                return found
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"operator exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(0.3)
        raise AssertionError(f"no {pattern!r} in the operator log after {timeout}s:\n{self.tail()}")

    def size(self) -> int:
        """The log's length in characters, an offset for `wait_for_log`."""
        return len(self.text())


@contextlib.contextmanager
def session_operator_paused(operator: Operator) -> Iterator[None]:
    """Stop the suite's operator while the body runs its own; start it again afterwards."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


def webhook_env(port: int) -> dict[str, str]:
    """An operator serving the admission webhooks to the local API server on 127.0.0.1."""
    return {
        "TIDAL_WEBHOOKS": "1",
        "TIDAL_WEBHOOK_HOST": "127.0.0.1",
        "TIDAL_WEBHOOK_PORT": str(port),
    }


def webhook_configuration(kube: Kube) -> dict[str, Any] | None:
    return kube.get("validatingwebhookconfiguration", "validate.tidal.dev")


def dump(kube: Kube, namespace: str, *operators: OperatorProcess) -> str:
    """What a failing reliability test prints: operator logs, Events, objects."""
    parts = [f"===== {op.log.name} (tail) =====\n{op.tail()}" for op in operators]
    parts.append(
        kube.run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)
    )
    parts.append(
        kube.run("get", "tidal,deploy,svc,pods", "-n", namespace, "-o", "wide", check=False)
    )
    return "\n".join(parts)
