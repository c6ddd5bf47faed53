"""Shared building blocks of Tidal's API: the model base class, conditions, references, bounds.

Owns: `ApiModel` (wire naming, parsing policy), `Condition` and the pure `set_condition` helper,
`Event` (what every decision module returns for the controller to post), the group/version
constants, condition type names, and the small value types both kinds share (regions,
quantities, RFC3339 times, money strings, `ResidencySpec`, `PlacementStatus`).

Must not: do IO, read the clock (callers pass `now`), or import anything outside pydantic and the
standard library. The models here are the single source of the CRD schemas (`tidal.crdgen`), so
every field carries a description that starts with its wire name and its validation bounds.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

GROUP = "tidal.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "tidal"

# Condition types (Kubernetes API conventions: CamelCase, `Ready` is the summary).
READY = "Ready"
PLACED = "Placed"
MODEL_CACHED = "ModelCached"
RESIDENCY_COMPLIANT = "ResidencyCompliant"
SLO_MET = "SLOMet"
WITHIN_BUDGET = "WithinBudget"
SCALED_TO_ZERO = "ScaledToZero"
PROVISIONED = "Provisioned"
HIBERNATED = "Hibernated"
OFFLOADED = "Offloaded"

ConditionStatus = Literal["True", "False", "Unknown"]

# Patterns are RE2/ECMA compatible (no look-arounds) because the API server evaluates them too.
REGION_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A label or annotation key: an optional DNS-subdomain prefix (at most 253 characters) and '/',
# then a name of at most 63 alphanumerics, '-', '_' or '.', beginning and ending alphanumeric.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
MAX_QUALIFIED_PREFIX, MAX_QUALIFIED_NAME = 253, 63
_QUALIFIED_NAME = re.compile(QUALIFIED_NAME_PATTERN)
_LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)


def is_qualified_name(key: str) -> bool:
    """Whether `key` may be a label or annotation key (the API server's rule)."""
    prefix, _, name = key.rpartition("/")
    return (
        _QUALIFIED_NAME.match(key) is not None
        and len(prefix) <= MAX_QUALIFIED_PREFIX
        and 0 < len(name) <= MAX_QUALIFIED_NAME
    )


def is_label_value(value: str) -> bool:
    """Whether `value` may be a label value (at most 63 characters of the pattern)."""
    return len(value) <= MAX_QUALIFIED_NAME and _LABEL_VALUE.match(value) is not None


CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# Money is a decimal string so no float ever reaches a budget comparison.
MONEY_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,4})?$"
# resource.Quantity without a sign: requests and limits are never negative.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Loose RFC3339 shape check; the API server checks `format: date-time` properly.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)

MAX_REGIONS = 16
MAX_REPLICAS = 1000


class ApiModel(BaseModel):
    """Base of every Tidal API model: snake_case in Python, camelCase on the wire.

    Unknown fields are ignored rather than rejected: the API server prunes anything the CRD does
    not declare, so an unknown field can only come from a newer CRD than this operator, and
    refusing to parse it would wedge reconciliation during an upgrade.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
    )

    # Fields `to_patch` writes with every sub-field, unknown ones as null.
    patch_whole: ClassVar[frozenset[str]] = frozenset()

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_patch(self) -> dict[str, Any]:
        """This model as a JSON merge patch, the one way Tidal writes a status.

        A field set explicitly is written (set to None: as null, so the merge removes the value
        stored before); a field never set is left out, so the API server keeps what it holds.
        Fields in `patch_whole` are written with every sub-field, unknown ones as null, so no
        stale number survives beneath them; other nested values leave out their unset optionals.
        """
        fields = self.model_fields_set
        patch = self.model_dump(mode="json", by_alias=True, exclude_none=True, include=fields)
        for field in fields:
            alias = type(self).model_fields[field].alias or field
            value = getattr(self, field)
            if value is None:
                patch[alias] = None
            elif field in self.patch_whole and isinstance(value, BaseModel):
                patch[alias] = value.model_dump(mode="json", by_alias=True)
        return patch


def cel(rule: str, message: str, *, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; kept next to the field or model it guards."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules; `tidal.crdgen` copies them into the CRD."""
    return {"x-kubernetes-validations": list(rules)}


def _unique(values: list[str]) -> list[str]:
    # Mirrors `x-kubernetes-list-type: set`, which the API server enforces on the same lists.
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"duplicate values: {', '.join(duplicates)}")
    return values


UniqueList = AfterValidator(_unique)


def _int_to_str(value: Any) -> Any:
    # YAML authors write `cpu: 4`; bool is an int subclass and is never a quantity.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_int_to_str),
    StringConstraints(max_length=64, pattern=QUANTITY_PATTERN),
    # int-or-string mirrors resource.Quantity so `cpu: 4` and `cpu: "500m"` both apply.
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity such as `500m`, `16Gi` or `4`; always a string in Python."""

Money = Annotated[str, StringConstraints(max_length=16, pattern=MONEY_PATTERN)]
"""US dollars as a decimal string, e.g. `"40"` or `"12.40"` (what status carries)."""

MoneyInput = Annotated[
    str,
    BeforeValidator(_int_to_str),
    StringConstraints(max_length=16, pattern=MONEY_PATTERN),
    # Users write `maxHourlyUSD: 40` unquoted; accepting whole dollars as an integer avoids a
    # confusing type error while fractions still have to be strings (no floats in spec).
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": MONEY_PATTERN,
            "maxLength": 16,
            "minimum": 0,
            "maximum": 999_999_999,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""US dollars in spec: a decimal string such as `"12.40"`, or whole dollars as an integer."""

Region = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=REGION_PATTERN)]
"""A `topology.kubernetes.io/region` value (DNS-label shaped, e.g. `eu-west-1`)."""


Timestamp = Annotated[
    str,
    StringConstraints(max_length=64, pattern=RFC3339_PATTERN),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64}),
]
"""An RFC3339 time, e.g. `2025-01-31T12:00:00Z`."""

ObjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
]


class LocalObjectRef(ApiModel):
    """A reference to an object in the same namespace."""

    name: ObjectName = Field(description="name is the referenced object's metadata.name.")


class ResidencySpec(ApiModel):
    """Where the workload and its data may live."""

    regions: Annotated[list[Region], UniqueList] = Field(
        min_length=1,
        max_length=MAX_REGIONS,
        description=(
            "regions lists the topology.kubernetes.io/region values this workload and its data "
            "may run in; replicas are never placed elsewhere. Must also be allowed by the "
            "namespace's tidal.dev/allowed-regions annotation."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    data_classification: str | None = Field(
        default=None,
        max_length=63,
        description=(
            "dataClassification is a free-form label (e.g. PII, Confidential) recorded in status "
            "and events for audit."
        ),
    )


class PlacementStatus(ApiModel):
    """Where replicas run now and why."""

    regions: list[Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=list,
        max_length=MAX_REGIONS,
        description="regions lists the regions replicas run in now.",
    )
    nodes: list[Annotated[str, StringConstraints(max_length=253)]] = Field(
        default_factory=list,
        max_length=MAX_REPLICAS,
        description="nodes lists the names of the nodes replicas run on now.",
    )
    reason: str | None = Field(
        default=None,
        max_length=1024,
        description="reason is one line explaining why this placement was chosen.",
    )


class Condition(ApiModel):
    """One observation of the resource's state, keyed by `type` (Kubernetes API conventions)."""

    type: str = Field(
        min_length=1,
        max_length=316,
        description="type of the condition in CamelCase, e.g. Ready, Placed, SLOMet.",
    )
    status: ConditionStatus = Field(description="status of the condition: True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="reason is a one-word CamelCase cause of the condition's last transition.",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="message is a human-readable explanation of the condition.",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description=(
            "observedGeneration is the metadata.generation this condition was computed from."
        ),
    )
    # Left empty by callers: set_condition stamps it, so only one function decides transitions.
    last_transition_time: Timestamp | None = Field(
        default=None,
        description="lastTransitionTime is when the condition last changed status (RFC3339).",
    )


@dataclasses.dataclass(frozen=True)
class Event:
    """One Kubernetes Event to post on the resource a decision was about."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of the given type, or None when it was never set."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(conditions: Sequence[Condition], new: Condition, now: str) -> list[Condition]:
    """Return `conditions` with `new` upserted by type; the input is not modified.

    `lastTransitionTime` moves only when the status changes: a condition re-asserted on every
    reconcile with a fresh message must not look like it just flipped. A condition that did not
    exist before transitions at `now`. Position is kept so status diffs stay small.
    """
    previous = get_condition(conditions, new.type)
    if previous is not None and previous.status == new.status:
        transition = previous.last_transition_time or now
    else:
        transition = now
    updated = new.model_copy(update={"last_transition_time": transition})
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == new.type else c for c in conditions]
