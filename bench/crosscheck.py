"""Live cross-check of the economics simulator: one Auto endpoint under a steady simulated load on
the elastic fleet (real Karpenter, its KWOK cloud provider), through a spot crunch and back, with
the mix and the dollars the nodes Karpenter chose cost, side by side with what the simulator
(`bench.economics.simulate`, driving the operator's own `decide`) predicts for the same endpoint,
load and timeline.

A benchmark, not a test: it asserts nothing about time and never runs under pytest. It starts
one elastic local cluster (`bench.elastic_ready.elastic_cluster`), applies the CRDs and runs the
operator as a process with the elastic benchmark's settings, the spot hysteresis shortened to
`RETURN_AFTER_SECONDS` (both sides use it), and `TIDAL_GATEWAY_URLS` pointing at a *simulated
gateway*: a local HTTP server answering `GET /internal/inflight` with the real report format
(`tidal.api.signals.GatewayReport`) and a constant `IN_FLIGHT` requests in flight for the
endpoint. That is the signal the operator scales on; no request is served (KWOK's replicas serve
nothing).

The live run, clock from just before the endpoint's create, one sample every `SAMPLE_SECONDS`:

1. *steady*: the endpoint (`endpoint_body`: Auto, interruption budget `BUDGET_PERCENT` %, one L4
   GPU, `REGION`) is created; the run waits until it has settled (status at its generation,
   every desired replica Ready, the pods on nodes whose capacity type matches the status' split)
   and holds `HOLD_SECONDS`;
2. *crunch*: spot runs out in the region (`tidal.devcluster.karpenter.set_spot`: its spot
   offerings leave Karpenter's instance-types file, Karpenter restarts), then every spot node
   holding one of the endpoint's replicas is interrupted with `NOTICE_SECONDS` notice
   (`karpenter.interrupt`: tainted, its NodeClaim deleted, taken at the deadline). The run waits
   until the endpoint has settled with no spot replica and at least `CRUNCH_SECONDS` have passed
   since the crunch began;
3. *after*: spot is available again (`set_spot(..., available=True)`); the run waits until the
   endpoint has settled with spot replicas again (or `--after-timeout` passes: then it says so)
   and holds `HOLD_SECONDS`.

Each sample records Ready replicas per capacity type of the node they run on (the node's
`karpenter.sh/capacity-type`), the $/h of the nodes holding the endpoint's pods and of every GPU
node Karpenter launched (each priced from the instance-types file Tidal gave Karpenter, by
instance type, capacity type and zone; Karpenter's own `eks-node-viewer/instance-price` label is
checked against it), and the operator's `status.replicas` and `status.cost.hourlyUSD`.

The prediction (`predict`): a `Scenario` with the same endpoint (`Workload.spec()` with the
live spec's budget and scaling), the same demand (`IN_FLIGHT` in flight: rate x latency), a
fleet of one-GPU L4 nodes in the region (what Karpenter launches for it: g6.xlarge) deep enough
that capacity never binds in calm times, the live run's own timeline (the crunch's start, the
interruption, its end, in seconds from the create) and the live run's median pod cold start
(created -> Ready, Karpenter's launch included). The crunch is played as the simulator plays
capacity: the spot nodes that hold no replica go at the crunch's start (no capacity), the ones
that do get the notice at the interruption and go at its deadline, and all come back at the
crunch's end. Which ones hold replicas comes from a first pass without the crunch (the
simulation is deterministic, so the second pass is the same until then).

Owns: the simulated gateway, the live sampling and pricing, the crunch as the simulator plays
it, and the report. Must not: change `bench.economics` (it subclasses `TidalStrategy`, whose
cluster and endpoint state `_Recorder` reads, and `Workload`, to carry Auto's budget) or decide
anything itself: both sides' mixes are the operator's `decide`.

Run: `make bench-crosscheck`, or `python -m bench.crosscheck [--startup-seconds 5]
[--out docs/benchmarks.md]`. The report replaces this benchmark's section of the output file
(between its markers; placed after the spot-unavailable section when new).
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
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from bench import elastic_ready, spot_loss, spot_unavailable
from bench.economics import simulate, traces
from bench.elastic_ready import apply_crds, dump, elastic_cluster, is_ready
from bench.spot_loss import busy_note, environment_tables, write_section_after
from bench.spot_loss import operator as run_operator
from tidal.api.labels import (
    GPU_RESOURCE,
    KARPENTER_CAPACITY_TYPE,
    KARPENTER_NODEPOOL,
    NODE_INSTANCE_TYPE,
    NODE_ZONE,
)
from tidal.api.signals import EndpointReport, GatewayReport, endpoint_key
from tidal.clients.inflight import INFLIGHT_PATH
from tidal.devcluster import build, cluster, karpenter
from tidal.reconcile.endpoint import Memory, Outcome, World, decide

GROUP, VERSION, PLURAL = elastic_ready.GROUP, elastic_ready.VERSION, elastic_ready.PLURAL
NAMESPACE: Final = "crosscheck"
NAME: Final = "steady"
REGION: Final = "eu-west-1"
PRODUCT: Final = "NVIDIA-L4"
# The load: requests in flight at every poll, and what one replica is sized for.
IN_FLIGHT: Final = 40
TARGET_IN_FLIGHT: Final = 10
MAX_REPLICAS: Final = 6
# Auto's interruption budget: loose enough that spot carries most replicas in calm times.
BUDGET_PERCENT: Final = "0.5"
NOTICE_SECONDS: Final = 30.0
CRUNCH_SECONDS: Final = 150.0
HOLD_SECONDS: Final = 40.0
RETURN_AFTER_SECONDS: Final = 60
SAMPLE_SECONDS: Final = 2.0
# The simulator's step: fine enough for a ten-minute timeline.
STEP_SECONDS: Final = 5
# Karpenter's KWOK provider writes the offering's price on the node (as eks-node-viewer reads it).
PRICE_LABEL: Final = "eks-node-viewer/instance-price"
ON_DEMAND: Final = "on-demand"
OPERATOR_ENV: Final = {
    **elastic_ready.OPERATOR_ENV,
    "TIDAL_SPOT_RETURN_AFTER_SECONDS": str(RETURN_AFTER_SECONDS),
}
MARK_START: Final = "<!-- bench:crosscheck:start -->"
MARK_END: Final = "<!-- bench:crosscheck:end -->"
AFTER_MARK: Final = spot_unavailable.MARK_END
PHASES: Final = ("steady", "crunch", "after")
# The operator's Events about the mix, counted on both sides.
ANNOUNCED: Final = ("SpotCapacityLost", "SpotCapacityReturned", "ReplacingLeavingReplicas")


class BenchError(spot_loss.BenchError):
    """The run could not be carried out or measured; the message says what was seen."""


# --- the endpoint and its load --------------------------------------------------------------------


@dataclass(frozen=True)
class _Workload(traces.Workload):
    """The simulator's workload whose spec carries Auto's interruption budget (the simulator
    creates the endpoint from `spec()`)."""

    def spec(self) -> dict[str, Any]:
        spec = super().spec()
        spec["capacity"] = {"policy": "Auto", "interruptionBudgetPercent": BUDGET_PERCENT}
        return spec


def workload() -> traces.Workload:
    """The endpoint as the simulator knows it; its `spec()` is the one the live run applies."""
    return _Workload(
        name=NAME,
        pattern=traces.Pattern.STEADY,
        product=PRODUCT,
        gpus=1,
        regions=(REGION,),
        base_rps=float(IN_FLIGHT),
        peak_rps=float(IN_FLIGHT),
        # One second per request: the rate in requests/s is the number in flight.
        latency_seconds=1.0,
        cold_start_seconds=30,
        min_replicas=1,
        max_replicas=MAX_REPLICAS,
        weights_gib=8,
        target_in_flight=TARGET_IN_FLIGHT,
    )


def endpoint_body() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceEndpoint",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": workload().spec(),
    }


class SimulatedGateway:
    """A stand-in for the gateway's admin port: `GET /internal/inflight` answers a
    `GatewayReport` with `in_flight` requests in flight for one endpoint, always."""

    def __init__(self, key: str, in_flight: int) -> None:
        report = self._report

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != INFLIGHT_PATH:
                    self.send_error(404)
                    return
                body = json.dumps(report().to_json()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.key = key
        self.in_flight = in_flight
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _report(self) -> GatewayReport:
        now = datetime.now(dt.UTC)
        return GatewayReport(
            gateway="crosscheck-simulated-gateway",
            time=now,
            endpoints={
                self.key: EndpointReport(
                    in_flight=self.in_flight, held=0, ready_replicas=0, last_request_time=now
                )
            },
        )

    @contextlib.contextmanager
    def running(self) -> Iterator[SimulatedGateway]:
        self.thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=10)


# --- what one moment looks like -------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One moment of the endpoint, seconds from its create: Ready replicas by the capacity type
    of their node, $/h of the nodes holding its pods (and, live, of every GPU node), and the
    operator's own status."""

    t: float
    spot: int
    reserved: int
    usd_per_hour: float
    all_nodes_usd_per_hour: float | None = None
    status_spot: int | None = None
    status_reserved: int | None = None
    status_usd_per_hour: float | None = None
    instance_types: Mapping[str, int] = field(default_factory=dict)
    # Live only: the endpoint had settled (`settled`) at this moment.
    settled: bool = False


@dataclass(frozen=True)
class Timeline:
    """The crunch, in seconds from the create."""

    crunch_start: float
    interrupted: float
    crunch_end: float
    end: float

    def phase(self, t: float) -> str:
        if t < self.crunch_start:
            return "steady"
        return "crunch" if t < self.crunch_end else "after"

    def bounds(self, phase: str) -> tuple[float, float]:
        return {
            "steady": (0.0, self.crunch_start),
            "crunch": (self.crunch_start, self.crunch_end),
            "after": (self.crunch_end, self.end),
        }[phase]


@dataclass(frozen=True)
class PhaseFigures:
    """One phase of one side: the settled moment (its last sample) and time-weighted means."""

    spot: int
    reserved: int
    usd_per_hour: float
    mean_spot: float
    mean_reserved: float
    mean_usd_per_hour: float
    status_usd_per_hour: float | None
    all_nodes_usd_per_hour: float | None


def phase_figures(samples: Sequence[Sample], start: float, end: float) -> PhaseFigures:
    """Each sample holds until the next; a sample before `start` holds into the phase."""
    ordered = sorted(samples, key=lambda s: s.t)
    inside = [s for s in ordered if start <= s.t < end]
    before = [s for s in ordered if s.t < start]
    if not inside and not before:
        raise BenchError(f"no sample in [{start:.0f}, {end:.0f}) s")
    held = ([before[-1]] if before else []) + inside
    weights = []
    for i, s in enumerate(held):
        begin = max(start, s.t)
        stop = min(end, held[i + 1].t) if i + 1 < len(held) else end
        weights.append(max(0.0, stop - begin))
    total = sum(weights) or 1.0

    def mean(value: Callable[[Sample], float]) -> float:
        return sum(value(s) * w for s, w in zip(held, weights, strict=True)) / total

    last = held[-1]
    return PhaseFigures(
        spot=last.spot,
        reserved=last.reserved,
        usd_per_hour=last.usd_per_hour,
        mean_spot=mean(lambda s: s.spot),
        mean_reserved=mean(lambda s: s.reserved),
        mean_usd_per_hour=mean(lambda s: s.usd_per_hour),
        status_usd_per_hour=last.status_usd_per_hour,
        all_nodes_usd_per_hour=last.all_nodes_usd_per_hour,
    )


def first_time(
    samples: Sequence[Sample], after: float, holds: Callable[[Sample], bool]
) -> float | None:
    """Seconds from `after` to the first sample at or after it for which `holds` holds."""
    for s in sorted(samples, key=lambda s: s.t):
        if s.t >= after and holds(s):
            return s.t - after
    return None


# --- the prediction ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    samples: list[Sample]
    # The operator's Events about the mix in the simulated run, by reason.
    announced: dict[str, int]


def predict(
    timeline: Timeline, cold_start_seconds: float, nodes_per_kind: int = 2 * MAX_REPLICAS
) -> Prediction:
    """The simulator's run of the same endpoint, load and crunch (see the module docstring)."""
    cold = max(STEP_SECONDS, round(cold_start_seconds))
    base = replace(workload(), cold_start_seconds=cold)
    zones = karpenter_zones()
    nodes = tuple(
        traces.NodeSpec(
            f"l4-{kind}-{i:02d}", REGION, zones[i % len(zones)], PRODUCT, kind == "spot", gpus=1
        )
        for kind in ("spot", "reserved")
        for i in range(nodes_per_kind)
    )
    # Which spot nodes hold replicas at the interruption: the last calm sample at or before it.
    calm = [s for s in _run(base, nodes, timeline, ()).samples if s.t <= timeline.interrupted]
    occupied = {n for n in (calm[-1].instance_types if calm else {}) if n.startswith("l4-spot-")}
    events: list[traces.SpotEvent] = []
    for node in nodes:
        if not node.spot:
            continue
        if node.name in occupied:
            events.append(
                traces.SpotEvent(
                    timeline.interrupted + NOTICE_SECONDS,
                    node.name,
                    reclaim=True,
                    notice_seconds=NOTICE_SECONDS,
                )
            )
        else:
            events.append(traces.SpotEvent(timeline.crunch_start, node.name, reclaim=True))
        events.append(traces.SpotEvent(timeline.crunch_end, node.name, reclaim=False))
    return _run(base, nodes, timeline, tuple(events))


def karpenter_zones() -> list[str]:
    from tidal.devcluster import fleet

    return list(fleet.load_elastic(fleet.ELASTIC_FLEET).karpenter.zones[REGION])


class _Recorder(simulate.TidalStrategy):
    """`TidalStrategy` that samples the simulated endpoint each time it is asked to decide:
    Ready replicas by node capacity type, $/h of the nodes its pods hold, its status. The
    sample's `instance_types` names the nodes holding a pod (every node is one instance)."""

    def __init__(self, start: datetime) -> None:
        super().__init__("tidal", return_after_seconds=RETURN_AFTER_SECONDS, decide=self._counted)
        self.start = start
        self.samples: list[Sample] = []
        self.announced: collections.Counter[str] = collections.Counter()

    def _counted(self, raw: simulate.Raw, world: World, memory: Memory, now: datetime) -> Outcome:
        """The operator's `decide`, its Events about the mix counted by reason."""
        outcome = decide(raw, world, memory, now)
        self.announced.update(e.reason for e in outcome.events if e.reason in ANNOUNCED)
        return outcome

    def control(
        self,
        now: datetime,
        fleet: Any,
        endpoints: Mapping[str, simulate.EndpointView],
    ) -> dict[str, dict[str, simulate.Deployment]]:
        cluster_ = self._cluster
        if cluster_ is not None:
            t = (now - self.start).total_seconds()
            live = [p for p in cluster_.pods[NAME] if p.deleted_at > t]
            bound = [p for p in live if p.node is not None and p.bound_at <= t]
            specs = {p.uid: cluster_.node(p.node or "").spec for p in bound}
            state = self._endpoints.get(NAME)
            status = (state.raw.get("status") or {}) if state is not None else {}
            replicas = status.get("replicas") or {}
            cost = (status.get("cost") or {}).get("hourlyUSD")
            self.samples.append(
                Sample(
                    t=t,
                    spot=sum(1 for p in bound if p.ready(t) and specs[p.uid].spot),
                    reserved=sum(1 for p in bound if p.ready(t) and not specs[p.uid].spot),
                    usd_per_hour=sum(cluster_.node_price(specs[p.uid]) * p.gpus for p in bound),
                    status_spot=replicas.get("spot"),
                    status_reserved=replicas.get("reserved"),
                    status_usd_per_hour=float(cost) if cost is not None else None,
                    instance_types=dict(collections.Counter(specs[p.uid].name for p in bound)),
                )
            )
        return super().control(now, fleet, endpoints)


def _run(
    base: traces.Workload,
    nodes: tuple[traces.NodeSpec, ...],
    timeline: Timeline,
    events: tuple[traces.SpotEvent, ...],
) -> Prediction:
    steps = int(timeline.end // STEP_SECONDS) + 1
    scenario = traces.Scenario(
        seed=0,
        step_seconds=STEP_SECONDS,
        warmup_steps=0,
        measured_steps=steps,
        start=traces.EPOCH,
        workloads=(base,),
        nodes=nodes,
        rates={base.name: (base.base_rps,) * steps},
        utilization_noise={base.name: (0.0,) * steps},
        spot_price_multiplier={REGION: (1.0,) * steps},
        events=tuple(sorted(events, key=lambda e: (e.time_seconds, e.node))),
    )
    recorder = _Recorder(scenario.start)
    simulate.run(scenario, recorder)
    return Prediction(recorder.samples, dict(recorder.announced))


# --- the live run -----------------------------------------------------------------------------


def price_list(path: Path) -> dict[tuple[str, str, str], float]:
    """(instance type, capacity type, zone) -> $/h, from Karpenter's instance-types file."""
    prices: dict[tuple[str, str, str], float] = {}
    for itype in json.loads(path.read_text()):
        for offering in itype["offerings"]:
            req = {r["key"]: r["values"][0] for r in offering["Requirements"]}
            key = (itype["name"], req[KARPENTER_CAPACITY_TYPE], req[NODE_ZONE])
            prices[key] = float(offering["Price"])
    return prices


def node_price(
    node: Mapping[str, Any], prices: Mapping[tuple[str, str, str], float]
) -> tuple[float, float | None]:
    """The node's $/h from the price list, and Karpenter's own label (None: absent)."""
    labels = node["metadata"].get("labels") or {}
    key = (
        str(labels.get(NODE_INSTANCE_TYPE)),
        str(labels.get(KARPENTER_CAPACITY_TYPE)),
        str(labels.get(NODE_ZONE)),
    )
    if key not in prices:
        raise BenchError(f"node {node['metadata']['name']}: no offering {key} in the price list")
    label = labels.get(PRICE_LABEL)
    return prices[key], (float(label) if label else None)


def live_sample(
    t: float,
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    endpoint: Mapping[str, Any] | None,
    prices: Mapping[tuple[str, str, str], float],
    mismatches: set[str],
) -> Sample:
    """One live moment (see `Sample`); a node whose own price label differs from the list is
    added to `mismatches`."""
    karpenter_nodes = {
        str(n["metadata"]["name"]): n
        for n in nodes
        if KARPENTER_NODEPOOL in (n["metadata"].get("labels") or {})
        and int((n.get("status") or {}).get("allocatable", {}).get(GPU_RESOURCE, "0") or 0) > 0
    }
    priced: dict[str, float] = {}
    for name, node in karpenter_nodes.items():
        price, label = node_price(node, prices)
        priced[name] = price
        if label is not None and abs(label - price) > 0.005:
            mismatches.add(f"{name}: label {label:g}, list {price:g}")
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    hosts = {str(p["spec"].get("nodeName") or "") for p in live} & set(karpenter_nodes)

    def capacity(pod: Mapping[str, Any]) -> str | None:
        node = karpenter_nodes.get(str(pod["spec"].get("nodeName") or ""))
        return None if node is None else node["metadata"]["labels"].get(KARPENTER_CAPACITY_TYPE)

    ready = [p for p in live if is_ready(dict(p))]
    status = (endpoint or {}).get("status") or {}
    replicas = status.get("replicas") or {}
    cost = (status.get("cost") or {}).get("hourlyUSD")
    types = collections.Counter(
        str(karpenter_nodes[h]["metadata"]["labels"].get(NODE_INSTANCE_TYPE))
        + f" {karpenter_nodes[h]['metadata']['labels'].get(KARPENTER_CAPACITY_TYPE)}"
        for h in hosts
    )
    return Sample(
        t=t,
        spot=sum(1 for p in ready if capacity(p) == "spot"),
        reserved=sum(1 for p in ready if capacity(p) == ON_DEMAND),
        usd_per_hour=sum(priced[h] for h in hosts),
        all_nodes_usd_per_hour=sum(priced.values()),
        status_spot=replicas.get("spot"),
        status_reserved=replicas.get("reserved"),
        status_usd_per_hour=float(cost) if cost is not None else None,
        instance_types=dict(types),
    )


def settled(sample: Sample, endpoint: Mapping[str, Any] | None, live_pods: int) -> bool:
    """The endpoint at its generation, every desired replica Ready, no pod beyond them, and the
    Ready replicas split over capacity types as the status says."""
    if endpoint is None:
        return False
    status = endpoint.get("status") or {}
    replicas = status.get("replicas") or {}
    desired = replicas.get("desired")
    return bool(
        status.get("observedGeneration") == endpoint["metadata"].get("generation")
        and desired
        and replicas.get("ready") == desired == live_pods
        and (sample.spot, sample.reserved) == (replicas.get("spot"), replicas.get("reserved"))
    )


class Live(spot_unavailable.Bench):
    """The live run: one endpoint, sampled through the phases."""

    def __init__(self, state: cluster.ClusterState, operator_pid: int) -> None:
        super().__init__(state, operator_pid)
        self.prices = price_list(Path(state.workdir) / karpenter.INSTANCE_TYPES_FILE)
        self.samples: list[Sample] = []
        self.mismatches: set[str] = set()
        self.cold_starts: dict[str, float] = {}
        self.started = 0.0

    def sample(self) -> Sample:
        t = time.monotonic() - self.started
        pods = self.pods(NAMESPACE)
        endpoint = self.endpoint(NAMESPACE, NAME)
        sample = live_sample(t, self.nodes(), pods, endpoint, self.prices, self.mismatches)
        live = sum(1 for p in pods if not p["metadata"].get("deletionTimestamp"))
        sample = replace(sample, settled=settled(sample, endpoint, live))
        self.samples.append(sample)
        for pod in pods:
            self.note_cold_start(pod)
        return sample

    def note_cold_start(self, pod: Mapping[str, Any]) -> None:
        """Created -> Ready (the API server's stamps, whole seconds), once per pod."""
        name = str(pod["metadata"]["name"])
        if name in self.cold_starts or not is_ready(dict(pod)):
            return
        ready = next(
            c.get("lastTransitionTime")
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") == "Ready"
        )
        created = pod["metadata"]["creationTimestamp"]
        seconds = (_stamp(ready) - _stamp(created)).total_seconds()
        self.cold_starts[name] = seconds

    def watch(self, what: str, done: Callable[[Sample, bool], bool], timeout: float) -> float:
        """Sample until `done(sample, settled)`; returns the moment (seconds from the create)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sample = self.sample()
            if done(sample, sample.settled):
                return sample.t
            time.sleep(SAMPLE_SECONDS)
        last = self.samples[-1] if self.samples else None
        raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}; last {last}")

    def hold(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.sample()
            time.sleep(SAMPLE_SECONDS)

    def announcements(self) -> dict[str, int]:
        """The operator's spot Events on the endpoint, by reason (a repeated Event's count)."""
        counts: collections.Counter[str] = collections.Counter()
        for event in self.events(NAMESPACE):
            if event.get("reason") in ANNOUNCED:
                counts[str(event["reason"])] += int(event.get("count") or 1)
        return dict(counts)

    def spot_hosts(self) -> list[str]:
        """The spot nodes holding one of the endpoint's pods now."""
        nodes = {n["metadata"]["name"]: n for n in self.nodes()}
        hosts = {str(p["spec"].get("nodeName") or "") for p in self.pods(NAMESPACE)}
        return sorted(
            h
            for h in hosts
            if h in nodes and nodes[h]["metadata"]["labels"].get(KARPENTER_CAPACITY_TYPE) == "spot"
        )

    def phases(self, after_timeout: float) -> tuple[Timeline, bool]:
        """The three phases; returns the timeline and whether spot came back in the run."""
        cluster.kubectl(self.state, "create", "namespace", NAMESPACE)
        self.started = time.monotonic()
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, endpoint_body()
        )
        self.watch("the endpoint settled", lambda s, ok: ok, timeout=300)
        self.hold(HOLD_SECONDS)
        crunch_start = time.monotonic() - self.started
        self.set_spot(REGION, available=False)
        interrupted = time.monotonic() - self.started
        victims = self.spot_hosts()
        for node in victims:
            karpenter.interrupt(
                Path(self.state.workdir),
                node,
                NOTICE_SECONDS,
                bind_to_parent=True,
                progress=lambda _: None,
            )
        print(f"crunch: spot unavailable in {REGION}; interrupted {victims}", flush=True)
        earliest = crunch_start + CRUNCH_SECONDS
        self.watch(
            "all replicas on on-demand",
            lambda s, ok: ok and s.spot == 0 and s.t >= earliest,
            timeout=CRUNCH_SECONDS + 300,
        )
        self.set_spot(REGION, available=True)
        crunch_end = time.monotonic() - self.started
        print(f"crunch over at {crunch_end:.0f}s: spot available again", flush=True)
        returned = True
        try:
            self.watch("back on spot", lambda s, ok: ok and s.spot > 0, timeout=after_timeout)
        except BenchError as err:
            print(f"not back on spot: {err}", flush=True)
            returned = False
        self.hold(HOLD_SECONDS)
        end = time.monotonic() - self.started
        return Timeline(crunch_start, interrupted, crunch_end, end), returned


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the report ---------------------------------------------------------------------------------


def _mix(figures: PhaseFigures) -> str:
    return f"{figures.spot} / {figures.reserved}"


def _means(figures: PhaseFigures) -> str:
    return f"{figures.mean_spot:.1f} / {figures.mean_reserved:.1f}"


def _usd(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _seconds(value: float | None) -> str:
    return "not in the run" if value is None else f"{value:.0f} s"


def report(
    live: Sequence[Sample],
    prediction: Prediction,
    timeline: Timeline,
    *,
    announced: Mapping[str, int],
    returned: bool,
    cold_starts: Sequence[float],
    mismatches: Sequence[str],
    command: str,
    startup_seconds: float,
    wall_seconds: float,
    cluster_seconds: float,
    load_before: tuple[float, float, float],
) -> str:
    predicted = prediction.samples
    rows = []
    figures = {}
    for phase in PHASES:
        start, end = timeline.bounds(phase)
        p, v = phase_figures(predicted, start, end), phase_figures(live, start, end)
        figures[phase] = (p, v)
        rows.append(
            f"| {phase} ({start:.0f}-{end:.0f} s) | {_mix(p)} | **{_mix(v)}** | "
            f"{_means(p)} | {_means(v)} | {p.usd_per_hour:.2f} | **{v.usd_per_hour:.2f}** | "
            f"{_usd(v.all_nodes_usd_per_hour)} | {_usd(v.status_usd_per_hour)} | "
            f"{p.mean_usd_per_hour:.2f} | {v.mean_usd_per_hour:.2f} |"
        )
    fell = (
        first_time(predicted, timeline.crunch_start, lambda s: s.spot == 0),
        first_time(live, timeline.crunch_start, lambda s: s.spot == 0),
    )
    back = (
        first_time(predicted, timeline.crunch_end, lambda s: s.spot > 0),
        first_time(live, timeline.crunch_end, lambda s: s.spot > 0),
    )
    status_gap = [
        s.status_usd_per_hour - s.usd_per_hour
        for s in live
        if s.settled and s.status_usd_per_hour is not None
    ]
    types: collections.Counter[str] = collections.Counter()
    for s in live:
        for k in s.instance_types:
            types[k] += 1
    live_total = _dollars(live, timeline.end)
    every_node_total = _dollars(live, timeline.end, every_node=True)
    predicted_total = _dollars(predicted, timeline.end)
    lines = [
        MARK_START,
        "## Live cross-check: the simulator's mix and $/h against Karpenter, through a spot crunch",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}` "
        f"({wall_seconds / 60:.1f} min in all; the elastic local cluster took "
        f"{cluster_seconds:.0f} s to start).",
        "",
        "One InferenceEndpoint (Auto, `interruptionBudgetPercent` "
        f'"{BUDGET_PERCENT}", 1 {PRODUCT} GPU, {REGION}, 1-{MAX_REPLICAS} replicas, '
        f"`targetInFlightRequests` {TARGET_IN_FLIGHT}) under a steady simulated load: a "
        f"simulated gateway reports {IN_FLIGHT} requests in flight at every poll "
        "(`GET /internal/inflight`, the operator's own load signal), on the elastic local "
        "cluster (Karpenter v1.15, KWOK provider, GPU nodes priced from Tidal's catalog). "
        f"*steady* until settled plus {HOLD_SECONDS:g} s; *crunch*: spot runs out in the region "
        "(its offerings leave Karpenter's instance-types file) and every spot node holding a "
        f"replica is interrupted with {NOTICE_SECONDS:g} s notice, for at least "
        f"{CRUNCH_SECONDS:g} s and until settled on on-demand; *after*: spot is back, until "
        f"settled on spot again plus {HOLD_SECONDS:g} s. The prediction is "
        "`bench.economics.simulate` (the operator's `decide`) on the same spec, demand and "
        "timeline, with one-GPU L4 nodes (g6.xlarge, as Karpenter launches) and the live "
        f"median cold start ({statistics.median(cold_starts):.0f} s, created -> Ready, launch "
        f"included) as its cold start; spot hysteresis {RETURN_AFTER_SECONDS} s on both sides "
        "(`TIDAL_SPOT_RETURN_AFTER_SECONDS`). Replicas are counted Ready, by the capacity type "
        "of their node; $/h is the price of the nodes holding the endpoint's pods (live: from "
        "the instance-types file Tidal gave Karpenter, by instance type, capacity type and "
        "zone).",
        "",
        "| phase | predicted spot / reserved (end) | live spot / on-demand (end) | "
        "predicted mean | live mean | predicted $/h (end) | live $/h, pods' nodes (end) | "
        "live $/h, all GPU nodes (end) | operator `status.cost.hourlyUSD` (end) | "
        "predicted mean $/h | live mean $/h |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"- Crunch start -> no spot replica Ready: predicted {_seconds(fell[0])}, live "
        f"{_seconds(fell[1])}. Crunch end -> a spot replica Ready again: predicted "
        f"{_seconds(back[0])}, live {_seconds(back[1])}"
        + ("" if returned else " (the live endpoint had not settled on spot by the end)")
        + ".",
        f"- Cost of the whole run: predicted ${predicted_total:.3f}; live ${live_total:.3f} "
        f"for the nodes holding the endpoint's pods, ${every_node_total:.3f} for every GPU node "
        "Karpenter kept (empty ones included, until it consolidated them).",
        "- The operator's Events about the mix, predicted / live: "
        + ", ".join(
            f"{r} {prediction.announced.get(r, 0)} / {announced.get(r, 0)}" for r in ANNOUNCED
        )
        + ".",
        "- The operator's `status.cost.hourlyUSD` minus the price of the nodes holding the "
        "endpoint's pods, at the live moments the endpoint had settled: "
        + (
            f"{len(status_gap)} samples, {min(status_gap):+.2f} to {max(status_gap):+.2f} $/h."
            if status_gap
            else "no such sample."
        ),
        "- Nodes Karpenter chose (samples holding a replica): "
        + (", ".join(f"{k} x {v}" for k, v in sorted(types.items())) or "none")
        + "; Karpenter's own price label "
        + (f"differed: {'; '.join(sorted(mismatches))}." if mismatches else "matched the list.")
        + f" Live cold starts (s): {', '.join(f'{c:.0f}' for c in cold_starts)}.",
        "",
        "Where the two differ, and why:",
        "",
        *differences(figures, prediction.announced, announced),
        *busy_note(load_before),
        *environment_tables(load_before),
        f"| Karpenter (KWOK provider) | {build.KARPENTER_VERSION} |",
        f"| simulated replica start-up | {startup_seconds:g} s |",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def differences(
    figures: Mapping[str, tuple[PhaseFigures, PhaseFigures]],
    predicted_events: Mapping[str, int],
    live_events: Mapping[str, int],
) -> list[str]:
    """The known reasons the live run and the prediction part, each said where this run shows
    it (`figures`: per phase, predicted then live)."""
    lines = []
    steady_p, steady_v = figures["steady"]
    if abs(steady_p.mean_usd_per_hour - steady_v.mean_usd_per_hour) >= 0.01:
        lines.append(
            "- *Provisioning latency, from zero*: the simulator binds the first replicas at once "
            "to nodes that already exist and pays from the bind; live, the replicas wait for "
            "the first load poll and for Karpenter to launch their nodes, so the steady means "
            f"differ (${steady_p.mean_usd_per_hour:.2f}/h predicted, "
            f"${steady_v.mean_usd_per_hour:.2f}/h live) while the settled mix and $/h agree."
        )
    extra = live_events.get("SpotCapacityReturned", 0) - predicted_events.get(
        "SpotCapacityReturned", 0
    )
    if extra > 0:
        lines.append(
            f"- *Trying spot during the crunch*: live, the operator announced {extra} more "
            "return(s) to spot, each answered by Karpenter's `FailedScheduling` and moved "
            "straight back (`SpotCapacityLost`). With an autoscaler there is no spot node to "
            "look at, so spot is tried again after each hysteresis period; in the simulator "
            "the spot nodes are gone until the crunch ends, so it never tries. The tries cost "
            "no dollars (the spot pods stay Pending; the reserved replicas keep serving)."
        )
    crunch_p, crunch_v = figures["crunch"]
    if crunch_v.mean_spot != crunch_p.mean_spot or crunch_v.mean_usd_per_hour != (
        crunch_p.mean_usd_per_hour
    ):
        lines.append(
            "- *Learning that spot is out*: the simulator's spot pool is empty the moment the "
            "crunch starts, so its replacements go to reserved at the notice; live, the "
            "operator learns it from Karpenter's `FailedScheduling` on the replacement spot "
            "pods (Karpenter's batching, then the operator's next reconcile), so the spot "
            "replicas leave a few seconds later, and the replacements' nodes launch first."
        )
    after_v = figures["after"][1]
    empty = (after_v.all_nodes_usd_per_hour or 0.0) - after_v.usd_per_hour
    if empty > 0.005:
        lines.append(
            f"- *Consolidation*: at the end, ${empty:.2f}/h of GPU nodes held no replica: "
            "the on-demand nodes the return to spot emptied, waiting out Karpenter's "
            "`consolidateAfter` (30 s in the elastic fleet) and its consolidation pass. The "
            "simulator's fleet is fixed and prices only GPUs that hold a pod, so it never "
            "pays for an empty node; the live bill of every node is the higher of the two "
            "live totals above."
        )
    lines.append(
        "- *Instance choice and packing*: one L4 per replica, so Karpenter launched one "
        "g6.xlarge per replica, priced per node exactly as the simulator prices per GPU. With "
        "multi-GPU instance types (p4de, p5: 8 GPUs) Karpenter may pack several replicas on a "
        "node or launch one larger than needed, and a node's price would then be shared or "
        "partly idle: this run does not exercise that."
    )
    return lines


def _dollars(samples: Sequence[Sample], end: float, *, every_node: bool = False) -> float:
    """$ over [0, end): each sample's $/h (of every GPU node, with `every_node`) holds until
    the next."""
    ordered = sorted(samples, key=lambda s: s.t)
    total = 0.0
    for i, s in enumerate(ordered):
        stop = ordered[i + 1].t if i + 1 < len(ordered) else end
        rate = (s.all_nodes_usd_per_hour or 0.0) if every_node else s.usd_per_hour
        total += rate * max(0.0, min(stop, end) - s.t) / 3600
    return total


def write(out: Path, section: str) -> None:
    write_section_after(out, section, MARK_START, MARK_END, AFTER_MARK)


# --- running it ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crosscheck", description=__doc__)
    spot_loss.startup_argument(parser, 5.0)
    parser.add_argument(
        "--after-timeout", type=float, default=240.0, help="seconds to wait for spot's return"
    )
    parser.add_argument("--samples", type=Path, help="also write every sample here (JSON)")
    spot_loss.output_arguments(parser)
    args = parser.parse_args(argv)
    command = "python -m bench.crosscheck " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )
    began, load_before = time.monotonic(), os.getloadavg()
    gateway = SimulatedGateway(endpoint_key(NAMESPACE, NAME), IN_FLIGHT)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        cluster_dir = workdir.absolute() / "cluster"
        state = stack.enter_context(elastic_cluster(cluster_dir, args.startup_seconds))
        cluster_seconds = time.monotonic() - began
        apply_crds(state)
        stack.enter_context(gateway.running())
        log = workdir / "operator.log"
        env = {**OPERATOR_ENV, "TIDAL_GATEWAY_URLS": gateway.url}
        proc = stack.enter_context(run_operator(state, log, env))
        live = Live(state, proc.pid)
        try:
            timeline, returned = live.phases(args.after_timeout)
            announced = live.announcements()
        except (spot_loss.BenchError, cluster.ClusterError):
            dump(state, cluster_dir, log)
            raise
    cold_starts = sorted(live.cold_starts.values())
    if not cold_starts:
        raise BenchError("no replica became Ready: no cold start measured")
    prediction = predict(timeline, statistics.median(cold_starts))
    if args.samples:
        args.samples.write_text(
            json.dumps(
                {
                    "timeline": timeline.__dict__,
                    "live": [s.__dict__ for s in live.samples],
                    "predicted": [s.__dict__ for s in prediction.samples],
                    "announced": {"live": announced, "predicted": prediction.announced},
                },
                indent=1,
                default=dict,
            )
        )
    section = report(
        live.samples,
        prediction,
        timeline,
        announced=announced,
        returned=returned,
        cold_starts=cold_starts,
        mismatches=sorted(live.mismatches),
        command=command.strip(),
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
