"""The Qdrant driver against a real Qdrant: `make test-qdrant QDRANT_URL=http://host:6333`.

Opt-in and not part of `make test`: no Qdrant build installs from PyPI or Debian, so the build
machines cannot start one (the driver's unit tests use recorded v1.20 REST shapes instead).
Point `QDRANT_URL` (and `QDRANT_API_KEY` if set) at a disposable Qdrant >= 1.16 (collection
metadata); the test creates and deletes its own collection.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator

import pytest
from qdrant_client import QdrantClient, models

from tidal.api.collection import Metric, VectorQuantization
from tidal.clients.qdrant import QdrantEngine
from tidal.clients.vectorengine import Connection
from tidal.render.collection import EngineCollection

URL = os.environ.get("QDRANT_URL", "")
API_KEY = os.environ.get("QDRANT_API_KEY") or None

pytestmark = pytest.mark.skipif(not URL, reason="set QDRANT_URL to run against a real Qdrant")


@pytest.fixture
def name() -> Iterator[str]:
    collection = f"tidal_test_{uuid.uuid4().hex[:8]}"
    yield collection
    client = QdrantClient(url=URL, api_key=API_KEY, check_compatibility=False)
    client.delete_collection(collection)
    client.close()


def test_create_update_count_and_snapshot(name: str) -> None:
    want = EngineCollection(
        name=name,
        dimension=4,
        metric=Metric.Cosine,
        m=16,
        ef_construct=100,
        ef_search=64,
        quantization=VectorQuantization.None_,
        rescore=True,
        shards=1,
        replicas=1,
        on_disk=False,
    )
    engine = QdrantEngine(Connection(URL, api_key=API_KEY))
    assert engine.sync(want).created

    client = QdrantClient(url=URL, api_key=API_KEY, check_compatibility=False)
    client.upsert(
        name,
        points=[models.PointStruct(id=i, vector=[float(i), 1.0, 0.5, 0.25]) for i in range(1, 51)],
        wait=True,
    )
    changed = EngineCollection(
        **{**want.__dict__, "ef_search": 128, "quantization": VectorQuantization.Scalar}
    )
    state = engine.sync(changed)
    assert not state.created
    assert state.unapplied == ()
    assert state.vectors == 50
    info = client.get_collection(name)
    assert isinstance(info.config.quantization_config, models.ScalarQuantization)
    assert (info.config.metadata or {}).get("tidal_ef_search") == 128
    assert engine.sync(changed).applied == ()

    sink = io.BytesIO()
    engine.snapshot(changed, sink)
    assert len(sink.getvalue()) > 0
    assert client.list_snapshots(name) == []
    client.close()
    engine.close()
