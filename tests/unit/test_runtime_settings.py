"""Operator settings: environment knobs and Kopf configuration."""

from __future__ import annotations

import kopf
import pytest

from tidal.errors import PermanentError
from tidal.placement.budget import DEFAULT_PRIOR, ReclaimPrior
from tidal.placement.model import SpotHealth
from tidal.placement.planner import SPOT_PENDING_SECONDS
from tidal.reconcile.observation import SIGNAL_ANNOTATIONS, STATE_ANNOTATIONS
from tidal.runtime.settings import (
    configure,
    drift_interval_seconds,
    gateway_admin_port,
    gateway_selector,
    gateway_urls,
    metrics_port,
    operator_namespace,
    pod_monitor_labels,
    pod_monitors,
    pricing_refresh_seconds,
    reclaim_prior,
    reconcile_interval_seconds,
    reconcile_workers,
    slo_interval_seconds,
    spot_pending_seconds,
    spot_return_after_seconds,
    vector_slo_interval_seconds,
    vector_slo_sample,
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 15.0),
        ({"TIDAL_RECONCILE_INTERVAL_SECONDS": "5"}, 5.0),
        ({"TIDAL_RECONCILE_INTERVAL_SECONDS": "2.5"}, 2.5),
        ({"TIDAL_RECONCILE_INTERVAL_SECONDS": ""}, 15.0),
        ({"TIDAL_RECONCILE_INTERVAL_SECONDS": "soon"}, 15.0),
        ({"TIDAL_RECONCILE_INTERVAL_SECONDS": "0"}, 15.0),
        ({"TIDAL_RECONCILE_INTERVAL_SECONDS": "-3"}, 15.0),
    ],
)
def test_reconcile_interval_comes_from_the_environment(
    env: dict[str, str], expected: float
) -> None:
    assert reconcile_interval_seconds(env) == expected


@pytest.mark.parametrize(
    ("env", "drift", "workers"),
    [
        ({}, 300.0, 16),
        ({"TIDAL_DRIFT_INTERVAL_SECONDS": "60", "TIDAL_RECONCILE_WORKERS": "4"}, 60.0, 4),
        ({"TIDAL_DRIFT_INTERVAL_SECONDS": "0", "TIDAL_RECONCILE_WORKERS": "0"}, 300.0, 16),
        ({"TIDAL_DRIFT_INTERVAL_SECONDS": "x", "TIDAL_RECONCILE_WORKERS": "-2"}, 300.0, 16),
    ],
)
def test_drift_interval_and_reconcile_workers_come_from_the_environment(
    env: dict[str, str], drift: float, workers: int
) -> None:
    assert drift_interval_seconds(env) == drift
    assert reconcile_workers(env) == workers


def test_kopf_bookkeeping_lives_in_tidal_annotations() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, env={})
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "tidal.dev"
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert diffbase.prefix == "tidal.dev"
    assert diffbase.key == "last-handled-configuration"


def test_standalone_unless_peering_is_asked_for() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, env={})
    assert settings.peering.standalone is True

    settings = kopf.OperatorSettings()
    configure(settings, env={"TIDAL_PEERING": "tidal"})
    assert settings.peering.standalone is False
    assert settings.peering.name == "tidal"


def test_watches_end_on_the_server_before_the_client_gives_up() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, env={"POD_NAME": "tidal-0"})
    assert settings.watching.server_timeout is not None
    assert settings.watching.client_timeout is not None
    assert settings.watching.server_timeout < settings.watching.client_timeout
    assert settings.posting.reporting_component == "tidal"
    assert settings.posting.reporting_instance == "tidal-0"


def test_peering_replicas_get_distinct_priorities_so_exactly_one_acts() -> None:
    # Kopf pauses every peer when priorities tie; replicas share their environment.
    env = {"TIDAL_PEERING": "tidal"}
    priorities = set()
    for _ in range(5):
        settings = kopf.OperatorSettings()
        configure(settings, env)
        assert settings.peering.standalone is False
        assert settings.peering.mandatory is True
        assert settings.peering.name == "tidal"
        priorities.add(settings.peering.priority)
    assert len(priorities) == 5


def test_peering_priority_can_be_pinned() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, {"TIDAL_PEERING": "tidal", "TIDAL_PEERING_PRIORITY": "100"})
    assert settings.peering.priority == 100


def test_without_peering_the_operator_runs_standalone() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, {})
    assert settings.peering.standalone is True


@pytest.mark.parametrize(
    ("env", "pending", "return_after"),
    [
        ({}, 180.0, 300),
        ({"TIDAL_SPOT_PENDING_SECONDS": "15", "TIDAL_SPOT_RETURN_AFTER_SECONDS": "20"}, 15.0, 20),
        ({"TIDAL_SPOT_PENDING_SECONDS": "0", "TIDAL_SPOT_RETURN_AFTER_SECONDS": "-1"}, 180.0, 300),
        ({"TIDAL_SPOT_PENDING_SECONDS": "x", "TIDAL_SPOT_RETURN_AFTER_SECONDS": "inf"}, 180.0, 300),
        ({"TIDAL_SPOT_RETURN_AFTER_SECONDS": "0.4"}, 180.0, 1),
    ],
)
def test_spot_thresholds_come_from_the_environment_defaulting_to_the_planners(
    env: dict[str, str], pending: float, return_after: int
) -> None:
    assert spot_pending_seconds(env) == pending
    assert spot_return_after_seconds(env) == return_after


def test_the_defaults_are_the_planners_own() -> None:
    assert spot_pending_seconds({}) == SPOT_PENDING_SECONDS
    assert spot_return_after_seconds({}) == SpotHealth().return_after_seconds


def test_the_controllers_state_annotations_are_no_change_to_kopf() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, env={})
    storage = settings.persistence.diffbase_storage
    body = kopf.Body(
        {
            "metadata": {
                "annotations": {
                    **dict.fromkeys(STATE_ANNOTATIONS, "state"),
                    "team": "search",
                }
            },
            "spec": {"model": {"name": "m"}},
        }
    )
    essence = storage.build(body=body)
    assert essence["metadata"]["annotations"] == {"team": "search"}
    assert essence["spec"] == {"model": {"name": "m"}}


def test_service_level_and_pricing_knobs_come_from_the_environment() -> None:
    assert slo_interval_seconds({}) == 30.0
    assert slo_interval_seconds({"TIDAL_SLO_INTERVAL_SECONDS": "5"}) == 5.0
    assert slo_interval_seconds({"TIDAL_SLO_INTERVAL_SECONDS": "never"}) == 30.0
    assert pricing_refresh_seconds({}) == 60.0
    assert pricing_refresh_seconds({"TIDAL_PRICING_REFRESH_SECONDS": "3"}) == 3.0
    assert operator_namespace({}) == "tidal-system"
    assert operator_namespace({"TIDAL_NAMESPACE": "ops"}) == "ops"


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 8081), ("", 8081), ("9090", 9090), ("0", None)]
)
def test_the_metrics_port_defaults_to_8081_and_zero_turns_it_off(
    raw: str | None, expected: int | None
) -> None:
    env = {} if raw is None else {"TIDAL_METRICS_PORT": raw}
    assert metrics_port(env) == expected


@pytest.mark.parametrize("raw", ["http", "-1", "70000"])
def test_a_bad_metrics_port_stops_the_operator_naming_the_variable(raw: str) -> None:
    with pytest.raises(PermanentError, match="TIDAL_METRICS_PORT"):
        metrics_port({"TIDAL_METRICS_PORT": raw})


def test_gateway_urls_are_a_comma_list_under_either_name() -> None:
    assert gateway_urls({}) == ()
    assert gateway_urls({"TIDAL_GATEWAY_URLS": "http://a:9090/, http://b:9090"}) == (
        "http://a:9090",
        "http://b:9090",
    )
    assert gateway_urls({"TIDAL_GATEWAY_URL": "http://a:9090"}) == ("http://a:9090",)
    with pytest.raises(PermanentError, match="TIDAL_GATEWAY_URLS"):
        gateway_urls({"TIDAL_GATEWAY_URLS": "gateway:9090"})


def test_the_gateways_signals_are_no_change_to_kopf() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, env={})
    ignored = settings.persistence.diffbase_storage.ignored_fields
    paths = {tuple(field) for field in ignored if isinstance(field, tuple | list)}
    for key in SIGNAL_ANNOTATIONS:
        assert ("metadata", "annotations", key) in paths


def test_gateway_pods_can_be_found_by_label_instead() -> None:
    assert gateway_selector({}) is None
    assert gateway_selector({"TIDAL_GATEWAY_SELECTOR": "app=tidal, component=gateway"}) == {
        "app": "tidal",
        "component": "gateway",
    }
    assert gateway_admin_port({}) == 9090
    with pytest.raises(PermanentError, match="TIDAL_GATEWAY_SELECTOR"):
        gateway_selector({"TIDAL_GATEWAY_SELECTOR": "gateway"})
    with pytest.raises(PermanentError, match="TIDAL_GATEWAY_ADMIN_PORT"):
        gateway_admin_port({"TIDAL_GATEWAY_ADMIN_PORT": "admin"})


@pytest.mark.parametrize(
    ("raw", "expected"), [("", True), ("auto", True), (" AUTO ", True), ("off", False)]
)
def test_pod_monitors_are_automatic_unless_turned_off(raw: str, expected: bool) -> None:
    assert pod_monitors({"TIDAL_POD_MONITORS": raw}) is expected
    assert pod_monitors({}) is True


@pytest.mark.parametrize("raw", ["on", "true", "0", "never"])
def test_another_pod_monitors_value_stops_the_operator_naming_the_variable(raw: str) -> None:
    with pytest.raises(PermanentError, match="TIDAL_POD_MONITORS"):
        pod_monitors({"TIDAL_POD_MONITORS": raw})


def test_pod_monitor_labels_are_a_comma_list_of_label_pairs() -> None:
    assert pod_monitor_labels({}) == {}
    assert pod_monitor_labels(
        {"TIDAL_POD_MONITOR_LABELS": " release=kube-prometheus-stack , example.com/team=ml,x="}
    ) == {"release": "kube-prometheus-stack", "example.com/team": "ml", "x": ""}


@pytest.mark.parametrize(
    "raw",
    [
        "release",  # no value
        "=x",  # no key
        "bad key=x",
        "release=has space",
        "Example.com/team=x",  # a prefix is lowercase DNS
        "release=" + "x" * 64,  # values are at most 63 characters
        "-release=x",
    ],
)
def test_a_malformed_pod_monitor_label_stops_the_operator_naming_the_variable(raw: str) -> None:
    with pytest.raises(PermanentError, match="TIDAL_POD_MONITOR_LABELS"):
        pod_monitor_labels({"TIDAL_POD_MONITOR_LABELS": raw})


def test_pod_monitor_labels_may_not_replace_tidals_own() -> None:
    env = {"TIDAL_POD_MONITOR_LABELS": "tidal.dev/endpoint=x"}
    with pytest.raises(PermanentError, match=r"may not set tidal\.dev/endpoint"):
        pod_monitor_labels(env, reserved=("tidal.dev/endpoint",))


@pytest.mark.parametrize(
    ("env", "prior"),
    [
        ({}, DEFAULT_PRIOR),
        (
            {
                "TIDAL_SPOT_RECLAIMS_PER_HOUR": "0.5",
                "TIDAL_SPOT_RECLAIM_PRIOR_HOURS": "0",
                "TIDAL_SPOT_DETECTION_SECONDS": "15",
                "TIDAL_COLD_START_SECONDS": "120",
                "TIDAL_SPOT_NOTICE_SECONDS": "30",
            },
            ReclaimPrior(
                reclaims_per_hour=0.5,
                weight_hours=0,
                detection_seconds=15,
                cold_start_seconds=120,
                notice_seconds=30,
            ),
        ),
        (
            {
                "TIDAL_SPOT_RECLAIMS_PER_HOUR": "-1",
                "TIDAL_COLD_START_SECONDS": "soon",
                "TIDAL_SPOT_NOTICE_SECONDS": "-120",
            },
            DEFAULT_PRIOR,
        ),
        ({"TIDAL_SPOT_RECLAIMS_PER_HOUR": "inf"}, DEFAULT_PRIOR),
    ],
)
def test_autos_prior_comes_from_the_environment_and_falls_back_on_nonsense(
    env: dict[str, str], prior: ReclaimPrior
) -> None:
    assert reclaim_prior(env) == prior


@pytest.mark.parametrize(
    ("env", "interval", "sample"),
    [
        ({}, 300.0, 32),
        ({"TIDAL_VECTOR_SLO_INTERVAL_SECONDS": "60", "TIDAL_VECTOR_SLO_SAMPLE": "400"}, 60.0, 400),
        ({"TIDAL_VECTOR_SLO_INTERVAL_SECONDS": "0", "TIDAL_VECTOR_SLO_SAMPLE": "0"}, 300.0, 32),
        ({"TIDAL_VECTOR_SLO_INTERVAL_SECONDS": "x", "TIDAL_VECTOR_SLO_SAMPLE": "-5"}, 300.0, 32),
        ({"TIDAL_VECTOR_SLO_SAMPLE": "99999999"}, 300.0, 10_000),
    ],
)
def test_vector_slo_probe_settings(env: dict[str, str], interval: float, sample: int) -> None:
    assert vector_slo_interval_seconds(env) == interval
    assert vector_slo_sample(env) == sample
