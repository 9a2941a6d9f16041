"""A streamed (SSE) answer on its way to the client, chunk by chunk.

The exchange makes one when a streamed request gets ``200 text/event-stream``
(state STREAMING, ext_proc/lifecycle.py) and hands it each response body chunk.
It translates the chunk (the provider's stream translator), keeps what the client
receives (``sent``: what a client that leaves is charged for, and what an
idempotent replay repeats), and notices the end: the provider's own, its error
event, the body ending early, or an event past ``INFERY_MAX_SSE_EVENT_BYTES``.
At the end it leaves the chunk to go out last (:attr:`StreamAnswer.last`) for the
exchange to charge and complete with ``credits_used`` (:meth:`StreamAnswer.close`).
How an event is framed, the gateway's own error event, and how the stream ends (chat's
last chunk and ``data: [DONE]``, Anthropic's ``message_stop``) are the endpoint's
(``Endpoint.stream_event``, ``stream_error``, ``stream_tail``).

Per chunk: the translator's work, one list append, no await and nothing else allocated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from decimal import Decimal

import orjson

from ext_proc.endpoints.base import Endpoint
from ext_proc.metering import format_credits
from ext_proc.translators import sse
from ext_proc.translators.base import StreamTranslator


class StreamAnswer:
    __slots__ = ("ended", "endpoint", "error_code", "last", "max_event_bytes", "sent", "translator", "ttft")

    def __init__(
        self, endpoint: Endpoint, translator: StreamTranslator, sent: list[bytes], max_event_bytes: int
    ) -> None:
        self.endpoint = endpoint  # what counts as served text (ext_proc/endpoints/)
        self.translator = translator
        self.sent = sent  # every byte the client was given, in order
        self.max_event_bytes = max_event_bytes
        self.ttft = 0.0  # when the first bytes went out (time.time)
        self.ended = False
        # Set at the end: the JSON of the chunk to go out last (None: the gateway writes one,
        # ``Endpoint.stream_last``), and the error that ended the stream.
        self.last: bytes | None = None
        self.error_code = ""

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes:
        """What the client gets for one provider chunk (``chunk`` itself when it is passed as is).

        When the stream ends here :attr:`ended` is set, and :attr:`last` holds the chunk
        the exchange completes with the charge: the translator's held final chunk, usage
        chunk or error event, or the gateway's own error when the provider's stream broke.
        """
        st = self.translator
        out = st.feed(chunk) if chunk else b""
        overflowed = st.overflowed
        if end_of_stream and not overflowed:
            out += st.finish()
        if out and not self.ttft:
            self.ttft = time.time()
        if st.done or end_of_stream or overflowed:
            last = st.held
            ended = None
            if overflowed:
                limit = self.max_event_bytes
                ended = f"The provider sent a stream event over {limit} bytes; the stream was cut there."
            elif not st.done and st.error_code is None:
                st.error_code = "upstream_error"
                ended = "The provider ended the stream early."
            if ended is not None:
                if last is not None:
                    out += self.endpoint.stream_event(last)
                last = self.endpoint.stream_error(502, "upstream_error", ended, st)
                self.error_code = "upstream_error"
            elif st.error_code:
                self.error_code = st.error_code
            self.last = last
            self.ended = True
        if out:
            self.sent.append(out)
        return out

    @property
    def completed(self) -> bool:
        """The provider finished the stream itself, without an error or a cut."""
        st = self.translator
        return st.done and not st.error_code and not st.overflowed

    def close(self, last: bytes, charged: Decimal) -> bytes:
        """The stream's tail: ``last`` with ``credits_used``, as the endpoint ends its streams
        (chat: then ``[DONE]``)."""
        tail = self.endpoint.stream_tail(last, format_credits(charged))
        self.sent.append(tail)
        return tail

    def served_chars(self, last: bytes | None) -> int:
        """Text characters the client received (``last``, about to go out, included)."""
        return streamed_chars(
            self.endpoint, [*self.sent, self.endpoint.stream_event(last)] if last is not None else self.sent
        )


def streamed_chars(endpoint: Endpoint, transcript: Iterable[bytes]) -> int:
    """Text characters of the chunks a stream delivered, read back only when they are to be charged."""
    reader = sse.SSEBuffer(max_event_bytes=2**62)
    chars = 0
    for piece in transcript:
        for event in reader.feed(piece):
            if event.data != b"[DONE]":
                try:
                    chars += endpoint.served_chars(orjson.loads(event.data))
                except orjson.JSONDecodeError:
                    continue
    return chars
