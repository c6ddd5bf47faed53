"""An endpoint's GPU utilization history: sampling node telemetry, the bounded window, the
annotation it survives restarts in."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tidal.api.labels import CapacityType
from tidal.api.telemetry import GpuSample, GpuTelemetry, PodUsage
from tidal.placement.history import (
    HISTORY_BUCKET_SECONDS,
    HISTORY_WINDOW_SECONDS,
    MAX_SAMPLES,
    append,
    dumps,
    loads,
    newest_bucket,
    sample_from_fleet,
)
from tidal.placement.model import (
    FleetSnapshot,
    History,
    NodeInfo,
    UtilizationSample,
)

NOW = datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
OWN = frozenset({("ml", "llama-spot-a"), ("ml", "llama-reserved-b")})


def node(name: str, doc: GpuTelemetry | None) -> NodeInfo:
    return NodeInfo(
        name=name, region="eu-west-1", zone=None, capacity_type=CapacityType.SPOT, telemetry=doc
    )


def doc(gpus: list[float | None], pods: list[PodUsage], *, age_seconds: int = 5) -> GpuTelemetry:
    return GpuTelemetry(
        time=NOW - timedelta(seconds=age_seconds),
        gpus=[GpuSample(index=i, utilization_percent=u) for i, u in enumerate(gpus)],
        pods=pods,
    )


def usage(name: str, util: float | None, indexes: list[int], namespace: str = "ml") -> PodUsage:
    return PodUsage(namespace=namespace, name=name, utilization_percent=util, gpu_indexes=indexes)


def sample(minutes: float, util: float = 50.0, replicas: int = 2) -> UtilizationSample:
    return UtilizationSample(
        time=NOW + timedelta(minutes=minutes), utilization_percent=util, replicas=replicas
    )


# --- sampling ------------------------------------------------------------------------------------


def test_a_sample_is_the_mean_attributed_utilization_of_the_endpoints_pods() -> None:
    fleet = FleetSnapshot(
        nodes=(
            node("a", doc([80.0, 10.0], [usage("llama-spot-a", 60.0, [0]), usage("x", 10.0, [1])])),
            node("b", doc([30.0], [usage("llama-reserved-b", 20.0, [0])])),
        )
    )
    assert sample_from_fleet(fleet, OWN, NOW) == UtilizationSample(
        time=NOW, utilization_percent=40.0, replicas=2
    )


def test_a_pod_without_attributed_utilization_takes_its_gpus_numbers() -> None:
    fleet = FleetSnapshot(
        nodes=(node("a", doc([80.0, 40.0, None], [usage("llama-spot-a", None, [0, 1, 2])])),)
    )
    sampled = sample_from_fleet(fleet, OWN, NOW)
    assert sampled is not None
    assert (sampled.utilization_percent, sampled.replicas) == (60.0, 1)


@pytest.mark.parametrize(
    "nodes",
    [
        (),
        (node("a", None),),
        (node("a", doc([90.0], [usage("llama-spot-a", 90.0, [0])], age_seconds=121)),),
        (node("a", doc([90.0], [usage("someone-else", 90.0, [0])])),),
        (node("a", doc([90.0], [usage("llama-spot-a", 90.0, [0], namespace="other")])),),
        (node("a", doc([None], [usage("llama-spot-a", None, [0])])),),
    ],
)
def test_pods_without_fresh_telemetry_give_no_sample_because_unknown_is_not_idle(
    nodes: tuple[NodeInfo, ...],
) -> None:
    assert sample_from_fleet(FleetSnapshot(nodes=nodes), OWN, NOW) is None


def test_an_endpoint_without_pods_is_sampled_as_carrying_no_load() -> None:
    assert sample_from_fleet(FleetSnapshot(), frozenset(), NOW) == UtilizationSample(
        time=NOW, utilization_percent=0.0, replicas=0
    )


def test_a_pod_listed_twice_counts_once() -> None:
    fleet = FleetSnapshot(
        nodes=(
            node(
                "a",
                doc(
                    [90.0, 70.0],
                    [usage("llama-spot-a", 90.0, [0]), usage("llama-spot-a", 70.0, [1])],
                ),
            ),
            node("b", doc([20.0], [usage("llama-reserved-b", 20.0, [0])])),
        )
    )
    sampled = sample_from_fleet(fleet, OWN, NOW)
    assert sampled is not None
    assert (sampled.utilization_percent, sampled.replicas) == (50.0, 2)


# --- the window ----------------------------------------------------------------------------------


def test_samples_in_one_bucket_merge_keeping_their_mean_load() -> None:
    bucket_start = datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
    first = UtilizationSample(time=bucket_start, utilization_percent=90.0, replicas=1)
    second = UtilizationSample(
        time=bucket_start + timedelta(seconds=60), utilization_percent=90.0, replicas=2
    )
    history = append(append(History(), first), second)
    (merged,) = history.samples
    # Mean load (0.9 + 1.8) / 2 = 1.35 over ceil(1.5) = 2 replicas.
    assert (merged.replicas, merged.observations, merged.time) == (2, 2, second.time)
    assert merged.utilization_percent == pytest.approx(67.5)


def test_samples_in_different_buckets_are_kept_apart() -> None:
    history = append(append(History(), sample(0)), sample(HISTORY_BUCKET_SECONDS / 60))
    assert len(history.samples) == 2


def test_samples_older_than_the_window_are_dropped() -> None:
    history = History()
    for minutes in (0, 10, 20, 30):
        history = append(history, sample(minutes), window_seconds=15 * 60)
    assert [s.time for s in history.samples] == [sample(20).time, sample(30).time]


def test_a_sample_older_than_the_newest_is_ignored() -> None:
    history = append(History(), sample(30))
    assert append(history, sample(10)) == history


def test_a_day_of_reconciles_every_15_seconds_stays_within_the_bound() -> None:
    history = History()
    for step in range(2 * HISTORY_WINDOW_SECONDS // 15):
        history = append(history, sample(step / 4))
    assert len(history.samples) <= MAX_SAMPLES
    assert history.samples[-1].time - history.samples[0].time <= timedelta(
        seconds=HISTORY_WINDOW_SECONDS
    )
    assert len(dumps(history)) < 8 * 1024


# --- the annotation ------------------------------------------------------------------------------


def test_history_round_trips_through_the_annotation_to_the_second_and_tenth_of_a_percent() -> None:
    history = History(
        samples=(
            UtilizationSample(time=NOW, utilization_percent=42.04, replicas=3, observations=20),
            UtilizationSample(
                time=NOW + timedelta(minutes=5, microseconds=400),
                utilization_percent=0.0,
                replicas=0,
            ),
        )
    )
    assert json.loads(dumps(history)) == {
        "v": 1,
        "t0": int(NOW.timestamp()),
        "s": [[0, 420, 3, 20], [300, 0, 0, 1]],
    }
    assert loads(dumps(history)) == History(
        samples=(
            UtilizationSample(time=NOW, utilization_percent=42.0, replicas=3, observations=20),
            UtilizationSample(time=NOW + timedelta(minutes=5), utilization_percent=0.0, replicas=0),
        )
    )


def test_empty_history_round_trips() -> None:
    assert loads(dumps(History())) == History()


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "not json",
        "[]",
        '{"v": 2, "t0": 0, "s": []}',
        '{"v": 1, "t0": "0", "s": []}',
        '{"v": 1, "t0": 0, "s": {}}',
        '{"v": 1, "t0": 0, "s": [[0, 500, 1]]}',
        '{"v": 1, "t0": 0, "s": [[0, 1001, 1, 1]]}',
        '{"v": 1, "t0": 0, "s": [[0, 500, -1, 1]]}',
        '{"v": 1, "t0": 0, "s": [[0, 500, 1, 0]]}',
        '{"v": 1, "t0": 0, "s": [[0, 50.5, 1, 1]]}',
        '{"v": 1, "t0": 0, "s": [[0, true, 1, 1]]}',
        '{"v": 1, "t0": 0, "s": [[600, 500, 1, 1], [0, 500, 1, 1]]}',
    ],
)
def test_a_missing_garbled_or_foreign_annotation_reads_as_empty_history(raw: str | None) -> None:
    assert loads(raw) == History()
    assert newest_bucket(raw) is None


def _newest_bucket_as_loads_reads_it(raw: str) -> int | None:
    samples = loads(raw).samples
    return int(samples[-1].time.timestamp()) // HISTORY_BUCKET_SECONDS if samples else None


def _outcome(read: Callable[[str], int | None], raw: str) -> object:
    try:
        return read(raw)
    except (OverflowError, OSError, ValueError) as exc:
        return type(exc)


_ROW = st.one_of(
    # Rows as written (some out of order, some out of a datetime's range through t0)...
    st.tuples(
        st.integers(min_value=-600, max_value=3600),
        st.integers(min_value=-1, max_value=1001),
        st.integers(min_value=-1, max_value=8),
        st.integers(min_value=0, max_value=3),
    ).map(list),
    st.tuples(st.integers(min_value=0, max_value=3600), st.just(500), st.just(1), st.just(1)).map(
        list
    ),
    # ...and garbage.
    st.lists(
        st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False)), min_size=3, max_size=5
    ),
)


@given(
    st.one_of(
        st.integers(min_value=1764432000, max_value=1764432000 + 86400),
        st.integers(min_value=-(2**40), max_value=2**40),
    ),
    st.lists(_ROW, max_size=8),
)
@example(1764432000, [[0, 500, 1, 1], [600, 500, 1, 1]])
@example(1764432000, [[600, 500, 1, 1], [0, 500, 1, 1]])  # out of order
@example(2**40, [[0, 500, 1, 1]])  # a time no datetime holds: both fail alike
@example(-(2**40), [[0, 500, 1, 1]])
@example(-1, [[0, 500, 1, 1], [2, 500, 1, 1]])  # before the epoch
def test_the_newest_bucket_is_the_one_loads_reads_whatever_the_annotation_holds(
    t0: int, rows: list[list[object]]
) -> None:
    raw = json.dumps({"v": 1, "t0": t0, "s": rows})
    assert _outcome(newest_bucket, raw) == _outcome(_newest_bucket_as_loads_reads_it, raw)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=900), st.integers(min_value=0, max_value=1000)
        ),
        min_size=1,
        max_size=400,
    )
)
def test_the_newest_bucket_of_a_written_history_is_its_newest_samples(
    steps: list[tuple[int, int]],
) -> None:
    rows, dt = [], 0
    for gap, permille in steps:
        dt += gap
        rows.append([dt, permille, 1, 1])
    raw = json.dumps({"v": 1, "t0": 1764432000, "s": rows})
    assert newest_bucket(raw) == _newest_bucket_as_loads_reads_it(raw) is not None


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=600),
            st.floats(min_value=0, max_value=100, allow_nan=False),
            st.integers(min_value=0, max_value=50),
        ),
        max_size=40,
    )
)
def test_appending_any_samples_keeps_history_ordered_bounded_and_round_trippable(
    steps: list[tuple[int, float, int]],
) -> None:
    history = History()
    time = NOW
    for gap, util, replicas in steps:
        time += timedelta(seconds=gap)
        history = append(
            history,
            UtilizationSample(time=time, utilization_percent=util, replicas=replicas),
            window_seconds=3600,
        )
    times = [s.time for s in history.samples]
    assert times == sorted(times)
    assert len(times) <= MAX_SAMPLES
    assert all(0 <= s.utilization_percent <= 100 for s in history.samples)
    restored = loads(dumps(history))
    assert len(restored.samples) == len(history.samples)
    assert all(
        abs(a.utilization_percent - b.utilization_percent) <= 0.05 + 1e-9
        and a.replicas == b.replicas
        for a, b in zip(restored.samples, history.samples, strict=True)
    )
