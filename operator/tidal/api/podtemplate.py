"""`spec.podTemplate` of an InferenceEndpoint: what a cluster adds to every replica's pod.

Owns: the pydantic models of the partial pod template (DESIGN.md §1 `podTemplate`), shaped like
the Kubernetes PodTemplateSpec a user already knows (`metadata.labels`, `spec.tolerations`,
`spec.containers[name=engine].env` ...) but holding only what Tidal does not decide: labels and
annotations, tolerations, nodeSelector, extra node affinity, pod (anti-)affinity, volumes and
mounts, env, extra resources, serviceAccountName, imagePullSecrets, priorityClassName,
runtimeClassName and the pod's securityContext. A field that is not here (replicas, image, args,
probes, GPU count...) is not part of the override: the CRD prunes it, and a strict client
(`kubectl apply`, which validates fields by default) is told it is unknown.

What is checked where:
- Kubernetes' own shape rules that need nothing but the override (a toleration's operator and
  value, a node selector operator's values, env `value` xor `valueFrom`) and the security floor
  (replicas never run as root: `runAsNonRoot` cannot be false, `runAsUser` cannot be 0, no
  `Unconfined` seccomp profile) are CEL rules and bounds in the CRD, mirrored by validators here,
  so the API server refuses them even while Tidal's webhook is down.
- What conflicts with what Tidal renders or owns (a label that selects the pods, a node label
  Tidal's required affinity constrains, the GPU limit, a volume name Tidal uses...) depends on
  the rendered pod and the cluster's conventions, so it is `tidal.render.podtemplate`'s, refused
  by the admission webhook and reported as `InvalidSpec` by the reconcile.

Types Kubernetes defines with dozens of variants are kept open where typing them would only
copy the core API: a volume's source (`hostPath`, `persistentVolumeClaim`, `csi`, ...) and
`podAffinity`/`podAntiAffinity` are stored as given (`x-kubernetes-preserve-unknown-fields`;
`tidal.crdgen` turns pydantic's open objects into that) and validated by the API server when
Tidal applies the Deployment: a bad one shows as `Ready=False ApplyRejected` naming the field.
Everything Tidal merges by rule (node affinity, tolerations, env, mounts, resources, the
security context) is typed, so `kubectl explain` documents it and the webhook can judge it.

Must not: do IO, know what Tidal renders (that is `tidal.render`), or import `tidal.api.endpoint`
(which imports this module).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any, Final, Self

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from tidal.api.common import (
    DNS_SUBDOMAIN_PATTERN,
    LABEL_VALUE_PATTERN,
    MAX_QUALIFIED_NAME,
    MAX_QUALIFIED_PREFIX,
    QUALIFIED_NAME_PATTERN,
    ApiModel,
    LocalObjectRef,
    Quantity,
    cel,
    is_qualified_name,
    validations,
)

__all__ = [
    "ENGINE_CONTAINER",
    "Affinity",
    "ContainerEnvVar",
    "ContainerOverrides",
    "ContainerResources",
    "NodeAffinity",
    "NodeSelector",
    "NodeSelectorOperator",
    "NodeSelectorRequirement",
    "NodeSelectorTerm",
    "PodSecurityContext",
    "PodSpecOverrides",
    "PodTemplate",
    "PodTemplateMetadata",
    "PreferredSchedulingTerm",
    "TaintEffect",
    "Toleration",
    "TolerationOperator",
    "Volume",
    "VolumeMount",
]

# A qualified name (`prefix/name`): label, annotation, taint and node-selector keys.
DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME_PATTERN: Final = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# Annotations may hold up to 256 KiB in all; one value is bounded so CEL cost estimates stay small.
MAX_ANNOTATION_VALUE: Final = 65536


def _qualified_names(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """Every key a qualified name (`[prefix/]name`), as Kubernetes requires of label and
    annotation keys. Checked here rather than in the CRD: a map's keys have no schema there."""
    bad = sorted(key for key in values if not is_qualified_name(key))
    if bad:
        raise ValueError(
            f"{', '.join(repr(k[:80]) for k in bad[:5])} must be qualified names: an optional "
            f"DNS subdomain prefix of at most {MAX_QUALIFIED_PREFIX} characters and '/', then "
            f"at most {MAX_QUALIFIED_NAME} alphanumerics, '-', '_' or '.'"
        )
    return values


QualifiedName = Annotated[
    str, StringConstraints(min_length=1, max_length=317, pattern=QUALIFIED_NAME_PATTERN)
]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
Labels = Annotated[dict[str, LabelValue], AfterValidator(_qualified_names)]
Annotations = Annotated[
    dict[str, Annotated[str, StringConstraints(max_length=MAX_ANNOTATION_VALUE)]],
    AfterValidator(_qualified_names),
]
DNSSubdomain = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
]
DNSLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
EnvName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)]


def _list_map(key: str) -> dict[str, Any]:
    """A list the API server merges and checks as a map keyed by `key` (unique keys)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


def _unique(what: str, names: Iterable[str]) -> None:
    # Mirrors `x-kubernetes-list-type: map`, which the API server enforces on the same lists.
    seen: set[str] = set()
    duplicates: set[str] = set()
    for name in names:
        (duplicates if name in seen else seen).add(name)
    if duplicates:
        raise ValueError(f"{what}: duplicate {', '.join(sorted(duplicates))}")


# --- metadata ----------------------------------------------------------------------------------


class PodTemplateMetadata(ApiModel):
    """Labels and annotations added to every replica's pod."""

    labels: Labels = Field(
        default_factory=dict,
        max_length=64,
        description=(
            "labels are added to every replica's pod (e.g. for a cost-allocation or network "
            "policy selector). Keys Tidal sets (app.kubernetes.io/name, instance, managed-by, "
            "tidal.dev/endpoint, tidal.dev/capacity-type) and pod-template-hash are refused."
        ),
    )
    annotations: Annotations = Field(
        default_factory=dict,
        max_length=64,
        description=(
            "annotations are added to every replica's pod (e.g. a service mesh's or a log "
            "collector's). Keys Tidal writes (tidal.dev/template-hash, karpenter.sh/"
            "do-not-disrupt, controller.kubernetes.io/pod-deletion-cost) are refused."
        ),
    )


# --- scheduling --------------------------------------------------------------------------------


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    Exists = "Exists"
    Equal = "Equal"


class TaintEffect(StrEnum):
    """What a taint does to pods that do not tolerate it."""

    NoSchedule = "NoSchedule"
    PreferNoSchedule = "PreferNoSchedule"
    NoExecute = "NoExecute"


_EXISTS_NO_VALUE = "tolerations: operator Exists takes no value"
_EMPTY_KEY_EXISTS = "tolerations: a toleration without a key needs operator Exists"
_SECONDS_NO_EXECUTE = "tolerations: tolerationSeconds needs effect NoExecute"


class Toleration(ApiModel):
    """A toleration, as in a Pod: lets replicas onto nodes with a matching taint."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.operator) || self.operator != 'Exists' || "
                "!has(self.value) || self.value == ''",
                _EXISTS_NO_VALUE,
            ),
            cel(
                "(has(self.key) && self.key != '') || "
                "(has(self.operator) && self.operator == 'Exists')",
                _EMPTY_KEY_EXISTS,
            ),
            cel(
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                _SECONDS_NO_EXECUTE,
            ),
        )
    )

    key: QualifiedName | None = Field(
        default=None,
        description="key is the taint key matched; empty (with operator Exists) matches all.",
    )
    operator: TolerationOperator | None = Field(
        default=None,
        description="operator is Equal (the default: key and value match) or Exists (any value).",
    )
    value: LabelValue | None = Field(
        default=None, description="value is the taint value matched with operator Equal."
    )
    effect: TaintEffect | None = Field(
        default=None,
        description=(
            "effect is the taint effect matched: NoSchedule, PreferNoSchedule or NoExecute; "
            "empty matches all."
        ),
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        le=(1 << 31) - 1,
        description=(
            "tolerationSeconds is how long a NoExecute taint is tolerated before the replica is "
            "evicted; unset tolerates it forever."
        ),
    )

    @property
    def effective_operator(self) -> TolerationOperator:
        """The operator, Equal when unset (Kubernetes' default)."""
        return self.operator or TolerationOperator.Equal

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.effective_operator is TolerationOperator.Exists and self.value:
            raise ValueError(_EXISTS_NO_VALUE)
        if not self.key and self.effective_operator is not TolerationOperator.Exists:
            raise ValueError(_EMPTY_KEY_EXISTS)
        if self.toleration_seconds is not None and self.effect is not TaintEffect.NoExecute:
            raise ValueError(_SECONDS_NO_EXECUTE)
        return self


class NodeSelectorOperator(StrEnum):
    """How a node selector requirement compares a node label."""

    In = "In"
    NotIn = "NotIn"
    Exists = "Exists"
    DoesNotExist = "DoesNotExist"
    Gt = "Gt"
    Lt = "Lt"


# A label value, or a (possibly negative) integer for Gt and Lt.
RequirementValue = Annotated[
    str,
    StringConstraints(
        max_length=63, pattern=r"^(-?[0-9]+|(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?)$"
    ),
]
_VALUES_BY_OPERATOR = (
    "matchExpressions: operators Exists and DoesNotExist take no values; In and NotIn need at "
    "least one"
)
_ONE_INTEGER = "matchExpressions: operators Gt and Lt take exactly one integer value"


class NodeSelectorRequirement(ApiModel):
    """One node label requirement, as in a Pod's node affinity."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.operator in ['Exists', 'DoesNotExist'] ? "
                "(!has(self.values) || size(self.values) == 0) : "
                "(has(self.values) && size(self.values) > 0)",
                _VALUES_BY_OPERATOR,
            ),
            cel(
                "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && "
                "size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))",
                _ONE_INTEGER,
            ),
        )
    )

    key: QualifiedName = Field(description="key is the node label compared.")
    operator: NodeSelectorOperator = Field(
        description="operator is In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: list[RequirementValue] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "values are compared with the label: one or more for In and NotIn, none for Exists "
            "and DoesNotExist, one integer for Gt and Lt."
        ),
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Self:
        op = self.operator
        if (op in (NodeSelectorOperator.Exists, NodeSelectorOperator.DoesNotExist)) == bool(
            self.values
        ):
            raise ValueError(_VALUES_BY_OPERATOR)
        if op in (NodeSelectorOperator.Gt, NodeSelectorOperator.Lt) and (
            len(self.values) != 1 or re.fullmatch(r"-?[0-9]+", self.values[0]) is None
        ):
            raise ValueError(_ONE_INTEGER)
        return self


class NodeSelectorTerm(ApiModel):
    """Node label requirements that must all hold (they are ANDed)."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "matchExpressions are node label requirements, all of which must hold. matchFields "
            "(node names) are not offered: which nodes replicas use and avoid is Tidal's."
        ),
    )


class NodeSelector(ApiModel):
    """Terms of which a node must match at least one (they are ORed)."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1,
        max_length=8,
        description=(
            "nodeSelectorTerms: a node must match one of them. Tidal ANDs them with its own "
            "required terms (capacity type, region, GPU)."
        ),
    )


class PreferredSchedulingTerm(ApiModel):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100, description="weight of the preference, 1-100.")
    preference: NodeSelectorTerm = Field(description="preference is the node term preferred.")


_REQUIRED_ALIAS: Final = "requiredDuringSchedulingIgnoredDuringExecution"
_PREFERRED_ALIAS: Final = "preferredDuringSchedulingIgnoredDuringExecution"


class NodeAffinity(ApiModel):
    """Extra node affinity: ANDed with Tidal's required terms, preferences added to Tidal's."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None,
        alias=_REQUIRED_ALIAS,
        description=(
            "requiredDuringSchedulingIgnoredDuringExecution: nodes replicas may use, in addition "
            "to Tidal's capacity-type, region and GPU requirements (both must hold)."
        ),
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list,
        alias=_PREFERRED_ALIAS,
        max_length=16,
        description=(
            "preferredDuringSchedulingIgnoredDuringExecution: weighted node preferences added "
            "after Tidal's own (which favour GPUs with room)."
        ),
    )


# Kubernetes' PodAffinity/PodAntiAffinity: label selectors, namespaces, topology keys. Tidal
# renders none, so they are passed through as given and the API server validates them.
_OpenObject = dict[str, Any]


class Affinity(ApiModel):
    """Extra affinity rules, as in a Pod."""

    node_affinity: NodeAffinity | None = Field(
        default=None,
        description=(
            "nodeAffinity adds node requirements and preferences; labels Tidal's own required "
            "affinity uses (region, capacity type, GPU, hostname) are refused."
        ),
    )
    pod_affinity: _OpenObject | None = Field(
        default=None,
        description=(
            "podAffinity, as in a Pod (requiredDuringSchedulingIgnoredDuringExecution, "
            "preferredDuringSchedulingIgnoredDuringExecution), taken as given; stored without "
            "schema and validated when Tidal applies the Deployment."
        ),
    )
    pod_anti_affinity: _OpenObject | None = Field(
        default=None,
        description=(
            "podAntiAffinity, as in a Pod (e.g. spread replicas over zones), taken as given; "
            "stored without schema and validated when Tidal applies the Deployment."
        ),
    )


# --- volumes and the engine container -----------------------------------------------------------


class Volume(ApiModel):
    """A volume, as in a Pod: `name` plus exactly one source (`persistentVolumeClaim`, `secret`,
    `configMap`, `csi`, `emptyDir`, `hostPath`, ...). The source is stored as given (no schema)
    and validated by the API server when Tidal applies the Deployment."""

    # Open: every source Kubernetes has is accepted without copying its schema here.
    model_config = ConfigDict(extra="allow")

    name: DNSLabel = Field(
        description=(
            "name of the volume, referenced by volumeMounts; names Tidal's own volumes use are "
            "refused."
        )
    )

    @property
    def source(self) -> dict[str, Any]:
        """The volume's source fields as given (everything but `name`)."""
        return dict(self.model_extra or {})


class VolumeMount(ApiModel):
    """A mount of one of `spec.podTemplate.spec.volumes` into the engine container."""

    name: DNSLabel = Field(description="name of a volume in spec.podTemplate.spec.volumes.")
    mount_path: Annotated[
        str, StringConstraints(min_length=2, max_length=1024, pattern=r"^/[^:]*$")
    ] = Field(
        description=(
            "mountPath is the absolute path in the container; paths Tidal mounts are refused."
        )
    )
    read_only: bool | None = Field(
        default=None, description="readOnly mounts the volume read-only."
    )
    sub_path: Annotated[str, StringConstraints(max_length=1024, pattern=r"^([^/].*)?$")] | None = (
        Field(default=None, description="subPath mounts this path within the volume instead.")
    )


class ObjectKeySelector(ApiModel):
    """A key of a Secret or ConfigMap in the endpoint's namespace."""

    name: DNSSubdomain = Field(description="name of the object in the same namespace.")
    key: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    ] = Field(description="key within the object's data.")
    optional: bool | None = Field(
        default=None, description="optional: the container starts even if the key is missing."
    )


class ObjectFieldSelector(ApiModel):
    """A field of the replica's own pod (downward API)."""

    field_path: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="fieldPath of the pod, e.g. metadata.name, status.podIP, spec.nodeName."
    )
    api_version: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="apiVersion the fieldPath is written in (default v1)."
    )


class ResourceFieldSelector(ApiModel):
    """A resource of the engine container (downward API)."""

    resource: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="resource, e.g. limits.memory or requests.cpu."
    )
    container_name: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        default=None, description="containerName, the engine container when unset."
    )
    divisor: Quantity | None = Field(
        default=None, description="divisor of the resource's value (a quantity, default 1)."
    )


_ONE_SOURCE = (
    "valueFrom: set exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef"
)


class ContainerEnvVarSource(ApiModel):
    """Where an environment variable's value comes from, as in a Pod."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "size([has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
                "has(self.resourceFieldRef)].filter(x, x)) == 1",
                _ONE_SOURCE,
            )
        )
    )

    secret_key_ref: ObjectKeySelector | None = Field(
        default=None, description="secretKeyRef reads a key of a Secret."
    )
    config_map_key_ref: ObjectKeySelector | None = Field(
        default=None, description="configMapKeyRef reads a key of a ConfigMap."
    )
    field_ref: ObjectFieldSelector | None = Field(
        default=None, description="fieldRef reads a field of the replica's pod."
    )
    resource_field_ref: ResourceFieldSelector | None = Field(
        default=None, description="resourceFieldRef reads a resource of the engine container."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        sources = (self.secret_key_ref, self.config_map_key_ref, self.field_ref)
        if sum(s is not None for s in (*sources, self.resource_field_ref)) != 1:
            raise ValueError(_ONE_SOURCE)
        return self


_VALUE_OR_FROM = "env: set either value or valueFrom, not both"


class ContainerEnvVar(ApiModel):
    """An environment variable of the engine container, as in a Pod."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("!(has(self.value) && has(self.valueFrom))", _VALUE_OR_FROM)
        )
    )

    name: EnvName = Field(description="name of the environment variable.")
    value: Annotated[str, StringConstraints(max_length=32768)] | None = Field(
        default=None, description="value of the environment variable."
    )
    value_from: ContainerEnvVarSource | None = Field(
        default=None,
        description="valueFrom reads the value from a Secret, a ConfigMap or the pod itself.",
    )

    @model_validator(mode="after")
    def _value_or_value_from(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError(_VALUE_OR_FROM)
        return self


Resources = Annotated[dict[str, Quantity], AfterValidator(_qualified_names)]


class ContainerResources(ApiModel):
    """Resources the engine container needs besides the GPUs, CPU and memory Tidal sets."""

    requests: Resources = Field(
        default_factory=dict,
        max_length=16,
        description=(
            "requests of other resources (e.g. ephemeral-storage, hugepages-2Mi, a NIC's "
            "rdma/ib), as quantities. nvidia.com/gpu (spec.gpu.count), cpu and memory "
            "(spec.runtime.cpu, spec.runtime.memory) are refused."
        ),
    )
    limits: Resources = Field(
        default_factory=dict,
        max_length=16,
        description=(
            "limits of other resources, as quantities; the same names as requests are refused."
        ),
    )


class ContainerName(StrEnum):
    """The containers an override may amend: Tidal renders one, the engine."""

    engine = "engine"


ENGINE_CONTAINER: Final = ContainerName.engine.value


class ContainerOverrides(ApiModel):
    """Additions to the engine container."""

    name: ContainerName = Field(
        description="name of the container amended: engine (the only one Tidal renders)."
    )
    env: list[ContainerEnvVar] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "env adds environment variables (e.g. a proxy, AWS_REGION); a name Tidal sets by "
            "default (HOME, HF_HOME) is replaced, one spec.runtime.env sets is refused (set it "
            "in one place), and NVIDIA_VISIBLE_DEVICES is refused (a replica sees the GPUs it "
            "is allocated)."
        ),
        json_schema_extra=_list_map("name"),
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list,
        max_length=32,
        description="volumeMounts mount volumes of spec.podTemplate.spec.volumes.",
        json_schema_extra=_list_map("mountPath"),
    )
    resources: ContainerResources | None = Field(
        default=None, description="resources adds requests and limits of other resources."
    )

    @model_validator(mode="after")
    def _unique(self) -> Self:
        _unique("env", (var.name for var in self.env))
        _unique("volumeMounts", (mount.mount_path for mount in self.volume_mounts))
        return self


# --- the pod's security context -----------------------------------------------------------------


class FSGroupChangePolicy(StrEnum):
    """When the kubelet changes a volume's ownership to the pod's fsGroup."""

    OnRootMismatch = "OnRootMismatch"
    Always = "Always"


class SeccompProfileType(StrEnum):
    """The seccomp profiles replicas may run under (never Unconfined)."""

    RuntimeDefault = "RuntimeDefault"
    Localhost = "Localhost"


_LOCALHOST_NEEDS_PROFILE = (
    "seccompProfile: localhostProfile is required with type Localhost, and only then"
)


class SeccompProfile(ApiModel):
    """A seccomp profile."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(self.type == 'Localhost') == has(self.localhostProfile)",
                _LOCALHOST_NEEDS_PROFILE,
            )
        )
    )

    type: SeccompProfileType = Field(
        description="type is RuntimeDefault or Localhost; Unconfined is not offered."
    )
    localhost_profile: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = (
        Field(
            default=None,
            description="localhostProfile is the profile's path on the node, for Localhost.",
        )
    )

    @model_validator(mode="after")
    def _localhost_profile(self) -> Self:
        if (self.type is SeccompProfileType.Localhost) != (self.localhost_profile is not None):
            raise ValueError(_LOCALHOST_NEEDS_PROFILE)
        return self


_NON_ROOT = "securityContext.runAsNonRoot cannot be false: replicas never run as root"
_NOT_UID_0 = "securityContext.runAsUser cannot be 0: replicas never run as root"
_UID: Final = (1 << 31) - 1


class PodSecurityContext(ApiModel):
    """The pod's security context, merged field by field over Tidal's (non-root user 1000,
    RuntimeDefault seccomp); the engine container's own context stays Tidal's (no privilege
    escalation, all capabilities dropped)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("!has(self.runAsNonRoot) || self.runAsNonRoot", _NON_ROOT),
            cel("!has(self.runAsUser) || self.runAsUser != 0", _NOT_UID_0),
        )
    )

    run_as_user: int | None = Field(
        default=None,
        ge=0,
        le=_UID,
        description=(
            "runAsUser is the user id the engine runs as (Tidal's default 1000), e.g. the "
            "user an image was built with; 0 (root) is refused."
        ),
    )
    run_as_group: int | None = Field(
        default=None, ge=0, le=_UID, description="runAsGroup is the primary group id."
    )
    run_as_non_root: bool | None = Field(
        default=None,
        description="runAsNonRoot may only be true: replicas never run as root.",
    )
    fs_group: int | None = Field(
        default=None,
        ge=0,
        le=_UID,
        description="fsGroup owns the pod's volumes (so a non-root engine can write them).",
    )
    fs_group_change_policy: FSGroupChangePolicy | None = Field(
        default=None,
        description=(
            "fsGroupChangePolicy is OnRootMismatch (skip volumes already owned, faster on large "
            "model volumes) or Always."
        ),
    )
    supplemental_groups: list[Annotated[int, Field(ge=0, le=_UID)]] = Field(
        default_factory=list,
        max_length=32,
        description="supplementalGroups are extra group ids (e.g. a shared filesystem's).",
    )
    seccomp_profile: SeccompProfile | None = Field(
        default=None, description="seccompProfile replaces Tidal's RuntimeDefault profile."
    )

    @model_validator(mode="after")
    def _never_root(self) -> Self:
        if self.run_as_non_root is False:
            raise ValueError(_NON_ROOT)
        if self.run_as_user == 0:
            raise ValueError(_NOT_UID_0)
        return self


# --- the pod -----------------------------------------------------------------------------------


class PodSpecOverrides(ApiModel):
    """What a cluster adds to every replica's pod spec."""

    node_selector: Labels = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "nodeSelector: node labels replicas require, ANDed with Tidal's own requirements; "
            "a label Tidal's required affinity uses (region, capacity type, GPU, hostname) is "
            "refused: say it in spec.residency, spec.capacity or spec.gpu instead."
        ),
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "tolerations are added to Tidal's (the GPU taint, and spot taints on spot "
            "replicas), e.g. AKS's sku=gpu:NoSchedule; the placement planner counts nodes "
            "with such taints as usable."
        ),
    )
    affinity: Affinity | None = Field(
        default=None,
        description=(
            "affinity adds node requirements (ANDed with Tidal's), node preferences, and pod "
            "affinity and anti-affinity."
        ),
    )
    volumes: list[Volume] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "volumes are added to the pod (a name Tidal uses is refused). Each is a Kubernetes "
            "volume, stored as given and validated when Tidal applies the Deployment."
        ),
        json_schema_extra=_list_map("name"),
    )
    containers: list[ContainerOverrides] = Field(
        default_factory=list,
        max_length=1,
        description=(
            "containers amends the engine container (the one entry, name: engine): env, "
            "volumeMounts and extra resources. Image, args, probes and ports are Tidal's."
        ),
        json_schema_extra=_list_map("name"),
    )
    service_account_name: DNSSubdomain | None = Field(
        default=None,
        description=(
            "serviceAccountName runs replicas as this ServiceAccount (e.g. IRSA or workload "
            "identity, for s3:// or gs:// weights)."
        ),
    )
    image_pull_secrets: list[LocalObjectRef] = Field(
        default_factory=list,
        max_length=16,
        description="imagePullSecrets name Secrets for pulling the engine image.",
        json_schema_extra=_list_map("name"),
    )
    priority_class_name: DNSSubdomain | None = Field(
        default=None, description="priorityClassName gives replicas this scheduling priority."
    )
    runtime_class_name: DNSSubdomain | None = Field(
        default=None,
        description="runtimeClassName runs replicas with this RuntimeClass (e.g. nvidia).",
    )
    security_context: PodSecurityContext | None = Field(
        default=None,
        description=(
            "securityContext is merged field by field over Tidal's pod security context; "
            "replicas never run as root."
        ),
    )

    @model_validator(mode="after")
    def _references(self) -> Self:
        _unique("volumes", (v.name for v in self.volumes))
        _unique("imagePullSecrets", (s.name for s in self.image_pull_secrets))
        _unique("containers", (c.name for c in self.containers))
        volumes = {v.name for v in self.volumes}
        missing = sorted(
            {m.name for c in self.containers for m in c.volume_mounts if m.name not in volumes}
        )
        if missing:
            raise ValueError(
                f"volumeMounts: {', '.join(missing)} not in spec.podTemplate.spec.volumes"
            )
        return self

    @property
    def engine(self) -> ContainerOverrides | None:
        """The engine container's additions, if any."""
        return next((c for c in self.containers if c.name is ContainerName.engine), None)


class PodTemplate(ApiModel):
    """A partial pod template merged into every replica (both Deployments), for what a cluster
    needs and Tidal does not decide. What Tidal owns (capacity type, region, GPUs, replicas,
    the labels that select its pods) cannot be overridden: a conflict is refused at admission
    naming the field."""

    metadata: PodTemplateMetadata | None = Field(
        default=None, description="metadata adds labels and annotations to every replica's pod."
    )
    spec: PodSpecOverrides | None = Field(
        default=None,
        description=(
            "spec adds scheduling rules, volumes, the engine's env and mounts, the "
            "ServiceAccount, image pull secrets, priority, runtime class and security context."
        ),
    )
