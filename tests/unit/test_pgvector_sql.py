"""The pgvector driver's SQL: table, HNSW index per quantization and metric, limits, naming.

The driver's behaviour against a real PostgreSQL is covered by tests/e2e/test_vector_collection.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import sql

from tidal.api.collection import Metric, VectorQuantization
from tidal.clients.pgvector import (
    check_dimensions,
    exact_sql,
    index_expression,
    index_name,
    index_sql,
    query_sql,
    table_sql,
)
from tidal.clients.vectorengine import EngineRejectedError
from tidal.render.collection import EngineCollection


def want(**overrides: Any) -> EngineCollection:
    fields: dict[str, Any] = {
        "name": "search_docs",
        "dimension": 384,
        "metric": Metric.Cosine,
        "m": 16,
        "ef_construct": 100,
        "ef_search": None,
        "quantization": VectorQuantization.None_,
        "rescore": True,
        "shards": 1,
        "replicas": 1,
        "on_disk": False,
    }
    fields.update(overrides)
    return EngineCollection(**fields)


def text(composed: sql.Composable) -> str:
    # as_string without a connection quotes identifiers and literals the standard way.
    return composed.as_string(None)


def test_the_table_has_an_id_a_typed_vector_and_a_payload() -> None:
    assert text(table_sql(want())) == (
        'CREATE TABLE IF NOT EXISTS "search_docs" (id bigint PRIMARY KEY, '
        "embedding vector(384) NOT NULL, payload jsonb)"
    )


def test_identifiers_are_quoted() -> None:
    assert '"we""ird"' in text(table_sql(want(name='we"ird')))


@pytest.mark.parametrize(
    ("metric", "quantization", "expression"),
    [
        (Metric.Cosine, VectorQuantization.None_, "embedding vector_cosine_ops"),
        (Metric.Dot, VectorQuantization.None_, "embedding vector_ip_ops"),
        (Metric.Euclidean, VectorQuantization.None_, "embedding vector_l2_ops"),
        (Metric.Cosine, VectorQuantization.Scalar, "(embedding::halfvec(384)) halfvec_cosine_ops"),
        (Metric.Euclidean, VectorQuantization.Scalar, "(embedding::halfvec(384)) halfvec_l2_ops"),
        (
            Metric.Cosine,
            VectorQuantization.Binary,
            "(binary_quantize(embedding)::bit(384)) bit_hamming_ops",
        ),
    ],
)
def test_index_expression_per_metric_and_quantization(
    metric: Metric, quantization: VectorQuantization, expression: str
) -> None:
    assert index_expression(want(metric=metric, quantization=quantization)) == expression


def test_the_index_is_built_concurrently_with_the_declared_parameters() -> None:
    statement = text(index_sql(want(m=24, ef_construct=200)))
    name = index_name(want(m=24, ef_construct=200))
    assert statement == (
        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON "search_docs" USING hnsw '
        "(embedding vector_cosine_ops) WITH (m = 24, ef_construction = 200)"
    )


def test_index_names_follow_the_definition_not_ef_search() -> None:
    base = index_name(want())
    assert base.startswith("search_docs_hnsw_")
    assert index_name(want(ef_search=200)) == base
    assert index_name(want(m=32)) != base
    assert index_name(want(quantization=VectorQuantization.Scalar)) != base
    assert len(index_name(want(name="n" * 80)).encode()) <= 63


@pytest.mark.parametrize(
    ("quantization", "dimension", "ok"),
    [
        (VectorQuantization.None_, 2000, True),
        (VectorQuantization.None_, 2001, False),
        (VectorQuantization.Scalar, 4000, True),
        (VectorQuantization.Scalar, 4001, False),
        (VectorQuantization.Binary, 16000, True),
        (VectorQuantization.Binary, 16001, False),  # the vector column itself stops at 16000
    ],
)
def test_pgvector_dimension_limits_are_refused_before_any_sql(
    quantization: VectorQuantization, dimension: int, ok: bool
) -> None:
    if ok:
        check_dimensions(want(quantization=quantization, dimension=dimension))
    else:
        with pytest.raises(EngineRejectedError, match="at most"):
            check_dimensions(want(quantization=quantization, dimension=dimension))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {},
            'SELECT id FROM "search_docs" ORDER BY embedding <=> %(q)s::vector LIMIT 11',
        ),
        (
            {"metric": Metric.Euclidean, "quantization": VectorQuantization.Scalar},
            'SELECT id FROM "search_docs" ORDER BY embedding::halfvec(384) <-> '
            "%(q)s::halfvec(384) LIMIT 11",
        ),
        (
            {"metric": Metric.Dot, "quantization": VectorQuantization.Binary},
            'SELECT id FROM (SELECT id, embedding FROM "search_docs" ORDER BY '
            "binary_quantize(embedding)::bit(384) <~> binary_quantize(%(q)s::vector)::bit(384) "
            "LIMIT 44) AS candidates ORDER BY embedding <#> %(q)s::vector LIMIT 11",
        ),
        (
            {"quantization": VectorQuantization.Binary, "rescore": False},
            'SELECT id FROM "search_docs" ORDER BY binary_quantize(embedding)::bit(384) <~> '
            "binary_quantize(%(q)s::vector)::bit(384) LIMIT 11",
        ),
    ],
)
def test_queries_order_by_the_indexed_expression(changes: dict[str, Any], expected: str) -> None:
    # The ORDER BY must be the index's own expression and operator class, or PostgreSQL scans.
    assert text(query_sql(want(**changes), 11)) == expected


@pytest.mark.parametrize("quantization", [VectorQuantization.Scalar, VectorQuantization.Binary])
def test_exact_search_orders_by_the_original_column_whatever_the_index(
    quantization: VectorQuantization,
) -> None:
    assert text(exact_sql(want(quantization=quantization), 11)) == (
        'SELECT id FROM "search_docs" ORDER BY embedding <=> %(q)s::vector LIMIT 11'
    )
