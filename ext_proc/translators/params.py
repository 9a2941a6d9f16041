"""Reading OpenAI chat parameters the same way for every provider.

Translators differ in how they *write* a parameter upstream, not in what a
valid OpenAI parameter is. Validation lives here once, so every provider
refuses the same bad request with the same error code and ``param``:
:func:`check_chat_request` applies OpenAI's documented types and ranges
(``CreateChatCompletionRequest`` in OpenAI's OpenAPI spec) before any
translation, in OpenAI's own words and codes; what a provider cannot take of
an OpenAI-valid value is then the translator's mapping (translators/README.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import GatewayError

# OpenAI's scalar chat parameters: name -> (JSON type, minimum, maximum), from
# CreateChatCompletionRequest. max_tokens/max_completion_tokens have no bound in
# the spec, but OpenAI refuses anything below 1.
_INT64 = 2**63
_SCALARS: dict[str, tuple[type, float | None, float | None]] = {
    "temperature": (float, 0, 2),
    "top_p": (float, 0, 1),
    "n": (int, 1, 128),
    "presence_penalty": (float, -2, 2),
    "frequency_penalty": (float, -2, 2),
    "max_tokens": (int, 1, None),
    "max_completion_tokens": (int, 1, None),
    "top_logprobs": (int, 0, 20),
    "seed": (int, -_INT64, _INT64 - 1),
    "logprobs": (bool, None, None),
    "stream": (bool, None, None),
    "parallel_tool_calls": (bool, None, None),
    "store": (bool, None, None),
}
_MAX_STOP = 4
_TYPE_NAMES = {float: "a decimal", int: "an integer", bool: "a boolean"}


def check_chat_request(body: Mapping[str, Any]) -> None:
    """Refuse what OpenAI refuses in a chat request's parameters, as OpenAI answers it.

    Runs once per request, before any translation, so every provider refuses the
    same request with the same code and ``param``. ``null`` means "not given" (the
    spec makes these fields nullable).
    """
    messages = body.get("messages")
    if messages is None:
        raise GatewayError(
            400, "missing_required_parameter", "Missing required parameter: 'messages'.", "messages"
        )
    if not isinstance(messages, list):
        raise _type_error("messages", "an array", messages)
    if not messages:
        raise GatewayError(
            400,
            "invalid_value",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
        )
    check_scalars(body, _SCALARS)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _type_error("stop", "a string or an array of strings", stop)
        if len(stop) > _MAX_STOP:
            raise GatewayError(
                400,
                "invalid_value",
                f"Invalid 'stop': array too long. Expected an array with maximum length {_MAX_STOP}, "
                f"but got an array with length {len(stop)} instead.",
                "stop",
            )
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _type_error("stream_options", "an object", options)
        if body.get("stream") is not True:
            raise GatewayError(
                400,
                "invalid_value",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )


def check_scalars(
    body: Mapping[str, Any], scalars: Mapping[str, tuple[type, float | None, float | None]]
) -> None:
    """Refuse a scalar parameter of the wrong JSON type or out of its range, as OpenAI does:
    ``scalars`` maps each name to (type, minimum, maximum); ``null`` is "not given"."""
    for name, (kind, low, high) in scalars.items():
        value = body.get(name)
        if value is not None:
            _check_scalar(name, value, kind, low, high)


def type_error(name: str, expected: str, value: Any) -> GatewayError:
    """OpenAI's ``invalid_type`` for ``name`` (``expected``: "an array", "a string"...)."""
    return _type_error(name, expected, value)


def _check_scalar(name: str, value: Any, kind: type, low: float | None, high: float | None) -> None:
    if kind is bool:
        if not isinstance(value, bool):
            raise _type_error(name, "a boolean", value)
        return
    # JSON has one number type: an integer is a valid decimal, a bool is neither.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and isinstance(value, float))
    ):
        raise _type_error(name, _TYPE_NAMES[kind], value)
    noun = "integer" if kind is int else "decimal"
    if low is not None and value < low:
        raise GatewayError(
            400,
            "invalid_value",
            f"Invalid '{name}': {noun} below minimum value. "
            f"Expected a value >= {low}, but got {value} instead.",
            name,
        )
    if high is not None and value > high:
        raise GatewayError(
            400,
            "invalid_value",
            f"Invalid '{name}': {noun} above maximum value. "
            f"Expected a value <= {high}, but got {value} instead.",
            name,
        )


def _type_error(name: str, expected: str, value: Any) -> GatewayError:
    got = {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}.get(
        type(value), "an integer" if isinstance(value, int) else "a decimal"
    )
    return GatewayError(
        400, "invalid_type", f"Invalid type for '{name}': expected {expected}, but got {got} instead.", name
    )


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
