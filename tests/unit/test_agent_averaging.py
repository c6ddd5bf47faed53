"""The averaging window: which readings count, what is averaged and what is the newest value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tidal.agent.averaging import Window
from tidal.api.telemetry import GpuTelemetry, parse
from tidal.clients.nvml import GpuReading, PodRef, ProcessReading, Reading

POD = PodRef(uid="uid-a", namespace="team", name="llama-0", gpus=1)
PODS = {POD.uid: POD}


def _reading(
    utilization: float | None,
    *,
    memory: int = 1000,
    power: float | None = 200.0,
    temperature: int = 50,
    pod_util: float | None = None,
) -> Reading:
    gpu = GpuReading(
        index=0,
        uuid="GPU-0",
        name="NVIDIA L4",
        utilization_percent=utilization,
        memory_used_mib=memory,
        memory_total_mib=23034,
        power_watts=power,
        temperature_c=temperature,
        mig_mode=False,
        process_samples=True,
    )
    procs = () if pod_util is None else (ProcessReading(1, 0, 500, pod_util, POD.uid),)
    return Reading(source="nvml", gpus=(gpu,), processes=procs, driver_version="1")


def _doc(window: Window, now: float) -> GpuTelemetry:
    summary = window.summary(now, PODS)
    assert summary is not None
    return summary.document


def test_an_empty_window_has_no_document() -> None:
    assert Window(10).summary(0.0, {}) is None


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Window(0)


def test_utilization_and_power_are_window_means() -> None:
    window = Window(10)
    for t, util, power in [(0, 10, 100.0), (2, 20, 200.0), (4, 60, 300.0)]:
        window.add(float(t), _reading(util, power=power))

    (gpu,) = _doc(window, 4.0).gpus

    assert gpu.utilization_percent == 30.0
    assert gpu.power_watts == 200.0


def test_memory_and_temperature_are_the_newest_values() -> None:
    window = Window(10)
    window.add(0.0, _reading(10, memory=9000, temperature=80))
    window.add(1.0, _reading(10, memory=1000, temperature=40))

    (gpu,) = _doc(window, 1.0).gpus

    assert gpu.memory_used_mib == 1000
    assert gpu.temperature_c == 40


def test_readings_older_than_the_window_drop_out() -> None:
    window = Window(10)
    window.add(0.0, _reading(100))
    window.add(5.0, _reading(0))

    assert _doc(window, 5.0).gpus[0].utilization_percent == 50.0
    assert _doc(window, 10.0).gpus[0].utilization_percent == 0.0
    assert len(window) == 1


def test_unknown_values_do_not_drag_the_mean_to_zero() -> None:
    window = Window(10)
    window.add(0.0, _reading(40))
    window.add(1.0, _reading(None, power=None))

    (gpu,) = _doc(window, 1.0).gpus

    assert gpu.utilization_percent == 40.0
    assert gpu.power_watts == 200.0


def test_all_unknown_stays_unknown() -> None:
    window = Window(10)
    window.add(0.0, _reading(None, power=None))

    (gpu,) = _doc(window, 0.0).gpus

    assert gpu.utilization_percent is None
    assert gpu.power_watts is None


def test_pod_utilization_is_averaged_over_the_readings_it_appears_in() -> None:
    window = Window(10)
    window.add(0.0, _reading(50, pod_util=20))
    window.add(1.0, _reading(50))  # the pod had no process in this reading
    window.add(2.0, _reading(50, pod_util=40))

    (pod,) = _doc(window, 2.0).pods

    assert pod.utilization_percent == 30.0
    assert pod.name == "llama-0"


def test_a_pod_gone_from_the_newest_reading_is_dropped_at_once() -> None:
    window = Window(10)
    window.add(0.0, _reading(50, pod_util=20))
    window.add(1.0, _reading(50))

    assert _doc(window, 1.0).pods == []


def test_an_unavailable_newest_reading_makes_an_unavailable_document() -> None:
    window = Window(10)
    window.add(0.0, _reading(50, pod_util=20))
    window.add(1.0, Reading(source="unavailable", error="NVML unavailable: GPU is lost"))

    doc = _doc(window, 1.0)

    assert doc.source == "unavailable"
    assert doc.error == "NVML unavailable: GPU is lost"
    assert doc.gpus == []
    assert doc.pods == []


def test_after_recovery_only_available_readings_are_averaged() -> None:
    window = Window(10)
    window.add(0.0, Reading(source="unavailable", error="x"))
    window.add(1.0, _reading(70))

    doc = _doc(window, 1.0)

    assert doc.source == "nvml"
    assert doc.gpus[0].utilization_percent == 70.0


def test_the_document_carries_time_window_source_and_driver() -> None:
    window = Window(10)
    window.add(1_700_000_000.7, _reading(10))

    doc = _doc(window, 1_700_000_000.7)

    assert doc.time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert doc.window_seconds == 10
    assert doc.source == "nvml"
    assert doc.driver_version == "1"


def test_the_document_round_trips_through_the_annotation() -> None:
    window = Window(10)
    window.add(1_700_000_000.0, _reading(33, pod_util=12))
    doc = _doc(window, 1_700_000_000.0)

    parsed = parse(doc.to_annotation(), now=datetime(2023, 11, 14, 22, 13, 30, tzinfo=UTC))

    assert parsed == doc


def test_summary_keeps_the_nvml_names_and_counts_unattributed_processes() -> None:
    window = Window(10)
    stranger = ProcessReading(9, 0, 10, 5.0, "uid-nobody")
    base = _reading(10)
    window.add(0.0, Reading(source="nvml", gpus=base.gpus, processes=(stranger,)))

    summary = window.summary(0.0, PODS)

    assert summary is not None
    assert summary.model_names == {0: "NVIDIA L4"}
    assert summary.unattributed_processes == 1
    assert summary.readings == 1
