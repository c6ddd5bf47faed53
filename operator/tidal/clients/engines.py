"""Which driver talks to a vector engine: the one place that knows every `VectorEngine`.

Owns `connect`, the factory from `VectorEngineType` to a driver. It sits apart from
`tidal.clients.vectorengine` (the Protocol, results, errors and cold tier every driver
implements) so that the drivers import the interface and this module imports the drivers, and
no import goes back up: `vectorengine` <- `qdrant`, `pgvector` <- `engines`.

Must not: hold connections or decide anything; the controller owns when to connect.
"""

from __future__ import annotations

from tidal.api.collection import VectorEngineType
from tidal.clients.pgvector import PgVectorEngine
from tidal.clients.qdrant import QdrantEngine
from tidal.clients.vectorengine import Connection, VectorEngine

__all__ = ["connect"]


def connect(engine: VectorEngineType, connection: Connection) -> VectorEngine:
    """A driver for `engine` at `connection` (connecting lazily or at once, per engine)."""
    if engine is VectorEngineType.PGVector:
        return PgVectorEngine(connection)
    return QdrantEngine(connection)
