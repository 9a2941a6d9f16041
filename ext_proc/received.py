"""A large request body taken from its gRPC message as it came: a view of the message's buffer.

upb copies a ``bytes`` field into its arena when it parses a message, and reading
``HttpBody.body`` copies it again into a Python ``bytes``: a prompt of megabytes was in memory
three times (the HTTP/2 server's message buffer, the arena, the ``bytes``), two of them at once,
before its JSON was even parsed. Here, for a ``ProcessingRequest`` of :data:`SPLIT_SIZE` or more
that carries a request body, the body's bytes are found in the serialized message by hand
(field 4, ``request_body``, then its field 1, ``body``: :mod:`ext_proc.protowire`) and kept as a
view of the message; upb parses the rest of the message (its other fields, ``end_of_stream``)
without them. The body is then in memory once, in the buffer the HTTP/2 server filled
(``ext_proc/h2_grpc``: a large message is handed over as a view of its own buffer), until the
exchange drops it once parsed.

Only the plain encoding Envoy sends is taken apart: one ``request_body`` field, one ``body`` in
it, no other member of the ``request`` oneof, a few fields in all. Anything else (a field
repeated, which protobuf merges; a message upb would refuse; more than :data:`MAX_FIELDS` fields
in either message, each costing the event loop ~1 us by hand and upb ~5 ns) is parsed by upb
whole, as before, so the result is always what ``FromString`` would give (a property test
checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from ext_proc import protowire

# A body under this size is parsed by upb with its message (its copies cost less than the split).
SPLIT_SIZE = 64 * 1024
# Fields walked by hand in each of the two messages, at most (Envoy sends a handful).
MAX_FIELDS = 32
_REQUEST = {f.number: f.name for f in ep.ProcessingRequest.DESCRIPTOR.oneofs_by_name["request"].fields}
_REQUEST_BODY = ep.ProcessingRequest.DESCRIPTOR.fields_by_name["request_body"].number
_BODY = ep.HttpBody.DESCRIPTOR.fields_by_name["body"].number


class Body(Protocol):
    """What a processor reads of a body message: ``ep.HttpBody``, or :class:`ReceivedBody`."""

    @property
    def body(self) -> bytes | memoryview: ...

    @property
    def end_of_stream(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class ReceivedBody:
    """A request body message whose bytes are a view of the received message (read-only)."""

    body: memoryview
    end_of_stream: bool


@dataclass(frozen=True, slots=True)
class Received:
    """A ``ProcessingRequest`` with a large request body: ``message`` is the request without the
    body's bytes (its ``request_body`` set, ``body`` empty), ``request_body`` has them."""

    message: ep.ProcessingRequest
    request_body: ReceivedBody


def parse(data: bytes | memoryview) -> ep.ProcessingRequest | Received:
    """The ``ProcessingRequest`` in ``data``; a large request body kept aside (:class:`Received`)."""
    if len(data) < SPLIT_SIZE:
        return ep.ProcessingRequest.FromString(data)
    view = memoryview(data).toreadonly()
    try:
        found = _body(view)
    except ValueError:  # not well formed: upb says how
        found = None
    if found is None:
        return ep.ProcessingRequest.FromString(data)
    outer, inner = found
    content = view[outer.content : outer.end]
    rest = bytes(content[: inner.start]) + bytes(content[inner.end :])  # the body field left out
    head, tail = bytes(view[: outer.length_at]), bytes(view[outer.end :])  # the other fields: small
    message = ep.ProcessingRequest.FromString(head + protowire.encode_varint(len(rest)) + rest + tail)
    body = content[inner.content : inner.end]
    return Received(message, ReceivedBody(body, message.request_body.end_of_stream))


def _body(view: memoryview) -> tuple[protowire.Field, protowire.Field] | None:
    """The ``request_body`` field and, within it, its ``body`` field, when each is there once,
    no other member of the ``request`` oneof is, and neither message has more than
    :data:`MAX_FIELDS` fields; else None."""
    outer = None
    for count, field in enumerate(protowire.fields(view)):
        if count == MAX_FIELDS:
            return None
        if field.number in _REQUEST:
            if outer is not None or field.number != _REQUEST_BODY or field.wire != protowire.LEN:
                return None
            outer = field
    if outer is None:
        return None
    inner = None
    for count, field in enumerate(protowire.fields(view[outer.content : outer.end])):
        if count == MAX_FIELDS:
            return None
        if field.number == _BODY:
            if inner is not None or field.wire != protowire.LEN:
                return None
            inner = field
    if inner is None:
        return None
    return outer, inner
