"""What the real OpenAI API rejects: schema problems of the spec's request types and the rules
the schema cannot express, as OpenAI's own 400 answers."""

from __future__ import annotations

import re
from typing import Any

import orjson

from simulators.conformance import OpenAISpec
from simulators.provider import ApiError


def check_request(
    spec: OpenAISpec | None, schema: str, body: dict[str, Any], required: tuple[str, ...] = ("model",)
) -> None:
    """Raise the 400 OpenAI answers for the most telling schema problem of `body`."""
    for field in required:
        if field not in body:
            raise ApiError(
                400,
                f"Missing required parameter: '{field}'.",
                code="missing_required_parameter",
                param=field,
            )
    if spec is None:
        return
    problems = spec.request_problems(schema, body)
    if not problems:
        return
    rank = {"required": 0, "type": 1, "unevaluatedProperties": 3}
    worst = min(problems, key=lambda p: rank.get(p.rule, 2))
    if worst.rule == "required":
        name = re.findall(r"'([^']+)'", worst.message)[:1] or ["?"]
        param = f"{worst.param}.{name[0]}" if worst.param else name[0]
        raise ApiError(
            400, f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param
        )
    if worst.rule == "unevaluatedProperties":
        names = re.findall(r"'([^']+)'", worst.message)
        raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(names)}")
    if worst.rule == "type":
        raise ApiError(
            400,
            f"Invalid type for '{worst.param}': {worst.message}",
            code="invalid_type",
            param=worst.param,
        )
    raise ApiError(
        400,
        f"Invalid value for '{worst.param}': {worst.message}",
        code="invalid_value",
        param=worst.param,
    )


def check_chat_semantics(body: dict[str, Any]) -> None:
    """Rules the real API enforces that the OpenAPI schema cannot express."""
    if body.get("stream_options") is not None and not body.get("stream"):
        raise ApiError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ApiError(
                400,
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead.",
                param=name,
                code="invalid_value",
            )
    if body.get("tool_choice") is not None and not body.get("tools"):
        raise ApiError(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            param="tool_choice",
        )
    messages = body.get("messages") or []
    pending: dict[str, int] = {}
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if message.get("tool_call_id") not in pending:
                raise ApiError(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{i}].role",
                )
            pending.pop(message["tool_call_id"])
            continue
        if pending:
            at = min(pending.values())
            raise ApiError(
                400,
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(pending)}",
                param=f"messages.[{at}].role",
            )
        for tool_call in message.get("tool_calls") or []:
            pending[str(tool_call.get("id"))] = i
    if pending:
        raise ApiError(
            400,
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            f"{', '.join(pending)}",
            param=f"messages.[{min(pending.values())}].role",
        )
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object" and "json" not in orjson.dumps(messages).decode().lower():
        raise ApiError(
            400,
            "'messages' must contain the word 'json' in some form, to use 'response_format' of "
            "type 'json_object'.",
            param="messages",
        )
