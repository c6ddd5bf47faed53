"""Every Kubernetes API access the operator makes, as data: what RBAC must grant, and why.

`OPERATOR` lists each (API group, resource) the operator process touches, through
`tidal.clients` (reads, server-side apply of rendered children, status patches) or through Kopf
(watches, its annotations, Events, peering, the managed webhook configuration), with the verbs
and the role that grants them. `tests/unit/test_security_rbac.py` holds the install manifests'
Roles to exactly this list, and this list to what the clients can address and the render
functions produce, so an access cannot be added in code without RBAC (or RBAC widened without
a reason here).

Owns data only: no IO, no kubernetes import. A client module that starts touching a new kind or
verb adds its entry here in the same change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["OPERATOR", "Access", "Grantor"]

# The four roles the base installs for the operator's ServiceAccount (manifests/rbac/).
Grantor = Literal[
    "ClusterRole/tidal-operator",
    "ClusterRole/tidal-operator-secrets-reader",
    "ClusterRole/tidal-operator-secrets-creator",
    "Role/tidal-operator",
]

_CLUSTER: Final = "ClusterRole/tidal-operator"
_SECRETS: Final = "ClusterRole/tidal-operator-secrets-reader"
_SECRETS_CREATE: Final = "ClusterRole/tidal-operator-secrets-creator"
_OWN_NAMESPACE: Final = "Role/tidal-operator"

_CHILD_VERBS: Final = frozenset({"get", "list", "watch", "create", "patch", "update", "delete"})
_READ: Final = frozenset({"get", "list", "watch"})


@dataclass(frozen=True)
class Access:
    """One resource the operator touches, the verbs it uses and who grants them.

    `names` restricts the grant to those objects (RBAC resourceNames); empty means any name.
    """

    group: str
    resource: str
    verbs: frozenset[str]
    why: str
    grantor: Grantor = _CLUSTER
    names: tuple[str, ...] = ()


OPERATOR: Final[tuple[Access, ...]] = (
    Access(
        "tidal.dev",
        "inferenceendpoints",
        frozenset({"get", "list", "watch", "patch", "update"}),
        "the reconciled resource; Kopf patches its tidal.dev/ annotations",
    ),
    Access(
        "tidal.dev",
        "vectorcollections",
        frozenset({"get", "list", "watch", "patch", "update"}),
        "the reconciled resource; an endpoint's vectorCollectionRef is read too",
    ),
    Access(
        "tidal.dev",
        "inferenceendpoints/status",
        frozenset({"get", "patch", "update"}),
        "every reconcile writes status",
    ),
    Access(
        "tidal.dev",
        "inferenceendpoints/finalizers",
        frozenset({"update"}),
        "children set blockOwnerDeletion; OwnerReferencesPermissionEnforcement requires it",
    ),
    Access(
        "tidal.dev",
        "vectorcollections/status",
        frozenset({"get", "patch", "update"}),
        "every reconcile writes status",
    ),
    Access("apps", "deployments", _CHILD_VERBS, "an endpoint's <name>-spot/-reserved children"),
    Access("apps", "statefulsets", _CHILD_VERBS, "a Managed VectorCollection's engine"),
    Access("", "services", _CHILD_VERBS, "in front of endpoints and collection engines"),
    Access(
        "policy",
        "poddisruptionbudgets",
        frozenset({"get", "list", "watch", "create", "patch", "delete"}),
        "keep a quorum of collection replicas through drains",
    ),
    Access(
        "monitoring.coreos.com",
        "podmonitors",
        frozenset({"get", "list", "create", "patch"}),
        "an endpoint's PodMonitor where Prometheus Operator's CRD is installed: applied "
        "(server-side), listed on a timer for drift repair (never watched); never deleted "
        "(its endpoint's garbage collection removes it)",
    ),
    Access(
        "",
        "pods",
        _READ | {"delete", "patch"},
        "where replicas landed, readiness, cold starts, GPUs held per node; patch: the lowest "
        "deletion cost on a replica whose node is leaving; delete replaces a "
        "replica outside its allowed regions or stranded on a lost spot node",
    ),
    Access(
        "",
        "persistentvolumeclaims",
        _READ | {"create", "patch"},
        "a Managed collection's volumes (the StatefulSet controller creates them); create/patch: "
        "an endpoint's shared model cache (model.cache), never deleted by the operator",
    ),
    Access(
        "batch",
        "jobs",
        _READ | {"create", "patch"},
        "the loader Job filling a model cache (owned by its claim: the garbage collector "
        "deletes it)",
    ),
    Access("", "nodes", _READ, "regions, capacity types, GPUs, telemetry annotation"),
    Access(
        "storage.k8s.io",
        "storageclasses",
        _READ,
        "whether a Managed collection's volumes can bind: the class it names exists, or a "
        "default does (read only, watched through an index)",
    ),
    Access(
        "karpenter.sh",
        "nodepools",
        frozenset({"get", "list"}),
        "what Karpenter can still provision: requirements, taints, limits, resources in use",
    ),
    Access("", "namespaces", _READ, "the tidal.dev/allowed-regions residency policy"),
    Access(
        "",
        "events",
        frozenset({"create", "patch", "get", "list"}),
        "an Event for each decision; list: the autoscaler's events on a spot replica it "
        "could not provision a node for, and the provisioner's on a collection's volume "
        "Pending too long (by field selector on that pod or claim)",
    ),
    Access("events.k8s.io", "events", frozenset({"create", "patch"}), "the newer Events API"),
    Access(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        frozenset({"list", "watch"}),
        "Kopf notices its resources appear and disappear",
    ),
    Access(
        "kopf.dev",
        "clusterkopfpeerings",
        frozenset({"get", "list", "watch", "patch"}),
        "Kopf peering between cluster-wide replicas (TIDAL_PEERING)",
    ),
    Access(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        frozenset({"create"}),
        "Kopf creates validate.tidal.dev once (a name cannot narrow create)",
    ),
    Access(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        frozenset({"patch"}),
        "Kopf keeps validate.tidal.dev's webhooks and caBundle current",
        names=("validate.tidal.dev",),
    ),
    Access(
        "",
        "secrets",
        frozenset({"get"}),
        "only the Secret a VectorCollection names in connectionSecretRef, or the one Tidal "
        "generated for a Managed engine: get, never list",
        grantor=_SECRETS,
    ),
    Access(
        "",
        "secrets",
        frozenset({"create"}),
        "a Managed engine's generated credentials Secret, created once; never patch, update "
        "or delete, so no existing Secret can be changed (the garbage collector deletes it "
        "with its collection)",
        grantor=_SECRETS_CREATE,
    ),
    Access(
        "",
        "configmaps",
        _READ,
        "the tidal-pricing price table and the tidal-capacity pools, and no other ConfigMap",
        grantor=_OWN_NAMESPACE,
        names=("tidal-capacity", "tidal-pricing"),
    ),
    Access(
        "",
        "configmaps",
        frozenset({"get", "patch"}),
        "the spot reclaim ledger (tidal.runtime.reclaims), read once and checkpointed into the "
        "tidal-spot-reclaims ConfigMap the install creates; never created or listed",
        grantor=_OWN_NAMESPACE,
        names=("tidal-spot-reclaims",),
    ),
    Access(
        "kopf.dev",
        "kopfpeerings",
        frozenset({"get", "list", "watch", "patch"}),
        "Kopf peering for a namespace-scoped operator",
        grantor=_OWN_NAMESPACE,
    ),
)
