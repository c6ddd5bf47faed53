"""What the economics benchmark does to run faster must not change what it simulates.

The fleet snapshot is built from copied templates instead of `model_construct`, `pod_object`
is kept per pod while its inputs stay the same, and the reconcile is skipped between the
changes the controller would reconcile on: each is checked here against the plain way (a
fresh build; `decide` every step).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bench.economics import baselines, report, simulate, traces
from bench.economics.__main__ import _alternate, code_fingerprint, complete_seeds, main
from bench.economics.simulate import (
    NAMESPACE,
    Cause,
    Cluster,
    Deployment,
    EndpointView,
    RunResult,
    TidalStrategy,
    pod_object,
)
from bench.economics.traces import NodeSpec, Scenario, SpotEvent, Workload
from tests.unit.test_economics_drives_decide import WORKLOAD

from tidal.api.endpoint import CapacityPolicy, InferenceEndpointSpec
from tidal.api.labels import CapacityType
from tidal.api.telemetry import GpuSample, GpuTelemetry, PodUsage
from tidal.placement.budget import DEFAULT_PRIOR
from tidal.placement.model import FleetSnapshot
from tidal.reconcile.endpoint import Memory, Outcome, World, decide

L40S = "NVIDIA-L40S"
H100 = "NVIDIA-H100-80GB-HBM3"
STEP = 60


def _workload(name: str, product: str, gpus: int) -> Workload:
    return dataclasses.replace(WORKLOAD, name=name, product=product, gpus=gpus)


def _scenario(
    rates: tuple[float, ...], events: tuple[SpotEvent, ...] = (), *, big: bool = False
) -> Scenario:
    steps = len(rates)
    workloads = (_workload("w", L40S, 1),) + ((_workload("big", H100, 4),) if big else ())
    nodes = (
        NodeSpec("spot-0", "us-east-1", "us-east-1a", L40S, spot=True),
        NodeSpec("spot-1", "us-east-1", "us-east-1b", L40S, spot=True),
        NodeSpec("reserved-0", "us-east-1", "us-east-1a", L40S, spot=False),
    ) + ((NodeSpec("h100-0", "us-east-1", "us-east-1a", H100, spot=False),) if big else ())
    return Scenario(
        seed=0,
        step_seconds=STEP,
        warmup_steps=0,
        measured_steps=steps,
        start=traces.EPOCH,
        workloads=workloads,
        nodes=nodes,
        rates={w.name: rates for w in workloads},
        utilization_noise={w.name: (0.0,) * steps for w in workloads},
        spot_price_multiplier={"us-east-1": (1.0,) * steps},
        events=events,
    )


# --- the fleet snapshot -----------------------------------------------------------------------


def _constructed(cluster: Cluster, now: datetime) -> list[GpuTelemetry]:
    """Each alive node's telemetry as `model_construct` builds it (the plain way)."""
    docs = []
    for node in cluster.nodes.values():
        if not node.alive:
            continue
        gpus = [
            GpuSample.model_construct(index=i, utilization_percent=0.0)
            for i in range(node.spec.gpus)
        ]
        usages = []
        for pod in node.pods.values():
            for i in pod.gpu_indexes:
                gpus[i] = GpuSample.model_construct(index=i, utilization_percent=pod.utilization)
            usages.append(
                PodUsage.model_construct(
                    namespace=NAMESPACE,
                    name=pod.name,
                    gpu_indexes=list(pod.gpu_indexes),
                    utilization_percent=pod.utilization,
                    utilization_source="process-samples",
                )
            )
        docs.append(
            GpuTelemetry.model_construct(
                time=now, source="simulated", gpus=gpus, pods=usages, window_seconds=10
            )
        )
    return docs


def test_the_snapshot_telemetry_is_what_model_construct_builds() -> None:
    cluster = Cluster(_scenario((4.0,) * 3, big=True))
    # Pods on several GPUs of a node (index 0 and others), two pods sharing a node, a node
    # given notice, one reclaimed.
    for endpoint, node, utilization in (
        ("big", "h100-0", 37.5),
        ("w", "spot-0", 12.0),
        ("w", "spot-0", 80.0),
        ("w", "spot-1", 55.0),
    ):
        pod = cluster.create(endpoint, "g", None, Cause.SCALE, 0.0)
        cluster.bind(pod, node, 0.0)
        pod.utilization = utilization
    cluster.notice("spot-1")
    cluster.reclaim("reserved-0", 10.0, {"w": 1.0, "big": 1.0})
    now = traces.EPOCH + timedelta(seconds=60)
    snapshot = cluster.snapshot(now)
    docs = [n.telemetry for n in snapshot.nodes]
    assert docs == _constructed(cluster, now)
    for doc, plain in zip(docs, _constructed(cluster, now), strict=True):
        assert doc is not None
        assert doc.model_fields_set == plain.model_fields_set
        assert [g.model_fields_set for g in doc.gpus] == [g.model_fields_set for g in plain.gpus]
        assert [p.model_fields_set for p in doc.pods] == [p.model_fields_set for p in plain.pods]
    assert [n.name for n in snapshot.nodes] == ["spot-0", "spot-1", "h100-0"]
    assert snapshot.nodes[1].taints  # the notice
    big = docs[2]
    assert big is not None
    assert [g.utilization_percent for g in big.gpus] == [37.5] * 4 + [0.0] * 4


# --- decide as often as the controller would ----------------------------------------------------


class Recording(TidalStrategy):
    """A reconciling strategy that records each step's orders, and checks that every pod it
    hands `decide` is what `pod_object` builds afresh."""

    def __init__(self, decide_every_seconds: float) -> None:
        super().__init__(
            "tidal",
            CapacityPolicy.SpotPreferred,
            60,
            decide=self._decide_checked,
            decide_every_seconds=decide_every_seconds,
        )
        self.orders: list[dict[str, dict[str, Deployment]]] = []
        self.fresh: list[list[dict[str, Any]]] = []
        self.given: list[list[dict[str, Any]]] = []
        self._expected: dict[str, list[dict[str, Any]]] = {}

    def _decide_checked(
        self, raw: dict[str, Any], world: World, memory: Memory, now: datetime
    ) -> Outcome:
        self.given.append(list(world.inputs.pods))
        self.fresh.append(self._expected[raw["metadata"]["name"]])
        return decide(raw, world, memory, now)

    def control(
        self, now: datetime, fleet: FleetSnapshot | None, endpoints: Mapping[str, EndpointView]
    ) -> dict[str, dict[str, Deployment]]:
        for name, view in endpoints.items():
            t = (now - view.start).total_seconds()
            self._expected[name] = [pod_object(p, view.start, t) for p in view.pods]
        asked = super().control(now, fleet, endpoints)
        self.orders.append({k: dict(v) for k, v in asked.items()})
        return asked


# Load up, down and up again; the only spot node in use goes with 120 s notice and comes back.
RATES = (4.0, 4.0, 10.0, 14.0, 14.0, 14.0, 14.0, 6.0, 6.0, 6.0, 6.0, 6.0, 12.0, 12.0, 12.0, 12.0)
EVENTS = (
    SpotEvent(400.0, "spot-0", reclaim=True, notice_seconds=120.0),
    SpotEvent(640.0, "spot-0", reclaim=False),
)


def _run(decide_every: float) -> tuple[Recording, RunResult]:
    strategy = Recording(decide_every)
    return strategy, simulate.run(_scenario(RATES, EVENTS), strategy)


def test_decide_between_changes_gives_what_decide_every_step_gives() -> None:
    every_step, plain = _run(0.0)
    gated, result = _run(900.0)
    # Fewer reconciles, the same orders at every step and the same results.
    assert gated.plans < every_step.plans
    assert gated.orders == every_step.orders
    assert dataclasses.asdict(result.endpoints["w"]) == dataclasses.asdict(plain.endpoints["w"])
    assert result.cost_usd > 0
    # The run exercised what the gating must not skip: scaling, a notice, a reclaim, a return.
    counts = [sum(d.replicas for d in o["w"].values()) for o in every_step.orders]
    assert min(counts) < max(counts)
    assert result.outside_percent("interruption") >= 0


def test_every_pod_decide_is_given_is_what_pod_object_builds_afresh() -> None:
    strategy, _ = _run(0.0)
    assert strategy.given  # decide ran
    assert any(len(pods) > 1 for pods in strategy.given)
    assert strategy.given == strategy.fresh


def test_a_starting_or_pending_pod_reconciles_every_step_and_a_quiet_endpoint_does_not() -> None:
    day = _scenario((4.0,) * 4)
    strategy = TidalStrategy("tidal", CapacityPolicy.SpotPreferred, decide_every_seconds=900.0)
    cluster = Cluster(day)
    strategy.begin(cluster)
    spec = InferenceEndpointSpec.model_validate(day.workloads[0].spec())
    pod = cluster.create("w", CapacityType.SPOT.value, CapacityType.SPOT, Cause.SCALE, 0.0)
    cluster.bind(pod, "spot-0", 0.0)  # Ready at 120 s

    def control(t: float) -> None:
        now = day.start + timedelta(seconds=t)
        strategy.control(now, None, {"w": cluster.view("w", spec, 1, 4, t)})

    control(0.0)
    control(60.0)  # still starting, nothing else changed
    assert strategy.plans == 2
    control(120.0)  # Ready: the Deployment's status changed
    control(180.0)  # nothing changed
    control(240.0)
    assert strategy.plans == 3
    cluster.create("w", CapacityType.SPOT.value, CapacityType.SPOT, Cause.SCALE, 250.0)
    control(300.0)  # a new pod (Pending)
    control(360.0)  # still Pending: the pending-spot timer runs
    assert strategy.plans == 5


# --- long runs stopped early --------------------------------------------------------------------


def _result(seed: int, strategy: str, market: str = "realistic") -> RunResult:
    return RunResult(strategy, seed, 1.0, {}, 0.0, "", {}, market=market)


def test_a_partial_run_is_reported_on_its_complete_seeds() -> None:
    runs = [
        _result(1, "tidal"),
        _result(1, "all-spot"),
        _result(1, "tidal", "pessimistic"),
        _result(2, "tidal"),
        _result(2, "all-spot"),
        _result(3, "tidal"),
        _result(3, "all-spot"),
        _result(3, "tidal", "pessimistic"),
    ]
    assert sorted({r.seed for r in complete_seeds(runs)}) == [1, 3]
    assert complete_seeds([]) == []


TINY = shlex.split(
    "--seeds 2 --train-seeds 1 --days 0.05 --warmup-hours 0.5 --workers 1 --out - --png - "
    "--price-first --spot-hedge --spot-preferred"
)


def reversed_pairs(argv: list[str]) -> list[str]:
    """`argv`'s options in reverse order, each with its values."""
    groups: list[list[str]] = []
    for word in argv:
        if word.startswith("--"):
            groups.append([word])
        else:
            groups[-1].append(word)
    return [w for group in reversed(groups) for w in group]


def _outcomes(path: Path) -> dict[tuple[int, str, str], object]:
    runs, _ = report.load_runs(path)
    return {(r.seed, r.market, r.strategy): dataclasses.replace(r, wall_seconds=0.0) for r in runs}


def test_a_stopped_run_resumed_ends_with_the_runs_an_unstopped_one_makes(tmp_path: Path) -> None:
    whole, stopped = tmp_path / "whole.json", tmp_path / "stopped.json"
    assert main([*TINY, "--results", str(whole)]) == 0
    doc = json.loads(whole.read_text())
    total = len(doc["runs"])
    assert total > 4
    # Stopped after four runs, as `_simulate` saves them.
    doc["runs"] = doc["runs"][:4]
    doc["meta"]["partial"] = True
    doc["meta"]["command"] = doc["meta"]["command"].replace(str(whole), str(stopped))
    stopped.write_text(json.dumps(doc))
    # The same arguments in another order go on as well.
    assert main(["--results", str(stopped), "--resume", *reversed_pairs(TINY)]) == 0
    resumed = json.loads(stopped.read_text())
    assert len(resumed["runs"]) == total
    assert resumed["meta"]["partial"] is False
    assert "--resume" not in resumed["meta"]["command"]
    assert _outcomes(stopped) == _outcomes(whole)


def test_resume_refuses_results_another_command_or_other_code_made(tmp_path: Path) -> None:
    saved = tmp_path / "runs.json"
    assert main([*TINY, "--results", str(saved)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["runs.json"]  # written aside, renamed over
    with pytest.raises(SystemExit, match=r"--resume: .* was made by"):
        main([*TINY, "--days", "0.1", "--results", str(saved), "--resume"])
    doc = json.loads(saved.read_text())
    assert doc["meta"]["code"] == code_fingerprint()
    doc["meta"]["code"] = "0123456789abcdef"
    saved.write_text(json.dumps(doc))
    # Finished: resuming runs nothing and leaves the file as its code wrote it.
    assert main([*TINY, "--results", str(saved), "--resume"]) == 0
    assert json.loads(saved.read_text())["meta"]["code"] == "0123456789abcdef"
    doc["runs"] = doc["runs"][:3]
    saved.write_text(json.dumps(doc))
    with pytest.raises(SystemExit, match=r"--resume: .* simulated by other code"):
        main([*TINY, "--results", str(saved), "--resume"])


def test_more_baselines_in_one_market_are_reported_with_the_main_run(tmp_path: Path) -> None:
    main_run, more = tmp_path / "main.json", tmp_path / "more.json"
    assert main([*TINY, "--price-first", "25", "--results", str(main_run)]) == 0
    extra = ["--price-first", "25", "--markets", "pessimistic"]
    assert (
        main([*TINY, *extra, "--pessimistic-strategies", "price-first+25", "--results", str(more)])
        == 0
    )
    added, _ = report.load_runs(more)
    assert {(r.market, r.strategy) for r in added} == {("pessimistic", "price-first+25")}
    out = tmp_path / "bench.md"
    assert main([*TINY, "--from-results", str(main_run), str(more), "--out", str(out)]) == 0
    text = out.read_text()
    pessimistic = text[text.index("### Pessimistic spot market, held-out") :]
    assert "| price-first+25 |" in pessimistic.split("###")[1]
    assert "` and `" in text  # both commands named
    (within,) = [line for line in text.splitlines() if "Among the baselines measured" in line]
    assert "price-first+25" in within.split("; over it")[0]  # measured there now
    with pytest.raises(SystemExit, match="repeats runs of another file"):
        main([*TINY, "--from-results", str(main_run), str(main_run)])
    # Rows for both markets of one strategy alone: --only.
    only = tmp_path / "only.json"
    assert (
        main([*TINY, "--price-first", "50", "--only", "price-first+50", "--results", str(only)])
        == 0
    )
    alone, _ = report.load_runs(only)
    assert {r.strategy for r in alone} == {"price-first+50"}
    with pytest.raises(SystemExit, match=r"--only: price-first\+75 not in this sweep"):
        main([*TINY, "--only", "price-first+75"])


def test_training_and_held_out_seeds_take_turns() -> None:
    assert _alternate([1, 2, 3], [4, 5]) == [1, 4, 2, 5, 3]
    assert _alternate([], [4]) == [4]


# --- the reclaim prior ----------------------------------------------------------------------------


def test_the_reclaim_prior_weight_reaches_decide_and_defaults_to_the_operators() -> None:
    seen: list[float] = []

    def recording(raw: dict[str, Any], world: World, memory: Memory, now: datetime) -> Outcome:
        seen.append(world.settings.reclaim_prior.weight_hours)
        return decide(raw, world, memory, now)

    lighter = TidalStrategy("tidal", decide=recording, reclaim_prior_hours=24.0)
    simulate.run(_scenario((4.0,) * 2), lighter)
    assert seen
    assert set(seen) == {24.0}
    made = baselines.make("spotpreferred+0", reclaim_prior_hours=12.0)
    assert isinstance(made, TidalStrategy)
    assert made.settings.reclaim_prior.weight_hours == 12.0
    default = baselines.make("tidal")
    assert isinstance(default, TidalStrategy)
    assert default.settings.reclaim_prior == DEFAULT_PRIOR
    quick = baselines.make("tidal@0.03", detection_seconds=5.0, notice_seconds=120.0)
    assert isinstance(quick, TidalStrategy)
    assert quick.settings.reclaim_prior.detection_seconds == 5.0
    assert quick.settings.reclaim_prior.notice_seconds == 120.0
