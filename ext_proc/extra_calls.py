"""The extra choices of an emulated ``n > 1`` (ext_proc/extra_choices.py says why and how),
asked of the gateway's own listener as requests of one choice each, in parallel.

Each call runs in a task of its own (httpx's connection locks stay in the task that took
them, and a body phase may be resumed in another task: ext_proc/deadline.py). A streamed
call's chunks are re-indexed as they arrive and wait in :attr:`ExtraCalls.pending` until the
client's stream next passes through ext_proc (a chunk of choice 0, or its end). Memory: a
streamed call holds only the chunks not yet given to the client (all of them when choice 0
failed before its stream began: they are then the stream the client gets); an answer is held
whole, as Envoy holds the answer of choice 0. Each call carries the signed link to the client's
request (ext_proc/parent_link.py) that its usage record names.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import orjson
from infery_proto.wire import CREDITS_USED_HEADER, MODEL_USED_HEADER, PARENT_REQUEST_HEADER

from ext_proc.extra_choices import ExtraChoice, as_event
from ext_proc.translators import sse

_CLOSING: set[asyncio.Future[None]] = set()  # clients being closed, referenced until they are
DEFAULT_TIMEOUT_S = 600.0  # as long as a request may take (INFERY_REQUEST_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class Listener:
    """Where ext_proc reaches its own gateway (INFERY_LISTENER_URL) and the client it uses there."""

    url: str  # e.g. http://127.0.0.1:8080
    timeout_s: float = DEFAULT_TIMEOUT_S

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(self.timeout_s, connect=10.0))


class ExtraCalls:
    """Choices 1..n-1 of one request."""

    __slots__ = ("_client", "_tasks", "choices", "pending", "stream")

    def __init__(
        self,
        listener: Listener,
        credential: str,
        body: dict[str, Any],
        n: int,
        parent: str = "",
    ) -> None:
        """``parent``: the signed link to the client's request each call carries
        (ext_proc/parent_link.py), which its usage record names."""
        self.stream = body.get("stream") is True
        if self.stream:  # the usage chunk tells each call's usage and charge
            body = {**body, "stream_options": {"include_usage": True}}
        raw = orjson.dumps(body)
        headers = {"authorization": "Bearer " + credential, "content-type": "application/json"}
        if parent:
            headers[PARENT_REQUEST_HEADER] = parent
        self.choices = [ExtraChoice(i) for i in range(1, n)]
        self.pending: list[dict[str, Any]] = []  # streamed: chunks for the client, not yet given
        self._client = listener.client()
        self._tasks = [asyncio.ensure_future(self._call(choice, raw, headers)) for choice in self.choices]

    async def _call(self, choice: ExtraChoice, raw: bytes, headers: dict[str, str]) -> None:
        try:
            async with self._client.stream("POST", "/v1/chat/completions", content=raw, headers=headers) as r:
                if r.status_code != 200:
                    choice.failed(r.status_code, await r.aread())
                    return
                if not self.stream:
                    body = await r.aread()
                    credits = _credits(r.headers.get(CREDITS_USED_HEADER))
                    choice.answered(orjson.loads(body), credits, r.headers.get(MODEL_USED_HEADER, ""))
                    return
                events = sse.SSEBuffer(max_event_bytes=2**62)
                async for piece in r.aiter_bytes():
                    for event in events.feed(piece):
                        out = choice.event(event.data)
                        if out is not None:
                            self.pending.append(out)
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: a body that is not JSON
            message = f"The gateway could not ask for choice {choice.index}: {type(exc).__name__}."
            error = {"type": "server_error", "code": "upstream_error", "message": message, "param": None}
            choice.failed(502, orjson.dumps({"error": error}))

    def drain(self, stream_id: str, model: str) -> bytes:
        """The extra choices' chunks that arrived since last asked, as events of the client's stream
        (``stream_id``, ``model``: choice 0's)."""
        if not self.pending:
            return b""
        out = b"".join(as_event(chunk, stream_id, model) for chunk in self.pending)
        self.pending.clear()
        return out

    @property
    def usages(self) -> list[dict[str, Any] | None]:
        """Each extra choice's usage (streamed: from its usage chunk; answered: from its answer)."""
        return [choice.usage for choice in self.choices]

    @property
    def served(self) -> list[ExtraChoice]:
        """The choices served (wholly or, streamed, in part), in choice order: each was charged."""
        return [choice for choice in self.choices if choice.served]

    @property
    def failures(self) -> list[ExtraChoice]:
        """The choices whose call failed, in choice order (streamed: some may also be served)."""
        return [choice for choice in self.choices if choice.error is not None]

    def answers(self) -> list[tuple[int, dict[str, Any]]]:
        """A non-streamed request's served choices: each one's index and answer, in choice order."""
        return [(choice.index, choice.answer) for choice in self.choices if choice.answer is not None]

    async def finish(self) -> None:
        """Wait for every call to end; the client is closed after."""
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self._client.aclose()

    @property
    def credits(self) -> Decimal:
        """What the extra choices were charged, together (each is charged by its own request)."""
        return sum((choice.credits for choice in self.choices), Decimal(0))

    def cancel(self) -> None:
        """The client left or the request failed: stop every call (each is then charged for what it
        had served, as an abandoned request)."""
        for task in self._tasks:
            task.cancel()
        if not self._client.is_closed:
            closing = asyncio.ensure_future(self._client.aclose())
            _CLOSING.add(closing)
            closing.add_done_callback(_CLOSING.discard)


def _credits(value: str | None) -> Decimal:
    try:
        return Decimal(value) if value else Decimal(0)
    except InvalidOperation:
        return Decimal(0)
