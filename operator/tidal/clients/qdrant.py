"""The Qdrant driver (qdrant-client 1.18, REST API of Qdrant v1.18): one collection per
VectorCollection.

Versions: qdrant-client is pinned to the server minor the e2e suite runs (Qdrant 1.18.3, from its
release source; docs/vectorcollection.md "Qdrant versions"). qdrant-client warns when it is more
than one minor from the server; its check is off here (it starts a thread per client) and the
server's version (`GET /`) is reported instead (`CollectionState.engine_version`, then
`status.engineVersion` and an `EngineVersion` Event).

How the declared collection maps onto Qdrant:

- one unnamed dense vector: `size` = dimension, `distance` Cosine | Dot | Euclid;
- `hnsw_config{m, ef_construct, on_disk}`; `shard_number`, `replication_factor`,
  `on_disk_payload: true` (payload is read after search, never scanned);
- quantization Scalar → int8 (quantile 0.99), Product → x16 compression, Binary → 1 bit; the
  quantized copy is pinned in RAM (`always_ram`) and the originals live on disk (`on_disk`), read
  only to rescore. Without quantization the originals stay in RAM unless the tier is Disk;
- Disk tier: originals and HNSW graph memory-mapped (`on_disk: true`).
- Qdrant has no collection-level search `ef`, rescore switch or oversampling (all query
  parameters), so `efSearch`, `rescore` and the oversampling Tidal uses for Binary with rescore
  (`tidal.render.collection.search_oversampling`) are stored in the collection's `metadata`
  (`tidal_ef_search`, `tidal_rescore`, `tidal_oversampling`) for the gateway and clients to apply
  as `params.hnsw_ef` / `params.quantization.rescore` / `params.quantization.oversampling`.

In place (PATCH /collections/{name}): HNSW parameters, quantization (including removing it),
`on_disk`, `replication_factor` (Qdrant then needs replicas created or moved by its shard
transfer API; Tidal records the factor) and metadata. Not in place: dimension and distance
(refused by CRD immutability too) and `shard_number`; those are reported as unapplied.

The SLO probe (`probe`): `sample` points picked by Qdrant's random sampling (`query:
{sample: random}`, with their vectors), each queried for `k + 1` neighbours twice: through the
index as clients query it (`params.hnsw_ef` = `efSearch` when set; with quantization,
`params.quantization.rescore` = `rescore` and `oversampling` = `tidal_oversampling`: the
metadata's values) and by exact search (`params.exact: true`, quantization
ignored: a full scan of the originals). The point itself is dropped from both answers. The
indexed queries are timed at the client (the HTTP round trip included). Qdrant counts no queries
per collection, so the probe is no activity either way.

Measured sizes: neither the collection info nor the telemetry of Qdrant 1.18 has a collection's
memory or disk bytes (the telemetry's per-segment `ram_usage_bytes`/`disk_usage_bytes` are 0, and
its allocator figures are process-wide and leave out memory-mapped vectors), so
`memoryBytes`/`diskBytes` stay unset. What the telemetry does count per collection (details
level 3: each local shard's `vectors_size_bytes` + `payloads_size_bytes`) is `data_bytes`;
a server that refuses telemetry leaves it unset. `points_count` is the vector count and
`status` (green/yellow/grey/red) the health.

The HTTP transport is a seam: tests pass an `httpx.MockTransport` that answers with recorded
REST shapes. qdrant-client's version check is off (it starts a thread and warns on mismatch).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO, Final

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from tidal.api.collection import Metric, VectorQuantization
from tidal.clients.vectorengine import (
    Connection,
    EngineRejectedError,
    EngineUnavailableError,
    SnapshotInfo,
)
from tidal.errors import TidalError
from tidal.render.collection import CollectionState, EngineCollection, search_oversampling
from tidal.slo.measurement import ProbeQuery, RecallProbe

__all__ = ["QdrantEngine"]

_TIMEOUT_SECONDS: Final = 10
# Per-shard sizes appear in Qdrant's telemetry from details level 3.
_TELEMETRY_DETAILS: Final = 3
# qdrant-client's warning for an API key over http://: in-cluster HTTP is the norm.
_INSECURE_KEY_WARNING: Final = "Api key is used with an insecure connection"
_SNAPSHOT_TIMEOUT_SECONDS: Final = 600.0
_CHUNK: Final = 1 << 20

_DISTANCE: Final = {
    Metric.Cosine: models.Distance.COSINE,
    Metric.Dot: models.Distance.DOT,
    Metric.Euclidean: models.Distance.EUCLID,
}
_META_EF_SEARCH: Final = "tidal_ef_search"
_META_RESCORE: Final = "tidal_rescore"
_META_OVERSAMPLING: Final = "tidal_oversampling"


class QdrantEngine:
    """A Qdrant collection driver over REST."""

    snapshot_extension = "snapshot"

    def __init__(self, connection: Connection, *, transport: httpx.BaseTransport | None = None):
        self._url = connection.url.rstrip("/")
        self._api_key = connection.api_key
        self._transport = transport
        extra: dict[str, Any] = {"transport": transport} if transport is not None else {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_INSECURE_KEY_WARNING, category=UserWarning)
            self._client = QdrantClient(
                url=self._url,
                api_key=self._api_key,
                timeout=_TIMEOUT_SECONDS,
                prefer_grpc=False,
                check_compatibility=False,
                **extra,
            )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def sync(self, want: EngineCollection) -> CollectionState:
        """Create `want` or apply what differs in place; report the collection's state."""
        with _translated(f"Qdrant collection {want.name}"):
            created = False
            applied: list[str] = []
            unapplied: list[str] = []
            if not self._client.collection_exists(want.name):
                self._create(want)
                created = True
            else:
                info = self._client.get_collection(want.name)
                applied, unapplied = self._update(want, info)
            info = self._client.get_collection(want.name)
            return CollectionState(
                created=created,
                applied=tuple(applied),
                unapplied=tuple(unapplied),
                location=want.name,
                vectors=info.points_count,
                health=str(info.status.value) if info.status is not None else None,
                data_bytes=self._data_bytes(want.name),
                engine_version=f"Qdrant {self._client.info().version}",
            )
        raise AssertionError("unreachable: _translated re-raises every failure")

    def snapshot(self, want: EngineCollection, sink: BinaryIO) -> SnapshotInfo:
        """Create a Qdrant snapshot, stream it into `sink`, then delete it from the engine."""
        with _translated(f"Qdrant snapshot of {want.name}"):
            vectors = self._client.get_collection(want.name).points_count
            created = self._client.create_snapshot(want.name, wait=True)
            if created is None:
                raise EngineUnavailableError(f"Qdrant did not create a snapshot of {want.name}")
            description = created
            try:
                self._download(want.name, description.name, sink)
            finally:
                self._client.delete_snapshot(want.name, description.name, wait=True)
        return SnapshotInfo(
            extension="snapshot",
            manifest={
                "engine": "Qdrant",
                "collection": want.name,
                "snapshot": description.name,
                "checksum": description.checksum,
                "restore": "POST /collections/{name}/snapshots/upload?priority=snapshot",
            },
            sha256=description.checksum,
            vectors=vectors,
        )

    def restore(self, want: EngineCollection, source: BinaryIO, checksum: str | None) -> int:
        """Recover the collection from a snapshot read from `source` (streamed, as a multipart
        upload); Qdrant checks `checksum` (SHA-256) itself. Vectors in the recovered collection.

        `priority=snapshot`: the snapshot's data wins over whatever this node holds (the caller
        only restores a collection that is absent or empty).
        """
        params: dict[str, Any] = {"wait": "true", "priority": "snapshot"}
        if checksum:
            params["checksum"] = checksum
        url = f"{self._url}/collections/{want.name}/snapshots/upload"
        with _translated(f"Qdrant restore of {want.name}"):
            with self._http(_SNAPSHOT_TIMEOUT_SECONDS) as http:
                response = http.post(
                    url,
                    params=params,
                    files={
                        "snapshot": (f"{want.name}.snapshot", source, "application/octet-stream")
                    },
                )
            if response.status_code != 200:
                text = response.text[:500]
                error = EngineRejectedError if 400 <= response.status_code < 500 else None
                message = f"Qdrant restore of {want.name}: HTTP {response.status_code}: {text}"
                if error is not None:
                    raise error(message)
                raise EngineUnavailableError(message, delay=15)
            info = self._client.get_collection(want.name)
            return info.points_count or 0
        raise AssertionError("unreachable: _translated re-raises every failure")

    def drop(self, want: EngineCollection) -> None:
        """Delete the collection from Qdrant (after its snapshot was verified in the cold tier)."""
        with _translated(f"Qdrant delete of {want.name}"):
            self._client.delete_collection(want.name)

    def probe(
        self,
        want: EngineCollection,
        sample: int,
        k: int,
        *,
        points: Sequence[int | str] | None = None,
    ) -> RecallProbe:
        """Random stored points queried through the index and exactly (module docstring).

        `points` (ids) replaces the random pick with these stored points, in this order: the
        same sample probed twice (before and after a snapshot restore) must answer alike.
        """
        quantized = want.quantization is not VectorQuantization.None_
        indexed = models.SearchParams(
            hnsw_ef=want.ef_search,
            quantization=models.QuantizationSearchParams(
                rescore=want.rescore, oversampling=search_oversampling(want)
            )
            if quantized
            else None,
        )
        exact = models.SearchParams(
            exact=True,
            quantization=models.QuantizationSearchParams(ignore=True) if quantized else None,
        )
        queries: list[ProbeQuery] = []
        with _translated(f"Qdrant probe of {want.name}"):
            picked: Sequence[models.Record | models.ScoredPoint]
            if points is None:
                picked = self._client.query_points(
                    want.name,
                    query=models.SampleQuery(sample=models.Sample.RANDOM),
                    limit=sample,
                    with_vectors=True,
                    with_payload=False,
                ).points
            else:
                order = {point: i for i, point in enumerate(points)}
                picked = sorted(
                    self._client.retrieve(
                        want.name, ids=list(points), with_vectors=True, with_payload=False
                    ),
                    key=lambda record: order.get(_id(record.id), len(order)),
                )
            for point in picked:
                vector = point.vector
                if not isinstance(vector, list) or not vector:
                    continue
                started = time.perf_counter()
                found = self._client.query_points(
                    want.name, query=vector, limit=k + 1, search_params=indexed, with_payload=False
                ).points
                seconds = time.perf_counter() - started
                truth = self._client.query_points(
                    want.name, query=vector, limit=k + 1, search_params=exact, with_payload=False
                ).points
                own = _id(point.id)
                queries.append(
                    ProbeQuery(
                        point=own,
                        indexed=_others(own, [_id(p.id) for p in found], k),
                        exact=_others(own, [_id(p.id) for p in truth], k),
                        seconds=seconds,
                    )
                )
        ef = f"hnsw_ef={want.ef_search}" if want.ef_search else "hnsw_ef=Qdrant's default"
        path = f"HNSW m={want.m} {ef}"
        if quantized:
            path += f", {want.quantization} quantization, rescore={str(want.rescore).lower()}"
            oversampling = search_oversampling(want)
            if oversampling:
                path += f", oversampling={oversampling}"
        return RecallProbe(k=k, queries=tuple(queries), method=f"Qdrant {path}")

    # --- internals ------------------------------------------------------------------------

    def _create(self, want: EngineCollection) -> None:
        quantized = want.quantization is not VectorQuantization.None_
        self._client.create_collection(
            collection_name=want.name,
            vectors_config=models.VectorParams(
                size=want.dimension,
                distance=_DISTANCE[want.metric],
                on_disk=want.on_disk or quantized,
            ),
            shard_number=want.shards,
            replication_factor=want.replicas,
            on_disk_payload=True,
            hnsw_config=models.HnswConfigDiff(
                m=want.m, ef_construct=want.ef_construct, on_disk=want.on_disk
            ),
            quantization_config=_quantization(want.quantization),
            metadata=_metadata(want),
        )

    def _update(
        self, want: EngineCollection, info: models.CollectionInfo
    ) -> tuple[list[str], list[str]]:
        params = info.config.params
        vectors = params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise EngineRejectedError(
                f"Qdrant collection {want.name} exists with named vectors; Tidal manages one "
                "unnamed vector per collection"
            )
        if vectors.size != want.dimension or vectors.distance != _DISTANCE[want.metric]:
            raise EngineRejectedError(
                f"Qdrant collection {want.name} exists with size {vectors.size} and distance "
                f"{vectors.distance.value}; the spec declares {want.dimension} and "
                f"{_DISTANCE[want.metric].value}: create a new VectorCollection"
            )
        applied: list[str] = []
        unapplied: list[str] = []
        update: dict[str, Any] = {}

        hnsw = info.config.hnsw_config
        if (hnsw.m, hnsw.ef_construct, bool(hnsw.on_disk)) != (
            want.m,
            want.ef_construct,
            want.on_disk,
        ):
            update["hnsw_config"] = models.HnswConfigDiff(
                m=want.m, ef_construct=want.ef_construct, on_disk=want.on_disk
            )
            applied.append(
                f"hnsw m={hnsw.m}->{want.m} ef_construct={hnsw.ef_construct}->{want.ef_construct}"
                f" on_disk={bool(hnsw.on_disk)}->{want.on_disk}"
            )

        have_quantization = _quantization_kind(info.config.quantization_config)
        if have_quantization is not want.quantization:
            update["quantization_config"] = _quantization(want.quantization) or (
                models.Disabled.DISABLED
            )
            applied.append(f"quantization {have_quantization}->{want.quantization}")

        on_disk = want.on_disk or want.quantization is not VectorQuantization.None_
        if bool(vectors.on_disk) != on_disk:
            update["vectors_config"] = {"": models.VectorParamsDiff(on_disk=on_disk)}
            applied.append(f"vectors on_disk={bool(vectors.on_disk)}->{on_disk}")

        if (params.replication_factor or 1) != want.replicas:
            update["collection_params"] = models.CollectionParamsDiff(
                replication_factor=want.replicas
            )
            applied.append(f"replication_factor {params.replication_factor}->{want.replicas}")

        metadata = _metadata(want)
        have = info.config.metadata or {}
        if any(have.get(key) != value for key, value in metadata.items()):
            update["metadata"] = metadata
            applied.append(
                f"efSearch {have.get(_META_EF_SEARCH)}->{metadata[_META_EF_SEARCH]}"
                if have.get(_META_EF_SEARCH) != metadata[_META_EF_SEARCH]
                else "metadata"
            )

        if (params.shard_number or 1) != want.shards:
            unapplied.append(
                f"shards: the collection has {params.shard_number}, the spec {want.shards} "
                "(Qdrant cannot reshard in place; create a new VectorCollection)"
            )
        if update:
            self._client.update_collection(collection_name=want.name, **update)
        return applied, unapplied

    def _data_bytes(self, collection: str) -> int | None:
        """Vectors + payloads of `collection` per Qdrant's telemetry (None: not reported)."""
        try:
            with self._http() as http:
                response = http.get(
                    f"{self._url}/telemetry", params={"details_level": _TELEMETRY_DETAILS}
                )
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return telemetry_data_bytes(response.json(), collection)

    def _http(self, timeout: float = _TIMEOUT_SECONDS) -> httpx.Client:
        headers = {"api-key": self._api_key} if self._api_key else {}
        extra: dict[str, Any] = {"transport": self._transport} if self._transport else {}
        return httpx.Client(timeout=timeout, headers=headers, **extra)

    def _download(self, collection: str, snapshot: str, sink: BinaryIO) -> None:
        headers = {"api-key": self._api_key} if self._api_key else {}
        url = f"{self._url}/collections/{collection}/snapshots/{snapshot}"
        extra: dict[str, Any] = {"transport": self._transport} if self._transport else {}
        with (
            httpx.Client(timeout=_SNAPSHOT_TIMEOUT_SECONDS, **extra) as http,
            http.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise EngineUnavailableError(
                    f"downloading snapshot {snapshot}: HTTP {response.status_code}"
                )
            for chunk in response.iter_bytes(_CHUNK):
                sink.write(chunk)


def telemetry_data_bytes(telemetry: Any, collection: str) -> int | None:
    """Sum of `vectors_size_bytes + payloads_size_bytes` over the local shards of `collection`
    in a `GET /telemetry` answer; None when the answer does not list it."""
    try:
        entries = telemetry["result"]["collections"]["collections"]
    except (KeyError, TypeError):
        return None
    for entry in entries or []:
        if not isinstance(entry, dict) or entry.get("id") != collection:
            continue
        total, seen = 0, False
        for shard in entry.get("shards") or []:
            local = (shard or {}).get("local") or {}
            for key in ("vectors_size_bytes", "payloads_size_bytes"):
                value = local.get(key)
                if isinstance(value, int):
                    total += value
                    seen = True
        return total if seen else None
    return None


def _id(point: object) -> int | str:
    """A point id as an int, or as text (UUIDs)."""
    return point if isinstance(point, int) else str(point)


def _others(point: int | str, ids: Sequence[int | str], k: int) -> tuple[int | str, ...]:
    """`ids` without the sampled `point` itself, at most `k`."""
    return tuple(found for found in ids if found != point)[:k]


def _metadata(want: EngineCollection) -> dict[str, Any]:
    return {
        _META_EF_SEARCH: want.ef_search,
        _META_RESCORE: want.rescore,
        _META_OVERSAMPLING: search_oversampling(want),
    }


def _quantization(kind: VectorQuantization) -> models.QuantizationConfig | None:
    if kind is VectorQuantization.Scalar:
        return models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, quantile=0.99, always_ram=True
            )
        )
    if kind is VectorQuantization.Product:
        return models.ProductQuantization(
            product=models.ProductQuantizationConfig(
                compression=models.CompressionRatio.X16, always_ram=True
            )
        )
    if kind is VectorQuantization.Binary:
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
    return None


def _quantization_kind(config: object) -> VectorQuantization:
    if isinstance(config, models.ScalarQuantization):
        return VectorQuantization.Scalar
    if isinstance(config, models.ProductQuantization):
        return VectorQuantization.Product
    if isinstance(config, models.BinaryQuantization):
        return VectorQuantization.Binary
    return VectorQuantization.None_


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map qdrant-client and httpx failures to Tidal's error tree, naming what was attempted."""
    try:
        yield
    except TidalError:
        raise
    except UnexpectedResponse as exc:
        status = exc.status_code or 0
        text = exc.content.decode("utf-8", errors="replace")[:500]
        message = f"{what}: HTTP {status}: {text}"
        if 400 <= status < 500 and status not in (408, 429):
            if status in (401, 403):
                message += " (check the apiKey in engine.connectionSecretRef)"
            raise EngineRejectedError(message) from exc
        raise EngineUnavailableError(message, delay=15) from exc
    except (ResponseHandlingException, httpx.HTTPError, OSError) as exc:
        source = getattr(exc, "source", exc)
        raise EngineUnavailableError(
            f"{what}: Qdrant unreachable: {type(source).__name__}: {source}", delay=15
        ) from exc
