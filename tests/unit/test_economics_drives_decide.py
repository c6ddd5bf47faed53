"""The placement-economics benchmark runs the operator's own reconcile, not a copy of its glue.

Each step, the Deployment sizes the simulated ReplicaSets are asked for must be what
`tidal.reconcile.endpoint.decide` returned for the endpoint and world the strategy observed (or,
for a Deployment it did not re-apply, what that Deployment had), and the endpoint it observes
next must be the one the controller's patches leave on the API server. A benchmark that plans
or hands replicas over by itself, or feeds `decide` something the controller would not, fails
here.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from bench.economics import simulate, traces
from bench.economics.simulate import Deployment, EndpointView, TidalStrategy, merge_patch
from bench.economics.traces import NodeSpec, Pattern, Scenario, SpotEvent, Workload

from tidal.api.endpoint import CapacityPolicy
from tidal.api.labels import LABEL_CAPACITY_TYPE, LABEL_ENDPOINT, SPOT_LOST_SINCE
from tidal.placement.model import FleetSnapshot
from tidal.reconcile.endpoint import Memory, Outcome, World, decide

L40S = "NVIDIA-L40S"
STEP = 60
# 4 s requests, 16 in flight per replica at target: 1 to 4 replicas as the rate moves.
WORKLOAD = Workload(
    name="w",
    pattern=Pattern.STEADY,
    product=L40S,
    gpus=1,
    regions=("us-east-1",),
    base_rps=10.0,
    peak_rps=10.0,
    latency_seconds=4.0,
    cold_start_seconds=120,
    min_replicas=1,
    max_replicas=4,
    weights_gib=16,
)
RATES = (4.0, 4.0, 10.0, 14.0, 14.0, 14.0, 6.0, 6.0, 6.0, 6.0, 12.0, 12.0, 12.0, 12.0)
# The only spot node goes at 150 s (spot is lost: the replicas move to reserved) and is back
# at 330 s: the return hands them back make before break.
EVENTS = (SpotEvent(150.0, "spot-0", reclaim=True), SpotEvent(330.0, "spot-0", reclaim=False))


def scenario() -> Scenario:
    steps = len(RATES)
    return Scenario(
        seed=0,
        step_seconds=STEP,
        warmup_steps=0,
        measured_steps=steps,
        start=traces.EPOCH,
        workloads=(WORKLOAD,),
        nodes=(
            NodeSpec("spot-0", "us-east-1", "us-east-1a", L40S, spot=True),
            NodeSpec("reserved-0", "us-east-1", "us-east-1a", L40S, spot=False),
        ),
        rates={"w": RATES},
        utilization_noise={"w": (0.0,) * steps},
        spot_price_multiplier={"us-east-1": (1.0,) * steps},
        events=EVENTS,
    )


@dataclasses.dataclass(frozen=True)
class Call:
    raw: dict[str, Any]
    world: World
    memory: Memory
    now: datetime
    outcome: Outcome


@dataclasses.dataclass(frozen=True)
class Step:
    views: dict[str, EndpointView]
    asked: dict[str, dict[str, Deployment]]


class Recording(TidalStrategy):
    """Tidal's strategy, with every `decide` call and every step's orders recorded."""

    def __init__(self) -> None:
        super().__init__("tidal", CapacityPolicy.SpotPreferred, 60, decide=self._record)
        self.calls: list[Call] = []
        self.steps: list[Step] = []

    def _record(self, raw: dict[str, Any], world: World, memory: Memory, now: datetime) -> Outcome:
        outcome = decide(raw, world, memory, now)
        self.calls.append(Call(copy.deepcopy(raw), world, memory, now, outcome))
        return outcome

    def control(
        self, now: datetime, fleet: FleetSnapshot | None, endpoints: Mapping[str, EndpointView]
    ) -> dict[str, dict[str, Deployment]]:
        asked = super().control(now, fleet, endpoints)
        self.steps.append(Step(dict(endpoints), asked))
        return asked


@pytest.fixture(scope="module")
def recorded() -> Recording:
    strategy = Recording()
    simulate.run(scenario(), strategy)
    return strategy


def test_every_step_asks_each_deployment_for_what_decide_returned(recorded: Recording) -> None:
    assert len(recorded.calls) == len(recorded.steps) == len(RATES)
    applied: dict[str, int] = {}
    kept_from_before = 0
    for call, step in zip(recorded.calls, recorded.steps, strict=True):
        # The same inputs give the same Outcome: it is the operator's decision.
        assert decide(call.raw, call.world, call.memory, call.now) == call.outcome
        fresh = {
            child["metadata"]["labels"][LABEL_CAPACITY_TYPE]: child["spec"]["replicas"]
            for child in call.outcome.children
            if child["kind"] == "Deployment"
        }
        kept_from_before += bool(applied.keys() - fresh.keys())
        applied.update(fresh)
        assert {group: d.replicas for group, d in step.asked["w"].items()} == applied
    # The run re-applied only what changed: some steps asked a Deployment for what it had.
    assert kept_from_before


def test_every_step_observes_what_the_controller_would(recorded: Recording) -> None:
    previous: Call | None = None
    children: dict[str, dict[str, Any]] = {}
    for call, step in zip(recorded.calls, recorded.steps, strict=True):
        view = step.views["w"]
        world = call.world
        assert world.sample_history
        assert not world.force_apply
        # The endpoint as the API server holds it after the previous Outcome's patches.
        if previous is not None:
            raw = previous.raw
            raw = merge_patch(
                raw, {"metadata": {"annotations": dict(previous.outcome.annotations)}}
            )
            if previous.outcome.status is not None:
                raw = merge_patch(raw, {"status": dict(previous.outcome.status)})
            assert call.raw == raw
            assert call.memory == previous.outcome.memory
        # The children as last applied, the live pods, and the gateway's newest load.
        assert {c["metadata"]["name"]: c for c in world.inputs.deployments} == children
        pods = world.inputs.pods
        assert sorted(p["metadata"]["name"] for p in pods) == sorted(p.name for p in view.pods)
        assert all(p["metadata"]["labels"][LABEL_ENDPOINT] == "w" for p in pods)
        assert world.load is not None
        assert world.load.samples[-1].time == call.now
        assert world.load.samples[-1].demand == view.demand > 0
        assert world.load.last_request_time == call.now
        # Scaling through `decide` gives the count every strategy shares.
        assert call.outcome.placement is not None
        assert call.outcome.placement.desired == view.desired
        for child in call.outcome.children:
            if child["kind"] == "Deployment":
                children[child["metadata"]["name"]] = child
        previous = call


def test_the_scenario_covers_a_spot_loss_episode_and_scaling(recorded: Recording) -> None:
    # The episode is written by one Outcome and read back from the annotation by the next.
    lost = [c for c in recorded.calls if SPOT_LOST_SINCE in c.raw["metadata"]["annotations"]]
    assert lost
    desired = {s.views["w"].desired for s in recorded.steps}
    assert len(desired) > 1
    groups = {g for s in recorded.steps for g, d in s.asked["w"].items() if d.replicas}
    assert groups == {"spot", "reserved"}


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        # RFC 7386, appendix A.
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({"a": "foo"}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_patches_merge_as_the_api_server_merges_them(
    target: dict[str, Any], patch: dict[str, Any], result: dict[str, Any]
) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == result
    assert target == before


def test_the_benchmark_imports_no_controller_runtime_or_planner_glue() -> None:
    package = Path(simulate.__file__).parent
    for path in package.glob("*.py"):
        modules, names = _imports(path)
        # The one runtime module allowed: the reclaim ledger the controller feeds and reads
        # around `decide` (plain state, no Kopf), so Tidal's rows see what the operator sees.
        glue = {m for m in modules if m.startswith(("tidal.controllers", "tidal.runtime"))}
        assert not glue - {"tidal.runtime.reclaims"}
        if path.name == "simulate.py":
            assert "tidal.placement.history" not in modules
            assert not names & {"plan", "handover", "history"}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    modules: set[str] = set()
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            modules.add(node.module)
            names.update(alias.name for alias in node.names)
    return modules, names
