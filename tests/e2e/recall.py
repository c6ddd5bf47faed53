"""Recall@k computed offline with numpy brute force, to check the operator's probe against.

The probe (`tidal.clients.qdrant` / `tidal.clients.pgvector` `probe`) asks the engine for exact
answers; these helpers compute the same answers from the vectors the test wrote, independently
of any engine, so a wrong distance, a self-match left in, or a wrong average shows up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from tidal.api.collection import Metric

__all__ = ["exact_neighbours", "gaussian_vectors", "recall_against"]


def gaussian_vectors(count: int, dimension: int, seed: int = 7) -> npt.NDArray[np.float32]:
    """`count` random vectors (no ties in any ranking)."""
    return np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)


def exact_neighbours(
    vectors: npt.NDArray[np.float32], point: int, k: int, metric: Metric = Metric.Cosine
) -> list[int]:
    """The ids (row numbers) of the exact top `k` neighbours of row `point`, itself excluded."""
    query = vectors[point]
    if metric is Metric.Cosine:
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        scores = unit @ (query / np.linalg.norm(query))
    elif metric is Metric.Dot:
        scores = vectors @ query
    else:
        scores = -np.linalg.norm(vectors - query, axis=1)
    scores[point] = -np.inf
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


def recall_against(
    vectors: npt.NDArray[np.float32], indexed: Mapping[int, Sequence[int]], k: int
) -> float:
    """Mean recall@k, in percent, of `indexed` answers (point -> ids) against numpy's exact."""
    shares = [
        len(set(found[:k]) & set(exact_neighbours(vectors, point, k))) / k
        for point, found in indexed.items()
    ]
    return 100.0 * sum(shares) / len(shares)
