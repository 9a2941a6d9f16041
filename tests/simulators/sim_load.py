"""A small keep-alive HTTP/1.1 load generator (raw asyncio on uvloop), for the throughput check.

wrk is not always installed; a raw-socket client costs far less per request than an HTTP library,
so on a second core it can saturate a simulator pinned to the first.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import uvloop

_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _worker(host: str, port: int, request: bytes, deadline: float, statuses: Counter[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = _LENGTH.search(head)
            if match is None:
                raise RuntimeError(f"response without content-length: {head[:200]!r}")
            await reader.readexactly(int(match.group(1)))
            statuses[int(head[9:12])] += 1
    finally:
        writer.close()


def run(
    host: str, port: int, request: bytes, *, seconds: float, connections: int
) -> tuple[float, Counter[int]]:
    """Requests per second over `seconds`, and the count of each response status."""
    statuses: Counter[int] = Counter()

    async def main() -> float:
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(_worker(host, port, request, deadline, statuses) for _ in range(connections)))
        return time.monotonic() - started

    elapsed = uvloop.run(main())
    return sum(statuses.values()) / elapsed, statuses
