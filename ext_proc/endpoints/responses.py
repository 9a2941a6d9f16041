"""``POST /v1/responses``: OpenAI's Responses API, streamed or not, for every model; and
``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``: the responses
the workspace kept (ext_proc/conversations.py).

Its parameters are checked against OpenAI's types and ranges before any translation
(translators/responses_params.py). OpenAI providers get the request passed through; the
others get it through their chat translators (translators/responses_via_chat.py says why).
A stream is asked for with ``stream: true``; its events are OpenAI's (``response.created`` ...
``response.completed``, each with ``sequence_number``, no ``[DONE]``), and the charge goes
into the ``response`` object of the last one (``credits_used``), or at the top of the
``error`` event that ends a failed stream (translators/responses_events.py). Input and
output tokens are priced.

An ``input_file`` or ``input_image`` part may name a file stored by the gateway (``file_id``):
:meth:`Responses.file_refs` finds them, in the request's input and in a continued
conversation's, and ext_proc/file_refs.py puts each inline for whichever provider serves the
model (``file_data``, or an ``image_url`` data URI); what is kept is the input as the client
gave it, with its ids.

Its tokens are estimated from the text the client sends and receives (the rule in
ext_proc/token_estimate.py): instructions, input messages, function calls and their outputs,
and tool definitions in; output text, refusals and function call arguments out (the
``*.delta`` events of a stream, the ``output`` items of an answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import orjson

from ext_proc import conversations, response_store
from ext_proc.errors import GatewayError
from ext_proc.metering import input_tokens_cost, output_tokens_cost
from ext_proc.token_estimate import tokens_for_chars
from ext_proc.translators import responses_events
from ext_proc.translators.base import StreamTranslator
from ext_proc.translators.responses_params import check_responses_request

from .base import (
    NOT_STREAMED,
    Answer,
    Endpoint,
    FileRef,
    HeadersOnly,
    HeadersReply,
    HeadersRequest,
    LastEvent,
)

ITEM_FRAMING_TOKENS = 4  # per input item: role and separators
NON_TEXT_PART_TOKENS = 256  # an image, audio or file part: its size says little about tokens
DEFAULT_OUTPUT_TOKENS = 1024  # the output allowance of a request that sets no maximum

_STREAMED = (True, False)
_FILE_PARTS = ("input_file", "input_image")
# Stream events whose ``delta`` is text the client receives.
_TEXT_DELTAS = frozenset(
    {"response.output_text.delta", "response.refusal.delta", "response.function_call_arguments.delta"}
)


class Responses(Endpoint):
    __slots__ = ()

    name = "responses"
    paths = ("/v1/responses",)
    streams = True
    operation = "chat"
    meters = (input_tokens_cost, output_tokens_cost)
    conversations = True

    def check(self, body: dict[str, Any]) -> None:
        check_responses_request(body)  # OpenAI's refusals, the same for every provider

    def streaming(self, body: Mapping[str, Any]) -> tuple[bool, bool]:
        return _STREAMED if body.get("stream") is True else NOT_STREAMED

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        """Instructions and input text (messages, function call names and arguments, function
        outputs), tool definitions, plus 4 per input item for its framing; non-text parts
        (image, file, audio) count a flat 256 each."""
        chars = 0
        tokens = 0
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            chars += len(instructions)
        inp = body.get("input")
        if isinstance(inp, str):
            chars += len(inp)
            tokens += ITEM_FRAMING_TOKENS
        elif isinstance(inp, list):
            for item in inp:
                if not isinstance(item, dict):
                    continue
                tokens += ITEM_FRAMING_TOKENS
                item_chars, item_tokens = _item_size(item)
                chars += item_chars
                tokens += item_tokens
        if body.get("tools"):
            chars += len(orjson.dumps(body["tools"]))
        return tokens + tokens_for_chars(chars)

    def file_refs(self, body: Mapping[str, Any]) -> list[FileRef]:
        """Each ``input_file`` and ``input_image`` part of an input message with a ``file_id``."""
        found: list[FileRef] = []
        inp = body.get("input")
        if not isinstance(inp, list):
            return found
        for i, item in enumerate(inp):
            content = item.get("content") if isinstance(item, dict) else None
            if not isinstance(content, list):
                continue
            for j, part in enumerate(content):
                if (
                    isinstance(part, dict)
                    and part.get("type") in _FILE_PARTS
                    and part.get("file_id") is not None
                ):
                    found.append(FileRef.named(f"input[{i}].content[{j}].file_id", part, part["file_id"]))
        return found

    def inline_file(self, part: dict[str, Any], filename: str, mime: str, data_uri: str) -> None:
        """An image as an ``input_image``, anything else as an ``input_file``; a ``detail`` the
        client gave for that kind of part is kept (an image's is required: ``auto`` by default)."""
        kind, detail = part.get("type"), part.get("detail")
        part.clear()
        if mime.startswith("image/"):
            image_detail = detail if kind == "input_image" and detail else "auto"
            part |= {"type": "input_image", "image_url": data_uri, "detail": image_detail}
        else:
            part |= {"type": "input_file", "filename": filename, "file_data": data_uri}
            if kind == "input_file" and detail:
                part["detail"] = detail

    def output_allowance(self, body: Mapping[str, Any]) -> int:
        """``max_output_tokens``, else 1024."""
        limit = body.get("max_output_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return limit
        return DEFAULT_OUTPUT_TOKENS

    def served_chars(self, doc: Any) -> int:
        """Reads a ``response`` object's ``output`` (an answer), or one stream event: the text
        of its ``*.delta`` events (output text, refusal, function call arguments) and the name
        of a function call as its item is added. Other events repeat what deltas carried."""
        if not isinstance(doc, dict):
            return 0
        kind = doc.get("type")
        if kind in _TEXT_DELTAS:
            delta = doc.get("delta")
            return len(delta) if isinstance(delta, str) else 0
        if kind == "response.output_item.added":
            item = doc.get("item")
            name = item.get("name") if isinstance(item, dict) else None
            return len(name) if isinstance(name, str) else 0
        if doc.get("object") != "response":
            return 0
        chars = 0
        for item in doc.get("output") or []:
            if isinstance(item, dict):
                chars += _output_chars(item)
        return chars

    def stream_event(self, data: bytes) -> bytes:
        return responses_events.encode(data)

    def stream_error(
        self, status: int, code: str, message: str, stream: StreamTranslator | None = None
    ) -> bytes:
        """An ``error`` event numbered after the last event the stream's translator sent."""
        if stream is None:
            return responses_events.error_event(0, status, code, message)
        return cast(responses_events.NumberedEvents, stream).error_event(status, code, message)

    def stream_last(self, last: LastEvent) -> bytes:
        """Never asked: the Responses translators hold their last event whenever they are done."""
        return responses_events.error_event(0, 502, "upstream_error", "The provider's answer had no end.")

    def stream_tail(self, last: bytes, credits: str) -> bytes:
        return responses_events.encode(responses_events.with_credits(last, credits))


ENDPOINT = Responses()


class StoredResponses(HeadersOnly):
    """The responses the workspace kept: read and deleted by ext_proc from the control plane's
    store (ext_proc/response_store.py), answered at once; no provider, no body, not priced.
    Another workspace's id is 404, as an unknown one."""

    __slots__ = ()

    name = "stored_responses"
    paths = ("/v1/responses/",)
    methods = frozenset({"GET", "DELETE"})

    async def on_headers(self, request: HeadersRequest) -> HeadersReply:
        """``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``."""
        store = response_store.required(request.services.responses)
        workspace_id = request.key.workspace.id
        path, query = request.path, request.target.partition("?")[2]
        response_id, items = conversations.parse_path(path)
        if request.method == "DELETE":
            if items:
                raise GatewayError(405, "method_not_allowed", f"{path} accepts GET only.")
            if not await store.forget(workspace_id, response_id):
                raise conversations.not_found(response_id)
            return Answer(200, conversations.deleted(response_id))
        if "stream=true" in query:
            raise GatewayError(
                400, "unsupported_parameter", "A kept response is not streamed again.", "stream"
            )
        kept = await store.find(workspace_id, response_id)
        if kept is None:
            raise conversations.not_found(response_id)
        return Answer(200, conversations.item_list(kept.input_items, query) if items else kept.response)


STORED = StoredResponses()


def _item_size(item: dict[str, Any]) -> tuple[int, int]:
    """(characters, flat tokens) of one input item."""
    kind = item.get("type")
    if kind == "function_call":
        return sum(len(item[k]) for k in ("name", "arguments") if isinstance(item.get(k), str)), 0
    if kind == "function_call_output":
        return _content_size(item.get("output"))
    return _content_size(item.get("content"))


def _content_size(content: Any) -> tuple[int, int]:
    if isinstance(content, str):
        return len(content), 0
    if not isinstance(content, list):
        return 0, 0
    chars = 0
    tokens = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        text = part.get("text") if isinstance(part.get("text"), str) else part.get("refusal")
        if isinstance(text, str):
            chars += len(text)
        else:
            tokens += NON_TEXT_PART_TOKENS
    return chars, tokens


def _output_chars(item: dict[str, Any]) -> int:
    if item.get("type") == "function_call":
        return sum(len(item[k]) for k in ("name", "arguments") if isinstance(item.get(k), str))
    chars = 0
    for part in item.get("content") or []:
        if isinstance(part, dict):
            for name in ("text", "refusal"):
                if isinstance(part.get(name), str):
                    chars += len(part[name])
    return chars
