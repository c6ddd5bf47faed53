"""Apply -> Ready from zero GPU nodes on an autoscaled cluster: N InferenceEndpoints against N
plain Deployments with the same pod template, where only a real node autoscaler (Karpenter)
makes the GPU nodes.

A benchmark, not a test: it asserts nothing about time and never runs under pytest. It starts
its own local control plane on the elastic fleet (`tidal.devcluster.cluster.up` with
`fleet.ELASTIC_FLEET`: CPU nodes only, and Karpenter v1.15 with its KWOK cloud provider
launching GPU nodes for Pending pods, as on EKS), applies the CRDs and runs the operator as a
process (`tidal run`, with the elastic e2e suite's settings: capacity refreshed every 2 s,
reconciles every 5 s, GPUs required on Karpenter-on-AWS labels). Simulated replicas become
Ready `--startup-seconds` after they start running (the same cluster-wide value for both
variants; neither pod template carries a per-pod startup annotation).

For each N of `--sizes`, `--rounds` rounds; each round runs both variants, Tidal first in even
rounds and plain first in odd ones, so neither always runs on a cluster the other just left:

- *tidal*: N InferenceEndpoints (SpotPreferred, 1 replica, one GPU of any product, region
  eu-west-1), created with one `kubectl create -f -` of a List in a fresh namespace;
- *plain*: N Deployments (1 replica) whose pod template is what the operator renders for such an
  endpoint: `tidal.render.endpoint.render_deployment` on the parsed endpoint with the Share the
  operator gives it on this fleet (1 spot replica in eu-west-1, the model's GPU-memory floor,
  the Karpenter-on-AWS label profile), ownerReferences and Tidal's labels and bookkeeping
  annotation replaced by a name and labels of its own, created the same way in a fresh
  namespace. In the first Tidal trial the operator's own spot Deployment is read back and its
  affinity, tolerations and resource limits compared with the plain template: the run stops if
  they differ, since the comparison would then be of two different workloads.

The clock starts just before the `kubectl create` (the apply counts, equally for both) and
stops when the truth holds: N live pods in the namespace, one per workload, every one Ready and
bound to a node Karpenter launched as spot (`karpenter.sh/capacity-type: spot`, a
`karpenter.sh/nodepool` label). For Tidal it also records when every endpoint's status says
Ready=True (what users see; it may trail the pods by a status write). Polled every
`POLL_SECONDS`, client-side monotonic time. Per trial it also counts the NodeClaims Karpenter
made (every one is new: each trial starts with none), their instance types, and the operator's
CPU seconds (utime + stime from /proc; it runs through both variants' trials).

Between trials: the namespace is deleted and its pods waited out, then every NodeClaim is
deleted (`kubectl delete nodeclaims --all`: Karpenter terminates its nodes), and the next trial
waits until no NodeClaim is left and no node has `nvidia.com/gpu` allocatable, plus
`SETTLE_SECONDS` so the operator's capacity refresh has seen the empty fleet. Consolidation is
not waited for, nor relied on: the nodes are taken away by hand. A warm-up pair at N=1
(`--warmup`, not recorded) runs first, so neither variant pays for the cluster's first launch.

Statistics: the median, and the 95th percentile when a cell has at least 20 trials, else the
maximum (the report says which); the ratio is Tidal's median over plain's, both measured in this
run, plus the ratio within each round.

Run: `make bench-elastic`, or `python -m bench.elastic_ready [--rounds 3] [--sizes 1 50]
[--startup-seconds 5] [--out docs/benchmarks.md]`. The report replaces this benchmark's section
of the output file (between its markers; placed after the spot-loss section when new) and
leaves other sections alone.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from kubernetes import client, config

from bench import spot_loss
from bench.spot_loss import create_all, environment_tables, write_section_after
from bench.spot_loss import operator as run_operator
from tidal.api.conventions import parse_conventions
from tidal.api.endpoint import InferenceEndpoint
from tidal.api.labels import (
    GPU_RESOURCE,
    KARPENTER_CAPACITY_TYPE,
    KARPENTER_NODEPOOL,
    LABEL_INSTANCE,
    LABEL_NAME,
    TEMPLATE_HASH,
    CapacityType,
)
from tidal.devcluster import build, cluster, fleet
from tidal.placement.planner import required_gpu_memory_mib
from tidal.render.endpoint import Share, render_deployment

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "tidal.dev", "v1alpha1", "inferenceendpoints"
KARPENTER_GROUP, KARPENTER_VERSION, NODECLAIMS = "karpenter.sh", "v1", "nodeclaims"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
REGION = "eu-west-1"
GPU_LABEL_PROFILE = "karpenter-aws"
PLAIN_APP = "bench-elastic-plain"
# The operator's settings in the elastic e2e suite (tests/e2e/test_elastic_tidal.py).
OPERATOR_ENV = {
    "TIDAL_CAPACITY_REFRESH_SECONDS": "2",
    "TIDAL_RECONCILE_INTERVAL_SECONDS": "5",
    "TIDAL_GPU_LABEL_PROFILE": GPU_LABEL_PROFILE,
}
POLL_SECONDS = 0.2
# Longer than TIDAL_CAPACITY_REFRESH_SECONDS: the next trial starts on a fleet the operator
# knows to be empty.
SETTLE_SECONDS = 3.0
# Fewer samples than this: the tail column is the maximum, not an interpolated p95.
P95_MIN_SAMPLES = 20
MARK_START = "<!-- bench:elastic_ready:start -->"
MARK_END = "<!-- bench:elastic_ready:end -->"
# Where a new section goes: after this one's end marker, when the file has it.
AFTER_MARK = "<!-- bench:spot_loss:end -->"

Variant = Literal["tidal", "plain"]
VARIANTS: tuple[Variant, Variant] = ("tidal", "plain")
T = TypeVar("T")


class BenchError(spot_loss.BenchError):
    """A trial could not be run or measured; the message says what was seen."""


@dataclass(frozen=True)
class Trial:
    variant: Variant
    size: int
    round: int
    ready_seconds: float  # N live pods, one per workload, all Ready on Karpenter spot nodes
    status_seconds: float | None  # tidal: every endpoint's status Ready=True; plain: None
    nodeclaims: int  # NodeClaims Karpenter made for the trial
    instance_types: dict[str, int] = field(default_factory=dict)
    operator_cpu_seconds: float = 0.0


@dataclass(frozen=True)
class Cell:
    """The figures of one variant at one N."""

    median: float
    tail: float  # p95 with at least P95_MIN_SAMPLES samples, else the maximum
    tail_is_p95: bool
    minimum: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Cell:
        if len(values) >= P95_MIN_SAMPLES:
            # Linear interpolation between closest ranks, as the other benchmarks.
            p95 = statistics.quantiles(values, n=100, method="inclusive")[94]
            return cls(statistics.median(values), p95, True, min(values))
        return cls(statistics.median(values), max(values), False, min(values))


def wait(what: str, check: Callable[[], T | None], timeout: float) -> T:
    return spot_loss.wait(what, check, timeout, POLL_SECONDS)


def endpoint_body(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceEndpoint",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "gpu": {"count": 1},
            "capacity": {"policy": "SpotPreferred"},
            "residency": {"regions": [REGION]},
            "scaling": {"minReplicas": 1, "maxReplicas": 1},
        },
    }


def rendered_deployment(name: str, namespace: str) -> dict[str, Any]:
    """The spot Deployment the operator renders for `endpoint_body(name, namespace)` on the
    elastic fleet, as it would apply it (ownerReferences included)."""
    body = endpoint_body(name, namespace)
    # A uid of our own: the renderer needs one for the ownerReference (stripped by the caller).
    ie = InferenceEndpoint.model_validate(
        {"metadata": {**body["metadata"], "uid": f"bench-{name}"}, "spec": body["spec"]}
    )
    share = Share(
        replicas=1,
        regions=(REGION,),
        min_gpu_memory_mib=required_gpu_memory_mib(ie.spec),
        conventions=parse_conventions(None, GPU_LABEL_PROFILE),
    )
    return render_deployment(ie, CapacityType.SPOT, share)


def plain_deployment(name: str, namespace: str) -> dict[str, Any]:
    """The operator's pod template under a Deployment of its own: no owner, and labels and a
    selector that name it alone (and that no Tidal index selects)."""
    deployment = rendered_deployment(name, namespace)
    labels = {LABEL_NAME: PLAIN_APP, LABEL_INSTANCE: name}
    template = deployment["spec"]["template"]
    annotations = {k: v for k, v in template["metadata"]["annotations"].items()}
    annotations.pop(TEMPLATE_HASH, None)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": annotations},
                "spec": template["spec"],
            },
        },
    }


def scheduling_fields(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """What decides where a pod may go and what node Karpenter launches for it."""
    return {
        "affinity": pod_spec.get("affinity"),
        "tolerations": pod_spec.get("tolerations"),
        # The API server gives quantities back as strings ("1" for the 1 rendered).
        "limits": [
            {k: str(v) for k, v in ((c.get("resources") or {}).get("limits") or {}).items()}
            for c in pod_spec["containers"]
        ],
    }


def is_ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


class Bench:
    """One elastic cluster, one operator, the trials."""

    def __init__(self, state: cluster.ClusterState, operator_pid: int) -> None:
        self.state = state
        self.operator_pid = operator_pid
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(state.kubeconfig)
        )
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.template_checked = False

    # --- reading the world (raw responses: no model classes on a 2-core machine) -------------

    def nodes(self) -> list[dict[str, Any]]:
        response: Any = self.core.list_node(_preload_content=False)
        return cast(list[dict[str, Any]], json.loads(response.data)["items"])

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        response: Any = self.core.list_namespaced_pod(namespace, _preload_content=False)
        return cast(list[dict[str, Any]], json.loads(response.data)["items"])

    def endpoints(self, namespace: str) -> list[dict[str, Any]]:
        listing: Any = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return cast(list[dict[str, Any]], listing["items"])

    def nodeclaims(self) -> list[dict[str, Any]]:
        listing: Any = self.custom.list_cluster_custom_object(
            KARPENTER_GROUP, KARPENTER_VERSION, NODECLAIMS
        )
        return cast(list[dict[str, Any]], listing["items"])

    def gpu_nodes(self) -> list[str]:
        return [
            n["metadata"]["name"]
            for n in self.nodes()
            if int((n.get("status") or {}).get("allocatable", {}).get(GPU_RESOURCE, "0") or 0) > 0
        ]

    def operator_cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.operator_pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # --- one trial ----------------------------------------------------------------------------

    def trial(self, variant: Variant, size: int, round_: int, timeout: float) -> Trial:
        namespace = f"elastic-ready-{variant}-{size}-r{round_}"
        names = [f"{'ep' if variant == 'tidal' else 'plain'}-{i:03d}" for i in range(size)]
        items = [
            endpoint_body(n, namespace) if variant == "tidal" else plain_deployment(n, namespace)
            for n in names
        ]
        if gpu := self.gpu_nodes():
            raise BenchError(f"{len(gpu)} GPU nodes before the trial: {', '.join(gpu)}")
        cluster.kubectl(self.state, "create", "namespace", namespace)
        try:
            cpu_before = self.operator_cpu_seconds()
            started = time.monotonic()
            create_all(self.state, items)
            ready, status = self.measure(variant, namespace, names, started, timeout)
            cpu = self.operator_cpu_seconds() - cpu_before
            if variant == "tidal" and not self.template_checked:
                self.check_template(namespace, names[0])
            claims = self.nodeclaims()
        finally:
            self.clean(namespace)
        types = collections.Counter(
            str((c["metadata"].get("labels") or {}).get(INSTANCE_TYPE, "?")) for c in claims
        )
        return Trial(variant, size, round_, ready, status, len(claims), dict(types), cpu)

    def measure(
        self,
        variant: Variant,
        namespace: str,
        names: list[str],
        started: float,
        timeout: float,
    ) -> tuple[float, float | None]:
        """Seconds from `started` until the pods are Ready on spot (and, for Tidal, until every
        endpoint's status says Ready=True)."""
        spot_nodes: set[str] = set()
        ready_at: float | None = None
        status_at: float | None = None
        deadline = started + timeout
        seen = "nothing"
        while time.monotonic() < deadline:
            now = time.monotonic()
            if ready_at is None:
                pods = [
                    p for p in self.pods(namespace) if not p["metadata"].get("deletionTimestamp")
                ]
                hosts = {str(p["spec"].get("nodeName") or "") for p in pods} - {""}
                if hosts - spot_nodes:
                    spot_nodes = {
                        n["metadata"]["name"]
                        for n in self.nodes()
                        if (labels := n["metadata"].get("labels") or {}).get(
                            KARPENTER_CAPACITY_TYPE
                        )
                        == "spot"
                        and KARPENTER_NODEPOOL in labels
                    }
                good = [p for p in pods if is_ready(p) and p["spec"].get("nodeName") in spot_nodes]
                owners = {(p["metadata"].get("labels") or {}).get(LABEL_INSTANCE) for p in good}
                seen = f"{len(pods)} live pods, {len(good)} Ready on Karpenter spot nodes"
                if len(pods) == len(good) == len(names) and owners == set(names):
                    ready_at = now
            if variant == "tidal" and status_at is None:
                endpoints = self.endpoints(namespace)
                if len(endpoints) == len(names) and all(is_ready(e) for e in endpoints):
                    status_at = now
            if ready_at is not None and (variant == "plain" or status_at is not None):
                return ready_at - started, (None if status_at is None else status_at - started)
            time.sleep(POLL_SECONDS)
        raise BenchError(
            f"{namespace}: not Ready after {timeout:.0f}s ({seen}; "
            f"status Ready: {'yes' if status_at is not None else 'no'})"
        )

    def check_template(self, namespace: str, name: str) -> None:
        """The operator's own spot Deployment schedules as the plain one does."""
        response: Any = client.AppsV1Api(self.core.api_client).read_namespaced_deployment(
            f"{name}-spot", namespace, _preload_content=False
        )
        live = json.loads(response.data)["spec"]["template"]["spec"]
        plain = plain_deployment(name, namespace)["spec"]["template"]["spec"]
        if scheduling_fields(live) != scheduling_fields(plain):
            raise BenchError(
                "the plain pod template differs from the operator's: "
                f"{scheduling_fields(plain)!r} != {scheduling_fields(live)!r}"
            )
        self.template_checked = True

    def clean(self, namespace: str) -> None:
        """Workloads first (else draining a node would reschedule them onto a new one), then
        every NodeClaim; back when no GPU node is left."""
        cluster.kubectl(self.state, "delete", "namespace", namespace, "--wait=false")
        wait(f"the pods of {namespace} gone", lambda: not self.pods(namespace), timeout=180)
        cluster.kubectl(self.state, "delete", "nodeclaims", "--all", "--wait=false")
        wait(
            "no NodeClaim and no node with nvidia.com/gpu allocatable",
            lambda: not self.nodeclaims() and not self.gpu_nodes(),
            timeout=180,
        )
        time.sleep(SETTLE_SECONDS)


# --- the report ---------------------------------------------------------------------------------


def report(
    trials: Sequence[Trial],
    *,
    command: str,
    sizes: Sequence[int],
    rounds: int,
    startup_seconds: float,
    wall_seconds: float,
    cluster_seconds: float,
    load_before: tuple[float, float, float],
) -> str:
    def of(variant: Variant, size: int) -> list[Trial]:
        return [t for t in trials if t.variant == variant and t.size == size]

    tail_word = "p95" if rounds >= P95_MIN_SAMPLES else "max"
    lines = [
        MARK_START,
        "## Apply -> Ready from zero GPU nodes, with Karpenter: endpoints vs plain Deployments",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}` "
        f"({len(trials)} trials, {wall_seconds / 60:.1f} min in all; the elastic local cluster "
        f"took {cluster_seconds:.0f} s to start).",
        "",
        "Each trial starts with no GPU node: only Karpenter (v1.15, its KWOK cloud provider, the "
        "elastic fleet of `operator/tidal/devcluster/data/elastic.yaml`) makes them, for Pending "
        f"pods. *tidal*: N InferenceEndpoints (SpotPreferred, 1 replica, 1 GPU, {REGION}) "
        "created at once in a fresh namespace; *plain*: N Deployments (1 replica) with the pod "
        "template the operator renders for such an endpoint (its affinity, tolerations and "
        "limits checked equal to the operator's own Deployment in the run), created the same "
        "way. Clock: from just before the `kubectl create` until N live pods, one per "
        "workload, are all Ready on Karpenter spot nodes; for *tidal*, also until every "
        "endpoint's status says Ready=True. Simulated replicas are Ready "
        f"{startup_seconds:g} s after they start running (both variants). Polled every "
        f"{POLL_SECONDS:g} s. Operator settings: "
        + ", ".join(f"`{k}={v}`" for k, v in sorted(OPERATOR_ENV.items()))
        + "; it runs throughout, plain trials included. Between trials the namespace is "
        "deleted, then every NodeClaim, until no node has `nvidia.com/gpu` allocatable "
        "(consolidation is not waited for). Both variants run in every round, alternating "
        "which goes first; a warm-up pair at N=1 is not counted.",
        "",
        f"| N | variant | trials | median (s) | {tail_word} (s) | min (s) | "
        "Tidal median / plain median | NodeClaims per trial | operator CPU per trial (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    notes: list[str] = []
    for size in sizes:
        tidal, plain = of("tidal", size), of("plain", size)
        if not tidal or not plain:
            continue
        t_cell = Cell.of([t.ready_seconds for t in tidal])
        p_cell = Cell.of([t.ready_seconds for t in plain])
        statuses = [t.status_seconds for t in tidal if t.status_seconds is not None]
        s_cell = Cell.of(statuses) if statuses else None
        ratio = t_cell.median / p_cell.median

        def row(n: int, what: str, cell: Cell, count: int, rat: str, group: list[Trial]) -> str:
            claims = ", ".join(str(t.nodeclaims) for t in group) if group else "—"
            cpu = (
                f"{statistics.median(t.operator_cpu_seconds for t in group):.1f}" if group else "—"
            )
            return (
                f"| {n} | {what} | {count} | {cell.median:.2f} | {cell.tail:.2f} | "
                f"{cell.minimum:.2f} | {rat} | {claims} | {cpu} |"
            )

        lines.append(row(size, "plain (pods Ready)", p_cell, len(plain), "", plain))
        lines.append(
            row(size, "**tidal (pods Ready)**", t_cell, len(tidal), f"**{ratio:.2f}x**", tidal)
        )
        if s_cell is not None:
            status_ratio = f"{s_cell.median / p_cell.median:.2f}x"
            lines.append(row(size, "tidal (status Ready)", s_cell, len(statuses), status_ratio, []))
        per_round = []
        for r in sorted({t.round for t in tidal}):
            pair = [t for t in tidal if t.round == r], [t for t in plain if t.round == r]
            if pair[0] and pair[1]:
                per_round.append(f"{pair[0][0].ready_seconds / pair[1][0].ready_seconds:.2f}")
        notes.append(
            f"N={size}, per round, Tidal / plain (pods Ready): {', '.join(per_round)}; "
            f"tidal (s): {', '.join(f'{t.ready_seconds:.2f}' for t in tidal)}; "
            f"plain (s): {', '.join(f'{t.ready_seconds:.2f}' for t in plain)}."
        )
        t_claims = [t.nodeclaims for t in tidal]
        p_claims = [t.nodeclaims for t in plain]
        if sorted(t_claims) != sorted(p_claims):
            notes.append(
                f"N={size}: Karpenter did not make as many NodeClaims for one variant as for the "
                f"other (per trial: tidal {', '.join(map(str, t_claims))}; plain "
                f"{', '.join(map(str, p_claims))}); instance types over the trials: tidal "
                f"{_types(tidal)}; plain {_types(plain)}."
            )
        else:
            notes.append(
                f"N={size}: as many NodeClaims for both variants; instance types over all "
                f"{len(tidal) + len(plain)} trials: {_types(tidal + plain)}."
            )
    tail_note = (
        "p95 interpolates linearly between closest ranks."
        if rounds >= P95_MIN_SAMPLES
        else f"With fewer than {P95_MIN_SAMPLES} trials per cell the tail column is the maximum."
    )
    busy = max(load_before[0], os.getloadavg()[0]) > (os.cpu_count() or 1)
    lines += [
        "",
        *(f"- {note}" for note in notes),
        "",
        f"{tail_note} Target: Tidal ≤ 1.1x plain (median, pods Ready).",
        *(
            [
                "",
                "The machine was busy with other work during the run (load average above its "
                "CPU count, below): the figures include waiting for a CPU.",
            ]
            if busy
            else []
        ),
        *environment_tables(load_before),
        f"| Karpenter (KWOK provider) | {build.KARPENTER_VERSION} |",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def _types(trials: Sequence[Trial]) -> str:
    total: collections.Counter[str] = collections.Counter()
    for t in trials:
        total.update(t.instance_types)
    return ", ".join(f"{k} x {v}" for k, v in sorted(total.items())) or "none"


def write(out: Path, section: str) -> None:
    """Replace this benchmark's section of `out`; a new one goes after the spot-loss section
    (appended when the file has none)."""
    write_section_after(out, section, MARK_START, MARK_END, AFTER_MARK)


# --- running it ---------------------------------------------------------------------------------


@contextlib.contextmanager
def elastic_cluster(workdir: Path, startup_seconds: float) -> Iterator[cluster.ClusterState]:
    try:
        yield cluster.up(
            workdir, fleet.ELASTIC_FLEET, bind_to_parent=True, startup_seconds=startup_seconds
        )
    finally:
        cluster.down(workdir)


def apply_crds(state: cluster.ClusterState) -> None:
    spot_loss.apply_crds(state, namespace=None)


def dump(state: cluster.ClusterState, workdir: Path, log: Path) -> None:
    """What an operator and Karpenter saw, for a run that stopped."""
    operator_tail = log.read_text(errors="replace").splitlines()[-60:] if log.exists() else []
    karpenter_log = workdir / "logs" / "karpenter.log"
    karpenter_tail = (
        karpenter_log.read_text(errors="replace").splitlines()[-30:]
        if karpenter_log.exists()
        else []
    )
    print("\n".join(["operator log (tail):", *operator_tail]), file=sys.stderr)
    print("\n".join(["karpenter log (tail):", *karpenter_tail]), file=sys.stderr)
    for what in ("nodeclaims", "nodes"):
        with contextlib.suppress(cluster.ClusterError):
            print(f"{what}:\n{cluster.kubectl(state, 'get', what, '-o', 'wide')}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.elastic_ready", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="trials per variant and N")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 50], help="the Ns")
    spot_loss.startup_argument(parser, 5.0)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted N=1 pairs first")
    parser.add_argument("--timeout", type=float, default=300.0, help="per trial, seconds")
    spot_loss.output_arguments(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or min(args.sizes) < 1:
        parser.error("--rounds and every --sizes must be at least 1")
    command = "python -m bench.elastic_ready " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )

    began, load_before = time.monotonic(), os.getloadavg()
    trials: list[Trial] = []
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        cluster_dir = workdir.absolute() / "cluster"
        state = stack.enter_context(elastic_cluster(cluster_dir, args.startup_seconds))
        cluster_seconds = time.monotonic() - began
        apply_crds(state)
        log = workdir / "operator.log"
        proc = stack.enter_context(run_operator(state, log, OPERATOR_ENV))
        bench = Bench(state, proc.pid)
        plan = [("warm-up", 1, -1 - w) for w in range(args.warmup)] + [
            (f"N={size} round {r + 1}/{args.rounds}", size, r)
            for size in args.sizes
            for r in range(args.rounds)
        ]
        for label, size, round_ in plan:
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                try:
                    trial = bench.trial(variant, size, round_, args.timeout)
                except (spot_loss.BenchError, cluster.ClusterError):  # waits raise the base
                    dump(state, cluster_dir, log)
                    raise
                if round_ >= 0:
                    trials.append(trial)
                status = (
                    f"  status {trial.status_seconds:6.2f}s"
                    if trial.status_seconds is not None
                    else ""
                )
                print(
                    f"{label}: {variant:5s} ready {trial.ready_seconds:6.2f}s{status}  "
                    f"nodeclaims {trial.nodeclaims} {trial.instance_types}  "
                    f"operator cpu {trial.operator_cpu_seconds:.1f}s",
                    flush=True,
                )
    section = report(
        trials,
        command=command.strip(),
        sizes=args.sizes,
        rounds=args.rounds,
        startup_seconds=args.startup_seconds,
        wall_seconds=time.monotonic() - began,
        cluster_seconds=cluster_seconds,
        load_before=load_before,
    )
    write(args.out, section)
    spot_loss.announce(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
