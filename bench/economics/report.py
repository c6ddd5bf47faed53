"""Results of the placement-economics benchmark: medians and spreads over seeds, the console
table, and this benchmark's section of docs/benchmarks.md.

Owns: aggregation (`Spread`, `summarize`), the verdict on the benchmark's targets computed from the
numbers (never written by hand, so a rerun cannot leave a stale claim), and `write_section`,
which replaces only the text between this benchmark's markers. Must not: run simulations.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.economics.simulate import EndpointResult, RunResult
from bench.economics.traces import Scenario

__all__ = [
    "MARK_END",
    "MARK_START",
    "Spread",
    "StrategySummary",
    "console_table",
    "section",
    "summarize",
    "write_section",
]

MARK_START: Final = "<!-- bench:economics:start -->"
MARK_END: Final = "<!-- bench:economics:end -->"
HEADER: Final = """# Benchmarks

Each section is rewritten by its benchmark; nothing here is asserted. The machine and versions
are those of the run that wrote the section.

"""

TIDAL: Final = "tidal"
RESERVED: Final = "all-reserved"
PRICE_FIRST: Final = "price-first"
MATCHED: Final = "price-first (cost-matched)"


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def show(self, fmt: str) -> str:
        if len({round(self.low, 6), round(self.high, 6)}) == 1:
            return format(self.median, fmt)
        return f"{self.median:{fmt}} ({self.low:{fmt}}-{self.high:{fmt}})"


@dataclass(frozen=True)
class StrategySummary:
    strategy: str
    runs: int
    cost_usd: Spread
    savings_percent: Spread
    slo_percent: Spread
    spot_share_percent: Spread
    interruption_percent: Spread
    shift_percent: Spread
    overflow_percent: Spread
    notes: Mapping[str, Spread]
    # Over every request of every seed: rare events (a reclaim hits one seed in three) vanish
    # in a median, so the findings quote these.
    pooled: Mapping[str, float]


def summarize(runs: Sequence[RunResult]) -> list[StrategySummary]:
    """One summary per strategy (in first-seen order); savings are per seed against that
    seed's all-reserved run."""
    reserved = {r.seed: r.cost_usd for r in runs if r.strategy == RESERVED}
    order: list[str] = []
    for r in runs:
        if r.strategy not in order:
            order.append(r.strategy)
    out = []
    for name in order:
        mine = [r for r in runs if r.strategy == name]

        def spread(value: Callable[[RunResult], float], mine: list[RunResult] = mine) -> Spread:
            return Spread.of([value(r) for r in mine])

        keys = sorted({k for r in mine for k in r.notes})
        out.append(
            StrategySummary(
                strategy=name,
                runs=len(mine),
                cost_usd=spread(lambda r: r.cost_usd),
                savings_percent=spread(
                    lambda r: (
                        100 * (1 - r.cost_usd / reserved[r.seed]) if reserved.get(r.seed) else 0.0
                    )
                ),
                slo_percent=spread(lambda r: r.slo_percent),
                spot_share_percent=spread(lambda r: r.spot_share_percent),
                interruption_percent=spread(lambda r: r.outside_percent("interruption")),
                shift_percent=spread(lambda r: r.outside_percent("shift")),
                overflow_percent=spread(lambda r: r.outside_percent("overflow")),
                notes={k: Spread.of([r.notes.get(k, 0.0) for r in mine]) for k in keys},
                pooled=_pooled(mine),
            )
        )
    return out


def _pooled(runs: Sequence[RunResult]) -> dict[str, float]:
    demand = sum(r.total("demand") for r in runs)
    if not demand:
        return {}

    def share(*names: str) -> float:
        return 100 * sum(r.total(n) for r in runs for n in names) / demand

    return {
        "slo": share("within"),
        "interruption": share("short_interruption", "lost_in_flight"),
        "shift": share("short_shift"),
        "overflow": share("short_overflow"),
    }


_COLUMNS: Final = (
    "strategy",
    "cost $",
    "vs all-reserved",
    "requests within SLO %",
    "spot share %",
    "outside SLO: interruption %",
    "shift %",
    "overflow %",
)


def _row(s: StrategySummary) -> list[str]:
    return [
        s.strategy,
        s.cost_usd.show(",.0f"),
        s.savings_percent.show(".1f") + "% cheaper",
        s.slo_percent.show(".3f"),
        s.spot_share_percent.show(".1f"),
        s.interruption_percent.show(".3f"),
        s.shift_percent.show(".3f"),
        s.overflow_percent.show(".3f"),
    ]


def console_table(summaries: Sequence[StrategySummary]) -> str:
    rows = [list(_COLUMNS), *(_row(s) for s in summaries)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown_table(summaries: Sequence[StrategySummary]) -> list[str]:
    return [
        "| " + " | ".join(_COLUMNS) + " |",
        "|---|" + "---:|" * (len(_COLUMNS) - 1),
        *("| " + " | ".join(_row(s)) + " |" for s in summaries),
    ]


def _workload_table(
    runs: Sequence[RunResult],
    strategies: Sequence[str],
    cell: Callable[[Sequence[EndpointResult]], str],
) -> list[str]:
    """One row per workload, one column per strategy: `cell` of that pair's runs."""
    names = list(runs[0].endpoints) if runs else []
    lines = [
        "| workload | " + " | ".join(strategies) + " |",
        "|---|" + "---:|" * len(strategies),
    ]
    for workload in names:
        cells = [
            cell([r.endpoints[workload] for r in runs if r.strategy == strategy])
            for strategy in strategies
        ]
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return lines


def _within_slo(results: Sequence[EndpointResult]) -> str:
    """Requests within SLO, % of all the runs' requests together."""
    demand = sum(e.demand for e in results)
    within = sum(e.within for e in results)
    return f"{100 * within / demand:.3f}" if demand else ""


def _median_cost(results: Sequence[EndpointResult]) -> str:
    costs = [e.cost_usd for e in results]
    return f"{statistics.median(costs):,.0f}" if costs else ""


def _sensitivity(discount: float, runs: Sequence[RunResult]) -> list[str]:
    columns = ("strategy", "cost $", "vs all-reserved", "requests within SLO %", "spot share %")
    rows = [
        [
            s.strategy,
            s.cost_usd.show(",.0f"),
            s.savings_percent.show(".1f") + "% cheaper",
            s.slo_percent.show(".3f"),
            s.spot_share_percent.show(".1f"),
        ]
        for s in summarize(runs)
    ]
    return [
        f"### Sensitivity: spot at {discount:g}% below reserved (not the shipped prices)",
        "",
        f"`--spot-discount {discount:g}`: the same seeds, traces and replica counts, with every "
        f"spot price set to {discount:g}% below the catalog's reserved price (then moved by the "
        "trace's regional multiplier, capped at reserved) instead of the catalog's spot price. "
        "The planner does not read prices, so the planner rows place exactly as above and only "
        "their dollars change; price-first picks offerings by price. A what-if for clouds and "
        "contracts with deeper spot discounts, not a result with the shipped catalog.",
        "",
        "| " + " | ".join(columns) + " |",
        "|---|" + "---:|" * (len(columns) - 1),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _wins(runs: Sequence[RunResult], a: str, b: str) -> tuple[int, int, int]:
    """Seeds where `a`'s SLO is above, equal to (within 0.001 points) and below `b`'s."""
    first = {r.seed: r.slo_percent for r in runs if r.strategy == a}
    second = {r.seed: r.slo_percent for r in runs if r.strategy == b}
    diffs = [first[s] - second[s] for s in first if s in second]
    return (
        sum(1 for d in diffs if d > 0.001),
        sum(1 for d in diffs if abs(d) <= 0.001),
        sum(1 for d in diffs if d < -0.001),
    )


def _verdicts(by_name: Mapping[str, StrategySummary], runs: Sequence[RunResult]) -> list[str]:
    tidal, price, matched = by_name.get(TIDAL), by_name.get(PRICE_FIRST), by_name.get(MATCHED)
    spot = by_name.get("all-spot")
    if tidal is None:
        return []
    cheaper = tidal.savings_percent.median
    slo = tidal.slo_percent.median
    lines = [
        f"- **≥ 50% cheaper than all-reserved**: "
        f"{'met' if cheaper >= 50 else 'missed'} — Tidal is {cheaper:.1f}% cheaper (median).",
    ]
    if spot is not None:
        lines.append(
            f"  All-spot, the cheapest any placement can be with these prices, is "
            f"{spot.savings_percent.median:.1f}% cheaper: the catalog's spot discount bounds "
            "every strategy."
        )
    lines.append(
        f"- **≥ 99.9% of requests within SLO**: {'met' if slo >= 99.9 else 'missed'} — "
        f"{slo:.3f}% (median); outside the SLO: "
        f"{tidal.interruption_percent.median:.3f}% interruption, "
        f"{tidal.shift_percent.median:.3f}% shift, {tidal.overflow_percent.median:.3f}% "
        "overflow."
    )
    if price is not None:
        above, same, below = _wins(runs, TIDAL, PRICE_FIRST)
        lines.append(
            f"- **Better SLO than price-first**: "
            f"{'yes' if slo > price.slo_percent.median else 'no'} at their own costs — "
            f"{slo:.3f}% vs {price.slo_percent.median:.3f}% (median), for "
            f"${tidal.cost_usd.median:,.0f} vs ${price.cost_usd.median:,.0f} a day; per seed "
            f"Tidal is better in {above}, equal in {same}, worse in {below}."
        )
    if matched is not None:
        headroom = matched.notes.get("headroom_percent")
        extra = f" (+{headroom.median:.0f}% replicas, median)" if headroom else ""
        above, same, below = _wins(runs, TIDAL, MATCHED)
        lines.append(
            f"- **… at equal cost**: {'yes' if slo > matched.slo_percent.median else 'no'} — "
            f"price-first given Tidal's budget as extra replicas{extra} reaches "
            f"{matched.slo_percent.median:.3f}% at ${matched.cost_usd.median:,.0f}; per seed "
            f"Tidal is better in {above}, equal in {same}, worse in {below}."
        )
    return lines


def section(
    runs: Sequence[RunResult],
    scenario: Scenario,
    *,
    command: str,
    seeds: Sequence[int],
    wall_seconds: float,
    machine: Mapping[str, str],
    model: Sequence[str],
    findings: Sequence[str],
    sensitivity: tuple[float, Sequence[RunResult]] | None = None,
) -> str:
    """This benchmark's whole section of docs/benchmarks.md, markers included.
    `sensitivity`: the spot discount and the runs priced with it, shown in their own table."""
    summaries = summarize(runs)
    by_name = {s.strategy: s for s in summaries}
    compared = [s.strategy for s in summaries]
    hours = scenario.measured_steps * scenario.step_seconds / 3600
    warmup = scenario.warmup_steps * scenario.step_seconds / 3600
    lines = [
        MARK_START,
        "## Placement economics (trace-driven simulation)",
        "",
        f"`{command}` — seeds {', '.join(str(s) for s in seeds)}; {hours:g} h measured after "
        f"{warmup:g} h of warm-up (so the Auto policy has a day of GPU history), "
        f"{scenario.step_seconds} s steps; {wall_seconds / 60:.1f} min wall-clock on the "
        "machine below (shared with other work). Medians over seeds, (min-max) in brackets; "
        "outside-SLO columns are shares of all requests.",
        "",
        *_markdown_table(summaries),
        "",
        "Targets (goals, not asserts):",
        "",
        *_verdicts(by_name, runs),
        "",
        "Requests within SLO per workload, % (all seeds' requests together):",
        "",
        *_workload_table(runs, compared, _within_slo),
        "",
        "Cost per workload, $ a day (median over seeds):",
        "",
        *_workload_table(runs, compared, _median_cost),
        "",
        *([*_sensitivity(*sensitivity), ""] if sensitivity is not None else []),
        "### The model",
        "",
        *model,
        "",
        "### What the numbers say",
        "",
        *findings,
        "",
        "| Machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine.items()),
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


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
