"""The operator's /metrics: reconcile counters, per-resource SLO and cost gauges, the dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidal import metrics
from tidal.api.collection import CollectionCostStatus
from tidal.api.common import SLO_MET, Condition, ConditionStatus
from tidal.api.endpoint import EndpointCostStatus, EndpointSLOStatus
from tidal.errors import TemporaryError

DASHBOARD = Path(__file__).resolve().parents[2] / "manifests" / "grafana" / "tidal-dashboard.json"


def sample(metric: str, /, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(metric, labels)


@pytest.fixture(autouse=True)
def forget() -> Iterator[None]:
    yield
    metrics.forget_endpoint("ml", "llama")
    metrics.forget_vector_collection("ml", "docs")


def met(status: ConditionStatus) -> Condition:
    return Condition(type=SLO_MET, status=status, reason="R")


def test_a_reconcile_is_counted_and_timed_per_kind() -> None:
    before = sample("tidal_reconciles_total", kind="TestKindA") or 0.0
    with metrics.observe_reconcile("TestKindA"):
        pass
    assert sample("tidal_reconciles_total", kind="TestKindA") == before + 1
    assert sample("tidal_reconcile_duration_seconds_count", kind="TestKindA") == before + 1
    assert sample("tidal_reconcile_errors_total", kind="TestKindA", error="TemporaryError") is None


def test_a_failed_reconcile_is_counted_by_error_class_and_still_raises() -> None:
    with pytest.raises(TemporaryError), metrics.observe_reconcile("TestKindB"):
        raise TemporaryError("api server down")
    assert sample("tidal_reconcile_errors_total", kind="TestKindB", error="TemporaryError") == 1


def test_slo_gauges_mirror_status_slo_in_seconds() -> None:
    metrics.record_endpoint_slo(
        "ml",
        "llama",
        EndpointSLOStatus(
            p95_latency_ms=1234, p95_time_to_first_token_ms=87, tokens_per_second=2000.5
        ),
        met("False"),
    )
    assert sample("tidal_endpoint_p95_latency_seconds", namespace="ml", name="llama") == 1.234
    assert (
        sample("tidal_endpoint_p95_time_to_first_token_seconds", namespace="ml", name="llama")
        == 0.087
    )
    assert sample("tidal_endpoint_tokens_per_second", namespace="ml", name="llama") == 2000.5
    assert sample("tidal_endpoint_slo_met", namespace="ml", name="llama") == 0


def test_no_data_removes_the_series_instead_of_exporting_zero() -> None:
    metrics.record_endpoint_slo("ml", "llama", EndpointSLOStatus(p95_latency_ms=500), met("True"))
    assert sample("tidal_endpoint_slo_met", namespace="ml", name="llama") == 1
    metrics.record_endpoint_slo("ml", "llama", EndpointSLOStatus(), met("Unknown"))
    assert sample("tidal_endpoint_p95_latency_seconds", namespace="ml", name="llama") is None
    assert sample("tidal_endpoint_slo_met", namespace="ml", name="llama") is None


def test_cost_gauges_mirror_status_cost_with_savings_as_a_ratio() -> None:
    metrics.record_endpoint_cost(
        "ml",
        "llama",
        EndpointCostStatus(
            hourly_usd="15.15", per_million_tokens_usd="2.10", spot_savings_percent=33
        ),
    )
    assert sample("tidal_endpoint_cost_hourly_usd", namespace="ml", name="llama") == 15.15
    assert (
        sample("tidal_endpoint_cost_per_million_tokens_usd", namespace="ml", name="llama") == 2.10
    )
    assert sample("tidal_endpoint_spot_savings_ratio", namespace="ml", name="llama") == 0.33
    metrics.record_endpoint_cost("ml", "llama", EndpointCostStatus(basis="cost unknown"))
    assert sample("tidal_endpoint_cost_hourly_usd", namespace="ml", name="llama") is None


def test_forgetting_a_deleted_resource_drops_its_series_and_may_be_repeated() -> None:
    metrics.record_endpoint_cost("ml", "llama", EndpointCostStatus(hourly_usd="1.00"))
    metrics.record_vector_collection_cost("ml", "docs", CollectionCostStatus(hourly_usd="0.17"))
    assert sample("tidal_vectorcollection_cost_hourly_usd", namespace="ml", name="docs") == 0.17
    metrics.forget_endpoint("ml", "llama")
    metrics.forget_endpoint("ml", "llama")
    metrics.forget_vector_collection("ml", "docs")
    assert sample("tidal_endpoint_cost_hourly_usd", namespace="ml", name="llama") is None
    assert sample("tidal_vectorcollection_cost_hourly_usd", namespace="ml", name="docs") is None


def exported_names() -> set[str]:
    """Every series name the registry can expose, whether or not it has samples yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in metrics.REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def test_every_metric_the_dashboard_queries_is_one_the_operator_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 10
    used = {name for expr in exprs for name in re.findall(r"\btidal_[a-z0-9_]+", expr)}
    assert used <= exported_names(), used - exported_names()
    # ...and every per-resource gauge has a panel.
    gauges = {n for n in exported_names() if n.startswith(("tidal_endpoint_", "tidal_vector"))}
    assert gauges <= used, gauges - used


def test_the_dashboard_panels_have_unique_ids_and_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert dashboard["uid"] == "tidal-operator"
