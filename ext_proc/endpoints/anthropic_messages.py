"""``POST /v1/messages``: Anthropic's Messages API, streamed or not, for every model.

Its translators pass it through to Anthropic providers and translate it for the others
(translators/messages_*.py). Everything the client gets is in Anthropic's shapes, the
gateway's own answers included: errors are ``{"type": "error", "error": {"type", "code",
"message"}}`` (infery_proto.wire ``anthropic_error_object``: Anthropic's type for the status,
the gateway's code), and a stream ends with ``message_stop`` carrying ``credits_used``, with
no ``data: [DONE]`` (Anthropic's SDK reads events by their ``event:`` name).

Its parameters are checked before any translation, the same for every provider, for what
Anthropic's API itself refuses and the translation relies on (``max_tokens``, ``messages``
and its roles and blocks, the sampling ranges, ``tool_choice``, ``thinking``); fields the
check does not know are the provider's (Anthropic) or the translation's (others) to judge.

A ``document`` or ``image`` block may name a file the gateway stores (``"source": {"type":
"file", "file_id": "file-..."}``, the shape of Anthropic's Files API): :meth:`Messages.file_refs`
finds them, in messages and in tool results, and ext_proc/file_refs.py puts each inline as the
block Anthropic's API reads without files (an image or a PDF as ``base64``, UTF-8 text as a
``text`` source), which every translator already takes. No provider ever gets the gateway's
id: an Anthropic provider would look it up among its own account's files.

Tokens are estimated as chat's are (ext_proc/token_estimate.py): the system prompt, text
blocks, tool-use inputs, tool results and tool definitions in, 4 per message for its
framing and 256 per image or document; the text and tool input of the answer out.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, TypeGuard

import orjson

from ext_proc.errors import GatewayError
from ext_proc.metering import input_tokens_cost, output_tokens_cost
from ext_proc.token_estimate import tokens_for_chars
from ext_proc.translators import message_documents as docs
from ext_proc.translators.base import StreamTranslator

from .base import NOT_STREAMED, Endpoint, FileRef, LastEvent, event_type, with_credits

MESSAGE_FRAMING_TOKENS = 4
NON_TEXT_BLOCK_TOKENS = 256  # an image or a document: its size says little about its tokens
DEFAULT_OUTPUT_TOKENS = 1024
MIN_THINKING_BUDGET = 1024  # Anthropic's

_STREAMED = (True, False)
_ROLES = ("user", "assistant")
_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
_MESSAGE_STOP = b'{"type":"message_stop"}'
_FILE_BLOCKS = ("document", "image")


class AnthropicEndpoint(Endpoint):
    """An endpoint of Anthropic's API: its errors and stream endings in Anthropic's shapes, and
    its blocks naming stored files (messages and count_tokens read the same blocks)."""

    __slots__ = ()

    def error_body(self, status: int, code: str, message: str, param: str | None = None) -> bytes:
        return docs.error_body(status, code, message)

    def restyle_error(self, status: int, body: bytes) -> bytes:
        return docs.from_envelope(status, body)[1]

    def stream_event(self, data: bytes) -> bytes:
        return docs.event_bytes(event_type(data) or "error", data)

    def stream_error(
        self, status: int, code: str, message: str, stream: StreamTranslator | None = None
    ) -> bytes:
        return docs.error_body(status, code, message)

    def stream_last(self, last: LastEvent) -> bytes:
        return _MESSAGE_STOP

    def stream_tail(self, last: bytes, credits: str) -> bytes:
        """``message_stop`` (or the ``error`` ending the stream) with ``credits_used``; no ``[DONE]``."""
        return docs.event_bytes(event_type(last) or "message_stop", with_credits(last, credits))

    def file_refs(self, body: Mapping[str, Any]) -> list[FileRef]:
        """Each ``document`` or ``image`` block whose source is a ``file``, in a message's content,
        in a tool result's, or in a ``document`` whose source is ``content`` (its blocks may be
        images with a file source of their own): a block missed here would reach the provider
        with the id the client wrote, looked up in the provider account's files."""
        found: list[FileRef] = []
        messages = body.get("messages")
        for i, message in enumerate(messages if isinstance(messages, list) else ()):
            content = message.get("content") if isinstance(message, dict) else None
            _file_blocks(found, f"messages[{i}].content", content)
        return found

    def inline_file(self, part: dict[str, Any], filename: str, mime: str, data_uri: str) -> None:
        """An image as an ``image`` block, text as a ``text`` document, anything else (a PDF) as
        a ``base64`` document; a document keeps its ``title`` (the file's name when it has none),
        ``context`` and ``citations``, and every block its ``cache_control``."""
        data = data_uri.partition(",")[2]
        kept = {k: v for k, v in part.items() if k not in ("type", "source")}
        part.clear()
        if mime.startswith("image/"):
            source = {"type": "base64", "media_type": mime, "data": data}
            part |= {"type": "image", "source": source}
            if "cache_control" in kept:
                part["cache_control"] = kept["cache_control"]
            return
        if mime.startswith("text/"):
            text = base64.b64decode(data).decode("utf-8", "replace")
            source = {"type": "text", "media_type": "text/plain", "data": text}
        else:
            source = {"type": "base64", "media_type": mime, "data": data}
        part |= {"type": "document", "source": source, **kept}
        if filename and "title" not in part:
            part["title"] = filename


class Messages(AnthropicEndpoint):
    __slots__ = ()

    name = "messages"
    paths = ("/v1/messages",)
    streams = True
    operation = "chat"
    meters = (input_tokens_cost, output_tokens_cost)

    def check(self, body: dict[str, Any]) -> None:
        check_messages_request(body, require_max_tokens=True)

    def streaming(self, body: Mapping[str, Any]) -> tuple[bool, bool]:
        return _STREAMED if body.get("stream") is True else NOT_STREAMED

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return prompt_tokens(body)

    def output_allowance(self, body: Mapping[str, Any]) -> int:
        limit = body.get("max_tokens")
        valid = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
        return limit if valid else DEFAULT_OUTPUT_TOKENS  # type: ignore[return-value]

    def served_chars(self, doc: Any) -> int:
        """Reads a ``Message``'s content (text, tool inputs as JSON, thinking) or one stream event's
        (``content_block_start`` text, ``content_block_delta`` text, JSON fragment or thinking)."""
        if not isinstance(doc, dict):
            return 0
        kind = doc.get("type")
        if kind == "message":
            content = doc.get("content")
            return (
                sum(_block_chars(b) for b in content if isinstance(b, dict))
                if isinstance(content, list)
                else 0
            )
        if kind == "content_block_delta":
            delta = doc.get("delta")
            if isinstance(delta, dict):
                for name in ("text", "partial_json", "thinking"):
                    if isinstance(delta.get(name), str):
                        return len(delta[name])
        elif kind == "content_block_start":
            block = doc.get("content_block")
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                return len(block["text"])
        return 0


ENDPOINT = Messages()


def _file_blocks(found: list[FileRef], at: str, content: Any) -> None:
    """Adds each block of ``content`` (a list at ``at``) naming a stored file to ``found``, and
    those of the blocks it holds: a tool result's content, a content document's source."""
    for j, block in enumerate(content if isinstance(content, list) else ()):
        here = f"{at}[{j}]"
        _file_block(found, here, block)
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_result":
            _file_blocks(found, f"{here}.content", block.get("content"))
        source = block.get("source")
        if block.get("type") == "document" and isinstance(source, dict) and source.get("type") == "content":
            _file_blocks(found, f"{here}.source.content", source.get("content"))


def _file_block(found: list[FileRef], at: str, block: Any) -> None:
    """Adds ``block`` to ``found`` when it is a document or image naming a stored file."""
    if not isinstance(block, dict) or block.get("type") not in _FILE_BLOCKS:
        return
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "file":
        return
    found.append(FileRef.named(f"{at}.source.file_id", block, source.get("file_id")))


# ---------------------------------------------------------------- the request check


def _fail(code: str, path: str, message: str) -> GatewayError:
    """Anthropic names the field before its complaint (``max_tokens: Field required``)."""
    return GatewayError(400, code, f"{path}: {message}", path)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_messages_request(body: Mapping[str, Any], *, require_max_tokens: bool) -> None:
    """Refuse what Anthropic's Messages API refuses in the fields every translation reads."""
    if require_max_tokens:
        limit = body.get("max_tokens")
        if limit is None:
            raise _fail("missing_required_parameter", "max_tokens", "Field required")
        if not _is_int(limit):
            raise _fail("invalid_type", "max_tokens", "Input should be a valid integer")
        if limit < 1:
            raise _fail("invalid_value", "max_tokens", "Input should be greater than or equal to 1")
    _check_messages(body.get("messages"))
    system = body.get("system")
    if system is not None and not isinstance(system, str) and not _text_blocks(system):
        raise _fail("invalid_type", "system", "Input should be a valid string or a list of text blocks")
    for name, high in (("temperature", 1), ("top_p", 1)):
        value = body.get(name)
        if value is not None and not _is_number(value):
            raise _fail("invalid_type", name, "Input should be a valid number")
        if value is not None and not 0 <= value <= high:
            raise _fail("invalid_value", name, f"Input should be between 0 and {high}")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _fail("invalid_value", "top_k", "Input should be a non-negative integer")
    stop = body.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise _fail("invalid_type", "stop_sequences", "Input should be a valid list of strings")
    if body.get("stream") is not None and not isinstance(body.get("stream"), bool):
        raise _fail("invalid_type", "stream", "Input should be a valid boolean")
    _check_tools(body)
    _check_thinking(body)


def _text_blocks(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in value
    )


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise _fail("missing_required_parameter", "messages", "Field required")
    if not isinstance(messages, list):
        raise _fail("invalid_type", "messages", "Input should be a valid list")
    if not messages:
        raise _fail("invalid_value", "messages", "at least one message is required")
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(msg, dict):
            raise _fail("invalid_type", where, "Input should be a valid dictionary")
        if msg.get("role") not in _ROLES:
            raise _fail("invalid_value", f"{where}.role", "Input should be 'user' or 'assistant'")
        content = msg.get("content")
        if content is None:
            raise _fail("missing_required_parameter", f"{where}.content", "Field required")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise _fail("invalid_type", f"{where}.content", "Input should be a valid string or list")
        for j, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise _fail("invalid_type", f"{where}.content.{j}", "each content block needs a type")
            if block["type"] == "container_upload":
                # Its file_id names a file of the provider's own account (Anthropic's Files API),
                # which the gateway never uploads to: a client could reach the operator's files.
                raise _fail(
                    "unsupported_parameter",
                    f"{where}.content.{j}",
                    "container_upload blocks are not supported: no gateway file is uploaded to a provider",
                )


def _check_tools(body: Mapping[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _fail("invalid_type", "tools", "Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
                raise _fail("missing_required_parameter", f"tools.{i}.name", "Field required")
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in _TOOL_CHOICES:
        raise _fail("invalid_value", "tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] == "tool" and not (isinstance(choice.get("name"), str) and choice["name"]):
        raise _fail("missing_required_parameter", "tool_choice.name", "Field required")


def _check_thinking(body: Mapping[str, Any]) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str):
        raise _fail("invalid_type", "thinking.type", "Input should be a valid string")
    if thinking["type"] != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not _is_int(budget):
        raise _fail("missing_required_parameter", "thinking.budget_tokens", "Field required")
    if budget < MIN_THINKING_BUDGET:
        raise _fail(
            "invalid_value",
            "thinking.budget_tokens",
            f"Input should be greater than or equal to {MIN_THINKING_BUDGET}",
        )
    limit = body.get("max_tokens")
    if _is_int(limit) and budget >= limit:
        raise _fail("invalid_value", "max_tokens", "max_tokens must be greater than thinking.budget_tokens")


# ------------------------------------------------------------------- token estimates


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """The estimate of a Messages request's input (see the module's docstring)."""
    chars = 0
    tokens = 0
    system = body.get("system")
    if isinstance(system, str):
        chars += len(system)
    elif isinstance(system, list):
        chars += sum(len(b["text"]) for b in system if isinstance(b, dict) and isinstance(b.get("text"), str))
    messages = body.get("messages")
    for msg in messages if isinstance(messages, list) else ():
        if not isinstance(msg, dict):
            continue
        tokens += MESSAGE_FRAMING_TOKENS
        content = msg.get("content")
        if isinstance(content, str):
            chars += len(content)
            continue
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict):
                block_chars = _block_chars(block)
                chars += block_chars
                if not block_chars and block.get("type") in ("image", "document"):
                    tokens += NON_TEXT_BLOCK_TOKENS
    if body.get("tools"):
        chars += len(orjson.dumps(body["tools"]))
    return tokens + tokens_for_chars(chars)


def _block_chars(block: Mapping[str, Any]) -> int:
    """Text characters of one content block (in a request or an answer); 0 for media."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return len(text) if isinstance(text, str) else 0
    if kind in ("tool_use", "server_tool_use"):
        return len(str(block.get("name") or "")) + len(orjson.dumps(block.get("input") or {}))
    if kind == "thinking":
        thinking = block.get("thinking")
        return len(thinking) if isinstance(thinking, str) else 0
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return len(content)
        if isinstance(content, list):
            return sum(_block_chars(b) for b in content if isinstance(b, dict))
    return 0
