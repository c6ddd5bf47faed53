"""The planner's vocabulary: what it is given (a fleet snapshot, history, constraints) and what
it returns (a Placement). Shared by `placement.fleet` (builds snapshots from Node objects),
`placement.planner` (decides), `placement.history` (the endpoint's utilization history) and the
controllers (observe and apply).

Owns: immutable data types only (a few values derived from a node's own fields are computed
once per node object and kept with it). Must not: parse Kubernetes objects, decide, or do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from tidal.api.labels import CapacityType
from tidal.api.telemetry import GpuTelemetry
from tidal.placement.budget import DEFAULT_PRIOR, ReclaimPrior, Reclaims


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str  # NoSchedule | PreferNoSchedule | NoExecute
    # Whether the cluster's conventions call key=value a spot marker (which spot replicas
    # tolerate). Parsing sets it (`tidal.placement.fleet`, `.provisioning`); None, on a taint
    # built by hand, means the built-in markers judge. Derived from key and value, so not
    # compared.
    marks_spot: bool | None = field(default=None, compare=False)


@dataclass(frozen=True)
class NodeInfo:
    """One Node as the planner sees it."""

    name: str
    region: str | None
    zone: str | None
    capacity_type: CapacityType
    labels: Mapping[str, str] = field(default_factory=dict)
    gpu_product: str | None = None
    gpu_memory_mib: int | None = None
    gpu_allocatable: int = 0
    # nvidia.com/gpu requested by non-terminated pods bound to this node.
    gpu_requested: int = 0
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    unschedulable: bool = False
    # The raw annotation document (already schema-validated); staleness is judged by the
    # planner against `now`, so a snapshot can be replayed at any time.
    telemetry: GpuTelemetry | None = None

    @property
    def gpu_free(self) -> int:
        return max(0, self.gpu_allocatable - self.gpu_requested)

    # Every plan reads these for every node of the fleet; node objects outlive many plans
    # (`controllers.indexes.FleetMemo`), so each is computed once per object.
    @cached_property
    def telemetry_pods(self) -> frozenset[tuple[str, str]]:
        """(namespace, name) of every pod the telemetry attributes GPUs to."""
        doc = self.telemetry
        return (
            frozenset((p.namespace, p.name) for p in doc.pods) if doc is not None else frozenset()
        )

    @cached_property
    def gpu_utilization_percent(self) -> float | None:
        """The telemetry's mean over the GPUs that reported a number (staleness not judged)."""
        return self.telemetry.utilization_percent if self.telemetry is not None else None


@dataclass(frozen=True)
class ProvisionablePool:
    """Capacity a node autoscaler can still add: one capacity type of a Karpenter NodePool, or a
    pool declared in the `tidal-capacity` ConfigMap (cluster-autoscaler, managed node groups).

    `regions`, `gpu_products` (GPU Feature Discovery names, as `nvidia.com/gpu.product`): what
    its nodes may be; None: not restricted (whatever the cloud offers). `gpus_per_node`,
    `gpu_memory_mib` (per GPU): the largest node it makes; None: unknown, assumed enough.
    `gpu_room`: GPUs it may still add (its limit less what it runs); None: no limit. `taints`:
    the taints its nodes start with.
    """

    name: str
    capacity_type: CapacityType
    regions: frozenset[str] | None = None
    gpu_products: frozenset[str] | None = None
    gpus_per_node: int | None = None
    gpu_memory_mib: int | None = None
    gpu_room: int | None = None
    taints: tuple[Taint, ...] = ()


@dataclass(frozen=True)
class FleetSnapshot:
    """The nodes that exist, and (`provisionable`) what node autoscalers can still add."""

    nodes: tuple[NodeInfo, ...] = ()
    observed_at: datetime | None = None
    provisionable: tuple[ProvisionablePool, ...] = ()


@dataclass(frozen=True)
class UtilizationSample:
    """The endpoint's GPU utilization at one moment, from per-pod attribution (agent)."""

    time: datetime
    # Mean GPU utilization across the endpoint's replicas (0-100).
    utilization_percent: float
    # Replicas that contributed (running, with telemetry).
    replicas: int
    # How many observations this sample summarizes: `placement.history` merges the samples of
    # one time bucket into their running mean so a day of history stays small.
    observations: int = 1


@dataclass(frozen=True)
class History:
    """The endpoint's recent GPU-utilization samples, oldest first. Empty = unknown."""

    samples: tuple[UtilizationSample, ...] = ()


@dataclass(frozen=True)
class Constraints:
    """What narrows the endpoint's own `residency.regions`.

    `namespace_regions`: the Namespace's `tidal.dev/allowed-regions` (None = no policy).
    `collection_regions`: the paired VectorCollection's `residency.regions` (None = no pairing
    or the collection does not exist).
    """

    namespace_regions: frozenset[str] | None = None
    collection_regions: frozenset[str] | None = None


@dataclass(frozen=True)
class EndpointPods:
    """The endpoint's own pods as observed (both Deployments).

    `gpus_by_node`: nvidia.com/gpu its non-terminated pods hold, per node name. The snapshot's
    `gpu_requested` counts every bound pod, the endpoint's own included, so without this the
    planner would see the endpoint's running replicas as somebody else's load and shrink it.
    `keys`: the pods' (namespace, name), to find their share of node telemetry: their own GPU
    load must neither make a node look hot to them nor go missing from their history.
    """

    gpus_by_node: Mapping[str, int] = field(default_factory=dict)
    keys: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class SpotHealth:
    """What the controller observed about the endpoint's spot replicas: spot pods that stayed
    Pending longer than the threshold, and the spot loss episode (when spot capacity was lost,
    when it was seen healthy again). Used with hysteresis so the mix does not flap.

    `pending_spot_pods`: spot pods whose PodScheduled condition has been False for longer than
    `pending_after_seconds` (`placement.planner.SPOT_PENDING_SECONDS` on a fixed fleet, the
    provisioning timeout where an autoscaler can add spot), or that a node autoscaler said it
    cannot provision a node for (`provision_failure`, its message). Pods that are bound and
    pulling images are not a capacity problem. `lost_since` and `recovered_since`: the previous
    plan's `Placement.spot_lost_since` and `Placement.spot_recovered_since`, as persisted.
    """

    pending_spot_pods: int = 0
    pending_after_seconds: float = 180
    provision_failure: str | None = None
    lost_since: datetime | None = None
    recovered_since: datetime | None = None
    # How long spot must go without loss before the planner moves replicas back to it. A
    # controller setting (e2e tests shorten it); the default outlasts a typical reclaim wave.
    return_after_seconds: int = 300


@dataclass(frozen=True)
class SpotRisk:
    """What Auto's interruption budget reads beyond the fleet (`placement.budget`).

    `prior`: the configured pessimistic reclaim rate and recovery defaults (operator settings).
    `reclaims`: reclaim episodes observed per spot pool, keyed `region/product` as
    `planner.spot_pools` names them; `watched_hours`: how long the operator has watched, so a
    pool not in `reclaims` reads as that long calm (0: the prior alone judges).
    `last_replica_start_seconds`, `last_cold_start_seconds`: the endpoint's
    `status.lastReplicaStartSeconds` and `lastColdStartSeconds`, what replacing a replica
    costs, the first preferred (None: never measured).
    """

    prior: ReclaimPrior = DEFAULT_PRIOR
    reclaims: Mapping[str, Reclaims] = field(default_factory=dict)
    watched_hours: float = 0.0
    last_cold_start_seconds: float | None = None
    last_replica_start_seconds: float | None = None

    @property
    def measured_start(self) -> tuple[float, str] | None:
        """The measured start the recovery counts and what it is ("replica start", else
        "cold start"); None: none measured."""
        if self.last_replica_start_seconds is not None:
            return self.last_replica_start_seconds, "replica start"
        if self.last_cold_start_seconds is not None:
            return self.last_cold_start_seconds, "cold start"
        return None

    @property
    def start_seconds(self) -> float | None:
        """The measured start the recovery counts (None: none measured)."""
        measured = self.measured_start
        return measured[0] if measured is not None else None


@dataclass(frozen=True)
class Placement:
    """The planner's decision for one endpoint."""

    desired: int
    spot: int
    reserved: int
    # Regions each Deployment may use (required node affinity); empty when nothing is placed.
    allowed_regions: tuple[str, ...]
    # Nodes to prefer (weighted preferred affinity, weight 1-100) and to avoid.
    preferred_nodes: tuple[tuple[str, int], ...] = ()
    avoided_nodes: tuple[str, ...] = ()
    # Placed condition: True with reason "Placed", or False with a CamelCase reason such as
    # "NoAllowedRegion", "NoFittingGPU", "InsufficientCapacity".
    placed: bool = True
    placed_reason: str = "Placed"
    # One line for status.placement.reason and the Placed condition's message.
    reason: str = ""
    # The spot loss episode, the hysteresis state: when spot was lost, and when it was first
    # seen healthy again (None while still lost); both None once spot is trusted again. They
    # change only when the episode does. The controller persists them and passes them back as
    # `SpotHealth.lost_since` / `recovered_since`.
    spot_lost_since: datetime | None = None
    spot_recovered_since: datetime | None = None
    # The least memory per GPU a node must have: `gpu.minMemoryMiB` raised to what the model's
    # weights need per GPU. Render it as required node affinity (nvidia.com/gpu.memory) so the
    # scheduler never binds a replica to a GPU the planner ruled out.
    min_gpu_memory_mib: int | None = None
    # Spread the spot replicas evenly over the allowed regions, as a hard limit (a topology
    # spread constraint on the region label, maxSkew 1): Auto's loss model counts on a region
    # holding no more than its share (`placement.budget.holdings`).
    spread_spot: bool = False
