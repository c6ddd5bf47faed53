"""The gateway's live view: endpoints, their ready replicas, and the load on each.

Owns: `Catalog` (routes and replicas as the watches last reported them, kept in step by
`replace_*`/`apply_*`), `EndpointState` (per endpoint: backends, in-flight and held counts,
last activity, a change notification for held requests) and least-in-flight balancing
(`pick`). Must not: do IO or know HTTP; everything here runs on the event loop's thread, so it
needs no locks (the watch threads hand their events over with `call_soon_threadsafe`).

Balancing: among the endpoint's backends not yet tried by this request, the one with the fewest
requests in flight from this gateway replica; ties rotate, so an idle pool still spreads
requests. A backend that just refused a connection sits out `cooldown_seconds` for every
request (pods die before the watch says so), unless nothing else is left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from tidal.api.signals import endpoint_key
from tidal.gateway.addressing import Addresses
from tidal.gateway.routing import (
    Ambiguous,
    NotFound,
    Replica,
    Route,
    replica_from_pod,
    resolve,
    route_from_endpoint,
)

__all__ = ["Backend", "Catalog", "EndpointState"]

Object = Mapping[str, Any]


@dataclasses.dataclass(eq=False)
class Backend:
    """One ready replica's address and this gateway's requests on it."""

    replica: str
    host: str
    port: int
    in_flight: int = 0
    cooling_until: float = 0.0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class EndpointState:
    """An endpoint's route, backends and load as this gateway replica sees them."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.backends: dict[str, Backend] = {}
        self.in_flight = 0
        self.held = 0
        self.last_activity: datetime | None = None
        self.deleted = False
        # Wake bookkeeping (signalling): the wake this replica wrote, and when it last tried.
        self.wake_written: datetime | None = None
        self.wake_attempted: float | None = None
        self.last_request_written: datetime | None = None
        self._rotation = 0
        self._changed: asyncio.Future[None] | None = None

    @property
    def key(self) -> str:
        return self.route.key

    def ready(self) -> int:
        return len(self.backends)

    def notify(self) -> None:
        """Wake everything waiting in `changed` (backends came or went, or the route did)."""
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    async def changed(self, timeout: float) -> None:
        """Return on the next `notify`, or after `timeout` seconds."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        waiter = self._changed
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout=max(0.0, timeout))
        except TimeoutError:
            return

    def pick(self, tried: set[str], now: float) -> Backend | None:
        """The least-loaded backend not in `tried` (cooling ones only as a last resort)."""
        untried = [b for b in self.backends.values() if b.replica not in tried]
        if not untried:
            return None
        warm = [b for b in untried if b.cooling_until <= now] or untried
        fewest = min(b.in_flight for b in warm)
        choices = sorted((b for b in warm if b.in_flight == fewest), key=lambda b: b.replica)
        self._rotation += 1
        return choices[self._rotation % len(choices)]


class Catalog:
    """Routes and replicas from the watches; `states` per routed endpoint."""

    def __init__(
        self,
        addresses: Addresses,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        cooldown_seconds: float = 5.0,
        on_forget: Callable[[str], None] | None = None,
    ) -> None:
        self.addresses = addresses
        self.monotonic = monotonic
        self.cooldown_seconds = cooldown_seconds
        self.states: dict[str, EndpointState] = {}
        self.replicas: dict[str, Replica] = {}
        # model -> endpoint keys, so routing a request never scans every endpoint.
        self._by_model: dict[str, set[str]] = {}
        self.synced_routes = False
        self.synced_replicas = False
        self._on_forget = on_forget

    # --- reading ------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self.synced_routes and self.synced_replicas

    def routes(self) -> list[Route]:
        return [s.route for s in self.states.values()]

    def resolve(self, model: str, selector: str | None) -> EndpointState | NotFound | Ambiguous:
        candidates = [self.states[key].route for key in self._by_model.get(model, ())]
        found = resolve(candidates, model, selector)
        if isinstance(found, Route):
            return self.states[found.key]
        return found

    def failed(self, backend: Backend) -> None:
        """A connection to `backend` failed: let it sit out the cooldown."""
        backend.cooling_until = self.monotonic() + self.cooldown_seconds

    # --- feeding: endpoints -------------------------------------------------------------

    def replace_routes(self, objects: Iterable[Object]) -> None:
        """The full list of endpoints (after a list call)."""
        routes = {r.key: r for r in map(route_from_endpoint, objects) if r is not None}
        for key in list(self.states):
            if key not in routes:
                self._forget(key)
        for route in routes.values():
            self._set_route(route)
        self.synced_routes = True

    def apply_route(self, kind: str, obj: Object) -> None:
        """One watch event on an endpoint (ADDED, MODIFIED, DELETED)."""
        metadata = obj.get("metadata") or {}
        key = endpoint_key(str(metadata.get("namespace")), str(metadata.get("name")))
        route = route_from_endpoint(obj) if kind != "DELETED" else None
        if route is None:
            self._forget(key)
        else:
            self._set_route(route)

    def _set_route(self, route: Route) -> None:
        state = self.states.get(route.key)
        if state is None:
            state = self.states[route.key] = EndpointState(route)
            self._by_model.setdefault(route.model, set()).add(route.key)
            self._rebuild(state)
            return
        port_changed = state.route.port != route.port
        if state.route.model != route.model:
            self._unindex(state.route)
            self._by_model.setdefault(route.model, set()).add(route.key)
        state.route = route
        if port_changed:
            self._rebuild(state)
        state.notify()

    def _forget(self, key: str) -> None:
        state = self.states.pop(key, None)
        if state is None:
            return
        self._unindex(state.route)
        state.deleted = True
        state.notify()
        if self._on_forget is not None:
            self._on_forget(key)

    def _unindex(self, route: Route) -> None:
        keys = self._by_model.get(route.model)
        if keys is not None:
            keys.discard(route.key)
            if not keys:
                del self._by_model[route.model]

    # --- feeding: pods ------------------------------------------------------------------

    def replace_replicas(self, objects: Iterable[Object]) -> None:
        """The full list of endpoint pods (after a list call)."""
        self.replicas = {r.key: r for r in map(replica_from_pod, objects) if r is not None}
        for state in self.states.values():
            self._rebuild(state)
        self.synced_replicas = True

    def apply_replica(self, kind: str, obj: Object) -> None:
        """One watch event on a pod."""
        metadata = obj.get("metadata") or {}
        key = f"{metadata.get('namespace')}/{metadata.get('name')}"
        before = self.replicas.pop(key, None)
        replica = replica_from_pod(obj) if kind != "DELETED" else None
        if replica is not None:
            self.replicas[key] = replica
        for affected in {r.endpoint_key for r in (before, replica) if r is not None}:
            state = self.states.get(affected)
            if state is not None:
                self._rebuild(state)

    def refresh_addresses(self) -> None:
        """Addresses may have changed (the address map was reloaded): rebuild every pool."""
        for state in self.states.values():
            self._rebuild(state)

    def _rebuild(self, state: EndpointState) -> None:
        port = state.route.port
        wanted: dict[str, tuple[str, int]] = {}
        for replica in self.replicas.values():
            if replica.endpoint_key != state.key or not replica.ready:
                continue
            address = self.addresses.address(replica, port)
            if address is not None:
                wanted[replica.key] = address
        current = state.backends
        rebuilt: dict[str, Backend] = {}
        for key, (host, bport) in wanted.items():
            kept = current.get(key)
            if kept is not None and (kept.host, kept.port) == (host, bport):
                rebuilt[key] = kept
            else:
                rebuilt[key] = Backend(key, host, bport)
        if rebuilt.keys() != current.keys() or any(rebuilt[k] is not current[k] for k in rebuilt):
            state.backends = rebuilt
            state.notify()
