"""A real Qdrant server for the e2e tests, on loopback, started and stopped here.

Qdrant is not published on PyPI (or Debian) as a server, so the suite runs the binary users run:
`$TIDAL_QDRANT_BIN`, else `<repo>/../shared/bin/qdrant` (a checkout beside the project's shared
tools; `/work/shared/bin/README.md` says how that one was built from Qdrant's release source).
A missing binary fails the session with a message naming both; it never skips.

The server must be the minor version qdrant-client is pinned to (`QDRANT_MINOR` below, and
pyproject.toml): qdrant-client warns more than one minor apart, and the driver is tested against
this pairing only (docs/vectorcollection.md, "Qdrant versions").

Each session gets its own storage and snapshot directories in a temporary folder, HTTP and gRPC
on free loopback ports, an API key (every request of the driver and of the tests carries it),
and Qdrant's own telemetry reporting off. The server is a direct child of the test process and
gets SIGTERM if that process dies (`PR_SET_PDEATHSIG`); the fixture stops it and removes its data.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e import processes
from tests.e2e.processes import die_with_parent, free_port

__all__ = ["QDRANT_MINOR", "Qdrant", "QdrantMissingError", "find_binary", "running_qdrant"]

REPO = Path(__file__).resolve().parents[2]
# The server minor the pinned qdrant-client (pyproject.toml) pairs with.
QDRANT_MINOR = "1.18"
ENV_BINARY = "TIDAL_QDRANT_BIN"


class QdrantMissingError(RuntimeError):
    """No usable Qdrant binary; the message says what to set."""


def find_binary() -> Path:
    """`$TIDAL_QDRANT_BIN`, else `<repo>/../shared/bin/qdrant`; QdrantMissingError otherwise."""
    given = os.environ.get(ENV_BINARY)
    candidates = [Path(given)] if given else [REPO.parent / "shared" / "bin" / "qdrant"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    where = f"{ENV_BINARY}={given}" if given else f"{candidates[0]} (no {ENV_BINARY} set)"
    raise QdrantMissingError(
        f"no Qdrant server binary at {where}. The e2e tests run a real Qdrant "
        f"{QDRANT_MINOR}.x: set {ENV_BINARY}=/path/to/qdrant (a release binary of Qdrant "
        f"v{QDRANT_MINOR}.x, or `cargo build --release --bin qdrant` from its v{QDRANT_MINOR}.x "
        "tag) or put it at ../shared/bin/qdrant beside the repository"
    )


@dataclass
class Qdrant:
    """A running server: `url` (HTTP), `api_key`, its version and directories."""

    url: str
    api_key: str
    version: str
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path
    grpc_port: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"api-key": self.api_key}

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_qdrant(binary: Path | None = None, root: Path | None = None) -> Iterator[Qdrant]:
    """Start a throwaway Qdrant; stop it and remove its data on exit.

    With `root`, the server keeps its storage there and the caller owns it: it is not removed,
    so a second server started on the same `root` loads what the first one left (benchmarks
    measure a restarted server this way).
    """
    binary = binary or find_binary()
    owned = root is None
    root = root or Path(tempfile.mkdtemp(prefix="tidal-qdrant-"))
    log = root / "qdrant.log"
    http_port, grpc_port = free_port(), free_port()
    api_key = secrets.token_hex(16)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "QDRANT__SERVICE__HOST": "127.0.0.1",
        "QDRANT__SERVICE__HTTP_PORT": str(http_port),
        "QDRANT__SERVICE__GRPC_PORT": str(grpc_port),
        "QDRANT__SERVICE__API_KEY": api_key,
        "QDRANT__STORAGE__STORAGE_PATH": str(root / "storage"),
        "QDRANT__STORAGE__SNAPSHOTS_PATH": str(root / "snapshots"),
        "QDRANT__STORAGE__TEMP_PATH": str(root / "tmp"),
        "QDRANT__TELEMETRY_DISABLED": "true",
        "QDRANT__LOG_LEVEL": "INFO",
    }
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(binary), "--disable-telemetry"],
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        url = f"http://127.0.0.1:{http_port}"
        version = _wait_ready(url, api_key, proc, log)
        if not version.startswith(f"{QDRANT_MINOR}."):
            raise QdrantMissingError(
                f"{binary} is Qdrant {version}; the driver and the pinned qdrant-client pair "
                f"with Qdrant {QDRANT_MINOR}.x: point {ENV_BINARY} at a {QDRANT_MINOR}.x binary"
            )
        yield Qdrant(
            url=url,
            api_key=api_key,
            version=version,
            root=root,
            proc=proc,
            log=log,
            grpc_port=grpc_port,
        )
    finally:
        if proc is not None:
            processes.stop(proc, timeout=20)
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def _wait_ready(
    url: str, api_key: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> str:
    """Wait for `/readyz`; the server's version (`GET /`)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"qdrant exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                info = httpx.get(url, headers={"api-key": api_key}, timeout=2).json()
                return str(info["version"])
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"qdrant was not ready in {timeout}s: {last}")


def main() -> int:
    """`python -m tests.e2e.qdrant` (`make qdrant`): the binary the suite would run, or why not."""
    try:
        print(f"qdrant: {find_binary()}")
    except QdrantMissingError as exc:
        print(f"make qdrant: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
