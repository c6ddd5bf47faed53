"""Capture a real Qdrant's REST answers for the Qdrant driver's unit tests.

    python -m tests.e2e.capture_qdrant_shapes > tests/unit/data/qdrant_v1_18.json

Starts the Qdrant the e2e suite runs (tests/e2e/qdrant.py), creates a collection as the driver
does, and writes each answer the unit tests' fake replays (`tests/unit/test_qdrant_driver.py`).
Rerun it when the pinned Qdrant changes. Must not be collected as a test (no `test_` prefix).
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import httpx

from tests.e2e.qdrant import running_qdrant


def capture(URL: str, KEY: str) -> dict[str, Any]:  # noqa: N803
    """Every answer the unit tests' fake replays, from the server at URL."""
    H = {"api-key": KEY}  # noqa: N806
    c = httpx.Client(base_url=URL, headers=H, timeout=60)
    version = c.get("/").json()["version"]
    out: dict[str, Any] = {
        "_about": (
            f"REST answers of a live Qdrant {version} (the server the e2e suite runs; the "
            "pinned qdrant-client pairs with it), captured by "
            "`python -m tests.e2e.capture_qdrant_shapes`; `time` fields as they came."
        )
    }
    name = "e2e_docs"
    c.delete(f"/collections/{name}")
    out["exists_false"] = c.get(f"/collections/{name}/exists").json()
    out["operation_true"] = c.put(
        f"/collections/{name}",
        json={
            "vectors": {"size": 768, "distance": "Cosine", "on_disk": True},
            "shard_number": 2,
            "replication_factor": 1,
            "on_disk_payload": True,
            "hnsw_config": {"m": 16, "ef_construct": 100, "on_disk": False},
            "quantization_config": {
                "scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}
            },
            "metadata": {"tidal_ef_search": 128, "tidal_rescore": True},
        },
    ).json()
    out["exists_true"] = c.get(f"/collections/{name}/exists").json()
    rnd = random.Random(0)
    for start in range(0, 1200, 300):
        c.put(
            f"/collections/{name}/points",
            params={"wait": "true"},
            json={
                "points": [
                    {"id": i, "vector": [rnd.random() for _ in range(768)]}
                    for i in range(start, start + 300)
                ]
            },
        ).raise_for_status()
    out["collection_info"] = c.get(f"/collections/{name}").json()
    out["snapshot_created"] = c.post(
        f"/collections/{name}/snapshots", params={"wait": "true"}
    ).json()
    c.delete(f"/collections/{name}/snapshots/{out['snapshot_created']['result']['name']}")
    out["not_found"] = c.get("/collections/missing").json()
    out["bad_request"] = c.put(
        f"/collections/{name}/points",
        params={"wait": "true"},
        json={"points": [{"id": 1, "vector": [0.1] * 384}]},
    ).json()
    out["unauthorized_text"] = httpx.get(f"{URL}/collections").text  # plain text, not JSON
    out["root"] = c.get("/").json()
    tele = c.get("/telemetry", params={"details_level": 3}).json()
    colls = tele["result"]["collections"]
    colls["collections"] = [x for x in colls["collections"] if x["id"] == name]
    colls["number_of_collections"] = 1
    colls.pop("snapshots", None)
    tele["result"] = {
        "id": tele["result"]["id"],
        "app": {"name": "qdrant", "version": tele["result"]["app"]["version"]},
        "collections": colls,
    }
    out["telemetry"] = tele
    c.delete(f"/collections/{name}")
    return out


def main() -> None:
    with running_qdrant() as server:
        shapes = capture(server.url, server.api_key)
    json.dump(shapes, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
