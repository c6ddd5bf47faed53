"""Simulated GPUs: scenario curves (deterministic per seed), overrides, and the backend."""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tidal.agent.simulation import (
    DEFAULT_SCENARIO,
    Bursty,
    Diurnal,
    Scenario,
    SimulatedBackend,
    Steady,
    backend_for_node,
    curve_value,
    load_scenario,
    parse_override,
)
from tidal.api.labels import SIMULATED_GPU_UTILIZATION
from tidal.clients.nvml import PodRef
from tidal.devcluster import fleet

# --- curves -----------------------------------------------------------------------------------


def test_steady_is_constant() -> None:
    curve = Steady(kind="steady", percent=42)

    assert {curve_value(curve, t, 0, "n") for t in (0, 1e3, 1e9)} == {42.0}


def test_diurnal_runs_from_its_minimum_to_its_maximum_over_the_period() -> None:
    curve = Diurnal(
        kind="diurnal", min_percent=20, max_percent=80, period_seconds=100, phase_seconds=0
    )

    assert curve_value(curve, 0, 0, "n") == pytest.approx(20)
    assert curve_value(curve, 25, 0, "n") == pytest.approx(50)
    assert curve_value(curve, 50, 0, "n") == pytest.approx(80)
    assert curve_value(curve, 100, 0, "n") == pytest.approx(20)


def test_diurnal_without_a_phase_differs_per_key_but_not_per_call() -> None:
    curve = Diurnal(kind="diurnal", min_percent=0, max_percent=100, period_seconds=1000)

    a = [curve_value(curve, t, 7, "node-a") for t in range(0, 1000, 50)]
    b = [curve_value(curve, t, 7, "node-b") for t in range(0, 1000, 50)]

    assert a == [curve_value(curve, t, 7, "node-a") for t in range(0, 1000, 50)]
    assert a != b
    assert min(a) < 5
    assert max(a) > 95


def test_bursty_is_deterministic_per_seed_and_bursts_at_about_the_probability() -> None:
    curve = Bursty(
        kind="bursty", base_percent=10, burst_percent=90, burst_probability=0.25, burst_seconds=10
    )
    slots = [curve_value(curve, 10.0 * s, 1, "n") for s in range(2000)]

    assert slots == [curve_value(curve, 10.0 * s, 1, "n") for s in range(2000)]
    assert set(slots) == {10.0, 90.0}
    assert 0.2 < slots.count(90.0) / len(slots) < 0.3
    other_seed = [curve_value(curve, 10.0 * s, 2, "n") for s in range(2000)]
    assert other_seed != slots


def test_bursty_holds_its_value_within_a_slot() -> None:
    curve = Bursty(kind="bursty", burst_probability=0.5, burst_seconds=30)

    for slot in range(50):
        start = 30.0 * slot
        values = {curve_value(curve, start + dt, 3, "n") for dt in (0, 10, 29.9)}
        assert len(values) == 1


def test_noise_is_bounded_and_deterministic() -> None:
    curve = Steady(kind="steady", percent=50, noise_percent=5)
    values = [curve_value(curve, float(t), 9, "n") for t in range(500)]

    assert all(45 <= v <= 55 for v in values)
    assert len(set(values)) > 100
    assert values == [curve_value(curve, float(t), 9, "n") for t in range(500)]


CURVES = st.one_of(
    st.builds(
        Steady,
        kind=st.just("steady"),
        percent=st.floats(0, 100),
        noise_percent=st.floats(0, 50),
    ),
    st.builds(
        Diurnal,
        kind=st.just("diurnal"),
        min_percent=st.floats(0, 100),
        max_percent=st.floats(0, 100),
        period_seconds=st.floats(1, 1e6),
        noise_percent=st.floats(0, 50),
    ),
    st.builds(
        Bursty,
        kind=st.just("bursty"),
        base_percent=st.floats(0, 100),
        burst_percent=st.floats(0, 100),
        burst_probability=st.floats(0, 1),
        burst_seconds=st.floats(0.5, 1e4),
    ),
)


@given(curve=CURVES, now=st.floats(0, 4e9), seed=st.integers(), key=st.text(max_size=20))
def test_every_curve_stays_within_0_and_100(
    curve: Steady | Diurnal | Bursty, now: float, seed: int, key: str
) -> None:
    value = curve_value(curve, now, seed, key)

    assert 0.0 <= value <= 100.0
    assert not math.isnan(value)


# --- scenarios --------------------------------------------------------------------------------


def test_the_default_scenario_loads_and_covers_the_default_fleet() -> None:
    scenario = load_scenario()
    nodes = fleet.render_nodes(fleet.load(fleet.DEFAULT_FLEET))
    gpu_nodes = [
        n["metadata"]["name"] for n in nodes if "nvidia.com/gpu" in n["status"]["capacity"]
    ]

    assert load_scenario(DEFAULT_SCENARIO) == scenario
    assert gpu_nodes
    assert all(
        any(fnmatch.fnmatchcase(n, rule.match) for rule in scenario.nodes) for n in gpu_nodes
    ), "every GPU node of the default fleet has its own curve"


def test_the_default_scenario_keeps_nodes_under_the_default_utilization_limit() -> None:
    scenario = load_scenario()
    for name in ("h100-spot-eu-west-1-0", "h100-reserved-us-east-1-1", "l4-spot-eu-west-1-0"):
        backend = SimulatedBackend(name, scenario)
        for t in range(0, 3600, 7):
            gpus = backend.read(float(t)).gpus
            mean = sum(g.utilization_percent or 0 for g in gpus) / len(gpus)
            assert mean < 85, (name, t)


def test_first_matching_rule_wins_and_defaults_apply_otherwise() -> None:
    scenario = Scenario.model_validate(
        {
            "nodes": [
                {"match": "h100-spot-*", "curve": {"kind": "steady", "percent": 90}},
                {"match": "h100-*", "curve": {"kind": "steady", "percent": 10}},
            ],
            "pods": [
                {"match": "prod/llama-*", "curve": {"kind": "steady", "percent": 70}},
                {"match": "llama-*", "curve": {"kind": "steady", "percent": 20}},
            ],
        }
    )

    assert scenario.node_curve("h100-spot-x") == Steady(kind="steady", percent=90)
    assert scenario.node_curve("h100-reserved-x") == Steady(kind="steady", percent=10)
    assert scenario.node_curve("l4-x") == scenario.defaults.node
    assert scenario.pod_curve("prod", "llama-1") == Steady(kind="steady", percent=70)
    assert scenario.pod_curve("dev", "llama-1") == Steady(kind="steady", percent=20)
    assert scenario.pod_curve("dev", "other") == scenario.defaults.pod


@pytest.mark.parametrize(
    "raw",
    [
        {"nodes": [{"match": "x", "curve": {"kind": "sawtooth"}}]},
        {"nodes": [{"match": "x", "curve": {"kind": "steady", "percent": 101}}]},
        {"defaults": {"pod": {"kind": "bursty", "burstProbability": 1.5}}},
        {"defaults": {"pod": {"kind": "diurnal", "periodSeconds": 0}}},
        {"nodes": [{"match": "", "curve": {"kind": "steady"}}]},
        {"seed": 1, "unknownField": True},
    ],
)
def test_invalid_scenarios_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Scenario.model_validate(raw)


def test_an_empty_scenario_file_means_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")

    assert load_scenario(path) == Scenario()


# --- overrides --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("95", 95.0), (" 0 ", 0.0), ("12.5%", 12.5), ("150", 100.0), ("-3", 0.0)],
)
def test_override_values_are_read_and_clamped(value: str, expected: float) -> None:
    assert parse_override({SIMULATED_GPU_UTILIZATION: value}) == expected


@pytest.mark.parametrize("annotations", [None, {}, {SIMULATED_GPU_UTILIZATION: "hot"}, {"x": "95"}])
def test_absent_or_unreadable_overrides_are_ignored(annotations: dict[str, str] | None) -> None:
    assert parse_override(annotations) is None


def test_nan_is_not_an_override() -> None:
    assert parse_override({SIMULATED_GPU_UTILIZATION: "nan"}) is None


# --- the backend ------------------------------------------------------------------------------

QUIET = Scenario.model_validate(
    {
        "defaults": {
            "node": {"kind": "steady", "percent": 5, "memoryPercent": 0},
            "pod": {"kind": "steady", "percent": 40, "memoryPercent": 50},
        },
        "pods": [{"match": "batch-*", "curve": {"kind": "steady", "percent": 80}}],
    }
)


def _pod(name: str, gpus: int, created: str, **annotations: str) -> PodRef:
    return PodRef(
        uid=f"uid-{name}",
        namespace="team",
        name=name,
        gpus=gpus,
        created=created,
        annotations=annotations,
    )


def test_idle_gpus_follow_the_node_curve() -> None:
    reading = SimulatedBackend("n", QUIET, gpu_count=4, memory_total_mib=1000).read(0.0)

    assert reading.source == "simulated"
    assert [g.utilization_percent for g in reading.gpus] == [5.0] * 4
    assert [g.memory_used_mib for g in reading.gpus] == [0] * 4
    assert reading.processes == ()


def test_gpu_pods_get_consecutive_gpus_in_creation_order_and_their_curves() -> None:
    backend = SimulatedBackend("n", QUIET, gpu_count=4, memory_total_mib=1000)
    pods = [
        _pod("llama-b", 1, "2026-01-01T00:00:02Z"),
        _pod("batch-a", 2, "2026-01-01T00:00:01Z"),
        _pod("cpu-only", 0, "2026-01-01T00:00:00Z"),
    ]

    reading = backend.read(0.0, pods)

    by_pod: dict[str, list[int]] = {}
    for proc in reading.processes:
        by_pod.setdefault(str(proc.pod_uid), []).append(proc.gpu_index)
    assert by_pod == {"uid-batch-a": [0, 1], "uid-llama-b": [2]}
    assert [g.utilization_percent for g in reading.gpus] == [80.0, 80.0, 40.0, 5.0]
    # The batch pod's curve gives no memoryPercent: memory follows its utilization.
    assert [g.memory_used_mib for g in reading.gpus] == [800, 800, 500, 0]
    assert all(g.process_samples for g in reading.gpus)


def test_a_node_override_makes_every_gpu_and_pod_hot() -> None:
    backend = SimulatedBackend("n", QUIET, gpu_count=2)
    backend.set_override(95)

    reading = backend.read(0.0, [_pod("llama-a", 1, "1")])

    assert [g.utilization_percent for g in reading.gpus] == [95.0, 95.0]
    assert [p.utilization_percent for p in reading.processes] == [95.0]


def test_a_pod_override_wins_over_its_node_override() -> None:
    backend = SimulatedBackend("n", QUIET, gpu_count=2)
    backend.set_override(95)
    pod = _pod("llama-a", 1, "1", **{SIMULATED_GPU_UTILIZATION: "10"})

    reading = backend.read(0.0, [pod])

    assert [g.utilization_percent for g in reading.gpus] == [10.0, 95.0]


def test_removing_the_override_returns_to_the_scenario() -> None:
    backend = SimulatedBackend("n", QUIET, gpu_count=1)
    backend.set_override(0)
    assert backend.read(0.0).gpus[0].utilization_percent == 0.0

    backend.set_override(None)

    assert backend.read(0.0).gpus[0].utilization_percent == 5.0


def test_pods_beyond_the_node_share_gpus_without_exceeding_100() -> None:
    backend = SimulatedBackend("n", QUIET, gpu_count=1, memory_total_mib=1000)

    reading = backend.read(0.0, [_pod("batch-1", 1, "1"), _pod("batch-2", 1, "2")])

    assert reading.gpus[0].utilization_percent == 100.0
    assert reading.gpus[0].memory_used_mib == 1000


def test_readings_are_a_pure_function_of_time() -> None:
    scenario = load_scenario()
    one = SimulatedBackend("h100-spot-eu-west-1-0", scenario)
    two = SimulatedBackend("h100-spot-eu-west-1-0", scenario)
    pods = [_pod("llama-a", 2, "1")]

    assert [one.read(float(t), pods) for t in range(0, 600, 13)] == [
        two.read(float(t), pods) for t in range(0, 600, 13)
    ]


def test_uuids_are_stable_and_distinct() -> None:
    a = SimulatedBackend("node-a", QUIET, gpu_count=2).read(0.0)
    again = SimulatedBackend("node-a", QUIET, gpu_count=2).read(99.0)
    b = SimulatedBackend("node-b", QUIET, gpu_count=2).read(0.0)

    uuids = [g.uuid for g in a.gpus]
    assert uuids == [g.uuid for g in again.gpus]
    assert len(set(uuids + [g.uuid for g in b.gpus])) == 4
    assert all(str(u).startswith("GPU-") for u in uuids)


def test_power_and_temperature_rise_with_utilization() -> None:
    cold = SimulatedBackend("n", QUIET, gpu_count=1)
    hot = SimulatedBackend("n", QUIET, gpu_count=1)
    hot.set_override(100)

    (c,), (h,) = cold.read(0.0).gpus, hot.read(0.0).gpus

    assert (c.power_watts or 0) < (h.power_watts or 0) <= 700
    assert (c.temperature_c or 0) < (h.temperature_c or 0)


def test_the_backend_takes_its_shape_and_override_from_the_node() -> None:
    (node,) = [
        n
        for n in fleet.render_nodes(fleet.load(fleet.DEFAULT_FLEET))
        if n["metadata"]["name"] == "l4-spot-eu-west-1-0"
    ]
    node["metadata"]["annotations"][SIMULATED_GPU_UTILIZATION] = "77"

    backend = backend_for_node(node, QUIET)
    reading = backend.read(0.0)

    assert backend.node == "l4-spot-eu-west-1-0"
    assert backend.override == 77.0
    assert len(reading.gpus) == 4
    assert {g.memory_total_mib for g in reading.gpus} == {23034}
    assert {g.name for g in reading.gpus} == {"NVIDIA L4"}


def test_a_node_without_gpu_labels_still_gets_a_plausible_shape() -> None:
    backend = backend_for_node({"metadata": {"name": "bare"}}, QUIET)

    assert backend.gpu_count == 1
    assert backend.read(0.0).gpus[0].memory_total_mib == 81559
