"""OpenAI ``chat.completion.chunk`` events, and the skeleton of the stream translators that make them.

Anthropic and Gemini streams differ in their events, not in what leaves the
gateway: the same chunk bytes, usage chunk and error event, the same SSE
reassembly, and the same rule that a stream ending before the provider said
it was done ends with an error. :class:`ChunkStream` holds that once; a
provider subclass only reads its own events (:meth:`ChunkStream._on_data`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from ..errors import envelope
from .base import ResponseContext, Usage
from .chat_documents import chat_id, usage_doc
from .provider_errors import ClientError, ErrorFields
from .sse import SSEBuffer, SSEEvent, encode


class ChunkStream:
    """A :class:`~.base.StreamTranslator` that writes OpenAI chunks from decoded provider events."""

    __slots__ = ("_ctx", "_prefix", "_sse", "done", "error_code", "held", "response_id", "usage")

    # The error message when the body ends before the provider's end of stream.
    _INCOMPLETE: ClassVar[str] = "the provider stream ended before the answer was complete"

    def __init__(self, ctx: ResponseContext) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.error_code: str | None = None
        self.held: bytes | None = None
        self._ctx = ctx
        self._sse = SSEBuffer(ctx.max_event_bytes)
        self._set_id(chat_id(None))

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._sse.feed(chunk):
            self._on_event(event, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        for event in self._sse.flush():
            self._on_event(event, out)
        if not self.done:
            self._error(out, 502, "upstream_error", self._INCOMPLETE)
        return b"".join(out)

    @property
    def overflowed(self) -> bool:
        return self._sse.overflowed

    # -- input

    def _on_event(self, event: SSEEvent, out: list[bytes]) -> None:
        """Nothing after the end (or an error): a provider may keep sending, the client is done."""
        if self.done:
            return
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            self._error(out, 502, "upstream_error", "the provider sent an unreadable stream event")
            return
        if isinstance(data, dict):
            self._on_data(data, event, out)

    def _on_data(self, data: dict[str, Any], event: SSEEvent, out: list[bytes]) -> None:
        """Translate one provider event (a JSON object) into ``out``."""
        raise NotImplementedError

    # -- output

    def _set_id(self, response_id: str) -> None:
        """Every chunk starts with the same bytes: built once per id, not per chunk."""
        self.response_id = response_id
        self._prefix = (
            b'{"id":'
            + orjson.dumps(response_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._ctx.created).encode()
            + b',"model":'
            + orjson.dumps(self._ctx.slug)
            + b',"choices":['
        )

    def _chunk_json(
        self, delta: dict[str, Any], finish_reason: str | None = None, *, index: int = 0, logprobs: Any = None
    ) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return self._prefix + orjson.dumps(choice) + b"]}"

    def _chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, *, index: int = 0, logprobs: Any = None
    ) -> bytes:
        return b"data: " + self._chunk_json(delta, finish_reason, index=index, logprobs=logprobs) + b"\n\n"

    def _hold(self, out: list[bytes], data: bytes) -> None:
        """Keep ``data`` as the stream's last chunk (the exchange adds ``credits_used`` to it);
        the one held before goes out now."""
        if self.held is not None:
            out.append(encode(self.held))
        self.held = data

    def _finish_chunk(self, out: list[bytes], finish_reason: str, index: int = 0) -> None:
        """A choice's final chunk: held as the last one unless the usage chunk will be."""
        data = self._chunk_json({}, finish_reason, index=index)
        if self._ctx.include_usage:
            out.append(encode(data))
        else:
            self._hold(out, data)

    def _usage_chunk(self, out: list[bytes], usage: Usage) -> None:
        """The usage chunk the client asked for: always the last one."""
        self._hold(out, self._prefix + b'],"usage":' + orjson.dumps(usage_doc(usage)) + b"}")

    def _error(
        self, out: list[bytes], status: int, code: str, message: str, param: str | None = None
    ) -> None:
        """An error event ends the stream for the client: it is the last chunk."""
        self._hold(out, envelope(status, code, message, param))
        self.error_code = code
        self.done = True

    def _provider_error(self, out: list[bytes], err: Mapping[str, Any], fields: ErrorFields) -> None:
        e = fields(err, ClientError(502, "upstream_error", "the provider stream failed"), self._ctx.request)
        self._error(out, e.status, e.code, e.message, e.param)
