"""File uploads as load: each connection posts one multipart file after another, as fast as it is answered.

A ``POST /v1/files`` of ``size`` bytes (OpenAI's form: ``purpose`` then ``file``) is built once and
sent whole on every request; ``headers`` is called per request, so the Envoy-alone row can sign a
fresh identity each time, as ext_proc does for the gateway. Like the stream client (bench/streams.py)
it speaks just enough HTTP/1.1 to stay cheap: the load generator must not be what limits the row.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.streams import CONNECT_TIMEOUT_S, FAILURES

BOUNDARY = "infery-bench-upload"


def form(size: int) -> tuple[str, bytes]:
    """(content type, body) of an upload of a ``size``-byte file (random bytes: nothing compresses it)."""
    head = (
        f'--{BOUNDARY}\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        f'--{BOUNDARY}\r\ncontent-disposition: form-data; name="file"; filename="bench.bin"\r\n'
        "content-type: application/octet-stream\r\n\r\n"
    ).encode()
    return f"multipart/form-data; boundary={BOUNDARY}", head + os.urandom(
        size
    ) + f"\r\n--{BOUNDARY}--\r\n".encode()


@dataclass
class UploadStats:
    ok: int = 0
    bytes: int = 0  # of the files stored
    duration_s: float = 0.0
    total_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Upload:
    host: str
    port: int
    path: str
    file_bytes: int
    content_type: str
    body: bytes
    headers: Callable[[], dict[str, str]]  # per request: the key, or a signed identity

    def head(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"host: {self.host}:{self.port}",
            f"content-type: {self.content_type}",
            f"content-length: {len(self.body)}",
            *(f"{k}: {v}" for k, v in self.headers().items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, the connection can be reused) of one response, its body read and dropped."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "chunked" in headers.get("transfer-encoding", ""):
        while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
            await reader.readexactly(size + 2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
            pass
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection") != "close"


async def _connection(upload: Upload, deadline: float, stats: UploadStats, timeout_s: float) -> None:
    """One connection's uploads until the deadline, reconnecting after a failure or a close."""
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(upload.host, upload.port), CONNECT_TIMEOUT_S
            )
        except FAILURES as exc:
            stats.errors[type(exc).__name__] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            await _uploads(upload, reader, writer, deadline, stats, timeout_s)
        except FAILURES as exc:
            stats.errors[type(exc).__name__] += 1
        finally:
            writer.close()


async def _uploads(
    upload: Upload,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    deadline: float,
    stats: UploadStats,
    timeout_s: float,
) -> None:
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        writer.write(upload.head())
        writer.write(upload.body)
        await asyncio.wait_for(writer.drain(), timeout_s)
        status, reusable = await asyncio.wait_for(_answer(reader), timeout_s)
        if status == 200:
            stats.ok += 1
            stats.bytes += upload.file_bytes
            stats.total_s.append(time.perf_counter() - started)
        else:
            stats.errors[f"status {status}"] += 1
        if not reusable:
            return


async def load(upload: Upload, concurrency: int, duration_s: float, timeout_s: float) -> UploadStats:
    """Uploads on ``concurrency`` connections for ``duration_s`` (an upload under way then finishes)."""
    stats = UploadStats()
    started = time.perf_counter()
    await asyncio.gather(
        *(_connection(upload, started + duration_s, stats, timeout_s) for _ in range(concurrency))
    )
    stats.duration_s = time.perf_counter() - started
    return stats
