"""A real S3-compatible server for the cold-tier e2e tests: versitygw on loopback.

versitygw (Apache-2.0) serves the S3 API over a POSIX directory: every subdirectory is a
bucket. It is built from its Go module and cached outside the repository like the control-plane
binaries (`tidal dev build --versitygw`, run by `make controlplane`; `tidal.devcluster.build`
pins the version, `TIDAL_VERSITYGW_BIN` overrides the path). Not a mock: boto-style clients, the
operator's `minio` SDK included, sign real SigV4 requests against it.

Each session gets its own root directory, a free loopback port and random root keys; the
server gets SIGTERM if the test process dies (`PR_SET_PDEATHSIG`), and the fixture stops it and
removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e import processes
from tests.e2e.processes import die_with_parent, free_port

__all__ = ["S3Server", "running_s3"]


@dataclass
class S3Server:
    """A running server: `endpoint` (http://127.0.0.1:port), root keys, its bucket directory."""

    endpoint: str
    access_key: str
    secret_key: str
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def make_bucket(self, name: str) -> str:
        """A new empty bucket (versitygw: a directory under its root); its name."""
        (self.root / "buckets" / name).mkdir()
        return name

    def objects(self, bucket: str) -> list[str]:
        """Object names in `bucket`, read from the directory versitygw serves."""
        base = self.root / "buckets" / bucket
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def secret_data(self) -> dict[str, str]:
        """What a `coldTier.credentialsSecretRef` Secret holds for this server."""
        return {
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "accessKeyID": self.access_key,
            "secretAccessKey": self.secret_key,
        }


@contextlib.contextmanager
def running_s3() -> Iterator[S3Server]:
    """Start a throwaway versitygw (building it once if the cache lacks it); stop it on exit."""
    from tidal.devcluster import build

    binary = build.ensure_versitygw()
    root = Path(tempfile.mkdtemp(prefix="tidal-s3-"))
    (root / "buckets").mkdir()
    log = root / "versitygw.log"
    port = free_port()
    access_key, secret_key = f"tidal{secrets.token_hex(6)}", secrets.token_hex(20)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ROOT_ACCESS_KEY": access_key,
        "ROOT_SECRET_KEY": secret_key,
    }
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(binary), "--port", f"127.0.0.1:{port}", "posix", str(root / "buckets")],
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        endpoint = f"http://127.0.0.1:{port}"
        _wait_listening(endpoint, proc, log)
        yield S3Server(endpoint, access_key, secret_key, root, proc, log)
    finally:
        if proc is not None:
            processes.stop(proc, timeout=20)
        shutil.rmtree(root, ignore_errors=True)


def _wait_listening(
    endpoint: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"versitygw exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            # Any HTTP answer (an unsigned request is refused) means it is serving.
            httpx.get(endpoint, timeout=2)
            return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"versitygw did not listen in {timeout}s: {last}")
