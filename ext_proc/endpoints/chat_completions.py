"""``POST /v1/chat/completions``: OpenAI's Chat Completions API, streamed or not.

Its parameters are checked against OpenAI's types and ranges before any
translation (translators/params.py). A stream is asked for with ``stream: true``;
``stream_options.include_usage`` asks for the usage chunk (the gateway reads the
provider's usage either way). Input and output tokens are priced.

A ``file`` content part may name a file stored by the gateway (``{"file": {"file_id": ...}}``):
:meth:`ChatCompletions.file_refs` finds them and ext_proc/file_refs.py puts each inline, as
``file_data`` (a PDF, a text) or an ``image_url`` part (an image), which every provider's
translator reads.

Its tokens are estimated from the text the client sends and receives (the rule in
ext_proc/token_estimate.py): message contents, tool calls and tool definitions in;
contents, refusals, reasoning and tool calls of the answer (or of each chunk) out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ext_proc.metering import input_tokens_cost, output_tokens_cost
from ext_proc.token_estimate import tokens_for_chars
from ext_proc.translators.chat_documents import usage_doc
from ext_proc.translators.params import check_chat_request

from .base import Endpoint, FileRef, LastEvent, openai_streaming

MESSAGE_FRAMING_TOKENS = 4  # per chat message: role and separators
NON_TEXT_PART_TOKENS = 256  # an image, audio or file part: its size says little about tokens
DEFAULT_OUTPUT_TOKENS = 1024  # the output allowance of a request that sets no maximum


class ChatCompletions(Endpoint):
    __slots__ = ()

    name = "chat_completions"
    paths = ("/v1/chat/completions",)
    streams = True
    operation = "chat"
    meters = (input_tokens_cost, output_tokens_cost)

    def check(self, body: dict[str, Any]) -> None:
        check_chat_request(body)  # OpenAI's refusals, the same for every provider

    def streaming(self, body: Mapping[str, Any]) -> tuple[bool, bool]:
        return openai_streaming(body)

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        """Message text and tool-call arguments, tool definitions, plus 4 per message for its
        framing; non-text content parts (image, audio, file) count a flat 256 each."""
        messages = body.get("messages")
        if not isinstance(messages, list):
            return 0
        chars = 0
        tokens = 0
        for message in messages:
            if not isinstance(message, dict):
                continue
            tokens += MESSAGE_FRAMING_TOKENS
            content = message.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    text = part.get("text") if isinstance(part, dict) else None
                    if isinstance(text, str):
                        chars += len(text)
                    else:
                        tokens += NON_TEXT_PART_TOKENS
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                chars += sum(len(orjson.dumps(c)) for c in calls)
        if body.get("tools"):
            chars += len(orjson.dumps(body["tools"]))
        return tokens + tokens_for_chars(chars)

    def file_refs(self, body: Mapping[str, Any]) -> list[FileRef]:
        """Each ``file`` part with a ``file_id``."""
        found: list[FileRef] = []
        messages = body.get("messages")
        if not isinstance(messages, list):
            return found
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            for j, part in enumerate(content):
                file = part.get("file") if isinstance(part, dict) and part.get("type") == "file" else None
                if isinstance(file, dict) and file.get("file_id") is not None:
                    at = f"messages[{i}].content[{j}].file.file_id"
                    found.append(FileRef.named(at, part, file["file_id"]))
        return found

    def inline_file(self, part: dict[str, Any], filename: str, mime: str, data_uri: str) -> None:
        """An image as an ``image_url`` part; anything else as a ``file`` part's ``file_data``."""
        part.clear()
        if mime.startswith("image/"):
            part |= {"type": "image_url", "image_url": {"url": data_uri}}
        else:
            part |= {"type": "file", "file": {"filename": filename, "file_data": data_uri}}

    def output_allowance(self, body: Mapping[str, Any]) -> int:
        """``max_completion_tokens`` or ``max_tokens`` (else 1024), times ``n``."""
        if not isinstance(body.get("messages"), list):
            return 0
        output = _positive_int(
            body.get("max_completion_tokens"), body.get("max_tokens"), DEFAULT_OUTPUT_TOKENS
        )
        return output * _positive_int(body.get("n"), None, 1)

    def stream_last(self, last: LastEvent) -> bytes:
        """The usage chunk the client asked for, else a final ``finish_reason`` chunk (never an
        empty ``choices`` it did not expect)."""
        doc: dict[str, Any] = {
            "id": last.response_id or "chatcmpl-" + last.request_id,
            "object": "chat.completion.chunk",
            "created": last.created,
            "model": last.slug,
            "choices": [],
        }
        if last.usage is not None:
            doc["usage"] = usage_doc(last.usage)
        else:
            doc["choices"] = [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
        return orjson.dumps(doc)

    def served_chars(self, doc: Any) -> int:
        """Reads ``choices[].message`` (a completion) or ``choices[].delta`` (a chunk): content
        (a string, or a list of text parts), refusal, reasoning content, and each tool call's
        name and arguments."""
        if not isinstance(doc, dict):
            return 0
        choices = doc.get("choices")
        if not isinstance(choices, list):
            return 0
        chars = 0
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            part = choice.get("delta")
            if not isinstance(part, dict):
                part = choice.get("message")
            if isinstance(part, dict):
                chars += _message_chars(part)
        return chars


ENDPOINT = ChatCompletions()


def _message_chars(message: dict[str, Any]) -> int:
    chars = 0
    for name in ("content", "refusal", "reasoning_content"):
        value = message.get(name)
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            chars += sum(
                len(p["text"]) for p in value if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for name in ("name", "arguments"):
                    if isinstance(function.get(name), str):
                        chars += len(function[name])
    return chars


def _positive_int(first: Any, second: Any, default: int) -> int:
    for value in (first, second):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default
