"""OpenAI chat completion documents built from another provider's answer.

Every chat translator that rewrites a provider's answer (rather than passing
OpenAI's own through) must produce the same ``chat.completion`` shapes: the id,
the assistant message, tool calls and the usage object live here once.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from .base import ResponseContext, Usage


def chat_id(provider_id: Any) -> str:
    """``chatcmpl-`` and the provider's id, so a response can be traced upstream; random without one."""
    return "chatcmpl-" + str(provider_id or secrets.token_hex(12))


def usage_doc(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def tool_call(call_id: Any, name: Any, args: Any) -> dict[str, Any]:
    """A complete ``tool_calls`` entry; OpenAI carries the arguments as a JSON string."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(args or {}).decode()},
    }


def assistant_message(text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """``content`` is null only beside tool calls, as OpenAI answers."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return message


def completion(
    provider_id: Any, ctx: ResponseContext, choices: list[dict[str, Any]], usage: Usage
) -> dict[str, Any]:
    return {
        "id": chat_id(provider_id),
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.slug,  # the slug that served: a client can send it back
        "choices": choices,
        "usage": usage_doc(usage),
    }
