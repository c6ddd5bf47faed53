"""The VectorCollection controller's surface (its decisions are `test_reconcile_collection.py`'s,
the reconcile end to end is `tests/e2e/test_vector_collection.py`'s)."""

from __future__ import annotations

import inspect

from tidal.controllers import collection as controller


def test_the_handlers_never_block_the_event_loop() -> None:
    # Engine calls can block for seconds: the handlers only hand the reconcile to a pool.
    assert inspect.iscoroutinefunction(inspect.unwrap(controller.reconcile_collection))
    assert inspect.iscoroutinefunction(inspect.unwrap(controller.child_statefulset_changed))
