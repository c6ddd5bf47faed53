"""External spot availability traces: read them (`--spot-trace DIR`), turn them into the
simulation's reclaims and returns, and write the small seeded sample the tests use.

Owns: the trace format, the mapping of a file onto one of the fleet's spot pools, and the
sample generator. Must not: simulate or price anything.

Format (the public form of spot availability traces, e.g. the SkyPilot/SkyServe ones): one JSON
file per pool,

    {"metadata": {"gap_seconds": 600}, "data": [3, 3, 2, 0, 1, ...]}

`data` is how many instances of the pool could be had at each tick, `gap_seconds` apart. The
file name says which pool: `<zone>_<gpu>_<count>.json`, e.g. `us-east-1a_H100_8.json` —
the availability zone (its region is the zone less its letter), the GPU (`H100`, `A100`, `L40S`,
`L4`, or a full `nvidia.com/gpu.product` value such as `NVIDIA-L40S`) and the GPUs per instance
(recorded, not used: traces count instances of differing sizes).

Mapping. A trace is read as a fraction of its own maximum (traces come from fleets of any size):
at each tick, `round(N x data / max(data))` of the N simulated spot nodes of that GPU in that
zone are alive. When the count drops, the nodes that go are reclaimed with the run's notice;
when it rises they return. A seeded offset (per seed and file) picks where in the trace the
simulated week starts, and a trace shorter than the run repeats. Spot pools no file names never
lose capacity. The generated crunches are off with `--spot-trace`; the spot price walk stays.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.economics.traces import NodeSpec, SpotEvent

__all__ = [
    "GPU_NAMES",
    "PoolTrace",
    "TraceError",
    "events",
    "read_dir",
    "read_file",
    "sample",
    "write_sample",
]

# Short GPU names as trace files spell them.
GPU_NAMES: Final[Mapping[str, str]] = {
    "H100": "NVIDIA-H100-80GB-HBM3",
    "H200": "NVIDIA-H200",
    "A100": "NVIDIA-A100-SXM4-80GB",
    "L40S": "NVIDIA-L40S",
    "L4": "NVIDIA-L4",
    "A10G": "NVIDIA-A10G",
}
_NAME = re.compile(r"^(?P<zone>[a-z0-9-]+?[0-9][a-z])_(?P<gpu>[A-Za-z0-9-]+)_(?P<count>[0-9]+)$")
SAMPLE_DIR: Final = Path(__file__).parent / "sample-traces"


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class PoolTrace:
    """One file: the pool it describes and its availability series."""

    zone: str
    product: str
    gpus_per_instance: int
    gap_seconds: float
    data: tuple[int, ...]

    @property
    def region(self) -> str:
        return self.zone[:-1]

    def fraction(self, t: float) -> float:
        """Available share of the trace's maximum at `t` seconds (the trace repeats)."""
        top = max(self.data)
        if top <= 0:
            return 0.0
        tick = int(t // self.gap_seconds) % len(self.data)
        return self.data[tick] / top


def read_file(path: Path) -> PoolTrace:
    """One trace file, or `TraceError`."""
    match = _NAME.fullmatch(path.stem)
    if match is None:
        raise TraceError(f"{path.name}: the name must be <zone>_<gpu>_<count>.json")
    gpu = match["gpu"]
    product = GPU_NAMES.get(gpu.upper(), gpu if gpu.startswith("NVIDIA-") else None)
    if product is None:
        raise TraceError(f"{path.name}: unknown GPU {gpu!r} (known: {', '.join(GPU_NAMES)})")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TraceError(f"{path.name}: not readable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise TraceError(f"{path.name}: must be a JSON object")
    gap = (doc.get("metadata") or {}).get("gap_seconds")
    data = doc.get("data")
    if not isinstance(gap, int | float) or isinstance(gap, bool) or gap <= 0:
        raise TraceError(f"{path.name}: metadata.gap_seconds must be a positive number")
    if (
        not isinstance(data, list)
        or not data
        or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in data)
    ):
        raise TraceError(f"{path.name}: data must be a non-empty list of instance counts >= 0")
    return PoolTrace(match["zone"], product, int(match["count"]), float(gap), tuple(data))


def read_dir(directory: Path) -> list[PoolTrace]:
    """Every `*.json` trace in `directory`, sorted by file name; `TraceError` if none."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise TraceError(f"{directory}: no *.json trace files")
    return [read_file(f) for f in files]


def events(
    pools: Sequence[PoolTrace],
    nodes: Sequence[NodeSpec],
    seed: int,
    total_seconds: float,
    notice_seconds: float,
) -> list[SpotEvent]:
    """Reclaims (with notice) and returns over `total_seconds` for the fleet's spot nodes
    that the traces map onto, sorted by time."""
    out: list[SpotEvent] = []
    for pool in pools:
        members = sorted(
            n.name for n in nodes if n.spot and n.zone == pool.zone and n.product == pool.product
        )
        if not members:
            continue
        rng = random.Random(f"{seed}:trace:{pool.zone}:{pool.product}")
        offset = rng.randrange(len(pool.data)) * pool.gap_seconds
        alive = list(members)
        down: list[str] = []
        t = 0.0
        while t < total_seconds:
            target = round(len(members) * pool.fraction(t + offset))
            while len(alive) > target:
                node = alive.pop(rng.randrange(len(alive)))
                down.append(node)
                out.append(SpotEvent(t, node, reclaim=True, notice_seconds=notice_seconds))
            while len(alive) < target and down:
                node = down.pop(0)
                alive.append(node)
                out.append(SpotEvent(t, node, reclaim=False))
            t += pool.gap_seconds
    return sorted(out, key=lambda e: (e.time_seconds, e.node, e.reclaim))


# --- the sample -----------------------------------------------------------------------------

SAMPLE_POOLS: Final = (
    ("us-east-1", "H100", 8),
    ("us-east-1", "A100", 8),
    ("us-east-1", "L40S", 1),
    ("us-east-1", "L4", 1),
    ("us-west-2", "A100", 8),
    ("us-west-2", "L40S", 1),
    ("us-west-2", "L4", 1),
    ("eu-west-1", "A100", 8),
)
SAMPLE_GAP_SECONDS: Final = 600
SAMPLE_DAYS: Final = 2


def sample(seed: int = 16) -> dict[str, dict[str, object]]:
    """The sample traces by file name: per pool and zone a two-day series of instances
    available (`SAMPLE_GAP_SECONDS` apart), up to 8 most of the time, with outages that take
    part or all of it for an hour or two, a few a day per region (pessimistic, to exercise the
    mapping). Seeded: the same files every time."""
    ticks = SAMPLE_DAYS * 86400 // SAMPLE_GAP_SECONDS
    files: dict[str, dict[str, object]] = {}
    for region, gpu, count in SAMPLE_POOLS:
        for zone in "abc":
            rng = random.Random(f"{seed}:{region}{zone}:{gpu}")
            data = [8] * ticks
            at = rng.expovariate(1.0 / 30)
            while at < ticks:
                length = max(1, round(rng.uniform(3, 12)))
                left = rng.choice((0, 0, 2, 4))
                for i in range(int(at), min(ticks, int(at) + length)):
                    data[i] = min(data[i], left)
                at += length + rng.expovariate(1.0 / 30)
            files[f"{region}{zone}_{gpu}_{count}.json"] = {
                "metadata": {"gap_seconds": SAMPLE_GAP_SECONDS},
                "data": data,
            }
    return files


def write_sample(directory: Path, seed: int = 16) -> list[Path]:
    """Write `sample(seed)` into `directory` (one compact file per pool)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in sorted(sample(seed).items()):
        path = directory / name
        path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.economics.availability",
        description="Write the seeded sample spot availability traces.",
    )
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR, help=f"default {SAMPLE_DIR}")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args(argv)
    for path in write_sample(args.out, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
