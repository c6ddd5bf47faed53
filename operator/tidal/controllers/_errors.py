"""The one place Tidal's error tree becomes Kopf's.

Handlers are wrapped with `kopf_errors`; below it, code raises `tidal.errors` only. Kopf then
retries a `TemporaryError` after its delay and stops retrying a `PermanentError`. The original
exception stays chained (`__cause__`) so Kopf's log shows where it came from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import kopf

from tidal.errors import PermanentError, TemporaryError, TidalError

__all__ = ["kopf_errors"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

# A TidalError that is neither permanent nor temporary is a bug in the tree's use; retrying it
# slowly is safer than giving up on the resource.
_UNCLASSIFIED_DELAY = 30.0


def kopf_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Translate `tidal.errors` raised by a (sync) handler into Kopf's retry semantics."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except TemporaryError as exc:
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
        except PermanentError as exc:
            raise kopf.PermanentError(str(exc)) from exc
        except TidalError as exc:
            raise kopf.TemporaryError(str(exc), delay=_UNCLASSIFIED_DELAY) from exc

    return wrapper
