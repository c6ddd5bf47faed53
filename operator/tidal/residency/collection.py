"""Where a VectorCollection's data may live: its spec's regions within the namespace's policy.

Owns the allowed regions (spec ∩ the Namespace policy that `tidal.residency.policy` parses from
`tidal.dev/allowed-regions`) and the `ResidencyCompliant` condition of a collection. The
admission webhook rejects specs outside the policy; this module covers what got in anyway
(webhook down, policy narrowed later): the collection is placed only in the intersection and
reported non-compliant.

Pure: no IO, no clock, no Kopf.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from tidal.api.common import RESIDENCY_COMPLIANT, Condition
from tidal.api.labels import ALLOWED_REGIONS
from tidal.residency.policy import NamespacePolicy

__all__ = ["Residency", "residency", "residency_condition"]


@dataclasses.dataclass(frozen=True)
class Residency:
    """The regions a collection may use and why some it asked for are not among them."""

    requested: tuple[str, ...]
    policy: frozenset[str] | None
    allowed: tuple[str, ...]

    @property
    def refused(self) -> tuple[str, ...]:
        """Regions the spec asks for that the namespace policy forbids."""
        return tuple(r for r in self.requested if r not in self.allowed)


def residency(requested: Sequence[str], policy: NamespacePolicy) -> Residency:
    """`requested` ∩ the namespace's regions, in the spec's order."""
    regions = policy.regions
    allowed = tuple(r for r in requested if regions is None or r in regions)
    return Residency(requested=tuple(requested), policy=regions, allowed=allowed)


def residency_condition(
    res: Residency,
    *,
    pod_regions: Mapping[str, str] | None,
    generation: int | None,
) -> Condition:
    """`ResidencyCompliant` from the allowed regions and where pods run.

    `pod_regions` maps each running pod to its node's region (Managed mode); None when Tidal
    runs no pods (External mode), where only the declaration can be checked.
    """

    def cond(status: str, reason: str, message: str) -> Condition:
        return Condition(
            type=RESIDENCY_COMPLIANT,
            status=status,
            reason=reason,
            message=message,
            observed_generation=generation,
        )

    if not res.allowed:
        return cond(
            "False",
            "NoAllowedRegion",
            f"none of the requested regions ({_join(res.requested)}) is allowed by the "
            f"namespace's {ALLOWED_REGIONS} ({_join(sorted(res.policy or ()))}); "
            "nothing is placed",
        )
    if res.refused:
        return cond(
            "False",
            "RegionNotAllowed",
            f"regions {_join(res.refused)} are not allowed by the namespace's "
            f"{ALLOWED_REGIONS}; placing only in {_join(res.allowed)}",
        )
    if pod_regions is None:
        return cond(
            "True",
            "Declared",
            f"External engine declared in {_join(res.allowed)}; Tidal cannot see where an "
            "External engine stores data",
        )
    outside = sorted(pod for pod, region in pod_regions.items() if region not in res.allowed)
    if outside:
        where = ", ".join(f"{pod} in {pod_regions[pod]}" for pod in outside)
        return cond(
            "False",
            "PodsOutsideAllowedRegions",
            f"pods run outside {_join(res.allowed)}: {where}",
        )
    return cond("True", "InAllowedRegions", f"replicas run only in {_join(res.allowed)}")


def _join(values: Iterable[str]) -> str:
    joined = ", ".join(values)
    return joined or "none"
