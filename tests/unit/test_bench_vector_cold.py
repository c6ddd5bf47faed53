"""The Qdrant sizing and hibernate benchmarks' own rules: which part of a collection folder a file
counts towards, the error sign, saved measurements reported again, the sections they rewrite,
and what the hibernate benchmark compares. Timing is not tested (a benchmark's numbers are
reported, not asserted)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from bench import qdrant_sizing, vector_hibernate
from bench.qdrant_sizing import Case, Measured

from tidal.api.collection import StorageTier, VectorQuantization
from tidal.slo.measurement import ProbeQuery, RecallProbe


def measured(case: Case, memory: int, disk: int) -> Measured:
    return Measured(
        case=case,
        baseline_rss=40 << 20,
        rss=(40 << 20) + memory,
        rss_anon=10 << 20,
        rss_file=memory,
        restart_baseline_rss=40 << 20,
        restart_rss=(40 << 20) + memory * 2,
        restart_rss_anon=10 << 20,
        restart_rss_file=memory * 2,
        disk=disk,
        disk_parts={"vectors": disk // 2, "wal": disk // 2},
        segments=2,
        indexed_vectors=case.count,
        load_seconds=1.0,
        index_seconds=2.0,
    )


def test_sizes_parse_as_count_by_dimension() -> None:
    assert qdrant_sizing.parse_sizes("30000x384, 15000X1536,") == [(30000, 384), (15000, 1536)]
    assert qdrant_sizing.parse_sizes("") == []


def test_error_is_positive_when_the_estimate_is_larger() -> None:
    assert qdrant_sizing.error_percent(115, 100) == pytest.approx(15)
    assert qdrant_sizing.error_percent(85, 100) == pytest.approx(-15)


def test_every_file_of_a_collection_folder_counts_towards_one_part(tmp_path: Path) -> None:
    files = {
        "0/wal/open-1": 8192,
        "0/segments/a/vector_storage/vectors/chunk_0.mmap": 4096,
        "0/segments/a/vector_storage/quantized/data.bin": 4096,
        "0/segments/a/vector_index/graph.bin": 4096,
        "0/segments/a/id_tracker.mappings": 4096,
        "0/segments/a/payload_storage/page_0.dat": 4096,
        "config.json": 4096,
    }
    for name, size in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    parts = qdrant_sizing.disk_parts(tmp_path)
    assert set(parts) == {"wal", "vectors", "quantized", "hnsw", "id tracker", "payload", "other"}
    assert parts["wal"] >= 8192
    assert sum(parts.values()) == qdrant_sizing.disk_usage(tmp_path) - _directory_blocks(tmp_path)


def _directory_blocks(root: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in [root, *root.rglob("*")] if p.is_dir())


def test_saved_measurements_report_again_with_the_current_estimate(tmp_path: Path) -> None:
    fit = Case(30000, 384, VectorQuantization.Scalar, StorageTier.Memory, "fit")
    held = Case(100000, 768, VectorQuantization.None_, StorageTier.Memory, "held-out")
    results = [measured(fit, 70 << 20, 110 << 20), measured(held, 380 << 20, 400 << 20)]
    again = qdrant_sizing.from_json(qdrant_sizing.to_json(results))
    assert again == results
    section = qdrant_sizing.report(again, "`cmd`", "today", 60)
    rows = [line for line in section.splitlines() if line.startswith("| 30,000 x 384 | fit")]
    assert len(rows) == 1
    memory, _ = qdrant_sizing.estimated(fit)
    expected = qdrant_sizing.error_percent(memory, 70 << 20)
    assert f"{expected:+.1f} %" in rows[0]
    assert "| 100,000 x 768 | held-out | None |" in section


@pytest.mark.parametrize(
    ("module", "start", "end"),
    [
        (qdrant_sizing, qdrant_sizing.MARK_START, qdrant_sizing.MARK_END),
        (vector_hibernate, vector_hibernate.MARK_START, vector_hibernate.MARK_END),
    ],
)
def test_each_benchmark_rewrites_only_its_own_section(
    tmp_path: Path, module: object, start: str, end: str
) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(f"# Benchmarks\n\nbefore\n{start}\nold\n{end}\nafter\n")
    module.write_section(out, f"{start}\nnew\n{end}\n")  # type: ignore[attr-defined]
    text = out.read_text()
    assert "old" not in text
    assert text.startswith("# Benchmarks\n\nbefore\n")
    assert text.rstrip().endswith("after")
    assert text.count(start) == 1


def probe(answers: dict[int, tuple[int, ...]]) -> RecallProbe:
    return RecallProbe(
        k=3,
        queries=tuple(
            ProbeQuery(point=p, indexed=found, exact=(1, 2, 3), seconds=0.01)
            for p, found in answers.items()
        ),
        method="test",
    )


def test_identical_means_the_same_answers_for_the_same_points_not_the_same_recall() -> None:
    before = probe({10: (1, 2, 3), 11: (1, 2, 9)})
    swapped = probe({10: (1, 2, 9), 11: (1, 2, 3)})  # same recall, different answers
    again = probe({10: (1, 2, 3), 11: (1, 2, 9)})
    assert vector_hibernate.answers(before) == vector_hibernate.answers(again)
    assert vector_hibernate.answers(before) != vector_hibernate.answers(swapped)


def test_the_timed_streams_pass_every_byte_and_note_first_and_last() -> None:
    clock = vector_hibernate.Clock()
    source = vector_hibernate._TimedSource(io.BytesIO(b"abcdef"), clock)
    assert source.read(4) + source.read(4) + source.read(4) == b"abcdef"
    assert clock.first is not None
    assert clock.last is not None
    assert clock.last >= clock.first
    sink_clock = vector_hibernate.Clock()
    raw = io.BytesIO()
    sink = vector_hibernate._TimedSink(raw, sink_clock)
    sink.write(b"xyz")
    assert raw.getvalue() == b"xyz"
    assert sink_clock.first is not None


def test_the_report_says_whether_the_wake_target_was_met() -> None:
    def trial(wake: float) -> vector_hibernate.Trial:
        return vector_hibernate.Trial(
            snapshot_bytes=300 << 20,
            snapshot=1.0,
            upload=1.0,
            verify=1.0,
            drop=0.1,
            transfer=wake / 2,
            recover=wake / 2 - 0.01,
            first_query=0.01,
            recall_before=60.0,
            recall_after=60.0,
            identical=True,
        )

    met = vector_hibernate.report([trial(10), trial(12)], "cmd", 100000, 768, 100, "built", 60)
    assert "met (p95" in met
    missed = vector_hibernate.report([trial(10), trial(40)], "cmd", 100000, 768, 100, "b", 60)
    assert "missed (p95" in missed
