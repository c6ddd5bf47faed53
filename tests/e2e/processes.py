"""Stopping the processes the e2e fixtures start (operator, gateway, agent, Prometheus, Postgres).

Owns `stop`: ask for a clean shutdown, wait, and SIGKILL what does not go, waiting again, so
that every process is reaped. A Popen that is never waited for leaves a zombie and is reported
as "still running" when it is garbage-collected. Also what starting one needs: a free loopback
port (`free_port`) and a child that dies with the test run (`die_with_parent`, a Popen
`preexec_fn`). Must not start anything, or assert anything.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["die_with_parent", "free_port", "live_children", "stop"]

# SIGKILL cannot be ignored; this long covers a loaded machine.
_KILLED_SECONDS = 10


def stop(process: subprocess.Popen[Any], timeout: float, sig: int = signal.SIGTERM) -> None:
    """Send `sig` (SIGTERM: shut down cleanly) unless it has exited; SIGKILL after `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=_KILLED_SECONDS)


def live_children(parent: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose parent is `parent` and that is not a zombie
    (a zombie has ended; only its exit status waits to be read)."""
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        # The command name (2nd field) is in parentheses and may hold spaces: split after it.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z":
            found.append((int(entry.name), command.strip()))
    return sorted(found)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test run dies (Linux `PR_SET_PDEATHSIG`)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
