"""Spot unavailable -> all replicas Ready on on-demand: how long after Karpenter reports that it
cannot launch spot for an endpoint's replicas they serve from on-demand nodes instead.

A benchmark, not a test: it asserts nothing about time and never runs under pytest. It starts
one elastic local cluster for the whole run (`bench.elastic_ready.elastic_cluster`: CPU nodes
only, Karpenter v1.15 with its KWOK cloud provider launching the GPU nodes), applies the CRDs
and runs the operator as a process, with the elastic benchmark's settings plus
`TIDAL_SPOT_PROVISION_TIMEOUT_SECONDS=600`: a spot replica would count as lost only after ten
minutes unscheduled, so that timeout is not what moves the replicas -- Karpenter's report is.

One trial, the e2e scenario of `tests/e2e/test_elastic_tidal.py` (spot out of capacity moves to
on-demand), alternating the two regions of the elastic fleet between trials:

1. spot runs out in the region (`tidal.devcluster.karpenter.set_spot(..., available=False)`:
   its spot offerings leave Karpenter's instance-types file and Karpenter is restarted);
2. a fresh namespace gets a fresh InferenceEndpoint (SpotPreferred, `REPLICAS` replicas of one
   GPU of any product, that region); the clock starts just before the create;
3. poll every `POLL_SECONDS` (client-side monotonic time) for
   (a) the first `FailedScheduling` Event from Karpenter (source component `karpenter`; the
       default scheduler's Events of that reason are not it) on one of the endpoint's spot
       pods: *Karpenter reports the failure*. Its moment is when this poll first saw the Event
       (the Event's own firstTimestamp has whole seconds only; how far behind the poll it was
       is reported);
   (b) the endpoint's status showing spot 0, reserved `REPLICAS` at its current generation:
       *the move decided*;
   (c) every replica Ready on on-demand, in the status (ready `REPLICAS`, Ready=True) and in
       fact (that many live pods, all Ready, all bound to nodes Karpenter launched as
       on-demand in the region): *Ready on on-demand*.
   (b) and (c) are timed from (a); (a) from the create, for context. The operator's
   `SpotCapacityLost` Event must name Karpenter's `FailedScheduling`, or the run stops: the
   replicas would have moved for another reason;
4. the namespace is deleted and its pods waited out, every NodeClaim deleted until no node has
   `nvidia.com/gpu` allocatable (`bench.elastic_ready.Bench.clean`), then spot is made
   available again (Karpenter is not restarted while it terminates nodes).

Statistics: p50, p95 and max (with min) over the trials, percentiles interpolated linearly
between closest ranks (`bench.spot_loss.Spread`).

Run: `make bench-spot-unavailable`, or `python -m bench.spot_unavailable [--trials 20]
[--startup-seconds 5] [--out docs/benchmarks.md]`. The report replaces this benchmark's section
of the output file (between its markers; placed after the elastic apply -> Ready section when
new) and leaves other sections alone.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench import elastic_ready, spot_loss
from bench.elastic_ready import apply_crds, dump, elastic_cluster, is_ready, wait
from bench.spot_loss import Spread, busy_note, environment_tables, write_section_after
from bench.spot_loss import operator as run_operator
from tidal.api.labels import KARPENTER_CAPACITY_TYPE, KARPENTER_NODEPOOL, NODE_REGION
from tidal.devcluster import build, cluster, karpenter

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = elastic_ready.GROUP, elastic_ready.VERSION, elastic_ready.PLURAL
REGIONS = spot_loss.REGIONS
REPLICAS = 2
INSTANCE_TYPE = elastic_ready.INSTANCE_TYPE
# The elastic benchmark's settings; the provision timeout at its default, stated, so that the
# move can only come from Karpenter's report.
OPERATOR_ENV = {**elastic_ready.OPERATOR_ENV, "TIDAL_SPOT_PROVISION_TIMEOUT_SECONDS": "600"}
POLL_SECONDS = elastic_ready.POLL_SECONDS
AUTOSCALER = "karpenter"
FAILED_SCHEDULING = "FailedScheduling"
# Karpenter's message is quoted in the report up to this length.
MESSAGE_CHARS = 400
MARK_START = "<!-- bench:spot_unavailable:start -->"
MARK_END = "<!-- bench:spot_unavailable:end -->"
# Where a new section goes: after this one's end marker, when the file has it.
AFTER_MARK = elastic_ready.MARK_END


class BenchError(spot_loss.BenchError):
    """A trial could not be run or measured; the message says what was seen."""


@dataclass(frozen=True)
class Trial:
    region: str
    reported_seconds: float  # (a) create -> Karpenter's FailedScheduling first seen
    decided_seconds: float  # (b) report -> status spot 0, reserved REPLICAS
    ready_seconds: float  # (c) report -> REPLICAS Ready on on-demand, status and pods
    event_lag_seconds: float  # first seen minus the Event's firstTimestamp (whole seconds)
    message: str  # Karpenter's message
    announced: str  # the operator's SpotCapacityLost message
    spot_off_seconds: float  # set_spot(available=False), Karpenter restart included
    nodeclaims: int
    instance_types: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """Karpenter's FailedScheduling Event and when the poll first saw it."""

    event: dict[str, Any]
    at: float  # monotonic
    wall: dt.datetime

    @property
    def lag_seconds(self) -> float:
        """How long after the Event's own stamp (whole seconds) the poll saw it."""
        stamp = dt.datetime.fromisoformat(event_time(self.event).replace("Z", "+00:00"))
        return (self.wall - stamp).total_seconds()


def endpoint_body(name: str, namespace: str, region: str) -> dict[str, Any]:
    """The elastic benchmark's endpoint with `REPLICAS` replicas in `region`."""
    body = elastic_ready.endpoint_body(name, namespace)
    body["spec"]["residency"] = {"regions": [region]}
    body["spec"]["scaling"] = {"minReplicas": REPLICAS, "maxReplicas": REPLICAS}
    return body


def karpenter_failure(events: Sequence[dict[str, Any]], endpoint: str) -> dict[str, Any] | None:
    """The earliest FailedScheduling Event Karpenter posted on one of `endpoint`'s spot pods."""
    found = [
        e
        for e in events
        if e.get("reason") == FAILED_SCHEDULING
        and source(e) == AUTOSCALER
        and (e.get("involvedObject") or {}).get("kind") == "Pod"
        and str((e.get("involvedObject") or {}).get("name", "")).startswith(f"{endpoint}-spot-")
    ]
    return min(found, key=event_time) if found else None


def source(event: dict[str, Any]) -> str:
    """Who posted the Event: the core/v1 source component, else the events/v1 reporter."""
    return str((event.get("source") or {}).get("component") or event.get("reportingComponent"))


def event_time(event: dict[str, Any]) -> str:
    return str(
        event.get("firstTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def status_shows(obj: dict[str, Any] | None, *, ready: bool) -> bool:
    """The endpoint's current status has spot 0, reserved REPLICAS (and, with `ready`, REPLICAS
    ready replicas and Ready=True)."""
    status = (obj or {}).get("status") or {}
    if obj is None or status.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    replicas = status.get("replicas") or {}
    if (replicas.get("spot"), replicas.get("reserved")) != (0, REPLICAS):
        return False
    return not ready or (replicas.get("ready") == REPLICAS and is_ready(obj))


class Bench(elastic_ready.Bench):
    """One elastic cluster, one operator, the trials (the reads and the cleaning are the
    elastic benchmark's)."""

    def events(self, namespace: str) -> list[dict[str, Any]]:
        response: Any = self.core.list_namespaced_event(namespace, _preload_content=False)
        return cast(list[dict[str, Any]], json.loads(response.data)["items"])

    def on_demand_nodes(self, region: str) -> set[str]:
        return {
            n["metadata"]["name"]
            for n in self.nodes()
            if (labels := n["metadata"].get("labels") or {}).get(KARPENTER_CAPACITY_TYPE)
            == "on-demand"
            and labels.get(NODE_REGION) == region
            and KARPENTER_NODEPOOL in labels
        }

    def set_spot(self, region: str, *, available: bool) -> float:
        began = time.monotonic()
        karpenter.set_spot(
            Path(self.state.workdir),
            region,
            available=available,
            bind_to_parent=True,
            progress=lambda _: None,
        )
        return time.monotonic() - began

    # --- one trial ----------------------------------------------------------------------------

    def run(self, index: int, timeout: float) -> Trial:
        region = REGIONS[index % len(REGIONS)]
        namespace, name = f"spot-unavailable-{index:02d}", "bursty"
        if gpu := self.gpu_nodes():
            raise BenchError(f"{len(gpu)} GPU nodes before the trial: {', '.join(gpu)}")
        spot_off = self.set_spot(region, available=False)
        try:
            cluster.kubectl(self.state, "create", "namespace", namespace)
            try:
                started = time.monotonic()
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, endpoint_body(name, namespace, region)
                )
                reported, decided_at, ready_at = self.follow(
                    namespace, name, region, started, timeout
                )
                announced = self.check_announced(namespace)
                claims = self.nodeclaims()
            except (spot_loss.BenchError, cluster.ClusterError):
                self.dump_events(namespace)
                raise
            finally:
                self.clean(namespace)
        finally:
            self.set_spot(region, available=True)
        types = collections.Counter(
            str((c["metadata"].get("labels") or {}).get(INSTANCE_TYPE, "?")) for c in claims
        )
        return Trial(
            region=region,
            reported_seconds=reported.at - started,
            decided_seconds=decided_at - reported.at,
            ready_seconds=ready_at - reported.at,
            event_lag_seconds=reported.lag_seconds,
            message=str(reported.event.get("message", "")),
            announced=announced,
            spot_off_seconds=spot_off,
            nodeclaims=len(claims),
            instance_types=dict(types),
        )

    def follow(
        self, namespace: str, name: str, region: str, started: float, timeout: float
    ) -> tuple[Report, float, float]:
        """Karpenter's report, and the monotonic moments the move was decided and the replicas
        were Ready on on-demand."""
        reported: Report | None = None
        decided_at: float | None = None
        on_demand: set[str] = set()
        last = "nothing"
        deadline = started + timeout
        while time.monotonic() < deadline:
            if reported is None:
                reported = self.look_for_report(namespace, name)
            obj = self.endpoint(namespace, name)
            if decided_at is None and status_shows(obj, ready=False):
                # Reported and acted on within one poll: look once more.
                reported = reported or self.look_for_report(namespace, name)
                if reported is None:
                    raise BenchError(
                        f"{namespace}: the move to on-demand was decided, but Karpenter has "
                        "posted no FailedScheduling on a spot pod"
                    )
                decided_at = time.monotonic()
            if reported is not None and decided_at is not None and status_shows(obj, ready=True):
                pods = [
                    p for p in self.pods(namespace) if not p["metadata"].get("deletionTimestamp")
                ]
                hosts = {str(p["spec"].get("nodeName") or "") for p in pods} - {""}
                if hosts - on_demand:
                    on_demand = self.on_demand_nodes(region)
                good = [p for p in pods if is_ready(p) and p["spec"].get("nodeName") in on_demand]
                last = f"{len(pods)} live pods, {len(good)} Ready on on-demand in {region}"
                if len(pods) == len(good) == REPLICAS:
                    return reported, decided_at, time.monotonic()
            time.sleep(POLL_SECONDS)
        raise BenchError(
            f"{namespace}: not Ready on on-demand after {timeout:.0f}s (Karpenter reported: "
            f"{'yes' if reported is not None else 'no'}; decided: "
            f"{'yes' if decided_at is not None else 'no'}; {last})"
        )

    def look_for_report(self, namespace: str, name: str) -> Report | None:
        event = karpenter_failure(self.events(namespace), name)
        if event is None:
            return None
        return Report(event, time.monotonic(), dt.datetime.now(dt.UTC))

    def endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next((e for e in self.endpoints(namespace) if e["metadata"]["name"] == name), None)

    def check_announced(self, namespace: str) -> str:
        """The operator's SpotCapacityLost Event naming Karpenter's FailedScheduling (its
        message); the run stops when there is none."""

        def announced() -> list[str]:
            return [
                str(e.get("message", ""))
                for e in self.events(namespace)
                if e.get("reason") == "SpotCapacityLost"
                and FAILED_SCHEDULING in str(e.get("message", ""))
            ]

        return wait(
            f"{namespace}: a SpotCapacityLost Event naming {FAILED_SCHEDULING}",
            announced,
            timeout=30,
        )[0]

    def dump_events(self, namespace: str) -> None:
        with contextlib.suppress(cluster.ClusterError):
            print(
                f"events in {namespace}:\n"
                + cluster.kubectl(
                    self.state, "get", "events", "-n", namespace, "--sort-by=.lastTimestamp"
                ),
                file=sys.stderr,
            )


# --- the report ---------------------------------------------------------------------------------


def report(
    trials: Sequence[Trial],
    *,
    command: str,
    requested: int,
    startup_seconds: float,
    wall_seconds: float,
    cluster_seconds: float,
    load_before: tuple[float, float, float],
) -> str:
    reported = Spread.of([t.reported_seconds for t in trials])
    decided = Spread.of([t.decided_seconds for t in trials])
    ready = Spread.of([t.ready_seconds for t in trials])
    lags = [t.event_lag_seconds for t in trials]
    restarts = [t.spot_off_seconds for t in trials]
    settings = ", ".join(f"`{k}={v}`" for k, v in sorted(OPERATOR_ENV.items()))
    types: collections.Counter[str] = collections.Counter()
    for t in trials:
        types.update(t.instance_types)

    def row(what: str, s: Spread) -> str:
        return f"| {what} | {s.p50:.2f} | {s.p95:.2f} | {s.maximum:.2f} | {s.minimum:.2f} |"

    def listed(values: Sequence[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    def quoted(message: str) -> str:
        text = " ".join(message.split()).replace("`", "'").replace("|", "/")
        return f"`{text[: MESSAGE_CHARS - 1]}…`" if len(text) > MESSAGE_CHARS else f"`{text}`"

    lines = [
        MARK_START,
        "## Spot unavailable -> all replicas Ready on on-demand, with Karpenter",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}` "
        f"({len(trials)} trials"
        + (f" of the {requested} asked for" if len(trials) != requested else "")
        + f", {wall_seconds / 60:.1f} min in all; the elastic local cluster took "
        f"{cluster_seconds:.0f} s to start).",
        "",
        "One elastic local cluster (CPU nodes only; Karpenter v1.15 with its KWOK cloud provider "
        "makes the GPU nodes, the fleet of `operator/tidal/devcluster/data/elastic.yaml`) for "
        "the whole run. Each trial starts with no GPU node; spot capacity runs out in one "
        f"region ({' and '.join(REGIONS)} alternately: its spot offerings leave Karpenter's "
        "instance-types file and Karpenter is restarted, `tidal dev spot`), then a fresh "
        f"InferenceEndpoint (SpotPreferred, {REPLICAS} replicas, 1 GPU, that region) is created "
        "in a fresh namespace. Clock (client-side, polled every "
        f"{POLL_SECONDS:g} s): (a) from just before the create until the poll first sees a "
        "`FailedScheduling` Event from Karpenter (source component `karpenter`) on one of the "
        "endpoint's spot pods: *Karpenter reports the failure*; from that moment, (b) until the "
        f"endpoint's status shows spot 0, reserved {REPLICAS}: *the move decided*; (c) until "
        f"all {REPLICAS} replicas are Ready on on-demand both in the status (ready "
        f"{REPLICAS}, Ready=True) and in fact (that many live pods, all Ready, all bound to "
        "nodes Karpenter launched as on-demand in the region). Every trial's "
        "`SpotCapacityLost` Event named Karpenter's `FailedScheduling` (checked; the run "
        "stops otherwise). Simulated replicas are Ready "
        f"{startup_seconds:g} s after they start running. Operator settings: {settings}: the "
        "provision timeout is ten minutes, so it is not what moved the replicas. Between "
        "trials the namespace is deleted, then every NodeClaim, until no node has "
        "`nvidia.com/gpu` allocatable, and spot is made available again.",
        "",
        "| seconds | p50 | p95 | max | min |",
        "|---|---:|---:|---:|---:|",
        row("**(b) Karpenter reports the failure -> the move decided** (status)", decided),
        row(f"**(c) Karpenter reports the failure -> {REPLICAS} Ready on on-demand**", ready),
        row("(a) create -> Karpenter reports the failure (context)", reported),
        "",
        f"- Per trial, (b) (s): {listed([t.decided_seconds for t in trials])}.",
        f"- Per trial, (c) (s): {listed([t.ready_seconds for t in trials])}.",
        f"- Per trial, (a) (s): {listed([t.reported_seconds for t in trials])}.",
        "- The poll saw each Event "
        f"{min(lags):.2f} to {max(lags):.2f} s after its firstTimestamp (whole seconds, so up to "
        "1 s of that is the truncation): timed from the Event's own stamp, (b) and (c) would "
        "be longer by about as much.",
        f"- Karpenter's message (first trial): {quoted(trials[0].message)}; the operator's "
        f"`SpotCapacityLost` Event: {quoted(trials[0].announced)}.",
        "- Karpenter made "
        + ", ".join(str(t.nodeclaims) for t in trials)
        + " NodeClaims per trial; instance types over the trials: "
        + (", ".join(f"{k} x {v}" for k, v in sorted(types.items())) or "none")
        + ".",
        f"- Making spot unavailable (Karpenter restarted until its health probe answers) took "
        f"{min(restarts):.1f} to {max(restarts):.1f} s per trial, before the clock starts.",
        "",
        "Percentiles interpolate linearly between closest ranks"
        + (
            f" (with {len(trials)} trials, p95 lies between the two largest)."
            if len(trials) < 20
            else "."
        ),
        *busy_note(load_before),
        *environment_tables(load_before),
        f"| Karpenter (KWOK provider) | {build.KARPENTER_VERSION} |",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def write(out: Path, section: str) -> None:
    """Replace this benchmark's section of `out`; a new one goes after the elastic apply ->
    Ready section (appended when the file has none)."""
    write_section_after(out, section, MARK_START, MARK_END, AFTER_MARK)


# --- running it ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spot_unavailable", description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    spot_loss.startup_argument(parser, 5.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="per trial, seconds")
    spot_loss.output_arguments(parser)
    args = parser.parse_args(argv)
    if args.trials < 2:
        parser.error("--trials must be at least 2 (percentiles need two samples)")
    command = "python -m bench.spot_unavailable " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )

    began, load_before = time.monotonic(), os.getloadavg()
    trials: list[Trial] = []
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        cluster_dir = workdir.absolute() / "cluster"
        state = stack.enter_context(elastic_cluster(cluster_dir, args.startup_seconds))
        cluster_seconds = time.monotonic() - began
        apply_crds(state)
        log = workdir / "operator.log"
        proc = stack.enter_context(run_operator(state, log, OPERATOR_ENV))
        bench = Bench(state, proc.pid)
        for index in range(args.trials):
            try:
                trial = bench.run(index, args.timeout)
            except (spot_loss.BenchError, cluster.ClusterError):  # waits raise the base
                dump(state, cluster_dir, log)
                raise
            trials.append(trial)
            print(
                f"trial {index + 1:2d}/{args.trials} {trial.region}: "
                f"reported {trial.reported_seconds:6.2f}s  "
                f"decided +{trial.decided_seconds:5.2f}s  ready +{trial.ready_seconds:5.2f}s  "
                f"(event seen {trial.event_lag_seconds:.2f}s after its stamp; spot off "
                f"{trial.spot_off_seconds:.1f}s; nodeclaims {trial.nodeclaims} "
                f"{trial.instance_types})",
                flush=True,
            )
    section = report(
        trials,
        command=command.strip(),
        requested=args.trials,
        startup_seconds=args.startup_seconds,
        wall_seconds=time.monotonic() - began,
        cluster_seconds=cluster_seconds,
        load_before=load_before,
    )
    write(args.out, section)
    spot_loss.announce(args.out, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
