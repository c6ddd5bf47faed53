"""Auto as an interruption budget: reclaim rates, recovery, holdings, expected loss, the floor."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.placement.budget import (
    DEFAULT_PRIOR,
    ReclaimPrior,
    Reclaims,
    SpotPool,
    expected_loss,
    holdings,
    reclaim_rate,
    recovery_seconds,
    reserved_floor,
)

DAILY = 1 / 24


def pool(name: str, room: int = 100, rate: float = DAILY, region: str | None = None) -> SpotPool:
    return SpotPool(
        name=name, region=region or name.split("/")[0], room=room, reclaims_per_hour=rate
    )


ONE = (pool("a/h100"),)
TWO_REGIONS = (pool("a/h100"), pool("b/h100"))
THREE_REGIONS = (pool("a/h100"), pool("b/h100"), pool("c/h100"))
TWO_PRODUCTS = (pool("a/h100", room=4), pool("a/l4", room=2))


# --- the inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "prior", "rate"),
    [
        (Reclaims(), DEFAULT_PRIOR, DAILY),  # unseen: the prior
        (Reclaims(episodes=0, hours=72), DEFAULT_PRIOR, 3 / 144),  # calm: halfway down
        (Reclaims(episodes=9, hours=72), DEFAULT_PRIOR, 12 / 144),  # stormy: above the prior
        (Reclaims(episodes=5, hours=10), ReclaimPrior(weight_hours=0), 0.5),  # no prior weight
        (Reclaims(), ReclaimPrior(weight_hours=0), DAILY),  # nothing at all: the prior's guess
        (Reclaims(episodes=-3, hours=-5), DEFAULT_PRIOR, DAILY),  # nonsense counts nothing
    ],
)
def test_a_pools_reclaim_rate_is_the_posterior_mean_under_the_pessimistic_prior(
    observed: Reclaims, prior: ReclaimPrior, rate: float
) -> None:
    assert reclaim_rate(observed, prior) == pytest.approx(rate)


@pytest.mark.parametrize(
    ("cold_start", "prior", "seconds"),
    [
        (None, DEFAULT_PRIOR, 660.0),  # never measured: the configured cold start
        (95.5, DEFAULT_PRIOR, 155.5),  # detection + the measured start
        (0.0, ReclaimPrior(detection_seconds=0), 0.0),
        (-4.0, DEFAULT_PRIOR, 60.0),
        # AWS's two-minute notice: the replacement starts 120 s before the node goes.
        (240.0, ReclaimPrior(notice_seconds=120), 180.0),
        (None, ReclaimPrior(notice_seconds=120), 540.0),
        # A start shorter than the notice costs nothing: the replacement is Ready in time.
        (30.0, ReclaimPrior(notice_seconds=120), 0.0),
        (90.0, ReclaimPrior(notice_seconds=30), 120.0),  # GCP and Azure: 30 s
    ],
)
def test_recovery_is_detection_plus_the_measured_start_less_the_notice(
    cold_start: float | None, prior: ReclaimPrior, seconds: float
) -> None:
    assert recovery_seconds(cold_start, prior) == seconds


@pytest.mark.parametrize(
    "field", ["reclaims_per_hour", "weight_hours", "cold_start_seconds", "notice_seconds"]
)
@pytest.mark.parametrize("value", [-1.0, float("inf"), float("nan")])
def test_a_prior_refuses_negative_or_infinite_numbers(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ReclaimPrior(**{field: value})


@pytest.mark.parametrize(
    ("spot", "pools", "spread", "held"),
    [
        # Unspread: the scheduler may pack every spot replica into any pool with room.
        (5, TWO_REGIONS, False, {"a/h100": 5, "b/h100": 5}),
        (5, TWO_PRODUCTS, False, {"a/h100": 4, "a/l4": 2}),
        # Spread over regions (maxSkew 1): at most the even share, rounded up.
        (5, TWO_REGIONS, True, {"a/h100": 3, "b/h100": 3}),
        (6, THREE_REGIONS, True, {"a/h100": 2, "b/h100": 2, "c/h100": 2}),
        # ... and within a region still packed into one product.
        (
            4,
            (*TWO_PRODUCTS, pool("b/h100")),
            True,
            {"a/h100": 2, "a/l4": 2, "b/h100": 2},
        ),
        (0, TWO_REGIONS, True, {"a/h100": 0, "b/h100": 0}),
    ],
)
def test_holdings_are_the_most_spot_replicas_each_pool_may_end_up_with(
    spot: int, pools: tuple[SpotPool, ...], spread: bool, held: dict[str, int]
) -> None:
    assert holdings(spot, pools, spread=spread) == held


def test_expected_loss_is_rate_times_recovery_times_the_share_of_load_left_uncarried() -> None:
    # 6 replicas, 4.0 of load, 2 reserved, 4 spot in one pool: losing it leaves 2 saturations
    # for 4.0 of load, half uncarried, for 660 s once a day.
    loss = expected_loss(desired=6, reserved=2, load=4.0, pools=ONE, recovery=660, spread=False)
    assert loss == pytest.approx(DAILY * 660 / 3600 * 0.5)
    # Two pools spread: each holds 2, losing one leaves 4 saturations: nothing missed.
    assert (
        expected_loss(desired=6, reserved=2, load=4.0, pools=TWO_REGIONS, recovery=660, spread=True)
        == 0
    )
    # The loss is a share of requests: never above all of them.
    assert (
        expected_loss(
            desired=2,
            reserved=0,
            load=2.0,
            pools=(pool("a/x", rate=1e6),),
            recovery=1e6,
            spread=False,
        )
        == 1.0
    )
    # No load, nothing to lose.
    assert (
        expected_loss(desired=3, reserved=0, load=0.0, pools=ONE, recovery=660, spread=False) == 0
    )


# --- the floor -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "lower", "load", "pools", "budget", "spread", "reserved", "largest"),
    [
        # One pool, the default budget: reserved carries the load on its own.
        (6, 0, 4.0, ONE, Fraction(1, 10_000), False, 4, "a/h100"),
        (3, 0, 2.0, ONE, Fraction(1, 10_000), False, 2, "a/h100"),
        (4, 0, 8 / 3, ONE, Fraction(1, 10_000), False, 3, "a/h100"),  # ceil, no float noise
        # ... the spec's lower bound wins above it.
        (6, 5, 4.0, ONE, Fraction(1, 10_000), False, 5, "a/h100"),
        # Two regions spread: reserved covers what losing half of spot leaves uncarried.
        (6, 0, 4.0, TWO_REGIONS, Fraction(1, 10_000), True, 2, "a/h100"),
        # ... unspread, either region may hold all of it: as one pool.
        (6, 0, 4.0, TWO_REGIONS, Fraction(1, 10_000), False, 4, "a/h100"),
        # Three regions: no reserved needed.
        (6, 0, 4.0, THREE_REGIONS, Fraction(1, 10_000), True, 0, "a/h100"),
        # Two products in one region, room-limited (4 and 2): losing the larger one must leave
        # 4 saturations, so it may hold 2 at most.
        (6, 0, 4.0, TWO_PRODUCTS, Fraction(1, 10_000), False, 4, "a/h100"),
        # A generous budget allows a shortfall: 0.5% covers 0.76% x 2/4, not 0.76% x 3/4 ...
        (6, 0, 4.0, ONE, Fraction(1, 200), False, 2, "a/h100"),
        # ... 1% covers losing the whole pool.
        (6, 0, 4.0, ONE, Fraction(1, 100), False, 0, "a/h100"),
        # The two ends.
        (6, 0, 4.0, ONE, Fraction(1), False, 0, "a/h100"),
        (6, 1, 4.0, ONE, Fraction(1), False, 1, "a/h100"),
        (6, 0, 4.0, THREE_REGIONS, Fraction(0), True, 4, "a/h100"),
        # No spot pool known: nothing to lose.
        (6, 0, 4.0, (), Fraction(1, 10_000), False, 0, None),
        (0, 0, 0.0, ONE, Fraction(1, 10_000), False, 0, None),
        # Load beyond what desired can carry is not spot's doing.
        (2, 0, 5.0, ONE, Fraction(1, 10_000), False, 2, None),
    ],
)
def test_the_floor_is_the_fewest_reserved_replicas_within_budget(
    desired: int,
    lower: int,
    load: float,
    pools: tuple[SpotPool, ...],
    budget: Fraction,
    spread: bool,
    reserved: int,
    largest: str | None,
) -> None:
    floor = reserved_floor(
        desired=desired,
        lower=lower,
        load=load,
        pools=pools,
        recovery=660,
        budget=budget,
        spread=spread,
    )
    assert floor.reserved == reserved
    assert floor.largest_pool == largest
    assert floor.expected_loss <= budget
    assert floor.by_budget is (reserved > lower)
    if reserved > max(0, lower) and budget > 0:
        fewer = expected_loss(
            desired=desired,
            reserved=reserved - 1,
            load=load,
            pools=pools,
            recovery=660,
            spread=spread,
        )
        assert fewer > budget, "one reserved fewer would have been within budget"


def test_less_room_in_one_pool_can_lower_the_floor_because_spot_must_then_spread() -> None:
    # Found by the placement property test: 12 replicas, load 8, at most 5 on spot. When the
    # H100 spot nodes have room for 5, all 5 may land there, and losing that pool leaves 7 for
    # a load of 8: a 5th spot replica is over budget. Once one H100 spot node is gone (room 4),
    # a 5th spot replica can only land on the L4 node, so either pool's loss leaves 8: within
    # budget. Losing spot capacity adding a spot replica is the rule working, not a fault.
    def floor(h100_room: int) -> int:
        pools = (pool("a/h100", room=h100_room), pool("a/l4", room=1))
        return reserved_floor(
            desired=12,
            lower=7,
            load=8.0,
            pools=pools,
            recovery=660,
            budget=Fraction(1, 10_000),
            spread=False,
        ).reserved

    assert floor(h100_room=5) == 8
    assert floor(h100_room=4) == 7


def test_the_floor_reports_whether_the_rest_carries_the_load_without_the_largest_pool() -> None:
    kw = {"desired": 6, "lower": 0, "load": 4.0, "pools": ONE, "recovery": 660, "spread": False}
    tight = reserved_floor(budget=Fraction(1, 10_000), **kw)  # type: ignore[arg-type]
    assert (tight.survives_largest, tight.largest_held) == (True, 2)
    loose = reserved_floor(budget=Fraction(1, 200), **kw)  # type: ignore[arg-type]
    assert (loose.survives_largest, loose.largest_held) == (False, 4)
    assert loose.expected_loss == pytest.approx(DAILY * 660 / 3600 * 0.5)


# --- properties ----------------------------------------------------------------------------------

pools_strategy = st.lists(
    st.builds(
        SpotPool,
        name=st.sampled_from(["a/h100", "a/l4", "b/h100", "c/a10"]),
        region=st.sampled_from(["a", "b", "c"]),
        room=st.integers(0, 40),
        reclaims_per_hour=st.floats(0, 2),
    ),
    max_size=4,
    unique_by=lambda p: p.name,
)
budgets = st.fractions(0, 1, max_denominator=10**6)


@st.composite
def situations(draw: st.DrawFn) -> dict[str, object]:
    desired = draw(st.integers(0, 40))
    return {
        "desired": desired,
        "lower": draw(st.integers(0, 45)),
        "load": draw(st.floats(0, desired)),
        "pools": tuple(draw(pools_strategy)),
        "recovery": draw(st.floats(0, 7200)),
        "spread": draw(st.booleans()),
    }


def floor_of(situation: dict[str, object], **changes: object) -> int:
    return reserved_floor(**{**situation, **changes}).reserved  # type: ignore[arg-type]


@given(situation=situations(), budget=budgets)
def test_the_floor_stays_within_the_spec_and_the_budget(
    situation: dict[str, object], budget: Fraction
) -> None:
    floor = reserved_floor(budget=budget, **situation)  # type: ignore[arg-type]
    desired = situation["desired"]
    assert isinstance(desired, int)
    assert min(situation["lower"], desired) <= floor.reserved <= desired  # type: ignore[call-overload]
    assert floor.expected_loss <= budget


@given(situation=situations())
def test_budget_zero_keeps_the_whole_load_on_reserved_and_budget_100_is_spot_preferred(
    situation: dict[str, object],
) -> None:
    desired, lower, load = situation["desired"], situation["lower"], situation["load"]
    assert isinstance(desired, int)
    assert isinstance(lower, int)
    assert isinstance(load, float)
    assert floor_of(situation, budget=Fraction(0)) >= min(desired, round(load, 6))
    assert floor_of(situation, budget=Fraction(1)) == min(lower, desired)


@given(situation=situations(), a=budgets, b=budgets)
def test_a_larger_budget_never_raises_the_floor(
    situation: dict[str, object], a: Fraction, b: Fraction
) -> None:
    low, high = sorted((a, b))
    assert floor_of(situation, budget=high) <= floor_of(situation, budget=low)


@given(situation=situations(), budget=budgets, factor=st.floats(1, 10), extra=st.floats(0, 3600))
def test_more_reclaims_or_a_slower_recovery_never_lowers_the_floor(
    situation: dict[str, object], budget: Fraction, factor: float, extra: float
) -> None:
    pools = situation["pools"]
    assert isinstance(pools, tuple)
    stormier = tuple(
        SpotPool(p.name, p.region, p.room, p.reclaims_per_hour * factor) for p in pools
    )
    recovery = situation["recovery"]
    assert isinstance(recovery, float)
    base = floor_of(situation, budget=budget)
    assert floor_of(situation, budget=budget, pools=stormier) >= base
    assert floor_of(situation, budget=budget, recovery=recovery + extra) >= base


@given(situation=situations())
def test_the_loss_never_grows_with_reserved(situation: dict[str, object]) -> None:
    desired = situation["desired"]
    assert isinstance(desired, int)
    kw = {k: v for k, v in situation.items() if k != "lower"}
    losses = [expected_loss(reserved=r, **kw) for r in range(desired + 1)]  # type: ignore[arg-type]
    assert all(x >= y for x, y in itertools.pairwise(losses))
    assert not losses or losses[-1] == 0
