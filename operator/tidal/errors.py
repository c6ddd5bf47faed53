"""Tidal's own exception tree.

Every failure that crosses a layer boundary is one of these; raw client exceptions
(``kubernetes.client.ApiException``, urllib3 errors, ...) never leave ``tidal.clients``. The
controllers translate this tree into Kopf's exceptions in exactly one place
(``tidal.runtime.errors``), so decision and client code stays free of Kopf::

    TidalError                      base of everything Tidal raises on purpose
    ├── PermanentError              retrying cannot help: the spec (or a rendered object) is invalid
    └── TemporaryError(delay)       a dependency is unavailable; retry after `delay` seconds
        └── ConflictError           the API server answered 409 even after our own retries

This module must not import anything but the standard library.
"""

from __future__ import annotations

__all__ = ["ConflictError", "PermanentError", "TemporaryError", "TidalError"]


class TidalError(Exception):
    """Base class of every error Tidal raises on purpose."""


class PermanentError(TidalError):
    """Retrying the same input will fail the same way (invalid spec, rejected object)."""


class TemporaryError(TidalError):
    """A dependency is unavailable right now; the same input may succeed after `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class ConflictError(TemporaryError):
    """The API server kept answering 409 Conflict; another writer raced us."""
