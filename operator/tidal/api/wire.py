"""How values are spelled on the wire: times, resource quantities, and the few Pod fields every
layer reads.

Owns: the RFC 3339 formats Tidal writes (to the second, as Kubernetes writes condition times;
to the millisecond, for the gateway's signals), the one RFC 3339 reader, the one Kubernetes
quantity parser, and small readers of Pod objects in wire form (dicts as the API server returns
them) that tolerate missing or garbled fields. Keys are `tidal.api.labels`'.

Must not: do IO, read the clock (callers pass times), or decide anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

__all__ = [
    "TERMINAL_PHASES",
    "as_list",
    "as_mapping",
    "format_time",
    "format_time_compact",
    "format_time_ms",
    "is_deleting",
    "is_ready",
    "is_terminated",
    "node_name",
    "parse_quantity",
    "parse_time",
    "pod_condition",
    "pod_phase",
    "quantity_int",
    "start_seconds",
]

# RFC 3339 in UTC to the second, as Kubernetes writes `lastTransitionTime`.
_SECONDS: Final = "%Y-%m-%dT%H:%M:%SZ"
# ISO 8601 basic format (no separators), for times inside names and paths.
_COMPACT: Final = "%Y%m%dT%H%M%SZ"

# resource.Quantity suffixes: decimal SI (`m` is milli, `k` is lower case) and binary.
_SUFFIXES: Final[Mapping[str, Decimal]] = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
# Longest first, so `Mi` is not read as `M` followed by garbage.
_SUFFIX_ORDER: Final = tuple(sorted(_SUFFIXES, key=len, reverse=True))

# Pods in these phases have stopped for good and released what they held.
TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})


# --- Times -------------------------------------------------------------------------------------


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, e.g. `2026-03-01T12:00:00Z` (as Kubernetes writes times)."""
    return moment.astimezone(UTC).strftime(_SECONDS)


def format_time_ms(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. `2026-03-01T12:00:00.250Z`."""
    moment = moment.astimezone(UTC)
    return f"{moment.strftime(_SECONDS)[:-1]}.{moment.microsecond // 1000:03d}Z"


def format_time_compact(moment: datetime) -> str:
    """ISO 8601 basic format in UTC, e.g. `20260301T120000Z`: sortable and safe in a path."""
    return moment.astimezone(UTC).strftime(_COMPACT)


def parse_time(value: object, *, assume_utc: bool = False) -> datetime | None:
    """An RFC 3339 time as an aware UTC datetime; None for a missing or unreadable value.

    Unreadable is treated like missing on purpose: a hand-edited annotation must not wedge a
    decision, and the writer's next update replaces it. A time without an offset is unreadable,
    unless `assume_utc` says its writer is known to mean UTC.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if not assume_utc:
            return None
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# --- Quantities --------------------------------------------------------------------------------


def parse_quantity(value: object) -> Decimal | None:
    """A Kubernetes resource quantity (`500m`, `16Gi`, `1.5G`, `1e3`, `4`, or an int) as a
    number in base units (bytes, cores, devices); None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    number, factor = text, Decimal(1)
    for suffix in _SUFFIX_ORDER:
        if text.endswith(suffix):
            number, factor = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    try:
        amount = Decimal(number) * factor
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def quantity_int(value: object) -> int:
    """A quantity rounded down to a whole number of base units (bytes, devices); 0 when
    unreadable or negative."""
    amount = parse_quantity(value)
    return max(0, int(amount)) if amount is not None else 0


# --- Pods --------------------------------------------------------------------------------------


def node_name(pod: Mapping[str, Any]) -> str:
    """`spec.nodeName`, or "" while the pod is unbound."""
    return str(as_mapping(pod.get("spec")).get("nodeName") or "")


def pod_phase(pod: Mapping[str, Any]) -> str | None:
    """`status.phase` (Pending, Running, Succeeded, Failed, Unknown); None when unreported."""
    phase = as_mapping(pod.get("status")).get("phase")
    return str(phase) if phase is not None else None


def is_terminated(pod: Mapping[str, Any]) -> bool:
    """Succeeded or Failed: its containers have stopped and hold nothing any more."""
    return pod_phase(pod) in TERMINAL_PHASES


def is_deleting(obj: Mapping[str, Any]) -> bool:
    """`metadata.deletionTimestamp` is set: the object is going away."""
    return bool(as_mapping(obj.get("metadata")).get("deletionTimestamp"))


def pod_condition(pod: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """The pod's condition of `type_` (Ready, PodScheduled, ...), if reported."""
    conditions = as_mapping(pod.get("status")).get("conditions")
    for condition in conditions if isinstance(conditions, list) else []:
        if as_mapping(condition).get("type") == type_:
            return as_mapping(condition)
    return None


def is_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True (whatever its phase or deletion)."""
    condition = pod_condition(pod, "Ready")
    return condition is not None and condition.get("status") == "True"


def start_seconds(pod: Mapping[str, Any]) -> tuple[datetime, float] | None:
    """When a Ready pod became Ready and how long it took from its creation (scheduling, node
    provisioning, image pull, model load): what replacing a lost replica costs.

    None when the pod is not Ready, a container has restarted (its Ready time then measures the
    restart, not the start), or a time is missing or unreadable. A replica that went unready
    and back without a restart reads its latest Ready time: that errs long, towards reserved.
    """
    condition = pod_condition(pod, "Ready")
    if condition is None or condition.get("status") != "True":
        return None
    statuses = as_mapping(pod.get("status")).get("containerStatuses")
    for container in statuses if isinstance(statuses, list) else []:
        if as_mapping(container).get("restartCount"):
            return None
    created = parse_time(as_mapping(pod.get("metadata")).get("creationTimestamp"))
    ready = parse_time(condition.get("lastTransitionTime"))
    if created is None or ready is None or ready < created:
        return None
    return ready, (ready - created).total_seconds()


def as_mapping(value: object) -> Mapping[str, Any]:
    """`value` when it is a mapping (a JSON object), else an empty one: for reading optional
    parts of an object as the API server returns it. A plain dict, what JSON parses to, is
    recognized without the `Mapping` ABC's slower check (every reconcile asks this for each
    part of each pod)."""
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def as_list(value: object) -> list[Any]:
    """`value` as a list when it is a JSON array (a tuple too), else an empty one: for reading
    optional list parts of an object as the API server returns it."""
    return list(value) if isinstance(value, list | tuple) else []
