"""Merging an InferenceEndpoint's `spec.podTemplate` into the pod template Tidal rendered.

Owns: how each field of the override (`tidal.api.podtemplate`) joins what Tidal renders, and
what it may not touch. One pure function, `merge_pod_template`, called by
`tidal.render.endpoint.render_deployment` once Tidal's own pod template is complete and before
its `TEMPLATE_HASH` is taken, so an override is part of the template: changing it rolls the
replicas, and leaving it out (or `podTemplate: {}`) renders exactly what Tidal renders alone.

Merge rules (docs/inferenceendpoint.md "podTemplate" is the user's version):
- metadata.labels, metadata.annotations: added. A key Tidal sets on the pod, pod-template-hash,
  and Tidal's pod annotations (template hash, do-not-disrupt, deletion cost) are conflicts.
- nodeSelector: added; a node label Tidal owns (below) is a conflict.
- affinity.nodeAffinity required terms: ANDed with Tidal's. Kubernetes ORs the terms of a node
  selector and ANDs the expressions within one, so the result is every Tidal term extended by
  every user term's expressions (one user term, the usual case, keeps Tidal's term count).
- affinity.nodeAffinity preferred terms: appended; Tidal's own preferences (added after the
  template hash is taken, `render.endpoint`) go first.
- affinity.podAffinity, podAntiAffinity: taken as given (Tidal renders none).
- tolerations, volumes, imagePullSecrets, the engine's volumeMounts: appended. A volume name
  or a mountPath Tidal uses is a conflict.
- the engine's env: a Tidal default (HOME, HF_HOME, ...) is replaced in place, as
  `spec.runtime.env` replaces it; a name `spec.runtime.env` also sets is a conflict (one place
  per variable), and so is NVIDIA_VISIBLE_DEVICES.
- the engine's resources: other resources added, replacing a default Tidal renders;
  nvidia.com/gpu (spec.gpu.count), cpu and memory (spec.runtime) are conflicts.
- serviceAccountName, priorityClassName, runtimeClassName: set (Tidal renders none; a
  different value it renders would be a conflict).
- securityContext: merged field by field over Tidal's pod security context; the API model
  already refuses what would run the engine as root.

Node labels Tidal owns: the cluster's region label (spec.residency.regions), every spot marker's
key (spec.capacity), the GPU labels of every GPU label profile, the GPU count labels and, where
the cluster maps instance types to GPUs, `node.kubernetes.io/instance-type` (spec.gpu), and
`kubernetes.io/hostname` (the nodes the planner prefers and avoids); and any label Tidal's
required affinity names. Constraining them from the override would either contradict the
decision (a region outside residency, spot for a reserved replica) or hide capacity from the
planner, which counts nodes by exactly these labels.

Conflicts are collected, not stopped at: one `PodTemplateError` (a `PermanentError`) names
each offending field by its wire path from the object's root, e.g.
`spec.podTemplate.spec.nodeSelector["topology.kubernetes.io/region"]: Tidal owns the region
(spec.residency.regions)`. The reconcile reports it as `Ready=False InvalidSpec`; the admission
webhook renders the Deployments the same way and refuses the object with one problem per field.

Must not: do IO, import `tidal.placement` (the planner reads the same override from the spec
itself: tolerations and node requirements), or change anything Tidal rendered except by the
rules above. The input template is never modified.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel

from tidal.api.conventions import Conventions
from tidal.api.endpoint import InferenceEndpoint
from tidal.api.gpulabels import INSTANCE_TYPE
from tidal.api.labels import (
    GPU_RESOURCE,
    KARPENTER_DO_NOT_DISRUPT,
    KARPENTER_GPU_COUNT,
    LABEL_CAPACITY_TYPE,
    LABEL_ENDPOINT,
    LABEL_NAME,
    NODE_GPU_COUNT,
    NODE_HOSTNAME,
    NODE_INSTANCE_TYPE,
    POD_DELETION_COST,
    POD_TEMPLATE_HASH,
    RENDER_HASH,
    TEMPLATE_HASH,
)
from tidal.api.podtemplate import (
    ContainerEnvVar,
    ContainerOverrides,
    NodeSelectorTerm,
    PodSecurityContext,
    PodSpecOverrides,
    PodTemplate,
    PodTemplateMetadata,
    Volume,
)
from tidal.errors import PermanentError

__all__ = [
    "Conflict",
    "PodTemplateError",
    "merge_pod_template",
    "owned_node_labels",
]

Object = dict[str, Any]

ROOT: Final = "spec.podTemplate"
_REQUIRED: Final = "requiredDuringSchedulingIgnoredDuringExecution"
_PREFERRED: Final = "preferredDuringSchedulingIgnoredDuringExecution"

# Why a node label is Tidal's, by what decides it.
_REGION: Final = "Tidal owns the region (spec.residency.regions)"
_CAPACITY: Final = "Tidal owns the capacity type (spec.capacity)"
_GPU: Final = "Tidal owns the GPU choice (spec.gpu)"
_NODES: Final = "Tidal owns which nodes replicas prefer and avoid (placement)"
_AFFINITY: Final = "Tidal's required node affinity constrains this label"

_SELECTS: Final = "Tidal owns this label: it selects the endpoint's pods"
_LABELS: Final[Mapping[str, str]] = {
    LABEL_NAME: _SELECTS,
    LABEL_ENDPOINT: _SELECTS,
    LABEL_CAPACITY_TYPE: f"{_SELECTS} by capacity type",
    POD_TEMPLATE_HASH: "the Deployment controller owns this label",
}
_ANNOTATIONS: Final[Mapping[str, str]] = {
    TEMPLATE_HASH: "Tidal owns this annotation: it tells which replicas run the current template",
    RENDER_HASH: "Tidal owns this annotation",
    KARPENTER_DO_NOT_DISRUPT: (
        "Tidal owns this annotation: it shields a loading replica from voluntary disruption "
        "until it is Ready"
    ),
    POD_DELETION_COST: "Tidal owns this annotation: it picks the replica a scale-down removes",
}
_RESOURCES: Final[Mapping[str, str]] = {
    GPU_RESOURCE: "Tidal owns the GPU count (spec.gpu.count)",
    "cpu": "set it in spec.runtime.cpu",
    "memory": "set it in spec.runtime.memory",
}
# With the NVIDIA container runtime's environment strategy this variable chooses the GPUs a
# container sees, so setting it could hand a replica every GPU of its node.
_GPU_ENV: Final[Mapping[str, str]] = {
    "NVIDIA_VISIBLE_DEVICES": (
        "Tidal owns it: a replica sees the GPUs allocated to it (spec.gpu.count)"
    ),
}


@dataclass(frozen=True)
class Conflict:
    """One field of the override that collides with what Tidal owns: its wire path from the
    object's root and why."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class PodTemplateError(PermanentError):
    """`spec.podTemplate` overrides what Tidal owns; `conflicts` names each field."""

    def __init__(self, conflicts: Sequence[Conflict]) -> None:
        self.conflicts = tuple(conflicts)
        super().__init__("; ".join(str(c) for c in self.conflicts))


def owned_node_labels(conventions: Conventions) -> dict[str, str]:
    """The node labels Tidal's placement decides, each with why: what an override may not
    require, select or prefer (the cluster's conventions say which labels those are)."""
    owned: dict[str, str] = {NODE_HOSTNAME: _NODES}
    gpu_labels = [NODE_GPU_COUNT, KARPENTER_GPU_COUNT]
    for profile in (*conventions.profiles, conventions.required):
        gpu_labels += [profile.product_label, profile.memory_label or profile.product_label]
    if conventions.instance_types or conventions.required_profile == INSTANCE_TYPE:
        gpu_labels.append(NODE_INSTANCE_TYPE)
    owned.update(dict.fromkeys(gpu_labels, _GPU))
    owned.update({key: _CAPACITY for key, _ in conventions.spot_markers})
    owned[conventions.region_label] = _REGION
    return owned


def merge_pod_template(
    template: Mapping[str, Any], ie: InferenceEndpoint, conventions: Conventions
) -> Object:
    """`template` (a pod template Tidal rendered, `{metadata, spec}`) with `ie.spec.podTemplate`
    merged in by the module's rules; `template` itself when there is no override. Raises
    `PodTemplateError` naming every field that overrides what Tidal owns."""
    override = ie.spec.pod_template
    if override is None:
        return dict(template)
    result: Object = json.loads(json.dumps(template))
    merger = _Merger(result, ie, conventions)
    merger.merge(override)
    if merger.conflicts:
        raise PodTemplateError(merger.conflicts)
    return result


class _Merger:
    """One merge: the result being built, and the conflicts found so far."""

    def __init__(self, result: Object, ie: InferenceEndpoint, conventions: Conventions) -> None:
        self.ie = ie
        self.conflicts: list[Conflict] = []
        self.result = result
        self.spec: Object = result.get("spec") or {}
        node_affinity = _path(self.spec, "affinity", "nodeAffinity")
        required = _path(node_affinity, _REQUIRED).get("nodeSelectorTerms") or []
        constrained = {
            str(e.get("key"))
            for term in required
            for e in (term.get("matchExpressions") or [])
            if isinstance(e, Mapping)
        }
        self.owned_nodes = {
            **dict.fromkeys(constrained, _AFFINITY),
            **owned_node_labels(conventions),
        }

    def refuse(self, field: str, reason: str) -> None:
        self.conflicts.append(Conflict(field, reason))

    def merge(self, override: PodTemplate) -> None:
        if override.metadata is not None:
            self.merge_metadata(override.metadata)
        if override.spec is not None:
            self.merge_spec(override.spec)
            if self.spec:
                self.result["spec"] = self.spec

    # --- metadata ---------------------------------------------------------------------------

    def merge_metadata(self, metadata: PodTemplateMetadata) -> None:
        path = f"{ROOT}.metadata"
        for kind, owned, added in (
            ("labels", _LABELS, metadata.labels),
            ("annotations", _ANNOTATIONS, metadata.annotations),
        ):
            rendered: Object = dict((self.result.get("metadata") or {}).get(kind) or {})
            for key, value in added.items():
                why = owned.get(key) or (
                    f"Tidal sets this {kind[:-1]} on every replica" if key in rendered else None
                )
                if why is not None:
                    self.refuse(_key(f"{path}.{kind}", key), why)
                    continue
                rendered[key] = value
            if rendered:
                self.result.setdefault("metadata", {})[kind] = rendered

    # --- spec -------------------------------------------------------------------------------

    def merge_spec(self, spec: PodSpecOverrides) -> None:
        path = f"{ROOT}.spec"
        if spec.node_selector:
            self.merge_node_selector(f"{path}.nodeSelector", spec.node_selector)
        if spec.affinity is not None:
            self.merge_affinity(spec)
        if spec.tolerations:
            tolerations: list[Object] = list(self.spec.get("tolerations") or [])
            tolerations += [w for t in spec.tolerations if (w := _wire(t)) not in tolerations]
            self.spec["tolerations"] = tolerations
        if spec.volumes:
            self.merge_volumes(f"{path}.volumes", spec.volumes)
        for i, container in enumerate(spec.containers):
            self.merge_container(f"{path}.containers[{i}]", container)
        for field, value in (
            ("serviceAccountName", spec.service_account_name),
            ("priorityClassName", spec.priority_class_name),
            ("runtimeClassName", spec.runtime_class_name),
        ):
            if value is not None:
                self.set_field(f"{path}.{field}", field, value)
        if spec.image_pull_secrets:
            secrets: list[Object] = list(self.spec.get("imagePullSecrets") or [])
            names = {s.get("name") for s in secrets}
            secrets += [_wire(s) for s in spec.image_pull_secrets if s.name not in names]
            self.spec["imagePullSecrets"] = secrets
        if spec.security_context is not None:
            self.merge_security_context(spec.security_context)

    def merge_node_selector(self, path: str, added: Mapping[str, str]) -> None:
        selector: Object = dict(self.spec.get("nodeSelector") or {})
        for key, value in added.items():
            if not self.node_label_owned(_key(path, key), key):
                selector[key] = value
        self.spec["nodeSelector"] = selector

    def merge_volumes(self, path: str, added: Sequence[Volume]) -> None:
        volumes: list[Object] = list(self.spec.get("volumes") or [])
        tidal = {str(v.get("name")) for v in volumes}
        for i, volume in enumerate(added):
            if volume.name in tidal:
                self.refuse(
                    f"{path}[{i}].name",
                    f"Tidal renders a volume named {volume.name!r}; choose another name",
                )
                continue
            volumes.append(_wire(volume))
        self.spec["volumes"] = volumes

    def set_field(self, path: str, field: str, value: str) -> None:
        current = self.spec.get(field)
        if current is not None and current != value:
            self.refuse(path, f"Tidal sets it to {current!r}")
            return
        self.spec[field] = value

    def node_label_owned(self, field: str, key: str) -> bool:
        why = self.owned_nodes.get(key)
        if why is not None:
            self.refuse(field, why)
        return why is not None

    def terms_owned(self, path: str, term: NodeSelectorTerm) -> bool:
        owned = False
        for j, expression in enumerate(term.match_expressions):
            owned |= self.node_label_owned(f"{path}.matchExpressions[{j}].key", expression.key)
        return owned

    def merge_affinity(self, spec: PodSpecOverrides) -> None:
        affinity = spec.affinity
        if affinity is None:
            return
        path = f"{ROOT}.spec.affinity"
        rendered: Object = self.spec.setdefault("affinity", {})
        node = affinity.node_affinity
        if node is not None:
            node_path = f"{path}.nodeAffinity"
            node_affinity: Object = rendered.setdefault("nodeAffinity", {})
            required = node.required_during_scheduling_ignored_during_execution
            if required is not None:
                owned = False
                for i, term in enumerate(required.node_selector_terms):
                    owned |= self.terms_owned(
                        f"{node_path}.{_REQUIRED}.nodeSelectorTerms[{i}]", term
                    )
                if not owned:
                    theirs = _path(node_affinity, _REQUIRED).get("nodeSelectorTerms") or [{}]
                    node_affinity[_REQUIRED] = {
                        **node_affinity.get(_REQUIRED, {}),
                        "nodeSelectorTerms": _and(theirs, required.node_selector_terms),
                    }
            preferred = node.preferred_during_scheduling_ignored_during_execution
            kept = [
                _wire(p)
                for i, p in enumerate(preferred)
                if not self.terms_owned(f"{node_path}.{_PREFERRED}[{i}].preference", p.preference)
            ]
            if kept:
                node_affinity[_PREFERRED] = list(node_affinity.get(_PREFERRED) or []) + kept
            if not node_affinity:
                rendered.pop("nodeAffinity")
        for field, given in (
            ("podAffinity", affinity.pod_affinity),
            ("podAntiAffinity", affinity.pod_anti_affinity),
        ):
            if given:
                rendered[field] = _concatenated(rendered.get(field) or {}, given)
        if not rendered:
            self.spec.pop("affinity")

    def merge_container(self, path: str, container: ContainerOverrides) -> None:
        name = container.name.value
        containers = [c for c in self.spec.get("containers") or [] if c.get("name") == name]
        if not containers:
            self.refuse(f"{path}.name", f"Tidal renders no container named {name!r}")
            return
        rendered: Object = containers[0]
        if container.env:
            self.merge_env(f"{path}.env", rendered, container.env)
        if container.volume_mounts:
            mounts: list[Object] = list(rendered.get("volumeMounts") or [])
            tidal = {str(m.get("mountPath")): str(m.get("name")) for m in mounts}
            for i, mount in enumerate(container.volume_mounts):
                if mount.mount_path in tidal:
                    self.refuse(
                        f"{path}.volumeMounts[{i}].mountPath",
                        f"Tidal mounts its volume {tidal[mount.mount_path]!r} at "
                        f"{mount.mount_path}",
                    )
                    continue
                mounts.append(_wire(mount))
            rendered["volumeMounts"] = mounts
        if container.resources is not None:
            resources: Object = rendered.setdefault("resources", {})
            for kind in ("requests", "limits"):
                added: Mapping[str, str] = getattr(container.resources, kind)
                current: Object = dict(resources.get(kind) or {})
                for resource, quantity in added.items():
                    why = _RESOURCES.get(resource)
                    if why is not None:
                        self.refuse(_key(f"{path}.resources.{kind}", resource), why)
                        continue
                    current[resource] = quantity
                if current:
                    resources[kind] = current

    def merge_env(self, path: str, container: Object, env: Sequence[ContainerEnvVar]) -> None:
        merged: list[Object] = list(container.get("env") or [])
        index = {str(var.get("name")): i for i, var in enumerate(merged)}
        runtime = {var.name for var in self.ie.spec.runtime.env}
        for i, var in enumerate(env):
            field = f"{path}[{i}].name"
            why = _GPU_ENV.get(var.name)
            if why is not None:
                self.refuse(field, f"{var.name}: {why}")
            elif var.name in runtime:
                self.refuse(
                    field, f"{var.name} is set in spec.runtime.env too; set it in one place"
                )
            elif var.name in index:
                merged[index[var.name]] = _wire(var)  # a Tidal default, replaced in place
            else:
                index[var.name] = len(merged)
                merged.append(_wire(var))
        container["env"] = merged

    def merge_security_context(self, context: PodSecurityContext) -> None:
        # The model refuses root (runAsNonRoot false, runAsUser 0, Unconfined seccomp), so a
        # field-by-field merge cannot weaken what Tidal sets below the restricted profile.
        self.spec["securityContext"] = {
            **(self.spec.get("securityContext") or {}),
            **_wire(context),
        }


# --- helpers ------------------------------------------------------------------------------------


def _and(tidal: Sequence[Mapping[str, Any]], user: Sequence[NodeSelectorTerm]) -> list[Object]:
    """(T1 or ... or Tn) and (U1 or ... or Um), as Kubernetes can say it: terms are ORed and the
    expressions in one term ANDed, so every Tidal term gets every user term's expressions (the
    distributive law; one user term, the usual case, keeps Tidal's term count)."""
    terms: list[Object] = []
    for theirs in tidal:
        for ours in user:
            term = json.loads(json.dumps(theirs))
            term["matchExpressions"] = list(term.get("matchExpressions") or []) + [
                _wire(e) for e in ours.match_expressions
            ]
            terms.append(term)
    return terms


def _concatenated(rendered: Mapping[str, Any], given: Mapping[str, Any]) -> Object:
    """Pod (anti-)affinity: Tidal's lists (none today) followed by the user's, key by key."""
    result: Object = dict(rendered)
    for key, value in given.items():
        before = result.get(key)
        if isinstance(before, list) and isinstance(value, list):
            result[key] = [*before, *value]
        else:
            result[key] = value
    return result


def _wire(model: BaseModel) -> Object:
    """A model as it goes into the pod: camelCase, without unset or default-empty fields (so an
    override that says nothing adds nothing, and the template hash does not move)."""
    wire: Object = model.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude_defaults=True
    )
    return wire


def _key(path: str, key: str) -> str:
    return f'{path}["{key}"]'


def _path(obj: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    node: Any = obj
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}
