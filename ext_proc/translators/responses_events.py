"""OpenAI Responses API stream events: framing, error events, and the charge on the last one.

Every event is ``event: <type>`` then ``data: <json>`` whose ``type`` is the same name, and
carries ``sequence_number``, counting from 0 (OpenAI's framing; there is no ``[DONE]``: the
stream ends with ``response.completed``, ``response.incomplete``, ``response.failed`` or
``error``). A failure after the stream started is an ``error`` event with OpenAI's fields
(``code``, ``message``, ``param``) and also the gateway's error envelope (``error``), which
makes the OpenAI SDK raise it as an ``APIError``, as it does for a failed chat stream.
The charge goes into the ``response`` object of the last event (``credits_used``), or at the
top of an ``error`` event, which has none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson
from infery_proto.wire import error_object

# Events that end a stream: the last one, which the gateway completes with the charge.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


class NumberedEvents(Protocol):
    """A stream translator of Responses events: it knows the next event's sequence number, so
    the gateway can end its stream with an error event of its own (the provider's stream broke)."""

    def error_event(self, status: int, code: str, message: str, param: str | None = None) -> bytes:
        """The JSON of an ``error`` event numbered after the last event sent."""
        ...


def frame(kind: str, data: bytes) -> bytes:
    """One event on the wire."""
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def encode(data: bytes) -> bytes:
    """One event on the wire, named after its own ``type`` (``data``, its JSON)."""
    return frame(_type_of(data), data)


def error_event(sequence: int, status: int, code: str, message: str, param: str | None = None) -> bytes:
    """An ``error`` event: OpenAI's fields, and the envelope that makes the SDK raise."""
    doc: dict[str, Any] = {
        "type": "error",
        "sequence_number": sequence,
        "code": code,
        "message": message,
        "param": param,
    }
    doc.update(error_object(status, code, message, param))
    return orjson.dumps(doc)


def from_envelope(sequence: int, envelope: bytes, rename: Callable[[str | None], str | None]) -> bytes:
    """A chat stream's error envelope as an ``error`` event; ``rename`` names the Responses
    parameter behind the chat one."""
    try:
        err = orjson.loads(envelope)["error"]
        code, message, param, kind = err["code"], err["message"], err.get("param"), err.get("type")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return error_event(sequence, 502, "upstream_error", "The provider stream failed.")
    doc: dict[str, Any] = {
        "type": "error",
        "sequence_number": sequence,
        "code": code,
        "message": message,
        "param": rename(param),
        "error": {"type": kind, "code": code, "message": message, "param": rename(param)},
    }
    return orjson.dumps(doc)


def with_credits(last: bytes, charged: str) -> bytes:
    """``last`` (an event's JSON) with ``credits_used`` (``charged``, the exact decimal written as
    a JSON number): inside its ``response`` object when it has one, else at its top."""
    try:
        doc = orjson.loads(last)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return last
    response = doc.pop("response", None)
    head = orjson.dumps(doc)[:-1]
    if not isinstance(response, dict):
        body = head + (b"," if len(head) > 1 else b"")
        return body + b'"credits_used":' + charged.encode() + b"}"
    inner = orjson.dumps(response)[:-1] + (b"," if response else b"")
    return (
        head
        + (b"," if len(head) > 1 else b"")
        + b'"response":'
        + inner
        + b'"credits_used":'
        + charged.encode()
        + b"}}"
    )


def _type_of(data: bytes) -> str:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "error"
    kind = doc.get("type") if isinstance(doc, dict) else None
    return kind if isinstance(kind, str) and kind else "error"
