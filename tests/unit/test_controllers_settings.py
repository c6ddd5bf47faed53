"""Operator settings: environment knobs and Kopf configuration."""

from __future__ import annotations

import kopf
import pytest

from tidal.controllers.settings import configure, reconcile_interval_seconds


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
