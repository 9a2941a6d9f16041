"""OpenAI chat completions: the request reduced to a neutral prompt, and the answer as chunks."""

from __future__ import annotations

from typing import Any

import orjson

from simulators import content
from simulators.content import Answer, Prompt, Tool

FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "stop_sequence": "stop"}
FINGERPRINT = "fp_sim0000001"


def chat_prompt(body: dict[str, Any]) -> Prompt:
    """Reduce a CreateChatCompletionRequest to what the simulated model looks at."""
    prompt = Prompt()
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    for message in messages:
        texts: list[str] = []
        parts = message.get("content")
        if isinstance(parts, str):
            texts.append(parts)
        elif isinstance(parts, list):
            for part in parts:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    texts.append(str(part.get("text", "")))
                elif kind == "image_url":
                    prompt.images += 1
                elif kind == "file":
                    prompt.documents += 1
        for call in message.get("tool_calls") or []:
            function = (call.get("function") or {}) if isinstance(call, dict) else {}
            texts += [str(function.get("name", "")), str(function.get("arguments", ""))]
        text = " ".join(t for t in texts if t)
        prompt.message_texts.append(text)
        if message.get("role") == "user":
            prompt.last_user_text = text
    trailing_tools: list[str] = []
    for message in reversed(messages):
        if message.get("role") not in ("tool", "function"):
            break
        trailing_tools.insert(0, _text_of(message.get("content")))
    prompt.tool_results = trailing_tools or None

    functions = [t.get("function") for t in body.get("tools") or [] if isinstance(t, dict)]
    prompt.tools = [
        Tool(str(f.get("name")), f.get("parameters") or {}) for f in functions if isinstance(f, dict)
    ]
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        choice = f"name:{name}" if name else "required"
    prompt.tool_choice = choice if isinstance(choice, str) else "auto"
    prompt.parallel_tool_calls = body.get("parallel_tool_calls", True) is not False

    fmt = body.get("response_format") or {}
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        prompt.json_mode = True
        prompt.json_schema = (fmt.get("json_schema") or {}).get("schema") or None
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    prompt.max_tokens = limit if isinstance(limit, int) else None
    stop = body.get("stop")
    prompt.stop = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    n = body.get("n")
    prompt.n = n if isinstance(n, int) and n > 0 else 1
    return prompt


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    return ""


def chat_usage(prompt: Prompt, answer: Answer) -> dict[str, Any]:
    completion = answer.tokens * prompt.n
    return {
        "prompt_tokens": prompt.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_chunks(
    completion_id: str,
    created: int,
    model: str,
    n: int,
    answer: Answer,
    calls: list[tuple[str, content.ToolCall]],
    usage: dict[str, Any],
    include_usage: bool,
) -> list[bytes]:
    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def delta(index: int, body: dict[str, Any], finish: str | None = None) -> bytes:
        return event([{"index": index, "delta": body, "logprobs": None, "finish_reason": finish}])

    events: list[bytes] = []
    for index in range(n):
        if calls:
            events.append(delta(index, {"role": "assistant", "content": None, "refusal": None}))
            for position, (call_id, tool_call) in enumerate(calls):
                head = {
                    "index": position,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool_call.name, "arguments": ""},
                }
                events.append(delta(index, {"tool_calls": [head]}))
                for fragment in content.json_fragments(tool_call.arguments_json):
                    part = {"index": position, "function": {"arguments": fragment}}
                    events.append(delta(index, {"tool_calls": [part]}))
        else:
            events.append(delta(index, {"role": "assistant", "content": "", "refusal": None}))
            events.extend(
                delta(index, {"content": piece})
                for piece in content.stream_pieces(answer.text, answer.piece_len)
            )
        events.append(delta(index, {}, FINISH[answer.finish]))
    if include_usage:
        events.append(event([], usage=usage))
    events.append(b"data: [DONE]\n\n")
    return events
