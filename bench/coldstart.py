"""Wake from zero with and without the shared model cache: how long the first request after an
endpoint scaled to zero waits, when its replica downloads the weights and when it reads them from
the cache (`spec.model.cache`).

A benchmark, not a test: it asserts nothing about time and never runs under pytest. It starts a
fresh local cluster with the static fleet (`bench.spot_loss.local_cluster`), runs the operator
and the gateway as processes, the gateway exactly as the e2e suite does
(`tests.e2e.gateway.GatewayProcess`, with `tests.e2e.gateway.FakeReplicas` answering for the
Running pods), and for each case (`download`: the replica fetches the weights itself, as with
no cache; `cache`: the replica mounts the filled cache read-only) repeats one round:

1. wait until the endpoint is scaled to zero (`ScaledToZero` True, no Running pod);
2. send one chat request through the gateway and time it until the answer: the gateway holds
   it, writes the wake annotation, the operator scales the Deployment to one, the scheduler
   binds the pod, KWOK runs it and makes it Ready after the simulated start-up, the gateway
   forwards the held request;
3. read what the API server says about that pod (created, scheduled, Ready) and the endpoint's
   `status.lastColdStartSeconds`.

What is real and what is simulated:

- Real: the API server, etcd, kube-scheduler, controller-manager (Deployments, ReplicaSets,
  the Job controller, the PV binder), Tidal's operator and gateway.
- Simulated: nodes and pods (KWOK), the model servers (`tests.fakes.model_server`), the cache's
  volume (a hostPath PersistentVolume: there is no storage provisioner), and what a pod does
  with its weights: KWOK times a pod annotated `tidal.dev/simulated-weights-bytes` from its
  spec (`tidal.devcluster.fleet.ModelLoad`): a replica without a model volume claim downloads
  (bytes / 300 MiB/s) then reads from local disk (bytes / 320 MiB/s); a replica mounting the
  cache reads it (bytes / 500 MiB/s); both then start the engine (30 s); the cache's loader
  downloads once (bytes / 300 MiB/s). The rates are public figures (docs/benchmarks.md).

Run: `make bench-coldstart`, or `python -m bench.coldstart [--rounds 3] [--weights-gib 14.96]
[--out docs/benchmarks.md]`. The report replaces this benchmark's section of the output file.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from tests.e2e.gateway import (
    FakeReplicas,
    GatewayProcess,
    install_access,
    post,
    token_kubeconfig,
)
from tests.e2e.kube import Kube, condition
from tests.fakes.model_server import Behaviour

from bench import spot_loss
from bench.spot_loss import BenchError, apply_crds, local_cluster, wait
from tidal.api.labels import SIMULATED_WEIGHTS_BYTES
from tidal.devcluster.fleet import ModelLoad

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "bench-coldstart"
MARK_START = "<!-- bench:coldstart:start -->"
MARK_END = "<!-- bench:coldstart:end -->"
# Llama 3.1 8B Instruct in bf16: its four safetensors shards, 16.06 GB (14.96 GiB).
DEFAULT_WEIGHTS_GIB = 14.96
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
IDLE_SECONDS = 10
POLL_SECONDS = 0.5
STORAGE_CLASS = "bench-model-cache"
OPERATOR_ENV = {
    "TIDAL_SCALE_DOWN_STABILIZATION_SECONDS": "5",
    "TIDAL_LOAD_STALE_AFTER_SECONDS": "15",
}
CASES = ("download", "cache")
LABELS = {"download": "replica downloads (no cache)", "cache": "replica reads the cache"}


@dataclass(frozen=True)
class Wake:
    case: str
    round: int
    waited_seconds: float  # request sent -> answer received, through the gateway
    cold_start_seconds: float | None  # status.lastColdStartSeconds, the operator's own
    scheduled_seconds: float  # pod created -> scheduled (whole seconds, the API's stamps)
    ready_seconds: float  # pod scheduled -> Ready: what the simulated model load took


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def expected_seconds(load: ModelLoad, weights_bytes: int, *, cached: bool) -> float:
    """What the simulation charges a replica for its weights and engine start (`ModelLoad`)."""
    mib = weights_bytes / 2**20
    if cached:
        return mib / load.volume_read_mib_per_second + load.engine_init_seconds
    return (
        mib / load.download_mib_per_second
        + mib / load.local_read_mib_per_second
        + load.engine_init_seconds
    )


def endpoint_body(name: str, case: str, weights_bytes: int) -> dict[str, Any]:
    sample = yaml.safe_load((REPO / "manifests/samples/inferenceendpoint-llama.yaml").read_text())
    obj: dict[str, Any] = copy.deepcopy(sample)
    obj["metadata"] = {"name": name, "namespace": NAMESPACE}
    obj["spec"]["model"] = {"name": f"{NAMESPACE}/{name}", "uri": f"hf://{MODEL}"}
    if case == "cache":
        size = f"{int(weights_bytes * 1.2 / 2**30) + 1}Gi"
        obj["spec"]["model"]["cache"] = {"storageClassName": STORAGE_CLASS, "size": size}
    obj["spec"]["scaling"] = {
        "minReplicas": 0,
        "maxReplicas": 1,
        "idleSecondsBeforeScaleToZero": IDLE_SECONDS,
    }
    obj["spec"]["podTemplate"] = {
        "metadata": {"annotations": {SIMULATED_WEIGHTS_BYTES: str(weights_bytes)}}
    }
    return obj


def cache_volume(weights_bytes: int) -> dict[str, Any]:
    """A ReadWriteMany volume for the cache's claim to bind (no provisioner here)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": STORAGE_CLASS},
        "spec": {
            "capacity": {"storage": f"{int(weights_bytes * 1.2 / 2**30) + 2}Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "hostPath": {"path": f"/tmp/{STORAGE_CLASS}"},
        },
    }


class Bench:
    def __init__(self, kube: Kube, gateway: GatewayProcess, replicas: FakeReplicas) -> None:
        self.kube = kube
        self.gateway = gateway
        self.replicas = replicas

    def running(self, name: str) -> list[dict[str, Any]]:
        return FakeReplicas.running_pods_of(self.kube, NAMESPACE, name)

    def scaled_to_zero(self, name: str) -> bool:
        obj = self.kube.get("inferenceendpoint", name, NAMESPACE)
        cond = condition(obj, "ScaledToZero")
        return bool(cond and cond["status"] == "True" and not self.running(name))

    def fill_seconds(self, name: str, timeout: float) -> float:
        """Wait for the cache to be filled; the loader Job's start -> completion."""

        def filled() -> dict[str, Any] | None:
            cond = condition(self.kube.get("inferenceendpoint", name, NAMESPACE), "ModelCached")
            return cond if cond and cond["status"] == "True" else None

        wait("ModelCached True", filled, timeout, POLL_SECONDS)
        (job,) = self.kube.list("jobs", NAMESPACE, selector="tidal.dev/model-cache")
        status = job["status"]
        return (_time(status["completionTime"]) - _time(status["startTime"])).total_seconds()

    def wake(self, case: str, name: str, round_: int, timeout: float) -> Wake:
        wait(f"{name} scaled to zero", lambda: self.scaled_to_zero(name) or None, 180, 1.0)
        body = {"model": f"{NAMESPACE}/{name}", "messages": [{"role": "user", "content": "hi"}]}
        sent = time.monotonic()
        status, _, answer = post(self.gateway.url + "/v1/chat/completions", body, timeout=timeout)
        waited = time.monotonic() - sent
        if status != 200:
            raise BenchError(f"{name}: the woken request answered {status}: {answer[:300]!r}")
        (pod,) = self.running(name)
        created = _time(pod["metadata"]["creationTimestamp"])
        stamps = {c["type"]: _time(c["lastTransitionTime"]) for c in pod["status"]["conditions"]}
        cold = wait(
            "lastColdStartSeconds",
            lambda: (
                (self.kube.get("inferenceendpoint", name, NAMESPACE) or {}).get("status", {})
            ).get("lastColdStartSeconds"),
            60,
            POLL_SECONDS,
        )
        return Wake(
            case=case,
            round=round_,
            waited_seconds=waited,
            cold_start_seconds=float(cold) if cold is not None else None,
            scheduled_seconds=(stamps["PodScheduled"] - created).total_seconds(),
            ready_seconds=(stamps["Ready"] - stamps["PodScheduled"]).total_seconds(),
        )


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "—"
    return (
        f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"
        if len(values) > 1
        else f"{values[0]:.1f}"
    )


def _median(by_case: dict[str, list[Wake]], case: str, expected: dict[str, float]) -> str:
    overhead = [w.waited_seconds - expected[case] for w in by_case[case]]
    return f"{statistics.median(overhead):.1f}" if overhead else "-"


def report(
    wakes: Sequence[Wake],
    *,
    fills: Sequence[float],
    load: ModelLoad,
    weights_bytes: int,
    command: str,
    wall_seconds: float,
    load_before: tuple[float, float, float],
) -> str:
    gib = weights_bytes / 2**30
    by_case = {c: [w for w in wakes if w.case == c] for c in CASES}
    expected = {c: expected_seconds(load, weights_bytes, cached=c == "cache") for c in CASES}
    rows = []
    for case in CASES:
        got = by_case[case]
        waited = [w.waited_seconds for w in got]
        overhead = [w.waited_seconds - expected[case] for w in got]
        rows.append(
            f"| {LABELS[case]} | {len(got)} | {_spread(waited)} | {expected[case]:.1f} | "
            f"{_spread(overhead)} | "
            f"{_spread([w.ready_seconds for w in got])} | "
            f"{_spread([w.cold_start_seconds for w in got if w.cold_start_seconds is not None])} |"
        )
    download = [w.waited_seconds for w in by_case["download"]]
    cache = [w.waited_seconds for w in by_case["cache"]]
    ratio = (
        statistics.median(download) / statistics.median(cache)
        if download and cache
        else float("nan")
    )
    model_note = f": {MODEL} in bf16" if abs(gib - DEFAULT_WEIGHTS_GIB) < 0.01 else ""
    big = 140 * 10**9
    big_expected = {c: expected_seconds(load, big, cached=c == "cache") for c in CASES}
    lines = [
        MARK_START,
        "## Wake from zero with and without the model cache",
        "",
        f"`{command}` — {len(wakes)} wakes, simulated weights of {weights_bytes:,} bytes "
        f"({gib:.2f} GiB{model_note}); a fresh local cluster (static fleet), the operator and "
        f"the gateway as processes; {wall_seconds / 60:.1f} min wall-clock.",
        "",
        "Each wake: one chat request through the gateway to an endpoint scaled to zero, timed "
        "from sending to the answer (the gateway holds it while the operator scales up, the "
        "scheduler binds, the replica loads). Median (min-max), seconds.",
        "",
        "| Case | Wakes | Request waited | Simulated weights + engine start | Tidal + Kubernetes "
        "(waited - simulated) | Pod scheduled → Ready | `lastColdStartSeconds` |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"- **The cache cuts this wake {ratio:.2f}x** (median against median, same run). The "
        f"cache was filled once by its loader Job in {_spread(list(fills))} s (the simulated "
        f"download of {gib:.2f} GiB at {load.download_mib_per_second:g} MiB/s is "
        f"{weights_bytes / 2**20 / load.download_mib_per_second:.1f} s); no replica downloaded "
        "after that.",
        "- **Tidal's and Kubernetes' share** (the column *waited - simulated*) is what the "
        "operator, the gateway's hold, the scheduler and KWOK add on top of the model's own "
        f"start: median {_median(by_case, 'download', expected)} s without the cache, "
        f"{_median(by_case, 'cache', expected)} s with it.",
        f"- **A 70B model** (140 GB in bf16), from the same rates, not run: "
        f"{big_expected['download']:.0f} s downloading and loading against "
        f"{big_expected['cache']:.0f} s from the cache, before Tidal's share.",
        "",
        "**The simulated parts and the public figures behind them** "
        "(`tidal.devcluster.fleet.ModelLoad`; change them in the fleet file's `modelLoad`):",
        "",
        "| Phase of a real cold start | Rate used | Public figure | Removed by the cache? |",
        "|---|---|---|---|",
        f"| Download the weights (Hub or bucket) | {load.download_mib_per_second:g} MiB/s | "
        "Hub downloads with `hf_transfer`: ~300 MB/s per file on a cloud VM, ~40 MB/s without "
        "it (huggingface_hub issue discussion, 2025); 1.5 GB/s peak per file from S3 with "
        "hf_transfer on a g4dn.metal (huggingface_hub pull request 2989) | **yes**: filled once "
        "per model and namespace, never again per replica or per wake |",
        f"| Read the weights into GPU memory, local disk | {load.local_read_mib_per_second:g} "
        "MiB/s | vLLM's safetensors loader: Llama 3 8B (15 GB) from a gp3 volume in 47.99 s, "
        "from io2 faster (NVIDIA, *Reducing Cold Start Latency for LLM Inference with NVIDIA "
        "Run:ai Model Streamer*, 2025) | replaced by the next row |",
        f"| Read the weights, shared volume | {load.volume_read_mib_per_second:g} MiB/s | "
        "Amazon EFS: 500 MiB/s per client with provisioned throughput, up to 1,500 MiB/s with "
        "elastic throughput (EFS user guide, *Performance specifications*) | what a cached "
        "replica pays instead |",
        f"| Start the engine (CUDA context, torch.compile, CUDA graphs) | "
        f"{load.engine_init_seconds:g} s | tens of seconds for vLLM on an 8B model; vLLM is "
        '"startup-bound" rather than pull-bound (Microsoft, *Dissecting LLM Container '
        "Cold-Start*, 2026) | no |",
        "| Pull the engine image (vLLM: CUDA, torch and libraries, several GB) | not simulated "
        "(KWOK starts containers at once) | 60-180 s for a fresh pull on a fresh node, 50-80 % "
        "of a cold start where weights are local (same sources) | no: a node that ran the "
        "loader has pulled it; image streaming or a pre-pulled node image removes it |",
        "| Provision a GPU node (node autoscaler) | not in this run (static fleet; the elastic "
        "benchmarks measure Karpenter) | a minute or more on a cloud | no |",
        "",
        *spot_loss.busy_note(load_before),
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def stack_for(workdir: Path) -> Iterator[tuple[Kube, GatewayProcess, FakeReplicas]]:
    """A fresh cluster, the CRDs, the gateway and the operator told about it."""
    with contextlib.ExitStack() as stack:
        cluster_dir = workdir.absolute() / "cluster"
        state = stack.enter_context(local_cluster(cluster_dir))
        apply_crds(state, NAMESPACE)
        kube = Kube(state.kubeconfig, Path(state.bin_dir) / "kubectl", workdir=cluster_dir)
        install_access(kube)
        replicas = FakeReplicas(kube, workdir / "pod-addresses.json")
        stack.callback(replicas.close)
        gateway = GatewayProcess.start(
            token_kubeconfig(kube, workdir),
            replicas.map_file,
            workdir / "gateway.log",
            "--cold-start-budget=900",
            "--last-request-interval=1",
        )
        stack.callback(gateway.stop)
        env = {**OPERATOR_ENV, "TIDAL_GATEWAY_URL": gateway.admin_url}
        stack.enter_context(spot_loss.operator(state, workdir / "operator.log", env))
        yield kube, gateway, replicas


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="wakes per case (default 3)")
    parser.add_argument(
        "--weights-gib",
        type=float,
        default=DEFAULT_WEIGHTS_GIB,
        help=f"the simulated weights' size in GiB (default {DEFAULT_WEIGHTS_GIB}: Llama 3.1 8B)",
    )
    spot_loss.output_arguments(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.weights_gib <= 0:
        parser.error("--rounds must be at least 1 and --weights-gib above 0")
    command = "python -m bench.coldstart " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )
    weights = int(args.weights_gib * 2**30)
    load = ModelLoad()  # the static fleet's (its file sets no modelLoad)
    began, load_before = time.monotonic(), os.getloadavg()
    wakes: list[Wake] = []
    fills: list[float] = []
    with contextlib.ExitStack() as outer:
        workdir = args.workdir or Path(outer.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        kube, gateway, replicas = outer.enter_context(stack_for(workdir))
        kube.apply(cache_volume(weights))
        bench = Bench(kube, gateway, replicas)
        timeout = expected_seconds(load, weights, cached=False) * 2 + 120
        for case in CASES:
            name = f"wake-{case}"
            replicas.follow(NAMESPACE, name, Behaviour(model=f"{NAMESPACE}/{name}"))
            kube.apply(endpoint_body(name, case, weights), NAMESPACE)
            if case == "cache":
                fills.append(bench.fill_seconds(name, timeout))
                print(f"cache filled in {fills[-1]:.0f}s", flush=True)
            for round_ in range(1, args.rounds + 1):
                try:
                    w = bench.wake(case, name, round_, timeout)
                except BenchError:
                    print(f"gateway log (tail):\n{gateway.tail(40)}", file=sys.stderr)
                    raise
                wakes.append(w)
                print(
                    f"{case} round {round_}: waited {w.waited_seconds:6.1f}s  "
                    f"scheduled +{w.scheduled_seconds:.0f}s  Ready +{w.ready_seconds:.0f}s  "
                    f"lastColdStartSeconds {w.cold_start_seconds}",
                    flush=True,
                )
            kube.run("delete", "inferenceendpoint", name, "-n", NAMESPACE)
    section = report(
        wakes,
        fills=fills,
        load=load,
        weights_bytes=weights,
        command=command.strip(),
        wall_seconds=time.monotonic() - began,
        load_before=load_before,
    )
    spot_loss.write_section(args.out, section, MARK_START, MARK_END)
    spot_loss.announce(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
