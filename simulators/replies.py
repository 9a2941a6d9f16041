"""What a provider handler returns, and the ASGI responses that put it on the wire.

Handlers build plain `JsonReply` / `StreamReply` values; `render` turns them into responses that
know about pacing and scripted connection faults, so no provider module deals with sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from simulators import transport


@dataclass
class JsonReply:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamReply:
    events: Sequence[bytes]
    media_type: str = "text/event-stream"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RawReply:
    """Bytes sent as they are (replayed fixtures); `events` > 1 means a paced stream."""

    events: Sequence[bytes]
    media_type: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Reply = JsonReply | StreamReply | RawReply


async def wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _raw_headers(headers: dict[str, str], media_type: str, length: int | None) -> list[tuple[bytes, bytes]]:
    """A scripted content-type wins over the reply's; content-length is always ours."""
    extra = {k.lower(): v for k, v in headers.items()}
    extra.pop("content-length", None)
    out = [(b"content-type", extra.pop("content-type", media_type).encode())]
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    out.extend((k.encode(), v.encode()) for k, v in extra.items())
    return out


class Paced(Response):
    """Sends `events` one `send` each, `delay_s` apart; after `cut_after` events drops the connection."""

    def __init__(
        self,
        events: Sequence[bytes],
        *,
        status: int,
        headers: dict[str, str],
        media_type: str,
        delay_s: float,
        cut_after: int | None,
    ) -> None:
        self.events = events
        self.status_code = status
        self.extra_headers = headers
        self.content_type = media_type
        self.delay_s = delay_s
        self.cut_after = cut_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _raw_headers(self.extra_headers, self.content_type, None)
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        watcher = asyncio.ensure_future(wait_disconnect(receive)) if self.delay_s > 0 else None
        try:
            for i, event in enumerate(self.events):
                if self.cut_after is not None and i >= self.cut_after:
                    await _drop(scope, receive)
                    return
                if watcher is not None and i:
                    done, _ = await asyncio.wait({watcher}, timeout=self.delay_s)
                    if done:
                        return
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if self.cut_after is not None and self.cut_after >= len(self.events):
                await _drop(scope, receive)
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if watcher is not None:
                watcher.cancel()


class CutBody(Response):
    """Headers announce the whole body; half of it is sent, then the connection closes."""

    def __init__(self, content: bytes, *, status: int, headers: dict[str, str], media_type: str) -> None:
        self.content = content
        self.status_code = status
        self.extra_headers = headers
        self.content_type = media_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _raw_headers(self.extra_headers, self.content_type, len(self.content))
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send(
            {"type": "http.response.body", "body": self.content[: len(self.content) // 2], "more_body": True}
        )
        await _drop(scope, receive)


class Reset(Response):
    """No response at all: the connection is reset."""

    def __init__(self) -> None:
        pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport.reset(scope)
        await asyncio.wait_for(wait_disconnect(receive), 5)


class Silent(Response):
    """The client already went away: nothing to send."""

    def __init__(self) -> None:
        pass

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


async def _drop(scope: Scope, receive: Receive) -> None:
    transport.close(scope)
    await asyncio.wait_for(wait_disconnect(receive), 5)


def render(
    reply: Reply, *, defaults: dict[str, str], scripted: dict[str, str], delay_s: float, cut_after: int | None
) -> Response:
    """Headers: the provider's `defaults`, then the reply's own, then `scripted` ones win."""
    all_headers = {**defaults, **reply.headers, **scripted}
    single: tuple[bytes, str] | None = None
    if isinstance(reply, JsonReply):
        single = (orjson.dumps(reply.body), "application/json")
    elif isinstance(reply, RawReply) and len(reply.events) == 1:
        single = (reply.events[0], reply.media_type)
    if single is not None:
        content, media_type = single
        if cut_after is not None:
            return CutBody(content, status=reply.status, headers=all_headers, media_type=media_type)
        return Response(content, reply.status, all_headers, media_type)
    assert not isinstance(reply, JsonReply)
    return Paced(
        reply.events,
        status=reply.status,
        headers=all_headers,
        media_type=reply.media_type,
        delay_s=delay_s,
        cut_after=cut_after,
    )
