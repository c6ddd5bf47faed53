"""Hibernate a Qdrant collection to S3 and wake it: how long until the first query is answered,
and whether recall is the same afterwards.

A benchmark, not a test: it asserts nothing and never runs under pytest. It starts a real
Qdrant 1.18.3 (`tests/e2e/qdrant.py`) and a real S3 server (versitygw, `tests/e2e/s3.py`) on
loopback, creates the collection with the operator's driver (`QdrantEngine.sync` of
`render.engine_collection`; API defaults: HNSW m=16, ef_construct=100, no quantization, Memory
tier), upserts `--count` seeded standard-normal `--dimension` vectors over gRPC and waits for
green. Then it probes recall@10 with the operator's SLO probe (`QdrantEngine.probe`) on a fixed
sample of `--sample` stored points, and runs `--trials` hibernate/wake cycles through the same
functions the collection controller calls:

1. **hibernate** (`controllers.collection._offload` with `evict`): `vectorengine.offload`
   (Qdrant snapshot, streamed from Qdrant into S3 by the MinIO SDK, verified by size and by the
   SHA-256 of the object read back, manifest written), `reconcile.eviction_refused` on the
   engine's vector count, then `QdrantEngine.drop`;
2. **wake** (`controllers.collection._restore`): `vectorengine.restore_from` (the object streamed
   from S3 into Qdrant's snapshot upload with `priority=snapshot` and the checksum, SHA-256
   checked on the way), then the first query (an indexed top-10 query for a fresh random vector)
   answered by the restored collection;
3. the same probe on the same sample: the indexed answers must be identical to the ones before.

Phases are timed by wrapping the driver's byte streams (nothing of the path is reimplemented):
*snapshot* = until Qdrant's first snapshot byte reaches the upload, *upload* = until the last,
*verify* = the store's size check, read-back hash and manifest; *transfer* = restore start until
Qdrant has read the last byte of the upload from S3, *recover* = until Qdrant answered the
upload (unpacking, checksum, loading the segments), *first query* = the query's round trip.

Run: `python -m bench.vector_hibernate [--count 100000] [--dimension 768] [--trials 7]
[--sample 100]` (`make bench-vector-hibernate`). The report replaces this benchmark's section of
docs/benchmarks.md (between its markers).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from qdrant_client import QdrantClient
from tests.e2e.qdrant import Qdrant, running_qdrant
from tests.e2e.s3 import S3Server, running_s3

from bench.qdrant_sizing import client_for, collection_spec, upsert_all, wait_indexed
from bench.sections import write_between
from tidal.api.collection import StorageTier, VectorQuantization
from tidal.clients.objectstore import credentials_from_secret
from tidal.clients.qdrant import QdrantEngine
from tidal.clients.vectorengine import Connection, SnapshotInfo, offload, restore_from
from tidal.reconcile import collection as reconcile
from tidal.render.collection import EngineCollection, engine_collection
from tidal.slo import percentile, recall_percent
from tidal.slo.measurement import RecallProbe

REPO = Path(__file__).resolve().parents[1]
MARK_START = "<!-- bench:vector_hibernate:start -->"
MARK_END = "<!-- bench:vector_hibernate:end -->"
MIB = 1 << 20
TARGET_SECONDS = 30.0


@dataclasses.dataclass
class Clock:
    """Times at which the wrapped streams saw their first and last bytes."""

    first: float | None = None
    last: float | None = None

    def saw(self) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now


class _TimedSink:
    """The offload's sink, noting when bytes are written."""

    def __init__(self, raw: BinaryIO, clock: Clock) -> None:
        self._raw = raw
        self._clock = clock

    def write(self, data: bytes) -> int:
        self._clock.saw()
        return self._raw.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _TimedSource:
    """The restore's source, noting when Qdrant's upload reads bytes (the last: end of file)."""

    def __init__(self, raw: BinaryIO, clock: Clock) -> None:
        self._raw = raw
        self._clock = clock

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._clock.saw()
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class TimedEngine:
    """The operator's Qdrant driver with its snapshot and restore streams timed."""

    snapshot_extension = QdrantEngine.snapshot_extension

    def __init__(self, engine: QdrantEngine) -> None:
        self.engine = engine
        self.sink = Clock()
        self.source = Clock()

    def snapshot(self, want: EngineCollection, sink: BinaryIO) -> SnapshotInfo:
        self.sink = Clock()
        return self.engine.snapshot(want, _TimedSink(sink, self.sink))  # type: ignore[arg-type]

    def restore(self, want: EngineCollection, source: BinaryIO, checksum: str | None) -> int:
        self.source = Clock()
        return self.engine.restore(
            want,
            _TimedSource(source, self.source),  # type: ignore[arg-type]
            checksum,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


@dataclasses.dataclass(frozen=True)
class Trial:
    snapshot_bytes: int
    snapshot: float
    upload: float
    verify: float
    drop: float
    transfer: float
    recover: float
    first_query: float
    recall_before: float
    recall_after: float
    identical: bool

    @property
    def hibernate(self) -> float:
        return self.snapshot + self.upload + self.verify + self.drop

    @property
    def wake(self) -> float:
        return self.transfer + self.recover + self.first_query


def answers(probe: RecallProbe) -> list[tuple[object, tuple[object, ...]]]:
    """The probe's indexed answers per sampled point (what must not change)."""
    return [(q.point, tuple(q.indexed)) for q in probe.queries]


def trial(
    engine: QdrantEngine,
    want: EngineCollection,
    base_uri: str,
    key: str,
    credentials: Any,
    sample: Sequence[int],
    before: RecallProbe,
    query: list[float],
    client: QdrantClient,
) -> Trial:
    timed = TimedEngine(engine)
    started = time.monotonic()
    stored = offload(timed, want, base_uri, key, credentials)
    offloaded = time.monotonic()
    refused = reconcile.eviction_refused(
        want.name, stored.uri, stored.vectors, engine.sync(want).vectors
    )
    if refused is not None:
        raise RuntimeError(refused)
    engine.drop(want)
    dropped = time.monotonic()
    restore_from(timed, want, stored.uri, stored.sha256, credentials, stored.vectors)
    restored = time.monotonic()
    found = client.query_points(want.name, query=query, limit=10, with_payload=False)
    answered = time.monotonic()
    if len(found.points) != 10:
        raise RuntimeError(f"the first query found {len(found.points)} points, not 10")
    after = engine.probe(want, len(sample), 10, points=sample)
    assert timed.sink.first is not None
    assert timed.sink.last is not None
    assert timed.source.last is not None
    return Trial(
        snapshot_bytes=stored.size,
        snapshot=timed.sink.first - started,
        upload=timed.sink.last - timed.sink.first,
        verify=offloaded - timed.sink.last,
        drop=dropped - offloaded,
        transfer=timed.source.last - dropped,
        recover=restored - timed.source.last,
        first_query=answered - restored,
        recall_before=recall_percent(before) or 0.0,
        recall_after=recall_percent(after) or 0.0,
        identical=answers(before) == answers(after),
    )


def report(
    trials: list[Trial],
    command: str,
    count: int,
    dimension: int,
    sample: int,
    built: str,
    seconds: float,
) -> str:
    def pcts(values: list[float]) -> str:
        return (
            f"{percentile(values, 50) or 0:.2f} / {percentile(values, 95) or 0:.2f} / "
            f"{max(values):.2f}"
        )

    wake = [t.wake for t in trials]
    p95 = percentile(wake, 95) or 0.0
    size = trials[0].snapshot_bytes if trials else 0
    lines = [
        MARK_START,
        "## VectorCollection hibernate to S3 and wake (Qdrant)",
        "",
        f"Command: `{command}` ({seconds / 60:.0f} min). Measured "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({platform.system()}, Python {platform.python_version()}), 2 cores shared with other "
        f"work (load average {os.getloadavg()[0]:.1f} at the end); Qdrant 1.18.3 and versitygw "
        f"(S3) on loopback, the S3 objects on the same disk. {count:,} seeded standard-normal "
        f"vectors x {dimension}, cosine, API defaults (HNSW m=16, ef_construct=100, no "
        f"quantization, Memory tier), {built}; snapshot "
        f"{size / MIB:.0f} MiB.",
        "",
        "Each trial runs the functions the collection controller calls: hibernate = "
        "`vectorengine.offload` (Qdrant snapshot streamed into S3, verified by size and the "
        "SHA-256 of the object read back, manifest) + `reconcile.eviction_refused` + "
        "`QdrantEngine.drop`; wake = `vectorengine.restore_from` (S3 object streamed into "
        "Qdrant's snapshot upload, checksum checked by Qdrant and on the way) + the first "
        "indexed top-10 query answered. Recall@10 is the operator's SLO probe on the same "
        f"{sample} stored points before hibernating and after waking.",
        "",
        f"| phase (s) | p50 / p95 / max over {len(trials)} trials |",
        "|---|---:|",
        f"| **wake: restore from S3 until the first query is answered** | **{pcts(wake)}** |",
        f"| - transfer (S3 GET streamed into Qdrant's upload) | "
        f"{pcts([t.transfer for t in trials])} |",
        f"| - recover (Qdrant unpacks, checks, loads the segments) | "
        f"{pcts([t.recover for t in trials])} |",
        f"| - first query | {pcts([t.first_query for t in trials])} |",
        f"| hibernate: snapshot, upload, verify, drop | {pcts([t.hibernate for t in trials])} |",
        f"| - snapshot (Qdrant writes it) | {pcts([t.snapshot for t in trials])} |",
        f"| - upload (streamed into S3) | {pcts([t.upload for t in trials])} |",
        f"| - verify (size, read-back SHA-256, manifest) | {pcts([t.verify for t in trials])} |",
        f"| - drop the collection | {pcts([t.drop for t in trials])} |",
        "",
        "| trial | recall@10 before % | after % | indexed answers identical |",
        "|---:|---:|---:|---|",
    ]
    for i, t in enumerate(trials, 1):
        lines.append(
            f"| {i} | {t.recall_before:.1f} | {t.recall_after:.1f} | "
            f"{'yes' if t.identical else 'NO'} |"
        )
    met = "met" if p95 <= TARGET_SECONDS else "missed"
    lines += [
        "",
        f"Target: first query answered within {TARGET_SECONDS:.0f} s at p95: {met} "
        f"(p95 {p95:.2f} s). Not included: the operator noticing the wake (annotation to "
        "reconcile; measured with the whole operator in docs/vectorcollection.md) and, for a "
        "Managed engine that was scaled to zero, the engine pod's start.",
        MARK_END,
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """This benchmark's section of `path` replaced by `section`."""
    write_between(path, MARK_START, MARK_END, section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=768)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--storage",
        type=Path,
        help="start from a copy of this Qdrant storage folder holding the collection already "
        "built (`bench.qdrant_sizing --keep`: same name, count, seed) instead of loading it",
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    command = "python -m bench.vector_hibernate " + " ".join(argv or sys.argv[1:])
    started = time.monotonic()
    # The sizing benchmark's name for the same collection, so its built storage can be reused.
    vc = collection_spec(
        args.count,
        args.dimension,
        VectorQuantization.None_,
        StorageTier.Memory,
        f"s{args.count}x{args.dimension}",
    )
    want = engine_collection(vc)
    with (
        tempfile.TemporaryDirectory(prefix="tidal-bench-hibernate-") as tmp,
        running_s3() as s3,
    ):
        root = Path(tmp)
        if args.storage is not None:
            shutil.copytree(args.storage, root / "storage")
        with running_qdrant(root=root) as server:
            trials, load_seconds = run_trials(server, s3, want, args)
    built = (
        f"taken prebuilt from `{args.storage}`"
        if args.storage is not None
        else f"loaded and indexed in {load_seconds:.0f} s"
    )
    section = report(
        trials,
        command.strip(),
        args.count,
        args.dimension,
        args.sample,
        built,
        time.monotonic() - started,
    )
    print(section)
    write_section(args.out, section)
    return 0


def run_trials(
    server: Qdrant, s3: S3Server, want: EngineCollection, args: argparse.Namespace
) -> tuple[list[Trial], float]:
    """Load the collection unless it is there, then the trials; (trials, load seconds)."""
    rng = np.random.default_rng(args.seed + 1)
    trials: list[Trial] = []
    bucket = s3.make_bucket("cold")
    credentials = credentials_from_secret(s3.secret_data())
    engine = QdrantEngine(Connection(server.url, api_key=server.api_key))
    client = client_for(server)
    loading = time.monotonic()
    if engine.sync(want).vectors != args.count:
        upsert_all(client, want.name, args.count, args.dimension, args.seed)
    wait_indexed(client, want.name, args.count)
    load_seconds = time.monotonic() - loading
    sample = [int(i) for i in rng.choice(args.count, size=args.sample, replace=False)]
    before = engine.probe(want, args.sample, 10, points=sample)
    for i in range(args.trials):
        query = rng.standard_normal(args.dimension, dtype=np.float32).tolist()
        result = trial(
            engine,
            want,
            f"s3://{bucket}/bench",
            f"trial-{i}",
            credentials,
            sample,
            before,
            query,
            client,
        )
        print(result, f"wake {result.wake:.2f}s hibernate {result.hibernate:.2f}s", flush=True)
        trials.append(result)
    client.close()
    engine.close()
    return trials, load_seconds


if __name__ == "__main__":
    raise SystemExit(main())
