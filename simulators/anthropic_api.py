"""Simulated Anthropic Messages API (`/v1/messages`, streamed and not, plus `count_tokens`).

Requests are checked as the real API checks them: the schema of the SDK's request types (closed
objects), then the rules the schema cannot express (``thinking.budget_tokens`` at least 1024 and
below ``max_tokens``; with thinking, ``temperature`` only 1 and no ``top_k``; ``temperature`` and
``top_p`` not together on the models that refuse it). ``count_tokens`` takes only its own fields.

With ``thinking`` enabled the answer starts with a thinking block (``"Thinking about: <the last
user text, 20 words>"``, a random signature), streamed as ``thinking_delta``s and a
``signature_delta``; its words count as output tokens, as Claude's thinking does.

Prompt caching is simulated without state: the tokens of every message up to the last one that
carries a `cache_control` block (the system prompt counts as a message) are reported as
`cache_read_input_tokens`; a top-level `cache_control` caches all messages but the last.
`input_tokens` is the rest, as in the real API.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from simulators import content
from simulators.content import Answer, Prompt, Tool
from simulators.provider import ApiError, Call, Endpoint, Provider, merge_usage, new_id
from simulators.replies import JsonReply, Reply, StreamReply

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
}
ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed your organization's rate limit of 50 requests per minute. For details, "
        "refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current "
        "usage. Please reduce the prompt length or the maximum tokens requested, or try again later.",
    ),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timeout"),
    529: ("overloaded_error", "Overloaded"),
}


def messages_prompt(body: dict[str, Any]) -> tuple[Prompt, int]:
    """The neutral prompt and the number of prompt tokens served from the (simulated) cache."""
    prompt = Prompt()
    marked = -1
    system = body.get("system")
    if system:
        blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
        prompt.message_texts.append(" ".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict)))
        if any(isinstance(b, dict) and b.get("cache_control") for b in blocks):
            marked = 0
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    results: list[str] = []
    for message in messages:
        parts = message.get("content")
        parts = [{"type": "text", "text": parts}] if isinstance(parts, str) else parts or []
        texts, said, results = [], [], []
        for block in parts:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text", "")))
                said.append(texts[-1])
            elif kind in ("image", "document"):
                _count_media(prompt, kind)
                said.append("")
            elif kind == "tool_use":
                texts += [str(block.get("name", "")), content.compact_json(block.get("input", {}))]
            elif kind == "tool_result":
                results.append(_tool_result_text(prompt, block.get("content")))
                texts.append(results[-1])
            if block.get("cache_control"):
                marked = len(prompt.message_texts)
        prompt.message_texts.append(" ".join(t for t in texts if t))
        if message.get("role") == "user" and said:
            prompt.last_user_text = " ".join(t for t in said if t)
    if messages and messages[-1].get("role") == "user" and results:
        prompt.tool_results = results

    prompt.tools = [
        Tool(str(t["name"]), t.get("input_schema") or {})
        for t in body.get("tools") or []
        if isinstance(t, dict) and "input_schema" in t
    ]
    raw_choice = body.get("tool_choice")
    choice: dict[str, Any] = raw_choice if isinstance(raw_choice, dict) else {}
    choice_type = str(choice.get("type", "auto"))
    forced = {"any": "required", "tool": f"name:{choice.get('name')}"}
    prompt.tool_choice = forced.get(choice_type, choice_type)
    prompt.parallel_tool_calls = not choice.get("disable_parallel_tool_use", False)
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        prompt.json_mode = True
        prompt.json_schema = fmt.get("schema") or None
    limit = body.get("max_tokens")
    prompt.max_tokens = limit if isinstance(limit, int) else None
    prompt.stop = [s for s in body.get("stop_sequences") or [] if isinstance(s, str)]

    if body.get("cache_control"):
        marked = max(marked, len(prompt.message_texts) - 2)
    cached = content.prompt_tokens(prompt.message_texts[: marked + 1]) if marked >= 0 else 0
    return prompt, cached


def _count_media(prompt: Prompt, kind: str) -> None:
    if kind == "image":
        prompt.images += 1
    else:
        prompt.documents += 1


def _tool_result_text(prompt: Prompt, value: Any) -> str:
    if isinstance(value, str):
        return value
    texts = []
    for block in value or []:
        if isinstance(block, dict) and block.get("type") in ("image", "document"):
            _count_media(prompt, str(block["type"]))
        elif isinstance(block, dict):
            texts.append(str(block.get("text", "")))
    return " ".join(texts)


THINKING_WORDS = 20
# Fields POST /v1/messages/count_tokens takes (MessageCountTokensParams).
COUNT_TOKENS_FIELDS = frozenset(
    (
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "cache_control",
        "speed",
    )
)
# Models that refuse temperature and top_p together (Claude's current models do).
_ONE_SAMPLER = (
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "claude-opus-4-5",
    "claude-sonnet-4-6",
)


def thinking_text(body: dict[str, Any], prompt: Prompt) -> str:
    """The thinking block's text when the request enables thinking, else ""."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return ""
    said = " ".join(prompt.last_user_text.split()[:THINKING_WORDS]) or "(nothing)"
    return f"Thinking about: {said}"


def answer_for(prompt: Prompt, thinking: str = "") -> Answer:
    """Like the real model, an unforced tool call comes after a short sentence."""
    answer = content.plan(prompt)
    answer.thinking = thinking
    forced = prompt.tool_choice == "required" or prompt.tool_choice.startswith("name:")
    if answer.tool_calls and not forced:
        answer.preamble = f"I'll call {answer.tool_calls[0].name}."
    return answer


def usage_for(body: dict[str, Any]) -> dict[str, Any]:
    prompt, cached = messages_prompt(body)
    return _usage(prompt, cached, answer_for(prompt, thinking_text(body, prompt)))


def _usage(prompt: Prompt, cached: int, answer: Answer) -> dict[str, Any]:
    return {
        "input_tokens": prompt.prompt_tokens - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": answer.tokens,
        "service_tier": "standard",
    }


class Anthropic(Provider):
    kind: ClassVar[str] = "anthropic"
    sse_media_type: ClassVar[str] = "text/event-stream; charset=utf-8"

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("POST", "/v1/messages", self.messages),
            Endpoint("POST", "/v1/messages/count_tokens", self.count_tokens),
        ]

    def authenticate(self, call: Call) -> None:
        # anthropic-sdk-python >= 2 sends the API key as a bearer token; older clients use x-api-key.
        scheme, _, bearer = call.headers.get("authorization", "").partition(" ")
        key = call.headers.get("x-api-key") or (bearer.strip() if scheme.lower() == "bearer" else "")
        if not key:
            raise ApiError(401, "x-api-key header is required")
        if not self.key_matches(key):
            raise ApiError(401, "invalid x-api-key")
        if not call.headers.get("anthropic-version"):
            raise ApiError(400, "anthropic-version: header is required")

    def error_reply(self, error: ApiError) -> JsonReply:
        fallback = ERRORS[500] if error.status >= 500 else ERRORS[400]
        kind, message = ERRORS.get(error.status, fallback)
        request_id = f"req_{new_id()[:24]}"
        body = {
            "type": "error",
            "error": {"type": kind, "message": error.message or message},
            "request_id": request_id,
        }
        headers = {
            "request-id": request_id,
            "x-should-retry": "true" if error.status in (429, 529) else "false",
        }
        if error.status == 429:
            headers["retry-after"] = "1"
        return JsonReply(body, error.status, headers)

    def not_found(self, call: Call) -> ApiError:
        return ApiError(404, "Not Found")

    def invalid_json(self) -> ApiError:
        return ApiError(400, "There was an error parsing the body of your request: invalid JSON")

    def response_headers(self) -> dict[str, str]:
        return {"request-id": f"req_{new_id()[:24]}", "anthropic-organization-id": "sim-org"}

    def _validate(self, call: Call, body: dict[str, Any]) -> None:
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                raise ApiError(400, f"{field}: Field required")
        if self.kit is None:
            return
        problems = self.kit.providers.anthropic_request(body, beta="anthropic-beta" in call.headers)
        if problems:
            where, _, message = problems[0].partition(": ")
            raise ApiError(400, f"{where.replace('/', '.')}: {message}")
        _check_sampling(body)

    def _validate_count(self, call: Call, body: dict[str, Any]) -> None:
        for field in ("model", "messages"):
            if field not in body:
                raise ApiError(400, f"{field}: Field required")
        for field in body:
            if field not in COUNT_TOKENS_FIELDS:
                raise ApiError(400, f"{field}: Extra inputs are not permitted")
        thinking = body.get("thinking")
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
        limit = budget + 1 if isinstance(budget, int) else 1
        # The create schema checks the same fields; max_tokens is the one it requires besides.
        self._validate(call, {**body, "max_tokens": limit})

    def count_tokens(self, call: Call) -> Reply:
        body = self.require_json(call)
        self._validate_count(call, body)
        prompt, _ = messages_prompt(body)
        return JsonReply({"input_tokens": prompt.prompt_tokens})

    def messages(self, call: Call) -> Reply:
        body = self.require_json(call)
        self._validate(call, body)
        prompt, cached = messages_prompt(body)
        answer = answer_for(prompt, thinking_text(body, prompt))
        usage = _usage(prompt, cached, answer)
        merge_usage(usage, call.usage_override)
        message_id = f"msg_{new_id()[:24]}"
        blocks: list[dict[str, Any]] = []
        if answer.thinking:
            blocks.append({"type": "thinking", "thinking": answer.thinking, "signature": new_id() * 2})
        if answer.preamble:
            blocks.append({"type": "text", "text": answer.preamble})
        if not answer.tool_calls:
            blocks.append({"type": "text", "text": answer.text})
        blocks += [
            {"type": "tool_use", "id": f"toolu_{new_id()[:24]}", "name": c.name, "input": c.arguments}
            for c in answer.tool_calls
        ]
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model")),
            "content": blocks,
            "stop_reason": STOP_REASONS[answer.finish],
            "stop_sequence": answer.stop_sequence,
            "usage": usage,
        }
        if body.get("stream"):
            return StreamReply(_message_events(message), media_type=self.sse_media_type)
        return JsonReply(message)


def _check_sampling(body: dict[str, Any]) -> None:
    """The rules on thinking and sampling the schema cannot express, in the real API's words."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and budget < 1024:
            raise ApiError(
                400, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        limit = body.get("max_tokens")
        if isinstance(budget, int) and isinstance(limit, int) and limit <= budget:
            raise ApiError(400, "`max_tokens` must be greater than `thinking.budget_tokens`.")
        if body.get("temperature") not in (None, 1):
            raise ApiError(400, "`temperature` may only be set to 1 when thinking is enabled.")
        if body.get("top_k") is not None:
            raise ApiError(400, "`top_k` is not supported when thinking is enabled.")
    model = str(body.get("model", ""))
    if (
        model.startswith(_ONE_SAMPLER)
        and body.get("temperature") is not None
        and body.get("top_p") is not None
    ):
        raise ApiError(
            400, "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
        )


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _message_events(message: dict[str, Any]) -> list[bytes]:
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": min(1, usage["output_tokens"])},
    }
    events = [_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        opening: dict[str, Any]
        deltas: list[dict[str, Any]]
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in content.stream_pieces(block["text"])]
        elif block["type"] == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": p} for p in content.stream_pieces(block["thinking"])
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opening = {**block, "input": {}}
            fragments = ["", *content.json_fragments(content.compact_json(block["input"]))]
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
        events.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        if index == 0:
            events.append(_event("ping", {"type": "ping"}))
        events += [
            _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    final_usage = {
        k: usage[k]
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
        if k in usage
    }
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(_event("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage}))
    events.append(_event("message_stop", {"type": "message_stop"}))
    return events
