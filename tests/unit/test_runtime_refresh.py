"""The resync ticker: every object once per interval, at a phase of its own."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.runtime import refresh as resync
from tidal.runtime.refresh import Target, Ticker, due, phase

INTERVAL = 15.0
TARGETS = [Target("ml", f"e-{i}", f"uid-{i}") for i in range(200)]


def test_a_phase_is_stable_and_inside_the_interval() -> None:
    assert phase("uid-1", INTERVAL) == phase("uid-1", INTERVAL)
    assert all(0 <= phase(t.uid, INTERVAL) < INTERVAL for t in TARGETS)


def test_phases_spread_a_burst_of_objects_over_the_interval() -> None:
    # 200 objects over 15 one-second slots: about 13 each, none empty, none holding a crowd.
    slots = [sum(1 for t in TARGETS if int(phase(t.uid, INTERVAL)) == s) for s in range(15)]
    assert min(slots) >= 4
    assert max(slots) <= 30
    assert statistics.mean(slots) == pytest.approx(200 / 15)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0.0, 0.0, 0),  # an empty window
        (5.0, 4.0, 0),  # a clock going backwards ticks nothing
        (0.0, 15.0, 200),  # a whole interval: everyone once
        (3.0, 400.0, 200),  # more than an interval: still everyone once
    ],
)
def test_a_window_of_a_whole_interval_ticks_everyone_once(
    start: float, end: float, expected: int
) -> None:
    assert len(due(TARGETS, start, end, INTERVAL)) == expected


@given(
    start=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    steps=st.lists(st.floats(min_value=0.01, max_value=3.0), min_size=1, max_size=40),
)
def test_consecutive_windows_tick_each_object_exactly_once_per_interval_passed(
    start: float, steps: list[float]
) -> None:
    """However the ticker's wakes fall, each full interval ticks every object once."""
    counts = {t: 0 for t in TARGETS[:40]}
    now = start
    for step in steps:
        for target in due(counts, now, now + step, INTERVAL):
            counts[target] += 1
        now += step
    elapsed = now - start
    for target, count in counts.items():
        assert int(elapsed // INTERVAL) <= count <= int(elapsed // INTERVAL) + 1, target


def test_a_window_across_the_interval_boundary_wraps() -> None:
    late = [t for t in TARGETS if phase(t.uid, INTERVAL) > 14.0]
    early = [t for t in TARGETS if phase(t.uid, INTERVAL) <= 1.0]
    assert set(due(TARGETS, 29.0, 31.0, INTERVAL)) == set(late) | set(early)


def test_the_ticker_ticks_due_objects_and_survives_a_failing_one() -> None:
    clock = [0.0]
    ticked: list[str] = []
    targets = TARGETS[:30]

    async def tick(target: Target) -> None:
        ticked.append(target.name)
        if target.name == "e-3":
            raise RuntimeError("the API server said no")

    async def scenario() -> None:
        ticker = Ticker(
            "Thing", INTERVAL, lambda: targets, tick, clock=lambda: clock[0], step=0.005
        )
        task = asyncio.create_task(ticker.run())
        for _ in range(20):  # 20 s on the fake clock, the ticker waking in between
            clock[0] += 1.0
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert set(ticked) == {t.name for t in targets}
    assert ticked.count("e-3") >= 1


def test_start_runs_every_registered_ticker_once_on_the_indexes_it_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resync, "_registered", {})
    monkeypatch.setattr(resync, "_tasks", {})
    seen: list[tuple[str, str, object]] = []

    def targets(indexes: resync.Indexes) -> list[Target]:
        return [Target("ml", name, f"uid-{name}") for name in indexes["names"]]

    def ticker_for(kind: str) -> Callable[[Target, resync.Indexes], Awaitable[None]]:
        async def tick(target: Target, indexes: resync.Indexes) -> None:
            seen.append((kind, target.name, indexes["marker"]))

        return tick

    resync.register("Endpoint", 0.05, targets, ticker_for("Endpoint"))
    resync.register("Collection", 0.05, targets, ticker_for("Collection"))

    async def scenario() -> None:
        indexes = {"names": ["a", "b"], "marker": "first"}
        resync.start(indexes)
        resync.start({"names": [], "marker": "second"})  # already running: ignored
        await asyncio.sleep(0.2)  # four intervals
        await resync.stop()

    asyncio.run(scenario())
    for kind in ("Endpoint", "Collection"):
        for name in ("a", "b"):
            assert (kind, name, "first") in seen
    assert all(marker == "first" for _, _, marker in seen)
