"""In-process memory of each InferenceEndpoint, by uid: its latest measurement and the
`reconcile.endpoint.Memory` its last reconcile returned.

Owns: the two maps, their lock (reconciles of different endpoints run in different threads),
measuring an endpoint through Prometheus when it is due, and forgetting a deleted endpoint.
After a restart both start empty: the first refresh measures again and the utilization history
is read back from its annotation. Must not: decide anything beyond "is a measurement due".
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime

from tidal.api.endpoint import Engine
from tidal.clients.prometheus import PrometheusReader
from tidal.errors import TidalError
from tidal.reconcile.endpoint import Memory
from tidal.reconcile.observation import measurement_due
from tidal.reconcile.world import Measured
from tidal.runtime import settings as tidal_settings
from tidal.slo import Measurement

__all__ = ["EndpointMemory", "measure"]


class EndpointMemory:
    """Measurements and reconcile memory per endpoint uid; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._measured: dict[str, Measured] = {}
        self._memory: dict[str, Memory] = {}

    def measured(self, uid: str) -> Measured | None:
        with self._lock:
            return self._measured.get(uid)

    def keep_measured(self, uid: str, measured: Measured) -> None:
        with self._lock:
            self._measured[uid] = measured

    def memory(self, uid: str) -> Memory:
        with self._lock:
            return self._memory.get(uid, Memory())

    def keep(self, uid: str, memory: Memory) -> None:
        with self._lock:
            self._memory[uid] = memory

    def forget(self, uid: str) -> None:
        with self._lock:
            self._measured.pop(uid, None)
            self._memory.pop(uid, None)

    async def measure_if_due(
        self,
        reader: PrometheusReader,
        namespace: str,
        name: str,
        uid: str,
        raw_engine: str | None,
        logger: logging.Logger,
    ) -> None:
        """Measure the endpoint (in a thread) unless it was measured less than
        `TIDAL_SLO_INTERVAL_SECONDS` ago; an outage is logged once, not once per tick."""
        now = datetime.now(UTC)
        if not self.measurement_due(uid, now, tidal_settings.SLO_INTERVAL_SECONDS):
            return
        try:
            engine = Engine(raw_engine or Engine.VLLM)
        except ValueError:
            return  # an invalid spec: the reconcile reports it
        last = self.measured(uid)
        measured = await asyncio.to_thread(measure, reader, namespace, name, engine, now)
        if measured.error is not None and (last is None or last.error is None):
            logger.warning(
                "Cannot measure service levels endpoint=%s/%s error=%s",
                namespace,
                name,
                measured.error,
            )
        self.keep_measured(uid, measured)

    def measurement_due(self, uid: str, now: datetime, interval_seconds: float) -> bool:
        """Whether the endpoint was last measured `interval_seconds` or more before `now`."""
        last = self.measured(uid)
        return measurement_due(last.at if last else None, now, interval_seconds)


def measure(
    reader: PrometheusReader, namespace: str, name: str, engine: Engine, now: datetime
) -> Measured:
    """The endpoint's service levels now (blocking); a failure is no data with the reason."""
    try:
        return Measured(reader.measure(namespace, name, engine), now)
    except TidalError as exc:
        return Measured(Measurement(window_seconds=reader.window_seconds), now, str(exc))
