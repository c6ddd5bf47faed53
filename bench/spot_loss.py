"""Spot loss -> all replicas Ready again: how long an endpoint serves below strength when a
region's spot capacity is reclaimed.

A benchmark, not a test: it asserts nothing about time and never runs under pytest. It starts
its own local control plane (`tidal.devcluster.cluster.up`, the default simulated fleet and the
simulated GPU agent), applies the CRDs, runs the operator as a process (`tidal run`, like the
e2e suite), and repeats one trial:

1. a fresh InferenceEndpoint, SpotPreferred, `--replicas` H100 replicas in `--region`; wait
   until its status says all of them are Ready on spot;
2. delete that region's spot H100 nodes (what a cloud does when it reclaims them) -- the clock
   starts just before the delete;
3. poll every `POLL_SECONDS` until the endpoint's status shows the move decided (spot 0,
   reserved N: the operator reacted), and then until every replica is Ready again on reserved
   both in its status (ready N, Ready=True) and in fact (N live pods, all Ready, all bound to
   the region's reserved nodes): status is what users see, pods are the truth, and a status
   that ran ahead of the pods must not count;
4. re-create the spot nodes and delete the endpoint.

With `--background N` (default 100: recovery is measured "at 100 endpoints") the operator
also manages N other endpoints throughout (ReservedOnly, one H100 each, in the other region, on
a node group added to the default fleet for them), all Ready before the first trial: their
refreshes and events share the operator's reconcile pool and the API server with the trial's.

A fresh endpoint per trial keeps trials independent: the return to spot after a loss is held by
a hysteresis, which a reused endpoint would carry from one trial into the next.

Run: `make bench`, or `python -m bench.spot_loss [--trials 20] [--background 100]
[--out docs/benchmarks.md]`.
The report replaces this benchmark's section of the output file (between its markers) and
leaves other sections alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tidal.devcluster import build, cluster, fleet

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "tidal.dev", "v1alpha1", "inferenceendpoints"
NAMESPACE = "bench-spot-loss"
BACKGROUND_NAMESPACE = "bench-spot-loss-background"
REGIONS = ("eu-west-1", "us-east-1")
H100 = "NVIDIA-H100-80GB-HBM3"
POLL_SECONDS = 0.1
MARK_START = "<!-- bench:spot_loss:start -->"
MARK_END = "<!-- bench:spot_loss:end -->"

T = TypeVar("T")


class BenchError(RuntimeError):
    """A trial could not be run or measured; the message says what was seen."""


@dataclass(frozen=True)
class Trial:
    decided_seconds: float  # status shows spot 0, reserved N: the operator moved the share
    ready_seconds: float  # status shows N ready replicas on reserved, Ready=True


@dataclass(frozen=True)
class Spread:
    p50: float
    p95: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        # Linear interpolation between closest ranks (the "inclusive" method), so p95 of 20
        # samples lies between the 19th and the 20th.
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        return cls(p50=cuts[49], p95=cuts[94], minimum=min(values), maximum=max(values))


def wait(what: str, check: Callable[[], T | None], timeout: float, poll: float = POLL_SECONDS) -> T:
    """Poll `check()` every `poll` seconds until it returns something truthy (the other
    benchmarks use it too); a BenchError names `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}; last seen {last!r}")


class Bench:
    """One cluster, one operator, the trials."""

    def __init__(self, state: cluster.ClusterState, region: str, replicas: int) -> None:
        self.state = state
        self.region = region
        self.replicas = replicas
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(state.kubeconfig)
        )
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.spot_nodes = [
            node
            for node in fleet.render_nodes(fleet.load(fleet.DEFAULT_FLEET))
            if node["metadata"]["labels"].get("topology.kubernetes.io/region") == region
            and node["metadata"]["labels"].get("tidal.dev/capacity-type") == "spot"
            and node["metadata"]["labels"].get("nvidia.com/gpu.product") == H100
        ]
        if not self.spot_nodes:
            raise BenchError(f"the default fleet has no spot {H100} nodes in {region}")

    # --- the endpoint ------------------------------------------------------------------------

    def endpoint(self, name: str) -> dict[str, Any] | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    def create_endpoint(self, name: str) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceEndpoint",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
                "gpu": {"count": 1, "products": [H100]},
                "capacity": {"policy": "SpotPreferred"},
                "residency": {"regions": [self.region]},
                "scaling": {"minReplicas": self.replicas, "maxReplicas": self.replicas},
            },
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)

    def status_shows(
        self, name: str, *, spot: int, reserved: int, ready: int | None
    ) -> dict[str, Any] | None:
        """The endpoint when its current status has this mix (and `ready` replicas with
        Ready=True, unless `ready` is None); else None."""
        obj = self.endpoint(name)
        status = (obj or {}).get("status") or {}
        if obj is None or status.get("observedGeneration") != obj["metadata"].get("generation"):
            return None
        replicas = status.get("replicas") or {}
        if (replicas.get("spot"), replicas.get("reserved")) != (spot, reserved):
            return None
        if ready is not None:
            conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            if replicas.get("ready") != ready or conditions.get("Ready") != "True":
                return None
        return obj

    def kubectl_json(self, *args: str) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(cluster.kubectl(self.state, *args, "-o", "json")))

    def pods(self, name: str) -> list[dict[str, Any]]:
        """The endpoint's pods as plain objects (the raw response: no model classes)."""
        response: Any = self.core.list_namespaced_pod(
            NAMESPACE, label_selector=f"tidal.dev/endpoint={name}", _preload_content=False
        )
        return cast(list[dict[str, Any]], json.loads(response.data)["items"])

    def reserved_nodes(self) -> set[str]:
        """GPU nodes of the region without a spot marker (the default fleet's reserved H100s)."""
        nodes = self.kubectl_json("get", "nodes")["items"]
        return {
            n["metadata"]["name"]
            for n in nodes
            if (labels := n["metadata"].get("labels") or {}).get("topology.kubernetes.io/region")
            == self.region
            and labels.get("tidal.dev/capacity-type") == "reserved"
            and "nvidia.com/gpu.product" in labels
        }

    def ready_on(self, name: str, nodes: set[str]) -> bool:
        """Exactly `replicas` live pods, every one Ready and bound to one of `nodes`."""
        live = [p for p in self.pods(name) if not p["metadata"].get("deletionTimestamp")]
        ready = [
            p
            for p in live
            if p["spec"].get("nodeName") in nodes
            and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        ]
        return len(live) == len(ready) == self.replicas

    def delete_endpoint(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        wait(
            f"{name} and its pods gone",
            lambda: (
                self.endpoint(name) is None
                and not self.core.list_namespaced_pod(
                    NAMESPACE, label_selector=f"tidal.dev/endpoint={name}"
                ).items
            ),
            timeout=180,
        )

    def start_background(self, count: int, region: str) -> None:
        """`count` ReservedOnly one-H100 endpoints in `region`, all Ready."""
        if not count:
            return
        cluster.kubectl(self.state, "create", "namespace", BACKGROUND_NAMESPACE)
        items = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "InferenceEndpoint",
                "metadata": {"name": f"bg-{i:03d}", "namespace": BACKGROUND_NAMESPACE},
                "spec": {
                    "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
                    "gpu": {"count": 1, "products": [H100]},
                    "capacity": {"policy": "ReservedOnly"},
                    "residency": {"regions": [region]},
                    "scaling": {"minReplicas": 1, "maxReplicas": 1},
                },
            }
            for i in range(count)
        ]
        create_all(self.state, items)

        def all_ready() -> bool:
            listing: Any = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, BACKGROUND_NAMESPACE, PLURAL
            )
            ready = [
                o
                for o in listing["items"]
                if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (o.get("status") or {}).get("conditions") or []
                )
            ]
            return len(ready) == count

        wait(f"{count} background endpoints Ready", all_ready, timeout=900)

    # --- the fleet ---------------------------------------------------------------------------

    def spot_node_names(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.spot_nodes]

    def delete_spot_nodes(self) -> None:
        for name in self.spot_node_names():
            self.core.delete_node(name)

    def restore_spot_nodes(self) -> None:
        cluster.create_nodes(self.state, self.spot_nodes)

        def ready() -> bool:
            nodes = {n["metadata"]["name"]: n for n in self.kubectl_json("get", "nodes")["items"]}
            for name in self.spot_node_names():
                conditions = (nodes.get(name, {}).get("status") or {}).get("conditions") or []
                if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    return False
            return True

        wait("the spot nodes Ready again", ready, timeout=120)

    # --- one trial ---------------------------------------------------------------------------

    def trial(self, index: int) -> Trial:
        name = f"trial-{index:02d}"
        n = self.replicas
        self.create_endpoint(name)
        try:
            wait(
                f"{name}: {n} replicas Ready on spot",
                lambda: self.status_shows(name, spot=n, reserved=0, ready=n),
                timeout=180,
            )
            reserved = self.reserved_nodes()
            if not reserved:
                raise BenchError(f"no reserved GPU nodes in {self.region}")
            started = time.monotonic()
            self.delete_spot_nodes()
            wait(
                f"{name}: the move to reserved decided",
                lambda: self.status_shows(name, spot=0, reserved=n, ready=None),
                timeout=600,
            )
            decided = time.monotonic() - started
            wait(
                f"{name}: {n} replicas Ready on reserved, in status and in fact",
                lambda: (
                    self.status_shows(name, spot=0, reserved=n, ready=n)
                    and self.ready_on(name, reserved)
                ),
                timeout=600,
            )
            ready = time.monotonic() - started
        finally:
            # Nodes first: the replicas stranded on the deleted nodes are only removed (by
            # KWOK) once their node exists again, or by the pod garbage collector much later.
            self.restore_spot_nodes()
            self.delete_endpoint(name)
        return Trial(decided_seconds=decided, ready_seconds=ready)


def background_region(region: str) -> str:
    """The region the background endpoints run in: the default fleet's other one."""
    return next(r for r in REGIONS if r != region)


def fleet_with_background(path: Path, background: int, region: str) -> Path:
    """The default fleet plus enough reserved 8-GPU H100 nodes in `region` for `background`
    one-GPU endpoints (none when 0)."""
    doc = yaml.safe_load(fleet.DEFAULT_FLEET.read_text())
    if background:
        doc["nodeGroups"].append(
            {
                "name": "h100-background",
                "regions": [region],
                "nodesPerRegion": -(-background // 8),
                "capacityType": "reserved",
                "gpu": {"product": H100, "memoryMiB": 81559, "count": 8},
                "cpu": "192",
                "memory": "2Ti",
            }
        )
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def create_all(state: cluster.ClusterState, items: list[dict[str, Any]]) -> None:
    """Create `items` with one `kubectl create -f -` of a List (objects go one at a time)."""
    cluster.kubectl(
        state,
        "create",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        # Under load a custom resource takes ~0.2 s to create; 1,000 of them more than 2 min.
        timeout=max(120.0, len(items) * 1.0),
    )


@contextlib.contextmanager
def local_cluster(workdir: Path, fleet_file: Path | None = None) -> Iterator[cluster.ClusterState]:
    state = cluster.up(workdir, fleet_file=fleet_file, bind_to_parent=True)
    try:
        yield state
    finally:
        cluster.down(workdir)


@contextlib.contextmanager
def operator(
    state: cluster.ClusterState, log: Path, extra_env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "KUBECONFIG": str(state.kubeconfig),
        "TIDAL_LOG_FORMAT": "plain",
        "PYTHONUNBUFFERED": "1",
        **extra_env,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidal.cli", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def apply_crds(state: cluster.ClusterState, namespace: str | None = NAMESPACE) -> None:
    """Tidal's CRDs, Established, and (unless None) the benchmark's namespace."""
    cluster.kubectl(state, "apply", "--server-side", "--force-conflicts", "-k", str(REPO / "crds"))
    cluster.kubectl(
        state,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/inferenceendpoints.tidal.dev",
    )
    if namespace is not None:
        cluster.kubectl(state, "create", "namespace", namespace)


def machine(load_before: tuple[float, float, float]) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU": cpu,
        "RAM": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "Kernel (uname -r)": platform.release(),
        # Other work on the machine shows here; a benchmark on a busy machine measures it.
        "Load average (1/5/15 min) before / after": (
            f"{_load(load_before)} / {_load(os.getloadavg())}"
        ),
    }


def environment_tables(load_before: tuple[float, float, float]) -> list[str]:
    """The machine and versions tables every benchmark section ends with."""
    return [
        "",
        "| Machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine(load_before).items()),
        "",
        "| Versions | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in versions().items()),
    ]


def _load(values: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def versions() -> dict[str, str]:
    v = build.Versions()
    return {
        "Kubernetes (apiserver, KCM, scheduler)": v.kubernetes,
        "etcd": v.etcd,
        "KWOK": v.kwok,
        "Python": platform.python_version(),
        "Kopf": importlib.metadata.version("kopf"),
        "kubernetes (Python client)": importlib.metadata.version("kubernetes"),
    }


def report(
    trials: Sequence[Trial],
    *,
    command: str,
    region: str,
    replicas: int,
    operator_env: dict[str, str],
    wall_seconds: float,
    load_before: tuple[float, float, float],
    background: int = 0,
) -> str:
    decided = Spread.of([t.decided_seconds for t in trials])
    ready = Spread.of([t.ready_seconds for t in trials])
    settings = ", ".join(f"`{k}={v}`" for k, v in sorted(operator_env.items())) or "defaults"

    def row(what: str, s: Spread) -> str:
        return f"| {what} | {s.p50:.2f} | {s.p95:.2f} | {s.minimum:.2f} | {s.maximum:.2f} |"

    lines = [
        MARK_START,
        "## Spot loss -> all replicas Ready again",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}` "
        f"({len(trials)} trials, {wall_seconds / 60:.1f} min in all).",
        "",
        f"Each trial: a fresh SpotPreferred InferenceEndpoint with {replicas} H100 replicas in "
        f"{region}, all Ready on spot; then that region's spot H100 nodes are deleted and the "
        "clock runs until the endpoint's status shows the move (spot 0, reserved "
        f"{replicas}: *decided*) and then until all {replicas} replicas are Ready on reserved "
        "both in the status and in fact (that many live pods, all Ready, all bound to the "
        f"region's reserved nodes: *recovered*). Polled every {POLL_SECONDS:g} s. "
        f"Operator settings: {settings}. "
        + (
            f"Throughout, the operator also manages {background} other endpoints (ReservedOnly, "
            f"one H100 each, in {background_region(region)}), all Ready before the first trial."
            if background
            else "No other endpoints exist."
        ),
        "",
        "| seconds after the spot nodes are deleted | p50 | p95 | min | max |",
        "|---|---:|---:|---:|---:|",
        row("decided (status: spot 0, reserved N)", decided),
        row("recovered (N Ready on reserved: status and pods)", ready),
        "",
        "Per trial, recovered (s): " + ", ".join(f"{t.ready_seconds:.2f}" for t in trials) + ".",
        "",
        "Percentiles interpolate linearly between closest ranks. Target: p95 ≤ 15 s.",
        *busy_note(load_before, " and are upper bounds for an idle machine."),
        *environment_tables(load_before),
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


HEADER = """# Benchmarks

Figures from `make bench`: the local control plane (real etcd, kube-apiserver,
kube-controller-manager and kube-scheduler; KWOK simulating the nodes and pods) with the simulated
GPU fleet of `operator/tidal/devcluster/data/fleet.yaml`. Benchmarks are not tests: nothing here
is asserted. Each section is rewritten by its benchmark; the machine and versions are those of
the run that wrote it.

"""


def output_arguments(parser: argparse.ArgumentParser) -> None:
    """`--out` (the report file) and `--workdir` (the cluster's), as every cluster benchmark
    takes them."""
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--workdir", type=Path, help="cluster work dir (default: a temp dir)")


def startup_argument(parser: argparse.ArgumentParser, default: float) -> None:
    """`--startup-seconds`: the simulated model load of the elastic benchmarks."""
    parser.add_argument(
        "--startup-seconds",
        type=float,
        default=default,
        help="simulated model load: a running replica is Ready this much later",
    )


def announce(out: Path, section: str) -> None:
    """Print a written section and where it went."""
    print(section)
    print(f"wrote {out}")


def busy_note(load_before: tuple[float, float, float], consequence: str = ".") -> list[str]:
    """The note a section carries when the machine was busy during the run (load average above
    its CPU count before or after): the figures include waiting for a CPU`consequence`."""
    if max(load_before[0], os.getloadavg()[0]) <= (os.cpu_count() or 1):
        return []
    return [
        "",
        "The machine was busy with other work during the run (load average above its CPU "
        f"count, below): the figures include waiting for a CPU{consequence}",
    ]


def write_section_after(
    out: Path, section: str, start_mark: str, end_mark: str, after_mark: str
) -> None:
    """`write_section`, placing a section `out` does not have yet after `after_mark` (appended
    when there is none either)."""
    text = out.read_text() if out.exists() else ""
    if start_mark not in text and after_mark in text:
        at = text.index(after_mark) + len(after_mark)
        out.write_text(text[:at] + "\n" + start_mark + "\n" + end_mark + text[at:])
    write_section(out, section, start_mark, end_mark)


def write_section(out: Path, section: str, start_mark: str, end_mark: str) -> None:
    """Replace the section of `out` between the markers (or append it), keeping the rest."""
    text = out.read_text() if out.exists() else HEADER
    start, end = text.find(start_mark), text.find(end_mark)
    if start != -1 and end != -1:
        rest = text[end + len(end_mark) :].lstrip("\n")
        text = text[:start] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def write(out: Path, section: str) -> None:
    """Replace this benchmark's section of `out` (or append it), keeping the rest."""
    write_section(out, section, MARK_START, MARK_END)


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--operator-env takes KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spot_loss", description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--region", default="eu-west-1", choices=REGIONS)
    parser.add_argument(
        "--background", type=int, default=100, help="other endpoints the operator manages"
    )
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the operator (repeatable); default: its defaults",
    )
    output_arguments(parser)
    args = parser.parse_args(argv)
    if args.trials < 2:
        parser.error("--trials must be at least 2 (percentiles need two samples)")
    operator_env = parse_env(args.operator_env)
    command = "python -m bench.spot_loss " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )

    began, load_before = time.monotonic(), os.getloadavg()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        fleet_file = fleet_with_background(
            workdir / "fleet.yaml", args.background, background_region(args.region)
        )
        state = stack.enter_context(local_cluster(workdir.absolute() / "cluster", fleet_file))
        apply_crds(state)
        log = workdir / "operator.log"
        stack.enter_context(operator(state, log, operator_env))
        bench = Bench(state, args.region, args.replicas)
        bench.start_background(args.background, background_region(args.region))
        print(f"bench: {args.background} background endpoints Ready", flush=True)
        trials = []
        for index in range(args.trials):
            try:
                trial = bench.trial(index)
            except BenchError as exc:
                tail = log.read_text(errors="replace").splitlines()[-80:]
                print("\n".join(["operator log (tail):", *tail]), file=sys.stderr)
                print(f"bench: {exc}", file=sys.stderr)
                raise
            trials.append(trial)
            print(
                f"trial {index + 1:2d}/{args.trials}: decided {trial.decided_seconds:6.2f}s  "
                f"recovered {trial.ready_seconds:6.2f}s",
                flush=True,
            )
    section = report(
        trials,
        command=command.strip(),
        region=args.region,
        replicas=args.replicas,
        operator_env=operator_env,
        wall_seconds=time.monotonic() - began,
        load_before=load_before,
        background=args.background,
    )
    write(args.out, section)
    print(section)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
