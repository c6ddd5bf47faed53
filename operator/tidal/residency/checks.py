"""Which of an endpoint's replicas run outside the regions it may use.

Owns: the residency check over observed pods — a live pod bound to a node whose
`topology.kubernetes.io/region` is not in the allowed set (a node relabelled, a namespace policy
tightened, a vector collection moved) — and the one-line description of each violation.

A node Tidal cannot see (deleted, not yet listed) proves nothing either way and is not a
violation: a spot node that vanished must not read as a compliance breach. A node that exists
but carries no region label is one: nothing shows the replica is inside an allowed region.

Must not: do IO, read the clock, know Kopf, or act (the controller deletes the pods so their
Deployments, whose required affinity already names only allowed regions, replace them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any

from tidal.api.wire import as_mapping, is_deleting, is_terminated, node_name

__all__ = ["Violation", "describe", "violations"]

Object = Mapping[str, Any]
# Violations named in one message before "and N more".
_LISTED = 5


@dataclass(frozen=True, order=True)
class Violation:
    """A pod running where it may not: on `node`, whose region is `region` (None: unlabelled)."""

    pod: str
    uid: str
    node: str
    region: str | None

    def __str__(self) -> str:
        return f"{self.pod} on {self.node} ({self.region or 'no region label'})"


def violations(
    pods: Iterable[Object], node_regions: Mapping[str, str | None], allowed: Set[str]
) -> tuple[Violation, ...]:
    """Live pods bound to a known node outside `allowed`, sorted by pod name.

    `node_regions`: every node Tidal knows, with its region (None when unlabelled).
    """
    found: list[Violation] = []
    for pod in pods:
        if is_deleting(pod):
            continue  # already going; its replacement is what counts
        if is_terminated(pod):
            continue
        node = node_name(pod)
        if not node or node not in node_regions:
            continue
        region = node_regions[node]
        if region is None or region not in allowed:
            metadata = as_mapping(pod.get("metadata"))
            found.append(
                Violation(
                    pod=str(metadata.get("name", "")),
                    uid=str(metadata.get("uid", "")),
                    node=node,
                    region=region,
                )
            )
    return tuple(sorted(found))


def describe(found: Iterable[Violation], allowed: Iterable[str]) -> str:
    """ "2 replicas outside the allowed regions (eu-west-1): a on n1 (us-east-1), b on ..."."""
    listed = sorted(found)
    regions = ", ".join(sorted(allowed)) or "none"
    shown = ", ".join(str(v) for v in listed[:_LISTED])
    more = f" and {len(listed) - _LISTED} more" if len(listed) > _LISTED else ""
    noun = "replica" if len(listed) == 1 else "replicas"
    return f"{len(listed)} {noun} outside the allowed regions ({regions}): {shown}{more}"
