"""Where file bytes live: one interface over a local directory and S3-compatible object storage.

Both go through obstore (Rust's ``object_store``), picked by the URL's scheme:

- ``file:///path``: a local directory (the default, under ``.infery/``). An object is
  written to a staging file and renamed into place when complete.
- ``s3://bucket/prefix``: any S3-compatible service. Endpoint, region and credentials
  come from the standard variables (``AWS_ENDPOINT_URL``, ``AWS_REGION``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ALLOW_HTTP`` for a plain-HTTP
  endpoint...). An object is written as a multipart upload of ``PART_BYTES`` parts.

Writes are streamed: :meth:`FileStorage.writer` takes chunks as they arrive and holds at
most ``PART_BYTES * (UPLOAD_CONCURRENCY + 1)`` in memory, whatever the file's size;
an object appears only when its writer completes, and a writer left by an exception
leaves nothing behind (the multipart upload is aborted). Reads are streamed in
``READ_CHUNK_BYTES`` pieces.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import obstore
from obstore.store import from_url

PART_BYTES = 8 * 1024 * 1024  # S3 parts must be at least 5 MiB (but the last)
UPLOAD_CONCURRENCY = 2
READ_CHUNK_BYTES = 256 * 1024


class Writer(Protocol):
    async def write(self, buffer: bytes, /) -> int: ...


class ObjectMissing(LookupError):
    """No object under that key (never written, or deleted)."""


class FileStorage:
    """The bytes of stored files, by key (``<workspace id>/<file id>``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("file://"):
            Path(urlsplit(url).path).mkdir(parents=True, exist_ok=True)
            kwargs["mkdir"] = True  # parent directories of each object
        self._store = from_url(url, **kwargs)

    @contextlib.asynccontextmanager
    async def writer(self, key: str) -> AsyncIterator[Writer]:
        """A writer for a new object at ``key``: complete on a clean exit, discarded on an exception."""
        file = obstore.open_writer_async(
            self._store, key, buffer_size=PART_BYTES, max_concurrency=UPLOAD_CONCURRENCY
        )
        async with file:
            yield file

    async def read(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes, in pieces; raises :class:`ObjectMissing` before the first one."""
        try:
            result = await obstore.get_async(self._store, key)
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        return _pieces(result.stream(min_chunk_size=READ_CHUNK_BYTES))

    async def size(self, key: str) -> int:
        try:
            meta = await obstore.head_async(self._store, key)
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        return int(meta["size"])

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is already what was wanted."""
        with contextlib.suppress(FileNotFoundError):
            await obstore.delete_async(self._store, key)


async def _pieces(stream: Any) -> AsyncIterator[bytes]:
    async for piece in stream:
        yield bytes(piece)
