"""The CPU the operator's `decide` takes in the economics benchmark (bench/README.md, "Where
the time goes"), measured, not estimated.

`run`: one Tidal run of one seed (the realistic market, the benchmark's scenario), every
`decide` call timed in CPU seconds; `--record FILE` also keeps each call's inputs (a pickle:
the endpoint, the world, the memory, the time). `replay FILE`: the recorded calls again, timed,
on whatever code is imported now (another checkout on `PYTHONPATH`), `--outcomes OUT` keeping
what each returned and `--expect OUT` checking that each `Outcome` equals the one another
version returned (whole, and every child as JSON, key order included): a change meant to make
`decide` cheaper must return the same.

    python -m bench.economics.decide_cpu run --record /tmp/calls.pkl
    python -m bench.economics.decide_cpu replay /tmp/calls.pkl --outcomes /tmp/before.pkl
    python -m bench.economics.decide_cpu replay /tmp/calls.pkl --expect /tmp/before.pkl

A benchmark tool: it reads and writes pickles it made; never point it at one from elsewhere.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.economics import baselines, traces
from bench.economics.simulate import TidalStrategy, run
from bench.economics.work import Market, Setup, scenario

from tidal.reconcile.endpoint import Memory, Outcome, World, decide

Call = tuple[dict[str, Any], World, Memory, datetime]


class _Timed:
    """`decide`, timed (process CPU), its calls kept when asked."""

    def __init__(self, record: bool) -> None:
        self.seconds = 0.0
        # What recording took, which is no part of the run.
        self.recording = 0.0
        self.calls: list[Call] = []
        self.count = 0
        self.record = record

    def __call__(self, raw: dict[str, Any], world: World, memory: Memory, now: datetime) -> Outcome:
        started = time.process_time()
        if self.record:
            # A deep copy through pickle: the run goes on changing the objects it passed.
            self.calls.append(pickle.loads(pickle.dumps((raw, world, memory, now))))
            self.recording += time.process_time() - started
        started = time.process_time()
        try:
            return decide(raw, world, memory, now)
        finally:
            self.seconds += time.process_time() - started
            self.count += 1


def measure_run(
    seed: int, days: float, warmup_hours: float, decide_every: float, record: bool
) -> tuple[float, _Timed]:
    """One Tidal run's CPU seconds (scenario included, recording not), and its timed
    `decide`."""
    setup = Setup(
        hours=days * 24.0,
        warmup_hours=warmup_hours,
        step_seconds=60,
        notice_seconds=traces.NOTICE_SECONDS,
        decide_every_seconds=decide_every,
        spot_trace=None,
        operator_notice_seconds=traces.NOTICE_SECONDS,
    )
    market = Market("realistic", traces.CRUNCHES_PER_REGION_PER_DAY)
    timed = _Timed(record)
    started = time.process_time()
    strategy = TidalStrategy(
        baselines.TIDAL,
        decide=timed,
        decide_every_seconds=decide_every,
        notice_seconds=traces.NOTICE_SECONDS,
        history_crunches_per_region_per_day=market.crunches,
    )
    run(scenario(setup, seed, market), strategy, market=market.name)
    return time.process_time() - started - timed.recording, timed


def replay(calls: Sequence[Call]) -> tuple[float, list[Outcome]]:
    """The CPU seconds `decide` takes over `calls`, and what it returned."""
    started = time.process_time()
    outcomes = [decide(*call) for call in calls]
    return time.process_time() - started, outcomes


def differences(outcomes: Sequence[Outcome], expected: Sequence[Outcome]) -> list[int]:
    """The indexes of the calls whose outcomes differ (a missing one counts)."""
    differ = [
        i
        for i, (got, want) in enumerate(zip(outcomes, expected, strict=False))
        if got != want
        or [json.dumps(c) for c in got.children] != [json.dumps(c) for c in want.children]
    ]
    shorter = min(len(outcomes), len(expected))
    return differ + list(range(shorter, max(len(outcomes), len(expected))))


def _per_call(seconds: float, count: int) -> str:
    return (
        f"{count} decide calls, {seconds:.2f} CPU-s, {1000 * seconds / max(1, count):.3f} ms/call"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.economics.decide_cpu", description=__doc__
    )
    commands = parser.add_subparsers(dest="command", required=True)
    once = commands.add_parser("run", help="one Tidal run, decide timed")
    once.add_argument("--seed", type=int, default=1)
    once.add_argument("--days", type=float, default=1.0)
    once.add_argument("--warmup-hours", type=float, default=24.0)
    once.add_argument("--decide-every", type=float, default=900.0)
    once.add_argument("--record", metavar="FILE", default=None, help="keep the calls (pickle)")
    again = commands.add_parser("replay", help="the recorded calls, timed")
    again.add_argument("calls", metavar="FILE")
    again.add_argument("--outcomes", metavar="OUT", default=None, help="keep what they returned")
    again.add_argument("--expect", metavar="OUT", default=None, help="fail unless these returned")
    args = parser.parse_args(argv)
    if args.command == "run":
        total, timed = measure_run(
            args.seed, args.days, args.warmup_hours, args.decide_every, args.record is not None
        )
        print(f"Tidal run: {total:.2f} CPU-s; {_per_call(timed.seconds, timed.count)}")
        if args.record is not None:
            Path(args.record).write_bytes(pickle.dumps(timed.calls))
        return 0
    calls: list[Call] = pickle.loads(Path(args.calls).read_bytes())
    seconds, outcomes = replay(calls)
    print(f"replay: {_per_call(seconds, len(calls))}")
    if args.outcomes is not None:
        Path(args.outcomes).write_bytes(pickle.dumps(outcomes))
    if args.expect is not None:
        differ = differences(outcomes, pickle.loads(Path(args.expect).read_bytes()))
        print(
            f"{len(differ)} of {len(calls)} outcomes differ"
            + (f": {differ[:10]}" if differ else "")
        )
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
