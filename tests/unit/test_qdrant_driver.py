"""The Qdrant driver against answers recorded from a live Qdrant 1.18.3, through the HTTP seam.

A small in-memory Qdrant (`FakeQdrant`) answers with the shapes in `data/qdrant_v1_18.json`
(captured from the server the e2e suite runs: `python -m tests.e2e.capture_qdrant_shapes`)
and records every request, so each test asserts on the requests the driver sent and on what
the driver reports, never on qdrant-client internals. The same behaviours against the real
server: tests/e2e/test_qdrant_engine.py.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client.http import models

from tidal.api.collection import Metric, VectorQuantization
from tidal.clients.qdrant import QdrantEngine, telemetry_data_bytes
from tidal.clients.vectorengine import Connection, EngineRejectedError, EngineUnavailableError
from tidal.render.collection import EngineCollection

SHAPES: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "qdrant_v1_18.json").read_text()
)
URL = "http://qdrant.search.svc:6333"


def want(**overrides: Any) -> EngineCollection:
    fields: dict[str, Any] = {
        "name": "e2e_docs",
        "dimension": 768,
        "metric": Metric.Cosine,
        "m": 16,
        "ef_construct": 100,
        "ef_search": 128,
        "quantization": VectorQuantization.Scalar,
        "rescore": True,
        "shards": 2,
        "replicas": 1,
        "on_disk": False,
    }
    fields.update(overrides)
    return EngineCollection(**fields)


class FakeQdrant:
    """Collections by name (as GET /collections/{name} results) and the requests seen."""

    def __init__(self, collections: dict[str, Any] | None = None) -> None:
        self.collections = collections or {}
        self.requests: list[tuple[str, str, Any]] = []
        self.snapshot_bytes = b"QDRANT-SNAPSHOT-CONTENT!"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        self.requests.append((request.method, path, body))
        if request.method == "GET" and path == "/":
            return httpx.Response(200, json=SHAPES["root"])
        if request.method == "GET" and path == "/telemetry":
            return httpx.Response(200, json=SHAPES["telemetry"])
        parts = path.strip("/").split("/")
        if parts[:1] != ["collections"] or len(parts) < 2:
            return httpx.Response(404, json=SHAPES["not_found"])
        name = parts[1]
        rest = parts[2:]
        if request.method == "GET" and rest == ["exists"]:
            key = "exists_true" if name in self.collections else "exists_false"
            return httpx.Response(200, json=SHAPES[key])
        if request.method == "GET" and rest == []:
            if name not in self.collections:
                return httpx.Response(404, json=SHAPES["not_found"])
            return httpx.Response(
                200, json={**SHAPES["collection_info"], "result": self.collections[name]}
            )
        if request.method == "PUT" and rest == []:
            assert isinstance(body, dict)  # the new collection's config
            self.collections[name] = self._created(body)
            return httpx.Response(200, json=SHAPES["operation_true"])
        if request.method == "PATCH" and rest == []:
            return httpx.Response(200, json=SHAPES["operation_true"])
        if request.method == "POST" and rest == ["snapshots"]:
            return httpx.Response(200, json=SHAPES["snapshot_created"])
        if request.method == "GET" and rest[:1] == ["snapshots"]:
            return httpx.Response(200, content=self.snapshot_bytes)
        if request.method == "DELETE" and rest[:1] == ["snapshots"]:
            return httpx.Response(200, json=SHAPES["operation_true"])
        return httpx.Response(404, json=SHAPES["not_found"])

    @staticmethod
    def _created(body: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = copy.deepcopy(SHAPES["collection_info"]["result"])
        info["points_count"] = 0
        info["config"]["params"]["vectors"] = body["vectors"]
        info["config"]["params"]["shard_number"] = body["shard_number"]
        info["config"]["params"]["replication_factor"] = body["replication_factor"]
        info["config"]["hnsw_config"].update(body["hnsw_config"])
        info["config"]["quantization_config"] = body.get("quantization_config")
        info["config"]["metadata"] = body["metadata"]
        return info


def engine(fake: FakeQdrant, api_key: str | None = None) -> QdrantEngine:
    return QdrantEngine(Connection(URL, api_key=api_key), transport=httpx.MockTransport(fake))


def calls(fake: FakeQdrant) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in fake.requests]


# --- the recorded shapes themselves ----------------------------------------------------------


def test_recorded_collection_info_parses_with_the_client_models() -> None:
    info = models.CollectionInfo.model_validate(SHAPES["collection_info"]["result"])
    assert isinstance(info.config.quantization_config, models.ScalarQuantization)
    assert info.points_count == 1200


def test_recorded_snapshot_description_parses_with_the_client_models() -> None:
    snapshot = models.SnapshotDescription.model_validate(SHAPES["snapshot_created"]["result"])
    assert snapshot.name.endswith(".snapshot")


# --- create ----------------------------------------------------------------------------------


def test_a_missing_collection_is_created_with_the_declared_config() -> None:
    fake = FakeQdrant()
    state = engine(fake).sync(want())

    assert state.created
    assert calls(fake) == [
        ("GET", "/collections/e2e_docs/exists"),
        ("PUT", "/collections/e2e_docs"),
        ("GET", "/collections/e2e_docs"),
        ("GET", "/telemetry"),
        ("GET", "/"),
    ]
    body = fake.requests[1][2]
    assert body["vectors"] == {"size": 768, "distance": "Cosine", "on_disk": True}
    assert body["shard_number"] == 2
    assert body["replication_factor"] == 1
    assert body["on_disk_payload"] is True
    assert body["hnsw_config"] == {"m": 16, "ef_construct": 100, "on_disk": False}
    assert body["quantization_config"] == {
        "scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}
    }
    assert body["metadata"] == {
        "tidal_ef_search": 128,
        "tidal_rescore": True,
        "tidal_oversampling": None,
    }
    assert state.location == "e2e_docs"
    assert state.vectors == 0
    assert state.health == "green"
    # Qdrant 1.18 reports no memory or disk bytes per collection; its telemetry counts data.
    assert state.memory_bytes is None
    assert state.disk_bytes is None
    assert state.engine_version == "Qdrant 1.18.3"


def test_the_telemetry_counts_vectors_and_payloads_of_the_collection() -> None:
    fake = FakeQdrant({"e2e_docs": recorded()})
    state = engine(fake).sync(want())
    assert ("GET", "/telemetry") in calls(fake)
    telemetry = [r for r in fake.requests if r[1] == "/telemetry"]
    assert telemetry
    # 1,200 recorded points x 768 float32 dimensions, no payloads.
    assert state.data_bytes == 1200 * 768 * 4


def test_a_refused_telemetry_leaves_the_data_size_unknown() -> None:
    fake = FakeQdrant({"e2e_docs": recorded()})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/telemetry":
            return httpx.Response(403, text="Forbidden")
        return fake(request)

    state = QdrantEngine(Connection(URL), transport=httpx.MockTransport(handler)).sync(want())
    assert state.data_bytes is None
    assert state.vectors == 1200


@pytest.mark.parametrize(
    "telemetry",
    [
        {},
        {"result": {"collections": {"number_of_collections": 0}}},
        {"result": {"collections": {"collections": [{"id": "other", "shards": []}]}}},
        {"result": {"collections": {"collections": [{"id": "e2e_docs"}]}}},
    ],
)
def test_telemetry_without_the_collections_shards_counts_nothing(telemetry: Any) -> None:
    assert telemetry_data_bytes(telemetry, "e2e_docs") is None


def test_telemetry_sums_every_local_shard() -> None:
    shards = [
        {"local": {"vectors_size_bytes": 100, "payloads_size_bytes": 7}},
        {"local": {"vectors_size_bytes": 50, "payloads_size_bytes": 0}},
        {"local": None, "remote": []},
    ]
    answer = {"result": {"collections": {"collections": [{"id": "c", "shards": shards}]}}}
    assert telemetry_data_bytes(answer, "c") == 157


@pytest.mark.parametrize(
    ("quantization", "expected"),
    [
        (VectorQuantization.None_, None),
        (VectorQuantization.Product, {"product": {"compression": "x16", "always_ram": True}}),
        (VectorQuantization.Binary, {"binary": {"always_ram": True}}),
    ],
)
def test_quantization_maps_to_qdrant_config(
    quantization: VectorQuantization, expected: dict[str, Any] | None
) -> None:
    fake = FakeQdrant()
    engine(fake).sync(want(quantization=quantization))
    assert fake.requests[1][2].get("quantization_config") == expected


@pytest.mark.parametrize(
    ("quantization", "rescore", "expected"),
    [
        (VectorQuantization.Binary, True, 4),
        (VectorQuantization.Binary, False, None),
        (VectorQuantization.Scalar, True, None),
    ],
)
def test_the_oversampling_to_query_with_is_in_the_metadata(
    quantization: VectorQuantization, rescore: bool, expected: int | None
) -> None:
    fake = FakeQdrant()
    engine(fake).sync(want(quantization=quantization, rescore=rescore))
    assert fake.requests[1][2]["metadata"]["tidal_oversampling"] == expected


def test_originals_stay_in_ram_without_quantization_on_the_memory_tier() -> None:
    fake = FakeQdrant()
    engine(fake).sync(want(quantization=VectorQuantization.None_))
    assert fake.requests[1][2]["vectors"]["on_disk"] is False


def test_disk_tier_memory_maps_vectors_and_the_graph() -> None:
    fake = FakeQdrant()
    engine(fake).sync(want(quantization=VectorQuantization.None_, on_disk=True))
    body = fake.requests[1][2]
    assert body["vectors"]["on_disk"] is True
    assert body["hnsw_config"]["on_disk"] is True


@pytest.mark.parametrize(
    ("metric", "distance"),
    [(Metric.Cosine, "Cosine"), (Metric.Dot, "Dot"), (Metric.Euclidean, "Euclid")],
)
def test_metrics_map_to_qdrant_distances(metric: Metric, distance: str) -> None:
    fake = FakeQdrant()
    engine(fake).sync(want(metric=metric))
    assert fake.requests[1][2]["vectors"]["distance"] == distance


def test_the_api_key_is_sent_as_a_header() -> None:
    fake = FakeQdrant()
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("api-key"))
        return fake(request)

    QdrantEngine(Connection(URL, api_key="s3cret"), transport=httpx.MockTransport(handler)).sync(
        want()
    )
    assert seen
    assert set(seen) == {"s3cret"}


def test_the_connection_repr_hides_secrets() -> None:
    text = repr(Connection(URL, api_key="s3cret", password="hunter2"))
    assert "s3cret" not in text
    assert "hunter2" not in text


# --- update in place ----------------------------------------------------------------------------


def recorded() -> dict[str, Any]:
    return copy.deepcopy(SHAPES["collection_info"]["result"])


def test_a_collection_matching_the_spec_is_left_alone() -> None:
    fake = FakeQdrant({"e2e_docs": recorded()})
    state = engine(fake).sync(want())
    assert not state.created
    assert state.applied == ()
    assert state.unapplied == ()
    assert "PATCH" not in {method for method, _ in calls(fake)}
    assert state.vectors == 1200


def test_changed_ef_search_is_written_to_the_collection_metadata() -> None:
    fake = FakeQdrant({"e2e_docs": recorded()})
    state = engine(fake).sync(want(ef_search=256))
    patches = [body for method, _, body in fake.requests if method == "PATCH"]
    assert patches == [
        {"metadata": {"tidal_ef_search": 256, "tidal_rescore": True, "tidal_oversampling": None}}
    ]
    assert state.applied == ("efSearch 128->256",)


def test_removed_quantization_is_disabled_and_originals_return_to_ram() -> None:
    fake = FakeQdrant({"e2e_docs": recorded()})
    state = engine(fake).sync(want(quantization=VectorQuantization.None_))
    (patch,) = [body for method, _, body in fake.requests if method == "PATCH"]
    assert patch["quantization_config"] == "Disabled"
    assert patch["vectors"] == {"": {"on_disk": False}}
    assert any("quantization Scalar->None" in change for change in state.applied)


def test_changed_hnsw_and_replication_are_applied_in_one_patch() -> None:
    fake = FakeQdrant({"e2e_docs": recorded()})
    engine(fake).sync(want(m=32, ef_construct=200, replicas=3))
    (patch,) = [body for method, _, body in fake.requests if method == "PATCH"]
    assert patch["hnsw_config"] == {"m": 32, "ef_construct": 200, "on_disk": False}
    assert patch["params"] == {"replication_factor": 3}


def test_changed_shards_are_reported_not_applied() -> None:
    fake = FakeQdrant({"e2e_docs": recorded()})
    state = engine(fake).sync(want(shards=4))
    assert "PATCH" not in {method for method, _ in calls(fake)}
    assert len(state.unapplied) == 1
    assert "cannot reshard" in state.unapplied[0]


def test_a_collection_of_another_dimension_is_refused() -> None:
    fake = FakeQdrant({"e2e_docs": recorded()})
    with pytest.raises(EngineRejectedError, match="size 768"):
        engine(fake).sync(want(dimension=384))


def test_named_vectors_are_refused() -> None:
    info = recorded()
    info["config"]["params"]["vectors"] = {"text": {"size": 768, "distance": "Cosine"}}
    with pytest.raises(EngineRejectedError, match="named vectors"):
        engine(FakeQdrant({"e2e_docs": info})).sync(want())


# --- errors ---------------------------------------------------------------------------------


def test_a_4xx_answer_is_a_rejection_naming_qdrants_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/exists"):
            return httpx.Response(200, json=SHAPES["exists_false"])
        return httpx.Response(400, json=SHAPES["bad_request"])

    with pytest.raises(EngineRejectedError, match="Vector dimension error"):
        QdrantEngine(Connection(URL), transport=httpx.MockTransport(handler)).sync(want())


def test_a_401_hints_at_the_api_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # Qdrant answers a missing key in plain text, not JSON.
        return httpx.Response(401, text=SHAPES["unauthorized_text"])

    with pytest.raises(EngineRejectedError, match="apiKey"):
        QdrantEngine(Connection(URL), transport=httpx.MockTransport(handler)).sync(want())


def test_a_5xx_answer_is_temporary() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="upstream unavailable")

    with pytest.raises(EngineUnavailableError, match="503"):
        QdrantEngine(Connection(URL), transport=httpx.MockTransport(handler)).sync(want())


def test_a_refused_connection_is_temporary() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(EngineUnavailableError, match="unreachable"):
        QdrantEngine(Connection(URL), transport=httpx.MockTransport(handler)).sync(want())


# --- snapshots --------------------------------------------------------------------------------


def test_a_snapshot_is_created_downloaded_and_deleted_from_the_engine() -> None:
    fake = FakeQdrant({"e2e_docs": recorded()})
    sink = io.BytesIO()
    info = engine(fake).snapshot(want(), sink)

    name = SHAPES["snapshot_created"]["result"]["name"]
    assert calls(fake) == [
        ("GET", "/collections/e2e_docs"),  # the vectors the snapshot holds
        ("POST", "/collections/e2e_docs/snapshots"),
        ("GET", f"/collections/e2e_docs/snapshots/{name}"),
        ("DELETE", f"/collections/e2e_docs/snapshots/{name}"),
    ]
    assert sink.getvalue() == fake.snapshot_bytes
    assert info.extension == "snapshot"
    assert info.manifest["snapshot"] == name
    assert info.sha256 == SHAPES["snapshot_created"]["result"]["checksum"]
    assert info.vectors == 1200
