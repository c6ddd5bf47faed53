"""Least privilege, checked from the code: RBAC grants what the operator touches and nothing more.

"Touched" is derived, not restated: the kinds the render functions return (read from their
source: every dict literal with a string `apiVersion` and `kind` under `tidal/render/`), the
kinds `tidal.clients.kube` can address at all, and Kopf's own needs. `tidal.clients.permissions`
declares each access with its verbs and reason; the Roles in manifests/rbac/ must equal it.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidal.clients import kube, permissions
from tidal.clients.permissions import OPERATOR, Access

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "operator" / "tidal" / "render"
RBAC = REPO / "manifests" / "rbac"

# Server-side apply creates or patches; children are listed/watched for status and deleted when
# the spec no longer wants them.
APPLY_VERBS = {"get", "list", "watch", "create", "patch"}
# Children of an optional kind, listed on a timer rather than watched: a watch of a kind whose
# CRD is deleted stops Kopf (tidal.runtime.podmonitors), so no watch is granted for them.
LISTED_NOT_WATCHED = {("monitoring.coreos.com", "podmonitors")}
# What Kopf itself needs, whatever Tidal's handlers do (group, resource).
KOPF_OWN = {
    ("", "events"),
    ("events.k8s.io", "events"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("kopf.dev", "clusterkopfpeerings"),
    ("kopf.dev", "kopfpeerings"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
}
# Deleted but never created: an endpoint's replicas outside their allowed regions or stranded on
# a lost spot node (their Deployment, a child, replaces them). Patched only to lower the
# deletion cost of a replica whose node got an interruption notice (no more power than the
# delete already grants: it can only choose which replica its own ReplicaSet removes first).
ENFORCEMENT_DELETES = {("", "pods")}
# Read one object by name, never enumerated: the referenced Secret and the price table.
NAMED_READS = {("", "secrets"), ("", "configmaps")}
# Created once and never changed: a Managed engine's generated credentials Secret (an apply would
# need patch, which would let the operator overwrite any Secret).
CREATED_ONCE = {("", "secrets")}


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def _plural(kind: str) -> str:
    # Every kind Tidal renders pluralizes regularly (Deployment, Service, StatefulSet, ...).
    return kind.lower() + "s"


@functools.cache
def rendered_kinds() -> frozenset[tuple[str, str]]:
    """(group, resource) of every object literal the render package builds.

    Objects nested in another literal (a StatefulSet's volumeClaimTemplates) are templates that
    another controller instantiates, not objects Tidal applies, and are left out.
    """
    found: set[tuple[str, str]] = set()
    for path in sorted(RENDER.glob("*.py")):
        tree = ast.parse(path.read_text())
        nested = {
            id(child)
            for node in ast.walk(tree)
            if isinstance(node, ast.Dict | ast.List | ast.Tuple)
            for child in ast.walk(node)
            if child is not node
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Dict) or id(node) in nested:
                continue
            literal = {
                key.value: value.value
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant)
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
            }
            if "apiVersion" in literal and "kind" in literal:
                found.add((_group(literal["apiVersion"]), _plural(literal["kind"])))
    return frozenset(found)


def addressed_kinds() -> frozenset[tuple[str, str]]:
    """(group, resource) of every kind the controllers' client can read or write."""
    return frozenset(
        (_group(api_version), plural)
        for (api_version, _), plural in kube._PLURALS.items()  # the client's own table
    )


def _declared(grantor: str) -> dict[tuple[str, str, tuple[str, ...]], set[str]]:
    table: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for access in OPERATOR:
        if access.grantor == grantor:
            key = (access.group, access.resource, access.names)
            table.setdefault(key, set()).update(access.verbs)
    return table


def _roles() -> Iterator[dict[str, Any]]:
    for path in sorted(RBAC.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in {"Role", "ClusterRole"}:
                yield doc


def _granted(role: dict[str, Any]) -> dict[tuple[str, str, tuple[str, ...]], set[str]]:
    table: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for rule in role["rules"]:
        names = tuple(rule.get("resourceNames", ()))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource, names), set()).update(rule["verbs"])
    return table


def _accesses(group: str, resource: str) -> list[Access]:
    return [a for a in OPERATOR if (a.group, a.resource) == (group, resource)]


def test_the_render_scan_finds_the_children_it_must() -> None:
    # A scan that found nothing would make the coverage test below vacuous.
    assert {("apps", "deployments"), ("", "services")} <= rendered_kinds()


@pytest.mark.parametrize(
    "grantor",
    [
        "ClusterRole/tidal-operator",
        "ClusterRole/tidal-operator-secrets-reader",
        "ClusterRole/tidal-operator-secrets-creator",
        "Role/tidal-operator",
    ],
)
def test_each_role_grants_exactly_what_the_permissions_module_declares(grantor: str) -> None:
    kind, name = grantor.split("/")
    (role,) = [r for r in _roles() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert _granted(role) == _declared(grantor)


def test_no_other_role_is_bound_to_the_operator() -> None:
    declared = {access.grantor for access in OPERATOR}
    assert {f"{r['kind']}/{r['metadata']['name']}" for r in _roles()} == declared


@pytest.mark.parametrize(("group", "resource"), sorted(rendered_kinds()))
def test_every_rendered_child_can_be_applied(group: str, resource: str) -> None:
    verbs = set().union(*(a.verbs for a in _accesses(group, resource)))
    needed = APPLY_VERBS - {"watch"} if (group, resource) in LISTED_NOT_WATCHED else APPLY_VERBS
    if (group, resource) in CREATED_ONCE:
        needed = {"get", "create"}
    missing = needed - verbs
    assert not missing, f"{group or 'core'}/{resource} is rendered but RBAC lacks {missing}"
    if (group, resource) in LISTED_NOT_WATCHED:
        assert "watch" not in verbs, f"{group}/{resource} is listed on a timer, never watched"


@pytest.mark.parametrize(("group", "resource"), sorted(addressed_kinds()))
def test_every_kind_the_client_addresses_is_readable(group: str, resource: str) -> None:
    verbs = set().union(*(a.verbs for a in _accesses(group, resource)))
    assert "get" in verbs, f"clients.kube addresses {group or 'core'}/{resource} without get"


def test_nothing_is_granted_that_no_code_path_touches() -> None:
    touched = rendered_kinds() | addressed_kinds() | KOPF_OWN | NAMED_READS
    for access in OPERATOR:
        base = access.resource.partition("/")[0]
        assert (access.group, base) in touched, f"{access} is granted but nothing touches it"


def test_status_is_writable_for_every_reconciled_kind() -> None:
    for resource in ("inferenceendpoints", "vectorcollections"):
        verbs = set().union(*(a.verbs for a in _accesses("tidal.dev", f"{resource}/status")))
        assert "patch" in verbs


def test_secrets_are_read_by_name_and_created_once_in_their_own_roles() -> None:
    by_grantor = {a.grantor: a.verbs for a in _accesses("", "secrets")}
    assert by_grantor == {
        "ClusterRole/tidal-operator-secrets-reader": {"get"},
        "ClusterRole/tidal-operator-secrets-creator": {"create"},
    }
    # Never enumerated, never changed: no existing Secret can be read in bulk or overwritten.
    assert not [a for a in OPERATOR if "secrets" in a.resource and a.resource != "secrets"]


def test_a_rendered_secret_is_created_never_applied() -> None:
    assert ("", "secrets") in rendered_kinds()
    verbs = set().union(*(a.verbs for a in _accesses("", "secrets")))
    assert not verbs & {"patch", "update", "delete", "list", "watch"}


def test_cluster_wide_writes_are_limited_to_children_and_own_objects() -> None:
    writes = {"create", "patch", "update", "delete"}
    writers = {
        (a.group, a.resource.partition("/")[0])
        for a in OPERATOR
        if a.grantor == "ClusterRole/tidal-operator" and a.verbs & writes
    }
    assert writers <= rendered_kinds() - CREATED_ONCE | KOPF_OWN | ENFORCEMENT_DELETES | {
        ("tidal.dev", "inferenceendpoints"),
        ("tidal.dev", "vectorcollections"),
    }
    for group, resource in ENFORCEMENT_DELETES:
        (access,) = _accesses(group, resource)
        assert access.verbs & writes == {"delete", "patch"}, "enforcement never creates"


def test_every_access_says_why() -> None:
    for access in OPERATOR:
        assert len(access.why) > 10, access
    assert permissions.__doc__
