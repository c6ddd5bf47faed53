"""The cold tier's object store: verified uploads and streamed reads under `s3://` or `file://`.

Owns talking to S3-compatible stores (the MinIO Python SDK, `minio`: a plain S3 client with no
dependency the operator's Kubernetes client conflicts with) and to a mounted directory
(`file://`, for local use). Drivers never see it: `tidal.clients.vectorengine` joins the two.

    s3://bucket/prefix   endpoint, region and keys from the Secret named by
                         `coldTier.credentialsSecretRef`: keys `endpoint` (e.g.
                         http://minio.storage:9000; default AWS S3), `region` (default
                         us-east-1), `accessKeyID`, `secretAccessKey`
    file:///path         a directory mounted into the operator (never its read-only root)

An upload is written in one pass from a producer (the engine's snapshot stream) through a pipe,
hashed (SHA-256) and counted on the way; it is *verified* before anyone may rely on it: the
store's size must equal the bytes sent, and the object read back must hash to the same digest.
Anything else raises `ObjectStoreError` (temporary) and removes the partial object; the caller
keeps its local data. Credentials live only in `StoreCredentials`, whose repr hides the secret.

Errors::

    TidalError
    ├── PermanentError          a URI or Secret that cannot be used (bad scheme, no bucket)
    └── TemporaryError
        └── ObjectStoreError    unreachable, refused, or the upload did not verify
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar, cast
from urllib.parse import unquote, urlsplit

import urllib3
from minio import Minio
from minio.error import MinioException

from tidal.errors import PermanentError, TemporaryError

__all__ = [
    "ObjectLocation",
    "ObjectStoreError",
    "StoreCredentials",
    "StoredObject",
    "credentials_from_secret",
    "location",
    "open_object",
    "put_small",
    "upload_verified",
]

T = TypeVar("T")

_PART_BYTES: Final = 16 << 20
_CHUNK: Final = 1 << 20
_DEFAULT_REGION: Final = "us-east-1"
_DEFAULT_ENDPOINT: Final = "https://s3.amazonaws.com"
_RETRY_DELAY: Final = 60
# Secret keys (`coldTier.credentialsSecretRef`).
SECRET_ENDPOINT: Final = "endpoint"
SECRET_REGION: Final = "region"
SECRET_ACCESS_KEY: Final = "accessKeyID"
SECRET_SECRET_KEY: Final = "secretAccessKey"


class ObjectStoreError(TemporaryError):
    """The store could not be reached, refused the request, or an upload did not verify."""


@dataclasses.dataclass(frozen=True)
class StoreCredentials:
    """Where an S3-compatible store is and how to sign requests (repr hides the secret)."""

    endpoint: str = _DEFAULT_ENDPOINT
    region: str = _DEFAULT_REGION
    access_key: str | None = None
    secret_key: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class ObjectLocation:
    """A parsed cold-tier URI: `scheme` s3 or file, `bucket` (s3), `prefix` (no slashes at the
    ends; for file:// the absolute directory)."""

    scheme: str
    bucket: str
    prefix: str

    def uri(self, key: str) -> str:
        """The URI of `key` under this location."""
        if self.scheme == "file":
            return (Path(self.prefix) / key).as_uri()
        path = f"{self.prefix}/{key}" if self.prefix else key
        return f"s3://{self.bucket}/{path}"

    def object_name(self, key: str) -> str:
        """The object name (s3) or path (file) of `key`."""
        if self.scheme == "file":
            return str(Path(self.prefix) / key)
        return f"{self.prefix}/{key}" if self.prefix else key


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """An object written and verified: its URI, size and SHA-256 (hex)."""

    uri: str
    size: int
    sha256: str


def location(uri: str) -> ObjectLocation:
    """Parse a cold-tier URI (`s3://bucket[/prefix]` or `file:///dir`); PermanentError if it
    cannot be used."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise PermanentError(f"coldTier {uri}: s3:// URIs must name a bucket")
        return ObjectLocation("s3", parts.netloc, unquote(parts.path).strip("/"))
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise PermanentError(f"coldTier {uri}: file:// URIs must name a local path")
        return ObjectLocation("file", "", unquote(parts.path).rstrip("/") or "/")
    raise PermanentError(
        f"coldTier scheme {parts.scheme}:// is not supported; use s3://bucket/prefix (with "
        "coldTier.credentialsSecretRef) or file:// on a mounted volume"
    )


def credentials_from_secret(data: Mapping[str, str] | None) -> StoreCredentials:
    """StoreCredentials from a Secret's decoded data (None: no Secret: anonymous AWS S3)."""
    data = data or {}
    return StoreCredentials(
        endpoint=data.get(SECRET_ENDPOINT) or _DEFAULT_ENDPOINT,
        region=data.get(SECRET_REGION) or _DEFAULT_REGION,
        access_key=data.get(SECRET_ACCESS_KEY),
        secret_key=data.get(SECRET_SECRET_KEY),
    )


# --- writing ------------------------------------------------------------------------------------


def upload_verified(
    where: ObjectLocation,
    key: str,
    credentials: StoreCredentials,
    produce: Callable[[BinaryIO], T],
    *,
    metadata: Mapping[str, str] | None = None,
) -> tuple[T, StoredObject]:
    """Store what `produce(sink)` writes under `key`; verify it; (produce's result, object).

    The object is removed again when the producer fails or the verification does not hold.
    """
    if where.scheme == "file":
        return _upload_file(where, key, produce)
    client = _client(credentials)
    name = where.object_name(key)
    uri = where.uri(key)
    with _translated(f"upload to {uri}"):
        result, size, digest = _stream_into(
            produce,
            lambda source: client.put_object(
                where.bucket,
                name,
                source,
                length=-1,
                part_size=_PART_BYTES,
                num_parallel_uploads=2,
                metadata=dict(metadata or {}),
            ),
            on_failure=lambda: _remove_quietly(client, where.bucket, name),
        )
        stored = client.stat_object(where.bucket, name)
        readback = _sha256_of(client.get_object(where.bucket, name))
    if stored.size != size or readback != digest:
        _remove_quietly(client, where.bucket, name)
        raise ObjectStoreError(
            f"upload to {uri} did not verify: sent {size} bytes sha256 {digest}, the store holds "
            f"{stored.size} bytes sha256 {readback}; removed it",
            delay=_RETRY_DELAY,
        )
    return result, StoredObject(uri=uri, size=size, sha256=digest)


def put_small(
    where: ObjectLocation, key: str, credentials: StoreCredentials, content: bytes
) -> str:
    """Store a small object (a manifest) as is; its URI."""
    uri = where.uri(key)
    if where.scheme == "file":
        path = Path(where.object_name(key))
        with _translated(f"write {uri}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.tmp")
            temp.write_bytes(content)
            os.replace(temp, path)
        return uri
    client = _client(credentials)
    with _translated(f"upload to {uri}"):
        client.put_object(
            where.bucket,
            where.object_name(key),
            cast(BinaryIO, _BytesReader(content)),
            length=len(content),
            content_type="application/json",
        )
    return uri


def _upload_file(
    where: ObjectLocation, key: str, produce: Callable[[BinaryIO], T]
) -> tuple[T, StoredObject]:
    target = Path(where.object_name(key))
    with _translated(f"write {target.as_uri()}"):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            sink = _HashingWriter(raw)
            result = produce(cast(BinaryIO, sink))
            raw.flush()
            os.fsync(raw.fileno())
        size, digest = sink.size, sink.hexdigest()
        with open(temp, "rb") as check:
            if os.fstat(check.fileno()).st_size != size or _sha256_of(check) != digest:
                raise ObjectStoreError(f"{target.as_uri()} did not verify", delay=_RETRY_DELAY)
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return result, StoredObject(uri=target.as_uri(), size=size, sha256=digest)


def _stream_into(
    produce: Callable[[BinaryIO], T],
    consume: Callable[[BinaryIO], Any],
    *,
    on_failure: Callable[[], None],
) -> tuple[T, int, str]:
    """Run `produce(writer)` in a thread and `consume(reader)` here, joined by a pipe; the
    bytes are counted and hashed as `consume` reads them."""
    read_fd, write_fd = os.pipe()
    reader = _HashingReader(os.fdopen(read_fd, "rb"))
    writer = os.fdopen(write_fd, "wb")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = produce(writer)
        except BaseException as exc:  # re-raised below, in the caller's thread
            outcome["error"] = exc
        finally:
            # The reader may have gone away first: its error is the one to report.
            with contextlib.suppress(OSError):
                writer.close()

    thread = threading.Thread(target=run, name="tidal-cold-tier-producer", daemon=True)
    thread.start()
    try:
        consume(cast(BinaryIO, reader))
    except BaseException:
        reader.close()  # unblocks a producer waiting on a full pipe (EPIPE)
        thread.join()
        on_failure()
        raise
    reader.close()
    thread.join()
    if "error" in outcome:
        # The store saw an early end of file and kept a truncated object.
        on_failure()
        raise outcome["error"]
    return outcome["result"], reader.size, reader.hexdigest()


# --- reading ------------------------------------------------------------------------------------


@contextmanager
def open_object(uri: str, credentials: StoreCredentials) -> Iterator[BinaryIO]:
    """A readable stream of the object at `uri` (closed on exit)."""
    where = location(uri)
    if where.scheme == "file":
        with _translated(f"read {uri}"), Path(where.prefix).open("rb") as stream:
            yield stream
        return
    bucket, _, name = uri.removeprefix("s3://").partition("/")
    client = _client(credentials)
    with _translated(f"read {uri}"):
        response = client.get_object(bucket, name)
    try:
        yield cast(BinaryIO, _ResponseReader(response))
    finally:
        response.close()
        response.release_conn()


# --- internals ----------------------------------------------------------------------------------


def _client(credentials: StoreCredentials) -> Minio:
    endpoint = urlsplit(credentials.endpoint)
    if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
        raise PermanentError(
            f"cold tier endpoint {credentials.endpoint!r} must be http(s)://host[:port]"
        )
    return Minio(
        endpoint.netloc,
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        secure=endpoint.scheme == "https",
        region=credentials.region,
        http_client=urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=300),
            retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=(500, 502, 503)),
        ),
    )


def _remove_quietly(client: Minio, bucket: str, name: str) -> None:
    # Best effort: a leftover partial object is harmless, nothing points at it.
    with contextlib.suppress(MinioException, urllib3.exceptions.HTTPError, OSError):
        client.remove_object(bucket, name)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map the store's failures to Tidal's errors, naming what was attempted."""
    try:
        yield
    except (PermanentError, TemporaryError):
        raise
    except MinioException as exc:
        code = getattr(exc, "code", None) or type(exc).__name__
        message = getattr(exc, "message", None) or str(exc)
        raise ObjectStoreError(f"{what}: {code}: {message}", delay=_RETRY_DELAY) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ObjectStoreError(f"{what}: {type(exc).__name__}: {exc}", delay=_RETRY_DELAY) from exc


def _sha256_of(stream: Any) -> str:
    digest = hashlib.sha256()
    try:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    finally:
        close = getattr(stream, "release_conn", None)
        if close is not None:
            stream.close()
            close()
    return digest.hexdigest()


class _HashingReader:
    """A reader that counts and hashes what passes through it (what `put_object` reads)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._digest.update(data)
        self.size += len(data)
        return data

    def close(self) -> None:
        self._raw.close()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _HashingWriter:
    """A sink that counts and hashes what is written through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self.size += len(data)
        return self._raw.write(data)

    def tell(self) -> int:
        return self.size

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _BytesReader:
    def __init__(self, content: bytes) -> None:
        self._content = memoryview(content)
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._content) if size < 0 else self._offset + size
        chunk = bytes(self._content[self._offset : end])
        self._offset += len(chunk)
        return chunk


class _ResponseReader:
    """An S3 GET body as a file-like `read(n)` (urllib3 may return fewer bytes than asked)."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._response.read(None if size < 0 else size)
        return data
