"""The Managed engines' default images are exact released versions, listed with their source.

`tests/unit/data/engine_image_releases.yaml` lists the tags known to be released and where that
was read; a default that is not there (a typo, `latest`, a floating `pg17`) or that is marked
superseded (a known vulnerability) fails here. Whether the versions are the ones the e2e suite's
servers run is checked there (`tests/e2e/test_qdrant_engine.py`, `test_vector_collection.py`),
since it needs the servers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidal.api.collection import VectorEngineType, default_vector_engine_image

RELEASES = Path(__file__).parent / "data" / "engine_image_releases.yaml"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "vectorcollection.md"
# An exact version: v1.18.3 / v1.18.3-unprivileged (Qdrant), 0.8.2-pg17 (pgvector on PG 17).
EXACT: dict[VectorEngineType, re.Pattern[str]] = {
    VectorEngineType.Qdrant: re.compile(r"^v(?P<version>\d+\.\d+\.\d+)(-unprivileged)?$"),
    VectorEngineType.PGVector: re.compile(r"^(?P<version>\d+\.\d+\.\d+)-pg(?P<major>\d+)$"),
}


def releases() -> dict[str, list[dict[str, Any]]]:
    loaded = yaml.safe_load(RELEASES.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.parametrize("engine", list(VectorEngineType))
def test_the_default_image_is_an_exact_released_version_with_a_source(
    engine: VectorEngineType,
) -> None:
    repository, _, tag = default_vector_engine_image(engine).rpartition(":")
    match = EXACT[engine].match(tag)
    assert match, f"{repository}:{tag} is not an exact version tag"
    (entry,) = [e for e in releases().get(repository, []) if e["tag"] == tag]
    assert entry["version"] == match["version"]
    assert entry["source"]
    assert entry["checked"]
    assert "superseded" not in entry, f"{repository}:{tag}: {entry.get('superseded')}"


def test_every_listed_release_says_where_it_was_read() -> None:
    for repository, entries in releases().items():
        for entry in entries:
            assert {"tag", "version", "source", "checked"} <= entry.keys(), (repository, entry)
            assert str(entry["version"]) in entry["tag"]


@pytest.mark.parametrize("engine", list(VectorEngineType))
def test_the_docs_name_the_default_images(engine: VectorEngineType) -> None:
    assert f"`{default_vector_engine_image(engine)}`" in DOCS.read_text()
