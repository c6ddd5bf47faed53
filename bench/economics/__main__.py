"""`python -m bench.economics`: run every strategy over a few seeded days, print the table and
rewrite this benchmark's section of docs/benchmarks.md.

Owns: the command line, the seed loop, the cost-matched price-first run (price-first given as
many extra replicas as it takes to spend what Tidal spent, found by bisection on the headroom)
and the model and findings text of the report. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from bench.economics import baselines, report, traces
from bench.economics.simulate import OPERATOR_SETTINGS, RunResult, run
from bench.economics.traces import Scenario

from tidal.api.labels import CapacityType
from tidal.cost import DEFAULT_CATALOG

# Bisection steps on price-first's headroom: each halves the bracket (0-200% to within ~1%).
MATCH_STEPS = 8
MATCH_MAX_HEADROOM = 200.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.economics", description=__doc__)
    parser.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds (default 5)")
    parser.add_argument("--hours", type=float, default=24.0, help="measured hours (default 24)")
    parser.add_argument(
        "--warmup-hours", type=float, default=24.0, help="history warm-up (default 24)"
    )
    parser.add_argument("--step-seconds", type=int, default=60, help="step (default 60)")
    parser.add_argument(
        "--crunches",
        type=float,
        default=traces.CRUNCHES_PER_REGION_PER_DAY,
        help="spot capacity crunches per region per day "
        f"(default {traces.CRUNCHES_PER_REGION_PER_DAY:g})",
    )
    parser.add_argument(
        "--out",
        default="docs/benchmarks.md",
        help="file whose economics section is rewritten; '-' writes none",
    )
    parser.add_argument(
        "--no-match", action="store_true", help="skip the cost-matched price-first runs"
    )
    parser.add_argument(
        "--spot-discount",
        type=float,
        default=None,
        metavar="PCT",
        help="also run every strategy with spot priced PCT%% below reserved instead of the "
        "catalog's spot price, reported in a separate sensitivity table (the main table "
        "always uses the shipped catalog)",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.seeds))
    runs: list[RunResult] = []
    deeper: list[RunResult] = []
    scenario: Scenario | None = None
    for seed in seeds:
        scenario = traces.generate(
            seed,
            hours=args.hours,
            warmup_hours=args.warmup_hours,
            step_seconds=args.step_seconds,
            crunches_per_region_per_day=args.crunches,
        )
        for strategy in baselines.strategies():
            result = run(scenario, strategy)
            runs.append(result)
            print(
                f"seed {seed} {result.strategy:<20} ${result.cost_usd:>9,.0f} "
                f"SLO {result.slo_percent:7.3f}% spot {result.spot_share_percent:5.1f}% "
                f"({result.wall_seconds:.1f}s)",
                file=sys.stderr,
            )
        if not args.no_match:
            tidal_cost = next(r.cost_usd for r in runs if r.seed == seed and r.strategy == "tidal")
            runs.append(_cost_matched(scenario, tidal_cost))
        if args.spot_discount is not None:
            for strategy in baselines.strategies():
                result = run(scenario, strategy, spot_discount_percent=args.spot_discount)
                deeper.append(result)
                print(
                    f"seed {seed} {result.strategy:<20} ${result.cost_usd:>9,.0f} "
                    f"at {args.spot_discount:g}% spot discount",
                    file=sys.stderr,
                )
    assert scenario is not None
    wall = time.perf_counter() - started
    summaries = report.summarize(runs)
    print(report.console_table(summaries))
    sensitivity = (args.spot_discount, deeper) if args.spot_discount is not None else None
    if sensitivity is not None:
        print(f"\nspot at {args.spot_discount:g}% below reserved (sensitivity):")
        print(report.console_table(report.summarize(deeper)))
    if args.out != "-":
        command = "python -m bench.economics " + shlex.join(
            sys.argv[1:] if argv is None else list(argv)
        )
        text = report.section(
            runs,
            scenario,
            command=command.strip(),
            seeds=seeds,
            wall_seconds=wall,
            machine=_machine(),
            model=_model(scenario, args.crunches),
            findings=_findings(summaries, scenario, runs, sensitivity),
            sensitivity=sensitivity,
        )
        report.write_section(Path(args.out), text)
        print(f"wrote the economics section of {args.out}", file=sys.stderr)
    return 0


def _cost_matched(scenario: Scenario, target: float) -> RunResult:
    """Price-first with the headroom whose cost comes closest to `target` (bisection)."""
    low, high = 0.0, MATCH_MAX_HEADROOM
    best: tuple[float, float, RunResult] | None = None
    for _ in range(MATCH_STEPS):
        headroom = (low + high) / 2
        result = run(scenario, baselines.PriceFirst(headroom))
        gap = abs(result.cost_usd - target)
        if best is None or gap < best[0]:
            best = (gap, headroom, result)
        if result.cost_usd < target:
            low = headroom
        else:
            high = headroom
    assert best is not None
    _, headroom, result = best
    result.strategy = report.MATCHED
    result.notes = {**result.notes, "headroom_percent": headroom}
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


def _model(scenario: Scenario, crunches: float) -> list[str]:
    w = scenario.workloads
    workloads = "; ".join(
        f"{x.name} ({x.pattern}, {x.gpus}x {x.product.removeprefix('NVIDIA-')}, "
        f"{'/'.join(x.regions)}, {x.max_rps_per_replica:.1f} req/s per replica, "
        f"cold start {x.cold_start_seconds} s)"
        for x in w
    )
    return [
        "- **Same decisions as the operator.** Tidal's rows run the operator's own reconcile, "
        "`tidal.reconcile.endpoint.decide`, every step, carried out as the controller does: "
        "the endpoint as the API server holds it (the annotations and status the previous "
        "Outcome patched: spot loss episode, utilization history, previous split), the fleet "
        "snapshot (reclaimed spot nodes vanish; every node carries GPU telemetry per GPU and "
        "per pod from the previous step), the endpoint's pods and its Deployments as last "
        "applied, the gateway's load (`Load`), and a utilization sample each step; each "
        "Deployment is then asked for the replicas the Outcome applied and schedules with its "
        "pod template's node affinity. All-reserved and all-spot are the same reconcile with "
        "`ReservedOnly` / `SpotOnly`; every strategy gets the same replica count "
        "(`scaling.autoscale.decide`, inside `decide` for Tidal's rows).",
        f"- **Workloads** (policy Auto, all other capacity fields default): {workloads}. "
        "Traces: `bench/economics/traces.py` (seeded; its docstring documents every "
        "distribution).",
        "- **Capacity.** A replica serves up to `1.5 x targetInFlightRequests / request "
        "latency` requests/s within the SLO (it is scaled toward the target, so it runs at "
        "two thirds of that at steady state). Requests above the Ready replicas' capacity are "
        "outside the SLO (*overflow*).",
        "- **Cold start.** A new pod is Ready the workload's cold start after it is bound (node, "
        "image, weights; 2-7 min) and is paid from binding. Pending pods cost nothing.",
        f"- **Interruption.** A reclaimed node's pods die at the reclaim's second; the requests "
        "in flight on them (their share of the rate x request latency) fail — no interruption "
        "notice is honoured. Their capacity is missing until a replacement is Ready "
        "(*interruption*). Reclaimed nodes return after 15-240 min. "
        f"{crunches:g} capacity crunches per region per day, each "
        "taking 30-100% of one GPU pool's spot nodes in 1-3 waves, with a price spike before.",
        "- **Kubernetes.** Deployments scale at once (the ReplicaSet deletes Pending, then "
        "starting, then the newest Ready pods; graceful, so no failed requests); the "
        "scheduler scores preferred affinity, the default zone spread and free GPUs. A "
        "replica moved between capacity types is a new pod. Tidal's two Deployments hand "
        "replicas over make before break (`decide` keeps the Ready replicas of the Deployment "
        "a plan shrinks until the other can replace them), so a move runs short only if load "
        "outgrows the replicas still serving; capacity missing while a moved replica starts "
        "is *shift*. Node preferences stay as applied while the rest of the pod template is "
        "unchanged (`render.endpoint.keep_preferences`: a new template restarts every "
        "replica). The hysteresis is the operator's default "
        f"{OPERATOR_SETTINGS.spot_return_after_seconds} s; pending spot pods count after "
        f"{OPERATOR_SETTINGS.spot_pending_seconds:g} s.",
        "- **Price-first** (Karpenter-like): cheapest offering (capacity type x region) by "
        f"current price for every Pending pod; a full offering costs a failed launch "
        f"({baselines.ICE_RETRY_SECONDS:g} s) and is skipped for "
        f"{baselines.ICE_TTL_SECONDS:g} s; consolidation moves Ready replicas from reserved "
        "back to spot the moment spot has room, one per endpoint at a time, with the node "
        f"pre-launched ({baselines.NODE_BOOT_SECONDS:g} s of the cold start off the critical "
        "path). *Cost-matched*: price-first with extra replicas (headroom, bisected per seed) "
        "until it spends what Tidal spends.",
        "- **Cost**: GPU-hours x `tidal.cost.DEFAULT_CATALOG` price of the node's product, "
        "capacity type and region; spot x the trace's regional multiplier, capped at the "
        "reserved (on-demand) price. Spot share = spot replica-hours / all replica-hours.",
    ]


def _findings(
    summaries: Sequence[report.StrategySummary],
    scenario: Scenario,
    runs: Sequence[RunResult],
    sensitivity: tuple[float, Sequence[RunResult]] | None = None,
) -> list[str]:
    by = {s.strategy: s for s in summaries}
    tidal = by.get("tidal")
    price = by.get("price-first")
    preferred = by.get("tidal-spotpreferred")
    spot = by.get("all-spot")
    if tidal is None or price is None or preferred is None or spot is None:
        return []
    low, high = _discounts(scenario)

    def pooled(s: report.StrategySummary, what: str) -> str:
        return f"{s.pooled.get(what, 0.0):.3f}%"

    mine = [r for r in runs if r.strategy == "tidal"]
    cost = {
        w.name: statistics.median(r.endpoints[w.name].cost_usd for r in mine)
        for w in scenario.workloads
    }
    total = sum(cost.values())
    top = max(scenario.workloads, key=lambda w: cost[w.name])
    top_reserved = sum(r.endpoints[top.name].reserved_replica_seconds for r in mine)
    top_all = top_reserved + sum(r.endpoints[top.name].spot_replica_seconds for r in mine)
    spread = [w for w in scenario.workloads if len(w.regions) > 1]
    spread_cost = sum(cost[w.name] for w in spread)

    lines = [
        "- **Where Tidal's money goes.** Auto keeps the steady baseline (the 20th percentile "
        "of a day's GPU load, at 80% per replica) on reserved: spot share "
        f"{tidal.spot_share_percent.median:.0f}% against price-first's "
        f"{price.spot_share_percent.median:.0f}%, and {tidal.savings_percent.median:.1f}% "
        f"rather than all-spot's {spot.savings_percent.median:.1f}% below all-reserved. One "
        f"workload is most of the bill: {top.name} ({top.gpus}x "
        f"{top.product.removeprefix('NVIDIA-')}, steady, one region and one GPU product, so "
        f"one spot pool) costs ${cost[top.name]:,.0f} of Tidal's ${total:,.0f} a day "
        f"({100 * cost[top.name] / total:.0f}%, medians per workload), "
        f"{100 * top_reserved / top_all if top_all else 0:.0f}% of its replica-hours on "
        "reserved. The catalog's spot discount for these GPUs is "
        f"{low:.0f}-{high:.0f}% (before the trace's price moves), so even all-spot cannot "
        "reach the 50% target with the shipped prices.",
        "- **Why the Auto rule stays as it is.** The floor exists for the endpoint whose spot "
        "replicas can all go at once: a crunch takes 30-100% of a pool, and "
        f"{top.name} needs {top.cold_start_seconds} s to replace a replica. Without it "
        f"(SpotPreferred, same planner) the bill falls to ${preferred.cost_usd.median:,.0f} "
        f"({preferred.savings_percent.median:.1f}% below all-reserved) and interruptions "
        f"cost {pooled(preferred, 'interruption')} of all requests instead of "
        f"{pooled(tidal, 'interruption')} (all seeds together). Two narrower floors were "
        "tried on these seeds before keeping the rule. (a) Cover only what one spot pool "
        "can take when the endpoint's spot replicas sit in several regions: it can only "
        "touch the multi-region workloads ("
        + ", ".join(w.name for w in spread)
        + f": ${spread_cost:,.0f} of Tidal's ${total:,.0f}), not {top.name}, and it counts "
        "on the spot replicas being spread evenly over regions, which the operator does not "
        "enforce (only the scheduler's soft default zone spread does), so a crunch can take "
        "more than the rule assumed. (b) Count a replica full at 100% GPU utilization "
        f"instead of 80%: it leaves {top.name}'s floor where it is (a steady load of "
        f"{top.base_rps:g} req/s at {top.max_rps_per_replica:g} per replica needs "
        f"{math.ceil(top.base_rps / top.max_rps_per_replica)} replicas either way) and lowers "
        "the others' only by running the survivors of a reclaim past the point where engines "
        "trade latency for throughput. Both also break Auto's "
        "documented promise (DESIGN.md: steady load on reserved, bursts on spot), so the "
        "planner keeps the P20-at-80% floor; an endpoint owner who takes the risk says so "
        "with `SpotPreferred` or `maxSpotPercent`/`minReservedReplicas`.",
    ]
    if sensitivity is not None:
        discount, deeper = sensitivity
        deep = {s.strategy: s for s in report.summarize(deeper)}
        d_tidal, d_spot = deep.get("tidal"), deep.get("all-spot")
        d_pref = deep.get("tidal-spotpreferred")
        if d_tidal is not None and d_spot is not None and d_pref is not None:
            lines.append(
                "- **Deeper spot discounts** (sensitivity table, not the shipped prices): with "
                f"spot {discount:g}% below reserved, all-spot is "
                f"{d_spot.savings_percent.median:.1f}% cheaper than all-reserved, "
                f"SpotPreferred {d_pref.savings_percent.median:.1f}% and Tidal Auto "
                f"{d_tidal.savings_percent.median:.1f}%: past the catalog's discount, the "
                "reserved floor, not the price of spot, is what bounds Auto's savings."
            )
    lines += [
        "- **What the floor buys** (all seeds' requests together: a reclaim hits a given "
        "workload in only some seeds, so it vanishes in a median): interruptions "
        f"cost Tidal {pooled(tidal, 'interruption')} of requests, price-first "
        f"{pooled(price, 'interruption')}, all-spot {pooled(spot, 'interruption')} (all-spot "
        "never falls back to reserved).",
        "- **Shifts: make before break.** When the hysteresis ends the planner moves the held "
        "replicas back to spot in one plan; the reconcile's hand-over (run here as part of "
        "`decide`) keeps the reserved replicas serving until the spot ones "
        "are Ready, so a move costs requests only when a burst outgrows the replicas still "
        f"serving (shift losses: Tidal {pooled(tidal, 'shift')}, SpotPreferred "
        f"{pooled(preferred, 'shift')}, price-first {pooled(price, 'shift')}: Karpenter-style "
        "consolidation evicts first, one replica at a time). The price is paying both "
        "replicas for a cold start on each move.",
        "- **Overflow is scaling, not placement.** Every strategy gets the same replica "
        f"count; overflow ({pooled(tidal, 'overflow')} of Tidal's requests) comes from bursts "
        "that ramp faster than a cold start on the bursty workloads (per-workload table), "
        "with the scaler's 60 s scale-down window dropping headroom between bursts. It alone "
        "keeps every strategy, all-reserved included, near 99.9%; its knobs are "
        "`targetInFlightRequests` and the scale-down stabilization. Spending Tidal's premium "
        "on headroom instead (the cost-matched price-first row) removes most overflow and "
        "absorbs reclaims too, which is why Tidal does not win at equal cost.",
        f"- **Stress.** `--crunches {3 * traces.CRUNCHES_PER_REGION_PER_DAY:g}` triples the "
        "spot capacity crunches, to see how the floor's value grows with them.",
    ]
    changes = tidal.notes.get("template_changes")
    if changes is not None:
        lines.append(
            "- **Template churn.** Pod-template changes applied to a Deployment with "
            "replicas (each a rollout, counted, not simulated) in Tidal's runs: "
            f"{changes.median:.0f} per run (median)."
        )
    return lines


def _discounts(scenario: Scenario) -> tuple[float, float]:
    """The catalog's spot discount (percent off reserved) over the fleet's products, regions."""
    off = []
    for node in scenario.nodes:
        spot = DEFAULT_CATALOG.gpu_price(node.product, CapacityType.SPOT, node.region)
        reserved = DEFAULT_CATALOG.gpu_price(node.product, CapacityType.RESERVED, node.region)
        if spot is not None and reserved:
            off.append(float(100 * (1 - spot / reserved)))
    return (min(off), max(off)) if off else (0.0, 0.0)


if __name__ == "__main__":
    raise SystemExit(main())
