"""Builders for an InferenceEndpoint's children: one Deployment per capacity type and one Service.

Every function is a pure function of the parsed endpoint and the `Share` the placement decision
gave one Deployment (replicas, regions, nodes to prefer and to avoid, least GPU memory), returning
a complete object in wire form, ready for server-side apply. The reconcile applies exactly what
these return, so a field not rendered here is a field Tidal does not own. No IO, no clock, no
Kopf, no kubernetes client, and no import of `tidal.placement` (a sibling layer): the controller
translates a placement into shares. What the engine needs inside the pod (its arguments, model
volumes, init containers, probes, /dev/shm, disk) is `tidal.render.engines`'; this module puts
those parts into the Deployment around them.

Capacity is expressed with required node affinity rather than `nodeSelector` because a node is spot
when *any* of several markers says so (OR across node selector terms), and reserved when none
does (a node without any marker is reserved, DESIGN.md §1). This must agree with how
`tidal.placement.fleet` classifies nodes, or the planner counts capacity the scheduler will not
use, so both read the one list: the cluster's spot markers (`tidal.api.conventions`; the clouds'
defaults are `tidal.api.labels.SPOT_MARKERS`), carried in the share.

Hard constraints (capacity type, regions, GPU product and memory, avoided nodes) are always the
current decision. Node preferences are soft and move with telemetry, and any change of a pod
template restarts every replica (a model reload), so `keep_preferences` carries the applied
preferences over while nothing else in the template changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from tidal.api.conventions import DEFAULT_CONVENTIONS, Conventions
from tidal.api.endpoint import KIND, InferenceEndpoint
from tidal.api.gpulabels import INSTANCE_TYPE
from tidal.api.labels import (
    GPU_RESOURCE,
    KARPENTER_DO_NOT_DISRUPT,
    LABEL_CAPACITY_TYPE,
    LABEL_ENDPOINT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGER,
    NODE_HOSTNAME,
    RENDER_HASH,
    TEMPLATE_HASH,
    CapacityType,
)
from tidal.api.wire import as_mapping
from tidal.errors import PermanentError
from tidal.render.engines import (
    CONTAINER_SECURITY_CONTEXT,
    PORT_NAME,
    EnginePod,
    engine_pod,
    metrics_ports,
)
from tidal.render.owners import owner_reference
from tidal.render.podtemplate import merge_pod_template

__all__ = [
    "CAPACITY_TYPES",
    "Share",
    "child_labels",
    "deployment_name",
    "endpoint_url",
    "keep_preferences",
    "render_deployment",
    "render_hash",
    "render_pdb",
    "render_service",
    "stamp",
]

# One Deployment per capacity type, spot first.
CAPACITY_TYPES: Final[tuple[CapacityType, ...]] = tuple(CapacityType)

APP_NAME: Final = "tidal-inference"

CONTAINER_NAME: Final = "engine"
# Most engine images default to root; the restricted Pod Security profile needs a numeric
# non-root user for runAsNonRoot to pass kubelet's check.
RUN_AS_USER: Final = 1000

# Service names must be DNS-1035 labels; the endpoint name is also a label value.
_PREFERRED: Final = "preferredDuringSchedulingIgnoredDuringExecution"

_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 63

Object = dict[str, Any]


def deployment_name(endpoint: str, capacity_type: CapacityType) -> str:
    """`<endpoint>-spot` or `<endpoint>-reserved`."""
    return f"{endpoint}-{capacity_type}"


def child_labels(endpoint: str) -> dict[str, str]:
    """The labels that select every child of an endpoint (for listing them back)."""
    return {LABEL_MANAGED_BY: MANAGER, LABEL_ENDPOINT: endpoint}


def endpoint_url(ie: InferenceEndpoint) -> str:
    """The in-cluster URL clients call (the Service's cluster DNS name)."""
    name, namespace = _name(ie), _namespace(ie)
    return f"http://{name}.{namespace}.svc.cluster.local:{ie.spec.runtime.port}"


@dataclass(frozen=True)
class Share:
    """What one Deployment is asked to run, and where.

    `regions`: the allowed regions (empty: none, and no node matches). `preferred_nodes`: node
    names with a preferred-affinity weight (1-100). `avoided_nodes`: node names the replicas must
    not use. `min_gpu_memory_mib`: the least GPU memory (MiB per GPU) a node needs (None: any).
    `conventions`: the cluster's node labels (`tidal.api.conventions`): the region label, the spot
    markers, and the GPU labels the required affinity names (those the capacity carries before
    it exists).
    """

    replicas: int
    regions: tuple[str, ...]
    preferred_nodes: tuple[tuple[str, int], ...] = ()
    avoided_nodes: tuple[str, ...] = ()
    min_gpu_memory_mib: int | None = None
    conventions: Conventions = DEFAULT_CONVENTIONS
    # Spread the replicas evenly over the regions, hard (`Placement.spread_spot`).
    spread_regions: bool = False


def render_deployment(ie: InferenceEndpoint, capacity_type: CapacityType, share: Share) -> Object:
    """The Deployment running `share.replicas` replicas of `ie` on `capacity_type` nodes only.

    A zero share is rendered as `replicas: 0`, never omitted: the Deployment stays, so the mix
    is visible and scaling back up is a patch, not a create.
    """
    if share.replicas < 0:
        raise ValueError(f"replicas must not be negative, got {share.replicas}")
    name = _name(ie)
    labels = _labels(name, capacity_type)
    selector = {
        LABEL_NAME: APP_NAME,
        LABEL_ENDPOINT: name,
        LABEL_CAPACITY_TYPE: str(capacity_type),
    }
    node_affinity: Object = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": _node_selector_terms(ie, capacity_type, share)
        }
    }
    engine = engine_pod(ie)
    pod_spec: Object = {
        # Service links would inject e.g. VLLM_PORT=tcp://... for a Service named `vllm`,
        # which vLLM reads as its own setting and crashes on.
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": {"nodeAffinity": node_affinity},
        "tolerations": _tolerations(capacity_type, share.conventions.spot_markers),
        # The drain, then the engine's own shutdown (it finishes or aborts what is left, frees
        # the GPUs), before the kubelet kills it.
        "terminationGracePeriodSeconds": ie.spec.runtime.drain_seconds + ENGINE_STOP_SECONDS,
        "containers": [_container(ie, engine)],
        # The engine's scratch space, /dev/shm and, where the weights are local, their volume
        # (`tidal.render.engines`).
        "volumes": engine.volumes,
    }
    if engine.init_containers:
        pod_spec["initContainers"] = engine.init_containers
    if share.spread_regions:
        # A hard limit, not a preference: the placement's loss model counts on no region
        # holding more than its share, and a replica a region cannot take stays Pending (and
        # moves to reserved as spot loss) rather than piling into another region.
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": share.conventions.region_label,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": dict(selector)},
            }
        ]
    # A replica starts protected from a node autoscaler's voluntary disruption (Karpenter's
    # consolidation would restart a model load); the reconcile lifts it once the pod is Ready.
    annotations = {KARPENTER_DO_NOT_DISRUPT: "true"}
    template: Object = {
        "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
        "spec": pod_spec,
    }
    # What the cluster adds (spec.podTemplate) is part of the template: a change rolls replicas.
    template = merge_pod_template(template, ie, share.conventions)
    # The digest is taken before the preferences go in: they are what it leaves out.
    template_hash = _digest(template)
    # Pods carry it too: status counts a replica ready only on the current template, from the
    # pods themselves, without waiting for the Deployment controller to observe a change.
    template["metadata"]["annotations"] = {
        **template["metadata"]["annotations"],
        TEMPLATE_HASH: template_hash,
    }
    preferred = _preferred_terms(share.preferred_nodes)
    if preferred:
        # Tidal's preferences first, then any the override added (inside the digest).
        node_affinity = template["spec"]["affinity"]["nodeAffinity"]
        node_affinity[_PREFERRED] = preferred + node_affinity.get(_PREFERRED, [])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name, capacity_type),
            "namespace": _namespace(ie),
            "labels": labels,
            "annotations": {TEMPLATE_HASH: template_hash},
            "ownerReferences": [_owner_reference(ie)],
        },
        "spec": {
            "replicas": share.replicas,
            "selector": {"matchLabels": selector},
            "template": template,
        },
    }


def keep_preferences(rendered: Object, existing: Mapping[str, Any] | None) -> Object:
    """`rendered` with the node preferences of the `existing` Deployment, unless fresh ones
    cost no restart: there is no Deployment yet, the rest of the template changes anyway
    (another `TEMPLATE_HASH`), or it scales up from zero. A new object either way, which shares
    with `rendered` only what it leaves as rendered, and never what `existing` holds: `stamp`
    copies the whole of it before it is applied, so one full copy per child is enough.

    Stale preferences only steer replicas created later (scale-up, replacements) towards nodes
    that were cooler before; they never admit a node the hard constraints exclude.
    """
    result = dict(rendered)
    if existing is None:
        return result
    old_metadata = as_mapping(existing.get("metadata"))
    old_spec = as_mapping(existing.get("spec"))
    if as_mapping(old_metadata.get("annotations")).get(TEMPLATE_HASH) != (
        result["metadata"].get("annotations") or {}
    ).get(TEMPLATE_HASH):
        return result
    if not old_spec.get("replicas") and result["spec"]["replicas"]:
        return result  # nothing runs yet: the first replicas get the current preferences
    old_affinity = as_mapping(
        as_mapping(
            as_mapping(as_mapping(old_spec.get("template")).get("spec")).get("affinity")
        ).get("nodeAffinity")
    )
    # Fresh dicts down to the node affinity, the one part edited here.
    spec = result["spec"] = dict(result["spec"])
    template = spec["template"] = dict(spec["template"])
    pod_spec = template["spec"] = dict(template["spec"])
    affinity_of = pod_spec["affinity"] = dict(pod_spec["affinity"])
    affinity = affinity_of["nodeAffinity"] = dict(affinity_of["nodeAffinity"])
    affinity.pop(_PREFERRED, None)
    if old_affinity.get(_PREFERRED):
        affinity[_PREFERRED] = _copy_json(old_affinity[_PREFERRED])
    return result


def render_hash(obj: Mapping[str, Any]) -> str:
    """The digest `stamp` records: of the object as rendered, without the digest itself."""
    return _digest(_unstamped(obj))


def stamp(obj: Object) -> Object:
    """`obj` with its `RENDER_HASH` annotation set (a copy), ready to apply.

    Two renderings with the same stamp apply the same fields, so an event-triggered reconcile
    may skip an apply whose stamp the live object already carries.
    """
    # One serialization gives both the digest and the copy (every reconcile stamps each
    # child: a deep copy per step was a tenth of the operator's CPU at 100 endpoints).
    text = _canonical(_unstamped(obj))
    result: Object = json.loads(text)
    metadata = result.setdefault("metadata", {})
    metadata.setdefault("annotations", {})[RENDER_HASH] = _sha(text)
    return result


def _unstamped(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` without its `RENDER_HASH` annotation (sharing everything else with it)."""
    body = dict(obj)
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("annotations"), Mapping):
        annotations = {k: v for k, v in metadata["annotations"].items() if k != RENDER_HASH}
        body["metadata"] = {**metadata, "annotations": annotations}
    return body


def render_pdb(ie: InferenceEndpoint, min_available: int) -> Object:
    """The PodDisruptionBudget `<name>` over both Deployments' replicas: evictions (a node
    drain, Karpenter's disruption of a node) wait until `min_available` replicas stay Ready
    elsewhere, so a replica on a leaving node goes only once its replacement serves. Replicas
    that are not Ready may always be evicted (they serve nothing, and a stuck one must not hold
    a drain forever)."""
    name = _name(ie)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _shared_child_metadata(ie),
        "spec": {
            "minAvailable": max(0, min_available),
            "selector": {"matchLabels": {LABEL_NAME: APP_NAME, LABEL_ENDPOINT: name}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def render_service(ie: InferenceEndpoint) -> Object:
    """The ClusterIP Service `<name>` in front of both Deployments."""
    name = _name(ie)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _shared_child_metadata(ie),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_NAME: APP_NAME, LABEL_ENDPOINT: name},
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": ie.spec.runtime.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


# --- parts ------------------------------------------------------------------------------------


def _name(ie: InferenceEndpoint) -> str:
    name = ie.metadata.get("name")
    if not isinstance(name, str) or not name:
        raise PermanentError("metadata.name is missing")
    if len(name) > _MAX_NAME or not _DNS_1035_LABEL.match(name):
        raise PermanentError(
            f"metadata.name {name!r} must be a DNS-1035 label of at most {_MAX_NAME} characters "
            "(it names the Service and is a label value)"
        )
    return name


def _namespace(ie: InferenceEndpoint) -> str:
    namespace = ie.metadata.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise PermanentError("metadata.namespace is missing")
    return namespace


def _labels(name: str, capacity_type: CapacityType | None) -> dict[str, str]:
    labels = {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: name,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_ENDPOINT: name,
    }
    if capacity_type is not None:
        labels[LABEL_CAPACITY_TYPE] = str(capacity_type)
    return labels


def _shared_child_metadata(ie: InferenceEndpoint) -> Object:
    """The metadata of a child both Deployments share (the Service, the PodDisruptionBudget):
    named like the endpoint, labelled without a capacity type, owned by it."""
    name = _name(ie)
    return {
        "name": name,
        "namespace": _namespace(ie),
        "labels": _labels(name, None),
        "ownerReferences": [_owner_reference(ie)],
    }


def _owner_reference(ie: InferenceEndpoint) -> Object:
    return owner_reference(KIND, _name(ie), ie.metadata)


def _node_selector_terms(
    ie: InferenceEndpoint, capacity_type: CapacityType, share: Share
) -> list[Object]:
    """Terms are ORed, expressions within a term ANDed; every term carries the common bounds."""
    region_label = share.conventions.region_label
    if share.regions:
        common: list[Object] = [_expr(region_label, "In", list(share.regions))]
    else:
        # No allowed region: the pair matches no node, so even a hand-scaled Deployment
        # cannot put a replica anywhere (`In` with no values is invalid).
        common = [
            {"key": region_label, "operator": "Exists"},
            {"key": region_label, "operator": "DoesNotExist"},
        ]
    common += _gpu_expressions(ie, share)
    markers = share.conventions.spot_markers
    if share.avoided_nodes:
        common.append(_expr(NODE_HOSTNAME, "NotIn", sorted(share.avoided_nodes)))

    if capacity_type == CapacityType.SPOT:
        # Spot: any marker says spot.
        capacity_terms = [[_expr(key, "In", [value])] for key, value in markers]
    else:
        # Reserved is the exact complement: no marker says spot. NotIn also matches nodes
        # without the label.
        capacity_terms = [[_expr(key, "NotIn", [value]) for key, value in markers]]
    # Fresh dicts per term: callers may edit the result, and aliasing would leak edits across terms.
    return [{"matchExpressions": [_copy_expr(e) for e in common] + term} for term in capacity_terms]


def _gpu_expressions(ie: InferenceEndpoint, share: Share) -> list[Object]:
    """The GPU the replicas need, on the labels of the required profile."""
    gpu, conventions = ie.spec.gpu, share.conventions
    labels = conventions.required
    floors = [m for m in (gpu.min_memory_mib, share.min_gpu_memory_mib) if m is not None]
    floor = max(floors) if floors else None
    if labels.name == INSTANCE_TYPE:
        # The instance types the replicas fit (product, memory, GPU count), so the node
        # autoscaler launches only those. None fits: a pair that matches no node (`In` with no
        # values is invalid); the planner reports NoFittingGPU.
        types = conventions.instance_types_for(gpu.products, floor, gpu.count)
        if not types:
            return [
                {"key": labels.product_label, "operator": "Exists"},
                {"key": labels.product_label, "operator": "DoesNotExist"},
            ]
        return [_expr(labels.product_label, "In", sorted(types))]
    expressions: list[Object] = []
    if gpu.products:
        values = sorted({value for product in gpu.products for value in labels.values_of(product)})
        expressions.append(_expr(labels.product_label, "In", values))
    if floor is not None and labels.memory_label is not None:
        # `Gt` is strict and takes one integer. A profile without a memory label (GKE) leaves
        # the floor to the product list and the planner's fit check.
        expressions.append(_expr(labels.memory_label, "Gt", [str(floor - 1)]))
    return expressions


def _preferred_terms(preferred: tuple[tuple[str, int], ...]) -> list[Object]:
    """One weighted term per weight, heaviest first, naming its nodes (sorted)."""
    by_weight: dict[int, list[str]] = {}
    for node, weight in preferred:
        by_weight.setdefault(max(1, min(100, weight)), []).append(node)
    return [
        {
            "weight": weight,
            "preference": {"matchExpressions": [_expr(NODE_HOSTNAME, "In", sorted(nodes))]},
        }
        for weight, nodes in sorted(by_weight.items(), reverse=True)
    ]


def _expr(key: str, operator: str, values: list[str]) -> Object:
    return {"key": key, "operator": operator, "values": list(values)}


def _copy_expr(expr: Object) -> Object:
    """A copy of a node selector expression (strings, and a list of strings): what
    `copy.deepcopy` would give, at a fraction of its cost (every render copies a dozen)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in expr.items()}


def _tolerations(capacity_type: CapacityType, markers: tuple[tuple[str, str], ...]) -> list[Object]:
    tolerations: list[Object] = [
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    ]
    if capacity_type == CapacityType.SPOT:
        tolerations += [
            {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
            for key, value in markers
        ]
    return tolerations


# Seconds an engine gets after SIGTERM, once the drain is over, before the kubelet kills it.
ENGINE_STOP_SECONDS: Final = 30


def _container(ie: InferenceEndpoint, engine: EnginePod) -> Object:
    runtime = ie.spec.runtime
    requests: dict[str, str] = {}
    if runtime.cpu is not None:
        requests["cpu"] = runtime.cpu
    if runtime.memory is not None:
        requests["memory"] = runtime.memory
    # Limits equal to requests (plus the GPUs) give the Guaranteed QoS class when both are set:
    # an inference replica is the last thing the kubelet should evict under node pressure.
    limits: dict[str, str | int] = {**requests, GPU_RESOURCE: ie.spec.gpu.count}
    if engine.ephemeral_storage is not None:
        # A request only: the scheduler picks a node with room for the weights, and no limit
        # evicts a replica whose caches grow past the estimate.
        requests["ephemeral-storage"] = engine.ephemeral_storage
    resources: Object = {"limits": limits}
    if requests:
        resources["requests"] = requests
    container: Object = {
        "name": CONTAINER_NAME,
        "image": runtime.effective_image,
        "args": engine.args,
        "env": engine.env,
        "ports": [
            {"name": PORT_NAME, "containerPort": runtime.port, "protocol": "TCP"},
            *metrics_ports(runtime.engine),
        ],
        "resources": resources,
        **engine.probes,
        **_drain(runtime.drain_seconds),
        "securityContext": _copy_json(CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": engine.volume_mounts,
    }
    return container


def _drain(seconds: int) -> Object:
    """A stopping replica keeps serving what it has for `seconds` before its engine is told to
    stop: the pod leaves the Service's endpoints and the gateway's routing the moment it is
    deleted, and the pause lets in-flight requests (streams) finish, since engines abort them on
    SIGTERM. The kubelet's own sleep action (Kubernetes >= 1.30), so no shell is needed in the
    image."""
    if seconds <= 0:
        return {}
    return {"lifecycle": {"preStop": {"sleep": {"seconds": seconds}}}}


def _digest(obj: object) -> str:
    return _sha(_canonical(obj))


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _copy_json(obj: Any) -> Any:
    """A deep copy of a JSON value (several times faster than `copy.deepcopy`)."""
    return json.loads(json.dumps(obj))
