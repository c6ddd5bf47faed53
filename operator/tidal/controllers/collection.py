"""Kopf handlers for VectorCollection: trigger -> observe -> `reconcile.collection` -> apply.

What triggers a reconcile: create, update and resume; a periodic refresh (`tidal.runtime.refresh`:
measured size, idleness, engine state, drift); and changes of a Managed collection's StatefulSet
(pods ready, or deleted). Triggers of one collection are serialized and coalesced
(`tidal.runtime.triggers`) in a pool of the collection controller's own: engine calls can wait on
an unreachable database for seconds, and in a shared pool they would hold up the inference
controller's quick calls (gateway polls, price reads) queued behind them.

One reconcile (`_sync`, blocking): read the collection afresh; take what the indexes held when
its turn came (`tidal.runtime.indexes.capture_collection`: namespace policy, paired endpoints,
a Managed engine's children, pods and their nodes' regions, read from memory rather than with
six API calls per reconcile); sync the engine when `reconcile.sync_due` says
so (the driver interface `tidal.clients.vectorengine`) and record what it reported; take the SLO
probe `reconcile.probe_due` asks for (at most every `TIDAL_VECTOR_SLO_INTERVAL_SECONDS` per
collection); write the cold-tier snapshot `reconcile.snapshot_due` asks for; call the pure
`decide`; then carry out its Outcome: apply the children (a refusal writes `ApplyRejected`
instead), patch status, then post the Events.

Connection secrets are read only when `engine.connectionSecretRef` names one or Tidal generated
one (a Managed engine without it), and never logged or written into status or events. A
generated credential comes from `secrets` (the operating system's random source) here, once:
the Secret is created, never applied, so an existing one is never overwritten or rotated.

Prices come from the operator's one price cache (`tidal.runtime.services`), so the
`tidal-pricing` ConfigMap is read when due, not on every reconcile, and a refused one keeps the
last good prices.

Must not: decide anything (that is `tidal.reconcile.collection`), touch the Kubernetes API other
than through `tidal.clients`, block the event loop, or return values (Kopf would write them into
status).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from tidal.api.collection import KIND, PLURAL
from tidal.api.common import API_VERSION, GROUP, VERSION
from tidal.api.labels import LABEL_COLLECTION, LABEL_MANAGED_BY, MANAGER
from tidal.clients import kube, vectorkube
from tidal.clients.engines import connect
from tidal.clients.objectstore import StoreCredentials, credentials_from_secret
from tidal.clients.vectorengine import (
    Connection,
    EngineRejectedError,
    EngineUnavailableError,
    VectorEngine,
    offload,
    restore_from,
)
from tidal.errors import PermanentError, TidalError
from tidal.reconcile import collection as reconcile
from tidal.render.status import APPLY_REJECTED
from tidal.runtime import indexes as idx
from tidal.runtime import refresh
from tidal.runtime import settings as tidal_settings
from tidal.runtime.errors import kopf_errors
from tidal.runtime.objects import controlling_owner, post_events
from tidal.runtime.seen import WakeWatch
from tidal.runtime.services import services
from tidal.runtime.triggers import REFRESH, SPEC_CHANGED, WORLD_CHANGED, Mode, Triggers
from tidal.runtime.triggers import WAKE as WAKE_MODE

__all__ = ["child_statefulset_changed", "collection_wake_requested", "reconcile_collection"]

# The threads collection reconciles block in (engine calls can block for seconds).
_WORKERS: Final = 4
_triggers: Final = Triggers(_WORKERS, "tidal-collection")
# Refreshes run outside any handler, so they log (and name the collection) through their own.
_refresh_logger: Final = logging.getLogger("tidal.controllers.collection")
# Bytes of randomness in a generated password or API key (URL-safe base64: 43 characters).
_CREDENTIAL_BYTES: Final = 32
# A collection keeps nothing in process (`reconcile.collection` tables what it remembers).
_MEMORY: Final = reconcile.Memory()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf_errors
async def reconcile_collection(
    namespace: str | None, name: str | None, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Bring a collection (and a Managed engine) in line with its spec; write its status."""
    if namespace and name:
        await _trigger(namespace, name, SPEC_CHANGED, kwargs, logger)


async def _refresh(target: refresh.Target, indexes: Mapping[str, Any]) -> None:
    """A collection's periodic refresh: the same reconcile. Not a Kopf timer: see `refresh`."""
    await _trigger(target.namespace, target.name, REFRESH, indexes, _refresh_logger)


# Started with the inference controller's ticker, by its watch handlers (`refresh.start`).
refresh.register(
    KIND,
    tidal_settings.RECONCILE_INTERVAL_SECONDS,
    lambda indexes: refresh.targets_of(indexes.get(idx.COLLECTIONS) or {}),
    _refresh,
)


_wakes: Final = WakeWatch()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def collection_wake_requested(
    body: kopf.Body,
    event: kopf.RawEvent,
    namespace: str | None,
    name: str,
    uid: str | None,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Reconcile at once on a new `tidal.dev/wake-requested-at`, the wake convention both kinds
    share. (Kopf's update handler does not see it: the signals are left out of its diff base;
    the older `tidal.dev/wake` is not, so its update handler wakes the collection.)"""
    if namespace is None or not uid:
        return
    wake = _wakes.new_wake(uid, event.get("type"), body.metadata.annotations)
    if wake is None:
        return
    logger.info("Wake requested at %s; reconciling now", wake)
    await _trigger(namespace, name, WAKE_MODE, kwargs, logger)


@kopf.on.event(
    "apps",
    "v1",
    "statefulsets",
    labels={LABEL_MANAGED_BY: MANAGER, LABEL_COLLECTION: kopf.PRESENT},
)
@kopf_errors
async def child_statefulset_changed(body: kopf.Body, logger: kopf.Logger, **kwargs: Any) -> None:
    """Refresh the owning collection when its StatefulSet changes (pods ready, or deleted)."""
    namespace = body.metadata.namespace
    # By ownerReference: labels can be copied, the controller reference cannot.
    owner = controlling_owner(body.metadata, KIND)
    if namespace is not None and owner is not None:
        await _trigger(namespace, owner, WORLD_CHANGED, kwargs, logger)


async def _trigger(
    namespace: str, name: str, mode: Mode, indexes: Mapping[str, Any], logger: kopf.Logger
) -> None:
    """Reconcile one collection, serialized with and coalesced into its other triggers."""

    def prepare(mode: Mode) -> Callable[[], None]:
        # On the event loop, when the collection's turn has come: the indexes as they are now.
        catalog = services.pricing.current().catalog
        world = idx.capture_collection(indexes, namespace, name, catalog)
        return lambda: _sync(namespace, name, mode, world, logger)

    await _triggers.trigger((namespace, name), mode, prepare)


# --- the reconcile ------------------------------------------------------------------------------


def _sync(
    namespace: str, name: str, mode: Mode, world: reconcile.World, logger: kopf.Logger
) -> None:
    """Ask the engine, decide, and carry out the Outcome for one collection (blocking)."""
    raw = kube.get_object(API_VERSION, KIND, namespace, name)
    if raw is None or not reconcile.due(raw, require_observed=mode.require_observed):
        return
    now = datetime.now(UTC)
    target = reconcile.target(raw)
    if target is not None:  # else an invalid spec: decide reports it
        read_secret = _secret_reader(namespace)
        world = dataclasses.replace(
            world,
            catalog=services.pricing.refresh().catalog,
            credentials=_credentials(namespace, raw, target, read_secret),
            claim_events={
                claim: tuple(vectorkube.claim_events(namespace, claim, uid))
                for claim, uid in reconcile.volume_events_due(world, now)
            },
        )
        offloaded = reconcile.is_offloaded(raw)
        if reconcile.sync_due(target, world) and not offloaded:
            world = dataclasses.replace(world, engine=_engine_sync(target, read_secret))
        restore = reconcile.restore_due(raw, world, now)
        if restore is not None:
            restored = _restore(namespace, target, restore, read_secret)
            world = dataclasses.replace(world, restore=restored)
            if restored.error is None:
                world = dataclasses.replace(world, engine=_engine_sync(target, read_secret))
        probe = reconcile.probe_due(
            raw,
            world,
            now,
            interval_seconds=tidal_settings.VECTOR_SLO_INTERVAL_SECONDS,
            sample=tidal_settings.VECTOR_SLO_SAMPLE,
        )
        if probe is not None:
            world = dataclasses.replace(world, probe=_probe(target, probe, read_secret))
        snapshot = reconcile.snapshot_due(raw, world, now)
        if snapshot is not None:
            report = _offload(namespace, target, snapshot, read_secret)
            world = dataclasses.replace(world, snapshot=report)
    outcome = reconcile.decide(raw, world, _MEMORY, now)
    if outcome.woke:
        logger.info("Wake requested collection=%s/%s", namespace, name)
    try:
        for child in outcome.children:
            kube.apply(child)
    except PermanentError as exc:
        outcome = reconcile.rejected(raw, APPLY_REJECTED, str(exc), now, outcome)
    if outcome.status is not None:
        kube.patch_status(API_VERSION, KIND, namespace, name, dict(outcome.status))
    # After status, as for endpoints: a failed status write retries the reconcile, and Events
    # posted before it would be posted again.
    post_events(raw, logger, outcome.events, "collection")
    logger.debug(
        "Reconciled VectorCollection vectors=%s replicas=%s hibernated=%s",
        outcome.vectors,
        outcome.replicas,
        outcome.hibernated,
    )


# --- the engine ---------------------------------------------------------------------------------


def _engine_sync(target: reconcile.Target, read_secret: SecretReader) -> reconcile.EngineReport:
    """Create/update the collection in the engine and read it back; a failure is reported, not
    raised (the reconcile goes on: status is still worth writing)."""
    try:
        engine = _connect(target, read_secret)
        try:
            state = engine.sync(target.want)
        finally:
            engine.close()
    except EngineRejectedError as exc:
        return reconcile.EngineReport(failure=reconcile.EngineFailure.REJECTED, message=str(exc))
    except EngineUnavailableError as exc:
        return reconcile.EngineReport(failure=reconcile.EngineFailure.UNREACHABLE, message=str(exc))
    except PermanentError as exc:
        failure = reconcile.EngineFailure.BAD_CONNECTION
        return reconcile.EngineReport(failure=failure, message=str(exc))
    return reconcile.EngineReport(state=state)


def _probe(
    target: reconcile.Target, probe: reconcile.Probe, read_secret: SecretReader
) -> reconcile.ProbeReport:
    """Query a sample through the index and exactly; a failure is reported, not raised."""
    try:
        engine = _connect(target, read_secret)
        try:
            return reconcile.ProbeReport(probe=engine.probe(probe.want, probe.sample, probe.k))
        finally:
            engine.close()
    except TidalError as exc:
        return reconcile.ProbeReport(error=str(exc))


def _offload(
    namespace: str,
    target: reconcile.Target,
    snapshot: reconcile.Snapshot,
    read_secret: SecretReader,
) -> reconcile.SnapshotReport:
    """Write one snapshot to the cold tier and verify it; with `snapshot.evict`, delete the
    engine's copy only then. A failure is reported (the engine keeps its data), never a failed
    reconcile."""
    try:
        engine = _connect(target, read_secret)
        try:
            stored = offload(
                engine,
                snapshot.want,
                snapshot.base_uri,
                snapshot.key,
                _store_credentials(namespace, snapshot.secret),
            )
            evicted = False
            if snapshot.evict:
                refused = reconcile.eviction_refused(
                    snapshot.want.name,
                    stored.uri,
                    stored.vectors,
                    engine.sync(snapshot.want).vectors,
                )
                if refused is not None:
                    return reconcile.SnapshotReport(error=refused, request=snapshot.request)
                engine.drop(snapshot.want)
                evicted = True
        finally:
            engine.close()
    except TidalError as exc:
        return reconcile.SnapshotReport(error=str(exc), request=snapshot.request)
    return reconcile.SnapshotReport(
        uri=stored.uri,
        size=stored.size,
        sha256=stored.sha256,
        vectors=stored.vectors,
        evicted=evicted,
        request=snapshot.request,
    )


def _restore(
    namespace: str,
    target: reconcile.Target,
    restore: reconcile.Restore,
    read_secret: SecretReader,
) -> reconcile.RestoreReport:
    """Load the verified snapshot into the engine; the vector count must match the snapshot's.
    A failure is reported (the snapshot stays in the cold tier, the engine keeps no partial
    copy), never a failed reconcile."""
    started = time.monotonic()
    try:
        engine = _connect(target, read_secret)
        try:
            vectors = restore_from(
                engine,
                restore.want,
                restore.uri,
                restore.sha256,
                _store_credentials(namespace, restore.secret),
                restore.vectors,
            )
        finally:
            engine.close()
    except TidalError as exc:
        return reconcile.RestoreReport(error=str(exc), request=restore.request)
    return reconcile.RestoreReport(
        vectors=vectors, seconds=time.monotonic() - started, request=restore.request
    )


def _store_credentials(namespace: str, secret: str | None) -> StoreCredentials:
    """The cold tier's credentials from `coldTier.credentialsSecretRef` (read only when set)."""
    if secret is None:
        return credentials_from_secret(None)
    data = vectorkube.get_secret_data(namespace, secret)
    if data is None:
        raise PermanentError(f"Secret {secret} (coldTier.credentialsSecretRef) not found")
    return credentials_from_secret(data)


def _credentials(
    namespace: str, raw: dict[str, Any], target: reconcile.Target, read_secret: SecretReader
) -> reconcile.CredentialsReport | None:
    """Make sure the generated credentials Secret exists (None: the spec names its own): created
    once with a fresh random value when absent, otherwise left as it is (the engine initialised
    with that value)."""
    if not target.generated or target.secret is None:
        return None
    name = target.secret
    data = read_secret(name)
    if data is None:
        value = secrets.token_urlsafe(_CREDENTIAL_BYTES)
        try:
            created = vectorkube.create_secret(reconcile.credentials_secret(raw, value))
        except TidalError as exc:  # RBAC not granted, or the API server refused: say so
            return reconcile.CredentialsReport(name=name, create_failed=str(exc))
        if created:
            return reconcile.CredentialsReport(name=name, created=True)
        data = read_secret(name)  # another writer won the race
    if not (data or {}).get(target.key):
        return reconcile.CredentialsReport(name=name, missing_key=target.key)
    return reconcile.CredentialsReport(name=name)


SecretReader = Callable[[str], dict[str, str] | None]
"""A Secret's data by name in the collection's namespace (None: there is no such Secret)."""


def _secret_reader(namespace: str) -> SecretReader:
    """One GET per Secret for the whole reconcile: the generated Secret's check and the engine
    steps (sync, restore, probe, offload), which each connect, all read the same connection
    Secret. Only a Secret found is kept: an absent one is read again (the check may have just
    created it), and a failed read raises, so the next step tries again and reports its own
    failure."""
    read: dict[str, dict[str, str]] = {}

    def get(name: str) -> dict[str, str] | None:
        if name in read:
            return read[name]
        data = vectorkube.get_secret_data(namespace, name)
        if data is not None:
            read[name] = data
        return data

    return get


def _connect(target: reconcile.Target, read_secret: SecretReader) -> VectorEngine:
    """A connection to the engine; the Secret is read only when there is one (referenced by the
    spec, or generated)."""
    secret = read_secret(target.secret) if target.secret else None
    address = reconcile.address(target, secret)
    connection = Connection(url=address.url, api_key=address.api_key, password=address.password)
    return connect(target.engine, connection)
