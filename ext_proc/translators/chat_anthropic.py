"""OpenAI Chat Completions ⇄ Anthropic Messages API.

Anthropic differs from OpenAI in ways that shape this module: one top-level
``system`` instead of system turns, tool results as blocks inside a *user*
turn, a mandatory ``max_tokens``, no JSON mode, and usage split across
``message_start`` and ``message_delta``. Which OpenAI parameters are mapped,
dropped or refused is documented in ``README.md`` next to this file.

JSON answers on models without structured outputs (and ``json_object``, which
Anthropic cannot express as a schema) go through a forced *answer tool*; its
reserved name is how the response side — which never sees the request —
recognises it and turns its input back into ``message.content``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import GatewayError
from . import chat_documents, messages, params, provider_errors
from . import usage as provider_usage
from .base import ResponseContext, Target, TranslatedResponse, Translator, UpstreamRequest, Usage
from .chunks import ChunkStream
from .sse import SSEEvent

ANTHROPIC_VERSION = "2023-06-01"

# Reserved tool names for JSON answers on the tool path: the object form gets
# the caller's schema as input_schema; the value form wraps a non-object schema
# in {"value": ...} because tool inputs must be objects.
ANSWER_TOOL = "infery_json_answer"
ANSWER_VALUE_TOOL = "infery_json_value"
_ANSWER_TOOLS = frozenset((ANSWER_TOOL, ANSWER_VALUE_TOOL))

DEFAULT_MAX_TOKENS = 4096
# Longest matching prefix wins. The model's own output ceiling, so an OpenAI
# caller that sets no limit is not cut short; unknown models get 4096.
_MAX_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-3-5-", 8192),
    ("claude-3-7-sonnet", 64000),
    ("claude-3-", 4096),
    ("claude-haiku-4", 64000),
    ("claude-opus-4-0", 32000),
    ("claude-opus-4-1", 32000),
    ("claude-opus-4-2025", 32000),
    ("claude-opus-4", 64000),
    ("claude-sonnet-4", 64000),
)

# tool_choice mode -> Anthropic tool_choice.type
_CHOICE_TYPES = {"auto": "auto", "none": "none", "required": "any"}

# Models that predate structured outputs (output_config.format, tool strict).
_NO_STRUCTURED = re.compile(r"claude-(?:[0-3]|instant|(?:sonnet|opus)-4(?:-0|-2\d{7})?$)")

_IMAGE_TYPES = frozenset(("image/jpeg", "image/png", "image/gif", "image/webp"))
_TOOL_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error.type -> what the client gets
_ERRORS = provider_errors.ErrorMap(
    "type",
    {
        "invalid_request_error": provider_errors.INVALID_REQUEST,
        "authentication_error": provider_errors.UPSTREAM_ERROR,
        "permission_error": provider_errors.UPSTREAM_ERROR,
        "billing_error": provider_errors.UPSTREAM_ERROR,
        "not_found_error": provider_errors.MODEL_NOT_FOUND,
        "request_too_large": provider_errors.REQUEST_TOO_LARGE,
        "rate_limit_error": provider_errors.RATE_LIMITED,
        "api_error": provider_errors.UPSTREAM_ERROR,
        "overloaded_error": provider_errors.UPSTREAM_UNAVAILABLE,
        "timeout_error": provider_errors.UPSTREAM_TIMEOUT,
    },
    # Anthropic field -> the OpenAI parameter it came from (the table in translators/README.md)
    params={
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "stop_sequences": "stop",
        "messages": "messages",
        "system": "messages",
        "tools": "tools",
        "tool_choice": "tool_choice",
        "metadata": "user",
        "output_config": "response_format",
        "model": "model",
    },
    blamed=lambda err, message: _field_prefix(message),
)
# The client's error for an Anthropic error object (shared with messages_anthropic.py).
error_fields = _ERRORS.fields
# Anthropic names the field it refuses before a colon: "max_tokens: 100000 > 64000, ...".
_FIELD_PREFIX = re.compile(r"([A-Za-z_][\w.\[\]]*): ")


def _field_prefix(message: str) -> str | None:
    found = _FIELD_PREFIX.match(message)
    return found.group(1) if found else None


_DEFAULT_REFUSAL = "The model declined to answer this request."


def max_tokens_for(model: str) -> int:
    best, value = -1, DEFAULT_MAX_TOKENS
    for prefix, limit in _MAX_TOKENS:
        if model.startswith(prefix) and len(prefix) > best:
            best, value = len(prefix), limit
    return value


def supports_structured_outputs(model: str) -> bool:
    return _NO_STRUCTURED.match(model) is None


class ChatAnthropic(Translator):
    """Stateless; one instance serves every request. Anthropic fetches https images itself
    (``url`` image source), so no media is listed for the gateway to fetch."""

    __slots__ = ()

    endpoint = "chat_completions"
    wire_format = "anthropic"

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        out = _chat_request(body, target.upstream_model)
        return UpstreamRequest(
            path=f"{target.base_path}/v1/messages",
            headers={
                "x-api-key": target.api_key,
                "anthropic-version": ANTHROPIC_VERSION,
                "content-type": "application/json",
            },
            body=orjson.dumps(out),
        )

    def response(self, status: int, body: bytes, ctx: ResponseContext) -> TranslatedResponse:
        if status >= 400:
            return error_response(status, body, ctx.request)
        msg = provider_errors.json_or_none(body)
        if not isinstance(msg, dict):
            return provider_errors.failed(
                502, "upstream_error", "the provider returned an unreadable response"
            )
        if msg.get("type") == "error":
            return provider_errors.error_from(502, msg, _ERRORS.fields, ctx.request)
        doc, usage = _completion(msg, ctx)
        return TranslatedResponse(200, orjson.dumps(doc), usage)

    def stream(self, ctx: ResponseContext) -> AnthropicStream:
        return AnthropicStream(ctx)


TRANSLATOR = ChatAnthropic()


# --------------------------------------------------------------------- request


def _chat_request(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    _reject_unsupported(body)
    structured = supports_structured_outputs(model)
    system, turns = _messages(body.get("messages"))
    out: dict[str, Any] = {"model": model}
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    limit = body.get(name)
    out["max_tokens"] = _int(limit, name) if limit is not None else max_tokens_for(model)
    if system:
        out["system"] = system
    out["messages"] = turns

    temperature = params.number(body, "temperature")
    if temperature is not None:
        out["temperature"] = min(float(temperature), 1.0)  # Anthropic's range is 0..1
    top_p = params.number(body, "top_p")
    if top_p is not None and temperature is None:
        out["top_p"] = float(top_p)  # current models refuse both together
    stop = params.stop_sequences(body.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}

    tools, tool_choice = _tools(body, structured)
    output_format, answer_tool = _answer_format(body.get("response_format"), structured)
    if output_format is not None:
        out["output_config"] = {"format": output_format}
    if answer_tool is not None:
        tool_choice = _answer_choice(tool_choice, bool(tools), answer_tool["name"])
        tools.append(answer_tool)
    if tools:
        out["tools"] = tools
        if tool_choice is not None:
            out["tool_choice"] = tool_choice
    if body.get("stream") is True:
        out["stream"] = True
    return out


def _reject_unsupported(body: Mapping[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        params.unsupported("n", "n > 1 is not supported by this model's provider")
    if body.get("logprobs"):
        params.unsupported("logprobs", "logprobs are not supported by this model's provider")
    params.reject_unsupported(body)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise params.invalid(name, f"{name} must be a non-negative integer")
    return value


def tool_id(value: Any) -> str:
    """Anthropic ids must match ^[a-zA-Z0-9_-]+$; ids minted by other providers may not."""
    text = value if isinstance(value, str) and value else "call"
    return _TOOL_ID_UNSAFE.sub("_", text)


def _messages(raw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []  # {"role", "content": [blocks]}, same roles merged
    for where, role, msg in messages.walk(raw):
        content = msg.get("content")
        if role in ("system", "developer"):
            system.extend(_text_blocks(content, where))
        elif role == "user":
            messages.append_turn(turns, "user", "content", _user_blocks(content, where))
        elif role == "assistant":
            messages.append_turn(turns, "assistant", "content", _assistant_blocks(msg, where))
        else:  # tool
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id(msg.get("tool_call_id"))}
            text = _text_blocks(content, where)
            if text:
                block["content"] = text
            messages.append_turn(turns, "user", "content", [block])

    # A trailing assistant turn is a prefill; Anthropic rejects trailing whitespace in it.
    if turns and turns[-1]["role"] == "assistant":
        last = turns[-1]["content"][-1]
        if last.get("type") == "text":
            last["text"] = last["text"].rstrip()
            if not last["text"]:
                turns[-1]["content"].pop()
                if not turns[-1]["content"]:
                    turns.pop()
    if not turns:
        raise params.invalid("messages", "messages must contain at least one user or assistant message")
    return system, turns


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    return [_text_block(t) for t in messages.text_of(content, where)]


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for kind, at, value in messages.user_parts(content, where):
        if kind == "text":
            blocks.append(_text_block(value))
        elif kind == "image_url":
            blocks.append(_image_block(value, at))
        elif kind == "file":
            blocks.append(_document_block(value, at))
        else:
            params.unsupported(at, "audio input is not supported by this model's provider")
    return blocks


def _image_block(image: Any, at: str) -> dict[str, Any]:
    param = f"{at}.image_url.url"
    url = messages.image_url(image, param)
    parsed = messages.parse_data_uri(url, param)
    if parsed is None:
        if not url.startswith(("https://", "http://")):
            raise GatewayError(400, "invalid_image_url", "image URLs must be https or data URIs", param)
        return {"type": "image", "source": {"type": "url", "url": url}}
    mime, data = parsed
    if mime not in _IMAGE_TYPES:
        raise GatewayError(
            400, "invalid_image_url", f"image type {mime} is not supported (jpeg, png, gif, webp)", param
        )
    return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}


def _document_block(file: Any, at: str) -> dict[str, Any]:
    mime, b64 = messages.file_data(file, at)
    if mime == "application/pdf":
        source: dict[str, Any] = {"type": "base64", "media_type": mime, "data": b64}
    elif mime == "text/plain":
        source = {"type": "text", "media_type": mime, "data": _b64_text(b64, at)}
    else:
        params.unsupported(
            f"{at}.file.file_data", f"file type {mime} is not supported (application/pdf, text/plain)"
        )
    block: dict[str, Any] = {"type": "document", "source": source}
    name = file.get("filename")
    if isinstance(name, str) and name:
        block["title"] = name
    return block


def _b64_text(b64: str, at: str) -> str:
    try:
        return base64.b64decode(b64, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise params.invalid(f"{at}.file.file_data", "file_data is not valid base64 UTF-8 text") from None


def _assistant_blocks(msg: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = [_text_block(t) for t in messages.assistant_text(msg, where)]
    for _, at, call, fn in messages.function_calls(msg, where):
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_id(call.get("id")),
                "name": fn.get("name") or "",
                "input": messages.arguments(fn.get("arguments"), f"{at}.function.arguments"),
            }
        )
    return blocks


def _tools(body: Mapping[str, Any], structured: bool) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    tools = []
    for i, name, fn in params.function_tools(body):
        if name in _ANSWER_TOOLS:
            raise params.invalid(
                f"tools[{i}].function.name", f"the tool name {name} is reserved by the gateway"
            )
        schema = fn.get("parameters") or {"type": "object", "properties": {}}
        strict = fn.get("strict") is True and structured
        out: dict[str, Any] = {"name": name, "input_schema": strict_schema(schema) if strict else schema}
        if fn.get("description"):
            out["description"] = fn["description"]
        if strict:
            out["strict"] = True
        tools.append(out)

    choice = params.tool_choice(body.get("tool_choice"))
    result: dict[str, Any] | None = None
    if choice is not None and choice.name is not None:
        result = {"type": "tool", "name": choice.name}
    elif choice is not None:
        result = {"type": _CHOICE_TYPES[choice.mode]}
        if choice.allowed is not None:
            tools = [t for t in tools if t["name"] in choice.allowed]
    if body.get("parallel_tool_calls") is False and tools:
        if result is None:
            result = {"type": "auto"}
        if result["type"] != "none":
            result["disable_parallel_tool_use"] = True
    return tools, result


def _answer_format(fmt: Any, structured: bool) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(output_config.format, None) with structured outputs, else (None, answer tool)."""
    answer = params.json_answer(fmt)
    if answer is None:
        return None, None
    if answer.schema is None:
        return None, {
            "name": ANSWER_TOOL,
            "description": "Give your final answer as a JSON object.",
            "input_schema": {"type": "object", "additionalProperties": True},
        }
    schema = answer.schema
    if structured:
        return {"type": "json_schema", "schema": strict_schema(schema)}, None
    description = "Give your final answer through this tool."
    if answer.description:
        description += " " + answer.description
    if schema.get("type") == "object":
        return None, {"name": ANSWER_TOOL, "description": description, "input_schema": schema}
    wrapped = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    return None, {"name": ANSWER_VALUE_TOOL, "description": description, "input_schema": wrapped}


def _answer_choice(choice: dict[str, Any] | None, has_tools: bool, name: str) -> dict[str, Any]:
    """The caller's own tools keep working: the model must call *some* tool, the answer one included."""
    if not has_tools or (choice is not None and choice["type"] == "none"):
        return {"type": "tool", "name": name}
    if choice is None or choice["type"] == "auto":
        return {**(choice or {}), "type": "any"}
    return choice


_SCHEMA_KEEP = frozenset(("type", "description", "title", "enum", "const", "default", "required", "$ref"))
_STRING_FORMATS = frozenset(
    ("date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid")
)


def strict_schema(schema: Any) -> Any:
    """Fit a JSON Schema to Anthropic's structured-output subset.

    Objects are closed (additionalProperties: false), oneOf becomes anyOf, and
    constraints Anthropic cannot enforce (minimum, pattern, maxLength, ...) are
    kept as text in the description so the model still sees them.
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in schema.items():
        if key in _SCHEMA_KEEP:
            out[key] = value
        elif key in ("$defs", "definitions", "properties"):
            out[key] = {k: strict_schema(v) for k, v in value.items()} if isinstance(value, dict) else value
        elif key in ("anyOf", "oneOf", "allOf"):
            out["allOf" if key == "allOf" else "anyOf"] = [strict_schema(v) for v in value]
        elif key == "items":
            out[key] = strict_schema(value)
        elif (key == "format" and value in _STRING_FORMATS) or (key == "minItems" and value in (0, 1)):
            out[key] = value
        elif key in ("additionalProperties", "$schema", "strict"):
            continue
        else:
            notes.append(f"{key}: {orjson.dumps(value).decode()}")
    if out.get("type") == "object" or "properties" in out:
        out["additionalProperties"] = False
    if notes:
        desc = out.get("description")
        out["description"] = (f"{desc}\n\n" if desc else "") + "{" + ", ".join(notes) + "}"
    return out


# -------------------------------------------------------------------- response


def _answer_text(name: str, value: Any) -> str:
    if name == ANSWER_VALUE_TOOL and isinstance(value, dict):
        value = value.get("value")
    return orjson.dumps(value).decode()


def _completion(msg: Mapping[str, Any], ctx: ResponseContext) -> tuple[dict[str, Any], Usage | None]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    answered = False
    for block in msg.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use" and block.get("name") in _ANSWER_TOOLS:
            texts.append(_answer_text(block["name"], block.get("input")))
            answered = True
        elif kind == "tool_use":
            calls.append(chat_documents.tool_call(block.get("id"), block.get("name"), block.get("input")))
    stop_reason = msg.get("stop_reason")
    finish = _FINISH.get(stop_reason or "", "stop")
    if finish == "tool_calls" and not calls:
        finish = "stop" if answered else finish
    text = "".join(texts)
    message = chat_documents.assistant_message(text, calls)
    if stop_reason == "refusal":
        message["refusal"] = _refusal_text(msg.get("stop_details"))
        message["content"] = text or None
    usage = provider_usage.anthropic(msg.get("usage"))
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return chat_documents.completion(msg.get("id"), ctx, [choice], usage or Usage()), usage


def _refusal_text(details: Any) -> str:
    if isinstance(details, dict) and isinstance(details.get("explanation"), str) and details["explanation"]:
        return str(details["explanation"])
    return _DEFAULT_REFUSAL


def error_response(status: int, body: bytes, request: Mapping[str, Any]) -> TranslatedResponse:
    return provider_errors.error_from(status, provider_errors.json_or_none(body), _ERRORS.fields, request)


# ---------------------------------------------------------------------- stream


class AnthropicStream(ChunkStream):
    """Anthropic Messages SSE → OpenAI ``chat.completion.chunk`` SSE."""

    __slots__ = ("_answered", "_blocks", "_finish", "_raw_usage", "_tool_count")

    _INCOMPLETE = "the provider stream ended before the message was complete"

    def __init__(self, ctx: ResponseContext) -> None:
        super().__init__(ctx)
        self._raw_usage: dict[str, Any] = {}
        # content block index -> ("tool", openai index) | ("answer", name, buffer) | ("other",)
        self._blocks: dict[int, list[Any]] = {}
        self._tool_count = 0
        self._finish: str | None = None
        self._answered = False

    def _on_data(self, data: dict[str, Any], event: SSEEvent, out: list[bytes]) -> None:
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = data.get("message") or {}
            if message.get("id"):
                self._set_id(chat_documents.chat_id(message["id"]))
            self._merge_usage(message.get("usage"))
            out.append(self._chunk({"role": "assistant", "content": ""}))
        elif kind == "content_block_start":
            self._block_start(data, out)
        elif kind == "content_block_delta":
            self._block_delta(data, out)
        elif kind == "content_block_stop":
            self._block_stop(data, out)
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            reason = delta.get("stop_reason")
            if reason:
                finish = _FINISH.get(reason, "stop")
                if finish == "tool_calls" and self._tool_count == 0 and self._answered:
                    finish = "stop"
                self._finish = finish
                if reason == "refusal":
                    out.append(self._chunk({"refusal": _refusal_text(delta.get("stop_details"))}))
            self._merge_usage(data.get("usage"))
        elif kind == "message_stop":
            self._finish_chunk(out, self._finish or "stop")
            self.usage = provider_usage.anthropic(self._raw_usage)
            if self._ctx.include_usage:
                self._usage_chunk(out, self.usage or Usage())
            self.done = True
        elif kind == "error":
            err = data.get("error")
            self._provider_error(out, err if isinstance(err, dict) else {}, _ERRORS.fields)
        # ping and unknown events: nothing for the client

    def _merge_usage(self, raw: Any) -> None:
        if isinstance(raw, dict):
            self._raw_usage.update({k: v for k, v in raw.items() if v is not None})
            self.usage = provider_usage.anthropic(self._raw_usage)

    def _block_start(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        index = data.get("index", 0)
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use" and block.get("name") in _ANSWER_TOOLS:
            self._blocks[index] = ["answer", block["name"], []]
            self._answered = True
        elif kind == "tool_use":
            k = self._tool_count
            self._tool_count += 1
            self._blocks[index] = ["tool", k]
            call = {
                "index": k,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            out.append(self._chunk({"tool_calls": [call]}))
        elif kind == "text":
            self._blocks[index] = ["text"]
            if block.get("text"):
                out.append(self._chunk({"content": block["text"]}))
        else:
            self._blocks[index] = ["other"]  # thinking, server tools, compaction: not for the client

    def _block_delta(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        state = self._blocks.get(data.get("index", 0))
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if state is None:
            return
        if kind == "text_delta" and state[0] == "text":
            if delta.get("text"):
                out.append(self._chunk({"content": delta["text"]}))
        elif kind == "input_json_delta" and state[0] in ("tool", "answer"):
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return
            if state[0] == "tool":
                out.append(
                    self._chunk({"tool_calls": [{"index": state[1], "function": {"arguments": fragment}}]})
                )
            elif state[1] == ANSWER_TOOL:
                out.append(self._chunk({"content": fragment}))  # the object itself is the answer
            else:
                state[2].append(fragment)  # {"value": ...}: unwrap once complete

    def _block_stop(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        state = self._blocks.get(data.get("index", 0))
        if state and state[0] == "answer" and state[1] == ANSWER_VALUE_TOOL:
            try:
                value = orjson.loads("".join(state[2]) or "{}")
            except orjson.JSONDecodeError:
                return
            out.append(self._chunk({"content": _answer_text(ANSWER_VALUE_TOOL, value)}))
