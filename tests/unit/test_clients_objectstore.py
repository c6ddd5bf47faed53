"""The cold tier's object store without a network: URIs, credentials, and verified `file://`
uploads. The S3 round trip against a real server (versitygw) is in tests/e2e."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import BinaryIO

import pytest

from tidal.clients import objectstore
from tidal.clients.objectstore import (
    ObjectLocation,
    StoreCredentials,
    credentials_from_secret,
    location,
    open_object,
    upload_verified,
)
from tidal.errors import PermanentError


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://cold", ObjectLocation("s3", "cold", "")),
        ("s3://cold/", ObjectLocation("s3", "cold", "")),
        ("s3://cold/tier/eu/", ObjectLocation("s3", "cold", "tier/eu")),
        ("file:///mnt/cold/", ObjectLocation("file", "", "/mnt/cold")),
        ("file://localhost/mnt/cold", ObjectLocation("file", "", "/mnt/cold")),
    ],
)
def test_cold_tier_uris_parse(uri: str, expected: ObjectLocation) -> None:
    assert location(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3:///no-bucket", "must name a bucket"),
        ("file://server/share", "local path"),
        ("gs://bucket/x", "not supported"),
    ],
)
def test_unusable_cold_tier_uris_are_permanent_errors(uri: str, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        location(uri)


def test_object_names_and_uris_under_a_location() -> None:
    where = location("s3://cold/tier")
    assert where.object_name("ns/docs/1.snapshot") == "tier/ns/docs/1.snapshot"
    assert where.uri("ns/docs/1.snapshot") == "s3://cold/tier/ns/docs/1.snapshot"
    assert location("s3://cold").uri("a.json") == "s3://cold/a.json"


def test_credentials_come_from_the_secret_keys_and_hide_the_secret() -> None:
    found = credentials_from_secret(
        {
            "endpoint": "http://minio.storage.svc:9000",
            "accessKeyID": "AKIA",
            "secretAccessKey": "hunter2",
        }
    )
    assert found == StoreCredentials(
        "http://minio.storage.svc:9000", "us-east-1", "AKIA", "hunter2"
    )
    assert "hunter2" not in repr(found)
    assert credentials_from_secret(None).endpoint == "https://s3.amazonaws.com"


def test_an_endpoint_that_is_not_http_is_refused() -> None:
    with pytest.raises(PermanentError, match="http"):
        upload_verified(
            location("s3://cold"),
            "k",
            StoreCredentials(endpoint="minio:9000"),
            lambda sink: sink.write(b"x"),
        )


def test_a_file_upload_is_verified_and_read_back(tmp_path: Path) -> None:
    content = b"snapshot-bytes" * 100_000

    def produce(sink: BinaryIO) -> str:
        for start in range(0, len(content), 65536):
            sink.write(content[start : start + 65536])
        return "done"

    result, stored = upload_verified(
        location(f"file://{tmp_path}/cold"), "ns/docs/1.snapshot", StoreCredentials(), produce
    )
    path = tmp_path / "cold" / "ns" / "docs" / "1.snapshot"
    assert result == "done"
    assert stored.uri == path.as_uri()
    assert (stored.size, stored.sha256) == (len(content), hashlib.sha256(content).hexdigest())
    with open_object(stored.uri, StoreCredentials()) as stream:
        assert stream.read() == content


def test_a_failing_producer_leaves_no_file_behind(tmp_path: Path) -> None:
    def produce(sink: BinaryIO) -> None:
        sink.write(b"half a snapshot")
        raise OSError("engine went away")

    with pytest.raises(OSError, match="went away"):
        upload_verified(location(f"file://{tmp_path}"), "a/b.snapshot", StoreCredentials(), produce)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_stream_whose_producer_fails_is_removed_from_the_store() -> None:
    removed: list[bool] = []
    received = io.BytesIO()

    def produce(sink: BinaryIO) -> None:
        sink.write(b"x" * 100_000)
        raise RuntimeError("snapshot aborted")

    def consume(source: BinaryIO) -> None:
        while chunk := source.read(4096):
            received.write(chunk)

    with pytest.raises(RuntimeError, match="aborted"):
        objectstore._stream_into(produce, consume, on_failure=lambda: removed.append(True))
    assert removed == [True]
    assert len(received.getvalue()) == 100_000


def test_a_failing_consumer_stops_the_producer_and_removes_the_object() -> None:
    removed: list[bool] = []

    def produce(sink: BinaryIO) -> None:
        for _ in range(1000):  # far more than a pipe buffers: it must not hang
            sink.write(b"y" * 65536)

    def consume(source: BinaryIO) -> None:
        source.read(10)
        raise ConnectionError("store refused")

    with pytest.raises(ConnectionError, match="refused"):
        objectstore._stream_into(produce, consume, on_failure=lambda: removed.append(True))
    assert removed == [True]
