"""The benchmark's SLO model: how many of a replica group's requests start within their wait
budget, from an M/M/c queue per replica (Erlang C).

Owns: `erlang_c`, `within_budget` and `ReplicaQueue` (a workload's queue shape). Must not: know
about pods, nodes or strategies (`simulate` counts the Ready replicas and calls this per interval
between replica changes).

The model. A replica of an inference engine serves up to `slots` requests at once (its batch:
`targetInFlightRequests x saturation_factor`, 24 for the default workloads), each for the
workload's mean request duration (`latency_seconds`), so it is an M/M/c queue with c = slots and
service rate 1/latency per slot. The gateway spreads arrivals evenly over the group's `n` Ready
replicas, so each sees Poisson arrivals at `rate / n` (n independent M/M/c queues: conservative
next to one pooled queue, which a least-loaded gateway approaches). A request meets the SLO when
it waits at most `wait_budget_seconds` for a slot; with Erlang C,

    P(wait > d) = C(c, a) x exp(-(c mu - lambda) d),   a = lambda / mu, rho = a / c < 1

so latency grows with utilization: at the scaler's target (rho = 2/3) almost every request
starts at once, near saturation a large share waits past the budget. At rho >= 1 the queue has
no steady state (it grows for as long as the overload lasts): every request of that interval
counts as outside the SLO, the limit of the formula as rho -> 1. With no Ready replica nothing
is served within the SLO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["ReplicaQueue", "erlang_c", "within_budget"]


def erlang_c(servers: int, offered: float) -> float:
    """Erlang C: the probability an arrival waits, for `servers` servers and `offered` load in
    Erlangs (arrival rate x mean service time). 1.0 when the queue is unstable (offered >=
    servers); 0.0 with no load."""
    if servers <= 0:
        raise ValueError(f"servers must be positive, got {servers}")
    if offered < 0:
        raise ValueError(f"offered load must not be negative, got {offered}")
    if offered == 0:
        return 0.0
    if offered >= servers:
        return 1.0
    # Erlang B by its stable recursion, then C from B.
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered * blocking / (k + offered * blocking)
    rho = offered / servers
    return blocking / (1 - rho * (1 - blocking))


@lru_cache(maxsize=65536)
def _within_rounded(servers: int, rho_e5: int, budget_services: float) -> float:
    rho = rho_e5 / 100_000
    if rho >= 1:
        return 0.0
    wait = erlang_c(servers, rho * servers)
    return 1.0 - wait * math.exp(-servers * (1 - rho) * budget_services)


def within_budget(
    servers: int, rate: float, service_seconds: float, budget_seconds: float
) -> float:
    """The share of arrivals to one M/M/c queue that wait at most `budget_seconds`.

    `rate`: arrivals per second; `service_seconds`: mean service time. The utilization is
    rounded to 1e-5 for a cache (the model is smooth there; the simulation asks millions of
    times)."""
    if rate <= 0:
        return 1.0
    rho = rate * service_seconds / servers
    if rho >= 1:
        return 0.0
    return _within_rounded(servers, round(rho * 100_000), budget_seconds / service_seconds)


@dataclass(frozen=True)
class ReplicaQueue:
    """One workload's queue: `slots` concurrent requests per replica, `service_seconds` each,
    `budget_seconds` of queueing allowed by the SLO."""

    slots: int
    service_seconds: float
    budget_seconds: float

    @property
    def capacity_rps(self) -> float:
        """Requests/s one replica completes when every slot is busy."""
        return self.slots / self.service_seconds

    def within(self, replicas: int, rate: float) -> float:
        """Requests/s (of `rate`) that start within the budget on `replicas` Ready replicas."""
        if rate <= 0:
            return 0.0
        if replicas <= 0:
            return 0.0
        share = within_budget(
            self.slots, rate / replicas, self.service_seconds, self.budget_seconds
        )
        return rate * share
