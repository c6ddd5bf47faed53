"""`bench.economics.decide_cpu`: the calls it records replay to the same outcomes, and a changed
outcome is found, down to a child's key order."""

from __future__ import annotations

import dataclasses

from bench.economics.decide_cpu import differences, measure_run, replay


def test_recorded_calls_replay_to_the_same_outcomes_and_a_changed_one_is_found() -> None:
    _total, timed = measure_run(seed=1, days=0.05, warmup_hours=1.0, decide_every=900, record=True)
    assert timed.count > 0
    assert len(timed.calls) == timed.count

    _seconds, first = replay(timed.calls)
    _seconds, second = replay(timed.calls)
    assert differences(second, first) == []

    at = next(i for i, outcome in enumerate(first) if outcome.children)
    child, *rest = first[at].children
    reordered = dict(reversed(list(child.items())))  # equal as a dict, not as JSON
    assert reordered == child
    changed = [*first]
    changed[at] = dataclasses.replace(first[at], children=(reordered, *rest))
    assert differences(changed, first) == [at]
    assert differences(first[:-1], first) == [len(first) - 1]
