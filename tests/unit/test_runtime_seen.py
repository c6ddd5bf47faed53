"""What each watch last delivered: which watch events count as a change."""

from __future__ import annotations

import pytest

from tidal.runtime.seen import LastSeen

# (events as (type, value), appearing_counts, whether each event counts as a change)
CASES = [
    # The initial listing never counts; the same value again does not; a new one does.
    ([(None, "a"), ("MODIFIED", "a"), ("MODIFIED", "b")], False, [False, False, True]),
    # A new object counts only when appearing matters (a paired collection appears).
    ([("ADDED", "a"), ("MODIFIED", "a")], False, [False, False]),
    ([("ADDED", "a"), ("MODIFIED", "a")], True, [True, False]),
    # A deletion counts when the object had been seen, and forgets it.
    ([(None, "a"), ("DELETED", "a"), ("ADDED", "a")], False, [False, True, False]),
    ([(None, "a"), ("DELETED", "a"), ("ADDED", "a")], True, [False, True, True]),
    # Deleting an object never seen (missed its ADDED) changes nothing anyone read.
    ([("DELETED", "a")], True, [False]),
]


@pytest.mark.parametrize(("events", "appearing_counts", "expected"), CASES)
def test_a_watch_event_counts_as_a_change_only_when_it_changes_what_was_seen(
    events: list[tuple[str | None, str]], appearing_counts: bool, expected: list[bool]
) -> None:
    seen: LastSeen[str] = LastSeen(appearing_counts=appearing_counts)
    assert [seen.changed("k", value, kind) for kind, value in events] == expected


def test_objects_are_told_apart_by_key() -> None:
    seen: LastSeen[tuple[str, str]] = LastSeen()
    assert not seen.changed(("ml", "a"), 1, None)
    assert not seen.changed(("ml", "b"), 2, None)
    assert seen.changed(("ml", "a"), 2, "MODIFIED")
    assert not seen.changed(("ml", "b"), 2, "MODIFIED")
