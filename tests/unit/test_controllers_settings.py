"""Operator settings: environment knobs and Kopf configuration."""

from __future__ import annotations

import kopf
import pytest

from tidal.controllers.observation import STATE_ANNOTATIONS
from tidal.controllers.settings import (
    configure,
    reconcile_interval_seconds,
    spot_pending_seconds,
    spot_return_after_seconds,
)
from tidal.placement.model import SpotHealth
from tidal.placement.planner import SPOT_PENDING_SECONDS


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
        {  # type: ignore[arg-type]  # a plain dict is a RawBody at runtime
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
