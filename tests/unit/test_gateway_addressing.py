"""gateway.addressing: pod IPs in production, the address map file in simulations."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tidal.gateway.addressing import AddressMap, PodNetwork
from tidal.gateway.routing import Replica


def replica(ip: str | None) -> Replica:
    return Replica(namespace="ml", pod="p", endpoint="llama", ip=ip, ready=True)


def test_production_dials_the_pod_ip_on_the_runtime_port() -> None:
    assert PodNetwork().address(replica("10.244.1.2"), 8000) == ("10.244.1.2", 8000)
    assert PodNetwork().address(replica(None), 8000) is None


def _write(path: Path, mapping: dict[str, str], stamp: int) -> None:
    path.write_text(json.dumps(mapping))
    os.utime(path, ns=(stamp, stamp))


def test_the_map_sends_mapped_pods_to_their_simulated_server_and_ignores_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "map.json"
    _write(path, {"10.244.1.2": "127.244.1.2:41000"}, 1)
    addresses = AddressMap(path)

    assert addresses.address(replica("10.244.1.2"), 8000) == ("127.244.1.2", 41000)
    assert addresses.address(replica("10.244.1.3"), 8000) is None


def test_the_map_is_reread_only_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    addresses = AddressMap(path)  # no file yet: nothing is reachable
    assert addresses.address(replica("10.244.1.2"), 8000) is None

    _write(path, {"10.244.1.2": "127.0.0.1:41000"}, 1)
    assert addresses.reload()
    assert not addresses.reload()
    _write(path, {"10.244.1.2": "127.0.0.1:41001"}, 2)
    assert addresses.reload()
    assert addresses.address(replica("10.244.1.2"), 8000) == ("127.0.0.1", 41001)

    path.write_text("{half written")
    os.utime(path, ns=(3, 3))
    assert not addresses.reload()
    assert addresses.address(replica("10.244.1.2"), 8000) == ("127.0.0.1", 41001)

    path.unlink()
    assert addresses.reload()
    assert addresses.address(replica("10.244.1.2"), 8000) is None
