"""Rules `scaling.autoscale.decide` must keep for every input (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from tidal.api.endpoint import TARGET_LOAD_SHARE, EndpointScalingSpec, replicas_for_load
from tidal.api.signals import wake_pending
from tidal.scaling.autoscale import LoadSample, ScalingDecision, ScalingState, Tuning, decide

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _moment(seconds_ago: float | None) -> datetime | None:
    return None if seconds_ago is None else NOW - timedelta(seconds=seconds_ago)


ages = st.one_of(st.none(), st.floats(min_value=-120, max_value=10_000, allow_nan=False))


@st.composite
def specs(draw: st.DrawFn) -> EndpointScalingSpec:
    minimum = draw(st.integers(0, 20))
    maximum = draw(st.one_of(st.none(), st.integers(max(1, minimum), 40)))
    return EndpointScalingSpec(
        min_replicas=minimum,
        max_replicas=maximum,
        idle_seconds_before_scale_to_zero=draw(st.integers(1, 3600)),
        target_in_flight_requests=draw(st.integers(1, 64)),
    )


@st.composite
def states(draw: st.DrawFn) -> ScalingState:
    samples = draw(
        st.lists(
            st.builds(
                LoadSample,
                time=st.floats(min_value=-30, max_value=600, allow_nan=False).map(
                    lambda a: NOW - timedelta(seconds=a)
                ),
                demand=st.integers(0, 2000),
            ),
            max_size=12,
        )
    )
    return ScalingState(
        current_replicas=draw(st.integers(0, 60)),
        ready_replicas=draw(st.integers(0, 60)),
        load=tuple(samples),
        last_request_time=_moment(draw(ages)),
        wake_requested_at=_moment(draw(ages)),
        scaled_to_zero_time=_moment(draw(ages)),
        scaled_to_zero=draw(st.booleans()),
        waking_since=_moment(draw(ages)),
        active_since=_moment(draw(ages)),
        first_ready_time=_moment(draw(ages)),
    )


tunings = st.builds(
    Tuning,
    scale_up_stabilization_seconds=st.sampled_from([0.0, 15.0, 120.0]),
    scale_down_stabilization_seconds=st.sampled_from([0.0, 60.0, 300.0]),
    load_stale_after_seconds=st.sampled_from([10.0, 60.0]),
    max_wake_seconds=st.sampled_from([60.0, 1800.0]),
)


def _decide(spec: EndpointScalingSpec, state: ScalingState, tuning: Tuning) -> ScalingDecision:
    return decide(spec, state, NOW, tuning)


@settings(max_examples=150, deadline=None)
@given(specs(), states(), tunings)
def test_replicas_stay_within_zero_and_max(
    spec: EndpointScalingSpec, state: ScalingState, tuning: Tuning
) -> None:
    assert 0 <= _decide(spec, state, tuning).desired <= spec.effective_max_replicas


@settings(max_examples=150, deadline=None)
@given(specs(), states(), tunings)
def test_never_zero_and_never_below_min_when_min_replicas_is_set(
    spec: EndpointScalingSpec, state: ScalingState, tuning: Tuning
) -> None:
    decision = _decide(spec, state, tuning)

    if spec.min_replicas > 0:
        assert decision.desired >= spec.min_replicas
        assert not decision.scaled_to_zero


@settings(max_examples=150, deadline=None)
@given(specs(), states(), tunings)
def test_a_pending_wake_within_the_idle_time_means_at_least_one_replica(
    spec: EndpointScalingSpec, state: ScalingState, tuning: Tuning
) -> None:
    wake = state.wake_requested_at
    decision = _decide(spec, state, tuning)

    if (
        wake is not None
        and wake_pending(wake, state.scaled_to_zero_time)
        and (NOW - wake).total_seconds() < spec.idle_seconds_before_scale_to_zero
    ):
        assert decision.desired >= 1


@settings(max_examples=150, deadline=None)
@given(specs(), states(), tunings)
def test_fresh_demand_means_at_least_one_replica(
    spec: EndpointScalingSpec, state: ScalingState, tuning: Tuning
) -> None:
    fresh = [
        s for s in state.load if (NOW - s.time).total_seconds() <= tuning.load_stale_after_seconds
    ]
    decision = _decide(spec, state, tuning)

    if fresh and max(fresh, key=lambda s: s.time).demand > 0:
        assert decision.desired >= 1


@settings(max_examples=150, deadline=None)
@given(specs(), states(), tunings)
def test_zero_replicas_exactly_when_scaled_to_zero_and_the_condition_agrees(
    spec: EndpointScalingSpec, state: ScalingState, tuning: Tuning
) -> None:
    decision = _decide(spec, state, tuning)

    assert decision.scaled_to_zero is (decision.desired == 0)
    assert (decision.condition.status == "True") is decision.scaled_to_zero
    if decision.scaled_to_zero and not state.scaled_to_zero:
        assert decision.scaled_to_zero_time == NOW
        assert decision.events
    if decision.cold_start_seconds is not None:
        assert decision.cold_start_seconds >= 0
        assert decision.desired >= 1


@settings(max_examples=100, deadline=None)
@given(specs(), states(), tunings)
def test_deciding_is_a_pure_function_of_its_inputs(
    spec: EndpointScalingSpec, state: ScalingState, tuning: Tuning
) -> None:
    assert _decide(spec, state, tuning) == _decide(spec, state, tuning)


@given(demand=st.integers(0, 100_000), target=st.integers(1, 10_000))
def test_the_scaler_and_placement_count_a_replicas_capacity_in_one_unit(
    demand: int, target: int
) -> None:
    # ceil(demand / target) is the replicas at TARGET_LOAD_SHARE of saturation: the unit the
    # planner's interruption budget counts survivors and load in.
    spec = EndpointScalingSpec(target_in_flight_requests=target, max_replicas=1000)
    saturation = spec.saturation_in_flight_requests
    assert saturation * TARGET_LOAD_SHARE == target
    expected = -(-demand // target)
    assert replicas_for_load(Fraction(demand) / saturation) == expected
    # The float form (GPU load from telemetry) agrees wherever it is exact.
    assert replicas_for_load(float(Fraction(demand) / saturation)) == expected
