"""The gateway's one token estimator: for the tpm reservation and for charging what was served.

No tokenizer is available offline for every provider (tiktoken and the like download
their vocabularies at run time, and Claude's and Gemini's are not published), so text
counts ``ceil(characters / 4)`` tokens -- OpenAI's documented rule of thumb for English,
rounded up so that an estimate errs towards charging. Characters are Unicode code
points of the text as the client sees it (message content, refusals, tool names and
arguments), not JSON framing.

Used by :mod:`ext_proc.limits` (a request's reservation: its input plus its output
allowance) and by :mod:`ext_proc.exchange` (a request whose provider usage is missing,
invalid or incomplete: its input from the request, its output from what was streamed).
"""

from __future__ import annotations

from typing import Any

import orjson

CHARS_PER_TOKEN = 4
MESSAGE_FRAMING_TOKENS = 4  # per chat message: role and separators
NON_TEXT_PART_TOKENS = 256  # an image, audio or file part: its size says little about tokens
DEFAULT_OUTPUT_TOKENS = 1024  # the output allowance of a chat request that sets no maximum


def tokens_for_chars(chars: int) -> int:
    """``ceil(chars / 4)``: the estimate of a text of ``chars`` characters."""
    return -(-chars // CHARS_PER_TOKEN) if chars > 0 else 0


def input_tokens(body: dict[str, Any]) -> int:
    """The prompt tokens of an OpenAI request, at least 1.

    Text sent -- message contents and tool-call arguments, tool definitions, embedding
    ``input``, image ``prompt`` -- counts by :func:`tokens_for_chars`, plus 4 per message
    for its framing. Non-text content parts (image, audio, file) count a flat 256 each.
    Pre-tokenized embedding input counts its token ids.
    """
    return max(1, _input_tokens(body))


def _input_tokens(body: dict[str, Any]) -> int:
    chars = 0
    tokens = 0
    messages = body.get("messages")
    if isinstance(messages, list):
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
    inp = body.get("input")
    if isinstance(inp, str):
        chars += len(inp)
    elif isinstance(inp, list):
        for item in inp:
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, list):
                tokens += len(item)
            else:
                tokens += 1
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        chars += len(prompt)
    return tokens + tokens_for_chars(chars)


def output_allowance(body: dict[str, Any]) -> int:
    """The most output a chat request may use: ``max_completion_tokens`` or ``max_tokens``
    (else 1024), times ``n``; 0 for other endpoints."""
    if not isinstance(body.get("messages"), list):
        return 0
    output = _positive_int(body.get("max_completion_tokens"), body.get("max_tokens"), DEFAULT_OUTPUT_TOKENS)
    return output * _positive_int(body.get("n"), None, 1)


def reservation(body: dict[str, Any]) -> int:
    """A generous guess of the tokens a request will use: input plus output allowance, at least 1."""
    return max(1, _input_tokens(body) + output_allowance(body))


def served_chars(doc: Any) -> int:
    """Characters of text an OpenAI chat completion or chunk delivers to the client.

    Reads ``choices[].message`` (a completion) or ``choices[].delta`` (a chunk): content
    (a string, or a list of text parts), refusal, reasoning content, and each tool call's
    name and arguments.
    """
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
