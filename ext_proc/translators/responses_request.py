"""A Responses API request as the chat completions request that asks a provider for the same answer.

Providers without the Responses API (Anthropic, Gemini, xAI and OpenAI-compatible servers
as the gateway treats them) are reached through their chat translators
(``responses_via_chat.py``): this module is the request half of that, pure and
provider-neutral. ``instructions`` become the first system message, ``input`` items
become chat messages (``function_call`` items an assistant turn's ``tool_calls``,
``function_call_output`` items ``tool`` messages), ``text.format`` becomes
``response_format``, ``max_output_tokens`` ``max_completion_tokens`` and
``reasoning.effort`` ``reasoning_effort``; the chat translator then maps those to the
provider as it does for any chat request (translators/README.md).

What a chat request cannot carry is refused here with ``400 unsupported_parameter``
naming the Responses parameter; what changes nothing the caller relies on is dropped
(the table in translators/README.md). Errors the chat side raises name chat
parameters: :func:`responses_param` names the Responses parameter behind them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import params

# Top-level parameters a chat request cannot carry and that change the answer if dropped.
_REFUSED = {
    "background": "background responses are not supported by this model's provider",
    "conversation": "conversations are not supported by this model's provider",
    "prompt": "reusable prompts are not supported by this model's provider",
    "context_management": "context management is not supported by this model's provider",
    "moderation": "moderation is not supported by this model's provider",
}
# ``include`` values whose data a translated provider never has: asking for them is harmless.
_INCLUDE_NOTHING = frozenset({"reasoning.encrypted_content", "message.input_image.image_url"})
_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
_IMAGE_DETAILS = frozenset({"auto", "low", "high"})


@dataclass(slots=True)
class ChatRequest:
    """The chat request, and where each of its messages came from in the Responses request
    (``instructions``, ``input``, ``input[3]``), so that an error about a chat message names the
    Responses item the caller wrote."""

    body: dict[str, Any]
    origins: list[str] = field(default_factory=list)

    def param(self, chat_param: str | None) -> str | None:
        """The Responses parameter behind ``chat_param``."""
        return responses_param(chat_param, self.origins)


def chat_request(body: Mapping[str, Any]) -> ChatRequest:
    """The chat completions request for ``body`` (a Responses request checked by the endpoint).

    Raises GatewayError 400 for what a chat request cannot carry.
    """
    for name, why in _REFUSED.items():
        value = body.get(name)
        if value is not None and value is not False:
            params.unsupported(name, why)
    # ``previous_response_id`` is not read: the exchange put the conversation it names in
    # ``input`` before any translation (ext_proc/conversations.py).
    _check_include(body.get("include"))

    out = ChatRequest({"model": body.get("model")})
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
        out.origins.append("instructions")
    _input_messages(body.get("input"), messages, out.origins)
    chat = out.body
    chat["messages"] = messages

    limit = body.get("max_output_tokens")
    if limit is not None:
        chat["max_completion_tokens"] = limit
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier"):
        if body.get(name) is not None:
            chat[name] = body[name]
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None and tools:
        chat["tool_choice"] = choice
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("stream") is True:
        chat["stream"] = True
    return out


def _check_include(include: Any) -> None:
    if not include:
        return
    if not isinstance(include, list):
        raise params.invalid("include", "include must be an array")
    for i, value in enumerate(include):
        if value not in _INCLUDE_NOTHING:
            params.unsupported(
                f"include[{i}]", f"include {value!r} is not supported by this model's provider"
            )


# ------------------------------------------------------------------------ input


def _input_messages(raw: Any, messages: list[dict[str, Any]], origins: list[str]) -> None:
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
        origins.append("input")
        return
    if not isinstance(raw, list):
        return  # the endpoint's check refused anything else
    for i, item in enumerate(raw):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise params.invalid(at, f"{at} must be an object")
        kind = item.get("type")
        if kind is None or kind == "message":
            messages.append(_message(item, at))
            origins.append(at)
        elif kind == "function_call":
            _function_call(item, at, messages, origins)
        elif kind == "function_call_output":
            messages.append(_function_output(item, at))
            origins.append(at)
        elif kind == "reasoning":
            continue  # a reasoning model's own notes: no other provider can read them
        else:
            params.unsupported(
                f"{at}.type", f"input items of type {kind!r} are not supported by this model's provider"
            )


def _message(item: Mapping[str, Any], at: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _MESSAGE_ROLES:
        raise params.invalid(f"{at}.role", f"{at}.role must be one of user, assistant, system, developer")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise params.invalid(f"{at}.content", f"{at}.content must be a string or an array")
    if role == "assistant":
        return _assistant_message(content, at)
    return {
        "role": role,
        "content": [_input_part(part, f"{at}.content[{j}]") for j, part in enumerate(content)],
    }


def _assistant_message(content: list[Any], at: str) -> dict[str, Any]:
    """An earlier answer given back: its text and refusal parts."""
    texts: list[str] = []
    refusals: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("output_text", "input_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            refusals.append(part["refusal"])
        else:
            params.unsupported(
                f"{at}.content[{j}]",
                f"assistant content of type {kind!r} is not supported by this model's provider",
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if refusals:
        message["refusal"] = "".join(refusals)
    return message


def _input_part(part: Any, at: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part.get("text") if isinstance(part.get("text"), str) else ""}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            name = "file_id" if part.get("file_id") else "image_url"
            params.unsupported(
                f"{at}.{name}", "only images given by image_url are supported by this model's provider"
            )
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in _IMAGE_DETAILS:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file: dict[str, Any] = {}
        for name in ("file_data", "file_id", "filename"):
            if isinstance(part.get(name), str):
                file[name] = part[name]
        if "file_data" not in file and "file_id" not in file:
            params.unsupported(
                f"{at}.file_url",
                "only files given by file_data or file_id are supported by this model's provider",
            )
        return {"type": "file", "file": file}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    params.unsupported(at, f"input content of type {kind!r} is not supported by this model's provider")


def _function_call(
    item: Mapping[str, Any], at: str, messages: list[dict[str, Any]], origins: list[str]
) -> None:
    """A call the model made, given back: it joins the assistant turn it belongs to (the one
    just before it, when that turn has no tool results after it yet)."""
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise params.invalid(f"{at}.call_id", f"{at}.call_id is required")
    if not isinstance(name, str) or not name:
        raise params.invalid(f"{at}.name", f"{at}.name is required")
    arguments = item.get("arguments")
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments if isinstance(arguments, str) else "{}"},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if last.get("content") == "":
            last["content"] = None
        return
    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    origins.append(at)


def _function_output(item: Mapping[str, Any], at: str) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise params.invalid(f"{at}.call_id", f"{at}.call_id is required")
    output = item.get("output")
    if isinstance(output, str):
        return {"role": "tool", "tool_call_id": call_id, "content": output}
    if not isinstance(output, list):
        raise params.invalid(f"{at}.output", f"{at}.output must be a string or an array")
    parts = []
    for j, part in enumerate(output):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "input_text":
            params.unsupported(
                f"{at}.output[{j}]",
                f"function output of type {kind!r} is not supported by this model's provider",
            )
        parts.append({"type": "text", "text": part.get("text") if isinstance(part.get("text"), str) else ""})
    return {"role": "tool", "tool_call_id": call_id, "content": parts}


# ------------------------------------------------------------------------ tools and formats


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise params.invalid("tools", "tools must be an array")
    tools = []
    for i, tool in enumerate(raw):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            params.unsupported(
                f"tools[{i}]", f"tools of type {kind!r} are not supported by this model's provider"
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise params.invalid(f"tools[{i}].name", "tool name is required")
        function: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind == "allowed_tools":
        names = []
        for tool in choice.get("tools") or []:
            if not isinstance(tool, dict) or tool.get("type") != "function":
                params.unsupported(
                    "tool_choice.tools", "only function tools can be allowed by this model's provider"
                )
            names.append({"type": "function", "function": {"name": tool.get("name")}})
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice.get("mode") or "auto", "tools": names},
        }
    params.unsupported("tool_choice", "this tool_choice is not supported by this model's provider")


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise params.invalid("text.format.type", f"unknown text.format type {kind!r}")
    schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": fmt.get("schema")}
    for key in ("description", "strict"):
        if fmt.get(key) is not None:
            schema[key] = fmt[key]
    return {"type": "json_schema", "json_schema": schema}


# ------------------------------------------------------------------------ errors

# Chat parameter (or prefix) -> the Responses parameter behind it.
_PARAMS: tuple[tuple[str, str], ...] = (
    ("max_completion_tokens", "max_output_tokens"),
    ("max_tokens", "max_output_tokens"),
    ("response_format.json_schema", "text.format"),
    ("response_format", "text.format"),
    ("reasoning_effort", "reasoning.effort"),
    ("tool_choice.function", "tool_choice"),
    ("tool_choice.allowed_tools", "tool_choice"),
    ("logprobs", "include"),
)


def responses_param(chat_param: str | None, origins: list[str] | None = None) -> str | None:
    """The Responses parameter an error about ``chat_param`` (of the chat request) is about."""
    if not chat_param:
        return chat_param
    if chat_param.startswith("messages"):
        index = _message_index(chat_param)
        if origins and index is not None and index < len(origins):
            return origins[index]
        return "input"
    if chat_param.startswith("tools[") and ".function" in chat_param:
        return chat_param.replace(".function", "", 1)
    for chat_name, name in _PARAMS:
        if (
            chat_param == chat_name
            or chat_param.startswith(chat_name + ".")
            or chat_param.startswith(chat_name + "[")
        ):
            return name + chat_param[len(chat_name) :]
    return chat_param


def _message_index(param: str) -> int | None:
    """3 for ``messages[3].content`` (or ``messages.3``)."""
    rest = param[len("messages") :].lstrip(".[")
    digits = ""
    for ch in rest:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else None
