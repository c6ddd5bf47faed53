"""The gateway load history: complete polls only, when due, trimmed, unknown is not idle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tidal.api.signals import EndpointReport, GatewayReport
from tidal.errors import TemporaryError
from tidal.reconcile.endpoint import Load
from tidal.runtime.load import LoadTracker
from tidal.scaling.autoscale import LoadSample, Tuning

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = "ml/chat"


def report(name: str, in_flight: int, held: int = 0, at: datetime = T0) -> GatewayReport:
    return GatewayReport(
        gateway=name,
        time=at,
        endpoints={
            KEY: EndpointReport(
                in_flight=in_flight, held=held, ready_replicas=1, last_request_time=at
            )
        },
    )


class Gateways:
    def __init__(self) -> None:
        self.now = T0
        self.answers: dict[str, GatewayReport | Exception] = {
            "http://a": report("a", 3),
            "http://b": report("b", 1, held=2),
        }
        self.asked: list[str] = []

    def fetch(self, url: str) -> GatewayReport:
        self.asked.append(url)
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def tracker(self, urls: tuple[str, ...] = ("http://a", "http://b")) -> LoadTracker:
        return LoadTracker(
            self.fetch, urls, 2.0, Tuning(scale_down_stabilization_seconds=10), clock=self.clock
        )

    def clock(self) -> datetime:
        return self.now


def test_every_replicas_requests_add_up_into_one_sample() -> None:
    gateways = Gateways()
    tracker = gateways.tracker()

    assert tracker.poll()

    assert tracker.samples(KEY) == (LoadSample(T0, 6),)
    assert tracker.last_request_time(KEY) == T0


def test_polls_happen_at_most_once_per_interval() -> None:
    gateways = Gateways()
    tracker = gateways.tracker()
    tracker.poll()
    gateways.now += timedelta(seconds=1)
    assert not tracker.poll()
    gateways.now += timedelta(seconds=1)
    assert tracker.poll()
    assert gateways.asked == ["http://a", "http://b"] * 2


def test_a_partial_poll_adds_no_sample_so_counts_hold() -> None:
    gateways = Gateways()
    tracker = gateways.tracker()
    tracker.poll()
    gateways.answers["http://b"] = TemporaryError("unreachable")
    gateways.now += timedelta(seconds=5)

    assert not tracker.poll()

    assert tracker.samples(KEY) == (LoadSample(T0, 6),)


def test_history_is_trimmed_to_what_decide_can_use() -> None:
    gateways = Gateways()
    tracker = gateways.tracker()
    for _ in range(60):
        tracker.poll()
        gateways.now += timedelta(seconds=5)
    samples = tracker.samples(KEY)
    # 60 s of staleness horizon (the largest window) plus one older sample.
    assert len(samples) == 14
    assert samples[-1].time == T0 + timedelta(seconds=295)


def test_an_endpoint_no_gateway_reports_any_more_is_unknown_not_idle() -> None:
    gateways = Gateways()
    tracker = gateways.tracker()
    tracker.poll()
    gateways.answers = {url: GatewayReport(gateway=url, time=T0) for url in gateways.answers}
    gateways.now += timedelta(seconds=5)

    tracker.poll()

    assert tracker.samples(KEY) == ()


def test_without_gateways_nothing_is_polled_and_scaling_is_off() -> None:
    gateways = Gateways()
    tracker = gateways.tracker(urls=())
    assert not tracker.configured
    assert not tracker.poll()
    assert gateways.asked == []
    assert tracker.view(KEY) is None  # the reconcile then scales on the spec alone


def test_the_reconcile_sees_the_samples_the_newest_request_and_the_tuning() -> None:
    gateways = Gateways()
    tracker = gateways.tracker()
    assert tracker.poll()
    assert tracker.view(KEY) == Load(
        samples=(LoadSample(T0, 6),),
        last_request_time=T0,
        tuning=Tuning(scale_down_stabilization_seconds=10),
    )


def test_discovered_gateways_are_asked_as_they_are_found_and_none_found_holds_counts() -> None:
    gateways = Gateways()
    found: list[str] = []
    tracker = LoadTracker(gateways.fetch, lambda: found, 2.0, Tuning(), clock=gateways.clock)
    assert tracker.configured, "a selector finding no pod yet still means scaling is on"

    assert not tracker.poll()
    assert tracker.samples(KEY) == ()

    found.extend(["http://a", "http://b"])
    gateways.now += timedelta(seconds=2)
    assert tracker.poll()
    assert tracker.samples(KEY)[-1].demand == 6


def test_a_failing_discovery_adds_no_sample() -> None:
    gateways = Gateways()

    def broken() -> list[str]:
        raise TemporaryError("API server unreachable")

    tracker = LoadTracker(gateways.fetch, broken, 2.0, Tuning(), clock=gateways.clock)
    assert not tracker.poll()
    assert gateways.asked == []
