"""The benchmark's unit of work, run in worker processes: one strategy over one seed's
scenario in one spot market.

Owns: `Setup` (what every run shares), `Market`, `Job`, building (and caching) a worker's
scenarios, and the pool's entry points (`init`, `run_job`). Lives apart from `__main__` because
spawned workers cannot import a package's `__main__`. Must not: aggregate or report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bench.economics import availability, baselines, traces
from bench.economics.simulate import RunResult, run
from bench.economics.traces import NodeSpec, Scenario, SpotEvent

__all__ = ["Job", "Market", "Setup", "init", "run_job", "run_job_in_worker", "scenario"]


@dataclass(frozen=True)
class Market:
    """A spot market to replay: its name and crunch rate (per region per day)."""

    name: str
    crunches: float


@dataclass(frozen=True)
class Job:
    seed: int
    market: Market
    strategy: str


@dataclass(frozen=True)
class Setup:
    hours: float
    warmup_hours: float
    step_seconds: int
    notice_seconds: float
    decide_every_seconds: float
    spot_trace: str | None
    # The reconciling rows' reclaim prior weight in hours (None: the operator's default).
    reclaim_prior_hours: float | None = None
    # The reconciling rows' TIDAL_SPOT_NOTICE_SECONDS (None: the operator's default, 0).
    operator_notice_seconds: float | None = None
    # Days the operator watched the market before the run (its reclaim ledger); 0: fresh.
    watched_days: float = 0.0
    # The reconciling rows' TIDAL_SPOT_DETECTION_SECONDS (None: the operator's default, 60).
    operator_detection_seconds: float | None = None


_SETUP: Setup | None = None


def init(setup: Setup) -> None:
    global _SETUP
    _SETUP = setup


def run_job_in_worker(job: Job) -> RunResult:
    assert _SETUP is not None
    return run_job(_SETUP, job)


@lru_cache(maxsize=4)
def scenario(setup: Setup, seed: int, market: Market) -> Scenario:
    events = None
    if setup.spot_trace:
        pools = availability.read_dir(Path(setup.spot_trace))

        def events(
            nodes: Sequence[NodeSpec], seed: int, total: float, notice: float
        ) -> list[SpotEvent]:
            return availability.events(pools, nodes, seed, total, notice)

    return traces.generate(
        seed,
        hours=setup.hours,
        warmup_hours=setup.warmup_hours,
        step_seconds=setup.step_seconds,
        crunches_per_region_per_day=market.crunches,
        notice_seconds=setup.notice_seconds,
        availability=events,
    )


def run_job(setup: Setup, job: Job) -> RunResult:
    built = scenario(setup, job.seed, job.market)
    strategy = baselines.make(
        job.strategy,
        decide_every_seconds=setup.decide_every_seconds,
        reclaim_prior_hours=setup.reclaim_prior_hours,
        notice_seconds=setup.operator_notice_seconds,
        detection_seconds=setup.operator_detection_seconds,
        watched_days=setup.watched_days,
        crunches_per_region_per_day=job.market.crunches,
    )
    return run(built, strategy, market=job.market.name)
