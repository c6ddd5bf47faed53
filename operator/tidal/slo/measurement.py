"""What was measured about service levels: the SLO vocabulary (an endpoint's window, a collection's
recall probe).

`tidal.clients.prometheus` produces a `Measurement`; `tidal.slo.evaluation` judges it against the
spec; `tidal.cost` reads its tokens per second. The vector engine drivers (`tidal.clients.qdrant`,
`tidal.clients.pgvector`) produce a `RecallProbe`; `tidal.slo.collection` judges it. Defining
them here, below both, keeps the pure decisions free of any client import.

Owns: immutable data only. Must not: query anything, read the clock, or decide.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

__all__ = ["Measurement", "ProbeQuery", "RecallProbe"]


@dataclasses.dataclass(frozen=True)
class Measurement:
    """p95 latency, p95 time to first token and generation throughput over one window.

    `None` means *no data*: no series matched, the window held no requests, or the source does
    not measure that quantity (TGI has no time-to-first-token metric). It never means zero, and
    zero never stands in for it. `tokens_per_second` may be a measured 0.0 (series exist, nothing
    was generated), which is different from `None` (nothing to measure).
    """

    window_seconds: int
    p95_latency_seconds: float | None = None
    p95_time_to_first_token_seconds: float | None = None
    tokens_per_second: float | None = None
    # Whose metrics these are: "gateway" (Tidal's own, preferred), or the engine's ("vllm",
    # "tgi", ...); None when nothing was found.
    source: str | None = None
    # The instant the window ends (the newest sample every series had when it was measured);
    # None when the source could not say, and the measurement was taken at the time of asking.
    window_end: datetime | None = None

    @property
    def has_data(self) -> bool:
        """True when at least one quantity was measured."""
        return any(
            value is not None
            for value in (
                self.p95_latency_seconds,
                self.p95_time_to_first_token_seconds,
                self.tokens_per_second,
            )
        )

    def describe(self) -> str:
        """Where the numbers came from, for status and cost `basis`: e.g. `vllm over 300s`."""
        source = self.source if self.source is not None else "no metrics"
        return f"{source} over {self.window_seconds}s"


@dataclasses.dataclass(frozen=True)
class ProbeQuery:
    """One sampled stored vector queried twice: the ids the configured index returned
    (`indexed`, best first), the ids exact search returned (`exact`), and how long the indexed
    query took (`seconds`, as the client saw it). The sampled point itself is left out of both."""

    point: int | str
    indexed: tuple[int | str, ...]
    exact: tuple[int | str, ...]
    seconds: float


@dataclasses.dataclass(frozen=True)
class RecallProbe:
    """What a vector engine driver measured for one collection: `queries` for the top `k`
    through `method` (a one-line description of the index path: HNSW ef, quantization,
    rescore), and the exact search each was compared with."""

    k: int
    queries: tuple[ProbeQuery, ...]
    method: str
