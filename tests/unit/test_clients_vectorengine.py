"""The cold tier's engine-independent half (`offload`, `restore_from`) without a network: an
in-memory engine (a test double: one line per vector) and a `file://` store in a temporary
directory. The same paths against real Qdrant, PostgreSQL and versitygw are in tests/e2e."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pytest

from tidal.api.collection import Metric, VectorQuantization
from tidal.clients.vectorengine import (
    CollectionState,
    EngineUnavailableError,
    ObjectStoreError,
    RecallProbe,
    SnapshotInfo,
    StoreCredentials,
    offload,
    restore_from,
)
from tidal.errors import TidalError
from tidal.render.collection import EngineCollection

WANT = EngineCollection(
    name="docs",
    dimension=4,
    metric=Metric.Cosine,
    m=16,
    ef_construct=100,
    ef_search=None,
    quantization=VectorQuantization.None_,
    rescore=True,
    shards=1,
    replicas=1,
    on_disk=False,
)


class MemoryEngine:
    """Collections as lists of lines; `fail_after`: restore raises after loading that many."""

    snapshot_extension = "lines"

    def __init__(self) -> None:
        self.collections: dict[str, list[bytes]] = {}
        self.fail_after: int | None = None

    def sync(self, want: EngineCollection) -> CollectionState:
        rows = self.collections.setdefault(want.name, [])
        return CollectionState(
            created=False, applied=(), unapplied=(), location=want.name, vectors=len(rows)
        )

    def snapshot(self, want: EngineCollection, sink: BinaryIO) -> SnapshotInfo:
        rows = self.collections[want.name]
        sink.write(b"".join(rows))
        return SnapshotInfo(extension="lines", manifest={}, vectors=len(rows))

    def restore(self, want: EngineCollection, source: BinaryIO, checksum: str | None) -> int:
        rows = self.collections.setdefault(want.name, [])
        for line in source.read().splitlines(keepends=True):
            if self.fail_after is not None and len(rows) == self.fail_after:
                raise EngineUnavailableError("the engine went away mid-restore")
            rows.append(line)
        return len(rows)

    def drop(self, want: EngineCollection) -> None:
        self.collections.pop(want.name, None)

    def probe(self, want: EngineCollection, sample: int, k: int) -> RecallProbe:
        return RecallProbe(k=k, queries=(), method="memory")

    def close(self) -> None:
        pass


def offloaded(tmp_path: Path, rows: int = 20) -> tuple[MemoryEngine, str, str]:
    """An engine whose collection was offloaded (snapshot verified, then dropped)."""
    engine = MemoryEngine()
    engine.collections[WANT.name] = [f"{i},0.1,0.2,0.3,0.4\n".encode() for i in range(rows)]
    stored = offload(engine, WANT, tmp_path.as_uri(), "ns/docs/1", StoreCredentials())
    assert stored.vectors == rows
    engine.drop(WANT)
    return engine, stored.uri, stored.sha256


def test_a_verified_snapshot_is_restored_with_its_count(tmp_path: Path) -> None:
    engine, uri, sha256 = offloaded(tmp_path)
    assert restore_from(engine, WANT, uri, sha256, StoreCredentials(), 20) == 20
    assert engine.collections[WANT.name][3] == b"3,0.1,0.2,0.3,0.4\n"


def test_an_engine_failing_part_way_leaves_no_partial_collection(tmp_path: Path) -> None:
    engine, uri, sha256 = offloaded(tmp_path)
    engine.fail_after = 7
    with pytest.raises(EngineUnavailableError, match="mid-restore"):
        restore_from(engine, WANT, uri, sha256, StoreCredentials(), 20)
    assert WANT.name not in engine.collections
    # The snapshot is where it was: the next try restores it whole.
    engine.fail_after = None
    assert restore_from(engine, WANT, uri, sha256, StoreCredentials(), 20) == 20


def test_a_count_other_than_the_snapshot_s_is_not_kept(tmp_path: Path) -> None:
    engine, uri, sha256 = offloaded(tmp_path)
    with pytest.raises(ObjectStoreError, match=r"restored 20 vectors of docs .* holds 21"):
        restore_from(engine, WANT, uri, sha256, StoreCredentials(), 21)
    assert WANT.name not in engine.collections


def test_a_changed_object_is_not_kept(tmp_path: Path) -> None:
    engine, uri, sha256 = offloaded(tmp_path)
    path = Path(uri.removeprefix("file://"))
    path.write_bytes(path.read_bytes().replace(b"0.4", b"0.5", 1))
    with pytest.raises(ObjectStoreError, match="sha256"):
        restore_from(engine, WANT, uri, sha256, StoreCredentials(), 20)
    assert WANT.name not in engine.collections


def test_a_missing_object_leaves_the_engine_without_the_collection(tmp_path: Path) -> None:
    engine, uri, sha256 = offloaded(tmp_path)
    Path(uri.removeprefix("file://")).unlink()
    with pytest.raises(TidalError):
        restore_from(engine, WANT, uri, sha256, StoreCredentials(), 20)
    assert WANT.name not in engine.collections
