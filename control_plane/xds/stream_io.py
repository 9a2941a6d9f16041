"""What every ADS stream does alike: read requests while waiting for a change, frame resources.

Both subscribers of the ADS server (Envoy: `envoy_cache`, ext_proc: `server.DeltaCache`) wait
on two things at once, the stream's next request and a configuration change, and both send
responses whose resources are serialized once and shared by every stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

_R = TypeVar("_R")  # a discovery request

RESOURCES_FIELD = bytes([(2 << 3) | 2])  # DeltaDiscoveryResponse.resources: field 2, length-delimited


def resources_field(body: bytes) -> bytes:
    """A serialized `Resource` as a `resources` entry of a serialized DeltaDiscoveryResponse:
    a response is its header's bytes followed by these, concatenated (protobuf merges
    repeated fields), so a resource is serialized once, not once per stream."""
    return RESOURCES_FIELD + _varint(len(body)) + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


async def pump(requests: AsyncIterator[_R], inbox: asyncio.Queue[_R | None]) -> None:
    """Move a stream's requests into ``inbox`` (``None`` when the client is gone), so that the
    handler can wait on the next request and on a configuration change at once."""
    try:
        async for req in requests:
            inbox.put_nowait(req)
    finally:
        inbox.put_nowait(None)


async def next_request(inbox: asyncio.Queue[_R | None], changed: asyncio.Event) -> tuple[bool, _R | None]:
    """``(True, request)`` for the stream's next request (``None``: the client is gone), or
    ``(False, None)`` when the configuration changes first (the request stays queued)."""
    next_req = asyncio.ensure_future(inbox.get())
    waiter = asyncio.ensure_future(changed.wait())
    done, _ = await asyncio.wait({next_req, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if next_req not in done:
        next_req.cancel()
        return False, None
    waiter.cancel()
    return True, next_req.result()
