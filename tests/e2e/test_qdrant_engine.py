"""The Qdrant driver against a real Qdrant 1.18 (tests/e2e/qdrant.py: started once per session on
loopback, API key on, its own storage and snapshot directories).

Every behaviour the driver promises is checked against what the server then holds, read back
with qdrant-client, not against what the driver says it sent: creation with HNSW `m` /
`ef_construct`, the Disk tier, each quantization; changes applied in place and refused where
Qdrant would need a rebuild; vectors counted; the telemetry's data size; the server version;
snapshots. The operator driving the same server: tests/e2e/test_vector_collection.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from tests.e2e.qdrant import Qdrant, find_binary
from tests.e2e.recall import exact_neighbours, gaussian_vectors, recall_against
from tests.e2e.s3 import S3Server
from tidal.api.collection import (
    Metric,
    VectorCollection,
    VectorEngineType,
    VectorQuantization,
    default_vector_engine_image,
)
from tidal.clients.objectstore import credentials_from_secret
from tidal.clients.qdrant import QdrantEngine
from tidal.clients.vectorengine import (
    Connection,
    EngineRejectedError,
    ObjectStoreError,
    offload,
    restore_from,
)
from tidal.errors import TidalError
from tidal.render.collection import EngineCollection, ManagedPlan, render_statefulset
from tidal.slo import recall_percent

# qdrant-client warns about an API key over http://; the server is on loopback.
INSECURE_KEY = "Api key is used with an insecure connection"


@pytest.fixture(scope="module")
def client(qdrant: Qdrant) -> Iterator[QdrantClient]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=INSECURE_KEY, category=UserWarning)
        # check_compatibility stays on: the pinned client must not warn against this server.
        found = QdrantClient(url=qdrant.url, api_key=qdrant.api_key, timeout=30)
    yield found
    found.close()


@pytest.fixture
def engine(qdrant: Qdrant) -> Iterator[QdrantEngine]:
    driver = QdrantEngine(Connection(qdrant.url, api_key=qdrant.api_key))
    yield driver
    driver.close()


@pytest.fixture
def name(client: QdrantClient) -> Iterator[str]:
    collection = f"tidal_{uuid.uuid4().hex[:8]}"
    yield collection
    client.delete_collection(collection)


def want(name: str, **changes: object) -> EngineCollection:
    base = EngineCollection(
        name=name,
        dimension=16,
        metric=Metric.Cosine,
        m=24,
        ef_construct=64,
        ef_search=None,
        quantization=VectorQuantization.None_,
        rescore=True,
        shards=1,
        replicas=1,
        on_disk=False,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def quantization_of(config: models.CollectionConfig) -> tuple[VectorQuantization, bool | None]:
    """The quantization the server holds and whether its copy is pinned in RAM."""
    held = config.quantization_config
    if isinstance(held, models.ScalarQuantization):
        return VectorQuantization.Scalar, held.scalar.always_ram
    if isinstance(held, models.ProductQuantization):
        return VectorQuantization.Product, held.product.always_ram
    if isinstance(held, models.BinaryQuantization):
        return VectorQuantization.Binary, held.binary.always_ram
    return VectorQuantization.None_, None


def assert_holds(client: QdrantClient, spec: EngineCollection) -> None:
    """The server's collection is configured as the driver maps `spec`."""
    config = client.get_collection(spec.name).config
    vectors = config.params.vectors
    assert isinstance(vectors, models.VectorParams)
    assert vectors.size == spec.dimension
    assert (config.hnsw_config.m, config.hnsw_config.ef_construct) == (spec.m, spec.ef_construct)
    assert bool(config.hnsw_config.on_disk) is spec.on_disk
    quantized = spec.quantization is not VectorQuantization.None_
    # Quantized: the originals are read from disk only to rescore.
    assert bool(vectors.on_disk) is (spec.on_disk or quantized)
    kind, pinned = quantization_of(config)
    assert kind is spec.quantization
    assert pinned is (True if quantized else None)
    assert config.params.shard_number == spec.shards
    # A null in a metadata PATCH removes the key on the server: unset efSearch reads as absent.
    metadata = config.metadata or {}
    assert metadata.get("tidal_ef_search") == spec.ef_search
    assert metadata.get("tidal_rescore") is spec.rescore


def points(count: int, dimension: int = 16, start: int = 0) -> list[models.PointStruct]:
    # Distinct pseudo-random vectors (seeded by id): no ties in a ranking.
    return [
        models.PointStruct(
            id=i,
            vector=[random.Random(i * 1000 + d).random() + 0.01 for d in range(dimension)],
            payload={"doc": f"d{i}"},
        )
        for i in range(start, start + count)
    ]


# --- create ---------------------------------------------------------------------------------


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
@pytest.mark.parametrize("quantization", list(VectorQuantization), ids=lambda q: q.value)
def test_a_collection_is_created_as_declared(
    engine: QdrantEngine,
    client: QdrantClient,
    name: str,
    quantization: VectorQuantization,
    on_disk: bool,
) -> None:
    spec = want(name, quantization=quantization, on_disk=on_disk, ef_search=80)
    state = engine.sync(spec)
    assert state.created
    assert state.health == "green"
    assert state.vectors == 0
    assert_holds(client, spec)
    # What the server reports back compares equal to what was asked: nothing to apply again.
    again = engine.sync(spec)
    assert (again.created, again.applied, again.unapplied) == (False, (), ())


# --- in place, and what needs a rebuild ------------------------------------------------------


def test_changes_qdrant_allows_are_applied_in_place_keeping_the_points(
    engine: QdrantEngine, client: QdrantClient, name: str
) -> None:
    spec = want(name)
    engine.sync(spec)
    client.upsert(name, points=points(200), wait=True)
    steps = [
        dataclasses.replace(spec, m=32, ef_construct=128),
        dataclasses.replace(spec, ef_search=96, rescore=False),
        dataclasses.replace(spec, quantization=VectorQuantization.Scalar),
        dataclasses.replace(spec, quantization=VectorQuantization.Product),
        dataclasses.replace(spec, quantization=VectorQuantization.Binary),
        dataclasses.replace(spec, quantization=VectorQuantization.None_, on_disk=True),
        dataclasses.replace(spec, on_disk=False),
    ]
    for step in steps:
        state = engine.sync(step)
        assert state.applied, step
        assert state.unapplied == ()
        assert_holds(client, step)
        assert engine.sync(step).applied == ()
        assert client.count(name, exact=True).count == 200


def test_a_new_shard_count_is_reported_not_applied(
    engine: QdrantEngine, client: QdrantClient, name: str
) -> None:
    engine.sync(want(name))
    state = engine.sync(want(name, shards=2))
    assert len(state.unapplied) == 1
    assert "cannot reshard" in state.unapplied[0]
    assert client.get_collection(name).config.params.shard_number == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [({"dimension": 32}, "size 16"), ({"metric": Metric.Euclidean}, "distance Cosine")],
)
def test_a_change_that_needs_a_rebuild_is_refused(
    engine: QdrantEngine,
    client: QdrantClient,
    name: str,
    change: dict[str, object],
    message: str,
) -> None:
    engine.sync(want(name))
    client.upsert(name, points=points(10), wait=True)
    with pytest.raises(EngineRejectedError, match=message):
        engine.sync(want(name, **change))
    assert client.count(name, exact=True).count == 10


# --- what the server reports -----------------------------------------------------------------


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_the_managed_probes_answer_without_the_api_key_the_engine_always_has(
    qdrant: Qdrant,
) -> None:
    # A Managed Qdrant always runs with an API key (generated when the spec names none); its
    # kubelet probes carry no key, so the paths they use must answer without one.
    vc = VectorCollection.model_validate(
        {
            "metadata": {"name": "docs", "namespace": "rag", "uid": "u-1"},
            "spec": {"dimension": 8, "residency": {"regions": ["eu-west-1"]}},
        }
    )
    plan = ManagedPlan(replicas=1, regions=["eu-west-1"], cpu="1", memory="1Gi", volume="1Gi")
    (container,) = render_statefulset(vc, plan)["spec"]["template"]["spec"]["containers"]
    paths = {
        container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {"/livez", "/readyz"}
    for path in sorted(paths):
        assert _status(f"{qdrant.url}{path}") == 200, path
    assert _status(f"{qdrant.url}/collections") == 401  # the key is on


def test_the_managed_default_image_is_the_qdrant_this_suite_runs(qdrant: Qdrant) -> None:
    # A Managed engine runs the version the driver is tested against: the binary's own
    # `--version` ($TIDAL_QDRANT_BIN) and what the running server reports must both be the
    # default image's tag (tests/unit/data/engine_image_releases.yaml lists where it was read).
    binary = subprocess.run(
        [str(find_binary()), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    repository, _, tag = default_vector_engine_image(VectorEngineType.Qdrant).rpartition(":")
    assert repository == "qdrant/qdrant"
    assert binary == ["qdrant", qdrant.version]
    assert tag in {f"v{qdrant.version}", f"v{qdrant.version}-unprivileged"}


def test_vectors_data_size_and_version_are_reported(
    engine: QdrantEngine, client: QdrantClient, name: str, qdrant: Qdrant
) -> None:
    engine.sync(want(name))
    client.upsert(name, points=points(300), wait=True)
    state = engine.sync(want(name))
    assert state.vectors == 300
    assert state.engine_version == f"Qdrant {qdrant.version}"
    # Qdrant's telemetry: 300 x 16 float32 plus the payloads.
    assert state.data_bytes is not None
    assert state.data_bytes >= 300 * 16 * 4
    assert state.memory_bytes is None
    assert state.disk_bytes is None


def test_a_wrong_api_key_is_refused_naming_the_secret(qdrant: Qdrant, name: str) -> None:
    driver = QdrantEngine(Connection(qdrant.url, api_key="not-the-key"))
    try:
        with pytest.raises(EngineRejectedError, match="apiKey"):
            driver.sync(want(name))
    finally:
        driver.close()


# --- snapshots ------------------------------------------------------------------------------


def test_a_snapshot_is_streamed_out_and_removed_from_the_server(
    engine: QdrantEngine, client: QdrantClient, name: str, qdrant: Qdrant
) -> None:
    engine.sync(want(name, quantization=VectorQuantization.Scalar))
    client.upsert(name, points=points(500), wait=True)
    sink = io.BytesIO()
    info = engine.snapshot(want(name, quantization=VectorQuantization.Scalar), sink)
    assert len(sink.getvalue()) > 0
    assert info.manifest["collection"] == name
    assert client.list_snapshots(name) == []
    assert not any((qdrant.snapshots_dir / name).glob("*.snapshot"))


# --- the S3 cold tier (a real versitygw, tests/e2e/s3.py) -------------------------------------


def answers(client: QdrantClient, name: str) -> list[list[int]]:
    """The exact top-10 ids of five fixed queries."""
    queries = [[((q * 5 + d * 3) % 17) / 17 + 0.01 for d in range(16)] for q in range(5)]
    return [
        [
            int(point.id)
            for point in client.query_points(
                name, query=query, limit=10, search_params=models.SearchParams(exact=True)
            ).points
        ]
        for query in queries
    ]


def test_offloading_to_s3_and_restoring_gives_back_the_same_collection(
    engine: QdrantEngine, client: QdrantClient, name: str, s3: S3Server
) -> None:
    spec = want(name, quantization=VectorQuantization.Scalar, ef_search=48)
    engine.sync(spec)
    client.upsert(name, points=points(2000), wait=True)
    before = answers(client, name)
    bucket = s3.make_bucket(f"cold-{uuid.uuid4().hex[:6]}")
    credentials = credentials_from_secret(s3.secret_data())

    stored = offload(engine, spec, f"s3://{bucket}/tier", "ns/docs/20261206T120000Z", credentials)
    assert stored.uri == f"s3://{bucket}/tier/ns/docs/20261206T120000Z.snapshot"
    assert stored.vectors == 2000
    assert s3.objects(bucket) == [
        "tier/ns/docs/20261206T120000Z.json",
        "tier/ns/docs/20261206T120000Z.snapshot",
    ]
    on_disk = s3.root / "buckets" / bucket / "tier/ns/docs/20261206T120000Z.snapshot"
    assert on_disk.stat().st_size == stored.size
    manifest = json.loads(on_disk.with_suffix(".json").read_text())
    assert (manifest["sha256"], manifest["bytes"], manifest["vectors"]) == (
        stored.sha256,
        stored.size,
        2000,
    )

    engine.drop(spec)
    assert not client.collection_exists(name)
    started = time.monotonic()
    vectors = restore_from(engine, spec, stored.uri, stored.sha256, credentials)
    seconds = time.monotonic() - started
    print(f"\nrestored {vectors} vectors ({stored.size} bytes) from S3 in {seconds:.2f}s")
    assert vectors == 2000
    assert client.count(name, exact=True).count == 2000
    assert answers(client, name) == before
    assert_holds(client, spec)
    state = engine.sync(spec)
    assert (state.applied, state.unapplied, state.vectors) == ((), (), 2000)


def test_a_failed_upload_keeps_the_collection_and_leaves_no_object(
    engine: QdrantEngine, client: QdrantClient, name: str, s3: S3Server
) -> None:
    spec = want(name)
    engine.sync(spec)
    client.upsert(name, points=points(100), wait=True)
    bucket = s3.make_bucket(f"cold-{uuid.uuid4().hex[:6]}")
    wrong = credentials_from_secret({**s3.secret_data(), "secretAccessKey": "wrong"})
    with pytest.raises(ObjectStoreError):
        offload(engine, spec, f"s3://{bucket}/tier", "ns/docs/1", wrong)
    assert s3.objects(bucket) == []
    assert client.count(name, exact=True).count == 100
    assert client.list_snapshots(name) == []


def test_a_corrupted_snapshot_is_not_restored(
    engine: QdrantEngine, client: QdrantClient, name: str, s3: S3Server
) -> None:
    spec = want(name)
    engine.sync(spec)
    client.upsert(name, points=points(300), wait=True)
    bucket = s3.make_bucket(f"cold-{uuid.uuid4().hex[:6]}")
    credentials = credentials_from_secret(s3.secret_data())
    stored = offload(engine, spec, f"s3://{bucket}", "ns/docs/1", credentials)
    engine.drop(spec)
    path = s3.root / "buckets" / bucket / "ns/docs/1.snapshot"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TidalError, match=r"(?i)checksum|sha256"):
        restore_from(engine, spec, stored.uri, stored.sha256, credentials)
    assert not client.collection_exists(name) or client.count(name, exact=True).count == 0


# --- the SLO probe ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantization", "rescore"),
    [
        (VectorQuantization.None_, True),
        (VectorQuantization.Scalar, True),
        (VectorQuantization.Binary, False),
        (VectorQuantization.Binary, True),
    ],
    ids=["none", "scalar", "binary-without-rescore", "binary-with-rescore"],
)
def test_the_probe_s_recall_matches_numpy_brute_force_on_the_same_sample(
    engine: QdrantEngine,
    client: QdrantClient,
    name: str,
    quantization: VectorQuantization,
    rescore: bool,
) -> None:
    vectors = gaussian_vectors(400, 48)
    spec = want(name, dimension=48, quantization=quantization, rescore=rescore)
    engine.sync(spec)
    client.upsert(
        name,
        points=[models.PointStruct(id=i, vector=v.tolist()) for i, v in enumerate(vectors)],
        wait=True,
    )
    probe = engine.probe(spec, sample=40, k=10)

    assert len(probe.queries) == 40
    assert len({q.point for q in probe.queries}) == 40  # 40 distinct stored points
    for query in probe.queries:
        assert isinstance(query.point, int)
        # The engine's exact answer is numpy's, without the point itself.
        assert list(query.exact) == exact_neighbours(vectors, query.point, 10)
        assert query.point not in query.indexed
        assert query.seconds > 0
    indexed = {int(q.point): [int(i) for i in q.indexed] for q in probe.queries}
    offline = recall_against(vectors, indexed, 10)
    measured = recall_percent(probe)
    assert measured is not None
    assert measured == pytest.approx(offline, abs=2)
    # The probe queries as a client told by the collection's metadata would: the same answers.
    assert {q.point: list(q.indexed) for q in probe.queries} == client_answers(
        client, name, vectors, [int(q.point) for q in probe.queries], quantized=True
    )
    if quantization is VectorQuantization.Binary and not rescore:
        # 1 bit per dimension without rescoring: far from exact (the probe sees it).
        assert measured < 80
    elif quantization is VectorQuantization.Binary:
        # Rescoring 4x the candidates beats rescoring only the top 10 (Qdrant's default).
        plain = client_answers(
            client, name, vectors, [int(q.point) for q in probe.queries], quantized=False
        )
        without = recall_against(
            vectors, {int(p): [int(i) for i in f] for p, f in plain.items()}, 10
        )
        print(f"\nBinary + rescore recall@10: {measured:.1f} % oversampled, {without:.1f} % not")
        assert measured > without
        assert "oversampling=4" in probe.method
    else:
        assert measured >= 95
    assert "Qdrant HNSW m=24" in probe.method


def client_answers(
    client: QdrantClient,
    name: str,
    vectors: Any,
    points: list[int],
    *,
    quantized: bool,
) -> dict[int | str, list[int | str]]:
    """The top 10 of each point (itself left out), searched with the parameters the collection's
    metadata tells clients to use (`quantized=False`: rescore without oversampling instead)."""
    metadata = client.get_collection(name).config.metadata or {}
    quantization = models.QuantizationSearchParams(
        rescore=metadata.get("tidal_rescore"),
        oversampling=metadata.get("tidal_oversampling") if quantized else None,
    )
    params = models.SearchParams(hnsw_ef=metadata.get("tidal_ef_search"), quantization=quantization)
    found: dict[int | str, list[int | str]] = {}
    for point in points:
        hits = client.query_points(
            name, query=vectors[point].tolist(), limit=11, search_params=params
        ).points
        ids: list[int | str] = [int(h.id) for h in hits if int(h.id) != point]
        found[point] = ids[:10]
    return found


def test_the_probe_of_an_empty_collection_has_no_queries(engine: QdrantEngine, name: str) -> None:
    spec = want(name)
    engine.sync(spec)
    probe = engine.probe(spec, sample=10, k=10)
    assert probe.queries == ()
    assert recall_percent(probe) is None


def test_the_same_sample_probed_after_a_restore_from_s3_answers_alike(
    engine: QdrantEngine, client: QdrantClient, name: str, s3: S3Server
) -> None:
    spec = want(name, dimension=48)
    engine.sync(spec)
    # An HNSW graph even for 3,000 points (the default threshold is 10 MB of vectors), so the
    # restored collection answers from the snapshot's graph, not by a full scan.
    client.update_collection(
        name, optimizers_config=models.OptimizersConfigDiff(indexing_threshold=10)
    )
    vectors = gaussian_vectors(3000, 48)
    client.upsert(
        name,
        points=[models.PointStruct(id=i, vector=v.tolist()) for i, v in enumerate(vectors)],
        wait=True,
    )
    deadline = time.monotonic() + 120
    while client.get_collection(name).status != models.CollectionStatus.GREEN:
        assert time.monotonic() < deadline, "the collection did not turn green"
        time.sleep(0.5)
    assert (client.get_collection(name).indexed_vectors_count or 0) > 0
    sample = [17, 2999, 0, 1234, 5]

    before = engine.probe(spec, 99, 10, points=sample)
    assert [q.point for q in before.queries] == sample  # these points, in this order
    for query in before.queries:
        assert list(query.exact) == exact_neighbours(vectors, int(query.point), 10)

    bucket = s3.make_bucket(f"cold-{uuid.uuid4().hex[:6]}")
    credentials = credentials_from_secret(s3.secret_data())
    stored = offload(engine, spec, f"s3://{bucket}/tier", "ns/probe/1", credentials)
    engine.drop(spec)
    restore_from(engine, spec, stored.uri, stored.sha256, credentials)

    after = engine.probe(spec, 99, 10, points=sample)
    assert [(q.point, q.indexed, q.exact) for q in after.queries] == [
        (q.point, q.indexed, q.exact) for q in before.queries
    ]
    assert (client.get_collection(name).indexed_vectors_count or 0) > 0
