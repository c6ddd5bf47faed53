"""gateway.watching: list, then watch from the list's version; relist on 410; retry on errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

from tidal.clients.gatewaykube import WatchExpiredError
from tidal.errors import TemporaryError
from tidal.gateway.watching import Informer

Object = dict[str, Any]


def obj(name: str, version: str) -> Object:
    return {"metadata": {"name": name, "resourceVersion": version}}


class ScriptedSource:
    """Answers list and watch calls from a script; records the versions it was asked for."""

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.watched_from: list[str] = []
        self.done = threading.Event()

    def list_all(self) -> tuple[list[Object], str]:
        step = self.lists.pop(0) if self.lists else ([], "0")
        if isinstance(step, Exception):
            raise step
        items, version = step
        return list(items), version

    def watch(self, resource_version: str, stop: threading.Event) -> Iterator[tuple[str, Object]]:
        self.watched_from.append(resource_version)
        if not self.watches:
            self.done.set()
            stop.wait(5)
            return
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step


def run_informer(source: ScriptedSource) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    async def scenario() -> None:
        informer = Informer(
            "things",
            source,
            asyncio.get_running_loop(),
            lambda items: seen.append(("list", [i["metadata"]["name"] for i in items])),
            lambda kind, o: seen.append((kind, o["metadata"]["name"])),
        )
        informer.start()
        await asyncio.to_thread(source.done.wait, 10)
        await asyncio.sleep(0.05)
        informer.stop(timeout=0.1)

    asyncio.run(scenario())
    return seen


def test_it_lists_then_watches_from_the_newest_version_seen() -> None:
    source = ScriptedSource(
        lists=[([obj("a", "5")], "10")],
        watches=[
            [("ADDED", obj("b", "11")), ("BOOKMARK", obj("", "15")), ("MODIFIED", obj("a", "16"))],
            [("DELETED", obj("b", "17"))],
        ],
    )

    seen = run_informer(source)

    assert seen == [("list", ["a"]), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert source.watched_from == ["10", "16", "17"]


def test_an_expired_version_lists_again() -> None:
    source = ScriptedSource(
        lists=[([obj("a", "5")], "10"), ([obj("a", "5"), obj("c", "30")], "30")],
        watches=[WatchExpiredError("too old", delay=0)],
    )

    seen = run_informer(source)

    assert seen == [("list", ["a"]), ("list", ["a", "c"])]
    assert source.watched_from == ["10", "30"]


def test_an_unreachable_api_server_is_retried() -> None:
    source = ScriptedSource(
        lists=[TemporaryError("connection refused", delay=1), ([obj("a", "5")], "10")],
        watches=[],
    )

    seen = run_informer(source)

    assert seen == [("list", ["a"])]
