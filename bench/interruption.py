"""Spot interruption with notice: how long an endpoint serves with fewer Ready replicas than it
wants, and how many requests fail through the gateway while a replica hands over to its
replacement.

A benchmark, not a test: it asserts nothing about time and never runs under pytest. It starts
one elastic local cluster for the whole run (`bench.elastic_ready.elastic_cluster`: CPU nodes
only, Karpenter v1.15 with its KWOK cloud provider launching the GPU nodes), applies the CRDs,
runs the operator as a process (`bench.spot_loss.operator`, the elastic benchmark's settings),
and the gateway as a process (`tests.e2e.gateway.GatewayProcess`, authenticated as its own
ServiceAccount with its RBAC, as in the elastic e2e suite: importing the e2e harness is the one
way to run the gateway exactly as the tests do).

What is real and what is simulated:

- Real: the API server, etcd, the kube-scheduler and controller-manager (Deployments,
  ReplicaSets, the disruption controller behind PodDisruptionBudgets), Karpenter (its
  provisioning, and its termination controller draining a node whose NodeClaim was deleted,
  honouring PodDisruptionBudgets), Tidal's operator and gateway.
- Simulated: the GPU nodes (KWOK nodes Karpenter's KWOK provider creates; g6.xlarge, one L4);
  the cloud's interruption (`tidal.devcluster.karpenter.interrupt`: the node is tainted
  `karpenter.sh/disrupted` and annotated with its termination time at once, its NodeClaim
  deleted at once, as Karpenter's interruption handling does; at the deadline the Node and
  NodeClaim are deleted); model loading (a Running pod is Ready `--startup-seconds` later, the
  KWOK stage's delay); the model servers (`tests.fakes.model_server`, one per Running pod on a
  loopback address derived from its pod IP, which the gateway reaches through its
  `--pod-address-map` hook).

The fake replicas are this module's (`Replicas`), not `tests.e2e.gateway.FakeReplicas`: that
one never stops a server whose pod went away (it replaces one only when a new pod takes its
IP), so a deleted replica would go on answering, and it lists pods with kubectl per endpoint.
Here a replica's server

- starts when its pod is Running with an IP (the gateway routes to it only once the pod is
  Ready and not being deleted: `tidal.gateway.routing`);
- keeps serving while its pod is being deleted (the replica's drain: its preStop sleep of
  `runtime.drainSeconds`, 60 s by default, which KWOK plays by removing the pod only once it
  is over, `devcluster/data/kwok.yaml`), and stops when its pod is gone, or when its node's
  instance is *taken*: the Node is gone from the API server or its termination time has
  passed. Stopping is aiohttp's graceful shutdown: no new connections, in-flight requests get
  0.5 s to finish, then they are cut. The requests in flight at that moment are counted, by
  cause.

Consequences to read the failed-request figures with:

- The gateway stops routing to a replica when its watch sees the pod deleted; the requests
  it already has go on during the drain. Requests that reach a stopped server are refused
  before any byte, and the gateway retries those on another replica (counted from its
  `upstream_retries` metric).
- When the instance is taken at the deadline, its server stops the same graceful way, and the
  pod may still be Ready in the API server (Karpenter's termination finalizer holds the Node
  while its drain waits for the PodDisruptionBudget): the gateway keeps routing there and each
  attempt is refused at once, then retried. On a cloud a taken instance does not answer at all:
  each attempt would wait for the gateway's connect timeout before the retry, and streams in
  flight on it would be cut at once, not given 0.5 s. The report gives the requests in flight
  on a replica when its instance was taken: those are the ones a cloud would have cut.

One round: `--concurrency` fresh InferenceEndpoints in a fresh namespace (SpotPreferred, 2
replicas of 1 GPU restricted to NVIDIA-L4, model weights 8 GiB; the elastic fleet's only L4
instance type has one GPU, so each replica gets a node of its own), all Ready (2 live pods
Ready on Karpenter spot L4 nodes, `karpenter.sh/do-not-disrupt` lifted, status Ready), one
request served through the gateway for each; then a steady stream of streaming chat
completions through the gateway to every endpoint (`--rate` per second per endpoint, open
loop with Poisson arrivals, so that the stream does not beat in step with the polls; each 16
tokens at 40 tokens/s), and after `LEAD_SECONDS` one node per endpoint (the
node of one of its two replicas) is interrupted with the round's notice, one after the other
from one thread (`interrupt` records its helper in the cluster's state file, which is not safe
to write from several threads at once). Each endpoint is one trial, its clock starting just
before its own interruption. Every `POLL_SECONDS` the pods and nodes are listed; per trial:

- *below desired*: the time with fewer than 2 *serving* replicas: pods Ready and not being
  deleted (what the API server holds) on a node whose instance has not been taken. The same
  figure from the API server alone (a Ready pod on a taken instance still counts) is reported
  beside it. Each sample holds until the next, so the resolution is one poll;
- *handover marks*, each the first poll that saw it: the node's `karpenter.sh/disrupted`
  taint; a new pod of the endpoint; bound to a node; Running; Ready; the pod on the
  interrupted node no longer live; that Node gone from the API server. Karpenter's extra
  nodes are counted per round (every GPU node that appeared during the handovers);
- *settled*: the Node gone, the leaving pod gone, and exactly 2 live pods, both serving;
- *requests*: those started between the interruption and settled; failed = a status other than
  200, a connection error or timeout (30 s), or a stream without its closing `data: [DONE]`.

Targets: with a notice at least the startup time, 0 s below desired in at least 95 %
of the trials; with a shorter one, at most startup - notice + 5 s in each trial.

Rounds alternate the notices (`--notices`, 120 and 30 s by default), `ceil(--trials /
--concurrency)` rounds each. Between rounds the namespace is deleted, then every NodeClaim,
until no node has `nvidia.com/gpu` allocatable (`bench.elastic_ready.Bench.clean`).
Statistics: p50, p95 and max over the trials (`bench.spot_loss.Spread`).

Everything it starts (cluster, operator, gateway, fake servers, interruption helpers) is
stopped on the way out, on Ctrl-C and SIGTERM too.

Run: `make bench-interruption`, or `python -m bench.interruption [--trials 20]
[--concurrency 10] [--notices 120 30] [--startup-seconds 60] [--rate 2] [--out
docs/benchmarks.md]`. The report replaces this benchmark's section of the output file (between
its markers; placed after the spot-unavailable section when new) and leaves the others alone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import datetime as dt
import inspect
import json
import math
import os
import random
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.gateway import (
    GatewayProcess,
    install_access,
    loopback_for,
    token_kubeconfig,
)
from tests.e2e.kube import Kube
from tests.fakes.model_server import Behaviour, ModelServer, ServerThread

from bench import elastic_ready, spot_loss, spot_unavailable
from bench.elastic_ready import apply_crds, dump, elastic_cluster, is_ready
from bench.spot_loss import (
    Spread,
    busy_note,
    create_all,
    environment_tables,
    write_section_after,
)
from bench.spot_loss import operator as run_operator
from tidal.api.labels import (
    KARPENTER_CAPACITY_TYPE,
    KARPENTER_DISRUPTED_TAINT,
    KARPENTER_DO_NOT_DISRUPT,
    KARPENTER_NODEPOOL,
    LABEL_ENDPOINT,
    SIMULATED_TERMINATION_TIME,
)
from tidal.api.wire import is_deleting, parse_time
from tidal.devcluster import build, cluster, karpenter
from tidal.gateway.config import GatewayConfig
from tidal.gateway.pool import Catalog

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = elastic_ready.GROUP, elastic_ready.VERSION, elastic_ready.PLURAL
REGION = elastic_ready.REGION
REPLICAS = 2
L4 = "NVIDIA-L4"
L4_INSTANCE_TYPE = "g6.xlarge"
INSTANCE_TYPE = elastic_ready.INSTANCE_TYPE
OPERATOR_ENV = elastic_ready.OPERATOR_ENV
POLL_SECONDS = 0.5
# How long the gateway's pool leaves a replica that refused a connection (`tidal.gateway.pool`).
POOL_COOLDOWN_SECONDS = inspect.signature(Catalog).parameters["cooldown_seconds"].default
# The load starts this long before the first interruption, so the gateway's connections are
# warm and every stream is running when the clock starts.
LEAD_SECONDS = 3.0
TOKENS = 16
TOKENS_PER_SECOND = 40.0
REQUEST_TIMEOUT = 30.0
# With a notice shorter than the startup, the target allows startup - notice plus this.
SLACK_SECONDS = 5.0
# A share of trials at 0 s: the target when the notice covers the startup.
ZERO_SHARE_TARGET = 0.95
# How long a round may take after its interruptions, beyond max(notice, startup) + startup.
SETTLE_MARGIN_SECONDS = 180.0
READY_TIMEOUT = 420.0
MARK_START = "<!-- bench:interruption:start -->"
MARK_END = "<!-- bench:interruption:end -->"
# Where a new section goes: after this one's end marker, when the file has it.
AFTER_MARK = spot_unavailable.MARK_END

Object = dict[str, Any]


class BenchError(spot_loss.BenchError):
    """A round could not be run or measured; the message says what was seen."""


# --- pure rules (tests/unit/test_bench_interruption.py) ---------------------------------------


def seconds_below(
    samples: Sequence[tuple[float, int]], desired: int, start: float, end: float
) -> float:
    """How long within [start, end] the sampled count was below `desired`. Each sample (time,
    count), in time order, holds until the next one and the last until `end`; before the first
    sample nothing is counted."""
    total = 0.0
    for i, (at, count) in enumerate(samples):
        until = samples[i + 1][0] if i + 1 < len(samples) else end
        low, high = max(at, start), min(until, end)
        if count < desired and high > low:
            total += high - low
    return total


def bound_seconds(notice: float, startup: float) -> float:
    """The most seconds below desired the target allows a trial: none when the notice covers the
    replica's startup, else startup - notice + `SLACK_SECONDS`."""
    return 0.0 if notice >= startup else startup - notice + SLACK_SECONDS


def failure(status: int, body: bytes) -> str | None:
    """Why a streamed completion failed (None: it did not): a status other than 200, or a
    stream that stopped before its closing `data: [DONE]`."""
    if status != 200:
        return f"HTTP {status}"
    if b"data: [DONE]" not in body:
        return "stream cut"
    return None


@dataclass(frozen=True)
class Nodes:
    """What one poll saw of the nodes."""

    present: frozenset[str]  # in the API server
    taken: frozenset[str]  # their termination time has passed: the instance is gone
    noticed: frozenset[str]  # tainted karpenter.sh/disrupted

    @classmethod
    def of(cls, nodes: Sequence[Object], now: float) -> Nodes:
        return cls(
            present=frozenset(str(n["metadata"]["name"]) for n in nodes),
            taken=frozenset(taken_nodes(nodes, now)),
            noticed=frozenset(
                str(n["metadata"]["name"])
                for n in nodes
                if any(
                    t.get("key") == KARPENTER_DISRUPTED_TAINT
                    for t in (n.get("spec") or {}).get("taints") or []
                )
            ),
        )

    def up(self, node: str) -> bool:
        """The node exists and its instance has not been taken."""
        return node in self.present and node not in self.taken


def taken_nodes(nodes: Sequence[Object], now: float) -> set[str]:
    """Nodes whose (simulated) termination time has passed: their instance is gone, whatever
    the API server still holds."""
    taken = set()
    for node in nodes:
        annotations = node["metadata"].get("annotations") or {}
        at = parse_time(annotations.get(SIMULATED_TERMINATION_TIME))
        if at is not None and at.timestamp() <= now:
            taken.add(str(node["metadata"]["name"]))
    return taken


# --- fake model servers for the pods ----------------------------------------------------------


def pod_name(pod: Mapping[str, Any]) -> str:
    return str(pod["metadata"]["name"])


def pod_uid(pod: Mapping[str, Any]) -> str:
    return str(pod["metadata"]["uid"])


def node_of(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def endpoint_of(pod: Mapping[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_ENDPOINT, ""))


def model_name(namespace: str, endpoint: str) -> str:
    """The model an endpoint serves: the gateway routes by it, so each endpoint has its own."""
    return f"{namespace}/{endpoint}"


def is_live(pod: Mapping[str, Any]) -> bool:
    return not is_deleting(pod) and _phase(pod) not in ("Succeeded", "Failed")


def _phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


@dataclass
class _Server:
    uid: str
    ip: str
    model: str
    server: ModelServer
    stopped: bool = False


class Replicas:
    """A fake model server per Running pod, stopped when its pod goes or its instance is taken
    (see the module docstring), and the address map the gateway reads."""

    def __init__(self, map_file: Path) -> None:
        self.map_file = map_file
        self.thread = ServerThread()
        # Stopping waits up to aiohttp's shutdown timeout: off the poll loop.
        self.stopper = concurrent.futures.ThreadPoolExecutor(max_workers=4)
        self.by_uid: dict[str, _Server] = {}
        # Requests in flight on a server when it was stopped, by model and cause.
        self.in_flight_at_stop: dict[tuple[str, str], int] = collections.Counter()
        self._write()

    def sync(self, namespace: str, pods: Sequence[Object], nodes: Nodes) -> None:
        listed = {pod_uid(p): p for p in pods}
        for uid, record in list(self.by_uid.items()):
            pod = listed.get(uid)
            if pod is None or _phase(pod) in ("Succeeded", "Failed"):
                self._stop(record, "removed")  # a pod being deleted drains: it keeps serving
            elif not nodes.up(node_of(pod)):
                self._stop(record, "taken")
            if pod is None:
                del self.by_uid[uid]
        for uid, pod in listed.items():
            ip = str((pod.get("status") or {}).get("podIP") or "")
            node = node_of(pod)
            if (
                uid in self.by_uid
                or not ip
                or not is_live(pod)
                or (pod.get("status") or {}).get("phase") != "Running"
                or not nodes.up(node)
            ):
                continue
            model = model_name(namespace, endpoint_of(pod))
            server = self.thread.start(
                Behaviour(model=model, tokens=TOKENS, tokens_per_second=TOKENS_PER_SECOND),
                host=loopback_for(ip),
            )
            self.by_uid[uid] = _Server(uid, ip, model, server)
        self._write()

    def _stop(self, record: _Server, cause: str) -> None:
        if record.stopped:
            return
        record.stopped = True
        if record.server.in_flight:
            self.in_flight_at_stop[(record.model, cause)] += record.server.in_flight
        self.stopper.submit(self.thread.stop, record.server)

    def stop_all(self) -> None:
        for record in self.by_uid.values():
            self._stop(record, "cleanup")
        self.by_uid.clear()
        self._write()

    def _write(self) -> None:
        # A stopped server keeps its entry while its pod exists: the gateway may still route
        # there (the pod can be Ready in the API server), and then it is refused, as a dead
        # process's port would be. A running server wins an address over a stopped one.
        mapping: dict[str, str] = {}
        for record in sorted(self.by_uid.values(), key=lambda r: not r.stopped):
            mapping[record.ip] = record.server.address
        partial = self.map_file.with_suffix(".tmp")
        partial.write_text(json.dumps(mapping))
        partial.replace(self.map_file)  # atomic: the gateway never reads half a file

    def close(self) -> None:
        self.stopper.shutdown(wait=True, cancel_futures=False)
        self.thread.close()


# --- the load through the gateway -------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    started: float  # monotonic
    failed: str | None  # why, or None


class Load:
    """Open-loop streaming chat completions through the gateway, Poisson arrivals at `rate`
    per second per model (seeded), on an event loop in a thread of its own."""

    def __init__(self, gateway_url: str, rate: float, seed: int = 14) -> None:
        self.url = gateway_url + "/v1/chat/completions"
        self.rate = rate
        self.random = random.Random(seed)
        self.outcomes: dict[str, list[Outcome]] = collections.defaultdict(list)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession | None = None
        self._drivers: list[asyncio.Task[None]] = []
        self._requests: set[asyncio.Task[None]] = set()

    def _call(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            )
        return self._session

    async def _one(self, model: str) -> str | None:
        session = await self._ensure_session()
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "interruption benchmark"}],
            "stream": True,
            "max_tokens": TOKENS,
        }
        try:
            async with session.post(self.url, json=body) as response:
                return failure(response.status, await response.read())
        except TimeoutError:
            return "timeout"
        except aiohttp.ClientError as exc:
            return type(exc).__name__

    def first_success(self, model: str, timeout: float) -> None:
        """Block until one request for `model` is served (the gateway knows the endpoint, its
        pods and their servers); BenchError with the last failure otherwise."""
        deadline = time.monotonic() + timeout
        last: str | None = "not tried"
        while time.monotonic() < deadline:
            last = self._call(self._one(model), REQUEST_TIMEOUT + 5)
            if last is None:
                return
            time.sleep(0.5)
        raise BenchError(f"{model}: no request served through the gateway ({last})")

    def start(self, models: Sequence[str]) -> None:
        async def begin() -> None:
            for model in models:
                self._drivers.append(asyncio.create_task(self._drive(model)))

        self._call(begin(), 10)

    async def _drive(self, model: str) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            task = asyncio.create_task(self._record(model))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
            due += self.random.expovariate(self.rate)
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def _record(self, model: str) -> None:
        started = time.monotonic()
        why = await self._one(model)
        self.outcomes[model].append(Outcome(started, why))

    def stop(self) -> dict[str, list[Outcome]]:
        """Stop sending, let the requests in flight finish; every outcome so far, by model."""

        async def end() -> None:
            for task in self._drivers:
                task.cancel()
            await asyncio.gather(*self._drivers, return_exceptions=True)
            self._drivers.clear()
            await asyncio.gather(*list(self._requests), return_exceptions=True)

        self._call(end(), REQUEST_TIMEOUT + 10)
        outcomes = {k: list(v) for k, v in self.outcomes.items()}
        self.outcomes.clear()
        return outcomes

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def end() -> None:
            for task in [*self._drivers, *self._requests]:
                task.cancel()
            if self._session is not None:
                await self._session.close()

        with contextlib.suppress(Exception):
            self._call(end(), 15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


# --- one trial's observations -----------------------------------------------------------------


@dataclass
class Watch:
    """One endpoint through its interruption: samples, and the moments of the handover
    (monotonic; None until seen)."""

    name: str
    model: str
    victim: str  # the interrupted node
    leaving: str  # the uid of the replica on it
    initial: frozenset[str]  # the uids of the replicas before the notice
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (at, api, serving)
    started: float | None = None  # just before its interruption
    deadline: float | None = None  # when the instance is taken
    noticed: float | None = None  # the node's karpenter.sh/disrupted taint seen
    replacement_created: float | None = None
    replacement_bound: float | None = None  # to a node
    replacement_running: float | None = None
    replacement_ready: float | None = None
    leaving_gone: float | None = None
    node_gone: float | None = None
    settled: float | None = None

    def observe(self, at: float, pods: Sequence[Object], nodes: Nodes) -> None:
        live = [p for p in pods if is_live(p)]
        api = sum(1 for p in live if is_ready(p))
        serving = sum(1 for p in live if is_ready(p) and nodes.up(node_of(p)))
        self.samples.append((at, api, serving))
        if self.started is None:
            return
        new = [p for p in live if pod_uid(p) not in self.initial]
        if self.noticed is None and self.victim in nodes.noticed:
            self.noticed = at
        if self.replacement_created is None and new:
            self.replacement_created = at
        if self.replacement_bound is None and any(node_of(p) for p in new):
            self.replacement_bound = at
        if self.replacement_running is None and any(
            (p.get("status") or {}).get("phase") == "Running" for p in new
        ):
            self.replacement_running = at
        if self.replacement_ready is None and any(is_ready(p) for p in new):
            self.replacement_ready = at
        if self.leaving_gone is None and self.leaving not in {pod_uid(p) for p in live}:
            self.leaving_gone = at
        if self.node_gone is None and self.victim not in nodes.present:
            self.node_gone = at
        if (
            self.settled is None
            and self.node_gone is not None
            and self.leaving_gone is not None
            and len(live) == serving == REPLICAS
        ):
            self.settled = at


@dataclass(frozen=True)
class Trial:
    notice: float
    round: int
    endpoint: str
    below_seconds: float  # fewer than REPLICAS serving
    api_below_seconds: float  # fewer than REPLICAS Ready per the API server alone
    fewest_serving: int
    settled: bool
    window_seconds: float  # interruption -> settled (or the round's timeout)
    noticed: float | None
    replacement_created: float | None
    replacement_bound: float | None
    replacement_running: float | None
    replacement_ready: float | None
    leaving_gone: float | None
    node_gone: float | None
    requests: int
    failed: int
    failures: dict[str, int]
    failed_before: int  # requests started before the interruption that failed
    retries: int  # the gateway's upstream retries for the endpoint during the round
    in_flight_taken: int  # on the leaving replica's server when its instance was taken
    in_flight_removed: int  # on a server when its pod was deleted


def trial_of(
    watch: Watch,
    *,
    notice: float,
    round_: int,
    end: float,
    outcomes: Sequence[Outcome],
    retries: int,
    in_flight: Mapping[tuple[str, str], int],
) -> Trial:
    started = watch.started
    if started is None:
        raise BenchError(f"{watch.name}: never interrupted")
    until = watch.settled if watch.settled is not None else end
    api = [(at, a) for at, a, _ in watch.samples]
    serving = [(at, s) for at, _, s in watch.samples]
    during = [o for o in outcomes if started <= o.started <= until]
    kinds = collections.Counter(o.failed for o in during if o.failed is not None)

    def since(at: float | None) -> float | None:
        return None if at is None else at - started

    return Trial(
        notice=notice,
        round=round_,
        endpoint=watch.name,
        below_seconds=seconds_below(serving, REPLICAS, started, until),
        api_below_seconds=seconds_below(api, REPLICAS, started, until),
        fewest_serving=min((s for at, s in serving if started <= at <= until), default=0),
        settled=watch.settled is not None,
        window_seconds=until - started,
        noticed=since(watch.noticed),
        replacement_created=since(watch.replacement_created),
        replacement_bound=since(watch.replacement_bound),
        replacement_running=since(watch.replacement_running),
        replacement_ready=since(watch.replacement_ready),
        leaving_gone=since(watch.leaving_gone),
        node_gone=since(watch.node_gone),
        requests=len(during),
        failed=sum(kinds.values()),
        failures=dict(kinds),
        failed_before=sum(1 for o in outcomes if o.started < started and o.failed is not None),
        retries=retries,
        in_flight_taken=in_flight.get((watch.model, "taken"), 0),
        in_flight_removed=in_flight.get((watch.model, "removed"), 0),
    )


# --- the bench --------------------------------------------------------------------------------


def endpoint_body(name: str, namespace: str) -> Object:
    """SpotPreferred, 2 replicas of one L4 each (weights that fit it), in `REGION`."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceEndpoint",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": model_name(namespace, name), "weightsGiB": 8},
            "gpu": {"count": 1, "products": [L4]},
            "capacity": {"policy": "SpotPreferred"},
            "residency": {"regions": [REGION]},
            "scaling": {"minReplicas": REPLICAS, "maxReplicas": REPLICAS},
        },
    }


def retries_by_endpoint(metrics: str) -> dict[str, float]:
    """The gateway's `tidal_gateway_upstream_retries` counter, by endpoint key."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        if family.name == "tidal_gateway_upstream_retries":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found[sample.labels.get("tidal_endpoint", "")] = sample.value
    return found


class Bench(spot_unavailable.Bench):
    """One elastic cluster, one operator, one gateway, the rounds (reads and cleaning are the
    elastic benchmark's, Events and their dump the spot-unavailable one's)."""

    def __init__(
        self,
        state: cluster.ClusterState,
        operator_pid: int,
        *,
        gateway: GatewayProcess,
        replicas: Replicas,
        load: Load,
        interrupter: concurrent.futures.ThreadPoolExecutor,
        startup_seconds: float,
    ) -> None:
        super().__init__(state, operator_pid)
        self.gateway = gateway
        self.replicas = replicas
        self.load = load
        self.interrupter = interrupter
        self.startup_seconds = startup_seconds
        self.interrupt_spread: list[float] = []
        # Per round: (notice, interruptions, GPU nodes Karpenter launched during the handover).
        self.launched: list[tuple[float, int, int]] = []
        self.static_nodes = {str(n["metadata"]["name"]) for n in self.nodes()}

    def poll(self, namespace: str) -> tuple[float, list[Object], Nodes]:
        """(when, the namespace's pods, the nodes); the fake servers follow."""
        at = time.monotonic()
        pods = self.pods(namespace)
        nodes = Nodes.of(self.nodes(), time.time())
        self.replicas.sync(namespace, pods, nodes)
        return at, pods, nodes

    def round(self, round_: int, notice: float, size: int) -> list[Trial]:
        namespace = f"interruption-{int(notice)}s-r{round_}"
        names = [f"ep-{i:02d}" for i in range(size)]
        if gpu := self.gpu_nodes():
            raise BenchError(f"{len(gpu)} GPU nodes before the round: {', '.join(gpu)}")
        cluster.kubectl(self.state, "create", "namespace", namespace)
        outcomes: dict[str, list[Outcome]] | None = None
        interrupted = False
        try:
            create_all(self.state, [endpoint_body(n, namespace) for n in names])
            watches = self.wait_ready(namespace, names)
            for watch in watches:
                self.load.first_success(watch.model, timeout=60)
            retries_before = retries_by_endpoint(self.gateway.metrics())
            self.load.start([w.model for w in watches])
            time.sleep(LEAD_SECONDS)
            end = self.handover(namespace, watches, notice)
            outcomes = self.load.stop()
            retries_after = retries_by_endpoint(self.gateway.metrics())
            in_flight = dict(self.replicas.in_flight_at_stop)
        except (spot_loss.BenchError, cluster.ClusterError):
            self.dump_events(namespace)
            raise
        except (KeyboardInterrupt, SystemExit):
            interrupted = True  # the cluster goes down next: no cleaning, no waiting
            raise
        finally:
            if outcomes is None and not interrupted:
                self.load.stop()
            self.replicas.stop_all()
            self.replicas.in_flight_at_stop.clear()
            if not interrupted:
                self.clean(namespace)
        trials = []
        for watch in watches:
            key = f"{namespace}/{watch.name}"
            trials.append(
                trial_of(
                    watch,
                    notice=notice,
                    round_=round_,
                    end=end,
                    outcomes=outcomes.get(watch.model, []),
                    retries=int(retries_after.get(key, 0) - retries_before.get(key, 0)),
                    in_flight=in_flight,
                )
            )
        return trials

    def wait_ready(self, namespace: str, names: Sequence[str]) -> list[Watch]:
        """Every endpoint at rest: 2 live pods Ready on Karpenter spot L4 nodes of their own,
        their do-not-disrupt protection lifted, status Ready. One Watch per endpoint."""
        deadline = time.monotonic() + READY_TIMEOUT
        seen = "nothing"
        while time.monotonic() < deadline:
            _, pods, _ = self.poll(namespace)
            nodes = {str(n["metadata"]["name"]): n for n in self.nodes()}
            endpoints = {str(e["metadata"]["name"]): e for e in self.endpoints(namespace)}
            by_endpoint: dict[str, list[Object]] = collections.defaultdict(list)
            for pod in pods:
                if is_live(pod):
                    by_endpoint[endpoint_of(pod)].append(pod)
            at_rest = [n for n in names if self.at_rest(by_endpoint[n], endpoints.get(n), nodes)]
            seen = f"{len(at_rest)}/{len(names)} endpoints at rest"
            if len(at_rest) == len(names):
                watches = []
                for name in names:
                    mine = sorted(by_endpoint[name], key=pod_name)
                    watches.append(
                        Watch(
                            name=name,
                            model=model_name(namespace, name),
                            victim=node_of(mine[0]),
                            leaving=pod_uid(mine[0]),
                            initial=frozenset(pod_uid(p) for p in mine),
                        )
                    )
                return watches
            time.sleep(1.0)
        raise BenchError(f"{namespace}: not at rest after {READY_TIMEOUT:.0f}s ({seen})")

    @staticmethod
    def at_rest(
        pods: Sequence[Object], endpoint: Object | None, nodes: Mapping[str, Object]
    ) -> bool:
        if endpoint is None or not is_ready(endpoint) or len(pods) != REPLICAS:
            return False
        hosts = {node_of(p) for p in pods}
        if len(hosts) != REPLICAS:
            return False
        for pod in pods:
            labels = (nodes.get(node_of(pod)) or {}).get("metadata", {}).get("labels") or {}
            annotations = pod["metadata"].get("annotations") or {}
            if (
                not is_ready(pod)
                or labels.get(KARPENTER_CAPACITY_TYPE) != "spot"
                or KARPENTER_NODEPOOL not in labels
                or labels.get(INSTANCE_TYPE) != L4_INSTANCE_TYPE
                or annotations.get(KARPENTER_DO_NOT_DISRUPT) == "true"
            ):
                return False
        return True

    def interrupt_all(self, watches: Sequence[Watch], notice: float) -> None:
        """One interruption per endpoint, one after the other (runs on the interrupter thread,
        which lives as long as the run: the helpers that take the nodes die with it)."""
        first = time.monotonic()
        for watch in watches:
            began = time.monotonic()
            done = karpenter.interrupt(
                Path(self.state.workdir),
                watch.victim,
                notice,
                bind_to_parent=True,
                progress=lambda _: None,
            )
            watch.deadline = time.monotonic() + (done.deadline - time.time())
            watch.started = began
        self.interrupt_spread.append(time.monotonic() - first)

    def handover(self, namespace: str, watches: Sequence[Watch], notice: float) -> float:
        """Interrupt, then sample until every trial settled (or the timeout); the end time."""
        before = set(self.gpu_nodes())
        seen: set[str] = set()
        future = self.interrupter.submit(self.interrupt_all, watches, notice)
        timeout = max(notice, self.startup_seconds) + self.startup_seconds + SETTLE_MARGIN_SECONDS
        deadline = time.monotonic() + timeout
        while True:
            at, pods, nodes = self.poll(namespace)
            seen |= nodes.present
            by_endpoint: dict[str, list[Object]] = collections.defaultdict(list)
            for pod in pods:
                by_endpoint[endpoint_of(pod)].append(pod)
            for watch in watches:
                watch.observe(at, by_endpoint[watch.name], nodes)
            if future.done():
                future.result()  # an interruption that failed stops the run
                if all(w.settled is not None for w in watches):
                    break
            if time.monotonic() > deadline:
                late = [w.name for w in watches if w.settled is None]
                print(
                    f"{namespace}: {len(late)} trials not settled after {timeout:.0f}s: "
                    f"{', '.join(late)}",
                    file=sys.stderr,
                    flush=True,
                )
                break
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - at)))
        # CPU nodes never come and go: every new node is a GPU node Karpenter launched.
        self.launched.append((notice, len(watches), len(seen - before - self.static_nodes)))
        return at


# --- the report -------------------------------------------------------------------------------


def report(
    trials: Sequence[Trial],
    *,
    command: str,
    notices: Sequence[float],
    requested: int,
    concurrency: int,
    startup_seconds: float,
    rate: float,
    wall_seconds: float,
    cluster_seconds: float,
    interrupt_spread: Sequence[float],
    launched: Sequence[tuple[float, int, int]],
    load_before: tuple[float, float, float],
) -> str:
    settings = ", ".join(f"`{k}={v}`" for k, v in sorted(OPERATOR_ENV.items()))

    def spread(values: Sequence[float]) -> str:
        if len(values) < 2:
            return " / ".join([f"{values[0]:.1f}"] * 3) if values else "—"
        s = Spread.of(values)
        return f"{s.p50:.1f} / {s.p95:.1f} / {s.maximum:.1f}"

    def marks(values: Sequence[float | None]) -> str:
        seen = [v for v in values if v is not None]
        missing = len(values) - len(seen)
        return spread(seen) + (f" ({missing} never)" if missing else "")

    rows = []
    timeline = []
    verdicts = []
    details = []
    for notice in notices:
        group = [t for t in trials if t.notice == notice]
        if not group:
            continue
        bound = bound_seconds(notice, startup_seconds)
        within = [t for t in group if t.settled and t.below_seconds <= bound]
        requests = sum(t.requests for t in group)
        failed = sum(t.failed for t in group)
        share = len(within) / len(group)
        rows.append(
            f"| {notice:g} s | {len(group)} | **{spread([t.below_seconds for t in group])}** | "
            f"{bound:g} s | **{len(within)}/{len(group)} ({share:.0%})** | "
            f"{spread([t.api_below_seconds for t in group])} | "
            f"{min(t.fewest_serving for t in group)} | **{failed}/{requests}** | "
            f"{sum(t.retries for t in group)} | {sum(t.in_flight_taken for t in group)} |"
        )
        timeline.append(
            f"| {notice:g} s | {marks([t.noticed for t in group])} | "
            f"{marks([t.replacement_created for t in group])} | "
            f"{marks([t.replacement_bound for t in group])} | "
            f"{marks([t.replacement_running for t in group])} | "
            f"{marks([t.replacement_ready for t in group])} | "
            f"{marks([t.leaving_gone for t in group])} | {marks([t.node_gone for t in group])} | "
            f"{spread([t.window_seconds for t in group])} |"
        )
        loading = [
            t.replacement_ready - t.replacement_running
            for t in group
            if t.replacement_ready is not None and t.replacement_running is not None
        ]
        reacting = [
            t.replacement_created - t.noticed
            for t in group
            if t.replacement_created is not None and t.noticed is not None
        ]
        if notice >= startup_seconds:
            met = share >= ZERO_SHARE_TARGET
            goal = f"0 s in ≥ {ZERO_SHARE_TARGET:.0%} of trials"
        else:
            met = len(within) == len(group)
            goal = (
                f"≤ {bound:g} s (startup {startup_seconds:g} - notice {notice:g} + "
                f"{SLACK_SECONDS:g}) in every trial"
            )
        verdicts.append(
            f"- {notice:g} s notice: {goal}: **{'met' if met else 'not met'}** "
            f"({len(within)} of {len(group)} trials within it)."
        )
        kinds: collections.Counter[str] = collections.Counter()
        for t in group:
            kinds.update(t.failures)
        unsettled = [f"r{t.round} {t.endpoint}" for t in group if not t.settled]
        nodes = [(n, k) for w, n, k in launched if w == notice]
        details += [
            f"- {notice:g} s: taint seen -> replacement created (the operator's reaction, to a "
            f"poll): {spread(reacting)} s; replacement running -> Ready (the simulated "
            f"{startup_seconds:g} s load and KWOK's stage latency): {spread(loading)} s.",
            f"- {notice:g} s: Karpenter launched "
            + " + ".join(str(k) for _, k in nodes)
            + f" GPU nodes during the handovers of {sum(n for n, _ in nodes)} interruptions "
            f"({len(nodes)} round{'' if len(nodes) == 1 else 's'}): besides the node for the "
            "operator's replacement, it provisions ahead for the pod of the node it drains.",
            f"- {notice:g} s, per trial, below desired (s): "
            + ", ".join(f"{t.below_seconds:.1f}" for t in group)
            + "; per the API server alone: "
            + ", ".join(f"{t.api_below_seconds:.1f}" for t in group)
            + ".",
            f"- {notice:g} s, failed requests by kind: "
            + (", ".join(f"{k} x {v}" for k, v in sorted(kinds.items())) or "none")
            + f"; failed before the interruption (not counted): "
            f"{sum(t.failed_before for t in group)}; requests in flight on a replica when its "
            f"pod was deleted (its server given 0.5 s to finish them): "
            f"{sum(t.in_flight_removed for t in group)}"
            + (f"; **not settled in time**: {', '.join(unsettled)}" if unsettled else "")
            + ".",
        ]
    lines = [
        MARK_START,
        "## Spot interruption with notice -> time below desired, requests failed through the "
        "gateway",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}` "
        f"({len(trials)} trials"
        + (
            f" of the {requested * len(notices)} asked for"
            if len(trials) != requested * len(notices)
            else ""
        )
        + f", {concurrency} endpoints at a time, {wall_seconds / 60:.1f} min in all; the "
        f"elastic local cluster took {cluster_seconds:.0f} s to start).",
        "",
        "One elastic local cluster (CPU nodes only; Karpenter v1.15 with its KWOK cloud provider "
        "makes the GPU nodes, `operator/tidal/devcluster/data/elastic.yaml`), Tidal's operator "
        "and gateway as processes. Each round: fresh InferenceEndpoints (SpotPreferred, "
        f"{REPLICAS} replicas of 1 {L4} in {REGION}: one g6.xlarge node per replica), all "
        "Ready; a stream of streaming chat completions through the gateway to each "
        f"(Poisson arrivals, {rate:g}/s, {TOKENS} tokens each at {TOKENS_PER_SECOND:g}/s); then "
        "one node per endpoint "
        "is given an interruption notice (`tidal dev interrupt`: tainted "
        "`karpenter.sh/disrupted`, its NodeClaim deleted so Karpenter drains it honouring the "
        "endpoint's PodDisruptionBudget; at the deadline the Node and NodeClaim are deleted). "
        "One endpoint = one trial, timed from just before its own interruption (the "
        "interruptions of a round went out within "
        f"{max(interrupt_spread, default=0):.1f} s of each other). Replicas are Ready "
        f"{startup_seconds:g} s after they start running. *Below desired*: the time with fewer "
        f"than {REPLICAS} serving replicas (pods Ready and not being deleted, on a node whose "
        "instance has not been taken: the Node is gone or its termination time has passed), "
        f"sampled every {POLL_SECONDS:g} s until the trial settled (the node gone, the leaving "
        f"pod gone, {REPLICAS} live pods, both serving). Requests count from the interruption "
        "until settled; failed: not 200, a connection error or timeout, or a stream without its "
        f"closing `data: [DONE]`. Operator settings: {settings}.",
        "",
        "| notice | trials | below desired (s) p50 / p95 / max | bound per trial | trials "
        "within it | below desired per the API server alone (s) p50 / p95 / max | fewest "
        "serving | failed / total requests | gateway retries (hidden) | requests in flight on "
        "a replica when its instance was taken |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Targets:",
        *verdicts,
        "",
        "Handover, seconds after the notice (p50 / p95 / max; from the polls; the clock starts "
        "before the harness's own kubectl calls that annotate and taint the node):",
        "",
        "| notice | taint seen | replacement pod created | bound to a node | running | Ready "
        "| leaving pod gone | node gone from the API server | settled |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *timeline,
        "",
        *details,
        "",
        "What is simulated, and what that does to the figures: the GPU nodes are KWOK's; the "
        "model servers are fake (`tests.fakes.model_server`), one per Running pod, serving "
        "through its pod's drain (the preStop sleep of `runtime.drainSeconds`, 60 s, which "
        "KWOK plays before it removes the pod) and stopped when the pod is gone or its "
        "instance taken (aiohttp's graceful stop: in-flight requests get 0.5 s). The gateway "
        "routes no new request to a pod being deleted. A request the gateway sends to "
        "a stopped server is refused before any byte and retried on the other replica: those "
        "are the *gateway retries*, invisible to clients (a replica that refused sits out "
        f"{POOL_COOLDOWN_SECONDS:g} s, hence about one retry per {POOL_COOLDOWN_SECONDS:g} s "
        "while the pod of a taken instance is still Ready). On a cloud a taken instance does "
        "not refuse, it stays silent: each such attempt would wait for the gateway's connect "
        f"timeout ({GatewayConfig.connect_timeout_seconds:g} s) before its retry, and the "
        "requests in flight on it (last column) would be cut. *Per the API server alone*: a "
        "Ready pod whose instance was taken still counts as Ready until the Node goes "
        "(Karpenter's termination finalizer keeps it while the drain waits for the "
        "PodDisruptionBudget).",
        "",
        "Percentiles interpolate linearly between closest ranks.",
        *busy_note(load_before),
        *environment_tables(load_before),
        f"| Karpenter (KWOK provider) | {build.KARPENTER_VERSION} |",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def write(out: Path, section: str) -> None:
    """Replace this benchmark's section of `out`; a new one goes after the spot-unavailable
    section (appended when the file has none)."""
    write_section_after(out, section, MARK_START, MARK_END, AFTER_MARK)


# --- running it -------------------------------------------------------------------------------


@contextlib.contextmanager
def stopped_on(signum: int) -> Iterator[None]:
    """`signum` ends the run through the ExitStack (SystemExit), as Ctrl-C does."""

    def leave(_: int, __: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signum, leave)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def plan(notices: Sequence[float], trials: int, concurrency: int) -> list[tuple[int, float, int]]:
    """(round, notice, endpoints) in run order: the notices alternate round by round."""
    rounds = math.ceil(trials / concurrency)
    sizes = [min(concurrency, trials - r * concurrency) for r in range(rounds)]
    return [(r, notice, sizes[r]) for r in range(rounds) for notice in notices]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.interruption", description=__doc__)
    parser.add_argument("--trials", type=int, default=20, help="per notice")
    parser.add_argument("--concurrency", type=int, default=10, help="endpoints per round")
    parser.add_argument("--notices", type=float, nargs="+", default=[120.0, 30.0])
    spot_loss.startup_argument(parser, 60.0)
    parser.add_argument("--rate", type=float, default=2.0, help="requests/s per endpoint")
    spot_loss.output_arguments(parser)
    args = parser.parse_args(argv)
    if args.trials < 2 or args.concurrency < 1 or args.rate <= 0:
        parser.error("--trials must be at least 2, --concurrency at least 1, --rate above 0")
    command = "python -m bench.interruption " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )

    began, load_before = time.monotonic(), os.getloadavg()
    trials: list[Trial] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(stopped_on(signal.SIGTERM))
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        cluster_dir = workdir.absolute() / "cluster"
        state = stack.enter_context(elastic_cluster(cluster_dir, args.startup_seconds))
        cluster_seconds = time.monotonic() - began
        apply_crds(state)
        kube = Kube(state.kubeconfig, Path(state.bin_dir) / "kubectl", workdir=cluster_dir)
        install_access(kube)
        replicas = Replicas(workdir / "pod-addresses.json")
        stack.callback(replicas.close)
        gateway = GatewayProcess.start(
            token_kubeconfig(kube, workdir), replicas.map_file, workdir / "gateway.log"
        )
        stack.callback(gateway.stop)
        log = workdir / "operator.log"
        proc = stack.enter_context(run_operator(state, log, OPERATOR_ENV))
        load = Load(gateway.url, args.rate)
        stack.callback(load.close)
        # Lives for the whole run: the interruption helpers are bound to the thread that
        # started them.
        interrupter = stack.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        bench = Bench(
            state,
            proc.pid,
            gateway=gateway,
            replicas=replicas,
            load=load,
            interrupter=interrupter,
            startup_seconds=args.startup_seconds,
        )
        for round_, notice, size in plan(args.notices, args.trials, args.concurrency):
            try:
                done = bench.round(round_, notice, size)
            except (spot_loss.BenchError, cluster.ClusterError):
                dump(state, cluster_dir, log)
                print(f"gateway log (tail):\n{gateway.tail(40)}", file=sys.stderr)
                raise
            trials += done
            for t in done:
                print(
                    f"notice {notice:g}s round {round_} {t.endpoint}: below "
                    f"{t.below_seconds:5.1f}s (api {t.api_below_seconds:5.1f}s)  "
                    f"tainted +{t.noticed or float('nan'):4.1f}s  "
                    f"replacement created +{t.replacement_created or float('nan'):4.1f}s "
                    f"running +{t.replacement_running or float('nan'):4.1f}s "
                    f"Ready +{t.replacement_ready or float('nan'):5.1f}s  "
                    f"leaving gone +{t.leaving_gone or float('nan'):5.1f}s  "
                    f"failed {t.failed}/{t.requests} {t.failures or ''}  retries {t.retries}  "
                    f"cut {t.in_flight_taken}{'' if t.settled else '  NOT SETTLED'}",
                    flush=True,
                )
    section = report(
        trials,
        command=command.strip(),
        notices=args.notices,
        requested=args.trials,
        concurrency=args.concurrency,
        startup_seconds=args.startup_seconds,
        rate=args.rate,
        wall_seconds=time.monotonic() - began,
        cluster_seconds=cluster_seconds,
        interrupt_spread=bench.interrupt_spread,
        launched=bench.launched,
        load_before=load_before,
    )
    write(args.out, section)
    spot_loss.announce(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
