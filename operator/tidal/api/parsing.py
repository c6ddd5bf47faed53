"""Turning a watched object's wire dict into its typed API model, for every controller.

Owns: the one rule for that (metadata and spec only; a status written by another version must
never make a spec unreconcilable) and the readable message of an invalid spec. Must not: decide
what an invalid spec means for status or Events (each controller does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from tidal.errors import PermanentError

__all__ = ["MAX_VALIDATION_ERRORS", "parse_object"]

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
        errors = exc.errors(include_url=False)
        parts = [
            f"{'.'.join(str(loc) for loc in error['loc'])}: {error['msg']}"
            for error in errors[:MAX_VALIDATION_ERRORS]
        ]
        if len(errors) > MAX_VALIDATION_ERRORS:
            parts.append(f"and {len(errors) - MAX_VALIDATION_ERRORS} more")
        raise PermanentError("; ".join(parts)) from exc
