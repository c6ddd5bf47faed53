"""An endpoint's GPU utilization history: the input of the `Auto` capacity policy.

Owns: taking one sample of the endpoint's GPU utilization from node telemetry (the agent's
per-pod attribution), keeping a bounded, downsampled window of samples, and the compact JSON
the controller stores in the endpoint's `tidal.api.labels.UTILIZATION_HISTORY` annotation so the
history survives operator restarts.

Must not: read the clock (`now` is a parameter), talk to the API server (the controller reads
and writes the annotation), or decide anything from the history (`placement.planner` does).

Downsampling: samples falling in the same `HISTORY_BUCKET_SECONDS` bucket merge into their
running mean, so a day is at most 288 samples whatever the reconcile interval, and the annotation
stays around 4 KiB. The controller should write the annotation only when it changed and at most
once per bucket: annotation changes wake Kopf's update handlers.

Annotation format, version 1 (times in whole seconds since the epoch, UTC):

    {"v": 1, "t0": 1764432000,
     "s": [[dt, utilizationPermille, replicas, observations], ...]}

`dt` is the sample's offset from `t0`; utilization is stored in tenths of a percent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Set
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeGuard

from tidal.api import telemetry
from tidal.placement.model import FleetSnapshot, History, UtilizationSample

__all__ = [
    "HISTORY_BUCKET_SECONDS",
    "HISTORY_WINDOW_SECONDS",
    "MAX_SAMPLES",
    "append",
    "dumps",
    "loads",
    "newest_bucket",
    "sample_from_fleet",
]

FORMAT_VERSION: Final = 1
# A day is kept (about 4 KiB), though Auto reads only the last hour
# (`planner.AUTO_LOAD_WINDOW_SECONDS`): a day shows the daily cycle for whoever looks.
HISTORY_WINDOW_SECONDS: Final = 24 * 3600
HISTORY_BUCKET_SECONDS: Final = 300
# A hard bound whatever the caller's window and bucket: the annotation must stay small.
MAX_SAMPLES: Final = 24 * 3600 // 300 + 1


def sample_from_fleet(
    fleet: FleetSnapshot, pod_keys: Set[tuple[str, str]], now: datetime
) -> UtilizationSample | None:
    """The endpoint's mean GPU utilization now, from the telemetry of the nodes its pods run on.

    `pod_keys` are the endpoint's pods as (namespace, name). A pod's utilization is its
    attributed `utilizationPercent`, or else the mean of the GPUs it holds (`gpuIndexes`): a GPU
    serves one pod, so the device's number is the pod's. Stale telemetry counts for nothing.

    No pods at all is a measurement (the endpoint carried no load: a zero sample), while pods
    without any usable telemetry are not (None): unknown must never read as idle.
    """
    if not pod_keys:
        return UtilizationSample(time=now, utilization_percent=0.0, replicas=0)
    per_pod: dict[tuple[str, str], list[float]] = {}
    for node in fleet.nodes:
        doc = node.telemetry
        if doc is None or now - doc.time > timedelta(seconds=telemetry.STALE_AFTER_SECONDS):
            continue
        by_index = {g.index: g.utilization_percent for g in doc.gpus}
        for pod in doc.pods:
            key = (pod.namespace, pod.name)
            if key not in pod_keys:
                continue
            value = pod.utilization_percent
            if value is None:
                devices = [by_index.get(i) for i in pod.gpu_indexes]
                known = [d for d in devices if d is not None]
                value = sum(known) / len(known) if known else None
            if value is not None:
                per_pod.setdefault(key, []).append(value)
    if not per_pod:
        return None
    # One mean per pod first, so a pod the agent lists twice does not weigh double.
    means = [sum(values) / len(values) for _, values in sorted(per_pod.items())]
    return UtilizationSample(
        time=now, utilization_percent=sum(means) / len(means), replicas=len(means)
    )


def append(
    history: History,
    sample: UtilizationSample,
    window_seconds: int = HISTORY_WINDOW_SECONDS,
    *,
    bucket_seconds: int = HISTORY_BUCKET_SECONDS,
) -> History:
    """`history` with `sample` added, samples older than `window_seconds` before it dropped.

    A sample in the same bucket as the newest one merges into it (running means of utilization
    and replicas, weighted by observations). A sample older than the newest one is ignored: the
    history only moves forward, so a clock step back cannot reorder it.
    """
    samples = list(history.samples)
    if samples and sample.time < samples[-1].time:
        return history
    same_bucket = bool(samples) and (
        _bucket(samples[-1].time, bucket_seconds) == _bucket(sample.time, bucket_seconds)
    )
    if same_bucket:
        samples[-1] = _merge(samples[-1], sample)
    else:
        samples.append(sample)
    start = sample.time - timedelta(seconds=window_seconds)
    kept = [s for s in samples if s.time >= start]
    return History(samples=tuple(kept[-MAX_SAMPLES:]))


def dumps(history: History) -> str:
    """The history as the annotation's compact JSON (times to the second, utilization to 0.1%)."""
    if not history.samples:
        return json.dumps({"v": FORMAT_VERSION, "t0": 0, "s": []}, separators=(",", ":"))
    t0 = _epoch(history.samples[0].time)
    rows = [
        [
            _epoch(s.time) - t0,
            round(s.utilization_percent * 10),
            s.replicas,
            s.observations,
        ]
        for s in history.samples
    ]
    return json.dumps({"v": FORMAT_VERSION, "t0": t0, "s": rows}, separators=(",", ":"))


def loads(raw: str | None) -> History:
    """The annotation read back; anything missing, garbled or of another version is empty
    history (Auto then behaves as SpotPreferred until it has learned again)."""
    document = _document(raw)
    if document is None:
        return History()
    t0, rows = document
    samples: list[UtilizationSample] = []
    for row in rows:
        sample = _row(t0, row)
        if sample is None:
            return History()
        if samples and sample.time < samples[-1].time:
            return History()
        samples.append(sample)
    return History(samples=tuple(samples[-MAX_SAMPLES:]))


def newest_bucket(raw: str | None, bucket_seconds: int = HISTORY_BUCKET_SECONDS) -> int | None:
    """The bucket of the newest sample `loads(raw)` holds (None: it holds none), without
    building the samples: the reconcile asks it of every annotation it sees (is a write due?),
    and a day of samples is 288 rows."""
    document = _document(raw)
    if document is None:
        return None
    t0, rows = document
    newest: int | None = None
    for row in rows:
        if not _valid_row(row):
            return None
        time = t0 + row[0]
        if not 0 <= time <= _LATEST_EPOCH:
            # A time `datetime` may not hold: `loads` decides (and fails) as it does.
            samples = loads(raw).samples
            return _bucket(samples[-1].time, bucket_seconds) if samples else None
        if newest is not None and time < newest:
            return None
        newest = time
    return None if newest is None else newest // max(1, bucket_seconds)


# The last second of year 9999: any whole second from the epoch to it is a `datetime`.
_LATEST_EPOCH: Final = 253402300799


def _document(raw: str | None) -> tuple[int, list[Any]] | None:
    """The annotation's `t0` and rows, when it is of this version (rows not yet checked)."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION:
        return None
    t0, rows = doc.get("t0"), doc.get("s")
    if not _is_int(t0) or not isinstance(rows, list):
        return None
    return t0, rows


def _valid_row(row: Any) -> bool:
    """Four integers (JSON's: `bool` is not one), the utilization within 0-1000 permille, the
    replicas not negative, at least one observation."""
    if type(row) is not list or len(row) != 4:
        return False
    _dt, permille, replicas, observations = row
    return (
        type(_dt) is int
        and type(permille) is int
        and type(replicas) is int
        and type(observations) is int
        and 0 <= permille <= 1000
        and replicas >= 0
        and observations >= 1
    )


def _row(t0: int, row: Any) -> UtilizationSample | None:
    if not _valid_row(row):
        return None
    dt, permille, replicas, observations = row
    return UtilizationSample(
        time=datetime.fromtimestamp(t0 + dt, tz=UTC),
        utilization_percent=permille / 10,
        replicas=replicas,
        observations=observations,
    )


def _merge(old: UtilizationSample, new: UtilizationSample) -> UtilizationSample:
    """One sample for both that keeps their mean load (replicas x utilization), which is what
    the Auto rule reads. Replicas round up, so the utilization that carries that load never
    exceeds 100%."""
    count = old.observations + new.observations

    def mean(a: float, b: float) -> float:
        return (a * old.observations + b * new.observations) / count

    load = mean(
        old.replicas * old.utilization_percent / 100, new.replicas * new.utilization_percent / 100
    )
    replicas = math.ceil(round(mean(old.replicas, new.replicas), 6))
    utilization = (
        min(100.0, load * 100 / replicas)
        if replicas
        else mean(old.utilization_percent, new.utilization_percent)
    )
    return UtilizationSample(
        time=new.time, utilization_percent=utilization, replicas=replicas, observations=count
    )


def _bucket(time: datetime, bucket_seconds: int) -> int:
    return _epoch(time) // max(1, bucket_seconds)


def _epoch(time: datetime) -> int:
    return int(time.timestamp())


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
