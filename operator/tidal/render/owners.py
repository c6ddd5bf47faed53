"""The ownerReference every child Tidal renders carries, for both kinds.

Owns: that one reference (controller, blockOwnerDeletion). Must not: render anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidal.api.common import API_VERSION
from tidal.errors import PermanentError

__all__ = ["owner_reference"]


def owner_reference(kind: str, name: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The controller ownerReference a child of Tidal's `kind` object `name` carries (so the
    garbage collector removes it with its owner); a PermanentError without a uid."""
    uid = metadata.get("uid")
    if not isinstance(uid, str) or not uid:
        raise PermanentError("metadata.uid is missing: children need it for ownerReferences")
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
