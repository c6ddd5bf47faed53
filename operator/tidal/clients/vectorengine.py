"""The vector engine driver interface: one Protocol, typed results, our own errors, the cold tier.

Each engine (Qdrant in `tidal.clients.qdrant`, PostgreSQL + pgvector in `tidal.clients.pgvector`)
implements `VectorEngine`, and `tidal.clients.engines.connect` picks one; the drivers import this
module and never the reverse. The controller only ever sees this module's types:

    sync(want)                      create the collection, or apply in place what differs from
                                    `want`; read back its size and activity (one per reconcile)
    snapshot(want, sink)            write a restorable copy of the collection to `sink`
    restore(want, source, sha256)   load such a copy into an absent or empty collection
    drop(want)                      delete the collection (only after a verified offload)
    probe(want, sample, k)          query `sample` stored vectors through the configured index
                                    and by exact search (the recall/latency SLO); read-only
    close()

Errors (raw client exceptions never leave `tidal.clients`)::

    TidalError
    ├── PermanentError
    │   └── EngineRejectedError      the engine refused the declared collection (e.g. pgvector's
    │                                2000-dimension HNSW limit, an existing table of another
    │                                dimension, missing privileges); retrying will not help
    └── TemporaryError
        ├── EngineUnavailableError   cannot connect, timed out, or the engine answered 5xx
        └── ObjectStoreError         (tidal.clients.objectstore) the cold tier failed or an
                                     upload did not verify

The cold tier (`offload`, `restore_from`): a snapshot streams from the engine straight into the
object store (`tidal.clients.objectstore`: `s3://` with credentials from a Secret, or `file://`
on a mounted volume; no local copy in the operator), is verified there (size, and SHA-256 of
the object read back, which must also equal the engine's own checksum where it gives one), and
only then is a `.json` manifest written beside it. Restoring streams the object back into the
engine, checks the SHA-256 on the way, and compares the vector count with the manifest's; a
restore that fails or does not verify drops what it loaded, so the engine never serves a
partial collection.
Connection secrets are held only in `Connection`/`StoreCredentials`, whose reprs hide them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any, BinaryIO, Protocol, cast

from tidal.clients import objectstore
from tidal.clients.objectstore import ObjectStoreError, StoreCredentials
from tidal.errors import PermanentError, TemporaryError, TidalError
from tidal.render.collection import CollectionState, EngineCollection
from tidal.slo.measurement import RecallProbe

__all__ = [
    "CollectionState",
    "Connection",
    "EngineRejectedError",
    "EngineUnavailableError",
    "ObjectStoreError",
    "Offloaded",
    "RecallProbe",
    "SnapshotInfo",
    "StoreCredentials",
    "VectorEngine",
    "offload",
    "restore_from",
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
    # The engine's own SHA-256 of what it sent (Qdrant gives one), checked against the upload.
    sha256: str | None = None
    # Vectors in the snapshot (None: the engine did not say).
    vectors: int | None = None


@dataclasses.dataclass(frozen=True)
class Offloaded:
    """A snapshot stored and verified in the cold tier."""

    uri: str
    size: int
    sha256: str
    vectors: int | None


class VectorEngine(Protocol):
    """One connection to one engine, used for one reconcile."""

    # The file extension of what `snapshot` writes (it names the format).
    snapshot_extension: str

    def sync(self, want: EngineCollection) -> CollectionState:
        """Create the collection or bring it in line with `want`; report its state."""
        ...

    def snapshot(self, want: EngineCollection, sink: BinaryIO) -> SnapshotInfo:
        """Write a restorable copy of the collection to `sink`."""
        ...

    def restore(self, want: EngineCollection, source: BinaryIO, checksum: str | None) -> int:
        """Load a snapshot from `source` into the (absent or empty) collection; its vectors."""
        ...

    def drop(self, want: EngineCollection) -> None:
        """Delete the collection from the engine."""
        ...

    def probe(self, want: EngineCollection, sample: int, k: int) -> RecallProbe:
        """Query up to `sample` stored vectors (picked at random) for their top `k` neighbours
        through the collection's configured index and by exact search, timing the indexed
        queries. Each sampled point is left out of its own answers. Reads only: no write, and
        (where the engine counts queries) not counted as activity."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def offload(
    engine: VectorEngine,
    want: EngineCollection,
    base_uri: str,
    key: str,
    credentials: StoreCredentials,
) -> Offloaded:
    """Snapshot `want` to `<base_uri>/<key>.<extension>` and a `.json` manifest, verified.

    Raises ObjectStoreError when the store fails or the object does not verify (nothing is
    left that a restore could mistake for a snapshot), PermanentError for an unusable URI.
    """
    where = objectstore.location(base_uri)
    extension = engine.snapshot_extension
    info, stored = objectstore.upload_verified(
        where,
        f"{key}.{extension}",
        credentials,
        lambda sink: engine.snapshot(want, sink),
        metadata={"tidal-collection": want.name},
    )
    if info.sha256 is not None and info.sha256 != stored.sha256:
        raise ObjectStoreError(
            f"snapshot of {want.name}: the engine's checksum {info.sha256} differs from the "
            f"{stored.sha256} of the {stored.size} bytes received; not relying on {stored.uri}",
            delay=60,
        )
    manifest = {
        **info.manifest,
        "bytes": stored.size,
        "sha256": stored.sha256,
        "vectors": info.vectors,
        "file": stored.uri.rsplit("/", 1)[-1],
    }
    content = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    objectstore.put_small(where, f"{key}.json", credentials, content)
    return Offloaded(uri=stored.uri, size=stored.size, sha256=stored.sha256, vectors=info.vectors)


def restore_from(
    engine: VectorEngine,
    want: EngineCollection,
    uri: str,
    sha256: str | None,
    credentials: StoreCredentials,
    vectors: int | None = None,
) -> int:
    """Stream the snapshot at `uri` into the engine's (absent or empty) collection; its vectors.

    The SHA-256 of the bytes read must equal `sha256`, and the vectors the engine then holds
    must equal `vectors` (the manifest's; None: not checked). When either does not hold, or the
    engine or the store fails part way, the half-restored collection is dropped again (the
    engine holds nothing it could serve as the collection) and the error raised: the snapshot
    stays where it is, and a later restore starts afresh.
    """
    try:
        with objectstore.open_object(uri, credentials) as stream:
            reader = _Digesting(stream)
            restored = engine.restore(want, cast(BinaryIO, reader), sha256)
            reader.drain()
        if sha256 is not None and reader.hexdigest() != sha256:
            raise ObjectStoreError(
                f"restore of {want.name} from {uri}: read sha256 {reader.hexdigest()}, the "
                f"manifest says {sha256}; dropped the restored copy",
                delay=60,
            )
        if vectors is not None and restored != vectors:
            raise ObjectStoreError(
                f"restored {restored} vectors of {want.name} from {uri}, the snapshot holds "
                f"{vectors}; dropped the restored copy",
                delay=60,
            )
    except TidalError:
        with contextlib.suppress(TidalError):
            engine.drop(want)
        raise
    return restored


class _Digesting:
    """A reader that hashes what the engine reads (and what it leaves unread, on `drain`)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._digest.update(data)
        return data

    def drain(self) -> None:
        while chunk := self._raw.read(1 << 20):
            self._digest.update(chunk)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
