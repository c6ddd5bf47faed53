"""Control-plane scale: N InferenceEndpoints applied in one burst -> all Ready, against the same
number of plain Deployments with the same pod shape (the Kubernetes floor).

A benchmark, not a test: it asserts nothing about time and never runs under pytest. It starts
its own local control plane (`tidal.devcluster.cluster.up`) with a generated fleet of `--nodes`
simulated 8-GPU H100 nodes (half spot, half reserved, over two regions), applies the CRDs and
runs the operator as a process (`tidal run`, like the e2e suite). Then, for each count N of
`--counts`:

1. *floor*: N plain Deployments (1 replica each) whose pod template is the one the operator
   rendered for a probe endpoint (GPU limit, tolerations, required and preferred node affinity),
   created with one `kubectl create -f -` of a List; each is Ready when its Deployment reports 1
   ready replica;
2. *tidal*: N InferenceEndpoints (minReplicas 1, Auto policy, regions alternating), created the
   same way; each is Ready when its status has Ready=True with 1 ready replica.

Then `--collections` VectorCollections (External pgvector, each its own table with an HNSW
index, on one real PostgreSQL + pgvector started on loopback as the e2e suite starts it), created
the same way; each is Ready when its status has Ready=True (its table and index exist). There is
no plain-Kubernetes floor for a database collection, so this phase reports times and the
operator's footprint, not a ratio.

The clock starts just before the `kubectl create` (so the apply itself counts, equally for
both). A watch on each kind records when every object first becomes Ready (client-side monotonic
time; the conditions' lastTransitionTime has only one-second resolution). *Steady state* is the
time until every object is Ready and the operator's CPU use has fallen back to its idle rate
(three consecutive 1 s samples at most idle + 5 % of a core; at most 120 s after all are
Ready); then its CPU use over the next 15 s (the endpoints' timers at rest). The operator's CPU
seconds (utime + stime from /proc/<pid>/stat) are taken over each phase, its peak RSS (VmHWM)
at the end. Both phases are deleted (and their pods gone) before the next count.

With `--profile`, py-spy (a bench-only tool: `pip install py-spy`) samples the operator during
the largest count's tidal phase; the report lists the functions with the most samples, on-CPU
(self) and inclusive.

Run: `make bench-scale`, or `python -m bench.scale [--nodes 500] [--counts 1 100 1000]
[--profile] [--out docs/benchmarks.md]`. The report replaces this benchmark's section of the
output file (between its markers) and leaves other sections alone.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch
from tests.e2e.pg import running_postgres

from bench import spot_loss
from bench.spot_loss import create_all, environment_tables, write_section
from bench.spot_loss import operator as spot_loss_operator
from tidal.devcluster import cluster

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "tidal.dev", "v1alpha1", "inferenceendpoints"
COLLECTIONS_PLURAL = "vectorcollections"
H100 = "NVIDIA-H100-80GB-HBM3"
REGIONS = ("eu-west-1", "us-east-1")
OPERATOR_NAMESPACE = "tidal-bench-scale"
MARK_START = "<!-- bench:scale:start -->"
MARK_END = "<!-- bench:scale:end -->"


class BenchError(RuntimeError):
    """A phase could not be run or measured; the message says what was seen."""


# --- the fleet --------------------------------------------------------------------------------


def fleet_file(nodes: int, path: Path) -> Path:
    """`nodes` 8-GPU H100 nodes: spot and reserved in each of REGIONS, as evenly as possible."""
    groups = 2 * len(REGIONS)
    if nodes < groups or nodes % groups:
        raise SystemExit(f"--nodes must be a positive multiple of {groups}")
    per_region = nodes // groups
    doc = {
        "nodeGroups": [
            {
                "name": f"h100-{capacity}",
                "regions": list(REGIONS),
                "nodesPerRegion": per_region,
                "capacityType": capacity,
                "gpu": {"product": H100, "memoryMiB": 81559, "count": 8},
                "cpu": "192",
                "memory": "2Ti",
            }
            for capacity in ("reserved", "spot")
        ]
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- the operator process ---------------------------------------------------------------------


@dataclass
class Usage:
    cpu_seconds: float
    rss_mib: float
    hwm_mib: float


def usage(pid: int) -> Usage:
    """CPU seconds (utime + stime) and resident memory of a live process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)
    mem = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0]) / 1024
    return Usage(cpu_seconds=cpu, rss_mib=mem.get("VmRSS", 0.0), hwm_mib=mem.get("VmHWM", 0.0))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def operator(
    state: cluster.ClusterState, log: Path, extra_env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """The spot-loss benchmark's operator process, with its own namespace and metrics port."""
    env = {
        "TIDAL_NAMESPACE": OPERATOR_NAMESPACE,
        "TIDAL_METRICS_PORT": str(_free_port()),
        **extra_env,
    }
    with spot_loss_operator(state, log, env) as proc:
        yield proc


def idle_rate(pid: int, seconds: float = 5.0) -> float:
    """The operator's CPU use (cores) over `seconds` of nothing happening but the fleet."""
    before = usage(pid).cpu_seconds
    time.sleep(seconds)
    return (usage(pid).cpu_seconds - before) / seconds


# --- readiness watches ------------------------------------------------------------------------


class ReadyWatch:
    """A background watch on one kind in one namespace: when each object first became Ready
    (time.monotonic()), by `is_ready` on the raw object."""

    def __init__(self, lister: Callable[..., Any], is_ready: Callable[[dict[str, Any]], bool]):
        self.lister = lister
        self.is_ready = is_ready
        self.ready_at: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadyWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        version = None
        while not self.stop.is_set():
            if version is None:
                listing = json.loads(self.lister(_preload_content=False).data)
                now = time.monotonic()
                for obj in listing["items"]:
                    self._see(obj, now)
                version = listing["metadata"]["resourceVersion"]
            try:
                for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.lister, resource_version=version, timeout_seconds=5
                ):
                    obj = event["raw_object"] if "raw_object" in event else event["object"]
                    if event["type"] == "ERROR":
                        version = None
                        break
                    version = obj["metadata"]["resourceVersion"]
                    self._see(obj, time.monotonic())
                    if self.stop.is_set():
                        return
            except Exception:  # a broken watch is re-listed, not fatal
                version = None

    def _see(self, obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        if name not in self.ready_at and self.is_ready(obj):
            self.ready_at[name] = now


def deployment_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return (status.get("readyReplicas") or 0) >= 1


def collection_ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def endpoint_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return (
        conditions.get("Ready") == "True"
        and ((status.get("replicas") or {}).get("ready") or 0) >= 1
    )


# --- one phase --------------------------------------------------------------------------------


@dataclass
class Phase:
    kind: str  # "deployment" | "endpoint" | "collection"
    count: int
    latencies: list[float]  # apply -> Ready, seconds, one per object
    apply_seconds: float  # how long the kubectl create took
    all_ready_seconds: float
    steady_seconds: float
    cpu_seconds: float  # the operator's, over the whole phase (until steady)
    rss_after_mib: float
    held_rate: float  # the operator's CPU use (cores) afterwards, over 15 s
    profile: dict[str, Any] = field(default_factory=dict)


def _tidal_object(kind: str, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class Bench:
    def __init__(self, state: cluster.ClusterState, operator_pid: int) -> None:
        self.state = state
        self.pid = operator_pid
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(state.kubeconfig)
        )
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.idle = 0.0
        self.template: dict[str, Any] = {}
        self.postgres_url = ""  # set for the collection phase

    def kubectl_create(self, items: list[dict[str, Any]]) -> None:
        create_all(self.state, items)

    def endpoint(self, namespace: str, name: str, region: str) -> dict[str, Any]:
        spec = {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "gpu": {"count": 1, "products": [H100]},
            "residency": {"regions": [region]},
            "scaling": {"minReplicas": 1, "maxReplicas": 1},
        }
        return _tidal_object("InferenceEndpoint", namespace, name, spec)

    def collection(self, namespace: str, name: str, region: str) -> dict[str, Any]:
        spec = {
            "engine": {"type": "PGVector", "mode": "External", "url": self.postgres_url},
            "dimension": 384,
            "expectedVectors": 100_000,
            "residency": {"regions": [region]},
        }
        return _tidal_object("VectorCollection", namespace, name, spec)

    def namespace(self, name: str) -> None:
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def pod_count(self, namespace: str) -> int:
        response: Any = self.core.list_namespaced_pod(namespace, _preload_content=False)
        return len(json.loads(response.data)["items"])

    def wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")

    def probe_template(self) -> None:
        """The pod template the operator renders for one endpoint (the floor's pod shape)."""
        ns = "bench-scale-probe"
        self.namespace(ns)
        self.kubectl_create([self.endpoint(ns, "probe", REGIONS[0])])

        def rendered() -> bool:
            response: Any = self.apps.list_namespaced_deployment(ns, _preload_content=False)
            for dep in json.loads(response.data)["items"]:
                if (dep["spec"].get("replicas") or 0) >= 1:
                    self.template = dep["spec"]["template"]
                    return True
            return False

        self.wait("the probe endpoint's Deployment", rendered, timeout=120)
        self.core.delete_namespace(ns)
        self.wait("the probe's pods gone", lambda: self.pod_count(ns) == 0, timeout=180)

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        template = json.loads(json.dumps(self.template))
        labels = {"app": name, "bench": "scale"}
        template["metadata"] = {"labels": labels}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
        }

    def run_phase(self, kind: str, count: int, profile_to: Path | None) -> Phase:
        ns = f"bench-scale-{kind}-{count}"
        self.namespace(ns)
        if kind == "deployment":
            items = [self.deployment(ns, f"d-{i:04d}") for i in range(count)]
            lister: Callable[..., Any] = lambda **kw: self.apps.list_namespaced_deployment(ns, **kw)  # noqa: E731
            is_ready = deployment_ready
        elif kind == "endpoint":
            items = [
                self.endpoint(ns, f"e-{i:04d}", REGIONS[i % len(REGIONS)]) for i in range(count)
            ]
            lister = lambda **kw: self.custom.list_namespaced_custom_object(  # noqa: E731
                GROUP, VERSION, ns, PLURAL, **kw
            )
            is_ready = endpoint_ready
        else:
            items = [
                self.collection(ns, f"c-{i:04d}", REGIONS[i % len(REGIONS)]) for i in range(count)
            ]
            lister = lambda **kw: self.custom.list_namespaced_custom_object(  # noqa: E731
                GROUP, VERSION, ns, COLLECTIONS_PLURAL, **kw
            )
            is_ready = collection_ready
        spy = None
        with ReadyWatch(lister, is_ready) as seen:
            time.sleep(0.5)  # the watch is established
            cpu0 = usage(self.pid).cpu_seconds
            if profile_to is not None:
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(self.pid),
                        "--rate",
                        "50",
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--output",
                        str(profile_to),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            start = time.monotonic()
            self.kubectl_create(items)
            applied = time.monotonic() - start
            self.wait(
                f"{count} {kind}s Ready",
                lambda: len(seen.ready_at) >= count,
                timeout=max(300, count * 3),
            )
            all_ready = max(seen.ready_at.values()) - start
            latencies = sorted(t - start for t in seen.ready_at.values())
        # Steady state: the operator's CPU back to its idle rate for three 1 s samples.
        quiet, last = 0, usage(self.pid).cpu_seconds
        deadline = time.monotonic() + 120
        while quiet < 3 and time.monotonic() < deadline:
            time.sleep(1)
            now = usage(self.pid).cpu_seconds
            quiet = quiet + 1 if now - last <= self.idle + 0.05 else 0
            last = now
        steady = time.monotonic() - start - 3  # the first of the three quiet seconds
        use = usage(self.pid)
        # What N endpoints cost at rest: their timers, over one default reconcile interval.
        held = idle_rate(self.pid, seconds=15.0)
        phase = Phase(
            kind=kind,
            count=count,
            latencies=latencies,
            apply_seconds=applied,
            all_ready_seconds=all_ready,
            steady_seconds=max(steady, all_ready),
            cpu_seconds=use.cpu_seconds - cpu0,
            rss_after_mib=use.rss_mib,
            held_rate=held,
        )
        if spy is not None and profile_to is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(timeout=60)
            phase.profile = summarize_profile(profile_to)
        self.core.delete_namespace(ns)
        self.wait(f"{ns}'s pods gone", lambda: self.pod_count(ns) == 0, timeout=600)
        return phase


# --- the profile ------------------------------------------------------------------------------


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self (leaf) and inclusive sample counts per function from py-spy's collapsed stacks."""
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        leaf[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return {
        "samples": total,
        "self": leaf.most_common(top),
        # The operator's own functions only: the framework frames above them say little.
        "inclusive": [
            (f, n) for f, n in inclusive.most_common() if "(tidal/" in f and "<module>" not in f
        ][:top],
    }


def _short(frame: str) -> str:
    """`func (kopf/_core/x.py:123)` -> `func (kopf/_core/x.py)`: one entry per function."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({where.split('site-packages/', 1)[-1]})"


# --- the report -------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def report(
    phases: Sequence[Phase],
    *,
    command: str,
    nodes: int,
    cluster_seconds: float,
    idle: float,
    startup: Usage,
    peak_hwm: float,
    wall_seconds: float,
    load_before: tuple[float, float, float],
) -> str:
    by = {(p.kind, p.count): p for p in phases}
    counts = sorted({p.count for p in phases})
    lines = [
        MARK_START,
        "## Control-plane scale: N endpoints applied at once -> Ready, vs plain Deployments",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}` "
        f"({wall_seconds / 60:.1f} min in all; the {nodes}-node local cluster took "
        f"{cluster_seconds:.0f} s to be Ready).",
        "",
        f"Fleet: {nodes} simulated 8-GPU H100 nodes (KWOK), spot and reserved in "
        f"{' and '.join(REGIONS)}, plus the simulated GPU telemetry agent annotating every node. "
        "For each N, first the *floor*: N plain Deployments of 1 replica whose pod template is "
        "the one the operator rendered for a probe endpoint (GPU limit, tolerations, node "
        "affinity), created by one `kubectl create -f -`; then N InferenceEndpoints "
        "(minReplicas 1, Auto, regions alternating), created the same way. Apply -> Ready is "
        "from just before the `kubectl create` until the object is first seen Ready on a watch "
        "(Deployment: 1 ready replica; endpoint: status Ready=True with 1 ready replica). "
        "*Steady* adds the wait until the operator's CPU is back near its idle rate (3 s at most "
        "idle + 5 % of a core; given up 120 s after all are Ready). The operator "
        "runs throughout (also during the floor phase, where it indexes the GPU pods); its CPU "
        "seconds are per phase (apply until steady); *CPU after* is its use over the 15 s "
        "after steady (each endpoint is refreshed every 15 s by default).",
        "",
        "| N | what | apply (s) | p50 (s) | p95 (s) | p99 (s) | all Ready (s) | steady (s) "
        "| operator CPU (s) | operator RSS after (MiB) | operator CPU after (% core) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in counts:
        for kind, label in (("deployment", "plain Deployments (floor)"), ("endpoint", "Tidal")):
            p = by.get((kind, n))
            if p is None:
                continue
            p50, p95, p99 = percentiles(p.latencies)
            lines.append(
                f"| {n} | {label} | {p.apply_seconds:.2f} | {p50:.2f} | {p95:.2f} | {p99:.2f} "
                f"| {p.all_ready_seconds:.2f} | {p.steady_seconds:.2f} | {p.cpu_seconds:.1f} "
                f"| {p.rss_after_mib:.0f} | {p.held_rate * 100:.1f} |"
            )
    lines += [
        "",
        "| N | Tidal / floor, p50 | p95 | p99 | all Ready |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in counts:
        d, e = by.get(("deployment", n)), by.get(("endpoint", n))
        if d is None or e is None:
            continue
        dp, ep = percentiles(d.latencies), percentiles(e.latencies)
        ratios = [f"{b / a:.2f}x" if a > 0 else "n/a" for a, b in zip(dp, ep, strict=True)]
        total = e.all_ready_seconds / d.all_ready_seconds if d.all_ready_seconds else 0.0
        lines.append(f"| {n} | {' | '.join(ratios)} | {total:.2f}x |")
    collections = [p for p in phases if p.kind == "collection"]
    if collections:
        lines += [
            "",
            "VectorCollections: External pgvector, each its own table (384 dimensions) with an "
            "HNSW index, on one real PostgreSQL + pgvector on loopback; Ready = status Ready=True "
            "(table and index created). No plain-Kubernetes floor exists for these.",
            "",
            "| N | apply (s) | p50 (s) | p95 (s) | p99 (s) | all Ready (s) | steady (s) "
            "| operator CPU (s) | operator RSS after (MiB) | operator CPU after (% core) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in collections:
            p50, p95, p99 = percentiles(p.latencies)
            lines.append(
                f"| {p.count} | {p.apply_seconds:.2f} | {p50:.2f} | {p95:.2f} | {p99:.2f} "
                f"| {p.all_ready_seconds:.2f} | {p.steady_seconds:.2f} | {p.cpu_seconds:.1f} "
                f"| {p.rss_after_mib:.0f} | {p.held_rate * 100:.1f} |"
            )
    lines += [
        "",
        f"Operator footprint: {startup.rss_mib:.0f} MiB RSS and {startup.cpu_seconds:.1f} CPU s "
        f"after start-up (caches of the {nodes} nodes filled); idle (fleet telemetry only) "
        f"{idle * 100:.1f} % of a core; **peak RSS (VmHWM) {peak_hwm:.0f} MiB** over the whole "
        "run. Targets: apply -> Ready at 1,000 endpoints within 1.2x the floor; "
        "peak RSS <= 250 MiB.",
        "",
        "Percentiles interpolate linearly between closest ranks.",
    ]
    profiled = [p for p in phases if p.profile]
    if profiled:
        p = profiled[-1]
        prof = p.profile
        total = max(1, prof["samples"])
        lines += [
            "",
            f"### Profile: the operator during N={p.count} endpoints",
            "",
            f"py-spy 0.4.3 `record --rate 50 --nonblocking` on the operator from the apply until "
            f"steady state: {prof['samples']} samples of non-idle threads (each sample is "
            f"{1 / 50:g} s of one thread; the operator used {p.cpu_seconds:.1f} CPU s in the "
            "phase, so the samples in socket reads and `select` are mostly threads waiting on "
            "the API server that py-spy did not see as idle). *Self* = the sampled frame "
            "itself; *inclusive* = anywhere on the stack, the operator's own functions only.",
            "",
            "| self % | function |",
            "|---:|---|",
            *(f"| {n / total * 100:.1f} | `{f}` |" for f, n in prof["self"]),
            "",
            "| inclusive % | function |",
            "|---:|---|",
            *(f"| {n / total * 100:.1f} | `{f}` |" for f, n in prof["inclusive"]),
        ]
    busy = max(load_before[0], os.getloadavg()[0]) > (os.cpu_count() or 1)
    if busy:
        lines += [
            "",
            "The machine was busy with other work during the run (load average above its CPU "
            "count, below): the control plane, KWOK, the agent, the operator and the benchmark "
            "all share its cores with it, so every figure includes waiting for a CPU; both "
            "columns of a row ran under the same load, which is why the ratio is the figure "
            "to read.",
        ]
    lines += [
        *environment_tables(load_before),
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def write(out: Path, section: str) -> None:
    """Replace this benchmark's section of `out` (or append it), keeping everything else."""
    write_section(out, section, MARK_START, MARK_END)


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0915
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument(
        "--collections", type=int, default=200, help="VectorCollections to apply (0: none)"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the largest count")
    spot_loss.output_arguments(parser)
    args = parser.parse_args(argv)
    if args.profile and shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None:
        parser.error("--profile needs py-spy in this environment: pip install py-spy")
    command = "python -m bench.scale " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )
    counts = sorted(set(args.counts))

    began, load_before = time.monotonic(), os.getloadavg()
    phases: list[Phase] = []
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir = workdir.absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        fleet = fleet_file(args.nodes, workdir / "fleet.yaml")
        t0 = time.monotonic()
        state = cluster.up(workdir / "cluster", fleet_file=fleet, bind_to_parent=True)
        stack.callback(cluster.down, workdir / "cluster")
        cluster_seconds = time.monotonic() - t0
        print(f"bench: {args.nodes}-node cluster Ready in {cluster_seconds:.0f}s", flush=True)
        cluster.kubectl(
            state, "apply", "--server-side", "--force-conflicts", "-k", str(REPO / "crds")
        )
        cluster.kubectl(
            state,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/inferenceendpoints.tidal.dev",
            "crd/vectorcollections.tidal.dev",
        )
        cluster.kubectl(state, "create", "namespace", OPERATOR_NAMESPACE)
        log = workdir / "operator.log"
        proc = stack.enter_context(operator(state, log, {}))
        bench = Bench(state, proc.pid)
        try:
            bench.probe_template()
            startup = usage(proc.pid)
            bench.idle = idle_rate(proc.pid)
            print(
                f"bench: operator {startup.rss_mib:.0f} MiB, idle {bench.idle * 100:.1f}% core",
                flush=True,
            )
            for count in counts:
                for kind in ("deployment", "endpoint"):
                    profile_to = (
                        workdir / f"profile-{count}.txt"
                        if args.profile and kind == "endpoint" and count == counts[-1]
                        else None
                    )
                    phase = bench.run_phase(kind, count, profile_to)
                    phases.append(phase)
                    p50, p95, p99 = percentiles(phase.latencies)
                    print(
                        f"bench: N={count:5d} {kind:10s} p50 {p50:6.2f}s p95 {p95:6.2f}s "
                        f"p99 {p99:6.2f}s all {phase.all_ready_seconds:6.2f}s steady "
                        f"{phase.steady_seconds:6.2f}s operator CPU {phase.cpu_seconds:6.1f}s "
                        f"RSS {phase.rss_after_mib:.0f} MiB",
                        flush=True,
                    )
            if args.collections > 0:
                with running_postgres() as postgres:
                    bench.postgres_url = postgres.url
                    phase = bench.run_phase("collection", args.collections, None)
                phases.append(phase)
                p50, p95, p99 = percentiles(phase.latencies)
                print(
                    f"bench: {args.collections} collections p50 {p50:.2f}s p95 {p95:.2f}s "
                    f"p99 {p99:.2f}s all {phase.all_ready_seconds:.2f}s operator CPU "
                    f"{phase.cpu_seconds:.1f}s RSS {phase.rss_after_mib:.0f} MiB",
                    flush=True,
                )
        except BenchError as exc:
            tail = log.read_text(errors="replace").splitlines()[-60:]
            print("\n".join(["operator log (tail):", *tail]), file=sys.stderr)
            print(f"bench: {exc}", file=sys.stderr)
            raise
        peak = usage(proc.pid).hwm_mib
        if args.profile:
            for prof in workdir.glob("profile-*.txt"):
                shutil.copy(prof, Path(tempfile.gettempdir()) / f"tidal-bench-scale-{prof.name}")
    section = report(
        phases,
        command=command.strip(),
        nodes=args.nodes,
        cluster_seconds=cluster_seconds,
        idle=bench.idle,
        startup=startup,
        peak_hwm=peak,
        wall_seconds=time.monotonic() - began,
        load_before=load_before,
    )
    write(args.out, section)
    spot_loss.announce(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
