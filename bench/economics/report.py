"""Results of the placement-economics benchmark: per-seed metrics, paired intervals, the
targets' verdicts (computed from the numbers, never written by hand), the console table, the
frontier picture and this benchmark's section of docs/benchmarks.md.

Owns: aggregation (`Summary`), the verdicts, `draw` (matplotlib, optional: the `bench` extra)
and `write_section`, which replaces only the text between this benchmark's markers. Must not:
run simulations.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.economics import catalog, stats
from bench.economics.simulate import DISCOUNTS, EndpointResult, RunResult
from bench.economics.stats import Interval, Point
from bench.economics.traces import Scenario, Workload

__all__ = [
    "MARK_END",
    "MARK_START",
    "Row",
    "Summary",
    "console",
    "draw",
    "findings",
    "load_runs",
    "save_runs",
    "section",
    "write_section",
]

MARK_START: Final = "<!-- bench:economics:start -->"
MARK_END: Final = "<!-- bench:economics:end -->"
HEADER: Final = """# Benchmarks

Each section is rewritten by its benchmark; nothing here is asserted. The machine and versions
are those of the run that wrote the section.

"""

TIDAL: Final = "tidal"
ON_DEMAND: Final = "all-on-demand"
SPOT: Final = "all-spot"
TARGET_SCR: Final = 0.70
TARGET_INTERRUPTION_PERCENT: Final = 0.02
HELD_OUT: Final = "held-out"
POSED_SEEDS: Final = 50
POSED_DAYS: Final = 7
TRAIN: Final = "train"


@dataclass(frozen=True)
class Row:
    """One strategy in one market and split: means over seeds with 95 % intervals."""

    strategy: str
    family: str
    headroom: float
    seeds: int
    cost_usd: Interval
    cost_share: Interval  # of the same seed's all-on-demand bill
    slo: Interval  # % of requests within the SLO
    slo_delta: Interval | None  # percentage points vs all-on-demand, paired
    scr: Interval | None
    interruption_pooled: float  # % of all requests of all seeds
    in_flight_pooled: float  # of which: requests in flight at a reclaim
    overflow_pooled: float
    shift_pooled: float
    spot_share: float
    scr_by_discount: Mapping[str, Interval]


@dataclass(frozen=True)
class Summary:
    """Rows by (market, split), the splits' seeds, and the runs."""

    rows: Mapping[tuple[str, str], list[Row]]
    seeds: Mapping[str, list[int]]
    runs: Sequence[RunResult]

    @classmethod
    def of(cls, runs: Sequence[RunResult], *, train_seeds: set[int]) -> Summary:
        markets = sorted({r.market for r in runs}, key=lambda m: (m != "realistic", m))
        seeds = sorted({r.seed for r in runs})
        splits = {
            TRAIN: [s for s in seeds if s in train_seeds],
            HELD_OUT: [s for s in seeds if s not in train_seeds],
        }
        rows: dict[tuple[str, str], list[Row]] = {}
        for market in markets:
            for split, members in splits.items():
                if not members:
                    continue
                mine = [r for r in runs if r.market == market and r.seed in set(members)]
                rows[(market, split)] = _rows(mine)
        return cls(rows, splits, runs)

    def row(self, market: str, split: str, strategy: str) -> Row | None:
        return next((r for r in self.rows.get((market, split), []) if r.strategy == strategy), None)


def _order(names: Sequence[str]) -> list[str]:
    first = [TIDAL, ON_DEMAND, SPOT]
    return [n for n in first if n in names] + sorted(n for n in names if n not in first)


def _rows(runs: Sequence[RunResult]) -> list[Row]:
    by: dict[str, dict[int, RunResult]] = {}
    for r in runs:
        by.setdefault(r.strategy, {})[r.seed] = r
    od = by.get(ON_DEMAND, {})
    spot = by.get(SPOT, {})
    out = []
    for name in _order(list(by)):
        mine = by[name]
        seeds = sorted(mine)
        first = mine[seeds[0]]
        slo = {s: mine[s].slo_percent for s in seeds}
        cost = {s: mine[s].cost_usd for s in seeds}
        both = [s for s in seeds if s in od and s in spot and od[s].cost_usd > spot[s].cost_usd]
        scr = {s: stats.capture_ratio(od[s].cost_usd, spot[s].cost_usd, cost[s]) for s in both}
        by_discount = {}
        for d in DISCOUNTS:
            label = "catalog" if d is None else f"{d:g}"
            values = [
                stats.capture_ratio(
                    od[s].cost_at(label), spot[s].cost_at(label), mine[s].cost_at(label)
                )
                for s in both
                if od[s].cost_at(label) > spot[s].cost_at(label)
            ]
            if values:
                by_discount[label] = stats.interval(values)
        demand = sum(r.total("demand") for r in mine.values())

        def pooled(*names: str, demand: float = demand, mine: dict[int, RunResult] = mine) -> float:
            total = sum(r.total(n) for r in mine.values() for n in names)
            return 100 * total / demand if demand else 0.0

        out.append(
            Row(
                strategy=name,
                family=first.family,
                headroom=first.headroom_percent,
                seeds=len(seeds),
                cost_usd=stats.interval(list(cost.values())),
                cost_share=stats.interval(
                    [100 * cost[s] / od[s].cost_usd for s in seeds if s in od]
                )
                if od
                else stats.interval([100.0]),
                slo=stats.interval(list(slo.values())),
                slo_delta=stats.paired(slo, {s: od[s].slo_percent for s in od})
                if od and name != ON_DEMAND
                else None,
                scr=stats.interval(list(scr.values())) if scr else None,
                interruption_pooled=pooled("short_interruption", "lost_in_flight"),
                in_flight_pooled=pooled("lost_in_flight"),
                overflow_pooled=pooled("short_overflow"),
                shift_pooled=pooled("short_shift"),
                spot_share=statistics.fmean(mine[s].spot_share_percent for s in seeds),
                scr_by_discount=by_discount,
            )
        )
    return out


# --- verdicts -------------------------------------------------------------------------------


def verdicts(summary: Summary) -> list[str]:
    """The targets, read on the held-out seeds (realistic market unless said)."""
    market = "realistic" if ("realistic", HELD_OUT) in summary.rows else _first_market(summary)
    tidal = summary.row(market, HELD_OUT, TIDAL)
    if tidal is None or tidal.scr is None:
        return ["- No held-out Tidal run with both all-on-demand and all-spot: no verdict."]
    lines = []
    scr = tidal.scr
    if scr.low >= TARGET_SCR:
        state = "met"
    elif scr.mean >= TARGET_SCR:
        state = "not established (mean above, interval reaches below)"
    else:
        state = f"missed by {TARGET_SCR - scr.mean:.2f}"
    lines.append(
        f"- **SCR >= {TARGET_SCR:.2f}** ({market}, held-out, {scr.n} seeds): {state} — "
        f"{scr.show('.3f')}."
    )
    delta = tidal.slo_delta
    if delta is not None:
        ok = delta.high >= 0
        lines.append(
            f"- **SLO attainment >= all-on-demand**: {'met' if ok else 'missed'} — "
            f"{tidal.slo.show('.4f')} % vs all-on-demand, paired difference "
            f"{delta.show('+.4f')} points"
            + ("" if ok else f" (short by {-delta.mean:.4f} points)")
            + "."
        )
    rows = summary.rows[(market, HELD_OUT)]
    me = Point(TIDAL, tidal.cost_share.mean, tidal.slo.mean)
    points = [Point(r.strategy, r.cost_share.mean, r.slo.mean) for r in rows]
    front = stats.frontier(points)
    beaters = [p for p in front if not _is_tidal(p.name) and stats.dominates(p, me)]
    if not beaters:
        lines.append(
            "- **No baseline on the frontier dominates Tidal**: met — frontier (cheapest "
            f"first): {', '.join(p.name for p in front)}."
        )
    else:
        named = "; ".join(
            f"{p.name} ({p.cost:.1f}% of on-demand's bill vs Tidal's {me.cost:.1f}%, SLO "
            f"{p.slo:.4f}% vs {me.slo:.4f}%{_pessimistic_misses(summary, p.name)})"
            for p in beaters
        )
        lines.append(f"- **No baseline on the frontier dominates Tidal**: missed — {named}.")
        lines += _within_interruption_target(summary, me, rows)
    pessimistic = summary.row("pessimistic", HELD_OUT, TIDAL)
    if pessimistic is not None:
        value = pessimistic.interruption_pooled
        ok = value <= TARGET_INTERRUPTION_PERCENT
        lines.append(
            f"- **Interruption-caused misses <= {TARGET_INTERRUPTION_PERCENT:.2f}%** "
            f"(pessimistic market, held-out, all requests together): "
            f"{'met' if ok else f'missed by {value - TARGET_INTERRUPTION_PERCENT:.4f} points'}"
            f" — {value:.4f}%."
        )
    return lines


def _pessimistic_misses(summary: Summary, strategy: str) -> str:
    """`; pessimistic interruption misses X%` where the strategy ran in that market."""
    row = summary.row("pessimistic", HELD_OUT, strategy)
    if row is None:
        return ""
    return f"; {row.interruption_pooled:.4f}% interruption misses in the pessimistic market"


def _within_interruption_target(summary: Summary, me: Point, rows: Sequence[Row]) -> list[str]:
    """The frontier among the strategies whose pessimistic interruption misses were measured
    within the target: what a platform team that holds the target can choose from."""
    pessimistic = {r.strategy: r for r in summary.rows.get(("pessimistic", HELD_OUT), [])}
    tidal = pessimistic.get(TIDAL)
    if tidal is None or tidal.interruption_pooled > TARGET_INTERRUPTION_PERCENT:
        return []
    within: list[Point] = []
    beyond: list[str] = []
    unmeasured: list[str] = []
    for r in rows:
        if _is_tidal(r.strategy):
            continue
        if r.strategy not in pessimistic:
            unmeasured.append(r.strategy)
        elif pessimistic[r.strategy].interruption_pooled <= TARGET_INTERRUPTION_PERCENT:
            within.append(Point(r.strategy, r.cost_share.mean, r.slo.mean))
        else:
            beyond.append(r.strategy)
    beyond.sort()
    unmeasured.sort()
    beaters = [p.name for p in within if stats.dominates(p, me)]
    state = "none dominates Tidal" if not beaters else f"dominated by {', '.join(sorted(beaters))}"
    names = ", ".join(sorted(p.name for p in within)) or "none"
    return [
        f"  - Among the baselines measured within {TARGET_INTERRUPTION_PERCENT:.2f}% "
        f"interruption misses in the pessimistic market ({names}), "
        f"{state}; over it: {', '.join(beyond) or 'none'}"
        + (f"; not run in that market: {', '.join(unmeasured)}" if unmeasured else "")
        + "."
    ]


def _first_market(summary: Summary) -> str:
    return next(iter(summary.rows))[0]


def findings(summary: Summary, scenario: Scenario | None = None) -> list[str]:
    """Why the targets land where they do and what would move them, from the numbers (with
    the `scenario`, also which endpoint holds most of the saving Tidal leaves)."""
    market = "realistic" if ("realistic", HELD_OUT) in summary.rows else _first_market(summary)
    tidal = summary.row(market, HELD_OUT, TIDAL)
    if tidal is None or tidal.scr is None:
        return []
    lines = []
    train = summary.row(market, TRAIN, TIDAL)
    if train is not None and train.scr is not None:
        lines.append(
            f"- **Training vs held-out.** Tidal's SCR is {train.scr.show('.3f')} on the "
            f"training seeds and {tidal.scr.show('.3f')} on the held-out ones."
        )
    preferred = summary.row(market, HELD_OUT, "spotpreferred+0")
    if preferred is not None and preferred.scr is not None:
        gap = tidal.cost_share.mean - preferred.cost_share.mean
        lines.append(
            f"- **Where the SCR goes.** Auto runs {tidal.spot_share:.0f}% of its replica-hours "
            f"on spot against SpotPreferred's {preferred.spot_share:.0f}% (same reconcile, no "
            f"steady floor on on-demand): that floor costs {gap:.1f}% of the all-on-demand "
            f"bill, between Tidal's SCR ({tidal.scr.mean:.3f}) and SpotPreferred's "
            f"({preferred.scr.mean:.3f}). What it buys: interruption misses "
            f"{tidal.interruption_pooled:.4f}% against {preferred.interruption_pooled:.4f}% of "
            f"requests, SLO {tidal.slo.mean:.4f}% against {preferred.slo.mean:.4f}%."
        )
    if tidal.scr.mean < TARGET_SCR:
        lines.append(
            f"- **What would move the SCR to {TARGET_SCR:.2f}.** Only Auto's on-demand "
            "floor, which the interruption budget sizes (`capacity.interruptionBudgetPercent`"
            ", default 0.01 %): the smallest floor whose expected loss, reclaim rate x "
            "recovery time x the load the survivors cannot carry, stays within it. With "
            "reclaim rates of a few a week per pool or more (the pessimistic prior, one a "
            "day, until observed otherwise; the operator's ledger of what it observed) and "
            "a recovery of detection + the measured replica start - the notice, a "
            "single-region endpoint keeps most of its load on on-demand and runs its "
            "headroom on spot. What moves it: a larger budget (an owner's choice; "
            + (
                "the budget curve below"
                if any(r.strategy.startswith(f"{TIDAL}@") for r in summary.runs)
                else "`make bench-economics` draws the budget curve"
            )
            + "), calmer observed reclaim rates, more regions to spread spot over, and "
            "shorter replica starts (a model cache); the rows here say what "
            "SpotPreferred's floorless SCR costs in interruption misses."
        )
        lines += _largest_left(summary, scenario)
    rows = summary.rows[(market, HELD_OUT)]
    me = Point(TIDAL, tidal.cost_share.mean, tidal.slo.mean)
    beaters = [
        r
        for r in rows
        if not _is_tidal(r.strategy)
        and stats.dominates(Point(r.strategy, r.cost_share.mean, r.slo.mean), me)
    ]
    if beaters:
        best = max(beaters, key=lambda r: r.slo.mean)
        od = summary.row(market, HELD_OUT, ON_DEMAND)
        scaling = tidal.overflow_pooled + tidal.shift_pooled
        versus = (
            f"; all-on-demand's {od.overflow_pooled + od.shift_pooled:.3f}%"
            if od is not None
            else ""
        )
        lines.append(
            f"- **Why baselines dominate.** {len(beaters)} baseline point(s) are cheaper and "
            f"at least as good; the best SLO among them is {best.strategy} ({best.slo.mean:.4f}% "
            f"for {best.cost_share.mean:.1f}% of on-demand's bill). Tidal's largest misses are "
            "overflow and shift (load outgrowing the scaled replicas while new ones start, "
            "whether the start is a scale-up or a move between capacity types: "
            f"{scaling:.3f}% of its requests{versus}): about what every strategy without "
            "spare replicas misses. Money spent on spare spot replicas (headroom, SpotHedge's "
            "N_extra) buys more SLO than money spent on on-demand for the steady load. Moving "
            "it: a cheaper floor (above) and headroom on spot for bursts."
        )
    lines += _budget_curve(summary, market)
    pessimistic = summary.row("pessimistic", HELD_OUT, TIDAL)
    if pessimistic is not None:
        others = [
            f"{r.strategy} {r.interruption_pooled:.4f}%"
            for r in summary.rows[("pessimistic", HELD_OUT)]
            if not _is_tidal(r.strategy) and r.spot_share > 0
        ]
        in_flight = pessimistic.in_flight_pooled
        lines.append(
            "- **Interruptions, pessimistic market.** Tidal "
            f"{pessimistic.interruption_pooled:.4f}% of requests ({in_flight:.4f}% in flight "
            "on a replica still serving when its node went, "
            f"{pessimistic.interruption_pooled - in_flight:.4f}% capacity missing while "
            "replacements started); " + ", ".join(others) + "."
        )
        if pessimistic.interruption_pooled > TARGET_INTERRUPTION_PERCENT:
            lines.append(
                "- **What would move the interruption misses.** In flight: a replica's "
                "replacement starts at the notice but takes its cold start (2-7 min) against "
                "a 2-minute notice, so the leaving replica is still serving at the reclaim; "
                "taking it out of the gateway's rotation before the deadline (drain) would "
                "save those requests. Missing capacity: a crunch takes up to a whole spot "
                "pool, so the floor has to carry the load that survives losing the largest "
                "pool (what DESIGN.md's interruption budget asks of Auto)."
            )
    return lines


# --- tables ---------------------------------------------------------------------------------

_COLUMNS: Final = (
    "strategy",
    "cost, % of all-on-demand",
    "SLO attainment %",
    "vs all-on-demand, points",
    "SCR",
    "interruption %",
    "shift %",
    "overflow %",
    "spot share %",
)


def _cells(r: Row) -> list[str]:
    return [
        f"**{r.strategy}**" if r.strategy == TIDAL else r.strategy,
        r.cost_share.show(".1f"),
        r.slo.show(".3f"),
        r.slo_delta.show("+.4f") if r.slo_delta is not None else "",
        r.scr.show(".3f") if r.scr is not None else "",
        f"{r.interruption_pooled:.4f}",
        f"{r.shift_pooled:.4f}",
        f"{r.overflow_pooled:.3f}",
        f"{r.spot_share:.1f}",
    ]


def _table(rows: Sequence[Row]) -> list[str]:
    return [
        "| " + " | ".join(_COLUMNS) + " |",
        "|---|" + "---:|" * (len(_COLUMNS) - 1),
        *("| " + " | ".join(_cells(r)) + " |" for r in rows),
    ]


def console(summary: Summary) -> str:
    out = []
    for (market, split), rows in summary.rows.items():
        out.append(f"\n{market} market, {split} seeds ({len(summary.seeds[split])}):")
        cells = [list(_COLUMNS), *(_cells(r) for r in rows)]
        widths = [max(len(c[i]) for c in cells) for i in range(len(_COLUMNS))]
        for c in cells:
            out.append("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)))
    out.append("")
    out += verdicts(summary)
    out.append("")
    out += findings(summary)
    return "\n".join(out)


def _sensitivity(summary: Summary) -> list[str]:
    labels = ["catalog" if d is None else f"{d:g}" for d in DISCOUNTS]
    shown = [TIDAL, "spotpreferred+0", "spothedge+0", "price-first+0", "commitment-1y"]
    lines = [
        "| market | strategy | "
        + " | ".join("catalog spot" if x == "catalog" else f"spot {x}% off" for x in labels)
        + " |",
        "|---|---|" + "---:|" * len(labels),
    ]
    for (market, split), rows in summary.rows.items():
        if split != HELD_OUT:
            continue
        for r in rows:
            if r.strategy not in shown:
                continue
            cells = [
                r.scr_by_discount[x].show(".2f") if x in r.scr_by_discount else "" for x in labels
            ]
            lines.append(f"| {market} | {r.strategy} | " + " | ".join(cells) + " |")
    return lines


@dataclass(frozen=True)
class EndpointShare:
    """One endpoint's part in Tidal's SCR (realistic market, held-out seeds)."""

    workload: Workload
    spot_share: float  # % of Tidal's replica-hours on spot
    scr: Interval | None  # against the endpoint's own all-on-demand and all-spot bills
    left: float | None  # % of what Tidal pays above all-spot (None: it pays nothing above)


def endpoint_shares(summary: Summary, scenario: Scenario) -> list[EndpointShare]:
    """Where Tidal's saving stops, endpoint by endpoint (the first market, held-out seeds)."""
    market = _first_market(summary)
    held = set(summary.seeds.get(HELD_OUT, []))
    by: dict[str, dict[int, RunResult]] = {}
    for r in summary.runs:
        if r.market == market and r.seed in held:
            by.setdefault(r.strategy, {})[r.seed] = r
    tidal, od, spot = by.get(TIDAL, {}), by.get(ON_DEMAND, {}), by.get(SPOT, {})
    seeds = sorted(set(tidal) & set(od) & set(spot))
    if not seeds:
        return []

    def bill(runs: dict[int, RunResult], seed: int, name: str) -> float:
        return runs[seed].endpoints[name].cost_usd

    left = {
        w.name: sum(bill(tidal, s, w.name) - bill(spot, s, w.name) for s in seeds)
        for w in scenario.workloads
    }
    gap = sum(left.values())
    out = []
    for w in scenario.workloads:
        mine = [tidal[s].endpoints[w.name] for s in seeds]
        on_spot = sum(e.spot_replica_seconds for e in mine)
        every = on_spot + sum(e.reserved_replica_seconds for e in mine)
        scr = [
            stats.capture_ratio(bill(od, s, w.name), bill(spot, s, w.name), bill(tidal, s, w.name))
            for s in seeds
            if bill(od, s, w.name) > bill(spot, s, w.name)
        ]
        out.append(
            EndpointShare(
                workload=w,
                spot_share=100 * on_spot / every if every else 0.0,
                scr=stats.interval(scr) if scr else None,
                left=100 * left[w.name] / gap if gap > 0 else None,
            )
        )
    return out


def _largest_left(summary: Summary, scenario: Scenario | None) -> list[str]:
    """A finding on the endpoint holding the largest share of the saving Tidal leaves."""
    shares = (
        [e for e in endpoint_shares(summary, scenario) if e.left is not None] if scenario else []
    )
    if not shares:
        return []
    top = max(shares, key=lambda e: e.left or 0.0)
    w = top.workload
    pools = "one spot pool" if len(w.regions) == 1 else f"{len(w.regions)} spot pools"
    return [
        f"- **Where the saving stops.** {top.left:.0f} % of what Tidal pays above all-spot is "
        f"one endpoint's, {w.name} ({w.gpus}x {w.product.removeprefix('NVIDIA-')}, {pools}, "
        f"{w.cold_start_seconds} s replica start): it runs {top.spot_share:.0f} % of its "
        "replica-hours on spot. With one pool, a reclaim leaves only its reserved replicas "
        "serving through the whole recovery, so the budget keeps most of its load there "
        "(the per-endpoint table below)."
    ]


def per_endpoint(summary: Summary, scenario: Scenario) -> list[str]:
    """`endpoint_shares` as a table: the spot pools each endpoint may use, its replica start,
    its share of replica-hours on spot, its own SCR, its share of the saving Tidal leaves."""
    shares = endpoint_shares(summary, scenario)
    if not shares:
        return []
    lines = [
        "| endpoint | GPUs | spot pools (regions; one GPU product) | replica start "
        "| Tidal on spot, % of replica-hours | SCR | share of the saving Tidal leaves |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for e in shares:
        w = e.workload
        lines.append(
            f"| {w.name} | {w.gpus}x {w.product.removeprefix('NVIDIA-')} | {len(w.regions)} "
            f"| {w.cold_start_seconds} s | {e.spot_share:.0f} "
            f"| {e.scr.show('.2f') if e.scr is not None else ''} "
            f"| {'' if e.left is None else f'{e.left:.0f} %'} |"
        )
    return lines


def _catalog() -> list[str]:
    lines = [
        f"Prices: `tidal.cost.DEFAULT_CATALOG`, dated {catalog.CATALOG_DATE}, us-east-1 "
        "(us-west-2 the same, eu-west-1 about 10% above):",
        "",
        "| GPU | instance | on-demand $/GPU-h | spot $/GPU-h | spot discount | source |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in catalog.rows():
        lines.append(
            f"| {row.product.removeprefix('NVIDIA-')} | {row.instance} | {row.on_demand:.2f} | "
            f"{row.spot:.2f} | {row.discount_percent:.0f}% | {row.source} |"
        )
    lines += ["", "Spot and commitment discounts checked against (third-party, 2026-03):", ""]
    lines += [f"- {claim} — {where}" for claim, where in catalog.CHECKS]
    lines.append(f"- 1-year commitment: {catalog.COMMITMENT_SOURCES}")
    return lines


# --- the picture ----------------------------------------------------------------------------


def draw(summary: Summary, out: Path) -> bool:
    """The cost/SLO frontier as a PNG (one panel per market, held-out seeds; every strategy
    and headroom point, sweeps joined, Tidal highlighted, 95 % intervals as error bars).
    False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [(m, s) for (m, s) in summary.rows if s == HELD_OUT] or list(summary.rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.2), squeeze=False)
    colours = {
        TIDAL: "#d62728",
        f"{TIDAL}@": "#ff7f0e",
        "spotpreferred": "#1f77b4",
        "spothedge": "#2ca02c",
        "price-first": "#9467bd",
        "commitment-1y": "#8c564b",
        ON_DEMAND: "#000000",
        SPOT: "#7f7f7f",
    }
    for ax, key in zip(axes[0], panels, strict=True):
        rows = summary.rows[key]
        families: dict[str, list[Row]] = {}
        for r in rows:
            families.setdefault(r.family, []).append(r)
        for family, members in families.items():
            # A budget sweep (`tidal@B`) runs from the smallest budget up.
            members.sort(key=lambda r: (r.headroom, _budget(r.strategy)))
            colour = colours.get(family, "#17becf")
            big = family == TIDAL
            xs = [r.cost_share.mean for r in members]
            ys = [r.slo.mean for r in members]
            ax.errorbar(
                xs,
                ys,
                xerr=[
                    [r.cost_share.mean - r.cost_share.low for r in members],
                    [r.cost_share.high - r.cost_share.mean for r in members],
                ],
                yerr=[
                    [r.slo.mean - r.slo.low for r in members],
                    [r.slo.high - r.slo.mean for r in members],
                ],
                fmt="*-" if big else "o-",
                markersize=16 if big else 6,
                color=colour,
                linewidth=2 if big else 1,
                capsize=3,
                label=family,
                zorder=5 if big else 3,
            )
            for r in members:
                # Headroom points read "+H%", budget points (`tidal@B`) "B%".
                label = f"+{r.headroom:g}%" if r.headroom else ""
                if "@" in r.strategy:
                    label = f"{_budget(r.strategy):g}%"
                if label:
                    ax.annotate(
                        label,
                        (r.cost_share.mean, r.slo.mean),
                        textcoords="offset points",
                        xytext=(4, -10),
                        fontsize=7,
                        color=colour,
                    )
        front = stats.frontier([Point(r.strategy, r.cost_share.mean, r.slo.mean) for r in rows])
        ax.step(
            [p.cost for p in front],
            [p.slo for p in front],
            where="post",
            color="#bbbbbb",
            linestyle=":",
            zorder=1,
            label="frontier",
        )
        market, split = key
        ax.set_title(f"{market} spot market, {split} seeds ({len(summary.seeds[split])})")
        ax.set_xlabel("cost, % of all-on-demand (mean, 95% CI)")
        ax.set_ylabel("requests within SLO, % (mean, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


# --- the section ----------------------------------------------------------------------------


def section(
    summary: Summary,
    scenario: Scenario,
    *,
    command: str,
    seeds: Sequence[int],
    train: Sequence[int],
    wall_seconds: float,
    workers: int,
    machine: Mapping[str, str],
    model: Sequence[str],
    picture: Path | None,
    out: Path,
) -> str:
    """This benchmark's whole section of docs/benchmarks.md, markers included."""
    days = scenario.measured_steps * scenario.step_seconds / 86400
    warmup = scenario.warmup_steps * scenario.step_seconds / 3600
    held = [s for s in seeds if s not in set(train)]
    lines = [
        MARK_START,
        "## Placement economics (trace-driven simulation)",
        "",
        f"`{command}` — {len(seeds)} seeds x {days:g} days measured (after {warmup:g} h of "
        f"warm-up), {scenario.step_seconds} s steps: training seeds {_span(train)}, held-out "
        f"seeds {_span(held)}; {wall_seconds / 60:.1f} min wall-clock with {workers} worker "
        "processes on the machine below (shared with other work)."
        + (
            f" Smaller than the {POSED_SEEDS} seeds x {POSED_DAYS} days the benchmark is posed "
            "at (its defaults): that size takes hours on this machine, the operator's "
            "reconcile being most of it (bench/README.md), so the intervals here are wider "
            "than they would be."
            if len(seeds) < POSED_SEEDS or days < POSED_DAYS
            else ""
        ),
        "",
        "Every figure is a mean over seeds with its 95 % percentile-bootstrap interval over "
        "seeds in brackets (2,000 resamples); comparisons with all-on-demand are paired per "
        "seed (the same trace). SCR, the spot-saving capture ratio, is "
        "`(C_allOnDemand - C_X) / (C_allOnDemand - C_allSpot)` per seed. Interruption, shift "
        "and overflow are shares of all requests of the split's seeds together (a reclaim "
        "hits a given seed rarely; a mean of per-seed shares would hide it).",
        "",
        "Targets (goals, read on the held-out seeds; not asserts):",
        "",
        *verdicts(summary),
        "",
        "What the numbers say:",
        "",
        *findings(summary, scenario),
        "",
    ]
    if picture is not None:
        rel = os.path.relpath(picture, out.parent)
        lines += [f"![cost/SLO frontier, held-out seeds]({rel})", ""]
    for (market, split), rows in summary.rows.items():
        lines += [
            f"### {market.capitalize()} spot market, {split} seeds ({len(summary.seeds[split])})",
            "",
            *_table(rows),
            "",
        ]
    table = per_endpoint(summary, scenario)
    if table:
        lines += [
            f"### Where Tidal's saving stops, per endpoint ({_first_market(summary)} market, "
            "held-out seeds)",
            "",
            "Each endpoint's own SCR against its own all-on-demand and all-spot bills, and its "
            "share of what Tidal pays above all-spot. An endpoint with one spot pool (one "
            "region, one GPU product) has no survivors on spot when that pool is reclaimed: its "
            "reserved floor carries the load through the recovery.",
            "",
            *table,
            "",
        ]
    lines += [
        "### Sensitivity: SCR over the spot discount and the reclaim rate (held-out seeds)",
        "",
        "The same runs priced with every spot price set to the given discount off on-demand "
        "(then moved by the trace's multiplier, capped at on-demand); the markets differ in "
        "reclaim rate. A what-if for other clouds and contracts, not the shipped prices.",
        "",
        *_sensitivity(summary),
        "",
        "### Prices",
        "",
        *_catalog(),
        "",
        "### The model",
        "",
        *model,
        "",
        "| Machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine.items()),
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def _span(seeds: Sequence[int]) -> str:
    if not seeds:
        return "none"
    if list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ", ".join(str(s) for s in seeds)


def save_runs(path: Path, runs: Sequence[RunResult], meta: Mapping[str, object]) -> None:
    """Every run's results (and how the run was made) as JSON, to re-render without rerunning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": dict(meta), "runs": [dataclasses.asdict(r) for r in runs]}
    # Written aside and renamed over: a run stopped mid-write keeps the runs saved before.
    partial = path.with_name(path.name + ".writing")
    partial.write_text(json.dumps(doc))
    os.replace(partial, path)


def load_runs(path: Path) -> tuple[list[RunResult], dict[str, object]]:
    doc = json.loads(path.read_text())
    runs = []
    for raw in doc["runs"]:
        endpoints = {k: EndpointResult(**v) for k, v in raw.pop("endpoints").items()}
        runs.append(RunResult(**raw, endpoints=endpoints))
    return runs, dict(doc["meta"])


def write_section(out: Path, text: str) -> None:
    """Replace this benchmark's section of `out` (or append it), leaving the rest alone."""
    current = out.read_text() if out.exists() else HEADER
    start, end = current.find(MARK_START), current.find(MARK_END)
    if start != -1 and end > start:
        rest = current[end + len(MARK_END) :].lstrip("\n")
        current = current[:start] + text + ("\n" + rest if rest else "")
    else:
        current = current.rstrip("\n") + "\n\n" + text
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(current)


def _is_tidal(strategy: str) -> bool:
    """Tidal's own rows: the default and the budget sweep (`tidal@B`), not baselines."""
    return strategy == TIDAL or strategy.startswith(f"{TIDAL}@")


def _budget_curve(summary: Summary, market: str) -> list[str]:
    """One line on the budget sweep (`tidal@B` rows): what each budget buys and costs, and
    the largest whose pessimistic interruption misses stay within the target."""
    rows = [r for r in summary.rows[(market, HELD_OUT)] if r.strategy.startswith(f"{TIDAL}@")]
    if not rows:
        return []
    rough = {r.strategy: r for r in summary.rows.get(("pessimistic", HELD_OUT), [])}
    parts = []
    within: Row | None = None
    for row in sorted(rows, key=lambda r: _budget(r.strategy)):
        scr = f"SCR {row.scr.mean:.3f}" if row.scr is not None else "SCR n/a"
        text = f"{_budget(row.strategy):g}%: {scr}, SLO {row.slo.mean:.4f}%"
        other = rough.get(row.strategy)
        if other is not None:
            text += f", pessimistic interruption misses {other.interruption_pooled:.4f}%"
            if other.interruption_pooled <= TARGET_INTERRUPTION_PERCENT:
                within = row
        parts.append(text)
    line = (
        f"- **The interruption budget's curve** ({market}, held-out; the same reconcile at "
        "other `capacity.interruptionBudgetPercent` values): " + "; ".join(parts) + "."
    )
    if within is not None and within.scr is not None:
        line += (
            f" The largest budget here whose pessimistic misses stay within "
            f"{TARGET_INTERRUPTION_PERCENT:.2f}% is {_budget(within.strategy):g}%: SCR "
            f"{within.scr.show('.3f')}."
        )
    return [line]


def _budget(strategy: str) -> float:
    """The interruption budget of a `tidal@B` row (percent); 0 for any other row."""
    _, _, budget = strategy.partition("@")
    return float(budget) if budget else 0.0
