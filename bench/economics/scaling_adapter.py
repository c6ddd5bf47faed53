"""The simulation's replica-count step: the operator's own scaling decision, driven by the trace.

Owns: turning a workload's demand (requests in flight plus held, as the gateway would report
it) into the endpoint's desired replica count each step, by calling
`tidal.scaling.autoscale.decide` exactly as the reconcile does — the load history kept with
`remember`, `current_replicas` the last decision, `ready_replicas` as observed. Every strategy
shares this step, so strategies differ only in where replicas run. `TidalStrategy` reaches the
same count inside `tidal.reconcile.endpoint.decide`, from the same demand and tuning
(tests/unit/test_economics_drives_decide.py checks they agree).

Fallback: where `tidal.scaling.autoscale` is absent (an older tree), the issue-6 rule
`ceil(demand / targetInFlightRequests)` within [minReplicas, maxReplicas], with the same
scale-down stabilization (the largest recommendation over the last
`FALLBACK_SCALE_DOWN_SECONDS`). `ReplicaCounter.source` says which one ran.

Must not: know about placement or strategies.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime, timedelta
from typing import Final

from tidal.api.endpoint import EndpointScalingSpec

try:
    from tidal.scaling import autoscale as _autoscale
except ImportError:  # pragma: no cover - only in trees without the scaling decision
    _autoscale = None  # type: ignore[assignment]

__all__ = ["FALLBACK_SCALE_DOWN_SECONDS", "ReplicaCounter"]

FALLBACK_SCALE_DOWN_SECONDS: Final = 60.0


class ReplicaCounter:
    """One endpoint's replica count over time (stateful, like the annotations it stands for)."""

    def __init__(self, spec: EndpointScalingSpec, created: datetime) -> None:
        self._spec = spec
        self._created = created
        self._current = max(1, spec.min_replicas)
        self._recent: deque[tuple[datetime, int]] = deque()
        self._samples: tuple[_autoscale.LoadSample, ...] = ()
        self.source = "tidal.scaling.autoscale.decide" if _autoscale else "fallback rule"

    def step(self, now: datetime, demand: int, ready: int) -> int:
        """Desired replicas at `now` for `demand` requests wanting a replica."""
        if _autoscale is not None:
            sample = _autoscale.LoadSample(time=now, demand=demand)
            self._samples = _autoscale.remember(self._samples, sample)
            state = _autoscale.ScalingState(
                current_replicas=self._current,
                ready_replicas=ready,
                load=self._samples,
                last_request_time=now if demand > 0 else None,
                active_since=self._created,
            )
            self._current = _autoscale.decide(self._spec, state, now).desired
            return self._current
        return self._fallback(now, demand)

    def _fallback(self, now: datetime, demand: int) -> int:
        spec = self._spec
        wants = math.ceil(demand / spec.target_in_flight_requests)
        self._recent.append((now, wants))
        horizon = now - timedelta(seconds=FALLBACK_SCALE_DOWN_SECONDS)
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        down = max(w for _, w in self._recent)
        desired = wants if wants > self._current else min(self._current, down)
        floor = max(1, spec.min_replicas)
        self._current = max(floor, min(spec.effective_max_replicas, desired))
        return self._current
