"""How many replicas an InferenceEndpoint should run, from gateway load and idle time.

Owns: `decide(spec, state, now)`, the one function the reconcile calls, and its inputs and
outputs (`ScalingState`, `LoadSample`, `Tuning`, `ScalingDecision`). Placement
still decides *where* the replicas go (spot/reserved); this decides *how many*.

Must not: do IO, read the clock or the environment (callers pass `now` and an env mapping),
or know Kopf. It reads the `InferenceEndpoint` model only in `ScalingState.observe`.

The rules (DESIGN.md §1 `scaling`, issue 6):

- **Load → replicas.** Each load sample (requests in flight plus requests held by the gateway,
  summed over its replicas) recommends `ceil(demand / targetInFlightRequests)`, i.e. replicas
  at `tidal.api.endpoint.TARGET_LOAD_SHARE` (2/3) of their saturation, the unit placement
  counts a replica's capacity in as well (`replicas_for_load`). Scale-up takes
  the *smallest* recommendation within the scale-up window and scale-down the *largest* within
  the scale-down window (the Kubernetes HPA's stabilization: a spike must last the up window
  to add replicas, a dip the down window to remove them). Defaults: 0 s up (add capacity at
  once: users are waiting), 60 s down (a GPU replica takes minutes to come back). Scale-down
  also needs samples covering the whole down window, so a restarted operator, which has lost
  its history, never scales down on one sample. Without fresh samples (gateway unreachable,
  not deployed) the count holds where it is.
- **Bounds.** Always within `[floor, maxReplicas]`, where floor is `minReplicas`, or 1 while
  an endpoint with `minReplicas: 0` is not idle.
- **Idle → zero.** With `minReplicas: 0`, no demand in the newest sample and no activity
  (last request, wake, creation) for `idleSecondsBeforeScaleToZero`: 0 replicas,
  `ScaledToZero=True`, `scaledToZeroTime=now`, Event `ScaledToZero`.
- **Wake.** Scaled to zero and a wake is pending (the gateway's `tidal.dev/wake-requested-at`
  is later than `scaledToZeroTime`) or the gateway reports demand: at least one replica,
  `ScaledToZero=False` reason `Waking`, Event `Waking`. Waking is never cut short by the idle
  rule until `max_wake_seconds` have passed without a ready replica (then `WakeTimedOut`, a
  Warning, and back to zero), because a cold start can take longer than the idle time.
- **Cold start.** Waking and a replica is ready: `lastColdStartSeconds` = first ready replica
  (its Ready transition when the caller knows it, else `now`) - the wake; Event `WokeUp`;
  `ScaledToZero=False` reason `Active`.

The state machine lives in the `ScaledToZero` condition (True = scaled to zero; False with
reason `Waking` = waking; `Active` = serving; `Disabled` = `minReplicas` > 0), so an operator
restart resumes it from the object alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Final, Literal

from tidal.api.common import SCALED_TO_ZERO, Condition, Event, get_condition
from tidal.api.endpoint import EndpointScalingSpec, InferenceEndpoint, replicas_for_load
from tidal.api.labels import LAST_REQUEST_TIME, WAKE_REQUESTED_AT
from tidal.api.signals import EndpointLoad, wake_pending
from tidal.api.wire import format_time, parse_time
from tidal.errors import PermanentError

__all__ = [
    "ACTIVE",
    "DEFAULT_TUNING",
    "DISABLED",
    "IDLE",
    "WAKING",
    "LoadSample",
    "ScalingDecision",
    "ScalingState",
    "Tuning",
    "decide",
    "remember",
]

# Reasons of the ScaledToZero condition: they are also the state machine's states.
IDLE: Final = "Idle"
WAKING: Final = "Waking"
ACTIVE: Final = "Active"
DISABLED: Final = "Disabled"


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Operator-wide knobs (not per endpoint: the API has no fields for them in v1alpha1)."""

    scale_up_stabilization_seconds: float = 0.0
    scale_down_stabilization_seconds: float = 60.0
    # A sample older than this says nothing about now (the gateway may be gone).
    load_stale_after_seconds: float = 60.0
    # How long a wake keeps the endpoint up while no replica becomes ready.
    max_wake_seconds: float = 1800.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not math.isfinite(value) or value < 0:
                raise PermanentError(f"{field.name} must be a non-negative number, got {value!r}")
        if self.load_stale_after_seconds <= 0 or self.max_wake_seconds <= 0:
            raise PermanentError("load_stale_after_seconds and max_wake_seconds must be positive")

    @property
    def history_seconds(self) -> float:
        """How much load history `decide` can use; older samples may be dropped."""
        return max(
            self.scale_up_stabilization_seconds,
            self.scale_down_stabilization_seconds,
            self.load_stale_after_seconds,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tuning:
        """Tuning from `TIDAL_SCALE_UP_STABILIZATION_SECONDS`,
        `TIDAL_SCALE_DOWN_STABILIZATION_SECONDS`, `TIDAL_LOAD_STALE_AFTER_SECONDS` and
        `TIDAL_MAX_WAKE_SECONDS` (unset: the defaults). A bad value raises `PermanentError`."""
        names = {
            "scale_up_stabilization_seconds": "TIDAL_SCALE_UP_STABILIZATION_SECONDS",
            "scale_down_stabilization_seconds": "TIDAL_SCALE_DOWN_STABILIZATION_SECONDS",
            "load_stale_after_seconds": "TIDAL_LOAD_STALE_AFTER_SECONDS",
            "max_wake_seconds": "TIDAL_MAX_WAKE_SECONDS",
        }
        values: dict[str, float] = {}
        for field, key in names.items():
            raw = env.get(key, "").strip()
            if not raw:
                continue
            try:
                values[field] = float(raw)
            except ValueError:
                raise PermanentError(f"{key} must be a number of seconds, got {raw!r}") from None
        return cls(**values)


DEFAULT_TUNING: Final = Tuning()


@dataclasses.dataclass(frozen=True)
class LoadSample:
    """Demand on one endpoint at one moment: in-flight plus held requests, all gateways."""

    time: datetime
    demand: int

    @classmethod
    def of(cls, time: datetime, load: EndpointLoad) -> LoadSample:
        return cls(time, load.demand)


def remember(
    samples: Iterable[LoadSample], sample: LoadSample, tuning: Tuning = DEFAULT_TUNING
) -> tuple[LoadSample, ...]:
    """`samples` plus `sample`, oldest first, without what `decide` will never look at again.

    One sample older than the history is kept: it proves the history covers the whole
    scale-down window.
    """
    ordered = sorted([*samples, sample], key=lambda s: s.time)
    horizon = sample.time - timedelta(seconds=tuning.history_seconds)
    older = [s for s in ordered if s.time < horizon]
    return tuple(older[-1:] + [s for s in ordered if s.time >= horizon])


@dataclasses.dataclass(frozen=True)
class ScalingState:
    """What the reconcile observed, in the terms `decide` needs.

    `ScalingState.observe` builds it from the endpoint; construct it directly in tests.
    """

    current_replicas: int
    """The replica count the operator last asked for (`status.replicas.desired`)."""
    ready_replicas: int
    """Ready replicas now (`status.replicas.ready` as just observed)."""
    load: tuple[LoadSample, ...] = ()
    """Load history from the gateway, any order; see `remember`."""
    last_request_time: datetime | None = None
    """Newest gateway activity: `tidal.dev/last-request-time`, `status.lastRequestTime` or a
    gateway report, whichever is latest."""
    wake_requested_at: datetime | None = None
    """`tidal.dev/wake-requested-at`."""
    scaled_to_zero_time: datetime | None = None
    """`status.scaledToZeroTime`."""
    scaled_to_zero: bool = False
    """The `ScaledToZero` condition is True."""
    waking_since: datetime | None = None
    """Set while waking (`ScaledToZero` False with reason `Waking`): when the wake began."""
    active_since: datetime | None = None
    """When the endpoint started counting as active: its creation time."""
    first_ready_time: datetime | None = None
    """Earliest Ready transition among the ready replicas, when known (cold start precision)."""
    first_scheduled_time: datetime | None = None
    """When that replica was bound to a node (a node autoscaler's part of a cold start ends
    there: the node existed; what follows is the model server starting)."""
    generation: int | None = None
    """`metadata.generation`, stamped on the condition."""

    @classmethod
    def observe(
        cls,
        endpoint: InferenceEndpoint,
        *,
        ready_replicas: int,
        current_replicas: int | None = None,
        load: Sequence[LoadSample] = (),
        gateway_last_request_time: datetime | None = None,
        first_ready_time: datetime | None = None,
        first_scheduled_time: datetime | None = None,
    ) -> ScalingState:
        """The state as recorded on `endpoint` (annotations, status, conditions) plus what
        the reconcile observed. `current_replicas` defaults to `status.replicas.desired`."""
        metadata = endpoint.metadata
        annotations = metadata.get("annotations") or {}
        status = endpoint.status
        wake = parse_time(annotations.get(WAKE_REQUESTED_AT))
        scaled_at = parse_time(status.scaled_to_zero_time)
        requests = [
            parse_time(annotations.get(LAST_REQUEST_TIME)),
            parse_time(status.last_request_time),
            gateway_last_request_time,
        ]
        known = [t for t in requests if t is not None]
        condition = get_condition(status.conditions, SCALED_TO_ZERO)
        waking_since = None
        if condition is not None and condition.status == "False" and condition.reason == WAKING:
            starts = [parse_time(condition.last_transition_time)]
            if wake_pending(wake, scaled_at):
                starts.append(wake)
            known_starts = [t for t in starts if t is not None]
            # Without any time the wake starts now-ish; the caller's `now` is not known here,
            # so fall back to the creation time rather than inventing one.
            waking_since = (
                min(known_starts) if known_starts else parse_time(metadata.get("creationTimestamp"))
            )
        generation = metadata.get("generation")
        return cls(
            current_replicas=(
                status.replicas.desired if current_replicas is None else current_replicas
            ),
            ready_replicas=ready_replicas,
            load=tuple(load),
            last_request_time=max(known) if known else None,
            wake_requested_at=wake,
            scaled_to_zero_time=scaled_at,
            scaled_to_zero=condition is not None and condition.status == "True",
            waking_since=waking_since,
            active_since=parse_time(metadata.get("creationTimestamp")),
            first_ready_time=first_ready_time,
            first_scheduled_time=first_scheduled_time,
            generation=generation if isinstance(generation, int) else None,
        )


@dataclasses.dataclass(frozen=True)
class ScalingDecision:
    """What to do; the reconcile applies `desired` through placement and writes the rest."""

    desired: int
    """Total replicas (placement splits them between spot and reserved)."""
    scaled_to_zero: bool
    """True exactly when `desired` is 0 because the endpoint is idle."""
    scaled_to_zero_time: datetime | None
    """`status.scaledToZeroTime` to write: `now` when scaling to zero, else the previous one."""
    woke: bool
    """This decision starts a wake from zero."""
    cold_start_seconds: float | None
    """`status.lastColdStartSeconds` measured by this decision; None leaves status as it is."""
    last_request_time: datetime | None
    """`status.lastRequestTime` to write (the newest activity seen)."""
    reason: str
    """One line for logs: why this count."""
    condition: Condition
    """The `ScaledToZero` condition (upsert it with `set_condition`)."""
    events: tuple[Event, ...] = ()


def decide(
    spec: EndpointScalingSpec, state: ScalingState, now: datetime, tuning: Tuning = DEFAULT_TUNING
) -> ScalingDecision:
    """The replica count and scale-to-zero state for one endpoint at `now` (see the module)."""
    return _Decider(spec, state, now, tuning).run()


class _Decider:
    """One decision's working set; keeps the rules readable as a few short methods."""

    def __init__(
        self, spec: EndpointScalingSpec, state: ScalingState, now: datetime, tuning: Tuning
    ) -> None:
        self.spec = spec
        self.state = state
        self.now = now
        self.tuning = tuning
        self.maximum = spec.effective_max_replicas
        fresh = [s for s in state.load if self._age(s.time) <= tuning.load_stale_after_seconds]
        self.latest = max(fresh, key=lambda s: s.time) if fresh else None

    # --- the states ---------------------------------------------------------------------

    def run(self) -> ScalingDecision:
        if self.spec.min_replicas > 0:
            desired, why = self._autoscale(floor=self.spec.min_replicas)
            message = f"minReplicas is {self.spec.min_replicas}: scale to zero is off"
            return self._decision(desired, why, "False", DISABLED, message)
        if self.state.scaled_to_zero:
            return self._from_zero()
        if self.state.waking_since is not None:
            return self._waking(self.state.waking_since)
        return self._active()

    def _from_zero(self) -> ScalingDecision:
        state = self.state
        woken = wake_pending(state.wake_requested_at, state.scaled_to_zero_time)
        if not (woken or self._busy):
            idle = self._idle_seconds()
            message = (
                f"No requests for {_seconds(idle)}; scaled to zero"
                if idle is not None
                else "Scaled to zero"
            )
            return self._decision(0, "scaled to zero and no wake", "True", IDLE, message)
        since = state.wake_requested_at if woken and state.wake_requested_at else self.now
        desired, why = self._autoscale(floor=1, current=0)
        cause = (
            f"wake requested at {format_time(since)}"
            if woken
            else f"{self._demand} request(s) waiting at the gateway"
        )
        message = f"Waking from zero: {cause}; waiting for the first ready replica"
        event = Event("Normal", "Waking", f"Waking from zero ({cause}): {desired} replica(s)")
        decision = self._decision(desired, f"waking: {why}", "False", WAKING, message, (event,))
        decision = dataclasses.replace(decision, woke=True)
        if state.ready_replicas > 0 and self._ready_after(since):
            # Already up (a replica that survived, or a very fast start): finish in one step.
            return self._woke(since, decision)
        return decision

    def _waking(self, since: datetime) -> ScalingDecision:
        if self.state.ready_replicas > 0 and self._ready_after(since):
            desired, why = self._autoscale(floor=1)
            return self._woke(since, self._decision(desired, why, "False", ACTIVE, ""))
        idle = self._idle_seconds()
        if (
            idle is not None
            and idle >= self.spec.idle_seconds_before_scale_to_zero
            and self._age(since) >= self.tuning.max_wake_seconds
            and not self._busy
        ):
            message = (
                f"No replica became ready within {_seconds(self._age(since))} of the wake "
                f"request and no requests for {_seconds(idle)}; scaled back to zero"
            )
            event = Event("Warning", "WakeTimedOut", message)
            return self._to_zero(message, (event,))
        desired, why = self._autoscale(floor=1)
        message = (
            f"Waking from zero since {format_time(since)}; waiting for the first ready replica "
            f"({_seconds(self._age(since))} so far)"
        )
        return self._decision(desired, f"waking: {why}", "False", WAKING, message)

    def _active(self) -> ScalingDecision:
        idle = self._idle_seconds()
        limit = self.spec.idle_seconds_before_scale_to_zero
        if not self._busy and idle is not None and idle >= limit:
            message = (
                f"No requests for {_seconds(idle)} (idleSecondsBeforeScaleToZero: {limit}); "
                "scaled to zero"
            )
            return self._to_zero(message, (Event("Normal", "ScaledToZero", message),))
        desired, why = self._autoscale(floor=1)
        ready = self.state.ready_replicas
        message = f"{ready} replica(s) ready; scales to zero after {limit}s without requests"
        return self._decision(desired, why, "False", ACTIVE, message)

    def _woke(self, since: datetime, decision: ScalingDecision) -> ScalingDecision:
        ready_at = self.state.first_ready_time or self.now
        cold = max(0.0, (ready_at - since).total_seconds())
        message = f"First replica ready {cold:.1f}s after the wake request"
        scheduled = self.state.first_scheduled_time
        if scheduled is not None and since <= scheduled <= ready_at:
            # Split where the replica was bound: before, a node was found or provisioned.
            placing = (scheduled - since).total_seconds()
            starting = (ready_at - scheduled).total_seconds()
            message += f" ({placing:.1f}s to a node, {starting:.1f}s starting there)"
        return dataclasses.replace(
            decision,
            cold_start_seconds=round(cold, 3),
            condition=decision.condition.model_copy(
                update={"reason": ACTIVE, "message": f"Woke from zero: {message.lower()}"}
            ),
            events=(*decision.events, Event("Normal", "WokeUp", message)),
        )

    def _to_zero(self, message: str, events: tuple[Event, ...]) -> ScalingDecision:
        decision = self._decision(0, "idle", "True", IDLE, message, events)
        return dataclasses.replace(decision, scaled_to_zero_time=self.now)

    # --- load ---------------------------------------------------------------------------

    @property
    def _demand(self) -> int:
        return self.latest.demand if self.latest is not None else 0

    @property
    def _busy(self) -> bool:
        return self._demand > 0

    def _recommend(self, demand: int) -> int:
        # The load in replica saturations, run at the share placement counts with too
        # (`tidal.api.endpoint.TARGET_LOAD_SHARE`): ceil(demand / targetInFlightRequests).
        return replicas_for_load(Fraction(demand) / self.spec.saturation_in_flight_requests)

    def _autoscale(self, *, floor: int, current: int | None = None) -> tuple[int, str]:
        """Replicas for the load within [floor, max], with stabilization; and why."""
        current = self.state.current_replicas if current is None else current
        desired, why = current, f"holding {current} replica(s): no fresh load from the gateway"
        if self.latest is not None:
            target = self.spec.target_in_flight_requests
            now_wants = self._recommend(self.latest.demand)
            up_window = self.tuning.scale_up_stabilization_seconds
            up = min(self._recommendations(up_window) or [now_wants])
            down_window = self.tuning.scale_down_stabilization_seconds
            down = max(self._recommendations(down_window) or [now_wants])
            load = f"{self.latest.demand} in flight / {target} per replica"
            if up > current:
                desired, why = up, f"{load}: scale up to {up}"
            elif down < current and self._covers(down_window):
                desired, why = down, f"{load}: scale down to {down}"
            elif now_wants < current:
                why = (
                    f"{load} wants {now_wants}; holding {current} "
                    f"(scale-down stabilization {down_window:g}s)"
                )
            elif now_wants > current:
                why = (
                    f"{load} wants {now_wants}; holding {current} "
                    f"(scale-up stabilization {up_window:g}s)"
                )
            else:
                why = f"{load}: {current} replica(s)"
        bounded = min(max(desired, floor), self.maximum)
        if bounded != desired:
            why += f"; bounded to {bounded} (min {floor}, max {self.maximum})"
        return bounded, why

    def _recommendations(self, window: float) -> list[int]:
        if self.latest is None:
            return []
        if window <= 0:
            return [self._recommend(self.latest.demand)]
        return [
            self._recommend(s.demand)
            for s in self.state.load
            if 0 <= self._age(s.time) <= window or s is self.latest
        ]

    def _covers(self, window: float) -> bool:
        """The samples reach back at least `window` seconds (so a dip lasted that long)."""
        if window <= 0:
            return self.latest is not None
        return any(self._age(s.time) >= window for s in self.state.load)

    # --- time ---------------------------------------------------------------------------

    def _age(self, moment: datetime) -> float:
        return (self.now - moment).total_seconds()

    def _idle_seconds(self) -> float | None:
        """Seconds since the last sign of use (request, wake, creation); None if unknown."""
        state = self.state
        signs = [
            t
            for t in (state.last_request_time, state.wake_requested_at, state.active_since)
            if t is not None
        ]
        return self._age(max(signs)) if signs else None

    def _ready_after(self, since: datetime) -> bool:
        # A replica whose Ready transition predates the wake is one still going away.
        first = self.state.first_ready_time
        return first is None or first >= since

    # --- output -------------------------------------------------------------------------

    def _decision(
        self,
        desired: int,
        why: str,
        status: Literal["True", "False"],
        reason: str,
        message: str,
        events: tuple[Event, ...] = (),
    ) -> ScalingDecision:
        return ScalingDecision(
            desired=desired,
            scaled_to_zero=desired == 0,
            scaled_to_zero_time=self.state.scaled_to_zero_time,
            woke=False,
            cold_start_seconds=None,
            last_request_time=self.state.last_request_time,
            reason=why,
            condition=Condition(
                type=SCALED_TO_ZERO,
                status=status,
                reason=reason,
                message=message,
                observed_generation=self.state.generation,
            ),
            events=events,
        )


def _seconds(value: float) -> str:
    return f"{int(value)}s"
