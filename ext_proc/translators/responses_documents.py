"""OpenAI Responses API documents, as the gateway writes them for translated providers.

A ``response`` object echoes the request's settings (``instructions``, ``tools``,
``text``, ``temperature``...) the way OpenAI does, so a client reading them back sees what
it asked for; its ``output`` holds ``message`` items (``output_text`` and ``refusal``
parts) and ``function_call`` items; ``usage`` is OpenAI's Responses usage object. Ids
are OpenAI's forms (``resp_``, ``msg_``, ``fc_`` and 48 hex digits), random: they are the
gateway's own, never a provider's.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from .base import Usage

_ID_BITS = 192  # 48 hex digits, as OpenAI's ids


def new_id(prefix: str) -> str:
    """``resp_``/``msg_``/``fc_`` + 48 hex digits (unique, not secret: ``random``, as chat ids)."""
    return f"{prefix}_{random.getrandbits(_ID_BITS):048x}"


def usage_doc(usage: Usage) -> dict[str, Any]:
    """OpenAI's Responses usage object."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "content": content, "role": "assistant"}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def outcome(finish_reason: str | None, refused: bool) -> tuple[str, dict[str, Any] | None]:
    """(``status``, ``incomplete_details``) of a response whose answer ended with ``finish_reason``
    (chat's). A refusal is a complete answer (its ``refusal`` part says so); a filter that
    stopped the answer without one, or the output limit, leaves it incomplete."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter" and not refused:
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_doc(
    request: Mapping[str, Any],
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    incomplete: dict[str, Any] | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """A ``response`` object for ``request`` (the client's Responses request)."""
    reasoning = request.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, dict) else {}
    text = request.get("text")
    text = text if isinstance(text, dict) else {}
    doc: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": completed_at,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": _string(request.get("instructions")),
        "max_output_tokens": _int(request.get("max_output_tokens")),
        "max_tool_calls": _int(request.get("max_tool_calls")),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": _string(request.get("previous_response_id")),
        "prompt_cache_key": _string(request.get("prompt_cache_key")),
        "reasoning": {
            "effort": _string(reasoning.get("effort")),
            "summary": _string(reasoning.get("summary")),
        },
        "safety_identifier": _string(request.get("safety_identifier")),
        "service_tier": "default",
        "store": request.get("store") is not False,
        "temperature": _number(request.get("temperature"), 1.0),
        "text": {
            "format": text.get("format") if isinstance(text.get("format"), dict) else {"type": "text"},
            "verbosity": text.get("verbosity") if isinstance(text.get("verbosity"), str) else "medium",
        },
        "tool_choice": request.get("tool_choice") if request.get("tool_choice") is not None else "auto",
        "tools": [_tool(t) for t in request.get("tools") or [] if isinstance(t, dict)],
        "top_logprobs": _int(request.get("top_logprobs")) or 0,
        "top_p": _number(request.get("top_p"), 1.0),
        "truncation": request.get("truncation") if isinstance(request.get("truncation"), str) else "disabled",
        "metadata": request.get("metadata") if isinstance(request.get("metadata"), dict) else {},
    }
    if usage is not None:  # not yet known (a stream's first events): absent, as the spec has it
        doc["usage"] = usage_doc(usage)
    if isinstance(request.get("user"), str):  # the spec's ``user`` is a string, never null
        doc["user"] = request["user"]
    return doc


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as OpenAI echoes it: every field present."""
    if tool.get("type") != "function":
        return tool
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict") if isinstance(tool.get("strict"), bool) else True,
    }


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)
