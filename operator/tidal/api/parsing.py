"""Turning a watched object's wire dict into its typed API model, for every controller.

Owns: the one rule for that (metadata and spec only; a status written by another version must
never make a spec unreconcilable), the readable message of an invalid spec (`describe`),
`read_status`, the one way a reconcile reads the status Tidal wrote last (its memory) into the
typed model, and `parse_yaml`, the one way a configuration document (a ConfigMap key) becomes its
model.
Must not: decide what an invalid spec means for status or Events (each reconcile does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tidal.errors import PermanentError

__all__ = ["MAX_VALIDATION_ERRORS", "describe", "parse_object", "parse_yaml", "read_status"]

# How many validation errors an InvalidSpec message lists before eliding the rest.
MAX_VALIDATION_ERRORS: Final = 5

_M = TypeVar("_M", bound=BaseModel)


def parse_object(model: type[_M], raw: Mapping[str, Any]) -> _M:
    """The typed object; an invalid spec is a PermanentError naming each failing field."""
    try:
        return model.model_validate(
            {"metadata": raw.get("metadata") or {}, "spec": raw.get("spec") or {}}
        )
    except ValidationError as exc:
        raise PermanentError(describe(exc)) from exc


def describe(exc: ValidationError) -> str:
    """Each failing field's path and what is wrong with it, the first few of them."""
    errors = exc.errors(include_url=False)
    parts = [
        f"{'.'.join(str(loc) for loc in error['loc'])}: {error['msg']}"
        for error in errors[:MAX_VALIDATION_ERRORS]
    ]
    if len(errors) > MAX_VALIDATION_ERRORS:
        parts.append(f"and {len(errors) - MAX_VALIDATION_ERRORS} more")
    return "; ".join(parts)


def parse_yaml(model: type[_M], text: str, key: str, error: type[PermanentError]) -> _M:
    """The model of the YAML document `text` (a ConfigMap's `key`); an empty document is the
    model's defaults. `error` (its message prefixed with `key`) names what does not parse."""
    try:
        raw = yaml.safe_load(text)
        return model.model_validate(raw if raw is not None else {})
    except yaml.YAMLError as exc:
        raise error(f"{key}: not YAML: {exc}") from exc
    except ValidationError as exc:
        raise error(f"{key}: {describe(exc)}") from exc


def read_status(model: type[_M], status: Mapping[str, Any] | None) -> _M:
    """The status as last written, typed; read once per reconcile.

    Whatever no longer parses (written by another version, or edited by hand) is dropped, a
    top-level field at a time and a list entry (a condition) at a time, and never fails the
    reconcile: status is memory and observation, and the reconcile rewrites it.
    """
    data: dict[str, Any] = dict(status or {})
    while True:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            smaller = _without_invalid(data, exc)
            if smaller == data:  # nothing to drop names the error: start from no status
                return model.model_validate({})
            data = smaller


def _without_invalid(data: dict[str, Any], exc: ValidationError) -> dict[str, Any]:
    """`data` less the top-level fields (or list entries) that `exc` names."""
    drop_fields: set[str] = set()
    drop_entries: dict[str, set[int]] = {}
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        field = str(loc[0]) if loc else ""
        value = data.get(field)
        if len(loc) > 1 and isinstance(loc[1], int) and isinstance(value, list):
            drop_entries.setdefault(field, set()).add(loc[1])
        else:
            drop_fields.add(field)
    kept = {key: value for key, value in data.items() if key not in drop_fields}
    for field, indexes in drop_entries.items():
        if field in kept:
            kept[field] = [entry for i, entry in enumerate(kept[field]) if i not in indexes]
    return kept
