"""`python -m bench.economics`: every strategy over seeded weeks, two spot markets, training
and held-out seeds; prints the tables, rewrites this benchmark's section of docs/benchmarks.md
and draws the cost/SLO frontier (docs/img/economics-frontier.png).

Owns: the command line, the work list (seed x market x strategy), the worker pool, and the
model text of the report. A benchmark, not a test: it asserts nothing.

Seeds: `--seeds N` seeds from `--seed`; the first `--train-seeds` are the training seeds (rule
changes are judged on them) and the rest are held out (the targets are read on them); the
report shows both.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import multiprocessing
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Final

from bench.economics import availability, baselines, report, traces
from bench.economics.simulate import COMMITMENT_DISCOUNT, OPERATOR_SETTINGS, RunResult
from bench.economics.traces import Scenario
from bench.economics.work import Job, Market, Setup, init, run_job, run_job_in_worker, scenario

import tidal


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.seeds))
    split = args.train_seeds if args.train_seeds is not None else len(seeds) // 2
    train = seeds[:split]
    markets = [
        m
        for m in (
            Market("realistic", args.crunches),
            Market("pessimistic", args.pessimistic_crunches),
        )
        if m.name in args.markets
    ]
    setup = Setup(
        hours=args.days * 24.0,
        warmup_hours=args.warmup_hours,
        step_seconds=args.step_seconds,
        notice_seconds=args.notice_seconds,
        decide_every_seconds=args.decide_every,
        spot_trace=args.spot_trace,
        reclaim_prior_hours=args.reclaim_prior_hours,
        operator_notice_seconds=(
            args.notice_seconds if args.operator_notice is None else args.operator_notice
        ),
        watched_days=args.watched_days,
        operator_detection_seconds=args.operator_detection,
    )
    if args.spot_trace and args.watched_days:
        raise SystemExit("--watched-days needs the generated market: not with --spot-trace")
    if args.spot_trace:
        pools = availability.read_dir(Path(args.spot_trace))
        print(f"spot traces: {len(pools)} pools from {args.spot_trace}", file=sys.stderr)
        markets = [Market("trace", 0.0)]
    names, pessimistic = _strategies(args)
    jobs = [
        Job(seed, market, name)
        for seed in seeds
        for market in markets
        for name in (names if market.name != "pessimistic" else pessimistic)
    ]
    # Seed by seed (a worker reuses its scenario), training and held-out seeds taking turns (a
    # run stopped early leaves both splits), the slow reconciling runs first in each.
    turn = {seed: n for n, seed in enumerate(_alternate(train, seeds[split:]))}
    jobs.sort(key=lambda j: (turn[j.seed], not j.strategy.startswith(("tidal", "spotpreferred"))))
    given = sys.argv[1:] if argv is None else list(argv)
    # `--resume` is how a run goes on, not what it is: the saved command leaves it out.
    command = "python -m bench.economics " + shlex.join(a for a in given if a != "--resume")
    workers = max(1, args.workers)
    if args.from_results:
        runs, meta = _load_all([Path(f) for f in args.from_results])
        runs = complete_seeds(runs)
        wall = float(meta["wall_seconds"])  # type: ignore[arg-type]
        workers = int(meta["workers"])  # type: ignore[call-overload]
        command = str(meta["command"])
        seeds = sorted({r.seed for r in runs})
        train = [s for s in seeds if s in set(meta["train"])]  # type: ignore[call-overload]
    else:
        runs, wall = _run(args, setup, jobs, command, train, started)
    first = scenario(setup, seeds[0], markets[0])
    summary = report.Summary.of(runs, train_seeds=set(train))
    print(report.console(summary))
    png = None if args.png == "-" else Path(args.png)
    if png is not None:
        drawn = report.draw(summary, png)
        print(
            f"wrote {png}" if drawn else "matplotlib missing: no picture (make venv-bench)",
            file=sys.stderr,
        )
        if not drawn:
            png = None
    if args.out != "-":
        text = report.section(
            summary,
            first,
            command=command.strip(),
            seeds=seeds,
            train=train,
            wall_seconds=wall,
            workers=workers,
            machine=_machine(),
            model=_model(first, setup, markets),
            picture=png,
            out=Path(args.out),
        )
        report.write_section(Path(args.out), text)
        print(f"wrote the economics section of {args.out}", file=sys.stderr)
    print(f"{len(runs)} runs in {wall / 60:.1f} min", file=sys.stderr)
    return 0


def _run(
    args: argparse.Namespace,
    setup: Setup,
    jobs: list[Job],
    command: str,
    train: Sequence[int],
    started: float,
) -> tuple[list[RunResult], float]:
    """Every job run (after those a stopped run saved, with `--resume`), and the wall-clock."""
    workers = max(1, args.workers)
    fingerprint = code_fingerprint()
    done: list[RunResult] = []
    before = 0.0
    if args.resume:
        done, before = _resumed(Path(args.results), command, jobs, fingerprint)
        jobs = remaining(jobs, done)
        print(f"resuming: {len(done)} runs done, {len(jobs)} to go", file=sys.stderr)
        if done and not jobs:
            return done, before  # finished: the file stays as its code wrote it

    def save(runs: Sequence[RunResult], partial: bool) -> None:
        if args.results != "-":
            meta = {
                "wall_seconds": before + time.perf_counter() - started,
                "workers": workers,
                "command": command,
                "train": train,
                "partial": partial,
                "jobs": len(done) + len(jobs),
                "code": fingerprint,
            }
            report.save_runs(Path(args.results), runs, meta)

    runs = _simulate(setup, jobs, workers, save, done)
    wall = before + time.perf_counter() - started
    save(runs, False)
    return runs, wall


def _simulate(
    setup: Setup,
    jobs: Sequence[Job],
    workers: int,
    save: Callable[[Sequence[RunResult], bool], None],
    done: Sequence[RunResult] = (),
) -> list[RunResult]:
    """Every job's result after `done`; what is done so far is saved as it comes
    (`--results`, marked partial), so a long run stopped early can still be reported
    (`--from-results`) or go on (`--resume`)."""
    runs: list[RunResult] = list(done)
    if workers == 1:
        for job in jobs:
            runs.append(_log(run_job(setup, job)))
            save(runs, True)
        return runs
    with multiprocessing.get_context("spawn").Pool(workers, init, (setup,)) as pool:
        for result in pool.imap_unordered(run_job_in_worker, jobs, chunksize=1):
            runs.append(_log(result))
            save(runs, True)
    return runs


def _strategies(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The strategies run in the realistic (or trace) market and in the pessimistic one."""
    names = baselines.sweep(
        price_first=tuple(args.price_first),
        spot_preferred=tuple(args.spot_preferred),
        spot_hedge=tuple(args.spot_hedge),
        tidal_budgets=tuple(args.tidal_budgets),
    )
    chosen = set(args.pessimistic_strategies)
    pessimistic = [n for n in names if n in chosen]
    if not args.only:
        return names, pessimistic
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        raise SystemExit(f"--only: {', '.join(unknown)} not in this sweep ({', '.join(names)})")
    only = set(args.only)
    return [n for n in names if n in only], [n for n in pessimistic if n in only]


def _alternate(first: Sequence[int], second: Sequence[int]) -> list[int]:
    """`first` and `second` taking turns, the longer one's rest at the end."""
    out: list[int] = []
    for a, b in itertools.zip_longest(first, second):
        out += [x for x in (a, b) if x is not None]
    return out


def _load_all(paths: Sequence[Path]) -> tuple[list[RunResult], dict[str, object]]:
    """The runs of several results files as one report (e.g. the posed run and a run of more
    baselines in one market over the same seeds); the first file's workers and training
    seeds, the commands joined, the wall-clock summed. A run found twice is refused."""
    runs: list[RunResult] = []
    seen: set[tuple[int, str, str]] = set()
    commands: list[str] = []
    wall = 0.0
    meta: dict[str, object] = {}
    for path in paths:
        more, saved = report.load_runs(path)
        twice = seen & {(r.seed, r.market, r.strategy) for r in more}
        if twice:
            raise SystemExit(
                f"--from-results: {path} repeats runs of another file: {sorted(twice)[:3]}"
            )
        seen |= {(r.seed, r.market, r.strategy) for r in more}
        runs += more
        commands.append(str(saved["command"]))
        wall += float(saved["wall_seconds"])  # type: ignore[arg-type]
        meta = meta or dict(saved)
    return runs, {**meta, "command": "` and `".join(commands), "wall_seconds": wall}


def remaining(jobs: Sequence[Job], done: Sequence[RunResult]) -> list[Job]:
    """The jobs no run in `done` has answered (same seed, market and strategy)."""
    finished = {(r.seed, r.market, r.strategy) for r in done}
    return [j for j in jobs if (j.seed, j.market.name, j.strategy) not in finished]


def _resumed(
    path: Path, command: str, jobs: Sequence[Job], fingerprint: str
) -> tuple[list[RunResult], float]:
    """The runs a stopped run saved in `path` and the wall-clock they took, if the same
    command made them (other arguments would mix two benchmarks in one report) and, where
    runs are left to do, the same code (`fingerprint`) simulated them."""
    if not path.exists():
        return [], 0.0
    runs, meta = report.load_runs(path)
    saved_command = str(meta.get("command", ""))
    if _what_it_runs(saved_command) != _what_it_runs(command):
        raise SystemExit(
            f"--resume: {path} was made by {saved_command!r}, not {command!r}; "
            "give the same arguments, or another --results file"
        )
    wall = float(meta["wall_seconds"])  # type: ignore[arg-type]
    if not remaining(jobs, runs):
        return runs, wall  # finished: no new run to compare its code with
    saved = meta.get("code")
    if saved is None:
        print(f"--resume: {path} has no code fingerprint; cannot check it", file=sys.stderr)
    elif saved != fingerprint:
        raise SystemExit(
            f"--resume: {path} was simulated by other code (fingerprint {saved}, now "
            f"{fingerprint}): its runs and new ones would not be comparable"
        )
    return runs, wall


# Arguments that say how a run is carried out or reported, not what it simulates.
_HOW: Final = frozenset({"resume", "workers", "out", "png", "results", "from_results"})


def _what_it_runs(command: str) -> dict[str, object] | None:
    """The parsed arguments of a saved command that decide its runs (their order and the
    reporting ones aside); None if it does not parse."""
    words = shlex.split(command)[3:]  # after "python -m bench.economics"
    try:
        parsed = _parser().parse_args(words)
    except SystemExit:
        return None
    return {k: v for k, v in vars(parsed).items() if k not in _HOW}


def code_fingerprint() -> str:
    """A digest of the code a run's results depend on: the operator's package and the
    simulation (not the report, the command line or the CPU tool)."""
    digest = hashlib.sha256()
    roots = (Path(tidal.__file__).parent, Path(__file__).parent)
    skip = {"__main__.py", "report.py", "decide_cpu.py"}
    for root in roots:
        for source in sorted(root.rglob("*.py")):
            if root == roots[1] and source.name in skip:
                continue
            digest.update(source.relative_to(root.parent).as_posix().encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def complete_seeds(runs: Sequence[RunResult]) -> list[RunResult]:
    """The runs of the seeds that have every run any seed has (a run saved while still going
    leaves its last seeds part done; comparisons are paired per seed)."""
    kinds: dict[int, set[tuple[str, str]]] = {}
    for r in runs:
        kinds.setdefault(r.seed, set()).add((r.market, r.strategy))
    every = set().union(*kinds.values()) if kinds else set()
    return [r for r in runs if kinds[r.seed] == every]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.economics", description=__doc__)
    p.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--seeds", type=int, default=50, help="how many seeds (default 50)")
    p.add_argument(
        "--train-seeds",
        type=int,
        default=None,
        help="the first this many seeds are training seeds, the rest held out (default half)",
    )
    p.add_argument("--days", type=float, default=7.0, help="measured days per seed (default 7)")
    p.add_argument("--warmup-hours", type=float, default=24.0, help="history warm-up (24)")
    p.add_argument("--step-seconds", type=int, default=60, help="step (default 60)")
    p.add_argument(
        "--crunches",
        type=float,
        default=traces.CRUNCHES_PER_REGION_PER_DAY,
        help="realistic spot capacity crunches per region per day "
        f"(default {traces.CRUNCHES_PER_REGION_PER_DAY:g})",
    )
    p.add_argument(
        "--pessimistic-crunches",
        type=float,
        default=traces.PESSIMISTIC_CRUNCHES_PER_REGION_PER_DAY,
        help=f"pessimistic rate (default {traces.PESSIMISTIC_CRUNCHES_PER_REGION_PER_DAY:g})",
    )
    p.add_argument(
        "--pessimistic-strategies",
        nargs="*",
        default=[
            "tidal",
            "all-on-demand",
            "all-spot",
            "spotpreferred+0",
            "spothedge+0",
            "price-first+0",
        ],
        help="the strategies also run in the pessimistic market",
    )
    p.add_argument(
        "--notice-seconds",
        type=float,
        default=traces.NOTICE_SECONDS,
        help="interruption notice before a reclaim (120 as on AWS; 30 as on GCP/Azure)",
    )
    p.add_argument(
        "--spot-trace",
        metavar="DIR",
        default=None,
        help="spot availability traces (<zone>_<gpu>_<count>.json; bench/README.md) instead of "
        "the generated crunches; one market, 'trace'",
    )
    p.add_argument("--price-first", type=float, nargs="*", default=[0, 25, 50, 100])
    p.add_argument("--spot-preferred", type=float, nargs="*", default=[0, 25, 50])
    p.add_argument("--spot-hedge", type=float, nargs="*", default=[0, 25, 50])
    p.add_argument(
        "--decide-every",
        type=float,
        default=baselines.DECIDE_EVERY_SECONDS,
        help="run the operator's reconcile at least this often (seconds) even when nothing "
        "it watches changed (default: the utilization history's 300 s bucket); 0: every step",
    )
    p.add_argument(
        "--reclaim-prior-hours",
        type=float,
        default=None,
        help="the reconciling rows' reclaim prior weight in hours, as "
        "TIDAL_SPOT_RECLAIM_PRIOR_HOURS sets it for the operator (default: the operator's)",
    )
    p.add_argument(
        "--operator-notice",
        type=float,
        default=None,
        help="the reconciling rows' TIDAL_SPOT_NOTICE_SECONDS (default: --notice-seconds, the "
        "operator configured for the cloud simulated; 0: told of no notice)",
    )
    p.add_argument(
        "--operator-detection",
        type=float,
        default=None,
        help="the reconciling rows' TIDAL_SPOT_DETECTION_SECONDS (default: the operator's, 60)",
    )
    p.add_argument(
        "--watched-days",
        type=float,
        default=0.0,
        help="the operator has counted spot reclaims this many days before the run (its ledger "
        "restored, the market's own crunches); default 0: a fresh install, the prior alone",
    )
    p.add_argument(
        "--tidal-budgets",
        nargs="*",
        default=[],
        metavar="PERCENT",
        help="also run Tidal at these interruption budgets (capacity.interruptionBudgetPercent; "
        "rows tidal@PERCENT); plain tidal is the default budget",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument(
        "--out", default="docs/benchmarks.md", help="section to rewrite; '-' writes none"
    )
    p.add_argument(
        "--png", default="docs/img/economics-frontier.png", help="frontier picture; '-': none"
    )
    p.add_argument(
        "--results",
        default="build/economics-runs.json",
        help="where every run's results are saved (JSON); '-': nowhere",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="go on from the runs saved in --results by the same command (a run stopped early)",
    )
    p.add_argument(
        "--from-results",
        metavar="FILE",
        nargs="+",
        default=None,
        help="report the runs saved in FILE (several: as one report) instead of simulating",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="STRATEGY",
        default=None,
        help="run only these strategies of the sweep (more rows for a run saved before)",
    )
    p.add_argument(
        "--markets",
        nargs="+",
        choices=("realistic", "pessimistic"),
        default=["realistic", "pessimistic"],
        help="the spot markets to run (default both)",
    )
    return p


def _log(result: RunResult) -> RunResult:
    print(
        f"seed {result.seed:>3} {result.market:<11} {result.strategy:<18} "
        f"${result.cost_usd:>10,.0f} SLO {result.slo_percent:8.4f}% "
        f"interruption {result.outside_percent('interruption'):.4f}% "
        f"({result.wall_seconds:.0f}s)",
        file=sys.stderr,
        flush=True,
    )
    return result


def _machine() -> dict[str, str]:
    try:
        tidal_version = metadata.version("tidal-operator")
    except metadata.PackageNotFoundError:
        tidal_version = "unknown"
    return {
        "CPU": f"{platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'n/a'})",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "tidal-operator": tidal_version,
        "pydantic": metadata.version("pydantic"),
    }


def _model(scenario: Scenario, setup: Setup, markets: Sequence[Market]) -> list[str]:
    w = scenario.workloads
    workloads = "; ".join(
        f"{x.name} ({x.pattern}, {x.gpus}x {x.product.removeprefix('NVIDIA-')}, "
        f"{'/'.join(x.regions)}, {x.slots} slots of {x.latency_seconds:g} s, wait budget "
        f"{x.wait_budget:g} s, cold start {x.cold_start_seconds} s)"
        for x in w
    )
    rates = ", ".join(f"{m.name} {m.crunches:g}" for m in markets)
    every = (
        f"at least every {setup.decide_every_seconds:g} s and whenever something it watches "
        "changed (the replica count the load asks for, a pod created, bound, Ready or gone, a "
        "node noticed, lost or back), every step while pods start, a hand-over runs or a spot "
        "loss episode lasts; between those `decide` would return what it returned"
        if setup.decide_every_seconds
        else "every step"
    )
    return [
        "- **Same decisions as the operator.** The tidal and spotpreferred rows run the "
        "operator's own reconcile, `tidal.reconcile.endpoint.decide` (whatever Auto rule it "
        f"implements), {every}, fed as the controller feeds it and carried out as the "
        "controller does (tests/unit/test_economics_drives_decide.py). Every strategy gets its "
        "replica count from `tidal.scaling.autoscale.decide` on the same demand; headroom H "
        "makes the scaler see H % more demand.",
        f"- **Workloads** (policy Auto, other capacity fields default): {workloads}. Traces: "
        "`bench/economics/traces.py` (seeded; its docstring documents every distribution).",
        "- **SLO model (queueing).** Each Ready replica is an M/M/c queue (c = its slots, "
        "`targetInFlightRequests x 1.5`); the gateway spreads arrivals evenly; a request is "
        "within the SLO when it waits at most the wait budget (half a mean request) for a slot, "
        "by Erlang C (`bench/economics/queueing.py`). Latency grows with utilization: at the "
        "scaler's target (2/3 busy) almost nothing waits, near saturation much does, and at or "
        "above saturation nothing of that interval is within the SLO. Requests outside the SLO "
        "are blamed on *interruption* (what the replicas lost to a reclaim, or still replacing "
        "one, would have served), *shift* (replicas moving between capacity types) or "
        "*overflow* (the rest: load above the scaled replicas, scale-up cold starts).",
        f"- **Spot market.** Capacity crunches per region per day: {rates} (each takes "
        "30-100% of one GPU pool's spot nodes in 1-3 waves, nodes back after 15-240 min, a "
        "price spike before). Interruption notice "
        f"{setup.notice_seconds:g} s (`--notice-seconds 30` for GCP/Azure): the node is tainted "
        "`karpenter.sh/disrupted`; Tidal's reconcile runs at that second and starts the "
        "replacements while the leaving replicas serve until the reclaim (make before break); "
        "node-autoscaler strategies (all-spot, price-first) drain the node at the notice "
        "(replacements start, the evicted replicas stop at once); SpotHedge keeps the replica "
        "serving and starts its on-demand fallback. Requests in flight on a replica still "
        "serving at the reclaim fail.",
        "- **The operator's settings** (the reconciling rows): `TIDAL_SPOT_NOTICE_SECONDS` "
        f"{setup.operator_notice_seconds or 0:g} (the notice the cluster gets, as configured "
        "for the cloud simulated; taken off Auto's recovery), each endpoint's replica start "
        "measured from its pods (`status.lastReplicaStartSeconds`); the reclaim ledger "
        + (
            f"of an operator that has watched the fleet for {setup.watched_days:g} days (that "
            "long of the same market drawn before the run, counted by the operator's ledger "
            "and restored as from `tidal-spot-reclaims`; bench/README.md)."
            if setup.watched_days
            else "of a fresh install (the prior alone until the run observes reclaims)."
        ),
        "- **Cost.** GPU-hours x `tidal.cost.DEFAULT_CATALOG` (on-demand, the catalog's "
        '"reserved"; spot x the trace\'s regional multiplier, capped at on-demand); the 1-year '
        f"commitment at {100 * COMMITMENT_DISCOUNT:g}% below on-demand, paid whether used or "
        "not. Every run is also priced at flat spot discounts for the sensitivity table (same "
        "placements; only price-first reads prices, and it picks spot first at any discount).",
        "- **Kubernetes.** Deployments scale at once (the ReplicaSet deletes Pending, then "
        "starting, then lowest pod-deletion-cost, then newest Ready pods); the scheduler scores "
        "preferred affinity, the default zone spread and free GPUs. The hysteresis is the "
        f"operator's default {OPERATOR_SETTINGS.spot_return_after_seconds} s; pending spot pods "
        f"count after {OPERATOR_SETTINGS.spot_pending_seconds:g} s.",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
