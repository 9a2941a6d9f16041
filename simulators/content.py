"""Deterministic "model": what a simulated provider answers, and how many tokens it reports.

Every provider module reduces its request to a provider-neutral `Prompt`, asks `plan()` for an
`Answer`, and renders that in its own wire format. Tests compute the same numbers with
`simulators.expected_usage(kind, body)`, so the formulas below are the contract:

* ``count_tokens(text)`` = number of whitespace-separated words.
* prompt tokens = for every message (a system prompt / system instruction counts as one message):
  ``count_tokens(all text the message carries) + 3``. Text carried = text parts, tool-call names
  and arguments (dicts as compact JSON), tool results. Images, documents and tool definitions are free.
* completion tokens = ``count_tokens(reply text)`` + for each tool call
  ``count_tokens(name) + count_tokens(compact JSON arguments)``, summed over all choices (`n`).
  Anthropic, like Claude, says ``"I'll call <name>."`` before an unforced tool call; those words count,
  and so do the words of its thinking block when the request enables thinking.
* reply: forced tool choice → tool call(s); else last message is a tool result → ``"The tool
  returned: <result>"``; else last user text mentions "weather" and a tool exists → tool call(s);
  else ``"Hello! You said: <first 48 words of the last user text>."`` plus ``" I saw N image(s)."`` /
  ``" I saw N document(s)."`` when the request carries any. JSON mode replaces the text with a JSON
  object filling the schema's required properties ("x", 1, true), or ``{"reply": <text>}`` without
  a schema. "parallel" in the last user text makes two tool calls (first two tools, or the first twice).
* a stop sequence cuts the text before it; a max-token limit keeps that many words (finish "length").
"""

from __future__ import annotations

import base64
import hashlib
import struct
import sys
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

ECHO_WORDS = 48
TOOL_RESULT_WORDS = 40
PER_MESSAGE_TOKENS = 3

Finish = Literal["stop", "length", "tool_calls", "stop_sequence"]


def count_tokens(text: str) -> int:
    return len(text.split())


def prompt_tokens(message_texts: list[str]) -> int:
    return sum(count_tokens(t) + PER_MESSAGE_TOKENS for t in message_texts)


def compact_json(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass
class Tool:
    name: str
    schema: dict[str, Any]


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return compact_json(self.arguments)


@dataclass
class Prompt:
    """What the simulated model looks at, whatever the provider format."""

    message_texts: list[str] = field(default_factory=list)
    last_user_text: str = ""
    tool_results: list[str] | None = None  # set when the last message is tool output
    images: int = 0
    documents: int = 0
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str = "auto"  # "auto" | "none" | "required" | "name:<tool>"
    parallel_tool_calls: bool = True
    json_schema: dict[str, Any] | None = None  # with json_mode: the schema to fill, if any
    json_mode: bool = False
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1

    @property
    def prompt_tokens(self) -> int:
        return prompt_tokens(self.message_texts)


@dataclass
class Answer:
    text: str
    tool_calls: list[ToolCall]
    finish: Finish
    stop_sequence: str | None = None
    preamble: str = ""  # text some providers say before a tool call (see anthropic)
    piece_len: int = 12  # longest piece of text one stream event carries
    thinking: str = ""  # the model's thinking, where the request asks for it (see anthropic)

    @property
    def tokens(self) -> int:
        calls = sum(count_tokens(c.name) + count_tokens(c.arguments_json) for c in self.tool_calls)
        said = count_tokens(self.thinking) + count_tokens(self.preamble) + count_tokens(self.text)
        return said + calls


def reply_text(prompt: Prompt) -> str:
    if prompt.tool_results is not None:
        quoted = "; ".join(_truncate_words(r, TOOL_RESULT_WORDS) for r in prompt.tool_results)
        return f"The tool returned: {quoted}"
    said = _truncate_words(prompt.last_user_text, ECHO_WORDS) or "(nothing)"
    text = f"Hello! You said: {said}."
    if prompt.images:
        text += f" I saw {prompt.images} image(s)."
    if prompt.documents:
        text += f" I saw {prompt.documents} document(s)."
    return text


def plan(prompt: Prompt) -> Answer:
    calls = _tool_calls(prompt)
    if calls:
        return Answer(text="", tool_calls=calls, finish="tool_calls")
    text = reply_text(prompt)
    if prompt.json_mode:
        value = fill_schema(prompt.json_schema) if prompt.json_schema else {"reply": text}
        text = compact_json(value)
    for seq in prompt.stop:
        at = text.find(seq) if seq else -1
        if at >= 0:
            return Answer(text=text[:at], tool_calls=[], finish="stop_sequence", stop_sequence=seq)
    if prompt.max_tokens is not None and count_tokens(text) > prompt.max_tokens:
        return Answer(text=" ".join(text.split()[: prompt.max_tokens]), tool_calls=[], finish="length")
    return Answer(text=text, tool_calls=[], finish="stop")


def _tool_calls(prompt: Prompt) -> list[ToolCall]:
    if not prompt.tools or prompt.tool_choice == "none":
        return []
    forced = prompt.tool_choice == "required" or prompt.tool_choice.startswith("name:")
    wants = "weather" in prompt.last_user_text.lower() and prompt.tool_results is None
    if not (forced or wants):
        return []
    chosen = prompt.tools
    if prompt.tool_choice.startswith("name:"):
        name = prompt.tool_choice[5:]
        chosen = [t for t in prompt.tools if t.name == name] or [Tool(name, {})]
    picks = chosen[:1]
    if prompt.parallel_tool_calls and "parallel" in prompt.last_user_text.lower():
        picks = chosen[:2] if len(chosen) > 1 else chosen[:1] * 2
    return [ToolCall(t.name, fill_schema(t.schema)) for t in picks]


def _truncate_words(text: str, limit: int) -> str:
    words = text.split()
    return " ".join(words[:limit])


# ------------------------------------------------------------------ schema filling
def fill_schema(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value for `schema` that has every required property: strings "x", numbers 1, booleans true.

    Understands JSON Schema and Gemini's OpenAPI subset (upper-case type names).
    """
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return "x"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return fill_schema(_resolve(root, ref), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and _type_of(o) == "null")]
            return fill_schema((non_null or options)[0], root, depth + 1)
    kind = _type_of(schema)
    if kind == "object" or (kind is None and isinstance(schema.get("properties"), dict)):
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        return {k: fill_schema(props.get(k, {}), root, depth + 1) for k in required if isinstance(k, str)}
    if kind == "array":
        count = schema.get("minItems") or 0
        return [fill_schema(schema.get("items", {}), root, depth + 1) for _ in range(int(count))]
    return {"number": 1, "integer": 1, "boolean": True, "null": None}.get(kind or "", "x")


def _type_of(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), "null")
    return kind.lower() if isinstance(kind, str) else None


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#/"):
        return {}
    node = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node or {}


# ------------------------------------------------------------------ streaming pieces
def stream_pieces(text: str, max_len: int = 12) -> list[str]:
    """Split text the way models stream it: a word at a time (leading space kept), long runs cut."""
    pieces: list[str] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or (text[i] == " " and text[i - 1] != " "):
            word = text[start:i]
            pieces.extend(word[j : j + max_len] for j in range(0, len(word), max_len))
            start = i
    return pieces


LONG_WORD_BYTES = 16 * 1024


def lengthened(answer: Answer, size: int) -> Answer:
    """The answer's text grown to ``size`` bytes of ``LONG_WORD_BYTES``-byte words, streamed a word
    an event: a long answer (for tests of slow clients and buffers) in few, large events."""
    if size <= len(answer.text) or answer.tool_calls:
        return answer
    word = "a" * (LONG_WORD_BYTES - 1)
    words = [word] * ((size - len(answer.text)) // LONG_WORD_BYTES + 1)
    text = answer.text + "".join(" " + w for w in words)
    return Answer(text[:size], [], answer.finish, answer.stop_sequence, piece_len=LONG_WORD_BYTES)


def json_fragments(value: str, size: int = 8) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


# ------------------------------------------------------------------ embeddings / images
def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector derived from the text only: equal inputs embed equally."""
    raw = array("h")
    raw.frombytes(hashlib.shake_256(text.encode()).digest(dimensions * 2))
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    return [v / norm for v in raw]


def embedding_base64(vector: list[float]) -> str:
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def png_for(text: str, size: int = 8) -> bytes:
    """A small solid-colour PNG whose colour comes from the prompt."""
    rgb = hashlib.sha256(text.encode()).digest()[:3]
    row = b"\x00" + rgb * size
    raw = zlib.compress(row * size)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
