"""``n > 1`` on chat for providers that answer one choice per call: the other choices asked for
in parallel, merged into one answer.

Anthropic has no ``n``; Gemini's ``candidateCount`` stops at 8. Rather than refuse, the
gateway serves choice 0 as the request itself and asks its own listener for the other n-1,
as n-1 requests of one choice each, made with the client's own key (the one it presented: no
credential of the gateway's, nothing a client could forge). Each is an ordinary request
through Envoy: authenticated, admitted against the workspace's limits and budget (so n
choices reserve n times the request), routed through the model's fallback chain (each choice
may fall back on its own), translated, and charged once at the price of the model that served
it, with its own usage record; a client that hangs up cancels them, and each is charged for
what it had served, as any abandoned request. Why through the listener: Envoy keeps the
provider connections, TLS, retries and fallbacks, and every rule a request obeys holds for
each choice with no second path to keep in step.

The client gets one answer: choices indexed 0..n-1 (choice i is the i-th call's), usage
summed, ``credits_used`` (or ``x-credits-used``) the sum of the n charges. ``model`` and
``x-model-used`` are the slug that served choice 0 (what the client may send back); a choice
served by another slug (its own fallback) says so in its usage record. A stream interleaves
the chunks of all n choices as they arrive, each with its ``index``; the last chunk carries
the summed usage and credits, per the SSE contract. A choice that fails ends the answer as
that failure (its status and envelope; in a stream, an error event); the choices already
served stay charged. Emulated ``n`` is capped at :data:`MAX_EMULATED` (OpenAI's own 128
would be 128 provider calls for one request): more is ``400 invalid_value``.

This module: which requests are emulated, and the merge (pure). The calls themselves are
:class:`ext_proc.extra_calls.ExtraCalls`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from ext_proc.errors import GatewayError

MAX_EMULATED = 16  # choices of one request, for a provider without ``n`` (more: 400 invalid_value)
# The most choices one call of each wire format gives (``n``; Gemini's ``candidateCount``).
NATIVE_CHOICES = {"openai": 128, "gemini": 8, "anthropic": 1}


def emulated(body: Mapping[str, Any], wire_formats: Iterable[str]) -> int:
    """How many choices the gateway must ask for itself (n, or 0 when the providers that may
    serve -- the model's, and its chain's targets -- give them in one call). 400 above the cap."""
    n = body.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 1:
        return 0
    if all(n <= NATIVE_CHOICES.get(wire, 1) for wire in wire_formats):
        return 0
    if n > MAX_EMULATED:
        raise GatewayError(
            400,
            "invalid_value",
            f"This model's provider gives one choice per call; the gateway asks for at most "
            f"{MAX_EMULATED} (n), {n} given.",
            "n",
        )
    return n


def one_choice(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request for one choice: ``body`` without ``n``."""
    return {k: v for k, v in body.items() if k != "n"}


_CREDITS = re.compile(rb'"credits_used":(-?[0-9.eE+-]+)')


def credits_of(data: bytes) -> Decimal:
    """The ``credits_used`` of a chunk, from its exact digits (never through a float)."""
    found = _CREDITS.search(data)
    return Decimal(found.group(1).decode()) if found else Decimal(0)


def add_usage(total: dict[str, Any], usage: Any) -> dict[str, Any]:
    """``total`` with every count of ``usage`` (an OpenAI usage object) added in, nested details too."""
    if not isinstance(usage, dict):
        return total
    for name, value in usage.items():
        if isinstance(value, dict):
            before = total.get(name)
            total[name] = add_usage(before if isinstance(before, dict) else {}, value)
        elif isinstance(value, int) and not isinstance(value, bool):
            before = total.get(name)
            total[name] = (before if isinstance(before, int) else 0) + value
    return total


def merged_answer(first: bytes, others: list[dict[str, Any]]) -> bytes:
    """One ``chat.completion``: ``first`` (choice 0's answer, as the client would get it) with each
    of ``others``' choices after it, indexed 1..; usage summed."""
    doc = orjson.loads(first)
    choices = list(doc.get("choices") or [])[:1]
    usage = add_usage({}, doc.get("usage"))
    for i, other in enumerate(others, start=1):
        for choice in (other.get("choices") or [])[:1]:
            choices.append({**choice, "index": i})
        usage = add_usage(usage, other.get("usage"))
    doc["choices"] = choices
    if usage:
        doc["usage"] = usage
    return orjson.dumps(doc)


def with_usage(last: bytes, others: Iterable[dict[str, Any] | None]) -> bytes:
    """A stream's usage chunk (``choices: []``, choice 0's usage) with the ``others``' usage added
    in; any other chunk unchanged."""
    doc = orjson.loads(last)
    if not isinstance(doc, dict) or doc.get("choices") or not isinstance(doc.get("usage"), dict):
        return last
    usage = add_usage({}, doc["usage"])
    for other in others:
        usage = add_usage(usage, other)
    doc["usage"] = usage
    return orjson.dumps(doc)


class StreamedChoice:
    """One extra choice's stream, read event by event: its chunks re-indexed for the client's
    stream, and its usage and charge (from its usage chunk) kept aside."""

    __slots__ = ("credits", "error", "index", "usage")

    def __init__(self, index: int) -> None:
        self.index = index
        self.usage: dict[str, Any] | None = None
        self.credits = Decimal(0)
        self.error: bytes | None = None  # its error envelope, when it failed

    def event(self, data: bytes) -> dict[str, Any] | None:
        """The chunk the client gets for one event of this choice's stream (None: nothing); its
        ``id`` and ``model`` are the client's stream's (:func:`as_event`)."""
        if data == b"[DONE]":
            return None
        doc = orjson.loads(data)
        if not isinstance(doc, dict):
            return None
        if "error" in doc:
            self.error = orjson.dumps({"error": doc["error"]})
            return None
        if doc.pop("credits_used", None) is not None:
            self.credits = credits_of(data)
        choices = doc.get("choices")
        if not choices:  # its usage chunk: counted in the client's last chunk
            if isinstance(doc.get("usage"), dict):
                self.usage = doc["usage"]
            return None
        doc.pop("usage", None)
        doc["choices"] = [{**choice, "index": self.index} for choice in choices[:1]]
        return doc


def as_event(chunk: dict[str, Any], stream_id: str, model: str) -> bytes:
    """An extra choice's chunk as an event of the client's stream: its id and model (choice 0's)."""
    chunk["id"] = stream_id
    chunk["model"] = model
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
