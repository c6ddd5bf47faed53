"""The one place Tidal's error tree becomes Kopf's.

Handlers are wrapped with `kopf_errors`; below it, code raises `tidal.errors` only. Kopf then
retries a `TemporaryError` after its delay and stops retrying a `PermanentError`. The original
exception stays chained (`__cause__`) so Kopf's log shows where it came from.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar, overload

import kopf

from tidal.errors import PermanentError, TemporaryError, TidalError

__all__ = ["kopf_errors"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

# A TidalError that is neither permanent nor temporary is a bug in the tree's use; retrying it
# slowly is safer than giving up on the resource.
_UNCLASSIFIED_DELAY = 30.0


@overload
def kopf_errors(fn: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]: ...
@overload
def kopf_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]: ...
def kopf_errors(fn: Callable[_P, _R]) -> Callable[_P, _R] | Callable[_P, Awaitable[_R]]:
    """Translate `tidal.errors` raised by a handler (sync or async) into Kopf's retry semantics."""
    if inspect.iscoroutinefunction(fn):
        coroutine = fn

        @functools.wraps(fn)
        async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                result: _R = await coroutine(*args, **kwargs)
            except TidalError as exc:
                raise _kopf_error(exc) from exc
            return result

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except TidalError as exc:
            raise _kopf_error(exc) from exc

    return wrapper


def _kopf_error(exc: TidalError) -> Exception:
    if isinstance(exc, TemporaryError):
        return kopf.TemporaryError(str(exc), delay=exc.delay)
    if isinstance(exc, PermanentError):
        return kopf.PermanentError(str(exc))
    return kopf.TemporaryError(str(exc), delay=_UNCLASSIFIED_DELAY)
