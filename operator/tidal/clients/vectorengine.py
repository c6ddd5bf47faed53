"""The vector engine driver interface: one Protocol, typed results, our own errors, the cold tier.

Each engine (Qdrant in `tidal.clients.qdrant`, PostgreSQL + pgvector in `tidal.clients.pgvector`)
implements `VectorEngine`, and `tidal.clients.engines.connect` picks one; the drivers import this
module and never the reverse. The controller only ever sees this module's types:

    sync(want)              create the collection, or apply in place what differs from `want`;
                            read back its size and activity (one call per reconcile)
    snapshot(want, sink)    write a restorable copy of the collection to `sink`
    close()

Errors (raw client exceptions never leave `tidal.clients`)::

    TidalError
    ├── PermanentError
    │   └── EngineRejectedError      the engine refused the declared collection (e.g. pgvector's
    │                                2000-dimension HNSW limit, an existing table of another
    │                                dimension, missing privileges); retrying will not help
    └── TemporaryError
        └── EngineUnavailableError   cannot connect, timed out, or the engine answered 5xx

The cold tier writes snapshots under an object-store URI. `file://` (a mounted directory) is
implemented; `s3://` is the production target and is refused with a message until it lands.
Connection secrets are held only in `Connection`, whose repr hides them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from tidal.errors import PermanentError, TemporaryError
from tidal.render.collection import CollectionState, EngineCollection

__all__ = [
    "CollectionState",
    "Connection",
    "EngineRejectedError",
    "EngineUnavailableError",
    "SnapshotInfo",
    "VectorEngine",
    "write_snapshot",
]


class EngineRejectedError(PermanentError):
    """The engine refused the declared collection; the message says what to change."""


class EngineUnavailableError(TemporaryError):
    """The engine cannot be reached right now."""


@dataclasses.dataclass(frozen=True)
class Connection:
    """Where the engine is and the credentials to use (never logged: repr hides secrets)."""

    url: str
    api_key: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot written to a sink: its file extension and a manifest describing it."""

    extension: str
    manifest: Mapping[str, Any]


class VectorEngine(Protocol):
    """One connection to one engine, used for one reconcile."""

    def sync(self, want: EngineCollection) -> CollectionState:
        """Create the collection or bring it in line with `want`; report its state."""
        ...

    def snapshot(self, want: EngineCollection, sink: BinaryIO) -> SnapshotInfo:
        """Write a restorable copy of the collection to `sink`."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def write_snapshot(
    engine: VectorEngine,
    want: EngineCollection,
    base_uri: str,
    key: str,
) -> tuple[str, int]:
    """Snapshot `want` to `<base_uri>/<key>.<extension>` (+ `.json` manifest); (uri, bytes).

    The data is written to a temporary file beside the target and renamed into place, so a
    reader never sees half a snapshot.
    """
    directory = _file_directory(base_uri)
    target_dir = directory / Path(key).parent
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineUnavailableError(f"cold tier {base_uri}: {exc.strerror}", delay=60) from exc
    stem = Path(key).name
    fd, temp = tempfile.mkstemp(prefix=f".{stem}.", dir=target_dir)
    try:
        with os.fdopen(fd, "wb") as sink:
            info = engine.snapshot(want, sink)
            size = sink.tell()
            sink.flush()
            os.fsync(sink.fileno())
        final = target_dir / f"{stem}.{info.extension}"
        os.replace(temp, final)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    manifest = {**info.manifest, "bytes": size, "file": final.name}
    (target_dir / f"{stem}.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return final.as_uri(), size


def _file_directory(base_uri: str) -> Path:
    parts = urlsplit(base_uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise PermanentError(f"coldTier {base_uri}: file:// URIs must name a local path")
        return Path(unquote(parts.path))
    raise PermanentError(
        f"coldTier scheme {parts.scheme}:// is not supported yet; use file:// on a mounted "
        "volume (s3:// is the production target, planned)"
    )
