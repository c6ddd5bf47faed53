"""Which Kubernetes Events a reconcile should post on the endpoint, derived from before and after.

Events are for decisions and transitions a user would want to see in `kubectl describe`: a child
created or scaled, the endpoint becoming (not) ready, replicas that cannot be scheduled, the spec
being rejected, replicas moving to other regions, spot capacity lost and returned, replicas
found outside their allowed regions or on lost nodes. Deriving them from (before, after) instead
of posting them inline keeps them exactly-once per change even though the reconcile runs on
every timer tick. Pure: no IO, no clock, no Kopf.

Reasons posted here: `Created<Kind>`, `Scaled<Kind>`, `Ready`, `NotReady`, the Ready condition's
own failure reasons (`InvalidSpec`, `NoAllowedRegion`, `NoFittingGPU`, ...), `Unschedulable`,
`PlacementChanged`, `SpotCapacityLost` (Warning), `SpotCapacityReturned`,
`PodsOutsideAllowedRegions` (Warning), `ReplicasOnLostNodes` (Warning), `OverBudget` (Warning)
and `WithinBudget` when `WithinBudget` changes. `SLOMet`/`SLOMissed` are `tidal.slo`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tidal.api.common import PLACED, READY, WITHIN_BUDGET, Event
from tidal.render.status import (
    PODS_OUTSIDE_ALLOWED_REGIONS,
    SCALED_TO_ZERO_REASON,
    WAKING_REASON,
)

__all__ = [
    "apply_events",
    "budget_events",
    "leaving_event",
    "lost_nodes_event",
    "residency_event",
    "spot_events",
    "status_events",
]

# Ready reasons whose news another event already carries, with more detail (the scaling
# decision posts ScaledToZero, Waking and WokeUp itself).
_TOLD_ELSEWHERE = frozenset({PODS_OUTSIDE_ALLOWED_REGIONS, SCALED_TO_ZERO_REASON, WAKING_REASON})

Object = Mapping[str, Any]


def apply_events(existing: Iterable[Object], rendered: Iterable[Object]) -> list[Event]:
    """Events for applying `rendered` children over the `existing` ones (as listed before)."""
    before = {(obj.get("kind"), (obj.get("metadata") or {}).get("name")): obj for obj in existing}
    events: list[Event] = []
    for obj in rendered:
        kind, name = obj["kind"], obj["metadata"]["name"]
        replicas = (obj.get("spec") or {}).get("replicas")
        old = before.get((kind, name))
        if old is None:
            suffix = f" with {replicas} replicas" if replicas is not None else ""
            events.append(Event("Normal", f"Created{kind}", f"Created {kind} {name}{suffix}"))
            continue
        old_replicas = (old.get("spec") or {}).get("replicas")
        if replicas is not None and old_replicas is not None and replicas != old_replicas:
            events.append(
                Event(
                    "Normal",
                    f"Scaled{kind}",
                    f"Scaled {kind} {name} from {old_replicas} to {replicas} replicas",
                )
            )
    return events


def status_events(before: Object | None, after: Object) -> list[Event]:
    """Events for a status patch `after` replacing the status `before` (None: no status yet)."""
    before = before or {}
    old = _conditions(before)
    new = _conditions(after)
    events: list[Event] = []

    ready, was_ready = new.get(READY), old.get(READY)
    if ready is not None and _changed(was_ready, ready):
        message = str(ready.get("message", ""))
        if ready.get("status") == "True":
            if ready.get("reason") not in _TOLD_ELSEWHERE:
                events.append(Event("Normal", "Ready", message))
        elif ready.get("reason") == "ReplicasNotReady":
            # Not-ready while replicas start up or roll out a new spec is expected; only a loss
            # of readiness with the spec unchanged is news.
            if (
                was_ready is not None
                and was_ready.get("status") == "True"
                and was_ready.get("observedGeneration") == ready.get("observedGeneration")
            ):
                events.append(Event("Warning", "NotReady", message))
        elif ready.get("reason") not in _TOLD_ELSEWHERE:
            events.append(Event("Warning", str(ready.get("reason", "NotReady")), message))

    placed, was_placed = new.get(PLACED), old.get(PLACED)
    if (
        placed is not None
        and placed.get("reason") == "Unschedulable"
        and (was_placed is None or was_placed.get("reason") != "Unschedulable")
    ):
        events.append(Event("Warning", "Unschedulable", str(placed.get("message", ""))))

    regions = _regions(after)
    old_regions = _regions(before)
    if regions and regions != old_regions:
        was = f" (was {', '.join(old_regions)})" if old_regions else ""
        events.append(
            Event("Normal", "PlacementChanged", f"Replicas run in {', '.join(regions)}{was}")
        )
    return events


def budget_events(before: Object | None, after: Object) -> list[Event]:
    """An Event when `WithinBudget` turns False (`OverBudget`) or back to True (`WithinBudget`).

    The first verdict is news only when it is a breach; Unknown (a price missing) is left to the
    condition, which names the missing key.
    """
    new = _conditions(after).get(WITHIN_BUDGET)
    old = _conditions(before or {}).get(WITHIN_BUDGET)
    if new is None or (old is not None and old.get("status") == new.get("status")):
        return []
    message = str(new.get("message", ""))
    if new.get("status") == "False":
        return [Event("Warning", str(new.get("reason") or "OverBudget"), message)]
    if new.get("status") == "True" and old is not None and old.get("status") == "False":
        return [Event("Normal", "WithinBudget", message)]
    return []


def spot_events(
    *,
    before: tuple[int, int] | None,
    after: tuple[int, int],
    was_lost: bool,
    lost: bool,
    reason: str,
) -> list[Event]:
    """Events for replicas moving between spot and reserved because of spot loss or return.

    `before`/`after`: (spot, reserved) shares (None: no previous decision). `was_lost`/`lost`:
    whether a spot loss episode was running before and is now. A loss moves replicas off spot
    while the episode runs; the return moves them back once it is over.
    """
    if before is None:
        return []
    (spot_before, reserved_before), (spot, reserved) = before, after
    mix = f"spot {spot_before} -> {spot}, reserved {reserved_before} -> {reserved}"
    if lost and spot < spot_before:
        moved = spot_before - spot
        return [
            Event(
                "Warning",
                "SpotCapacityLost",
                f"Spot capacity lost: moved {_replicas(moved)} from spot to reserved ({mix}): "
                f"{reason}",
            )
        ]
    if was_lost and not lost and spot > spot_before:
        moved = spot - spot_before
        return [
            Event(
                "Normal",
                "SpotCapacityReturned",
                f"Spot capacity returned: moved {_replicas(moved)} back to spot ({mix}): {reason}",
            )
        ]
    return []


def residency_event(violation: str) -> Event:
    """The Warning for replicas found outside their allowed regions, which are being replaced."""
    return Event(
        "Warning",
        PODS_OUTSIDE_ALLOWED_REGIONS,
        f"{violation}; deleting them so their Deployments replace them in allowed regions",
    )


def lost_nodes_event(pods: Iterable[str]) -> Event:
    """The Warning for replicas on nodes that are gone or lost (pods "name on node (why)")."""
    count, shown = _listed(pods)
    return Event(
        "Warning",
        "ReplicasOnLostNodes",
        f"Deleting {_replicas(count)} on lost nodes so their Deployments replace them: {shown}",
    )


def leaving_event(pods: Iterable[str]) -> Event:
    """The Event for replicas on nodes given an interruption notice ("name on node")."""
    count, shown = _listed(pods)
    return Event(
        "Normal",
        "ReplacingLeavingReplicas",
        f"{_replicas(count).capitalize()} on nodes with an interruption notice keep "
        f"serving while their replacements start: {shown}",
    )


def _listed(items: Iterable[str], most: int = 5) -> tuple[int, str]:
    """How many, and the first `most` of them sorted, "and N more" after."""
    listed = sorted(items)
    more = f" and {len(listed) - most} more" if len(listed) > most else ""
    return len(listed), ", ".join(listed[:most]) + more


def _replicas(count: int) -> str:
    return f"{count} replica" + ("" if count == 1 else "s")


def _conditions(status: Object) -> dict[str, Object]:
    raw = status.get("conditions") or []
    return {c["type"]: c for c in raw if isinstance(c, Mapping) and "type" in c}


def _changed(old: Object | None, new: Object) -> bool:
    """A condition is news when its status or reason moved, or a new generation restates it."""
    if old is None:
        return True
    keys = ("status", "reason")
    if any(old.get(k) != new.get(k) for k in keys):
        return True
    # An invalid spec that is edited and still invalid deserves a fresh warning.
    return new.get("status") != "True" and old.get("observedGeneration") != new.get(
        "observedGeneration"
    )


def _regions(status: Object) -> list[str]:
    placement = status.get("placement")
    if not isinstance(placement, Mapping):
        return []
    return list(placement.get("regions") or [])
