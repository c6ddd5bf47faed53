"""How close Tidal's sizing estimate is to what a real Qdrant 1.18.3 holds in memory and on disk.

A benchmark, not a test: it asserts nothing and never runs under pytest. For every case
(`--fit` and `--held-out` sizes, `COUNTxDIM`; each with `--quantizations`, default None, Scalar
and Binary, on the Memory tier, `--tiers Disk` adds the Disk tier) it:

1. starts a fresh Qdrant (`tests/e2e/qdrant.py`) on loopback with its storage in a folder of its
   own, waits for it to settle and reads the empty server's resident memory (the baseline);
2. creates the collection with the operator's own driver (`QdrantEngine.sync` of
   `render.engine_collection`: HNSW m=16, ef_construct=100, the quantization and `on_disk`
   settings Tidal configures), then upserts seeded standard-normal vectors over gRPC in batches
   (`wait=false`) and waits until all points are in, the collection is green and has stayed
   green (the optimizer has built the HNSW graph and the quantized copy);
3. measures: **memory** = the server's resident set (`VmRSS` of /proc/<pid>/status, with its
   anonymous and file-backed parts) minus the baseline, a few seconds after green; **disk** =
   the collection's storage folder (`du` block usage: what the volume must hold), broken down
   into WAL, vector storage, quantized copy, HNSW graph, id tracker and the rest;
4. restarts the server on the same storage, runs `--warm-queries` indexed queries and reads the
   resident set again (**memory after restart**: what the collection needs resident to serve,
   without what the build left behind);
5. compares both with `tidal.sizing.estimate` for the same spec, without its +20% headroom.

The raw measurements are written as JSON (`--json`), and `--from-json` rebuilds the report from
them with the current estimate: a sizing rule is fitted on the `--fit` sizes and judged on the
`--held-out` size, which the fit never saw.

Run: `python -m bench.qdrant_sizing [--fit 30000x384,15000x1536] [--held-out 100000x768]
[--quantizations None,Scalar,Binary] [--tiers Memory]` (`make bench-qdrant-sizing`). The report
replaces this benchmark's section of docs/benchmarks.md (between its markers).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from tests.e2e.qdrant import Qdrant, running_qdrant

from bench.sections import write_between
from tidal.api.collection import StorageTier, VectorCollection, VectorQuantization
from tidal.clients.qdrant import QdrantEngine
from tidal.clients.vectorengine import Connection
from tidal.render.collection import EngineCollection, engine_collection
from tidal.sizing import HEADROOM, estimate

REPO = Path(__file__).resolve().parents[1]
MARK_START = "<!-- bench:qdrant_sizing:start -->"
MARK_END = "<!-- bench:qdrant_sizing:end -->"
RESULTS = REPO / "bench" / "results" / "qdrant_sizing.json"
MIB = 1 << 20
BATCH = 1000
NAMESPACE = "bench"


@dataclasses.dataclass(frozen=True)
class Case:
    count: int
    dimension: int
    quantization: VectorQuantization
    tier: StorageTier
    role: str  # "fit" or "held-out"

    @property
    def label(self) -> str:
        return f"{self.count}x{self.dimension}-{self.quantization.value}-{self.tier.value}"


@dataclasses.dataclass(frozen=True)
class Measured:
    """One case's measurements (bytes, seconds); what `--json` keeps."""

    case: Case
    baseline_rss: int
    rss: int
    rss_anon: int
    rss_file: int
    restart_baseline_rss: int
    restart_rss: int
    restart_rss_anon: int
    restart_rss_file: int
    disk: int
    disk_parts: dict[str, int]
    segments: int
    indexed_vectors: int
    load_seconds: float
    index_seconds: float
    baseline_anon: int = 0
    baseline_file: int = 0

    @property
    def memory(self) -> int:
        """Resident set after the build, minus the empty server's."""
        return self.rss - self.baseline_rss

    @property
    def restart_memory(self) -> int:
        """Resident set of a restarted server after warm-up queries, minus the empty server's."""
        return self.restart_rss - self.restart_baseline_rss


def collection_spec(
    count: int, dimension: int, quantization: VectorQuantization, tier: StorageTier, name: str
) -> VectorCollection:
    """The VectorCollection a user would declare (API defaults otherwise)."""
    return VectorCollection.model_validate(
        {
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "engine": {"type": "Qdrant", "mode": "External", "url": "http://bench:6333"},
                "dimension": dimension,
                "expectedVectors": count,
                "quantization": {"type": quantization.value},
                "storage": {"tier": tier.value},
                "residency": {"regions": ["bench"]},
            },
        }
    )


def collection(case: Case) -> VectorCollection:
    """The VectorCollection of a case."""
    return collection_spec(
        case.count, case.dimension, case.quantization, case.tier, f"s{case.count}x{case.dimension}"
    )


def estimated(case: Case) -> tuple[float, float]:
    """Tidal's memory and disk estimate for the case, without the +20% headroom."""
    sized = estimate(collection(case).spec, case.count)
    return sized.memory_bytes / HEADROOM, sized.disk_bytes / HEADROOM


def published(case: Case) -> tuple[float, float]:
    """Qdrant's published capacity-planning formula (what Tidal's estimate was before it was
    fitted to measurements), without headroom: 4-byte links, no WAL, quantized copy at
    dimension x bytes per dimension; quantization moves the originals out of RAM."""
    m = collection(case).spec.index.m
    dense = case.dimension * 4.0
    quantized = case.dimension * {
        VectorQuantization.Scalar: 1.0,
        VectorQuantization.Binary: 1.0 / 8,
        VectorQuantization.Product: 4.0 / 16,
    }.get(case.quantization, 0.0)
    hnsw = m * 2 * 4 * 1.2
    ids = 52.0
    in_ram = (quantized or dense) + hnsw
    memory = (quantized if case.tier is StorageTier.Disk else in_ram) + ids
    return case.count * memory, case.count * (dense + quantized + hnsw + ids)


# --- measuring ----------------------------------------------------------------------------------


def resident(pid: int) -> tuple[int, int, int]:
    """(VmRSS, RssAnon, RssFile + RssShmem) of a process, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["RssAnon"], fields["RssFile"] + fields.get("RssShmem", 0)


def settled_rss(pid: int, seconds: float = 3.0) -> tuple[int, int, int]:
    """The resident set after `seconds` of quiet (background flushes done)."""
    time.sleep(seconds)
    return resident(pid)


def disk_usage(path: Path) -> int:
    """Allocated bytes under `path` (`du -s -B1`: blocks, so preallocated WAL space counts)."""
    out = subprocess.run(
        ["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[0])


# Which part of a Qdrant 1.18 collection folder a file belongs to, by the first matching marker
# in its path below the collection folder.
_PARTS: tuple[tuple[str, str], ...] = (
    ("/wal/", "wal"),
    ("quantized", "quantized"),
    ("vector_index", "hnsw"),
    ("vector_storage", "vectors"),
    ("id_tracker", "id tracker"),
    ("mutable_id_tracker", "id tracker"),
    ("payload", "payload"),
)


def disk_parts(folder: Path) -> dict[str, int]:
    """Allocated bytes per part of the collection folder (see `_PARTS`; the rest is `other`)."""
    parts: dict[str, int] = {}
    for path in folder.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        relative = "/" + str(path.relative_to(folder))
        part = next((name for marker, name in _PARTS if marker in relative), "other")
        parts[part] = parts.get(part, 0) + path.stat().st_blocks * 512
    return dict(sorted(parts.items()))


def client_for(server: Qdrant) -> QdrantClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QdrantClient(
            url=server.url,
            api_key=server.api_key,
            prefer_grpc=True,
            grpc_port=server.grpc_port,
            timeout=300,
            check_compatibility=False,
        )


def upsert_all(client: QdrantClient, name: str, count: int, dimension: int, seed: int) -> None:
    """Seeded standard-normal vectors in batches over gRPC, not waiting for each batch."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        batch = rng.standard_normal((size, dimension), dtype=np.float32)
        client.upsert(
            name,
            points=models.Batch(ids=list(range(start, start + size)), vectors=batch.tolist()),
            wait=False,
        )


def wait_indexed(client: QdrantClient, name: str, count: int, timeout: float = 3600) -> int:
    """Wait until all `count` points are in and the collection stayed green for 3 polls in a
    row (the optimizer can start a moment after the last write); the indexed vector count."""
    deadline = time.monotonic() + timeout
    green = 0
    while time.monotonic() < deadline:
        info = client.get_collection(name)
        if info.points_count == count and info.status == models.CollectionStatus.GREEN:
            green += 1
            if green >= 3:
                return info.indexed_vectors_count or 0
        else:
            green = 0
        time.sleep(2)
    raise TimeoutError(f"{name}: not indexed in {timeout:.0f}s")


def warm_up(client: QdrantClient, name: str, dimension: int, queries: int, seed: int) -> None:
    """Indexed queries with fresh random vectors, as a serving collection would see."""
    rng = np.random.default_rng(seed + 1)
    for _ in range(queries):
        vector = rng.standard_normal(dimension, dtype=np.float32).tolist()
        client.query_points(name, query=vector, limit=10, with_payload=False)


def measure(case: Case, seed: int, warm_queries: int, keep: Path | None = None) -> Measured:
    vc = collection(case)
    want: EngineCollection = engine_collection(vc)
    with tempfile.TemporaryDirectory(prefix="tidal-bench-qdrant-") as tmp:
        root = Path(tmp)
        with running_qdrant(root=root) as server:
            baseline, baseline_anon, baseline_file = settled_rss(server.proc.pid)
            engine = QdrantEngine(Connection(server.url, api_key=server.api_key))
            engine.sync(want)
            client = client_for(server)
            started = time.monotonic()
            upsert_all(client, want.name, case.count, case.dimension, seed)
            loaded = time.monotonic()
            indexed = wait_indexed(client, want.name, case.count)
            done = time.monotonic()
            rss, anon, file = settled_rss(server.proc.pid, 5.0)
            segments = client.get_collection(want.name).segments_count
            client.close()
            engine.close()
        folder = root / "storage" / "collections" / want.name
        disk = disk_usage(folder)
        parts = disk_parts(folder)
        with running_qdrant(root=root) as server:
            client = client_for(server)
            wait_indexed(client, want.name, case.count)
            restart_baseline = baseline  # the same binary and settings: the empty server's
            warm_up(client, want.name, case.dimension, warm_queries, seed)
            again, again_anon, again_file = settled_rss(server.proc.pid)
            client.close()
        if keep is not None:
            # The built collection, for bench.vector_hibernate --storage (saves a rebuild).
            shutil.copytree(root / "storage", keep / case.label / "storage", dirs_exist_ok=True)
    return Measured(
        case=case,
        baseline_rss=baseline,
        rss=rss,
        rss_anon=anon,
        rss_file=file,
        restart_baseline_rss=restart_baseline,
        restart_rss=again,
        restart_rss_anon=again_anon,
        restart_rss_file=again_file,
        disk=disk,
        disk_parts=parts,
        segments=segments,
        indexed_vectors=indexed,
        load_seconds=loaded - started,
        index_seconds=done - loaded,
        baseline_anon=baseline_anon,
        baseline_file=baseline_file,
    )


# --- reporting ----------------------------------------------------------------------------------


def error_percent(estimate_bytes: float, measured_bytes: int) -> float:
    """(estimate - measured) / measured in percent: > 0 over-estimates."""
    return (estimate_bytes - measured_bytes) / measured_bytes * 100 if measured_bytes else 0.0


def to_json(results: Iterable[Measured]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        row = dataclasses.asdict(r)
        row["case"] = {
            "count": r.case.count,
            "dimension": r.case.dimension,
            "quantization": r.case.quantization.value,
            "tier": r.case.tier.value,
            "role": r.case.role,
        }
        out.append(row)
    return out


def from_json(rows: Iterable[dict[str, Any]]) -> list[Measured]:
    results = []
    for row in rows:
        c = row["case"]
        case = Case(
            count=c["count"],
            dimension=c["dimension"],
            quantization=VectorQuantization(c["quantization"]),
            tier=StorageTier(c["tier"]),
            role=c["role"],
        )
        results.append(Measured(**{**row, "case": case}))
    return results


def _mib(value: float) -> str:
    return f"{value / MIB:.1f}"


def _pct(value: float) -> str:
    return f"{value:+.1f} %"


def report(results: list[Measured], command: str, when: str, seconds: float) -> str:
    lines = [
        MARK_START,
        "## VectorCollection sizing: estimate vs measured Qdrant",
        "",
        f"Command: {command} ({seconds / 60:.0f} min of measuring). Measured {when} on "
        f"{platform.machine()} ({platform.system()}, Python {platform.python_version()}), "
        "2 cores shared with other work; Qdrant 1.18.3 binary on loopback, a fresh server per "
        "case. Seeded standard-normal vectors, cosine, HNSW m=16, ef_construct=100 (API "
        "defaults), no payload, collections created by the operator's driver "
        "(`QdrantEngine.sync`), vectors upserted over gRPC in batches of "
        f"{BATCH:,}, measured once the collection has stayed green.",
        "",
        "What the measured numbers are:",
        "",
        "- **memory (built)**: the server's resident set (`VmRSS`) a few seconds after the "
        "collection turned green, minus the empty server's. It counts anonymous memory "
        "(HNSW graph, id tracker, allocator caches the build left) and the resident pages of "
        'memory-mapped files (the vectors Qdrant keeps "in RAM" are populated mmaps; with '
        "quantization the originals are mmapped from disk and the pages the build touched "
        "stay resident until the kernel needs them).",
        "- **memory (restart)**: the same after restarting the server on the same storage and "
        "running 100 indexed queries: what the collection keeps resident to serve, without "
        "the build's leftovers. Pages of on-disk structures that queries have not touched "
        "are not counted (the kernel may drop them under pressure; a pod's memory limit "
        "counts its page cache too).",
        "- **disk**: the collection's storage folder (`du`, allocated blocks: WAL included).",
        "",
        "Estimate = `tidal.sizing.estimate` without its +20 % headroom; error = (estimate - "
        "measured) / measured. Cases marked *fit* are the sizes the sizing rule was checked "
        "and tuned on; *held-out* was measured and reported without tuning on it.",
        "",
        "| case | role | quantization | est. memory MiB | memory (built) MiB | error "
        "| memory (restart) MiB | error | est. disk MiB | disk MiB | error "
        "| published formula: memory error (built) | disk error |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        memory, disk = estimated(r.case)
        old_memory, old_disk = published(r.case)
        tier = "" if r.case.tier is StorageTier.Memory else f", {r.case.tier.value} tier"
        lines.append(
            f"| {r.case.count:,} x {r.case.dimension} | {r.case.role} | "
            f"{r.case.quantization.value}{tier} | {_mib(memory)} | {_mib(r.memory)} | "
            f"**{_pct(error_percent(memory, r.memory))}** | {_mib(r.restart_memory)} | "
            f"{_pct(error_percent(memory, r.restart_memory))} | {_mib(disk)} | "
            f"{_mib(r.disk)} | **{_pct(error_percent(disk, r.disk))}** | "
            f"{_pct(error_percent(old_memory, r.memory))} | "
            f"{_pct(error_percent(old_disk, r.disk))} |"
        )
    parts = sorted({p for r in results for p in r.disk_parts})
    lines += [
        "",
        "Where the bytes are (MiB; resident set split into anonymous and file-backed pages; "
        "disk by part of the collection folder):",
        "",
        "| case | quantization | RSS anon / file (built) | RSS anon / file (restart) | "
        + " | ".join(f"disk: {p}" for p in parts)
        + " | segments | load s | index s |",
        "|---|---|---:|---:|" + "---:|" * len(parts) + "---:|---:|---:|",
    ]
    for r in results:
        cells = " | ".join(_mib(r.disk_parts.get(p, 0)) for p in parts)
        lines.append(
            f"| {r.case.count:,} x {r.case.dimension} | {r.case.quantization.value} | "
            f"{_mib(r.rss_anon)} / {_mib(r.rss_file)} | "
            f"{_mib(r.restart_rss_anon)} / {_mib(r.restart_rss_file)} | {cells} | "
            f"{r.segments} | {r.load_seconds:.0f} | {r.index_seconds:.0f} |"
        )
    base = results[0].baseline_rss if results else 0
    lines += [
        "",
        f"RSS columns here are absolute (the empty server's resident set was {_mib(base)} MiB). "
        "Random vectors have no cluster structure, so HNSW fills its neighbour lists more "
        "evenly than real embeddings do, and delta-encoded neighbour ids compress less: the "
        "graph is at the large end of what real data needs.",
        MARK_END,
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """This benchmark's section of `path` replaced by `section`."""
    write_between(path, MARK_START, MARK_END, section)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """`30000x384,50000x1536` -> [(30000, 384), (50000, 1536)]."""
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        count, _, dimension = item.lower().partition("x")
        sizes.append((int(count), int(dimension)))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fit", default="30000x384,15000x1536")
    parser.add_argument("--held-out", default="100000x768")
    parser.add_argument("--quantizations", default="None,Scalar,Binary")
    parser.add_argument("--tiers", default="Memory")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--warm-queries", type=int, default=100)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="report these saved measurements (in this order), measure nothing",
    )
    parser.add_argument(
        "--keep", type=Path, help="copy each built storage folder to KEEP/<case> (for reuse)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    quantizations = [VectorQuantization(q) for q in args.quantizations.split(",")]
    tiers = [StorageTier(t) for t in args.tiers.split(",")]
    cases = [
        Case(count, dimension, q, tier, role)
        for role, sizes in (("fit", args.fit), ("held-out", args.held_out))
        for count, dimension in parse_sizes(sizes)
        for tier in tiers
        for q in quantizations
    ]
    if args.from_json:
        saved = [json.loads(path.read_text()) for path in args.from_json]
        results = [r for run in saved for r in from_json(run["results"])]
        command = " and ".join(f"`{run['command']}`" for run in saved)
        when = ", ".join(sorted({run["when"] for run in saved}))
        seconds = sum(run["seconds"] for run in saved)
    else:
        command = "python -m bench.qdrant_sizing " + " ".join(argv or sys.argv[1:])
        when = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
        started = time.monotonic()
        results = []
        for case in cases:
            result = measure(case, args.seed, args.warm_queries, args.keep)
            memory, disk = estimated(case)
            print(
                f"{case.label:<28} memory {_mib(result.memory):>8} MiB "
                f"(restart {_mib(result.restart_memory)}; est {_mib(memory)}) "
                f"disk {_mib(result.disk):>8} MiB (est {_mib(disk)}) {result.disk_parts} "
                f"load {result.load_seconds:.0f}s index {result.index_seconds:.0f}s",
                flush=True,
            )
            results.append(result)
            seconds = time.monotonic() - started
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps(
                    {
                        "command": command.strip(),
                        "when": when,
                        "seconds": seconds,
                        "cpus": os.cpu_count(),
                        "results": to_json(results),
                    },
                    indent=1,
                )
                + "\n"
            )
    if not args.from_json:
        command = f"`{command.strip()}`"
    section = report(results, command, when, seconds)
    print(section)
    write_section(args.out, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
