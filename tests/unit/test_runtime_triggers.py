"""Per-object triggers: serialized per object, coalesced while one waits, modes merged."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from tidal.runtime.triggers import SPEC_CHANGED, TICK, WORLD_CHANGED, Mode, Triggers


def test_modes_merge_to_the_strongest_request() -> None:
    merged = WORLD_CHANGED.merge(TICK)
    assert merged == Mode(force_apply=True, sample_history=True, require_observed=False)
    assert WORLD_CHANGED.merge(WORLD_CHANGED) == WORLD_CHANGED
    assert SPEC_CHANGED.merge(WORLD_CHANGED) == SPEC_CHANGED


def test_triggers_for_one_object_run_one_at_a_time_and_fold_into_the_waiting_one() -> None:
    runs: list[tuple[str, Mode]] = []
    release = threading.Event()
    triggers = Triggers(4, "test")

    def prepare(key: str) -> Callable[[Mode], Callable[[], None]]:
        def job(mode: Mode) -> Callable[[], None]:
            def run() -> None:
                runs.append((key, mode))
                if len(runs) == 1:
                    release.wait(5)  # the first reconcile still runs while the others arrive

            return run

        return job

    async def scenario() -> None:
        first = asyncio.create_task(triggers.trigger("chat", SPEC_CHANGED, prepare("chat")))
        while not runs:
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(triggers.trigger("chat", WORLD_CHANGED, prepare("chat")))
        await asyncio.sleep(0.01)
        folded = [
            asyncio.create_task(triggers.trigger("chat", mode, prepare("chat")))
            for mode in (TICK, WORLD_CHANGED, WORLD_CHANGED)
        ]
        await asyncio.gather(*folded)  # returned at once: the waiting trigger does their work
        assert len(runs) == 1
        await triggers.trigger("other", WORLD_CHANGED, prepare("other"))  # not held up
        release.set()
        await asyncio.gather(first, waiting)

    asyncio.run(scenario())
    assert runs == [
        ("chat", SPEC_CHANGED),
        ("other", WORLD_CHANGED),
        ("chat", WORLD_CHANGED.merge(TICK)),
    ]
