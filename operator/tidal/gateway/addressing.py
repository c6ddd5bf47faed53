"""Where to connect for a replica: its pod IP and the endpoint's runtime port, or, for
simulations only, an address from a map file.

Owns: `PodNetwork` (production: `podIP:spec.runtime.port`) and `AddressMap`, the test and
simulation hook. Must not: know routing or HTTP.

`AddressMap` (flag `--pod-address-map FILE`, env `TIDAL_GATEWAY_POD_ADDRESS_MAP`) exists because
simulated pods have IPs no process listens on: KWOK gives them addresses from 10.244.0.0/16 and
nothing runs in them. The e2e fixture starts a fake model server per Running pod on a loopback
address and writes `{"<podIP>": "<host>:<port>", ...}` to the file (atomically: write, then
rename); the gateway re-reads it when it changes. With a map, a pod missing from it is not
routable (its "server" has not started), exactly like a pod that is not ready yet. Without the
flag nothing of this exists and the gateway dials pod IPs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

from tidal.gateway.routing import Replica

__all__ = ["AddressMap", "Addresses", "PodNetwork"]

log = logging.getLogger("tidal.gateway")


class Addresses(Protocol):
    def address(self, replica: Replica, port: int) -> tuple[str, int] | None:
        """(host, port) to connect to for `replica`; None when it cannot be reached."""
        ...


class PodNetwork:
    """The production rule: connect to the pod's IP on the endpoint's runtime port."""

    def address(self, replica: Replica, port: int) -> tuple[str, int] | None:
        return (replica.ip, port) if replica.ip else None


class AddressMap:
    """Pod IP → `host:port` from a JSON file (test/simulation hook; see the module)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._map: dict[str, tuple[str, int]] = {}
        self.reload()

    def address(self, replica: Replica, port: int) -> tuple[str, int] | None:
        return self._map.get(replica.ip) if replica.ip else None

    def reload(self) -> bool:
        """Read the file again if it changed; True when the map changed."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            changed = bool(self._map)
            self._map, self._stamp = {}, None
            return changed
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        try:
            raw = json.loads(self.path.read_text())
            parsed = {str(ip): _host_port(str(target)) for ip, target in dict(raw).items()}
        except (OSError, ValueError, TypeError) as exc:
            # A half-written file (a writer that does not rename) is retried on the next check.
            log.warning("Cannot read the pod address map %s: %s", self.path, exc)
            return False
        self._stamp = stamp
        if parsed == self._map:
            return False
        self._map = parsed
        return True


def _host_port(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {target!r}")
    return host, int(port)
