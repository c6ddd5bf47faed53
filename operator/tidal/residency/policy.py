"""A Namespace's residency policy: the `tidal.dev/allowed-regions` annotation, read strictly.

Owns: parsing the annotation (comma-separated `topology.kubernetes.io/region` values, spaces
around entries allowed) into the set of regions the namespace allows, and saying exactly what is
wrong with a value that does not parse. Absent annotation = no policy (every region allowed).

Failing safe: an entry that is not a region name is reported and ignored. Ignoring an entry can
only shrink the allowed set, never widen it, so a typo costs capacity, not compliance; a value
with no valid entry at all (including the empty string) allows no region.

Must not: do IO, read the clock, know Kopf, or decide placement (the planner intersects this
set with the endpoint's own regions and its vector collection's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tidal.api.common import REGION_PATTERN
from tidal.api.labels import ALLOWED_REGIONS

__all__ = ["NamespacePolicy", "namespace_policy", "parse"]

_REGION: Final = re.compile(REGION_PATTERN)
_MAX_REGION_LENGTH: Final = 63


@dataclass(frozen=True)
class NamespacePolicy:
    """What a Namespace allows. `regions` None = no policy; `invalid` lists ignored entries."""

    regions: frozenset[str] | None = None
    invalid: tuple[str, ...] = ()

    @property
    def error(self) -> str | None:
        """One line naming the entries that were ignored, or None when the value parsed."""
        if not self.invalid:
            return None
        entries = ", ".join(repr(entry) for entry in self.invalid)
        return (
            f"namespace annotation {ALLOWED_REGIONS} has entries that are not "
            f"region names, ignored: {entries} (expected comma-separated "
            "topology.kubernetes.io/region values such as eu-west-1,eu-central-1)"
        )


def parse(value: str) -> NamespacePolicy:
    """The policy an annotation value states (see the module docstring for the rules)."""
    regions: set[str] = set()
    invalid: list[str] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue  # "a,,b" and a trailing comma are formatting, not a region
        if len(entry) <= _MAX_REGION_LENGTH and _REGION.match(entry):
            regions.add(entry)
        else:
            invalid.append(entry)
    return NamespacePolicy(regions=frozenset(regions), invalid=tuple(invalid))


def namespace_policy(annotations: Mapping[str, str] | None) -> NamespacePolicy:
    """The policy of a Namespace with these annotations."""
    value = (annotations or {}).get(ALLOWED_REGIONS)
    if value is None:
        return NamespacePolicy()
    return parse(value)
