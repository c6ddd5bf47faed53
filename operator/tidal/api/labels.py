"""Every label and annotation key Tidal reads or writes: the one home of the wire vocabulary.

A key spelled twice is a key that can drift, and a drifted key fails silently (a selector that
matches nothing, an annotation nobody reads). So every key is defined here, once, under one
name, and every other module imports it; `CapacityType` and the spot markers live here too
because they are what the capacity-type labels say. DESIGN.md "Cluster conventions the operator
reads" is the prose version of the node-label half.

Must not: define anything else (no parsing, no logic, no time formats: those are
`tidal.api.wire`), or import anything from Tidal. Label *values* appear only where they are part
of a convention (the spot markers, `MANAGER`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

# --- Node labels Tidal reads (set by the cloud, the cluster admin or NVIDIA GPU discovery) ----
NODE_REGION: Final = "topology.kubernetes.io/region"
NODE_ZONE: Final = "topology.kubernetes.io/zone"
NODE_HOSTNAME: Final = "kubernetes.io/hostname"
NODE_INSTANCE_TYPE: Final = "node.kubernetes.io/instance-type"
NODE_GPU_PRESENT: Final = "nvidia.com/gpu.present"
NODE_GPU_PRODUCT: Final = "nvidia.com/gpu.product"
NODE_GPU_MEMORY_MIB: Final = "nvidia.com/gpu.memory"
NODE_GPU_COUNT: Final = "nvidia.com/gpu.count"
# The GPU labels Karpenter's AWS provider puts on a node from its instance type, so they exist
# before the node does (GPU Feature Discovery's `nvidia.com/gpu.*` appear only once the GPU
# operator ran on it): a node autoscaler can provision for a pod that requires them.
KARPENTER_GPU_NAME: Final = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_MANUFACTURER: Final = "karpenter.k8s.aws/instance-gpu-manufacturer"
KARPENTER_GPU_COUNT: Final = "karpenter.k8s.aws/instance-gpu-count"
KARPENTER_GPU_MEMORY_MIB: Final = "karpenter.k8s.aws/instance-gpu-memory"
# GKE's accelerator label (set from the node pool, so before the node exists too).
GKE_ACCELERATOR: Final = "cloud.google.com/gke-accelerator"
# The extended resource pods request. The NVIDIA device plugin / GPU operator also taints GPU
# nodes with this key (so CPU pods stay off); every replica tolerates it.
GPU_RESOURCE: Final = "nvidia.com/gpu"

# --- Capacity type: Tidal's own label and the clouds' ---------------------------------------
# The same key marks nodes (set by the cluster admin) and pods (set by Tidal).
LABEL_CAPACITY_TYPE: Final = "tidal.dev/capacity-type"
KARPENTER_CAPACITY_TYPE: Final = "karpenter.sh/capacity-type"
EKS_CAPACITY_TYPE: Final = "eks.amazonaws.com/capacityType"
GKE_SPOT: Final = "cloud.google.com/gke-spot"
GKE_PREEMPTIBLE: Final = "cloud.google.com/gke-preemptible"
AKS_SCALESET_PRIORITY: Final = "kubernetes.azure.com/scalesetpriority"


class CapacityType(StrEnum):
    """`tidal.dev/capacity-type` values: what a node is, and which Deployment a replica is in."""

    SPOT = "spot"
    RESERVED = "reserved"


# Every label (key, value) that marks a node spot: Tidal's own and the clouds'. A node is spot
# when any of them says so, whatever else its labels claim (a cloud reclaims its spot nodes
# whatever a label says), and reserved when none does. Each cloud that taints its spot nodes uses
# the same key=value as the taint (AKS always; GKE, Karpenter and EKS when the admin asks), so
# spot replicas tolerate each as a NoSchedule taint too. GKE's older preemptible VMs are spot in
# all but name. Values compare exactly, as the scheduler compares them.
SPOT_MARKERS: Final[tuple[tuple[str, str], ...]] = (
    (LABEL_CAPACITY_TYPE, "spot"),
    (KARPENTER_CAPACITY_TYPE, "spot"),
    (EKS_CAPACITY_TYPE, "SPOT"),
    (GKE_SPOT, "true"),
    (GKE_PREEMPTIBLE, "true"),
    (AKS_SCALESET_PRIORITY, "spot"),
)

# --- Karpenter's own keys on nodes, NodeClaims and pods -----------------------------------------
KARPENTER_NODEPOOL: Final = "karpenter.sh/nodepool"
# The taint Karpenter puts on a node it is about to disrupt (consolidation, drift, interruption).
KARPENTER_DISRUPTED_TAINT: Final = "karpenter.sh/disrupted"
# A pod annotation that keeps Karpenter from voluntarily disrupting the node the pod runs on.
KARPENTER_DO_NOT_DISRUPT: Final = "karpenter.sh/do-not-disrupt"
# The taints a termination handler puts on a node that received a spot interruption notice:
# AWS Node Termination Handler's, and GKE's on a node about to be preempted.
AWS_SPOT_INTERRUPTION_TAINT: Final = "aws-node-termination-handler/spot-itn"
GKE_IMPENDING_TERMINATION_TAINT: Final = "cloud.google.com/impending-node-termination"
# A pod annotation the ReplicaSet controller reads when it scales down: the lowest cost goes
# first. Tidal lowers it on a replica whose node is leaving, so that replica, not its fresh
# replacement, is the one removed once the replacement is Ready.
POD_DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
# The label the Deployment controller puts on every pod of a ReplicaSet (never Tidal's to set,
# and refused in `spec.podTemplate`).
POD_TEMPLATE_HASH: Final = "pod-template-hash"
# The StorageClass annotation marking the cluster's default ("true"): a claim without
# storageClassName gets that class (clusters without one, EKS from 1.30, leave it Pending).
DEFAULT_STORAGE_CLASS: Final = "storageclass.kubernetes.io/is-default-class"

# --- Labels Tidal stamps on what it creates ----------------------------------------------------
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
# The value of `LABEL_MANAGED_BY` and `LABEL_PART_OF` on everything Tidal makes.
MANAGER: Final = "tidal"
LABEL_ENDPOINT: Final = "tidal.dev/endpoint"
LABEL_COLLECTION: Final = "tidal.dev/collection"
# On a shared model cache's PersistentVolumeClaim, its loader Job and the Job's pod: the cache's
# name (`kubectl delete pvc -l tidal.dev/model-cache=<name>` removes it, its Job going with it).
LABEL_MODEL_CACHE: Final = "tidal.dev/model-cache"
# On a model cache's claim: the model source it holds (hf://org/repo@revision, s3://..., gs://...).
MODEL_CACHE_URI: Final = "tidal.dev/model-uri"
# On a model cache's claim: the bytes its loader copied, as the loader measured them (its
# termination message), recorded once the loader Job succeeded.
MODEL_CACHE_BYTES: Final = "tidal.dev/model-bytes"

# --- Annotations Tidal stamps on the Deployments it renders -----------------------------------
# A digest of the pod template without node preferences (what decides whether applied
# preferences may be kept, and, copied onto the pods, which replicas run the current template)
# and of the whole rendered object (what lets an event-triggered reconcile skip an apply that
# would change nothing).
TEMPLATE_HASH: Final = "tidal.dev/template-hash"
RENDER_HASH: Final = "tidal.dev/render-hash"

# --- Signals on an InferenceEndpoint or VectorCollection, written by whatever fronts it -------
# (the gateway's contract with the operator is `tidal.api.signals`)
WAKE_REQUESTED_AT: Final = "tidal.dev/wake-requested-at"
LAST_REQUEST_TIME: Final = "tidal.dev/last-request-time"
# The older wake signal of a VectorCollection (any new value wakes it); still honoured, but
# both kinds now wake on a new `WAKE_REQUESTED_AT`.
WAKE: Final = "tidal.dev/wake"
# A VectorCollection's cold tier on demand (RFC 3339 values; each new value is acted on once):
# snapshot to the cold tier now and, once the upload verified, delete the engine's copy; and
# restore the last verified snapshot into an offloaded, absent or empty collection.
OFFLOAD_REQUESTED_AT: Final = "tidal.dev/offload-requested-at"
RESTORE_REQUESTED_AT: Final = "tidal.dev/restore-requested-at"

# --- The operator's own memory on an InferenceEndpoint ----------------------------------------
SPOT_LOST_SINCE: Final = "tidal.dev/spot-lost-since"
SPOT_RECOVERED_SINCE: Final = "tidal.dev/spot-recovered-since"
UTILIZATION_HISTORY: Final = "tidal.dev/gpu-utilization-history"
# Kopf keeps its own bookkeeping in annotations under this prefix (never in status).
KOPF_PREFIX: Final = "tidal.dev"

# --- Node annotations: the agent's telemetry and the simulator's override ---------------------
GPU_TELEMETRY: Final = "tidal.dev/gpu-telemetry"
SIMULATED_GPU_UTILIZATION: Final = "tidal.dev/simulated-gpu-utilization"

# --- Namespace annotation: the residency policy -----------------------------------------------
ALLOWED_REGIONS: Final = "tidal.dev/allowed-regions"

# --- What the embedded dev cluster puts on its simulated nodes (besides the keys above) -------
LABEL_SIMULATED: Final = "tidal.dev/simulated"
NODE_OS: Final = "kubernetes.io/os"
NODE_ARCH: Final = "kubernetes.io/arch"
NODE_TTL: Final = "node.alpha.kubernetes.io/ttl"
# The node lifecycle controller's taint on a node that is not Ready yet (or any more).
NOT_READY_TAINT: Final = "node.kubernetes.io/not-ready"
# Hands a node to KWOK, which then plays its kubelet.
KWOK_NODE: Final = "kwok.x-k8s.io/node"
# A simulated replica's model-loading time (a Go duration such as "45s"): KWOK keeps the pod
# Running but not Ready this long; without it the dev cluster's default applies.
SIMULATED_STARTUP: Final = "tidal.dev/simulated-startup"
# The size of a simulated model's weights in bytes, on a replica or loader pod (set through
# podTemplate.metadata.annotations): KWOK derives the pod's start-up from what the pod does with
# them (download, then read from local disk; or read from a mounted volume) and the loader's
# copy time and reported size (`tidal.devcluster.fleet.ModelLoad`).
SIMULATED_WEIGHTS_BYTES: Final = "tidal.dev/simulated-weights-bytes"
# When a simulated spot interruption takes its node (`tidal dev interrupt`), on the Node.
SIMULATED_TERMINATION_TIME: Final = "tidal.dev/simulated-termination-time"
