"""The trace-driven simulation: one strategy, one `Scenario`, step by step.

Owns: the simulated cluster (nodes, pods, the two Kubernetes controllers that matter — the
ReplicaSet's create/delete and the scheduler's bind), the capacity model that turns ready
replicas into requests served within the SLO, cost accounting, and `TidalStrategy`, which runs
the operator's own pure reconcile (`tidal.reconcile.endpoint.decide`) and carries out its
Outcome as the controller does.
Must not: generate traces (`traces`), define the baselines (`baselines`), format results
(`report`), or import the controllers or the runtime (`tidal.controllers`, `tidal.runtime`:
Kopf and IO), nor rebuild what `decide` composes (planner, history, hand-over) by hand.

One step (`Scenario.step_seconds`, 60 s by default) at time t:
1. Observe at t: the fleet snapshot (reclaimed spot nodes are gone from it; each node carries
   `tidal.dev/gpu-telemetry` from the previous step, per GPU and per pod) and the demand the
   gateway saw over the previous step (requests in flight plus held: rate x request latency,
   Little's law).
2. Decide: the replica count (`scaling_adapter`, shared by every strategy), then the
   strategy's Deployments. `TidalStrategy` hands `decide` the endpoint as the API server holds
   it (the annotations and status the previous Outcome patched: the spot loss episode, the
   utilization history, the previous split) and the `World` the controller would observe (the
   fleet snapshot, the endpoint's pods, its Deployments as last applied, the gateway's load),
   and asks each Deployment for the `spec.replicas` the Outcome applied: the operator's own
   plan and make-before-break hand-over (a Deployment the plan shrinks keeps the Ready
   replicas the other one cannot replace yet).
3. Apply: the pods a strategy deletes itself go first (Tidal: the Outcome's `delete_pods`, for
   residency or a lost node; none in these traces). Each Deployment's ReplicaSet deletes
   surplus pods (Pending first, then starting, then the newest Ready: Kubernetes' order;
   deletion is graceful, in-flight requests finish) and creates missing ones; the scheduler
   binds Pending pods with the Deployment's node affinity. A pod bound at t is Ready at
   t + the workload's cold start (node, image, weights) and costs money from t.
4. Serve [t, t + step): notices, reclaims and returns fire at their own second. A notice taints
   the node (no new pods; `karpenter.sh/disrupted` in the snapshot) and the strategy reacts at
   that second (`Strategy.on_notice`, then its orders for the endpoints there are carried out):
   a node autoscaler drains the node at once, Tidal's reconcile starts replacements while the
   leaving replicas serve (make before break). At the reclaim the requests in flight on the
   replicas still there fail. Replicas on returned nodes are not resurrected: the ReplicaSet
   creates new pods, which cold-start. Requests within the SLO follow the queueing model
   (`queueing`: each Ready replica an M/M/c queue, Erlang C against the workload's wait budget).
5. Telemetry for the next step: every Ready replica's GPU is `100 x busy / capacity` (load
   balanced; busy = served, at most the replicas' throughput) plus the trace's noise; a
   starting replica's GPU reads 0.

Outside-SLO requests are attributed to a cause: `interruption` (requests in flight on a
reclaimed replica, and what the replicas missing while a replacement is Pending or starting
would have served within the SLO), `shift` (the same for a replica moving between capacity
types or regions), `overflow` (the rest: load above what the scaled replica count serves
within the SLO, and scale-up cold starts). Missing replicas count up to the desired count.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from bench.economics import traces
from bench.economics.queueing import ReplicaQueue
from bench.economics.scaling_adapter import ReplicaCounter
from bench.economics.traces import NodeSpec, Scenario, Workload

from tidal.api.common import GROUP, VERSION
from tidal.api.endpoint import KIND, CapacityPolicy, InferenceEndpointSpec
from tidal.api.labels import (
    GPU_RESOURCE,
    KARPENTER_DISRUPTED_TAINT,
    LABEL_CAPACITY_TYPE,
    LABEL_ENDPOINT,
    NODE_HOSTNAME,
    NODE_REGION,
    POD_DELETION_COST,
    SPOT_LOST_SINCE,
    CapacityType,
)
from tidal.api.telemetry import GpuSample, GpuTelemetry, PodUsage
from tidal.api.wire import format_time
from tidal.cost import DEFAULT_CATALOG, PriceCatalog
from tidal.placement.model import FleetSnapshot, NodeInfo, Placement, SpotHealth, Taint
from tidal.placement.planner import SPOT_PENDING_SECONDS
from tidal.reconcile.endpoint import (
    Load,
    Memory,
    Outcome,
    Settings,
    World,
    reclaimed_spot_nodes,
    suspected_lost_nodes,
)
from tidal.reconcile.endpoint import decide as endpoint_decide
from tidal.reconcile.world import Inputs
from tidal.runtime.reclaims import ReclaimLedger
from tidal.scaling.autoscale import DEFAULT_TUNING, LoadSample, remember

__all__ = [
    "COMMITMENT_DISCOUNT",
    "DISCOUNTS",
    "NAMESPACE",
    "OPERATOR_SETTINGS",
    "Cause",
    "Cluster",
    "Deployment",
    "EndpointResult",
    "EndpointView",
    "Pod",
    "RunResult",
    "Strategy",
    "TidalStrategy",
    "merge_patch",
    "pod_object",
    "run",
]

NAMESPACE: Final = "bench"
_NEVER: Final = math.inf
# Spot discounts (percent off on-demand) every run is also priced at, for the sensitivity
# table: the placements are the run's own, only the dollars change (None: the catalog's spot).
DISCOUNTS: Final[tuple[float | None, ...]] = (None, 40.0, 50.0, 60.0, 70.0, 80.0)
# A 1-year commitment (EC2 Instance Savings Plan / reserved instance, no upfront) priced this
# share below on-demand: see bench/economics/catalog.py for the sources.
COMMITMENT_DISCOUNT: Final = 0.40
_NOTICE_TAINT: Final = Taint(KARPENTER_DISRUPTED_TAINT, "", "NoSchedule")


class Cause(StrEnum):
    """Why a pod was created: what its missing capacity is blamed on while it starts."""

    SCALE = "scale"
    REPLACEMENT = "replacement"
    SHIFT = "shift"


@dataclass(eq=False)
class Pod:
    uid: int
    endpoint: str
    group: str
    capacity: CapacityType | None
    gpus: int
    created: float
    cause: Cause
    node: str | None = None
    gpu_indexes: tuple[int, ...] = ()
    bound_at: float = _NEVER
    ready_at: float = _NEVER
    deleted_at: float = _NEVER
    # The node autoscaler's next launch attempt (price-first only).
    not_before: float = 0.0
    utilization: float = 0.0
    reclaimed: bool = False
    # controller.kubernetes.io/pod-deletion-cost: the ReplicaSet removes lower costs first.
    deletion_cost: int = 0

    @property
    def name(self) -> str:
        return f"{self.endpoint}-{self.group}-{self.uid}"

    def ready(self, t: float) -> bool:
        return self.ready_at <= t < self.deleted_at


@dataclass(frozen=True)
class Deployment:
    """One Deployment as a strategy wants it. `capacity` None: any capacity type (the node
    autoscaler picks). `regions`, `preferred` and `avoided`: the pod template's node affinity.
    `kept`: replicas asked for beyond the plan while the other Deployment takes them over
    (make before break); the other Deployment's new pods are shifts, not scale-ups."""

    replicas: int
    capacity: CapacityType | None
    regions: tuple[str, ...]
    preferred: Mapping[str, int] = field(default_factory=dict)
    avoided: frozenset[str] = frozenset()
    kept: int = 0


@dataclass
class _Node:
    spec: NodeSpec
    free: list[int]
    down: int = 0
    pods: dict[int, Pod] = field(default_factory=dict)
    # How many times it came back from a reclaim (its name says so: `Cluster.restore`).
    incarnation: int = 0
    # Given an interruption notice (tainted karpenter.sh/disrupted): no new pods, and the
    # ones there serve until the reclaim.
    noticed: bool = False

    @property
    def alive(self) -> bool:
        return self.down == 0


@dataclass(frozen=True)
class EndpointView:
    """What a strategy sees of one endpoint at the step's start: the shared replica count,
    the load the gateway reported (requests in flight plus held) and the endpoint's live
    pods, whose times count from `start`, the simulated day's first second."""

    workload: Workload
    spec: InferenceEndpointSpec
    desired: int
    demand: int
    start: datetime
    pods: tuple[Pod, ...] = ()
    # Bumped by every notice, reclaim and return: the fleet changed under the endpoint.
    fleet_epoch: int = 0


class Strategy:
    """A placement strategy: Deployments per endpoint each step, and how Pending pods bind.

    `headroom_percent`: the strategy runs that many percent more replicas than the load asks
    for (the shared scaler sees the gateway's demand x (1 + headroom)). `family`: the
    strategy's name without its headroom, for the report's sweeps."""

    name: str = ""
    family: str = ""
    headroom_percent: float = 0.0
    # Build the planner's FleetSnapshot (telemetry included) every step.
    needs_fleet: bool = True

    def begin(self, cluster: Cluster) -> None:
        """Called once before the first step."""

    def on_notice(self, cluster: Cluster, node: str, t: float) -> None:
        """A node was given an interruption notice at `t` (the run then asks `control` again
        for the endpoints with pods there). Default, a node autoscaler's interruption
        handling (Karpenter, a termination handler): the node is drained at once, its pods
        evicted (gracefully: in-flight requests finish) and recreated elsewhere."""
        for pod in list(cluster.node(node).pods.values()):
            cluster.add_debt(pod.endpoint, 1, t)
            cluster.delete(pod, t)

    def committed_replicas(self, endpoint: str) -> int:
        """Replicas of `endpoint` a commitment pays for whether they run or not (priced at the
        commitment rate, in the endpoint's first region); on-demand beyond them."""
        return 0

    def control(
        self, now: datetime, fleet: FleetSnapshot | None, endpoints: Mapping[str, EndpointView]
    ) -> dict[str, dict[str, Deployment]]:
        raise NotImplementedError

    def bind(self, cluster: Cluster, pod: Pod, deployment: Deployment, t: float) -> None:
        cluster.kube_schedule(pod, deployment, t)

    def after_bind(self, cluster: Cluster, t: float) -> None:
        """Node-autoscaler behaviour after binding (price-first's consolidation)."""

    def deleted_pods(self, endpoint: str) -> frozenset[str]:
        """Pods (by name) the strategy deletes itself this step, before the ReplicaSet acts."""
        return frozenset()

    def notes(self) -> dict[str, float]:
        """Strategy-specific counters for the report."""
        return {}


class Cluster:
    """The simulated cluster for one run: nodes, pods, prices and the bookkeeping."""

    def __init__(
        self,
        scenario: Scenario,
        catalog: PriceCatalog = DEFAULT_CATALOG,
        spot_discount_percent: float | None = None,
    ) -> None:
        self.scenario = scenario
        self.step = 0
        # Nodes by the name the cluster knows them by now. A reclaimed node that returns is a
        # new node under a new name (`<name>-r<n>`), as a node autoscaler's replacement is: the
        # operator counts a reclaim once per node name (`runtime.reclaims`), so a returned
        # node keeping its name would hide its next reclaim. The scenario's events name the
        # node as first created (`current`); pods keep the name of the node they ran on
        # (`node`).
        self.nodes = {n.name: _Node(n, list(range(n.gpus))) for n in scenario.nodes}
        self._current = {name: name for name in self.nodes}
        self._former: dict[str, _Node] = {}
        self.workloads = {w.name: w for w in scenario.workloads}
        self.pods: dict[str, list[Pod]] = {w.name: [] for w in scenario.workloads}
        self._uid = 0
        # Replicas lost to reclaims and not yet recreated, per endpoint: (count, valid until).
        self._debt: dict[str, tuple[int, float]] = {}
        self._prices = _unit_prices(scenario, catalog, spot_discount_percent)
        self._discounted = {
            d: _unit_prices(scenario, catalog, d) for d in DISCOUNTS if d is not None
        }
        self.queues = {
            w.name: ReplicaQueue(w.slots, w.latency_seconds, w.wait_budget)
            for w in scenario.workloads
        }
        self.epoch = 0
        self._idle_gpu = [
            GpuSample.model_construct(index=i, utilization_percent=0.0) for i in range(16)
        ]
        self._templates = (
            GpuSample.model_construct(index=0, utilization_percent=0.0),
            PodUsage.model_construct(
                namespace=NAMESPACE,
                name="",
                gpu_indexes=[],
                utilization_percent=0.0,
                utilization_source="process-samples",
            ),
            GpuTelemetry.model_construct(
                time=scenario.start, source="simulated", gpus=[], pods=[], window_seconds=10
            ),
        )

    # --- prices ---------------------------------------------------------------------------

    def price(self, product: str, capacity: CapacityType, region: str) -> float:
        """USD per GPU-hour now: catalog x the trace's spot multiplier, capped at reserved."""
        reserved = self._prices[(product, CapacityType.RESERVED, region)]
        if capacity is CapacityType.RESERVED:
            return reserved
        spot = self._prices[(product, CapacityType.SPOT, region)]
        return min(reserved, spot * self.scenario.spot_price_multiplier[region][self.step])

    def node_price(self, node: NodeSpec) -> float:
        kind = CapacityType.SPOT if node.spot else CapacityType.RESERVED
        return self.price(node.product, kind, node.region)

    def spot_price_at(self, discount: float | None, product: str, region: str) -> float:
        """Spot USD per GPU-hour now with spot `discount` percent off on-demand (None: the
        catalog's spot price), moved by the trace's multiplier and capped at on-demand."""
        if discount is None:
            return self.price(product, CapacityType.SPOT, region)
        prices = self._discounted[discount]
        reserved = prices[(product, CapacityType.RESERVED, region)]
        spot = prices[(product, CapacityType.SPOT, region)]
        return min(reserved, spot * self.scenario.spot_price_multiplier[region][self.step])

    def commitment_price(self, product: str, region: str) -> float:
        """USD per GPU-hour of a 1-year commitment: on-demand less `COMMITMENT_DISCOUNT`."""
        return self._prices[(product, CapacityType.RESERVED, region)] * (1 - COMMITMENT_DISCOUNT)

    # --- pods -----------------------------------------------------------------------------

    def create(
        self, endpoint: str, group: str, capacity: CapacityType | None, cause: Cause, t: float
    ) -> Pod:
        self._uid += 1
        workload = self.workloads[endpoint]
        pod = Pod(self._uid, endpoint, group, capacity, workload.gpus, t, cause)
        self.pods[endpoint].append(pod)
        return pod

    def bind(self, pod: Pod, node_name: str, t: float, cold_start: float | None = None) -> None:
        node = self.nodes[node_name]
        pod.node = node_name
        pod.gpu_indexes = tuple(node.free[: pod.gpus])
        del node.free[: pod.gpus]
        node.pods[pod.uid] = pod
        pod.bound_at = t
        start = (
            self.workloads[pod.endpoint].cold_start_seconds if cold_start is None else cold_start
        )
        pod.ready_at = t + start

    def delete(self, pod: Pod, t: float) -> None:
        pod.deleted_at = min(pod.deleted_at, t)
        if pod.node is not None:
            node = self.node(pod.node)
            if node.pods.pop(pod.uid, None) is not None:
                node.free = sorted(node.free + list(pod.gpu_indexes))

    def candidates(
        self, product: str, capacity: CapacityType, regions: Sequence[str], gpus: int
    ) -> list[_Node]:
        spot = capacity is CapacityType.SPOT
        return [
            n
            for n in self.nodes.values()
            if n.alive
            and not n.noticed
            and n.spec.spot == spot
            and n.spec.region in regions
            and n.spec.product == product
            and len(n.free) >= gpus
        ]

    def kube_schedule(self, pod: Pod, deployment: Deployment, t: float) -> None:
        """kube-scheduler: the required affinity filters (capacity type, regions, GPU product,
        not avoided, GPUs free), then `score`. No fitting node: the pod stays Pending."""
        if deployment.capacity is None:
            raise ValueError("kube_schedule needs a Deployment with a capacity type")
        workload = self.workloads[pod.endpoint]
        nodes = [
            n
            for n in self.candidates(
                workload.product, deployment.capacity, deployment.regions, pod.gpus
            )
            if n.spec.name not in deployment.avoided
        ]
        if nodes:
            self.bind(pod, self.score(pod, nodes, deployment.preferred).spec.name, t)

    def score(self, pod: Pod, nodes: Sequence[_Node], preferred: Mapping[str, int]) -> _Node:
        """kube-scheduler's scoring, reduced to the plugins that differ between these nodes:
        NodeAffinity (preferred weights, normalized to 0-100, weight 1), PodTopologySpread (the
        default soft zone spread of the pod's Deployment: fewer of its pods in the zone scores
        higher, 0-100, weight 2) and NodeResourcesFit LeastAllocated (free GPUs, 0-100, weight
        1). Ties go to the node name."""
        same = [
            p
            for p in self.pods[pod.endpoint]
            if p.group == pod.group and p.node is not None and p.deleted_at == _NEVER
        ]
        per_zone: dict[str, int] = {}
        for other in same:
            zone = self.node(other.node or "").spec.zone
            per_zone[zone] = per_zone.get(zone, 0) + 1
        most_pods = max((per_zone.get(n.spec.zone, 0) for n in nodes), default=0)
        top_weight = max((preferred.get(n.spec.name, 0) for n in nodes), default=0)

        def total(node: _Node) -> tuple[float, str]:
            affinity = 100 * preferred.get(node.spec.name, 0) / top_weight if top_weight else 0
            count = per_zone.get(node.spec.zone, 0)
            spread = 100 * (most_pods - count) / most_pods if most_pods else 100
            fit = 100 * len(node.free) / node.spec.gpus
            return (-(affinity + 2 * spread + fit), node.spec.name)

        return min(nodes, key=total)

    # --- the ReplicaSet -------------------------------------------------------------------

    def reconcile(self, endpoint: str, deployments: Mapping[str, Deployment], t: float) -> None:
        live = [p for p in self.pods[endpoint] if p.deleted_at > t]
        by_group: dict[str, list[Pod]] = {}
        for pod in live:
            by_group.setdefault(pod.group, []).append(pod)
        deleted = 0
        for group, pods in by_group.items():
            want = deployments[group].replicas if group in deployments else 0
            surplus = len(pods) - want
            if surplus > 0:
                pods.sort(key=lambda p: (_rank(p, t), p.deletion_cost, -p.created, -p.uid))
                for pod in pods[:surplus]:
                    self.delete(pod, t)
                deleted += surplus
        count, until = self._debt.get(endpoint, (0, -_NEVER))
        if until < t:
            count = 0
        for group, deployment in sorted(deployments.items()):
            have = len([p for p in by_group.get(group, []) if p.deleted_at > t])
            # Replicas the other Deployments keep only until this one takes them over.
            handed = sum(d.kept for g, d in deployments.items() if g != group)
            for _ in range(deployment.replicas - have):
                if count > 0:
                    cause, count = Cause.REPLACEMENT, count - 1
                elif deleted > 0:
                    cause, deleted = Cause.SHIFT, deleted - 1
                elif handed > 0:
                    cause, handed = Cause.SHIFT, handed - 1
                else:
                    cause = Cause.SCALE
                self.create(endpoint, group, deployment.capacity, cause, t)
        self._debt[endpoint] = (count, until)

    def add_debt(self, endpoint: str, count: int, at: float) -> None:
        """`count` replicas of `endpoint` lost (or about to be) at `at`: the pods created for
        it in the next two steps are replacements (interruption), not scale-ups."""
        before, until = self._debt.get(endpoint, (0, at))
        if until < at:
            before = 0
        self._debt[endpoint] = (before + count, at + 2 * self.scenario.step_seconds)

    def notice(self, node_name: str) -> set[str]:
        """The node got an interruption notice; returns the endpoints with pods there."""
        node = self.nodes[self.current(node_name)]
        self.epoch += 1
        if not node.alive:
            return set()
        node.noticed = True
        return {p.endpoint for p in node.pods.values()}

    def reclaim(self, node_name: str, at: float, rates: Mapping[str, float]) -> dict[str, float]:
        """The node is gone: its pods die now. Returns requests in flight lost per endpoint."""
        node = self.nodes[self.current(node_name)]
        self.epoch += 1
        node.noticed = False
        node.down += 1
        lost: dict[str, float] = {}
        if node.down > 1:
            return lost
        victims = list(node.pods.values())
        ready = {
            name: sum(1 for p in self.pods[name] if p.ready(at))
            for name in {p.endpoint for p in victims}
        }
        for pod in victims:
            workload = self.workloads[pod.endpoint]
            if pod.ready(at):
                per_replica = min(
                    rates[pod.endpoint] / max(1, ready[pod.endpoint]),
                    workload.max_rps_per_replica,
                )
                in_flight = per_replica * workload.latency_seconds
                lost[pod.endpoint] = lost.get(pod.endpoint, 0.0) + in_flight
            self.delete(pod, at)
            pod.reclaimed = True
            self.add_debt(pod.endpoint, 1, at)
        node.free = list(range(node.spec.gpus))
        node.pods.clear()
        return lost

    def restore(self, node_name: str) -> None:
        name = self.current(node_name)
        node = self.nodes[name]
        self.epoch += 1
        if not node.down:
            return  # not reclaimed: nothing comes back
        node.down -= 1
        if node.down:
            return
        # Back as a new node: the scenario's name with the next incarnation number.
        node.incarnation += 1
        renamed = f"{node_name}-r{node.incarnation}"
        node.spec = replace(node.spec, name=renamed)
        self._former[name] = node
        self.nodes = {(renamed if k == name else k): v for k, v in self.nodes.items()}
        self._current[node_name] = renamed

    def current(self, node_name: str) -> str:
        """The name the node the scenario calls `node_name` has now."""
        return self._current.get(node_name, node_name)

    def node(self, name: str) -> _Node:
        """The node called `name` now or when a pod ran on it."""
        found = self.nodes.get(name)
        return found if found is not None else self._former[name]

    # --- observation ----------------------------------------------------------------------

    def snapshot(self, now: datetime) -> FleetSnapshot:
        """The planner's view: alive nodes, GPUs requested, telemetry from the last step.

        The telemetry documents are copies of per-run templates with the fields that vary
        set (`model_copy`): the same field values `model_construct` gives, a quarter of its
        cost (tests/unit/test_economics_speed.py checks they are equal)."""
        infos = []
        sample, usage, telemetry = self._templates
        for node in self.nodes.values():
            if not node.alive:
                continue
            spec = node.spec
            gpus = list(self._idle_gpu[: spec.gpus])
            usages = []
            for pod in node.pods.values():
                busy = sample.model_copy(update={"utilization_percent": pod.utilization})
                for i in pod.gpu_indexes:
                    gpus[i] = busy.model_copy(update={"index": i}) if i else busy
                usages.append(
                    usage.model_copy(
                        update={
                            "name": pod.name,
                            "gpu_indexes": list(pod.gpu_indexes),
                            "utilization_percent": pod.utilization,
                        }
                    )
                )
            doc = telemetry.model_copy(update={"time": now, "gpus": gpus, "pods": usages})
            infos.append(
                NodeInfo(
                    name=spec.name,
                    region=spec.region,
                    zone=spec.zone,
                    capacity_type=CapacityType.SPOT if spec.spot else CapacityType.RESERVED,
                    gpu_product=spec.product,
                    gpu_memory_mib=spec.memory_mib,
                    gpu_allocatable=spec.gpus,
                    gpu_requested=spec.gpus - len(node.free),
                    taints=(_NOTICE_TAINT,) if node.noticed else (),
                    telemetry=doc,
                )
            )
        return FleetSnapshot(nodes=tuple(infos), observed_at=now)

    def view(
        self, endpoint: str, spec: InferenceEndpointSpec, desired: int, demand: int, t: float
    ) -> EndpointView:
        return EndpointView(
            workload=self.workloads[endpoint],
            spec=spec,
            desired=desired,
            demand=demand,
            start=self.scenario.start,
            pods=tuple(p for p in self.pods[endpoint] if p.deleted_at > t),
            fleet_epoch=self.epoch,
        )


def _rank(pod: Pod, t: float) -> int:
    """The ReplicaSet deletes unscheduled pods first, then not-ready ones, then ready ones."""
    if pod.node is None:
        return 0
    return 1 if pod.ready_at > t else 2


def _unit_prices(
    scenario: Scenario, catalog: PriceCatalog, spot_discount_percent: float | None = None
) -> dict[tuple[str, CapacityType, str], float]:
    """Catalog USD per GPU-hour per (product, capacity type, region) of the fleet.

    `spot_discount_percent` replaces every catalog spot price by the reserved price less that
    many percent: the sensitivity run's what-if, never the shipped prices.
    """
    if spot_discount_percent is not None and not 0 <= spot_discount_percent < 100:
        raise ValueError(f"spot discount must be in [0, 100), got {spot_discount_percent}")
    prices: dict[tuple[str, CapacityType, str], float] = {}
    for node in scenario.nodes:
        for kind in CapacityType:
            price = catalog.gpu_price(node.product, kind, node.region)
            if price is None:
                raise ValueError(
                    f"the catalog has no {kind} price for {node.product} in {node.region}"
                )
            prices[(node.product, kind, node.region)] = float(price)
        if spot_discount_percent is not None:
            reserved = prices[(node.product, CapacityType.RESERVED, node.region)]
            prices[(node.product, CapacityType.SPOT, node.region)] = reserved * (
                1 - spot_discount_percent / 100
            )
    return prices


# --- results --------------------------------------------------------------------------------


@dataclass
class EndpointResult:
    demand: float = 0.0
    within: float = 0.0
    lost_in_flight: float = 0.0
    short_interruption: float = 0.0
    short_shift: float = 0.0
    short_overflow: float = 0.0
    cost_usd: float = 0.0
    # The same run priced with spot at each of `DISCOUNTS` (key: the discount, "catalog").
    cost_by_discount: dict[str, float] = field(default_factory=dict)
    spot_replica_seconds: float = 0.0
    reserved_replica_seconds: float = 0.0
    # Reserved-only price of the same GPU-seconds: what this run would cost all on reserved.
    reserved_equivalent_usd: float = 0.0


@dataclass
class RunResult:
    strategy: str
    seed: int
    hours: float
    endpoints: dict[str, EndpointResult]
    wall_seconds: float
    scaling: str
    notes: dict[str, float]
    family: str = ""
    headroom_percent: float = 0.0
    # Which spot market the run replayed (e.g. "realistic", "pessimistic").
    market: str = ""

    def cost_at(self, discount: str) -> float:
        """The bill with spot at `discount` ("catalog" or a percent off on-demand)."""
        return sum(e.cost_by_discount.get(discount, 0.0) for e in self.endpoints.values())

    def total(self, name: str) -> float:
        return sum(float(getattr(e, name)) for e in self.endpoints.values())

    @property
    def cost_usd(self) -> float:
        return self.total("cost_usd")

    @property
    def slo_percent(self) -> float:
        demand = self.total("demand")
        return 100.0 * self.total("within") / demand if demand else 100.0

    @property
    def spot_share_percent(self) -> float:
        spot = self.total("spot_replica_seconds")
        every = spot + self.total("reserved_replica_seconds")
        return 100.0 * spot / every if every else 0.0

    def outside_percent(self, cause: str) -> float:
        """Share of all requests outside the SLO for one cause (interruption, shift, overflow)."""
        demand = self.total("demand")
        if not demand:
            return 0.0
        if cause == "interruption":
            value = self.total("short_interruption") + self.total("lost_in_flight")
        else:
            value = self.total(f"short_{cause}")
        return 100.0 * value / demand


# --- Tidal ----------------------------------------------------------------------------------

# The operator's defaults (`tidal.runtime.settings` reads the same two constants; the benchmark
# may not import the runtime).
OPERATOR_SETTINGS: Final = Settings(
    spot_pending_seconds=float(SPOT_PENDING_SECONDS),
    spot_return_after_seconds=SpotHealth().return_after_seconds,
)
PRICES_SOURCE: Final = "bench.economics: tidal.cost.DEFAULT_CATALOG"

Raw = dict[str, Any]
Decide = Callable[[Raw, World, Memory, datetime], Outcome]


@dataclass
class _Endpoint:
    """One endpoint between steps: the object as the API server holds it, its children as last
    applied (by kind and name), the process's `Memory` and the gateway's load history."""

    raw: Raw
    children: dict[tuple[str, str], Raw] = field(default_factory=dict)
    memory: Memory = field(default_factory=Memory)
    load: tuple[LoadSample, ...] = ()
    last_request: datetime | None = None
    # The orders the last `decide` gave, when, and what it saw (the gating's key).
    orders: dict[str, Deployment] = field(default_factory=dict)
    decided_at: datetime | None = None
    key: tuple[object, ...] = ()


class TidalStrategy(Strategy):
    """The operator's own reconcile, `tidal.reconcile.endpoint.decide`, step by step, fed and
    carried out as the controller does.

    Each step, per endpoint: the InferenceEndpoint as the API server holds it (the workload's
    spec; the annotations and status the previous Outcome patched, merge-patched), and a
    `World` as the runtime observes it: the fleet snapshot with telemetry, the endpoint's pods
    (`pod_object`), its Deployments and Service as last applied, the gateway's load history
    (`Load`, trimmed by `autoscale.remember` as `runtime.load` does), `sample_history` (every
    step is a periodic refresh) and no forced apply. What `decide` returns is carried out: the
    children replace the applied ones, the pods it names are deleted, the annotations and
    status patched, the `Memory` kept. Each simulated ReplicaSet is then asked for its
    Deployment's `spec.replicas` and schedules with its pod template's node affinity
    (`_scheduling`); a Deployment not re-applied keeps what it had.

    The replica count: `decide` scales from the same gateway demand the shared counter sees,
    with the same tuning, so it asks for the count every strategy gets
    (`scaling_adapter.ReplicaCounter`); the tests check that they agree.

    Spot reclaims are counted per pool as the controller counts them (`runtime.reclaims`: a spot
    node holding replicas seen with a notice or NotReady), so Auto's interruption budget reads
    the run's own reclaim history against its prior, as the operator would.

    What is not the controller's: a node the snapshot no longer lists counts as confirmed lost
    (the simulated API server never lags), no measurement feeds the SLO condition, and status is
    priced with the shipped catalog (status does not steer the decision). `policy` overrides the
    spec's capacity policy (the SpotPreferred rows are the same reconcile with SpotPreferred);
    None keeps the workload's own (Auto); `budget_percent` sets the spec's
    `capacity.interruptionBudgetPercent` (None: the default). `notice_seconds` is the operator's
    `TIDAL_SPOT_NOTICE_SECONDS`, as configured for the cloud simulated (None: the operator's
    default, no notice assumed); `detection_seconds` its `TIDAL_SPOT_DETECTION_SECONDS` (None:
    the default). `watched_days` > 0: the operator has watched the spot pools that long before
    the run (its reclaim ledger restored from the checkpoint it would have saved, the market's
    crunches at `history_crunches_per_region_per_day`); 0: a fresh install, the prior alone.
    `decide` is the seam tests record through; it defaults to the operator's.
    `decide_every_seconds` > 0 skips the reconciles in which nothing changed (`_due`). An
    interruption notice taints the node in the snapshot and runs the reconcile at the notice's
    second: the operator's make before break (the leaving replicas serve; their replacements
    start at once; the ReplicaSet removes the leaving ones first, by the pod-deletion-cost
    `decide` puts on them).
    """

    needs_fleet = False

    def __init__(
        self,
        name: str = "tidal",
        policy: CapacityPolicy | None = None,
        return_after_seconds: int | None = None,
        *,
        decide: Decide = endpoint_decide,
        headroom_percent: float = 0.0,
        family: str = "",
        decide_every_seconds: float = 0.0,
        reclaim_prior_hours: float | None = None,
        budget_percent: str | None = None,
        notice_seconds: float | None = None,
        detection_seconds: float | None = None,
        watched_days: float = 0.0,
        history_crunches_per_region_per_day: float = 0.0,
    ) -> None:
        self.name = name
        self.policy = policy
        self.budget_percent = budget_percent
        self.watched_days = watched_days
        self.history_crunches = history_crunches_per_region_per_day
        self.settings = (
            OPERATOR_SETTINGS
            if return_after_seconds is None
            else replace(OPERATOR_SETTINGS, spot_return_after_seconds=return_after_seconds)
        )
        if reclaim_prior_hours is not None:
            prior = replace(self.settings.reclaim_prior, weight_hours=reclaim_prior_hours)
            self.settings = replace(self.settings, reclaim_prior=prior)
        if notice_seconds is not None:
            prior = replace(self.settings.reclaim_prior, notice_seconds=notice_seconds)
            self.settings = replace(self.settings, reclaim_prior=prior)
        if detection_seconds is not None:
            prior = replace(self.settings.reclaim_prior, detection_seconds=detection_seconds)
            self.settings = replace(self.settings, reclaim_prior=prior)
        self.tuning = DEFAULT_TUNING
        self.headroom_percent = headroom_percent
        self.family = family or name
        self.decide_every_seconds = decide_every_seconds
        self._decide = decide
        self._cluster: Cluster | None = None
        # Spot reclaims per pool as the operator counts them (`runtime.reclaims`), one ledger
        # per run like the operator's one per process.
        self._reclaims = ReclaimLedger()
        self._endpoints: dict[str, _Endpoint] = {}
        self._deleted: dict[str, frozenset[str]] = {}
        self._pods: dict[int, tuple[tuple[object, ...], Raw]] = {}
        self.template_changes = 0
        self.plans = 0
        self.skipped = 0

    @property
    def ledger(self) -> ReclaimLedger:
        """The reclaims this run's operator has counted (read it; the run writes it)."""
        return self._reclaims

    def begin(self, cluster: Cluster) -> None:
        self._cluster = cluster
        if self.watched_days > 0:
            self._reclaims.restore(self._history(cluster.scenario), cluster.scenario.start)

    def _history(self, scenario: Scenario) -> dict[str, str]:
        """The `tidal-spot-reclaims` ConfigMap data of an operator that has watched this market
        for `watched_days` before the run (`traces.history`), counted by the operator's own
        ledger and read back as the operator reads its checkpoint."""
        began = scenario.start - timedelta(days=self.watched_days)
        seen = ReclaimLedger(started=began)
        for seconds, node, pool in traces.history(
            scenario.seed,
            scenario.nodes,
            days=self.watched_days,
            crunches_per_region_per_day=self.history_crunches,
        ):
            seen.note([(node, pool)], began + timedelta(seconds=seconds))
        _, data = seen.snapshot(scenario.start)
        return data

    def on_notice(self, cluster: Cluster, node: str, t: float) -> None:
        # Nothing is evicted: the node's taint reaches the reconcile (run at this second),
        # which starts the replacements while the leaving replicas serve (make before break).
        for pod in cluster.node(node).pods.values():
            cluster.add_debt(pod.endpoint, 1, t)

    def control(
        self, now: datetime, fleet: FleetSnapshot | None, endpoints: Mapping[str, EndpointView]
    ) -> dict[str, dict[str, Deployment]]:
        out: dict[str, dict[str, Deployment]] = {}
        for name, view in endpoints.items():
            state = self._endpoints.get(name)
            if state is None:
                state = self._endpoints[name] = _Endpoint(self._endpoint(name, view, now))
            state.load = remember(state.load, LoadSample(now, view.demand), self.tuning)
            if view.demand > 0:
                state.last_request = now
            t = (now - view.start).total_seconds()
            if not self._due(state, view, now, t):
                self._deleted[name] = frozenset()
                self.skipped += 1
                out[name] = state.orders
                continue
            if fleet is None:
                if self._cluster is None:
                    raise ValueError("TidalStrategy needs the fleet snapshot")
                fleet = self._cluster.snapshot(now)
            children = state.children.values()
            inputs = Inputs(
                fleet=fleet,
                pods=tuple(self._pod_object(pod, view.start, t) for pod in view.pods),
                deployments=tuple(c for c in children if c["kind"] == "Deployment"),
                services=tuple(c for c in children if c["kind"] == "Service"),
            )
            # The controller's reclaim ledger, fed and read as `controllers.endpoint` does.
            self._reclaims.note(reclaimed_spot_nodes(inputs), now)
            reclaims, watched_hours = self._reclaims.observed(now)
            world = World(
                inputs=inputs,
                settings=self.settings,
                catalog=DEFAULT_CATALOG,
                prices_source=PRICES_SOURCE,
                load=Load(state.load, state.last_request, self.tuning),
                lost_nodes=suspected_lost_nodes(inputs),
                reclaims=reclaims,
                watched_hours=watched_hours,
                sample_history=True,
            )
            outcome = self._decide(state.raw, world, state.memory, now)
            self.plans += 1
            self._carry_out(name, state, outcome)
            for ref, marks in outcome.pod_annotations:
                cost = marks.get(POD_DELETION_COST)
                for pod in view.pods:
                    if pod.name == ref.name:
                        pod.deletion_cost = int(cost) if cost else 0
            state.orders = out[name] = self._deployments(state, outcome.placement)
            state.decided_at = now
            state.key = self._key(view, t)
        return out

    def _pod_object(self, pod: Pod, start: datetime, t: float) -> Raw:
        """`pod_object`, kept per pod while what it is made of stays the same: its node, bind
        and Ready times, whether it is Ready at `t` and its deletion cost (the clock enters
        only through Ready). `decide` reads the pods it is given and never changes them."""
        key = (pod.node, pod.bound_at, pod.ready_at, pod.ready_at <= t, pod.deletion_cost)
        hit = self._pods.get(pod.uid)
        if hit is not None and hit[0] == key:
            return hit[1]
        made = pod_object(pod, start, t)
        self._pods[pod.uid] = (key, made)
        return made

    @staticmethod
    def _key(view: EndpointView, t: float) -> tuple[object, ...]:
        return (
            view.desired,
            view.fleet_epoch,
            tuple((p.uid, p.node is not None, p.ready(t)) for p in view.pods),
        )

    def _due(self, state: _Endpoint, view: EndpointView, now: datetime, t: float) -> bool:
        """Whether this step needs a reconcile (`decide_every_seconds` 0: every step). The
        controller reconciles when something it watches changes and refreshes periodically;
        with nothing changed `decide` would return what it returned, so between changes the
        simulation keeps the last orders instead of asking again. A change: the replica
        count the load asks for, a pod created, bound, Ready or gone, a node noticed, lost or
        back. Always due: every `decide_every_seconds` (the utilization history's bucket),
        while pods are Pending or starting, while a Deployment keeps replicas for a hand-over
        and during a spot loss episode (its timers run on the clock). Skipping the steps in
        which a bound pod is only starting was tried: 10 % fewer reconciles, but Tidal's SLO
        moved by up to 0.014 points (the scaler inside `decide` records a recommendation per
        reconcile, and its stabilization reads them), so they stay."""
        if not self.decide_every_seconds or state.decided_at is None:
            return True
        if (now - state.decided_at).total_seconds() >= self.decide_every_seconds:
            return True
        if state.key != self._key(view, t):
            return True
        if any(not p.ready(t) for p in view.pods):
            return True
        if any(d.kept for d in state.orders.values()):
            return True
        return SPOT_LOST_SINCE in (state.raw.get("metadata") or {}).get("annotations", {})

    def deleted_pods(self, endpoint: str) -> frozenset[str]:
        return self._deleted.get(endpoint, frozenset())

    def notes(self) -> dict[str, float]:
        return {
            "template_changes": float(self.template_changes),
            "plans": float(self.plans),
            "plans_skipped": float(self.skipped),
        }

    def _endpoint(self, name: str, view: EndpointView, now: datetime) -> Raw:
        """The InferenceEndpoint as created at the first step, with no annotations or status."""
        spec = view.workload.spec()
        if self.policy is not None:
            spec["capacity"] = {"policy": self.policy.value}
        if self.budget_percent is not None:
            spec["capacity"] = {
                **spec.get("capacity", {}),
                "interruptionBudgetPercent": (self.budget_percent),
            }
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": f"uid-{name}",
                "generation": 1,
                "creationTimestamp": format_time(now),
                "annotations": {},
            },
            "spec": spec,
        }

    def _carry_out(self, name: str, state: _Endpoint, outcome: Outcome) -> None:
        """What the controller does with an Outcome, against the simulated API server."""
        for child in outcome.children:
            key = (str(child["kind"]), str(child["metadata"]["name"]))
            before = state.children.get(key)
            if (
                before is not None
                and child["kind"] == "Deployment"
                and before["spec"].get("replicas")
                and before["spec"].get("template") != child["spec"].get("template")
            ):
                # A new pod template rolls the Deployment's running replicas: counted, not
                # simulated.
                self.template_changes += 1
            state.children[key] = child
        self._deleted[name] = frozenset(ref.name for ref in outcome.delete_pods)
        raw = state.raw
        if outcome.annotations:
            raw = merge_patch(raw, {"metadata": {"annotations": dict(outcome.annotations)}})
        if outcome.status is not None:
            raw = merge_patch(raw, {"status": dict(outcome.status)})
        state.raw = raw
        state.memory = outcome.memory

    def _deployments(self, state: _Endpoint, placement: Placement | None) -> dict[str, Deployment]:
        """The simulated ReplicaSets' orders: every applied Deployment's replicas and
        scheduling constraints; `kept` what it runs beyond the plan (make before break)."""
        planned = {
            CapacityType.SPOT: placement.spot if placement is not None else 0,
            CapacityType.RESERVED: placement.reserved if placement is not None else 0,
        }
        result: dict[str, Deployment] = {}
        for (kind, _), child in sorted(state.children.items()):
            if kind != "Deployment":
                continue
            capacity = CapacityType(child["metadata"]["labels"][LABEL_CAPACITY_TYPE])
            replicas = int(child["spec"].get("replicas") or 0)
            regions, preferred, avoided = _scheduling(child)
            result[capacity.value] = Deployment(
                replicas=replicas,
                capacity=capacity,
                regions=regions,
                preferred=preferred,
                avoided=avoided,
                kept=max(0, replicas - planned[capacity]),
            )
        return result


def pod_object(pod: Pod, start: datetime, t: float) -> Raw:
    """`pod` at `t` as the API server holds it, with what the reconcile reads: the endpoint and
    capacity-type labels, its node and GPUs, phase (Running once bound: the simulation pays
    from binding), PodScheduled (False since creation while Pending: the planner's pending spot
    pods) and Ready with their transition times."""
    created = start + timedelta(seconds=pod.created)
    spec: Raw = {
        "containers": [{"name": "engine", "resources": {"limits": {GPU_RESOURCE: pod.gpus}}}]
    }
    if pod.node is None:
        phase = "Pending"
        conditions = [_condition("PodScheduled", False, created)]
    else:
        spec["nodeName"] = pod.node
        phase = "Running"
        bound = start + timedelta(seconds=pod.bound_at)
        ready = pod.ready_at <= t
        conditions = [
            _condition("PodScheduled", True, bound),
            _condition("Ready", ready, start + timedelta(seconds=pod.ready_at) if ready else bound),
        ]
    metadata: Raw = {
        "name": pod.name,
        "namespace": NAMESPACE,
        "uid": str(pod.uid),
        "creationTimestamp": format_time(created),
        "labels": {LABEL_ENDPOINT: pod.endpoint, LABEL_CAPACITY_TYPE: pod.group},
    }
    if pod.deletion_cost:
        metadata["annotations"] = {POD_DELETION_COST: str(pod.deletion_cost)}
    return {
        "metadata": metadata,
        "spec": spec,
        "status": {"phase": phase, "conditions": conditions},
    }


def _condition(kind: str, status: bool, since: datetime) -> Raw:
    return {
        "type": kind,
        "status": "True" if status else "False",
        "lastTransitionTime": format_time(since),
    }


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> Raw:
    """`target` after a JSON merge patch (RFC 7386), as the API server applies the controller's
    annotation and status patches: null removes a field, objects merge key by key, anything
    else (lists such as conditions included) replaces."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            before = merged.get(key)
            merged[key] = merge_patch(before if isinstance(before, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


def _scheduling(
    deployment: Mapping[str, Any],
) -> tuple[tuple[str, ...], dict[str, int], frozenset[str]]:
    """The allowed regions, preferred nodes (weights) and avoided nodes that the Deployment's
    pod template gives the scheduler (`render.endpoint`: every required term carries the same
    region and avoided-node bounds; preferences name nodes by hostname)."""
    pod_spec = deployment["spec"]["template"]["spec"]
    affinity = pod_spec["affinity"]["nodeAffinity"]
    regions: tuple[str, ...] = ()
    avoided: frozenset[str] = frozenset()
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    for expression in terms[0]["matchExpressions"]:
        key, operator = expression["key"], expression["operator"]
        if key == NODE_REGION and operator == "In":
            regions = tuple(expression["values"])
        elif key == NODE_HOSTNAME and operator == "NotIn":
            avoided = frozenset(expression["values"])
    preferred: dict[str, int] = {}
    for term in affinity.get("preferredDuringSchedulingIgnoredDuringExecution", []):
        for expression in term["preference"]["matchExpressions"]:
            if expression["key"] == NODE_HOSTNAME and expression["operator"] == "In":
                for node in expression["values"]:
                    preferred[node] = int(term["weight"])
    return regions, preferred, avoided


# --- the loop -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Moment:
    """One fleet change at its own second: a notice, a reclaim or a return."""

    time_seconds: float
    order: int  # notices before reclaims before returns at the same second
    node: str
    kind: str


def _timeline(scenario: Scenario) -> list[_Moment]:
    moments = []
    for event in scenario.events:
        if not event.reclaim:
            moments.append(_Moment(event.time_seconds, 2, event.node, "return"))
            continue
        if event.notice_seconds > 0:
            at = max(0.0, event.time_seconds - event.notice_seconds)
            moments.append(_Moment(at, 0, event.node, "notice"))
        moments.append(_Moment(event.time_seconds, 1, event.node, "reclaim"))
    return sorted(moments, key=lambda m: (m.time_seconds, m.order, m.node))


def run(
    scenario: Scenario,
    strategy: Strategy,
    *,
    spot_discount_percent: float | None = None,
    market: str = "",
) -> RunResult:
    """Replay `scenario` under `strategy`; only the steps after the warm-up are measured.
    `spot_discount_percent`: price spot at that discount off reserved instead of the catalog's
    spot prices (a sensitivity run)."""
    started = time.perf_counter()
    cluster = Cluster(scenario, spot_discount_percent=spot_discount_percent)
    step = scenario.step_seconds
    specs = {w.name: InferenceEndpointSpec.model_validate(w.spec()) for w in scenario.workloads}
    counters = {name: ReplicaCounter(spec.scaling, scenario.start) for name, spec in specs.items()}
    results = {w.name: EndpointResult() for w in scenario.workloads}
    moments = _timeline(scenario)
    boost = 1 + strategy.headroom_percent / 100
    # The scaler reads Ready replicas only to finish a wake from zero: with minReplicas >= 1
    # everywhere the count is a function of the demand alone, computed once per scenario and
    # headroom and shared by every strategy (a worker runs many on one scenario).
    shared = _shared_counts(scenario, specs, boost)
    next_moment = 0
    strategy.begin(cluster)
    views: dict[str, EndpointView] = {}
    for i in range(scenario.steps):
        cluster.step = i
        t = float(i * step)
        now = scenario.start + timedelta(seconds=t)
        measured = i >= scenario.warmup_steps

        views = {}
        for name, spec in specs.items():
            workload = cluster.workloads[name]
            seen_rate = scenario.rates[name][max(0, i - 1)]
            # The gateway's demand, inflated by the strategy's headroom (the scaler then asks
            # for that many more replicas).
            demand = round(seen_rate * workload.latency_seconds * boost)
            if shared is not None:
                desired = shared[name][i]
            else:
                ready = sum(1 for p in cluster.pods[name] if p.ready(t))
                desired = counters[name].step(now, demand, ready)
            views[name] = cluster.view(name, spec, desired, demand, t)
        fleet = cluster.snapshot(now) if strategy.needs_fleet else None
        _apply(cluster, strategy, strategy.control(now, fleet, views), t)

        # Serve the step; notices, reclaims and returns fire at their own second.
        end = t + step
        rates = {name: scenario.rates[name][i] for name in specs}
        lost: dict[str, float] = {}
        while next_moment < len(moments) and moments[next_moment].time_seconds < end:
            moment = moments[next_moment]
            next_moment += 1
            if moment.kind == "notice":
                _notice(cluster, strategy, scenario, moment, views)
            elif moment.kind == "reclaim":
                for name, value in cluster.reclaim(moment.node, moment.time_seconds, rates).items():
                    lost[name] = lost.get(name, 0.0) + value
            else:
                cluster.restore(moment.node)
        for name in specs:
            _serve(
                cluster,
                name,
                i,
                t,
                end,
                lost.get(name, 0.0),
                results[name] if measured else None,
                strategy.committed_replicas(name),
                views[name].desired,
            )
            cluster.pods[name] = [p for p in cluster.pods[name] if p.deleted_at > end]
    return RunResult(
        strategy=strategy.name,
        seed=scenario.seed,
        hours=scenario.measured_steps * step / 3600,
        endpoints=results,
        wall_seconds=time.perf_counter() - started,
        scaling=next(iter(counters.values())).source if counters else "",
        notes=strategy.notes(),
        family=strategy.family or strategy.name,
        headroom_percent=strategy.headroom_percent,
        market=market,
    )


_COUNTS: dict[tuple[int, float], tuple[Scenario, dict[str, list[int]]]] = {}


def _shared_counts(
    scenario: Scenario, specs: Mapping[str, InferenceEndpointSpec], boost: float
) -> dict[str, list[int]] | None:
    """Every step's replica count per endpoint (`ReplicaCounter` driven by the demand alone),
    cached per scenario object and headroom; None where an endpoint may scale to zero."""
    if any(spec.scaling.min_replicas < 1 for spec in specs.values()):
        return None
    key = (id(scenario), boost)
    hit = _COUNTS.get(key)
    if hit is not None and hit[0] is scenario:
        return hit[1]
    if len(_COUNTS) > 16:
        _COUNTS.clear()
    step = scenario.step_seconds
    counts: dict[str, list[int]] = {}
    for name, spec in specs.items():
        counter = ReplicaCounter(spec.scaling, scenario.start)
        workload = next(w for w in scenario.workloads if w.name == name)
        series: list[int] = []
        for i in range(scenario.steps):
            now = scenario.start + timedelta(seconds=i * step)
            seen = scenario.rates[name][max(0, i - 1)]
            demand = round(seen * workload.latency_seconds * boost)
            series.append(counter.step(now, demand, max(1, counter_ready(series))))
        counts[name] = series
    _COUNTS[key] = (scenario, counts)
    return counts


def counter_ready(series: Sequence[int]) -> int:
    """The Ready count the shared scaler is told: the last count (it reads it only to finish a
    wake from zero, which minReplicas >= 1 rules out)."""
    return series[-1] if series else 1


def _apply(
    cluster: Cluster, strategy: Strategy, wanted: Mapping[str, Mapping[str, Deployment]], t: float
) -> None:
    """The strategy's orders carried out at `t`: its own deletions, each ReplicaSet, the
    scheduler (or the strategy's node autoscaler) for Pending pods."""
    for name, deployments in wanted.items():
        doomed = strategy.deleted_pods(name)
        for pod in cluster.pods[name]:
            if pod.name in doomed:
                cluster.delete(pod, t)
        cluster.reconcile(name, deployments, t)
        for pod in cluster.pods[name]:
            if pod.node is None and pod.deleted_at > t and pod.group in deployments:
                strategy.bind(cluster, pod, deployments[pod.group], t)
    strategy.after_bind(cluster, t)


def _notice(
    cluster: Cluster,
    strategy: Strategy,
    scenario: Scenario,
    moment: _Moment,
    views: Mapping[str, EndpointView],
) -> None:
    """An interruption notice mid-step: the node is tainted, the strategy reacts (a node
    autoscaler drains it; Tidal's reconcile is triggered by the node's change) and the
    endpoints with pods there are reconciled at that second, not at the next step."""
    at = moment.time_seconds
    touched = cluster.notice(moment.node)
    if not touched:
        return
    strategy.on_notice(cluster, cluster.current(moment.node), at)
    now = scenario.start + timedelta(seconds=at)
    again = {
        name: replace(
            view,
            pods=tuple(p for p in cluster.pods[name] if p.deleted_at > at),
            fleet_epoch=cluster.epoch,
        )
        for name, view in views.items()
        if name in touched
    }
    fleet = cluster.snapshot(now) if strategy.needs_fleet else None
    _apply(cluster, strategy, strategy.control(now, fleet, again), at)


def _serve(  # noqa: C901, PLR0915
    cluster: Cluster,
    name: str,
    i: int,
    t: float,
    end: float,
    lost_in_flight: float,
    result: EndpointResult | None,
    committed: int = 0,
    desired: int | None = None,
) -> None:
    """Serve one endpoint's step (the queueing SLO model, `bench.economics.queueing`) and
    account its cost; `result` None: a warm-up step (telemetry only). `desired`: the replica
    count asked for; what missing replicas would have served is counted up to it (a replica
    starting beside one it replaces would add nothing)."""
    scenario = cluster.scenario
    workload = cluster.workloads[name]
    queue = cluster.queues[name]
    rate = scenario.rates[name][i]
    rps = queue.capacity_rps
    pods = cluster.pods[name]
    # Replicas change only at these moments; between them the queue is taken as steady.
    cuts = {t, end}
    for pod in pods:
        for moment in (pod.ready_at, pod.deleted_at):
            if t < moment < end:
                cuts.add(moment)
    bounds = sorted(cuts)
    demand = within = busy = capacity = 0.0
    short = {cause: 0.0 for cause in Cause}
    for start, stop in itertools.pairwise(bounds):
        length = stop - start
        ready = 0
        missing = {cause: 0 for cause in Cause}
        for pod in pods:
            if pod.deleted_at <= start:
                # A reclaimed replica's capacity is missing for the rest of its step (from the
                # next step on, the replacement the ReplicaSet creates carries the blame).
                if pod.reclaimed and pod.ready_at <= start:
                    missing[Cause.REPLACEMENT] += 1
                continue
            if pod.ready_at <= start:
                ready += 1
            else:
                missing[pod.cause] += 1
        wanted = rate * length
        ok = queue.within(ready, rate) * length
        demand += wanted
        within += ok
        capacity += ready * rps * length
        busy += min(wanted, ready * rps * length)
        # What the missing replicas would have saved, in turn: interruption, then shift.
        limit = max(ready, desired) if desired is not None else math.inf
        replaced = ok
        if missing[Cause.REPLACEMENT]:
            would = min(limit, ready + missing[Cause.REPLACEMENT])
            replaced = max(ok, queue.within(int(would), rate) * length)
        moved = replaced
        if missing[Cause.SHIFT]:
            would = min(limit, ready + missing[Cause.REPLACEMENT] + missing[Cause.SHIFT])
            moved = max(replaced, queue.within(int(would), rate) * length)
        short[Cause.REPLACEMENT] += replaced - ok
        short[Cause.SHIFT] += moved - replaced
        short[Cause.SCALE] += wanted - moved
    for pod in pods:
        ready_at_end = pod.ready_at <= end < pod.deleted_at
        noisy = 100.0 * busy / capacity + scenario.utilization_noise[name][i] if capacity else 0.0
        pod.utilization = min(100.0, max(0.0, noisy)) if ready_at_end else 0.0
    if result is None:
        return
    lost = min(within, lost_in_flight)
    result.demand += demand
    result.within += within - lost
    result.lost_in_flight += lost
    result.short_interruption += short[Cause.REPLACEMENT]
    result.short_shift += short[Cause.SHIFT]
    result.short_overflow += short[Cause.SCALE]
    _account(cluster, workload, pods, t, end, result, committed)


def _account(
    cluster: Cluster,
    workload: Workload,
    pods: Sequence[Pod],
    t: float,
    end: float,
    result: EndpointResult,
    committed: int,
) -> None:
    """The step's dollars: GPU-hours at each node's price (and at every sensitivity discount);
    a commitment's replicas are paid whether used or not, and cover on-demand replicas up to
    their count."""
    # Seconds per (region, spot): an endpoint's pods all have its GPU product.
    seconds_by: dict[tuple[str, bool], float] = {}
    for pod in pods:
        if pod.node is None:
            continue
        seconds = min(end, pod.deleted_at) - max(t, pod.bound_at)
        if seconds <= 0:
            continue
        node = cluster.node(pod.node).spec
        key = (node.region, node.spot)
        seconds_by[key] = seconds_by.get(key, 0.0) + seconds
    if not seconds_by and not committed:
        return
    product, gpus = workload.product, workload.gpus
    bill = result.cost_by_discount
    reserved_gpu_seconds = 0.0
    for (region, spot), seconds in seconds_by.items():
        gpu_hours = seconds * gpus / 3600
        reserved = cluster.price(product, CapacityType.RESERVED, region)
        result.reserved_equivalent_usd += gpu_hours * reserved
        if spot:
            result.spot_replica_seconds += seconds
            result.cost_usd += gpu_hours * cluster.price(product, CapacityType.SPOT, region)
            for d, label in _LABELS:
                cost = gpu_hours * cluster.spot_price_at(d, product, region)
                bill[label] = bill.get(label, 0.0) + cost
        else:
            result.reserved_replica_seconds += seconds
            reserved_gpu_seconds += seconds * gpus
            result.cost_usd += gpu_hours * reserved
            for _, label in _LABELS:
                bill[label] = bill.get(label, 0.0) + gpu_hours * reserved
    if committed:
        region = workload.regions[0]
        paid = committed * gpus * (end - t)
        covered = min(paid, reserved_gpu_seconds)
        reserved = cluster.price(product, CapacityType.RESERVED, region)
        change = paid / 3600 * cluster.commitment_price(product, region) - covered / 3600 * reserved
        result.cost_usd += change
        for _, label in _LABELS:
            bill[label] = bill.get(label, 0.0) + change


def _label(discount: float | None) -> str:
    return "catalog" if discount is None else f"{discount:g}"


_LABELS: Final = tuple((d, _label(d)) for d in DISCOUNTS)
