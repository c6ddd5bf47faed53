"""What the admission webhooks decide: is this InferenceEndpoint or VectorCollection acceptable
here, and if not, which field is wrong and why.

Owns: the checks the CRD schema and CEL cannot make because they need other objects (the
namespace policy, the referenced VectorCollection, the GPUs the cluster has), the translation
of pydantic validation errors and rule messages into field paths (`spec_problems`,
`named_problem`), and the "ratchet" that keeps an unrelated update from being refused over a
problem it did not introduce (`introduced`).

Each check returns `Problem`s (the field first, then what is wrong) or advisory warnings; the
webhook joins them into the message the API server shows. The same residency rule is enforced
again at reconcile time (the placement planner), so nothing here is the last line of defence:
these functions exist to say "no" early and precisely.

Pure: no IO, no clock, no Kopf. Callers pass what they observed (`Cluster`) and what placement
computes (`gpu_need_mib`); this module does not import sibling decision packages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from tidal.api.collection import VectorCollectionSpec
from tidal.api.endpoint import InferenceEndpointSpec
from tidal.api.labels import ALLOWED_REGIONS

__all__ = [
    "Cluster",
    "Problem",
    "collection_problems",
    "endpoint_problems",
    "endpoint_warnings",
    "introduced",
    "named_problem",
    "rejection",
    "residency_problems",
    "spec_problems",
]

# A rejection lists at most this many problems; the rest are counted.
MAX_PROBLEMS: Final = 5
_PATH: Final = re.compile(r"(metadata|spec)(\.[A-Za-z0-9]+)+")
# Values echoed back in a message are cut to this length (a 100 kB string stays out of it).
_MAX_ECHO: Final = 80


@dataclass(frozen=True)
class Problem:
    """One reason to refuse the object: the offending field (wire path) and what is wrong.

    `depends_on` names other fields whose change also makes the problem "introduced" by an
    update (a region overlap depends on both `residency.regions` and `vectorCollectionRef`).
    """

    field: str
    message: str
    depends_on: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Cluster:
    """What the webhook observed besides the object itself.

    `namespace_regions`: the namespace policy (`residency.policy`; None = no policy).
    `collection_found`: whether `vectorCollectionRef` names an existing VectorCollection
    (ignored when there is no reference); `collection_regions` its `residency.regions`.
    `gpu_memory_mib`: per GPU product seen on a node, the largest `nvidia.com/gpu.memory`;
    `gpus_per_node`: per product, the largest `nvidia.com/gpu` allocatable of one node.
    Both empty when nodes could not be read (then nothing is concluded from them).
    """

    namespace: str = ""
    namespace_regions: frozenset[str] | None = None
    collection_found: bool = False
    collection_regions: frozenset[str] | None = None
    gpu_memory_mib: Mapping[str, int] = field(default_factory=dict)
    gpus_per_node: Mapping[str, int] = field(default_factory=dict)


def spec_problems(model: type[BaseModel], spec: Mapping[str, Any]) -> list[Problem]:
    """The spec's validation errors as parsed by the API model, each at its wire path.

    The CRD schema and CEL catch almost all of these first; this is the net under them, so an
    admitted object is always one the reconcile can parse.
    """
    try:
        model.model_validate(dict(spec))
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            path = ".".join(["spec", *(str(part) for part in error["loc"])])
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(Problem(path, message))
        return problems
    return []


def named_problem(message: str, default_field: str = "metadata.name") -> Problem:
    """A rule's own message ("metadata.name 'x' must be ...") as a Problem at the field it
    starts with; `default_field` when it does not start with a wire path."""
    head, _, rest = message.partition(" ")
    if rest and _PATH.fullmatch(head):
        return Problem(head, rest)
    return Problem(default_field, message)


def residency_problems(regions: Iterable[str], cluster: Cluster) -> list[Problem]:
    """`spec.residency.regions` outside the namespace's `tidal.dev/allowed-regions`."""
    if cluster.namespace_regions is None:
        return []
    forbidden = sorted(set(regions) - cluster.namespace_regions)
    if not forbidden:
        return []
    return [
        Problem(
            "spec.residency.regions",
            f"{_list(forbidden)} not allowed in namespace {cluster.namespace} "
            f"({ALLOWED_REGIONS}: {_list(sorted(cluster.namespace_regions)) or 'none'})",
        )
    ]


def endpoint_problems(
    spec: InferenceEndpointSpec, cluster: Cluster, *, gpu_need_mib: int | None
) -> list[Problem]:
    """What makes a parsed InferenceEndpoint unacceptable in this cluster and namespace.

    `gpu_need_mib`: the least memory each GPU must have for the model (placement's
    `required_gpu_memory_mib`: `gpu.minMemoryMiB` raised to the model's per-GPU share).
    """
    problems = residency_problems(spec.residency.regions, cluster)
    problems += _collection_problems(spec, cluster)
    problems += _gpu_memory_problems(spec, cluster, gpu_need_mib)
    return problems


def endpoint_warnings(
    spec: InferenceEndpointSpec, cluster: Cluster, *, gpu_need_mib: int | None = None
) -> list[str]:
    """Advice that depends on the fleet as it is now (nodes come and go, so never a refusal)."""
    warnings = []
    largest = max(cluster.gpu_memory_mib.values(), default=None)
    if gpu_need_mib is not None and largest is not None and gpu_need_mib > largest:
        warnings.append(
            f"spec.gpu: each GPU needs {gpu_need_mib} MiB, more than any GPU in the cluster has "
            f"now ({largest} MiB); replicas stay unplaced until a larger one joins"
        )
    products = spec.gpu.products or sorted(cluster.gpus_per_node)
    known = {p: cluster.gpus_per_node[p] for p in products if p in cluster.gpus_per_node}
    if spec.gpu.products:
        missing = [p for p in spec.gpu.products if p not in cluster.gpus_per_node]
        if missing and cluster.gpus_per_node:
            warnings.append(
                f"spec.gpu.products: no node has {_list(missing)} now; replicas stay Pending "
                "until one joins"
            )
    if known and max(known.values()) < spec.gpu.count:
        warnings.append(
            f"spec.gpu.count: {spec.gpu.count} GPUs per replica, but the largest node with "
            f"{_list(sorted(known))} has {max(known.values())}"
        )
    return warnings


def introduced(
    problems: Sequence[Problem], old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> list[Problem]:
    """The problems an update is responsible for: those whose fields it changed.

    On create (`old` None) that is all of them. On update, a field left as it was is not
    refused again (Kubernetes' "ratcheting" validation): Kopf's own annotation patches, a
    label, or a scaling change must not fail because the namespace policy tightened since the
    object was admitted; the reconcile reports that case as ResidencyCompliant=False.
    """
    if old is None:
        return list(problems)
    return [
        p
        for p in problems
        if any(_at(old, path) != _at(new, path) for path in (p.field, *p.depends_on))
    ]


def rejection(problems: Sequence[Problem]) -> str:
    """One message naming every offending field (the API server prefixes the webhook's name)."""
    parts = [str(p) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        parts.append(f"and {len(problems) - MAX_PROBLEMS} more")
    return "; ".join(parts)


def collection_problems(spec: VectorCollectionSpec, cluster: Cluster) -> list[Problem]:
    """What makes a parsed VectorCollection unacceptable: its regions against the policy."""
    return residency_problems(spec.residency.regions, cluster)


# --- internals -------------------------------------------------------------------------------


def _collection_problems(spec: InferenceEndpointSpec, cluster: Cluster) -> list[Problem]:
    ref = spec.vector_collection_ref
    if ref is None:
        return []
    if not cluster.collection_found:
        return [
            Problem(
                "spec.vectorCollectionRef.name",
                f"VectorCollection {_echo(ref.name)} not found in namespace {cluster.namespace}",
            )
        ]
    if cluster.collection_regions is None:
        return []
    shared = set(spec.residency.regions) & cluster.collection_regions
    if cluster.namespace_regions is not None:
        shared &= cluster.namespace_regions
    if shared:
        return []
    return [
        Problem(
            "spec.vectorCollectionRef.name",
            f"VectorCollection {_echo(ref.name)} lives in "
            f"{_list(sorted(cluster.collection_regions))}, which shares no allowed region with "
            f"spec.residency.regions {_list(spec.residency.regions)}",
            depends_on=("spec.residency.regions",),
        )
    ]


def _gpu_memory_problems(
    spec: InferenceEndpointSpec, cluster: Cluster, need_mib: int | None
) -> list[Problem]:
    """Listed products whose GPUs are all too small: no node could ever run a replica.

    Only products seen on some node have a known memory; unknown ones are given the benefit of
    the doubt (a node pool may not have scaled up yet).
    """
    if need_mib is None or not spec.gpu.products:
        return []
    memory = {p: cluster.gpu_memory_mib.get(p) for p in spec.gpu.products}
    if any(m is None or m >= need_mib for m in memory.values()):
        return []
    largest = max(m for m in memory.values() if m is not None)
    if spec.gpu.min_memory_mib is not None and spec.gpu.min_memory_mib >= need_mib:
        what, field_path = f"gpu.minMemoryMiB {spec.gpu.min_memory_mib}", "spec.gpu.minMemoryMiB"
    else:
        what = (
            f"model.weightsGiB {spec.model.weights_gib} over gpu.count {spec.gpu.count} "
            f"needs {need_mib} MiB per GPU"
        )
        field_path = "spec.model.weightsGiB"
    return [
        Problem(
            field_path,
            f"{what}, more than any of spec.gpu.products has "
            f"({', '.join(f'{p}: {m} MiB' for p, m in sorted(memory.items()))}; "
            f"largest {largest} MiB)",
            depends_on=("spec.gpu", "spec.model"),
        )
    ]


def _at(obj: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted wire path (list indices as numbers); None when absent."""
    node: Any = obj
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _short(value: str) -> str:
    return value if len(value) <= _MAX_ECHO else value[:_MAX_ECHO] + "..."


def _echo(value: str) -> str:
    return repr(_short(value))


def _list(values: Iterable[str]) -> str:
    return ", ".join(_short(v) for v in values)
