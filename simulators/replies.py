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


_USAGE_KEYS = frozenset({"usage", "usageMetadata"})


def _without_usage(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_usage(v) for k, v in value.items() if k not in _USAGE_KEYS}
    if isinstance(value, list):
        return [_without_usage(v) for v in value]
    return value


def _event_without_usage(event: bytes) -> bytes:
    lines = []
    for line in event.split(b"\n"):
        if line.startswith(b"data: ") and line[6:7] in (b"{", b"[") and line != b"data: [DONE]":
            line = b"data: " + orjson.dumps(_without_usage(orjson.loads(line[6:])))
        lines.append(line)
    return b"\n".join(lines)


def without_usage(reply: Reply) -> Reply:
    """The reply as a provider that reports no usage at all sends it (every format's usage keys gone)."""
    if isinstance(reply, JsonReply):
        return JsonReply(_without_usage(reply.body), reply.status, reply.headers)
    events = [_event_without_usage(e) for e in reply.events]
    if isinstance(reply, StreamReply):
        return StreamReply(events, reply.media_type, reply.status, reply.headers)
    return RawReply(events, reply.media_type, reply.status, reply.headers)


class Paced(Response):
    """Sends `events` one `send` each, `delay_s` apart; after `cut_after` events drops the connection.

    With `endless` (bytes), after `cut_after` events it starts one event that never ends -- a
    `data:` line of `endless` bytes without a line end -- and then ends the body.
    """

    def __init__(
        self,
        events: Sequence[bytes],
        *,
        status: int,
        headers: dict[str, str],
        media_type: str,
        delay_s: float,
        cut_after: int | None,
        endless: int | None = None,
    ) -> None:
        self.endless = endless
        self.events = events
        self.status_code = status
        self.extra_headers = headers
        self.content_type = media_type
        self.delay_s = delay_s
        self.cut_after = cut_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Unpaced, the endless event is made before the headers go and follows them at once: as
        # the whole body, with a length (uvicorn then writes it without copying it first).
        burst = _endless_line(self.endless) if self.endless is not None and self.delay_s <= 0 else None
        whole = len(burst) if burst is not None and self.cut_after == 0 else None
        headers = _raw_headers(self.extra_headers, self.content_type, whole)
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        watcher = asyncio.ensure_future(wait_disconnect(receive)) if self.delay_s > 0 else None
        try:
            for i, event in enumerate(self.events):
                if self.cut_after is not None and i >= self.cut_after:
                    if self.endless is not None:
                        await _send_endless(send, self.endless, self.delay_s, burst)
                        return
                    await _drop(scope, receive)
                    return
                if watcher is not None and i:
                    done, _ = await asyncio.wait({watcher}, timeout=self.delay_s)
                    if done:
                        return
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if self.cut_after is not None and self.cut_after >= len(self.events):
                if self.endless is not None:
                    await _send_endless(send, self.endless, self.delay_s, burst)
                    return
                await _drop(scope, receive)
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if watcher is not None:
                watcher.cancel()


async def _send_endless(send: Send, size: int, delay_s: float, burst: bytes | None) -> None:
    """64 KiB pieces of one `data:` line, `delay_s` apart, as a provider writing it would send them;
    unpaced, the whole line (`burst`) in one write."""
    if burst is not None:
        await send({"type": "http.response.body", "body": burst, "more_body": False})
        return
    piece = b"a" * 65536
    await send({"type": "http.response.body", "body": b'data: {"text":"', "more_body": True})
    for _ in range(size // len(piece)):
        await asyncio.sleep(delay_s)
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _endless_line(size: int) -> bytes:
    return b'data: {"text":"' + b"a" * size


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
    reply: Reply,
    *,
    defaults: dict[str, str],
    scripted: dict[str, str],
    delay_s: float,
    cut_after: int | None,
    endless: int | None = None,
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
        endless=endless,
    )
