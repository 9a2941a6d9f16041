"""``n > 1`` on chat for providers that answer one choice per call: the other choices asked for
in parallel, merged into one answer.

Anthropic has no ``n``; Gemini's ``candidateCount`` stops at 8. Rather than refuse, the
gateway serves choice 0 as the request itself and asks its own listener for the other n-1,
as n-1 requests of one choice each, made with the client's own key (the one it presented: no
credential of the gateway's, nothing a client could forge). Each is an ordinary request
through Envoy: authenticated, admitted against the workspace's limits and budget (so n
choices reserve n times the request), routed through the model's fallback chain (each choice
may fall back on its own), translated, and charged once at the price of the model that served
it, with its own usage record, which names the client's request (``parent_request_id``:
ext_proc/parent_link.py); a client that hangs up cancels them, and each is charged for what it
had served, as any abandoned request. Why through the listener: Envoy keeps the provider
connections, TLS, retries and fallbacks, and every rule a request obeys holds for each choice
with no second path to keep in step.

The client gets one answer: choices indexed 0..n-1 (choice i is the i-th call's), usage
summed, ``credits_used`` (or ``x-credits-used``) the sum of the n charges. ``model`` and
``x-model-used`` are the slug that served choice 0 (what the client may send back); a choice
served by another slug (its own fallback) says so in its usage record. A stream interleaves
the chunks of all n choices as they arrive, each with its ``index``; the last chunk carries
the summed usage and credits, per the SSE contract.

A choice that fails (after its own fallback chain: a refusal by the limits, a provider error).
The rule: *the client gets every choice it is charged for*; each choice is charged by its own
request, so an error instead of the choices served would bill tokens the client never saw.

- Not streamed: ``200`` with the choices served, each keeping its index (a failed choice leaves
  a gap: which one failed is visible, and the rule is the same whichever failed), usage and
  ``x-credits-used`` summed over them, and ``x-choices-failed`` (how many were not served) and
  ``x-choices-error`` (the first failed choice's ``error.code``). When choice 0 itself failed,
  the others are waited for, and if any was served the answer is theirs: no re-indexing (the
  same rule, and a stream's chunks carry their index before any failure is known), ``model`` /
  ``x-model-used`` the slug of the first choice served; the client's own usage record says
  ``200`` with choice 0's ``error_code`` and choice 0's charge (0). Kept for idempotent
  replays: a retry must not charge the served choices twice.
- Streamed: the client has every chunk it is charged for as it arrives, then the error event of
  the first failure, carrying ``credits_used`` (the sum of every charge); when choice 0 failed
  before its stream began, the stream is the other choices' chunks, then choice 0's error event.
- Nothing served: choice 0's error, as for any request, and nothing is charged.

Emulated ``n`` is capped at :data:`MAX_EMULATED` (OpenAI's own 128 would be 128 provider calls
for one request): more is ``400 invalid_value``.

This module: which requests are emulated, each extra choice's outcome, and the merge (pure).
The calls themselves are :class:`ext_proc.extra_calls.ExtraCalls`.
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


def merged_answer(first: bytes | None, others: Iterable[tuple[int, dict[str, Any]]]) -> bytes:
    """One ``chat.completion``: ``first`` (choice 0's answer, as the client would get it; None when
    it failed) with each served extra choice (its index, its answer) after it, each keeping its
    index; usage summed. Without choice 0 the first choice served gives the frame (id, model)."""
    served = list(others)
    if first is not None:
        doc = orjson.loads(first)
        choices = list(doc.get("choices") or [])[:1]
        usage = add_usage({}, doc.get("usage"))
    else:
        doc = dict(served[0][1])
        choices, usage = [], {}
    for index, other in served:
        for choice in (other.get("choices") or [])[:1]:
            choices.append({**choice, "index": index})
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


class ExtraChoice:
    """One extra choice's call and what came of it: its answer (not streamed), or its chunks
    re-indexed for the client's stream with its usage and charge kept aside; or its failure."""

    __slots__ = ("answer", "chunks", "credits", "error", "index", "model", "status", "usage")

    def __init__(self, index: int) -> None:
        self.index = index
        self.answer: dict[str, Any] | None = None  # not streamed: its answer, once served
        self.chunks = 0  # streamed: its chunks with a choice in them, given to the client or pending
        self.model = ""  # the slug that served it
        self.usage: dict[str, Any] | None = None
        self.credits = Decimal(0)  # what its own request was charged
        self.status = 0  # failed: the status its call answered
        self.error: bytes | None = None  # failed: its error envelope

    @property
    def served(self) -> bool:
        """Something of it reached the client's answer, and was charged: the client must get it."""
        return self.answer is not None or self.chunks > 0

    def answered(self, doc: Any, credits: Decimal, model: str) -> None:
        """Its call's answer (not streamed): ``doc``, charged ``credits``, served by ``model``."""
        if not isinstance(doc, dict) or not doc.get("choices"):
            self.failed(502, _no_choice(self.index))
            return
        self.answer = doc
        self.usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else None
        self.credits = credits
        self.model = model or str(doc.get("model") or "")

    def failed(self, status: int, envelope: bytes) -> None:
        """Its call failed with ``status`` and ``envelope`` (the first failure is the one kept)."""
        if self.error is None:
            self.status, self.error = status, envelope

    def event(self, data: bytes) -> dict[str, Any] | None:
        """The chunk the client gets for one event of this choice's stream (None: nothing); its
        ``id`` and ``model`` are the client's stream's (:func:`as_event`)."""
        if data == b"[DONE]":
            return None
        doc = orjson.loads(data)
        if not isinstance(doc, dict):
            return None
        if doc.pop("credits_used", None) is not None:  # its last event: a chunk, or its error
            self.credits = credits_of(data)
        if "error" in doc:
            self.failed(502, orjson.dumps({"error": doc["error"]}))
            return None
        choices = doc.get("choices")
        if not choices:  # its usage chunk: counted in the client's last chunk
            if isinstance(doc.get("usage"), dict):
                self.usage = doc["usage"]
            return None
        if not self.model:
            self.model = str(doc.get("model") or "")
        doc.pop("usage", None)
        doc["choices"] = [{**choice, "index": self.index} for choice in choices[:1]]
        self.chunks += 1
        return doc


def _no_choice(index: int) -> bytes:
    message = f"The gateway's answer for choice {index} had no choice in it."
    error = {"type": "server_error", "code": "upstream_error", "message": message, "param": None}
    return orjson.dumps({"error": error})


def as_event(chunk: dict[str, Any], stream_id: str, model: str) -> bytes:
    """An extra choice's chunk as an event of the client's stream: its id and model (choice 0's)."""
    chunk["id"] = stream_id
    chunk["model"] = model
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
