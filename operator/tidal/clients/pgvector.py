"""The PostgreSQL + pgvector driver (psycopg 3): one table and one HNSW index per VectorCollection.

Schema, in the connection's current schema (`status.collection` names it)::

    CREATE TABLE "<namespace>_<name>" (
        id        bigint PRIMARY KEY,
        embedding vector(<dimension>) NOT NULL,
        payload   jsonb
    )

The identifier is quoted and at most 63 bytes (`tidal.render.collection.pg_identifier`). The HNSW
index carries `m` and `ef_construction` and the metric's operator class; quantization picks what
the index stores:

- None:   `USING hnsw (embedding vector_<op>_ops)`
- Scalar: `USING hnsw ((embedding::halfvec(<d>)) halfvec_<op>_ops)`: half the index size;
  query with `ORDER BY embedding::halfvec(<d>) <=> $1::halfvec(<d>)`
- Binary: `USING hnsw ((binary_quantize(embedding)::bit(<d>)) bit_hamming_ops)`: 1 bit per
  dimension; query the bit index for `k x oversampling` candidates, then re-rank them by the
  exact distance on `embedding` in an outer query (with `rescore: false`, skip the re-rank).

Index names end in a digest of their definition, so a changed definition builds a new index
(`CREATE INDEX CONCURRENTLY`, no write lock) before the old one is dropped. Tidal's indexes are
marked by the comment `tidal:hnsw`; other indexes on the table are left alone. The table's
comment holds Tidal's JSON marker with `efSearch`.

`hnsw.ef_search` is a session setting in pgvector, not a per-index or per-table one. Tidal sets
it per database (`ALTER DATABASE ... SET hnsw.ef_search`, new sessions pick it up) to the largest
`efSearch` of the Tidal collections in that database, so no collection gets less recall than it
declared; with none declared the setting is reset. That needs the database's owner; without the
privilege the setting is reported as unapplied.

Querying (`query_sql`, what clients run and what the SLO probe times): `ORDER BY` the indexed
expression's distance to the query, e.g. `embedding::halfvec(d) <=> $1::halfvec(d)`; Binary asks
the bit index for `k x 4` candidates by Hamming distance and re-ranks them by the exact distance
(`rescore: false`: the bit index's order). pgvector's HNSW returns at most `hnsw.ef_search`
rows, so the candidates are capped by it.

The SLO probe (`probe`): in one transaction, `sample` rows picked by `ORDER BY random()`, each
queried for `k + 1` neighbours with `query_sql` (the session's own `hnsw.ef_search`: what a new
client session gets), then by exact search (the original column's distance with index scans off:
a sequential scan and sort). The row itself is dropped from both answers; parallel workers are
off so the timings are of one backend. `track_counts` is turned off for the transaction, so the
probe moves no scan counter (activity); that needs a superuser (Managed: `postgres`) or the SET
privilege on it, and without it the probe still runs and its scans count as activity (the
result says so, `RecallProbe.method`).

Measured: `vectors` is the table's live-row statistic (`n_live_tup`, no table scan); memory is
the HNSW index (the structure that must stay cached to serve); disk is the table with its TOAST
and indexes (`pg_total_relation_size`). Activity: the table's sequential plus index scan counters
and, from PostgreSQL 16, the time of the last scan. Tidal's own queries read only catalogs and
statistics, so they never move these counters.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, BinaryIO, Final

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tidal.api.collection import Metric, VectorQuantization
from tidal.clients.vectorengine import (
    Connection,
    EngineRejectedError,
    EngineUnavailableError,
    SnapshotInfo,
)
from tidal.errors import TidalError
from tidal.render.collection import (
    BINARY_OVERSAMPLING,
    CollectionState,
    EngineCollection,
    pg_identifier,
    search_oversampling,
)
from tidal.slo.measurement import ProbeQuery, RecallProbe

__all__ = [
    "BINARY_OVERSAMPLING",
    "INDEX_COMMENT",
    "MAX_HNSW_DIMENSIONS",
    "PgVectorEngine",
    "check_dimensions",
    "exact_sql",
    "index_expression",
    "index_name",
    "index_sql",
    "query_sql",
    "table_sql",
]

INDEX_COMMENT: Final = "tidal:hnsw"
_TABLE_MARKER: Final = "tidal"
_CONNECT_TIMEOUT: Final = 5
# pgvector's HNSW limits on indexed dimensions, per stored type.
MAX_HNSW_DIMENSIONS: Final = {
    VectorQuantization.None_: 2000,
    VectorQuantization.Scalar: 4000,
    VectorQuantization.Binary: 64000,
}
_MAX_VECTOR_DIMENSIONS: Final = 16000
_OPS: Final = {Metric.Cosine: "cosine", Metric.Dot: "ip", Metric.Euclidean: "l2"}
_DISTANCE: Final = {Metric.Cosine: "<=>", Metric.Dot: "<#>", Metric.Euclidean: "<->"}


def table_sql(want: EngineCollection) -> sql.Composed:
    """`CREATE TABLE IF NOT EXISTS` for the collection."""
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, "
        "embedding vector({}) NOT NULL, payload jsonb)"
    ).format(sql.Identifier(pg_identifier(want.name)), sql.Literal(want.dimension))


def index_expression(want: EngineCollection) -> str:
    """The indexed expression and operator class, e.g. `(embedding::halfvec(384)) halfvec_l2_ops`.

    Built only from integers and fixed words, never from user strings.
    """
    op = _OPS[want.metric]
    dim = int(want.dimension)
    if want.quantization is VectorQuantization.Scalar:
        return f"(embedding::halfvec({dim})) halfvec_{op}_ops"
    if want.quantization is VectorQuantization.Binary:
        return f"(binary_quantize(embedding)::bit({dim})) bit_hamming_ops"
    return f"embedding vector_{op}_ops"


def index_name(want: EngineCollection) -> str:
    """`<table>_hnsw_<digest of the definition>`, within PostgreSQL's identifier length."""
    definition = f"{index_expression(want)} m={want.m} ef_construction={want.ef_construct}"
    digest = hashlib.sha256(definition.encode()).hexdigest()[:8]
    return pg_identifier(f"{want.name}_hnsw_{digest}")


def index_sql(want: EngineCollection) -> sql.Composed:
    """`CREATE INDEX CONCURRENTLY` for the collection's HNSW index."""
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING hnsw ({}) "
        "WITH (m = {}, ef_construction = {})"
    ).format(
        sql.Identifier(index_name(want)),
        sql.Identifier(pg_identifier(want.name)),
        sql.SQL(index_expression(want)),
        sql.Literal(int(want.m)),
        sql.Literal(int(want.ef_construct)),
    )


def query_sql(want: EngineCollection, limit: int) -> sql.Composed:
    """The nearest `limit` ids to the query vector `%(q)s` (text form, `[1,2,...]`) through the
    collection's index; Binary with rescore re-ranks `limit x search_oversampling(want)`
    candidates."""
    table = sql.Identifier(pg_identifier(want.name))
    dim = int(want.dimension)
    op = sql.SQL(_DISTANCE[want.metric])
    if want.quantization is VectorQuantization.Scalar:
        return sql.SQL(
            "SELECT id FROM {} ORDER BY embedding::halfvec({}) {} %(q)s::halfvec({}) LIMIT {}"
        ).format(table, sql.Literal(dim), op, sql.Literal(dim), sql.Literal(int(limit)))
    if want.quantization is VectorQuantization.Binary:
        hamming = sql.SQL(
            "binary_quantize(embedding)::bit({d}) <~> binary_quantize(%(q)s::vector)::bit({d})"
        ).format(d=sql.Literal(dim))
        oversampling = search_oversampling(want)
        if oversampling is None:  # no rescore: the Hamming order is the answer
            return sql.SQL("SELECT id FROM {} ORDER BY {} LIMIT {}").format(
                table, hamming, sql.Literal(int(limit))
            )
        return sql.SQL(
            "SELECT id FROM (SELECT id, embedding FROM {} ORDER BY {} LIMIT {}) AS candidates "
            "ORDER BY embedding {} %(q)s::vector LIMIT {}"
        ).format(
            table,
            hamming,
            sql.Literal(int(limit) * oversampling),
            op,
            sql.Literal(int(limit)),
        )
    return sql.SQL("SELECT id FROM {} ORDER BY embedding {} %(q)s::vector LIMIT {}").format(
        table, op, sql.Literal(int(limit))
    )


def exact_sql(want: EngineCollection, limit: int) -> sql.Composed:
    """The exact nearest `limit` ids to `%(q)s` by the original column's distance (run with
    index scans off, it is a sequential scan and sort)."""
    return sql.SQL("SELECT id FROM {} ORDER BY embedding {} %(q)s::vector LIMIT {}").format(
        sql.Identifier(pg_identifier(want.name)),
        sql.SQL(_DISTANCE[want.metric]),
        sql.Literal(int(limit)),
    )


def check_dimensions(want: EngineCollection) -> None:
    """Refuse what pgvector cannot index, before touching the database."""
    if want.dimension > _MAX_VECTOR_DIMENSIONS:
        raise EngineRejectedError(
            f"pgvector's vector type holds at most {_MAX_VECTOR_DIMENSIONS} dimensions, "
            f"the spec declares {want.dimension}"
        )
    limit = MAX_HNSW_DIMENSIONS[want.quantization]
    if want.dimension > limit:
        raise EngineRejectedError(
            f"pgvector's HNSW index takes at most {limit} dimensions with quantization "
            f"{want.quantization} (halfvec: 4000, bit: 64000); the spec declares {want.dimension}"
        )


class PgVectorEngine:
    """A pgvector collection driver; connects per call (the reconcile is infrequent)."""

    snapshot_extension = "pgcopy"

    def __init__(self, connection: Connection) -> None:
        self._conninfo = make_conninfo(
            connection.url,
            password=connection.password,
            connect_timeout=_CONNECT_TIMEOUT,
            application_name="tidal-operator",
        )
        self._host = connection.url

    def close(self) -> None:
        """Nothing is held between calls."""

    def sync(self, want: EngineCollection) -> CollectionState:
        """Create or update the table, index and ef_search; report size and activity."""
        check_dimensions(want)
        table = pg_identifier(want.name)
        with self._connect(f"pgvector collection {want.name}") as conn:
            applied: list[str] = []
            unapplied: list[str] = []
            self._ensure_extension(conn)
            created = conn.execute("SELECT to_regclass(%s)", [_quoted(table)]).fetchone() == (None,)
            if created:
                conn.execute(table_sql(want))
            else:
                self._check_column(conn, table, want)
            self._set_marker(conn, table, want)
            applied += self._ensure_index(conn, table, want, created=created)
            ef_applied, ef_unapplied = self._ensure_ef_search(conn)
            applied += ef_applied
            unapplied += ef_unapplied
            return self._observe(conn, table, want, created, applied, unapplied)

    def snapshot(self, want: EngineCollection, sink: BinaryIO) -> SnapshotInfo:
        """`COPY ... TO STDOUT (FORMAT binary)` of the table into `sink` (restorable with
        `COPY ... FROM STDIN (FORMAT binary)` into a table created by Tidal)."""
        table = pg_identifier(want.name)
        with self._connect(f"pgvector snapshot of {want.name}") as conn:
            copy_sql = sql.SQL(
                "COPY (SELECT id, embedding, payload FROM {}) TO STDOUT (FORMAT binary)"
            ).format(sql.Identifier(table))
            with conn.cursor() as cursor:
                with cursor.copy(copy_sql) as copy:
                    for chunk in copy:
                        sink.write(chunk)
                rows = cursor.rowcount
            version = conn.execute("SHOW server_version").fetchone()
        return SnapshotInfo(
            extension="pgcopy",
            manifest={
                "engine": "PGVector",
                "table": table,
                "columns": ["id bigint", f"embedding vector({want.dimension})", "payload jsonb"],
                "format": "PostgreSQL COPY binary",
                "serverVersion": version[0] if version else None,
                "restore": f'COPY "{table}" (id, embedding, payload) FROM STDIN (FORMAT binary)',
            },
            vectors=rows if rows >= 0 else None,
        )

    def restore(self, want: EngineCollection, source: BinaryIO, checksum: str | None) -> int:
        """Load a `snapshot` (COPY binary of id, embedding, payload) into the collection's table
        (created first, as `sync` does, when an offload dropped it); rows in the table
        afterwards. The caller checks `checksum` while reading the object, and restores only
        into an absent or empty collection."""
        self.sync(want)
        table = pg_identifier(want.name)
        with self._connect(f"pgvector restore of {want.name}") as conn:
            copy_sql = sql.SQL(
                "COPY {} (id, embedding, payload) FROM STDIN (FORMAT binary)"
            ).format(sql.Identifier(table))
            with conn.transaction(), conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
        return int(row[0]) if row else 0

    def drop(self, want: EngineCollection) -> None:
        """Drop the collection's table (after its snapshot was verified in the cold tier)."""
        table = pg_identifier(want.name)
        with self._connect(f"pgvector drop of {want.name}") as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

    def probe(self, want: EngineCollection, sample: int, k: int) -> RecallProbe:
        """Random rows queried through the index and exactly (module docstring)."""
        check_dimensions(want)
        table = sql.Identifier(pg_identifier(want.name))
        queries: list[ProbeQuery] = []
        with self._connect(f"pgvector probe of {want.name}") as conn, conn.transaction():
            counted = not self._untracked(conn)
            conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            rows = conn.execute(
                sql.SQL("SELECT id, embedding::text FROM {} ORDER BY random() LIMIT {}").format(
                    table, sql.Literal(int(sample))
                )
            ).fetchall()
            indexed_sql = query_sql(want, k + 1)
            found: list[tuple[int, list[int], float]] = []
            for point, text in rows:
                started = time.perf_counter()
                ids = [row[0] for row in conn.execute(indexed_sql, {"q": text}).fetchall()]
                found.append((int(point), ids, time.perf_counter() - started))
            ef_row = conn.execute("SHOW hnsw.ef_search").fetchone()
            conn.execute("SET LOCAL enable_indexscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            truth_sql = exact_sql(want, k + 1)
            for (point, ids, seconds), (_, text) in zip(found, rows, strict=True):
                truth = [row[0] for row in conn.execute(truth_sql, {"q": text}).fetchall()]
                queries.append(
                    ProbeQuery(
                        point=point,
                        indexed=tuple(int(i) for i in ids if i != point)[:k],
                        exact=tuple(int(i) for i in truth if i != point)[:k],
                        seconds=seconds,
                    )
                )
        kind = {
            VectorQuantization.None_: "vector",
            VectorQuantization.Scalar: "halfvec",
            VectorQuantization.Binary: "bit",
        }[want.quantization]
        path = f"pgvector HNSW over {kind} m={want.m}"
        if want.quantization is VectorQuantization.Binary:
            oversampling = search_oversampling(want)
            path += (
                f", re-ranked from x{oversampling} candidates"
                if oversampling
                else ", Hamming order (no rescore)"
            )
        path += f", hnsw.ef_search={ef_row[0] if ef_row else 'default'}"
        if counted:
            path += "; counted as activity (track_counts needs a superuser)"
        return RecallProbe(k=k, queries=tuple(queries), method=path)

    # --- internals ------------------------------------------------------------------------

    @staticmethod
    def _untracked(conn: psycopg.Connection[Any]) -> bool:
        """Turn statistics off for the transaction (a superuser's right); whether it worked."""
        try:
            with conn.transaction():  # a savepoint: a refusal must not abort the probe
                conn.execute("SET LOCAL track_counts = off")
        except pg_errors.InsufficientPrivilege:
            return False
        return True

    @contextmanager
    def _connect(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                yield conn
        except TidalError:
            raise
        except pg_errors.InsufficientPrivilege as exc:
            raise EngineRejectedError(f"{what}: {_first_line(exc)}") from exc
        except (pg_errors.FeatureNotSupported, pg_errors.ProgramLimitExceeded) as exc:
            raise EngineRejectedError(f"{what}: {_first_line(exc)}") from exc
        except pg_errors.UndefinedFile as exc:
            raise EngineRejectedError(
                f"{what}: the pgvector extension is not installed on the server: {_first_line(exc)}"
            ) from exc
        except psycopg.OperationalError as exc:
            raise EngineUnavailableError(
                f"{what}: PostgreSQL unreachable: {_first_line(exc)}", delay=15
            ) from exc
        except psycopg.Error as exc:
            raise EngineUnavailableError(f"{what}: {_first_line(exc)}", delay=15) from exc

    @staticmethod
    def _ensure_extension(conn: psycopg.Connection[Any]) -> None:
        installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
        if installed is None:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    @staticmethod
    def _check_column(conn: psycopg.Connection[Any], table: str, want: EngineCollection) -> None:
        row = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'embedding' AND NOT attisdropped",
            [_quoted(table)],
        ).fetchone()
        expected = f"vector({want.dimension})"
        if row is None or row[0] != expected:
            found = row[0] if row else "no embedding column"
            raise EngineRejectedError(
                f"table {table} exists with {found}; the spec declares {expected}: create a new "
                "VectorCollection (or drop the table)"
            )

    @staticmethod
    def _set_marker(conn: psycopg.Connection[Any], table: str, want: EngineCollection) -> None:
        marker = json.dumps({"managedBy": _TABLE_MARKER, "efSearch": want.ef_search})
        row = conn.execute(
            "SELECT obj_description(%s::regclass, 'pg_class')", [_quoted(table)]
        ).fetchone()
        if row is None or row[0] != marker:
            conn.execute(
                sql.SQL("COMMENT ON TABLE {} IS {}").format(
                    sql.Identifier(table), sql.Literal(marker)
                )
            )

    @staticmethod
    def _ensure_index(
        conn: psycopg.Connection[Any], table: str, want: EngineCollection, *, created: bool
    ) -> list[str]:
        wanted = index_name(want)
        rows = conn.execute(
            "SELECT c.relname, x.indisvalid FROM pg_index x "
            "JOIN pg_class c ON c.oid = x.indexrelid "
            "WHERE x.indrelid = %s::regclass AND obj_description(c.oid, 'pg_class') = %s",
            [_quoted(table), INDEX_COMMENT],
        ).fetchall()
        ours = {str(name): bool(valid) for name, valid in rows}
        applied: list[str] = []
        if not ours.get(wanted, False):
            if wanted in ours:  # a concurrent build that failed leaves an invalid index
                conn.execute(
                    sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(wanted))
                )
            conn.execute(index_sql(want))
            conn.execute(
                sql.SQL("COMMENT ON INDEX {} IS {}").format(
                    sql.Identifier(wanted), sql.Literal(INDEX_COMMENT)
                )
            )
            if not created:
                applied.append(
                    f"HNSW index rebuilt: {index_expression(want)} m={want.m} "
                    f"ef_construction={want.ef_construct}"
                )
        for name in ours:
            if name != wanted:
                conn.execute(
                    sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name))
                )
        return applied

    @staticmethod
    def _ensure_ef_search(conn: psycopg.Connection[Any]) -> tuple[list[str], list[str]]:
        rows = conn.execute(
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c "
            "WHERE c.relkind = 'r' AND obj_description(c.oid, 'pg_class') LIKE %s",
            ['{"managedBy": "tidal"%'],
        ).fetchall()
        declared = [_ef_search(row[0]) for row in rows]
        wanted = max((ef for ef in declared if ef is not None), default=None)
        current_row = conn.execute(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d "
            "ON d.oid = s.setdatabase WHERE d.datname = current_database() AND s.setrole = 0"
        ).fetchone()
        current = _setting(current_row[0] if current_row else None, "hnsw.ef_search")
        if current == (str(wanted) if wanted is not None else None):
            return [], []
        db = conn.execute("SELECT current_database()").fetchone()
        assert db is not None
        if wanted is None:
            statement = sql.SQL("ALTER DATABASE {} RESET hnsw.ef_search").format(
                sql.Identifier(db[0])
            )
            change = f"hnsw.ef_search reset (was {current})"
        else:
            statement = sql.SQL("ALTER DATABASE {} SET hnsw.ef_search = {}").format(
                sql.Identifier(db[0]), sql.Literal(int(wanted))
            )
            change = f"hnsw.ef_search {current or 'default'}->{wanted} for database {db[0]}"
        try:
            conn.execute(statement)
        except pg_errors.InsufficientPrivilege as exc:
            return [], [f"hnsw.ef_search={wanted}: {_first_line(exc)} (needs the database owner)"]
        return [change], []

    @staticmethod
    def _observe(
        conn: psycopg.Connection[Any],
        table: str,
        want: EngineCollection,
        created: bool,
        applied: list[str],
        unapplied: list[str],
    ) -> CollectionState:
        version_row = conn.execute("SHOW server_version_num").fetchone()
        version = int(version_row[0]) if version_row else 0
        last_scans = "GREATEST(s.last_seq_scan, s.last_idx_scan)" if version >= 160000 else "NULL"
        row = conn.execute(
            sql.SQL(
                "SELECT s.n_live_tup, c.reltuples, "
                "COALESCE(s.seq_scan, 0) + COALESCE(s.idx_scan, 0), {}, "
                "pg_total_relation_size(c.oid), "
                "COALESCE(pg_relation_size(to_regclass(%s)), 0), current_schema() "
                "FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.oid = %s::regclass"
            ).format(sql.SQL(last_scans)),
            [_quoted(index_name(want)), _quoted(table)],
        ).fetchone()
        server = conn.execute("SHOW server_version").fetchone()
        assert row is not None
        live, reltuples, scans, last_scan, disk, index_bytes, schema = row
        vectors = int(live) if live else max(0, int(reltuples or 0))
        return CollectionState(
            created=created,
            applied=tuple(applied),
            unapplied=tuple(unapplied),
            location=f"{schema}.{table}",
            vectors=vectors,
            health="ok",
            memory_bytes=int(index_bytes),
            disk_bytes=int(disk),
            query_count=int(scans),
            last_query_time=last_scan if isinstance(last_scan, datetime) else None,
            engine_version=f"PostgreSQL {server[0]}" if server else None,
        )


def _quoted(identifier: str) -> str:
    """An identifier quoted for `::regclass` / `to_regclass` text input."""
    return '"' + identifier.replace('"', '""') + '"'


def _ef_search(comment: str | None) -> int | None:
    try:
        value = json.loads(comment or "").get("efSearch")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None


def _setting(config: list[str] | None, name: str) -> str | None:
    for entry in config or []:
        key, _, value = entry.partition("=")
        if key == name:
            return value
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
