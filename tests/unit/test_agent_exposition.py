"""The Prometheus exposition: DCGM-compatible GPU metrics and Tidal's attribution counters."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from tidal.agent.averaging import Summary
from tidal.agent.exposition import CONTENT_TYPE, NodeStats, NodeView, render
from tidal.api.telemetry import GpuSample, GpuTelemetry, PodUsage

DOC = GpuTelemetry(
    time=datetime(2026, 1, 1, tzinfo=UTC),
    source="nvml",
    gpus=[
        GpuSample(
            index=0,
            uuid="GPU-aaa",
            product="NVIDIA-H100-80GB-HBM3",
            utilization_percent=42.5,
            memory_used_mib=30000,
            memory_total_mib=81559,
            power_watts=310.5,
            temperature_c=61,
            mig_mode=False,
        ),
        GpuSample(index=1, uuid="GPU-bbb", product="NVIDIA-H100-80GB-HBM3"),
    ],
    pods=[
        PodUsage(
            namespace="team",
            name="llama-spot-x",
            uid="u",
            gpu_indexes=[0],
            memory_used_mib=30000,
            utilization_percent=40.0,
            utilization_source="process-samples",
        )
    ],
)
SUMMARY = Summary(
    document=DOC,
    model_names={0: "NVIDIA H100 80GB HBM3", 1: "NVIDIA H100 80GB HBM3"},
    unattributed_processes=2,
)
GPU0 = 'gpu="0",UUID="GPU-aaa",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-1"'


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def _stats() -> NodeStats:
    return NodeStats(
        samples=12,
        publishes={"first": 1, "heartbeat": 3},
        publishes_skipped=4,
        publish_errors=1,
        last_publish_time=1767225600.5,
    )


def test_gpu_metrics_use_dcgm_names_units_and_labels() -> None:
    lines = _lines(render([NodeView("gpu-node-1", SUMMARY, NodeStats())]))

    for expected in (
        f"DCGM_FI_DEV_GPU_UTIL{{{GPU0}}} 42.5",
        f"DCGM_FI_DEV_FB_USED{{{GPU0}}} 30000",
        f"DCGM_FI_DEV_FB_FREE{{{GPU0}}} 51559",
        f"DCGM_FI_DEV_POWER_USAGE{{{GPU0}}} 310.5",
        f"DCGM_FI_DEV_GPU_TEMP{{{GPU0}}} 61",
    ):
        assert expected in lines


def test_unknown_gpu_values_are_not_exported_as_zero() -> None:
    text = render([NodeView("gpu-node-1", SUMMARY, NodeStats())])

    assert 'gpu="1"' not in text


def test_pod_attribution_metrics() -> None:
    lines = _lines(render([NodeView("gpu-node-1", SUMMARY, NodeStats())]))
    pod = 'Hostname="gpu-node-1",namespace="team",pod="llama-spot-x"'

    assert f'tidal_agent_pod_gpu_utilization_percent{{{pod},source="process-samples"}} 40' in lines
    assert f"tidal_agent_pod_gpu_memory_used_mib{{{pod}}} 30000" in lines
    assert f"tidal_agent_pod_gpus{{{pod}}} 1" in lines
    assert 'tidal_agent_unattributed_processes{Hostname="gpu-node-1"} 2' in lines
    assert 'tidal_agent_telemetry_available{Hostname="gpu-node-1",source="nvml"} 1' in lines


def test_publisher_counters() -> None:
    lines = _lines(render([NodeView("n", None, _stats())]))

    assert lines == [
        'tidal_agent_samples_total{Hostname="n"} 12',
        'tidal_agent_publishes_total{Hostname="n",reason="first"} 1',
        'tidal_agent_publishes_total{Hostname="n",reason="heartbeat"} 3',
        'tidal_agent_publishes_skipped_total{Hostname="n"} 4',
        'tidal_agent_publish_errors_total{Hostname="n"} 1',
        'tidal_agent_last_publish_timestamp_seconds{Hostname="n"} 1767225600.5',
    ]


def test_an_unavailable_node_exports_availability_zero_and_no_gpu_metrics() -> None:
    down = Summary(
        document=GpuTelemetry(
            time=datetime(2026, 1, 1, tzinfo=UTC), source="unavailable", error="no driver"
        )
    )

    lines = _lines(render([NodeView("n", down, NodeStats())]))

    assert 'tidal_agent_telemetry_available{Hostname="n",source="unavailable"} 0' in lines
    assert not [line for line in lines if line.startswith("DCGM_")]


def test_every_family_has_help_and_type_once_even_with_many_nodes() -> None:
    text = render([NodeView(f"node-{i}", SUMMARY, _stats()) for i in range(3)])

    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE)
    helps = re.findall(r"^# HELP (\S+) ", text, flags=re.MULTILINE)
    assert len(types) == len({name for name, _ in types})
    assert [name for name, _ in types] == helps
    assert dict(types)["DCGM_FI_DEV_GPU_UTIL"] == "gauge"
    assert dict(types)["tidal_agent_publishes_total"] == "counter"
    assert all(name.endswith("_total") for name, kind in types if kind == "counter")
    assert text.count("DCGM_FI_DEV_GPU_UTIL{") == 3


def test_samples_of_one_family_are_contiguous() -> None:
    text = render([NodeView(f"node-{i}", SUMMARY, _stats()) for i in range(2)])
    names = [re.split(r"[{ ]", line, maxsplit=1)[0] for line in _lines(text)]

    seen: list[str] = []
    for name in names:
        if not seen or seen[-1] != name:
            assert name not in seen, f"{name} is split"
            seen.append(name)


@pytest.mark.parametrize(
    ("name", "escaped"),
    [('we"ird', 'we\\"ird'), ("back\\slash", "back\\\\slash"), ("new\nline", "new\\nline")],
)
def test_label_values_are_escaped(name: str, escaped: str) -> None:
    text = render([NodeView(name, None, NodeStats())])

    assert f'Hostname="{escaped}"' in text


def test_nothing_to_report_renders_nothing() -> None:
    assert render([]) == ""


def test_content_type_is_the_prometheus_text_format() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
