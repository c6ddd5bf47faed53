"""The Kubernetes reads only the VectorCollection controller needs, on top of `tidal.clients.kube`.

Owns reading a referenced connection Secret (decoded, never logged) and creating a Managed
engine's generated credentials Secret once (never overwriting one), and the Events about a
claim that stays Pending; the rest a collection's
reconcile observes comes from the operator's indexes (`tidal.runtime.indexes`). Everything goes
through `kube.get_object`, so errors are already Tidal's. Blocking, like `kube`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from tidal.clients import kube
from tidal.errors import PermanentError

__all__ = ["claim_events", "create_secret", "get_secret_data"]


def get_secret_data(namespace: str, name: str) -> dict[str, str] | None:
    """The decoded `data` of one Secret (UTF-8 values); None when it does not exist.

    Only ever a GET of a named Secret (RBAC grants nothing else). Values are secrets: callers
    must not log them or put them in status or events.
    """
    secret = kube.get_object("v1", "Secret", namespace, name)
    if secret is None:
        return None
    decoded: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            decoded[str(key)] = base64.b64decode(str(value)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue  # binary values are not connection strings
    for key, value in (secret.get("stringData") or {}).items():
        decoded.setdefault(str(key), str(value))
    return decoded


def create_secret(secret: Mapping[str, Any]) -> bool:
    """Create `secret` (rendered by `tidal.render.collection.render_credentials`) unless one of
    its name exists: True when created. Never an update, so an existing value is never replaced.
    The body holds a secret: neither it nor the answer is logged or returned."""
    if secret.get("kind") != "Secret" or secret.get("apiVersion") != "v1":
        raise PermanentError("create_secret creates Secrets only")
    return kube.create(secret)


def claim_events(namespace: str, name: str, uid: str | None) -> list[dict[str, Any]]:
    """The Events about one PersistentVolumeClaim (by name, and uid when given: never a
    same-named successor's): what its provisioner said while it stays Pending."""
    fields = {"involvedObject.kind": "PersistentVolumeClaim", "involvedObject.name": name}
    if uid:
        fields["involvedObject.uid"] = uid
    return kube.list_objects("v1", "Event", namespace, {}, fields=fields)
