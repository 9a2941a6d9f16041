"""Reading OpenAI chat messages the same way for every provider.

Providers differ in how a turn, a text, an image, a file or a tool call is
*written*; what a valid OpenAI message is, and the ``param`` path an error
names, do not depend on the provider. The walkers here validate each piece
and hand it to the translator, which only builds its own shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from ..errors import GatewayError
from .params import invalid, unsupported

_ROLES = ("system", "developer", "user", "assistant", "tool")


def walk(raw: Any) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(param path, role, message) of each message; unknown roles are refused."""
    if not isinstance(raw, list) or not raw:
        raise invalid("messages", "messages must be a non-empty array")
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise invalid(where, "each message must be an object")
        role = msg.get("role")
        if role == "function":
            unsupported(f"{where}.role", "function messages are not supported; use tool messages")
        if role not in _ROLES:
            raise invalid(f"{where}.role", f"unknown role {role!r}")
        yield where, role, msg


def append_turn(turns: list[dict[str, Any]], role: str, key: str, items: list[dict[str, Any]]) -> None:
    """Add ``items`` as a turn under ``key``; consecutive same-role turns are merged into one,
    because the providers expect roles to alternate."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(items)
    else:
        turns.append({"role": role, key: items})


def text_of(content: Any, where: str) -> list[str]:
    """The non-empty texts of a message that may hold only text (and refusal) parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise invalid(f"{where}.content", "content must be a string or an array of parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise invalid(f"{where}.content[{j}]", "only text parts are allowed here")
        text = part.get("text") if part["type"] == "text" else part.get("refusal")
        if not isinstance(text, str):
            raise invalid(f"{where}.content[{j}]", "text parts need a string")
        if text:
            texts.append(text)
    return texts


def user_parts(content: Any, where: str) -> Iterator[tuple[str, str, Any]]:
    """(kind, param path, value) of each part of a user message.

    ``kind`` is ``text`` (value: a non-empty string), ``image_url``, ``file``
    or ``input_audio`` (value: the part's object, still to be checked by the
    translator, which knows what its provider accepts).
    """
    if content is None or isinstance(content, str):
        for text in text_of(content, where):
            yield "text", where, text
        return
    if not isinstance(content, list):
        raise invalid(f"{where}.content", "content must be a string or an array of parts")
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            for text in text_of([part], where):
                yield "text", at, text
        elif kind in ("image_url", "file", "input_audio"):
            yield kind, at, part.get(kind)
        else:
            raise invalid(at, f"unknown content part type {kind!r}")


def parse_data_uri(url: str, param: str) -> tuple[str, str] | None:
    """(mime type, base64 payload) of a ``data:`` URI; None for anything else."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64") or not data:
        raise GatewayError(400, "invalid_image_url", "data URIs must be base64-encoded", param)
    return header[:-7].split(";", 1)[0].strip().lower(), data


def image_url(image: Any, param: str) -> str:
    """The URL of an ``image_url`` part: https or a data URI, for the translator to tell apart."""
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not url:
        raise invalid(param, "image_url.url is required")
    return url


def file_data(file: Any, at: str) -> tuple[str, str]:
    """(mime type, base64 payload) of a ``file`` part; raw base64 without a data URI is taken as PDF."""
    if not isinstance(file, dict):
        raise invalid(f"{at}.file", "file must be an object")
    if file.get("file_id") is not None:
        unsupported(f"{at}.file.file_id", "file_id references are not supported yet; send file_data")
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        raise invalid(f"{at}.file.file_data", "file.file_data is required")
    parsed = parse_data_uri(data, f"{at}.file.file_data")
    return parsed if parsed is not None else ("application/pdf", data)


def assistant_text(msg: Mapping[str, Any], where: str) -> list[str]:
    """An assistant turn's texts; its refusal stands in when it has none, so the turn is not lost."""
    texts = text_of(msg.get("content"), where)
    refusal = msg.get("refusal")
    if not texts and isinstance(refusal, str) and refusal:
        texts.append(refusal)
    return texts


def function_calls(msg: Mapping[str, Any], where: str) -> Iterator[tuple[int, str, Any, Mapping[str, Any]]]:
    """(position, param path, call, ``function`` object) of each tool call of an assistant turn."""
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise invalid(f"{where}.tool_calls", "tool_calls must be an array")
    for k, call in enumerate(calls):
        at = f"{where}.tool_calls[{k}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or call.get("type", "function") != "function":
            unsupported(at, "only function tool calls are supported")
        yield k, at, call, fn


def arguments(raw: Any, param: str) -> dict[str, Any]:
    """A tool call's JSON-string arguments as the object providers want."""
    if raw is None or raw == "":
        return {}
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise invalid(param, "tool call arguments must be a JSON object") from None
    if not isinstance(value, dict):
        raise invalid(param, "tool call arguments must be a JSON object")
    return value
