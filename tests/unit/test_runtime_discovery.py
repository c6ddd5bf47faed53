"""Which optional kinds the API server serves: read on a timer, kept through failures, and not
served until a read says so. Discovery is a function the tests replace; the clock is injected."""

from __future__ import annotations

import logging

import pytest

from tidal.errors import TemporaryError
from tidal.runtime.discovery import ServedKinds

MONITORING = "monitoring.coreos.com/v1"


class Discovery:
    """Answers discovery from `served` (API version -> plurals), or raises `error`; counts."""

    def __init__(self) -> None:
        self.served: dict[str, frozenset[str]] = {}
        self.error: Exception | None = None
        self.asked: list[str] = []

    def __call__(self, api_version: str) -> frozenset[str]:
        self.asked.append(api_version)
        if self.error is not None:
            raise self.error
        return self.served.get(api_version, frozenset())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def kinds(discovery: Discovery, clock: Clock) -> ServedKinds:
    return ServedKinds(discovery, [(MONITORING, "podmonitors")], 30.0, clock=clock)


def test_nothing_counts_as_served_before_discovery_was_read() -> None:
    discovery, clock = Discovery(), Clock()
    discovery.served[MONITORING] = frozenset({"podmonitors"})
    served = kinds(discovery, clock)
    assert not served.serves(MONITORING, "podmonitors")
    assert discovery.asked == []  # serves() never reads


def test_a_kind_is_served_once_discovery_lists_it_and_not_once_it_is_gone() -> None:
    discovery, clock = Discovery(), Clock()
    served = kinds(discovery, clock)
    served.refresh()
    assert not served.serves(MONITORING, "podmonitors")

    discovery.served[MONITORING] = frozenset({"podmonitors", "servicemonitors"})
    clock.now += 30
    served.refresh()
    assert served.serves(MONITORING, "podmonitors")
    # Only what was asked about is tracked.
    assert not served.serves(MONITORING, "servicemonitors")

    discovery.served[MONITORING] = frozenset()
    clock.now += 30
    served.refresh()
    assert not served.serves(MONITORING, "podmonitors")


def test_discovery_is_read_at_most_once_per_interval() -> None:
    discovery, clock = Discovery(), Clock()
    served = kinds(discovery, clock)
    served.refresh()
    clock.now += 29
    served.refresh()
    assert discovery.asked == [MONITORING]
    clock.now += 1
    served.refresh()
    assert discovery.asked == [MONITORING, MONITORING]


def test_a_failed_read_keeps_what_was_known_and_is_told_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    discovery, clock = Discovery(), Clock()
    discovery.served[MONITORING] = frozenset({"podmonitors"})
    served = kinds(discovery, clock)
    served.refresh()
    discovery.error = TemporaryError("API server unreachable", delay=5)
    with caplog.at_level(logging.WARNING, logger="tidal.discovery"):
        for _ in range(3):
            clock.now += 30
            served.refresh()
    assert served.serves(MONITORING, "podmonitors")
    assert len([r for r in caplog.records if "API server unreachable" in r.getMessage()]) == 1


def test_a_change_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    discovery, clock = Discovery(), Clock()
    served = kinds(discovery, clock)
    discovery.served[MONITORING] = frozenset({"podmonitors"})
    with caplog.at_level(logging.INFO, logger="tidal.discovery"):
        for _ in range(3):
            served.refresh()
            clock.now += 30
    assert [r.getMessage() for r in caplog.records] == [
        "API discovery: podmonitors in monitoring.coreos.com/v1 is now served"
    ]


def test_with_nothing_wanted_nothing_is_read_or_served() -> None:
    discovery, clock = Discovery(), Clock()
    served = ServedKinds(discovery, [], 30.0, clock=clock)
    served.refresh()
    assert discovery.asked == []
    assert not served.serves(MONITORING, "podmonitors")
