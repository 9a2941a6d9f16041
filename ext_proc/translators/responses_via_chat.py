"""The Responses API for a provider without it: through that provider's chat translator.

Why one adapter and not a second set of provider translators: everything that depends on
the provider -- its messages and content blocks, tools, JSON answers, thinking budgets,
finish reasons, usage, errors, stream events -- is already written once, tested on recorded
fixtures, in each chat pair (``chat_anthropic.py``, ``chat_gemini.py``, ``chat_openai.py``).
A Responses request says the same things in other words, so it is rewritten as a chat
request (``responses_request.py``), handed to the provider's chat pair, and the chat answer
(or chunk stream) is rewritten as a Responses answer (or event stream) here. A fix or a new
provider feature in a chat pair serves both APIs, and the Responses shapes are written in
one place for every provider. The cost is one more JSON parse per chunk of a translated
stream (the chat chunk, read back here), on a path that parses each provider event anyway.

A pair is a subclass naming its chat translator (``responses_anthropic.py``,
``responses_gemini.py``, ``responses_openai.ResponsesOpenAIChat``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import orjson

from ..errors import GatewayError
from . import responses_events as events
from .base import (
    ResponseContext,
    StreamTranslator,
    Target,
    TranslatedResponse,
    Translator,
    UpstreamRequest,
    Usage,
)
from .provider_errors import failed
from .responses_documents import (
    function_call_item,
    message_item,
    new_id,
    outcome,
    output_text,
    refusal_part,
    response_doc,
)
from .responses_request import chat_request, responses_param
from .sse import parse_event


class ResponsesViaChat(Translator):
    """A Responses pair made of its provider's chat pair."""

    __slots__ = ()

    endpoint = "responses"
    chat: ClassVar[Translator]  # the provider's chat completions translator

    def media_urls(self, body: Mapping[str, Any]) -> list[str]:
        return self.chat.media_urls(chat_request(body).body)

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        chat = chat_request(body)
        try:
            return self.chat.request(chat.body, target)
        except GatewayError as err:
            err.param = chat.param(err.param)
            raise

    def response(self, status: int, body: bytes, ctx: ResponseContext) -> TranslatedResponse:
        answer = self.chat.response(status, body, chat_context(ctx))
        if answer.status >= 400:
            return renamed_error(answer)
        try:
            completion = orjson.loads(answer.body)
            doc = response_from_completion(completion, ctx, answer.usage)
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            return failed(502, "upstream_error", "the provider's answer could not be read")
        return TranslatedResponse(200, orjson.dumps(doc), answer.usage)

    def stream(self, ctx: ResponseContext) -> ResponsesFromChunks:
        return ResponsesFromChunks(self.chat.stream(chat_context(ctx)), ctx)


def chat_context(ctx: ResponseContext) -> ResponseContext:
    """The context the chat pair reads: what of the request it looks at, in chat's names."""
    request = ctx.request
    view: dict[str, Any] = {}
    if request.get("parallel_tool_calls") is not None:
        view["parallel_tool_calls"] = request["parallel_tool_calls"]
    if request.get("max_output_tokens") is not None:
        view["max_completion_tokens"] = request["max_output_tokens"]
    return replace(ctx, request=view, include_usage=False)


def renamed_error(answer: TranslatedResponse) -> TranslatedResponse:
    """A chat pair's error envelope, its ``param`` named as the Responses request names it."""
    try:
        doc = orjson.loads(answer.body)
        err = doc["error"]
        param = err.get("param")
        renamed = responses_param(param)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return answer
    if renamed == param:
        return answer
    err["param"] = renamed
    return TranslatedResponse(answer.status, orjson.dumps(doc), answer.usage, answer.error_code)


def response_from_completion(
    completion: Mapping[str, Any], ctx: ResponseContext, usage: Usage | None
) -> dict[str, Any]:
    """A ``chat.completion`` (the chat pair's answer) as a ``response`` object."""
    choice = completion["choices"][0]
    message = choice.get("message") or {}
    text = message.get("content")
    refusal = message.get("refusal")
    calls = message.get("tool_calls") or []
    status, incomplete = outcome(choice.get("finish_reason"), bool(refusal))
    output: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    if isinstance(text, str) and (text or not (calls or refusal)):
        content.append(output_text(text))
    elif text is None and not (calls or refusal):
        content.append(output_text(""))
    if isinstance(refusal, str) and refusal:
        content.append(refusal_part(refusal))
    if content:
        output.append(message_item(new_id("msg"), content, status if status == "incomplete" else "completed"))
    for call in calls:
        function = call.get("function") or {}
        output.append(
            function_call_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
                "completed",
            )
        )
    return response_doc(
        ctx.request,
        response_id=new_id("resp"),
        created_at=ctx.created,
        model=ctx.slug,
        status=status,
        output=output,
        usage=usage,
        incomplete=incomplete,
        completed_at=int(time.time()),
    )


class _Message:
    """The message item being streamed: its parts so far and the kind of the open one."""

    __slots__ = ("id", "index", "open", "parts")

    def __init__(self, index: int) -> None:
        self.id = new_id("msg")
        self.index = index  # its output_index
        self.parts: list[dict[str, Any]] = []
        self.open: str | None = None  # "output_text" | "refusal": the part taking deltas


class _Call:
    __slots__ = ("arguments", "call_id", "closed", "id", "index", "name")

    def __init__(self, index: int, call_id: str, name: str) -> None:
        self.id = new_id("fc")
        self.index = index
        self.call_id = call_id
        self.name = name
        self.arguments: list[str] = []
        self.closed = False


class ResponsesFromChunks:
    """A :class:`~.base.StreamTranslator`: the provider's stream through its chat pair's stream
    translator, then each ``chat.completion.chunk`` as Responses events.

    ``response.created`` and ``response.in_progress`` open the stream at the provider's first
    bytes; text deltas open a ``message`` item (``output_item.added``, ``content_part.added``,
    then ``output_text.delta`` events), refusals a ``refusal`` part of it, tool calls a
    ``function_call`` item each (``function_call_arguments.delta``); an item is closed
    (``.done`` events) when the next one opens or the answer ends. The last event --
    ``response.completed`` (``response.incomplete`` at the output limit or a filter), with the
    whole response and its usage, or an ``error`` event -- is :attr:`held` for the gateway to
    add ``credits_used`` to, as chat streams hold their last chunk.
    """

    __slots__ = (
        "_calls",
        "_ctx",
        "_finish",
        "_inner",
        "_message",
        "_output",
        "_refused",
        "_request",
        "_sequence",
        "_started",
        "done",
        "error_code",
        "held",
        "response_id",
        "usage",
    )

    def __init__(self, inner: StreamTranslator, ctx: ResponseContext) -> None:
        self._inner = inner
        self._ctx = ctx
        self._request = ctx.request
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any]] = []  # every item added, in output_index order
        self._message: _Message | None = None
        self._calls: dict[int, _Call] = {}  # chat tool-call index -> the open call
        self._finish: str | None = None
        self._refused = False
        self.response_id = new_id("resp")
        self.usage: Usage | None = None  # the chat pair's, read from the provider
        self.done = False
        self.error_code: str | None = None
        self.held: bytes | None = None

    @property
    def overflowed(self) -> bool:
        return self._inner.overflowed

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        if not self._started:
            self._start(out)
        self._read(self._inner.feed(chunk), out)
        self.usage = self._inner.usage
        self._check_end(out, final=False)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if not self._started:
            self._start(out)
        self._read(self._inner.finish(), out)
        self.usage = self._inner.usage
        self._check_end(out, final=True)
        return b"".join(out)

    def error_event(self, status: int, code: str, message: str, param: str | None = None) -> bytes:
        sequence = self._next()
        return events.error_event(sequence, status, code, message, param)

    # -- chat chunks in

    def _read(self, chat_sse: bytes, out: list[bytes]) -> None:
        """The chat pair's output: whole events only (its ``feed`` and ``finish`` never return
        part of one), nearly always one ``data:`` line each, read without an SSE buffer."""
        if not chat_sse or self.done:
            return
        for block in chat_sse.split(b"\n\n"):
            if not block:
                continue
            if block.startswith(b"data: ") and b"\n" not in block:
                data = block[6:]
            else:  # other fields, comments or data in several lines: the full rules
                event = parse_event(block + b"\n\n")
                if event is None:
                    continue
                data = event.data
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                self._on_chunk(chunk, out)

    def _check_end(self, out: list[bytes], *, final: bool) -> None:
        """At the chat stream's end, its held last chunk (or error) ends this one."""
        inner = self._inner
        if self.done or not (inner.done or (final and inner.error_code)):
            return
        held = inner.held
        if inner.error_code:
            self.error_code = inner.error_code
            self.held = events.from_envelope(self._next(), held or b"", responses_param)
            self.done = True
            return
        if held is not None:
            self._read(b"data: " + held + b"\n\n", out)
        self._end(out)

    def _on_chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._part_delta("output_text", content, out)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._part_delta("refusal", refusal, out)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    self._call_delta(call, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    # -- Responses events out

    def _next(self) -> int:
        sequence = self._sequence
        self._sequence += 1
        return sequence

    def _emit(self, out: list[bytes], kind: str, fields: dict[str, Any]) -> None:
        doc = {"type": kind, "sequence_number": self._next(), **fields}
        out.append(events.frame(kind, orjson.dumps(doc)))

    def _response(self, status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return response_doc(
            self._request,
            response_id=self.response_id,
            created_at=self._ctx.created,
            model=self._ctx.slug,
            status=status,
            output=output,
            usage=extra.pop("usage", None),
            **extra,
        )

    def _start(self, out: list[bytes]) -> None:
        """``response.created`` and ``response.in_progress``: the same response, written once."""
        self._started = True
        response = orjson.dumps(self._response("in_progress", []))
        for kind in ("response.created", "response.in_progress"):
            head = b'{"type":"' + kind.encode() + b'","sequence_number":' + str(self._next()).encode()
            out.append(events.frame(kind, head + b',"response":' + response + b"}"))

    def _part_delta(self, kind: str, text: str, out: list[bytes]) -> None:
        self._close_calls(out)
        message = self._message
        if message is None:
            message = self._message = _Message(len(self._output))
            self._output.append(message_item(message.id, [], "in_progress"))
            self._emit(
                out,
                "response.output_item.added",
                {"output_index": message.index, "item": message_item(message.id, [], "in_progress")},
            )
        if message.open != kind:
            self._close_part(message, out)
            part = output_text("") if kind == "output_text" else refusal_part("")
            message.parts.append(part)
            message.open = kind
            self._emit(
                out,
                "response.content_part.added",
                {
                    "item_id": message.id,
                    "output_index": message.index,
                    "content_index": len(message.parts) - 1,
                    "part": part,
                },
            )
        part = message.parts[-1]
        fields: dict[str, Any] = {
            "item_id": message.id,
            "output_index": message.index,
            "content_index": len(message.parts) - 1,
            "delta": text,
        }
        if kind == "output_text" and text:
            part["text"] += text
            fields["logprobs"] = []
            self._emit(out, "response.output_text.delta", fields)
        elif text:
            self._refused = True
            part["refusal"] += text
            self._emit(out, "response.refusal.delta", fields)

    def _close_part(self, message: _Message, out: list[bytes]) -> None:
        if message.open is None:
            return
        part = message.parts[-1]
        at = {"item_id": message.id, "output_index": message.index, "content_index": len(message.parts) - 1}
        if message.open == "output_text":
            self._emit(out, "response.output_text.done", {**at, "text": part["text"], "logprobs": []})
        else:
            self._emit(out, "response.refusal.done", {**at, "refusal": part["refusal"]})
        self._emit(out, "response.content_part.done", {**at, "part": part})
        message.open = None

    def _close_message(self, out: list[bytes], status: str = "completed") -> None:
        message = self._message
        if message is None:
            return
        self._close_part(message, out)
        item = message_item(message.id, message.parts, status)
        self._output[message.index] = item
        self._emit(out, "response.output_item.done", {"output_index": message.index, "item": item})
        self._message = None

    def _call_delta(self, delta: Mapping[str, Any], out: list[bytes]) -> None:
        position = delta.get("index", 0)
        function = delta.get("function") or {}
        call = self._calls.get(position)
        if call is None:
            self._close_message(out)
            self._close_calls(out)
            given = delta.get("id")
            call_id = given if isinstance(given, str) and given else new_id("call")
            call = self._calls[position] = _Call(len(self._output), call_id, str(function.get("name") or ""))
            item = function_call_item(call.id, call.call_id, call.name, "", "in_progress")
            self._output.append(item)
            self._emit(out, "response.output_item.added", {"output_index": call.index, "item": item})
        fragment = function.get("arguments")
        # Chat streams send one call's fragments before the next call's (a fragment for a call
        # closed already cannot be sent any more: its item is done).
        if isinstance(fragment, str) and fragment and not call.closed:
            call.arguments.append(fragment)
            self._emit(
                out,
                "response.function_call_arguments.delta",
                {"item_id": call.id, "output_index": call.index, "delta": fragment},
            )

    def _close_calls(self, out: list[bytes]) -> None:
        for call in self._calls.values():
            if call.closed:
                continue
            arguments = "".join(call.arguments)
            at = {"item_id": call.id, "output_index": call.index}
            self._emit(
                out,
                "response.function_call_arguments.done",
                {**at, "name": call.name, "arguments": arguments},
            )
            item = function_call_item(call.id, call.call_id, call.name, arguments, "completed")
            self._output[call.index] = item
            self._emit(out, "response.output_item.done", {"output_index": call.index, "item": item})
            call.closed = True

    def _end(self, out: list[bytes]) -> None:
        status, incomplete = outcome(self._finish, self._refused)
        if not self._output:
            self._part_delta("output_text", "", out)  # an empty answer is an empty message
        self._close_message(out, status if status == "incomplete" else "completed")
        self._close_calls(out)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        response = self._response(
            status,
            self._output,
            usage=self.usage,
            incomplete=incomplete,
            completed_at=int(time.time()) if status == "completed" else None,
        )
        self.held = orjson.dumps({"type": kind, "sequence_number": self._next(), "response": response})
        self.done = True
