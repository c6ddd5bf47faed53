"""Builders for an InferenceEndpoint's children: one Deployment per capacity type and one Service.

Every function is a pure function of the parsed endpoint (plus the replica count the placement
decision chose) returning a complete object in wire form, ready for server-side apply. The
reconcile applies exactly what these return, so a field not rendered here is a field Tidal does
not own. No IO, no clock, no Kopf, no kubernetes client.

Capacity is expressed with required node affinity rather than `nodeSelector` because a node is spot
when *any* of several cloud markers says so (OR across node selector terms), and reserved when none
does (a node without any marker is reserved, DESIGN.md §1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal

from tidal.api.common import API_VERSION
from tidal.api.inference import KIND, Engine, InferenceEndpoint, Quantization
from tidal.errors import PermanentError

__all__ = [
    "CAPACITY_TYPES",
    "CapacityType",
    "child_labels",
    "deployment_name",
    "endpoint_url",
    "render_deployment",
    "render_service",
]

CapacityType = Literal["spot", "reserved"]
CAPACITY_TYPES: Final[tuple[CapacityType, ...]] = ("spot", "reserved")

APP_NAME: Final = "tidal-inference"
MANAGER: Final = "tidal"
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_ENDPOINT: Final = "tidal.dev/endpoint"
# The same key marks nodes (set by the cluster admin) and pods (set by Tidal).
LABEL_CAPACITY_TYPE: Final = "tidal.dev/capacity-type"

NODE_REGION: Final = "topology.kubernetes.io/region"
NODE_GPU_PRODUCT: Final = "nvidia.com/gpu.product"
NODE_GPU_MEMORY_MIB: Final = "nvidia.com/gpu.memory"
GPU_RESOURCE: Final = "nvidia.com/gpu"

# The clouds' own spot markers (label key, value meaning spot). Each cloud that taints its spot
# nodes uses the same key=value as the taint (AKS always; GKE, Karpenter and EKS when the admin
# asks), so spot replicas tolerate each as a NoSchedule taint too. An explicit Tidal marker wins
# over all of these.
CLOUD_SPOT_MARKERS: Final[tuple[tuple[str, str], ...]] = (
    ("karpenter.sh/capacity-type", "spot"),
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("cloud.google.com/gke-spot", "true"),
    ("cloud.google.com/gke-preemptible", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
)

CONTAINER_NAME: Final = "engine"
PORT_NAME: Final = "http"
# Engines write model caches under $HOME / $HF_HOME; with a non-root user and no writable home
# the first download fails, so give them a scratch volume.
CACHE_DIR: Final = "/var/cache/tidal"
# Most engine images default to root; the restricted Pod Security profile needs a numeric
# non-root user for runAsNonRoot to pass kubelet's check.
RUN_AS_USER: Final = 1000

# Service names must be DNS-1035 labels; the endpoint name is also a label value.
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


def render_deployment(ie: InferenceEndpoint, capacity_type: CapacityType, replicas: int) -> Object:
    """The Deployment running `replicas` replicas of `ie` on `capacity_type` nodes only.

    A zero share is rendered as `replicas: 0`, never omitted: the Deployment stays, so the mix
    is visible and scaling back up is a patch, not a create.
    """
    if replicas < 0:
        raise ValueError(f"replicas must not be negative, got {replicas}")
    name = _name(ie)
    labels = _labels(name, capacity_type)
    selector = {LABEL_NAME: APP_NAME, LABEL_ENDPOINT: name, LABEL_CAPACITY_TYPE: capacity_type}
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
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": _node_selector_terms(ie, capacity_type)
                }
            }
        },
        "tolerations": _tolerations(capacity_type),
        "containers": [_container(ie)],
        "volumes": [
            {"name": "cache", "emptyDir": {}},
            # Engines share tensors between GPU workers through /dev/shm; the runtime's 64 MiB
            # default is too small for tensor parallelism.
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name, capacity_type),
            "namespace": _namespace(ie),
            "labels": labels,
            "ownerReferences": [_owner_reference(ie)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def render_service(ie: InferenceEndpoint) -> Object:
    """The ClusterIP Service `<name>` in front of both Deployments."""
    name = _name(ie)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": _namespace(ie),
            "labels": _labels(name, None),
            "ownerReferences": [_owner_reference(ie)],
        },
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
        labels[LABEL_CAPACITY_TYPE] = capacity_type
    return labels


def _owner_reference(ie: InferenceEndpoint) -> Object:
    uid = ie.metadata.get("uid")
    if not isinstance(uid, str) or not uid:
        raise PermanentError("metadata.uid is missing: children need it for ownerReferences")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": _name(ie),
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _node_selector_terms(ie: InferenceEndpoint, capacity_type: CapacityType) -> list[Object]:
    """Terms are ORed, expressions within a term ANDed; every term carries the common bounds."""
    common: list[Object] = [_expr(NODE_REGION, "In", ie.spec.residency.regions)]
    gpu = ie.spec.gpu
    if gpu.products:
        common.append(_expr(NODE_GPU_PRODUCT, "In", gpu.products))
    if gpu.min_memory_mib is not None:
        # `Gt` is strict and takes one integer.
        common.append(_expr(NODE_GPU_MEMORY_MIB, "Gt", [str(gpu.min_memory_mib - 1)]))

    if capacity_type == "spot":
        # Spot: marked spot by Tidal, or by a cloud and not overridden as reserved by Tidal.
        capacity_terms = [[_expr(LABEL_CAPACITY_TYPE, "In", ["spot"])]] + [
            [_expr(LABEL_CAPACITY_TYPE, "NotIn", ["reserved"]), _expr(key, "In", [value])]
            for key, value in CLOUD_SPOT_MARKERS
        ]
    else:
        # Reserved is the exact complement: marked reserved by Tidal, or carrying no spot
        # marker at all. NotIn also matches nodes without the label.
        capacity_terms = [
            [_expr(LABEL_CAPACITY_TYPE, "In", ["reserved"])],
            [_expr(LABEL_CAPACITY_TYPE, "NotIn", ["spot"])]
            + [_expr(key, "NotIn", [value]) for key, value in CLOUD_SPOT_MARKERS],
        ]
    # Fresh dicts per term: callers may edit the result, and aliasing would leak edits across terms.
    return [
        {"matchExpressions": [_expr(e["key"], e["operator"], e["values"]) for e in common] + term}
        for term in capacity_terms
    ]


def _expr(key: str, operator: str, values: list[str]) -> Object:
    return {"key": key, "operator": operator, "values": list(values)}


def _tolerations(capacity_type: CapacityType) -> list[Object]:
    tolerations: list[Object] = [
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    ]
    if capacity_type == "spot":
        markers = [(LABEL_CAPACITY_TYPE, "spot"), *CLOUD_SPOT_MARKERS]
        tolerations += [
            {"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}
            for key, value in markers
        ]
    return tolerations


def _container(ie: InferenceEndpoint) -> Object:
    runtime = ie.spec.runtime
    requests: dict[str, str] = {}
    if runtime.cpu is not None:
        requests["cpu"] = runtime.cpu
    if runtime.memory is not None:
        requests["memory"] = runtime.memory
    # Limits equal to requests (plus the GPUs) give the Guaranteed QoS class when both are set:
    # an inference replica is the last thing the kubelet should evict under node pressure.
    limits: dict[str, str | int] = {**requests, GPU_RESOURCE: ie.spec.gpu.count}
    resources: Object = {"limits": limits}
    if requests:
        resources["requests"] = requests
    container: Object = {
        "name": CONTAINER_NAME,
        "image": runtime.effective_image,
        "args": _engine_args(ie) + list(runtime.args),
        "env": _env(ie),
        "ports": [{"name": PORT_NAME, "containerPort": runtime.port, "protocol": "TCP"}],
        "resources": resources,
        "readinessProbe": _readiness_probe(runtime.engine),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "cache", "mountPath": CACHE_DIR},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    return container


def _engine_args(ie: InferenceEndpoint) -> list[str]:
    """The arguments that make each engine serve `model.name` on `runtime.port`."""
    model, runtime = ie.spec.model, ie.spec.runtime
    port = str(runtime.port)
    fp8 = model.quantization is Quantization.FP8
    if runtime.engine is Engine.VLLM:
        # INT8/INT4 checkpoints carry their scheme in their config; vLLM detects it itself.
        return ["--model", model.name, "--port", port] + (["--quantization", "fp8"] if fp8 else [])
    if runtime.engine is Engine.TGI:
        return ["--model-id", model.name, "--port", port] + (["--quantize", "fp8"] if fp8 else [])
    if runtime.engine is Engine.Triton:
        # Triton reads S3 repositories natively; anything else is expected mounted at /models.
        repository = model.uri if model.uri and model.uri.startswith("s3://") else "/models"
        return ["tritonserver", f"--model-repository={repository}", f"--http-port={port}"]
    return []


def _env(ie: InferenceEndpoint) -> list[Object]:
    defaults: dict[str, Object] = {
        "HOME": {"name": "HOME", "value": CACHE_DIR},
        "HF_HOME": {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
    }
    user = {var.name: var.to_wire() for var in ie.spec.runtime.env}
    # Users override defaults by name; a duplicate name would make server-side apply reject
    # the list (env is a map keyed by name).
    return [var for name, var in defaults.items() if name not in user] + list(user.values())


_HEALTH_PATHS: Final[Mapping[Engine, str]] = {
    Engine.VLLM: "/health",
    Engine.TGI: "/health",
    Engine.Triton: "/v2/health/ready",
}


def _readiness_probe(engine: Engine) -> Object:
    path = _HEALTH_PATHS.get(engine)
    # A custom engine's health path is unknown; an open port is the most we can assume.
    action: Object = (
        {"httpGet": {"path": path, "port": PORT_NAME}}
        if path
        else {"tcpSocket": {"port": PORT_NAME}}
    )
    return {**action, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3}
