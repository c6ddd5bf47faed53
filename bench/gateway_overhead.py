"""Gateway overhead: what `tidal gateway` adds to a streamed completion, against calling the
replica directly, at 1, 64 and 512 concurrent streams.

A benchmark, not a test: it asserts nothing and never runs under pytest. Three processes on
loopback, so that none steals the others' event loop:

- a simulated replica (`tests.fakes.model_server`): every request streams `--tokens` tokens,
  the first at once, then `--tokens-per-second`;
- the gateway (`--serve-gateway`, a mode of this module): the production request path
  (`tidal.gateway.proxy.Gateway` behind `tidal.gateway.server.make_api_app`: routing, least
  in-flight balancing, SSE relay, token counting, metrics) with its catalog filled with one
  endpoint and one ready pod instead of watching an API server, and annotation writes dropped;
- this process, the load: at each concurrency level, waves of that many simultaneous streaming
  chat completions, first straight to the replica, then through the gateway, alternating per
  wave so drift affects both alike.

Per request it records the time to the first token (the first SSE chunk with content) and to
the end of the stream. "Added" is the gateway's percentile minus the direct one, per level.

Run: `make bench-gateway` (part of `make bench`), or
`python -m bench.gateway_overhead [--waves-1 200 --waves-64 10 --waves-512 4] [--out FILE]`.
The report replaces this benchmark's section of the output file (between its markers) and
leaves every other section alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.spot_loss import write_section

REPO = Path(__file__).resolve().parents[1]
MODEL = "bench/model"
MARK_START = "<!-- bench:gateway_overhead:start -->"
MARK_END = "<!-- bench:gateway_overhead:end -->"
LEVELS = (1, 64, 512)


# --- the gateway, served from a fixed catalog -----------------------------------------------


class _FixedAddress:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)

    def address(self, replica: Any, port: int) -> tuple[str, int] | None:
        return self.target


class _DroppedAnnotations:
    async def annotate(self, namespace: str, name: str, annotations: Any) -> None:
        return None


async def _serve_gateway(port: int, replica: str) -> None:
    from tidal.gateway.config import GatewayConfig
    from tidal.gateway.main import build
    from tidal.gateway.server import make_api_app, start_site

    host, _, replica_port = replica.rpartition(":")
    config = GatewayConfig(listen_host="127.0.0.1", listen_port=port, name="bench")
    gateway = build(config, _DroppedAnnotations(), addresses=_FixedAddress(host, int(replica_port)))
    endpoint = {
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"model": {"name": MODEL}, "runtime": {"port": 8000}},
    }
    pod = {
        "metadata": {
            "name": "bench-spot-0",
            "namespace": "bench",
            "labels": {"tidal.dev/endpoint": "bench", "app.kubernetes.io/managed-by": "tidal"},
        },
        "status": {
            "phase": "Running",
            "podIP": "10.244.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    gateway.catalog.replace_routes([endpoint])
    gateway.catalog.replace_replicas([pod])
    await gateway.start()
    runner, bound = await start_site(make_api_app(gateway), "127.0.0.1", port)
    print(f"listening http://127.0.0.1:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await gateway.close()


# --- the load -----------------------------------------------------------------------------


@dataclass
class Samples:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: int = 0
    # Gateway CPU seconds spent on this path's requests (only measured through the gateway).
    cpu_seconds: float | None = None


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (Linux /proc); None elsewhere."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def _stream(session: aiohttp.ClientSession, url: str, tokens: int, into: Samples) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "benchmark"}],
        "stream": True,
        "max_tokens": tokens,
    }
    started = time.perf_counter()
    first = None
    try:
        async with session.post(url + "/v1/chat/completions", json=body) as response:
            if response.status != 200:
                into.errors += 1
                await response.read()
                return
            async for chunk in response.content.iter_any():
                if first is None and b'"content": "tok' in chunk:
                    first = time.perf_counter()
    except (aiohttp.ClientError, TimeoutError):
        into.errors += 1
        return
    end = time.perf_counter()
    if first is None:
        into.errors += 1
        return
    into.ttft.append(first - started)
    into.total.append(end - started)


async def _measure(
    direct: str, gateway: str, levels: dict[int, int], tokens: int, gateway_pid: int | None = None
) -> dict[int, tuple[Samples, Samples]]:
    results: dict[int, tuple[Samples, Samples]] = {}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Warm both paths (connection pools, first-call costs) before measuring.
        for url in (direct, gateway):
            await asyncio.gather(*(_stream(session, url, tokens, Samples()) for _ in range(32)))
        for concurrency, waves in levels.items():
            straight, through = Samples(), Samples()
            cpu = 0.0
            for wave in range(waves):
                order = [(direct, straight), (gateway, through)]
                if wave % 2:
                    order.reverse()
                for url, samples in order:
                    before = _cpu_seconds(gateway_pid) if samples is through else None
                    await asyncio.gather(
                        *(_stream(session, url, tokens, samples) for _ in range(concurrency))
                    )
                    after = _cpu_seconds(gateway_pid) if samples is through else None
                    if before is not None and after is not None:
                        cpu += after - before
            through.cpu_seconds = cpu if gateway_pid is not None else None
            results[concurrency] = (straight, through)
            print(f"  {concurrency:>3} streams: {_line(straight, through)}", flush=True)
    return results


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _line(straight: Samples, through: Samples) -> str:
    parts = []
    for name in ("ttft", "total"):
        d, g = getattr(straight, name), getattr(through, name)
        added50 = _percentile(g, 50) - _percentile(d, 50)
        added99 = _percentile(g, 99) - _percentile(d, 99)
        parts.append(f"{name} +{_ms(added50)}/+{_ms(added99)} ms (p50/p99)")
    return ", ".join(parts) + f"; errors {straight.errors}/{through.errors}"


# --- processes ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _process(command: Sequence[str]) -> Iterator[tuple[str, int]]:
    """Start a child that prints `listening URL`; yield the URL and pid; stop it afterwards."""
    child = subprocess.Popen(
        list(command), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if not line.startswith("listening "):
            raise SystemExit(f"{command[2]} did not start: {line!r}")
        yield line.removeprefix("listening "), child.pid
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)


# --- report ---------------------------------------------------------------------------------


def report(
    results: dict[int, tuple[Samples, Samples]],
    *,
    command: str,
    tokens: int,
    rate: float,
    load: tuple[float, float, float],
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        MARK_START,
        "## Gateway overhead",
        "",
        f"Measured {when} with `{command}`.",
        "",
        "What `tidal gateway` adds to a streamed chat completion compared with calling the "
        "replica directly, on loopback: a simulated replica streaming "
        f"{tokens} tokens (the first at once, then {rate:g}/s), the gateway's production request "
        "path in its own process (routing, least-in-flight balancing, SSE relay, token "
        "counting, metrics; catalog fixed instead of watched), and the load from a third "
        "process. At each level, waves of that many simultaneous streams alternate between "
        "the direct and the gateway path. Added = gateway percentile minus direct percentile.",
        "",
        "| Concurrent streams | Requests (each path) | TTFT direct p50 / p99 (ms) "
        "| TTFT via gateway p50 / p99 (ms) | **TTFT added p50 / p99 (ms)** "
        "| Stream added p50 / p99 (ms) | Gateway CPU per request (ms) "
        "| Errors (direct / gateway) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency, (d, g) in sorted(results.items()):
        ttft = [_percentile(s.ttft, q) for s in (d, g) for q in (50, 99)]
        cpu = "n/a" if g.cpu_seconds is None else _ms(g.cpu_seconds / max(1, len(g.ttft)))
        total = [_percentile(s.total, q) for s in (d, g) for q in (50, 99)]
        lines.append(
            f"| {concurrency} | {len(d.ttft)} | {_ms(ttft[0])} / {_ms(ttft[1])} "
            f"| {_ms(ttft[2])} / {_ms(ttft[3])} "
            f"| **{_ms(ttft[2] - ttft[0])} / {_ms(ttft[3] - ttft[1])}** "
            f"| {_ms(total[2] - total[0])} / {_ms(total[3] - total[1])} "
            f"| {cpu} | {d.errors} / {g.errors} |"
        )
    lines += [
        "",
        "Everything shares the machine's cores: under concurrency the three processes compete "
        "for CPU, so most of the added latency at 64 and 512 streams is the gateway's single "
        "Python process waiting for its share of the CPU; a real deployment runs it on its own "
        "cores and scales it out with more gateway replicas. The gateway's own cost is the CPU "
        f"column: its user + system time per relayed stream ({tokens + 2} SSE events each), which "
        "depends far less on contention. Percentiles interpolate linearly between closest ranks.",
        "",
        f"Machine: {os.cpu_count()} CPUs ({_cpu()}), load average {load[0]:.1f} when the run "
        f"started (other work shares this machine), Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}.",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def write(out: Path, section: str) -> None:
    """Replace this benchmark's section of `out` (or append it), keeping everything else."""
    write_section(out, section, MARK_START, MARK_END)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve-gateway", metavar="REPLICA", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=16, help="tokens per stream")
    parser.add_argument("--tokens-per-second", type=float, default=200.0)
    for level, waves in zip(LEVELS, (200, 10, 4), strict=True):
        parser.add_argument(
            f"--waves-{level}", type=int, default=waves, help=f"waves at {level} streams"
        )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print the report only")
    args = parser.parse_args(argv)

    if args.serve_gateway:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_gateway(args.port, args.serve_gateway))
        return

    load = os.getloadavg()
    python = sys.executable
    replica_cmd = [python, "-m", "tests.fakes.model_server", "--model", MODEL]
    replica_cmd += ["--tokens-per-second", str(args.tokens_per_second)]
    with _process(replica_cmd) as (replica, _):
        address = replica.removeprefix("http://")
        gateway_cmd = [python, "-m", "bench.gateway_overhead", "--serve-gateway", address]
        with _process(gateway_cmd) as (gateway, gateway_pid):
            print(f"replica {replica}, gateway {gateway}", flush=True)
            levels = {level: getattr(args, f"waves_{level}") for level in LEVELS}
            results = asyncio.run(_measure(replica, gateway, levels, args.tokens, gateway_pid))
    command = "python -m bench.gateway_overhead " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    section = report(
        results,
        command=command.strip(),
        tokens=args.tokens,
        rate=args.tokens_per_second,
        load=load,
    )
    print(section)
    if not args.no_write:
        write(args.out, section)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
