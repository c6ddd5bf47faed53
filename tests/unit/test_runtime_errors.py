"""Tidal's error tree becomes Kopf's in one place, causes chained."""

from __future__ import annotations

import asyncio
import inspect

import kopf
import pytest

from tidal.errors import ConflictError, PermanentError, TemporaryError, TidalError
from tidal.runtime.errors import kopf_errors


def raising(exc: Exception) -> None:
    raise exc


def test_temporary_errors_are_retried_after_their_delay() -> None:
    cause = TemporaryError("API server unreachable", delay=7)
    with pytest.raises(kopf.TemporaryError, match="unreachable") as info:
        kopf_errors(raising)(cause)
    assert info.value.delay == 7
    assert info.value.__cause__ is cause


def test_conflicts_are_temporary() -> None:
    with pytest.raises(kopf.TemporaryError):
        kopf_errors(raising)(ConflictError("409", delay=1))


def test_permanent_errors_stop_retries() -> None:
    cause = PermanentError("spec.x: bad")
    with pytest.raises(kopf.PermanentError, match=r"spec\.x") as info:
        kopf_errors(raising)(cause)
    assert info.value.__cause__ is cause


def test_an_unclassified_tidal_error_is_retried_slowly() -> None:
    with pytest.raises(kopf.TemporaryError) as info:
        kopf_errors(raising)(TidalError("?"))
    assert info.value.delay == 30


def test_other_exceptions_pass_through_for_kopf_to_handle() -> None:
    with pytest.raises(KeyError):
        kopf_errors(raising)(KeyError("x"))


def test_the_wrapper_keeps_the_handler_identity_kopf_uses_for_ids() -> None:
    def reconcile_something() -> None: ...

    wrapped = kopf_errors(reconcile_something)
    assert wrapped.__name__ == "reconcile_something"
    assert wrapped.__wrapped__ is reconcile_something  # type: ignore[attr-defined]
    assert wrapped() is None


async def raising_async(exc: Exception) -> None:
    raise exc


def test_async_handlers_translate_the_same_way() -> None:
    cause = TemporaryError("API server unreachable", delay=3)
    wrapped = kopf_errors(raising_async)
    assert inspect.iscoroutinefunction(wrapped)  # Kopf awaits it rather than using a thread
    with pytest.raises(kopf.TemporaryError) as info:
        asyncio.run(wrapped(cause))
    assert info.value.delay == 3
    assert info.value.__cause__ is cause
    with pytest.raises(kopf.PermanentError):
        asyncio.run(wrapped(PermanentError("bad")))


def test_async_results_pass_through() -> None:
    async def answer() -> int:
        return 42

    wrapped = kopf_errors(answer)
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.run(wrapped()) == 42
