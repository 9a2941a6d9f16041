"""Reading OpenAI chat parameters the same way for every provider.

Translators differ in how they *write* a parameter upstream, not in what a
valid OpenAI parameter is. Validation lives here once, so every provider
refuses the same bad request with the same error code and ``param``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import GatewayError


def invalid(param: str, message: str) -> GatewayError:
    return GatewayError(400, "invalid_request", message, param)


def unsupported(param: str, message: str) -> NoReturn:
    raise GatewayError(400, "unsupported_parameter", message, param)


def reject_unsupported(body: Mapping[str, Any]) -> None:
    """Refuse what no translated provider honours and what dropping would change for the caller."""
    if body.get("logit_bias"):
        unsupported("logit_bias", "logit_bias is not supported by this model's provider")
    modalities = body.get("modalities")
    if modalities and any(m != "text" for m in modalities):
        unsupported("modalities", "only text output is supported by this model's provider")
    for name in ("audio", "web_search_options", "moderation", "functions", "function_call"):
        if body.get(name) is not None:
            unsupported(name, f"{name} is not supported by this model's provider")


def number(body: Mapping[str, Any], name: str) -> float | int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(name, f"{name} must be a number")
    return value


def stop_sequences(stop: Any) -> list[str]:
    """OpenAI's ``stop`` (a string or a list) without empty strings, which providers reject."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid("stop", "stop must be a string or a list of strings")
    return [s for s in stop if s]


def function_tools(body: Mapping[str, Any]) -> Iterator[tuple[int, str, Mapping[str, Any]]]:
    """(position, name, ``function`` object) of each tool; other tool types are refused."""
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise invalid("tools", "tools must be an array")
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function":
            unsupported(f"tools[{i}]", "only function tools are supported by this model's provider")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"tools[{i}].function.name", "tool name is required")
        yield i, name, fn


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """OpenAI's ``tool_choice`` forms, reduced to what providers can express."""

    mode: str  # "auto", "none" or "required" (call some tool)
    name: str | None = None  # the one function the model must call
    allowed: frozenset[Any] | None = None  # allowed_tools: offer only these functions


def tool_choice(choice: Any) -> ToolChoice | None:
    """None when the caller did not choose; unknown forms are refused."""
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return ToolChoice(choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise invalid("tool_choice.function.name", "tool_choice needs a function name")
        return ToolChoice("required", name=name)
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = frozenset(
            (t.get("function") or {}).get("name") for t in allowed.get("tools") or [] if isinstance(t, dict)
        )
        return ToolChoice("required" if allowed.get("mode") == "required" else "auto", allowed=names)
    unsupported("tool_choice", "this tool_choice is not supported by this model's provider")


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """A JSON answer asked for through ``response_format``."""

    schema: dict[str, Any] | None  # None: any JSON object (json_object)
    description: str = ""  # json_schema.description


def json_answer(fmt: Any) -> JsonAnswer | None:
    """None for a plain text answer; unknown types and schemas that are not objects are refused."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonAnswer(None)
    if kind != "json_schema":
        raise invalid("response_format.type", f"unknown response_format type {kind!r}")
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise invalid("response_format.json_schema.schema", "json_schema.schema must be an object")
    description = spec.get("description") if isinstance(spec, dict) else None
    return JsonAnswer(schema, str(description) if description else "")
