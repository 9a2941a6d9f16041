"""Anthropic's Messages API ⇄ the internal chat shape: the direction ``chat_anthropic.py`` lacks.

``chat_anthropic.py`` turns an OpenAI chat request into Anthropic's Messages API and the
answer back. A client of the gateway's ``/v1/messages`` (the Anthropic SDK, Claude Code)
needs the reverse for every provider that does not speak Anthropic's API: its Messages
request as a chat request, and the chat answer (a ``chat.completion`` or its chunks) as
Anthropic's ``Message`` and stream events.

The decision: **compose through the chat shape.** A ``messages`` pair for a provider that
is not Anthropic is :class:`ViaChat` around that provider's *chat* translator
(``chat_openai``, ``chat_gemini``): Messages → chat here, chat → provider there; provider →
chat there, chat → Messages here. Why:

- one mapping per provider: Gemini's roles, media, tool ids, thought signatures, finish
  reasons, usage fields and error table stay in ``chat_gemini.py``/``gemini_api.py`` alone,
  and a fix there fixes both APIs; a direct Messages ⇄ Gemini translator would be a second
  copy of each;
- this module only knows two public shapes (Anthropic's and OpenAI's), and so is tested on
  fixtures of those alone;
- the same holds for any future chat pair (a new wire format gains ``/v1/messages`` free).

The cost is the chat document in between: for a buffered answer one more JSON parse; for a
stream, the chat translator's chunk bytes are parsed again here (one ``orjson.loads`` per
chunk, bounded by the chunk; nothing grows with the stream). For OpenAI-format providers
the chat shape *is* the provider's, so nothing is spent twice.

What maps how is the table in ``README.md`` ("Anthropic Messages on other providers").
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import orjson

from . import message_documents as docs
from . import params
from .base import ResponseContext, StreamTranslator, Target, TranslatedResponse, Translator, UpstreamRequest
from .sse import SSEBuffer

# OpenAI chat finish_reason -> Anthropic stop_reason
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_MAX_STOP = 4  # the chat shape's (OpenAI's) limit on stop sequences

# Top-level Messages fields the chat shape does without: the answer keeps its shape and meaning.
# (cache_control: prompt-caching hints, OpenAI caches by itself; top_k: a sampling hint like the
# penalties chat drops for Anthropic; service_tier, speed: Anthropic's capacity options;
# diagnostics: Anthropic's cache report; user_profile_id, workspace_id: Anthropic account fields.)
_DROPPED = frozenset(
    {
        "cache_control",
        "top_k",
        "service_tier",
        "speed",
        "diagnostics",
        "user_profile_id",
        "workspace_id",
    }
)
# Read by chat_request itself.
_MAPPED = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
    }
)
# thinking.budget_tokens -> reasoning_effort (chat_gemini maps it back to a thinking budget)
_EFFORT_BUDGETS = ((2048, "low"), (16384, "medium"))
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


# --------------------------------------------------------------------- request


def chat_request(
    body: Mapping[str, Any], *, max_tokens_field: str = "max_tokens", reasoning: bool = False
) -> dict[str, Any]:
    """The chat request of a Messages request (``body``, checked by the endpoint).

    ``max_tokens_field``: the chat field the limit goes to (``max_completion_tokens`` for OpenAI
    itself). ``reasoning``: the model takes ``reasoning_effort`` (``thinking`` is mapped to it).
    Raises GatewayError 400 ``unsupported_parameter`` for what the chat shape cannot carry.
    """
    for name in body:
        if name not in _MAPPED and name not in _DROPPED:
            params.unsupported(name, f"{name} is not supported by this model's provider")
    out: dict[str, Any] = {"model": body.get("model")}
    turns: list[dict[str, Any]] = []
    system = _system(body.get("system"))
    if system:
        turns.append({"role": "system", "content": system})
    raw = body.get("messages")
    for i, msg in enumerate(raw if isinstance(raw, list) else ()):
        turns.extend(_turn(msg, f"messages.{i}"))
    if turns and turns[-1]["role"] == "assistant":
        # Anthropic continues a trailing assistant turn (a prefill); a chat model answers after it.
        params.unsupported(
            "messages", "a final assistant message (prefill) is not supported by this model's provider"
        )
    out["messages"] = turns
    out[max_tokens_field] = body.get("max_tokens")
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop_sequences")
    if stop:
        if len(stop) > _MAX_STOP:
            params.unsupported(
                "stop_sequences", f"this model's provider takes at most {_MAX_STOP} stop_sequences"
            )
        out["stop"] = list(stop)
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and user:
        out["user"] = user
    _tools(body, out)
    effort = _effort(body) if reasoning else None
    if effort is not None:
        out["reasoning_effort"] = effort
    _output_format(body.get("output_config"), out)
    if body.get("stream") is True:
        out["stream"] = True
    return out


def _system(system: Any) -> str:
    """Anthropic's system prompt (a string or text blocks) as one system message's text."""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        return ""
    return "\n\n".join(b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str))


def _turn(msg: Any, where: str) -> Iterator[dict[str, Any]]:
    """The chat messages of one Anthropic turn. A user turn's tool results become ``tool`` messages
    first (a chat model expects them right after the assistant's calls), its other blocks a user
    message after them."""
    role = msg.get("role") if isinstance(msg, dict) else None
    content = msg.get("content") if isinstance(msg, dict) else None
    if isinstance(content, str):
        yield {"role": role, "content": content}
        return
    blocks = content if isinstance(content, list) else []
    if role == "assistant":
        yield _assistant(blocks, where)
        return
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            yield {
                "role": "tool",
                "tool_call_id": block.get("tool_use_id"),
                "content": _tool_result_text(block.get("content"), at),
            }
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image(block.get("source"), at))
        elif kind == "document":
            parts.append(_document(block, at))
        else:
            params.unsupported(at, f"{kind} content blocks are not supported by this model's provider")
    if parts:
        if len(parts) == 1 and parts[0]["type"] == "text":
            yield {"role": "user", "content": parts[0]["text"]}
        else:
            yield {"role": "user", "content": parts}


def _assistant(blocks: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's own reasoning: Anthropic's to verify, no chat model reads it
        else:
            params.unsupported(
                f"{where}.content.{j}", f"{kind} content blocks are not supported by this model's provider"
            )
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or (None if calls else "")}
    if calls:
        out["tool_calls"] = calls
    return out


def _tool_result_text(content: Any, at: str) -> str:
    """A tool result's text; a chat tool message holds text only."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for k, block in enumerate(content if isinstance(content, list) else ()):
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else None
            params.unsupported(
                f"{at}.content.{k}",
                f"{kind} blocks in a tool_result are not supported by this model's provider",
            )
        texts.append(str(block.get("text", "")))
    return "".join(texts)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _image(raw: Any, at: str) -> dict[str, Any]:
    source = _dict(raw)
    kind = source.get("type")
    if kind == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif kind == "url":
        url = str(source.get("url"))
    else:
        params.unsupported(f"{at}.source", f"{kind} image sources are not supported by this model's provider")
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: Mapping[str, Any], at: str) -> dict[str, Any]:
    source = _dict(block.get("source"))
    kind = source.get("type")
    title = block.get("title")
    if kind == "base64":
        name = title if isinstance(title, str) and title else "document.pdf"
        file = {"file_data": f"data:{source.get('media_type')};base64,{source.get('data')}", "filename": name}
        return {"type": "file", "file": file}
    if kind == "text":
        return {"type": "text", "text": str(source.get("data", ""))}
    if kind == "content" and isinstance(source.get("content"), (str, list)):
        inner = source["content"]
        text = (
            inner
            if isinstance(inner, str)
            else "".join(
                str(b.get("text", "")) for b in inner if isinstance(b, dict) and b.get("type") == "text"
            )
        )
        return {"type": "text", "text": text}
    params.unsupported(f"{at}.source", f"{kind} document sources are not supported by this model's provider")


def _tools(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    tools = []
    for i, tool in enumerate(body.get("tools") or ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in (None, "custom") or not isinstance(tool.get("input_schema"), dict):
            params.unsupported(f"tools.{i}", f"the {kind} tool is not supported by this model's provider")
        fn: dict[str, Any] = {"name": tool.get("name"), "parameters": tool["input_schema"]}
        if tool.get("description"):
            fn["description"] = tool["description"]
        if tool.get("strict") is True:
            fn["strict"] = True
        tools.append({"type": "function", "function": fn})
    if not tools:
        return  # a tool_choice without tools: a chat model is refused for it, and it means nothing
    out["tools"] = tools
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def _effort(body: Mapping[str, Any]) -> str | None:
    """``reasoning_effort`` from ``output_config.effort``, else from ``thinking.budget_tokens``."""
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if isinstance(effort, str) and effort in _EFFORTS:
        return _EFFORTS[effort]
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int):
        return None
    for most, name in _EFFORT_BUDGETS:
        if budget <= most:
            return name
    return "high"


def _output_format(config: Any, out: dict[str, Any]) -> None:
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt["schema"]},
        }


def image_urls(body: Mapping[str, Any]) -> list[str]:
    """The https URLs of the request's images (``source.type: url``), for providers needing their bytes."""
    urls: dict[str, None] = {}
    for msg in body.get("messages") or ():
        content = msg.get("content") if isinstance(msg, dict) else None
        for block in content if isinstance(content, list) else ():
            source = block.get("source") if isinstance(block, dict) and block.get("type") == "image" else None
            if (
                isinstance(source, dict)
                and source.get("type") == "url"
                and isinstance(source.get("url"), str)
            ):
                urls[source["url"]] = None
    return list(urls)


def chat_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a chat translator's answer side reads of the client's request (``ResponseContext.request``),
    without translating the request again: whether calls must come one at a time."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True:
        return {"parallel_tool_calls": False}
    return {}


# -------------------------------------------------------------------- response


def message(doc: Mapping[str, Any], res: TranslatedResponse, ctx: ResponseContext) -> dict[str, Any]:
    """Anthropic's ``Message`` of a chat completion (its first choice; a Messages request asks for one)."""
    choices = doc.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = _dict(choice.get("message"))
    content: list[dict[str, Any]] = []
    thought = msg.get("reasoning_content")
    if isinstance(thought, str) and thought:  # a thought summary (Gemini's, when thinking was asked)
        content.append({"type": "thinking", "thinking": thought, "signature": ""})
    for name in ("content", "refusal"):
        text = msg.get(name)
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or _tool_id(),
                    "name": fn.get("name") or "",
                    "input": _input(fn.get("arguments")),
                }
            )
    stop = STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn")
    return {
        "id": docs.message_id(doc.get("id")),
        "type": "message",
        "role": "assistant",
        "model": ctx.slug,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": docs.usage_doc(res.usage),
    }


def _tool_id() -> str:
    return "toolu_" + secrets.token_hex(12)


def _input(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON-string arguments as Anthropic's ``input`` object; a non-object is kept whole."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


# ---------------------------------------------------------------------- stream


class MessageEvents:
    """A chat stream translator's chunks → Anthropic's Messages stream events.

    The chat translator (``chat_openai.OpenAIStream``, ``chat_gemini.GeminiStream``) reads the
    provider's stream and writes OpenAI chunks; this reads those and writes ``message_start``,
    ``content_block_start``/``_delta``/``_stop`` (a text block per run of text, a ``tool_use``
    block per call, indexes from 0 in order), then ``message_delta`` (stop reason and the
    provider's cumulative usage) once the chat stream is done. ``message_stop`` is held
    (:attr:`held`) for the exchange to add ``credits_used``; a chat error becomes Anthropic's
    ``error`` event, held likewise. ``message_start`` reports the input tokens the provider told
    so far (0 for OpenAI, which tells at the end); ``message_delta`` has the totals.
    """

    __slots__ = (
        "_ctx",
        "_finish",
        "_inner",
        "_next",
        "_open",
        "_sse",
        "_tools",
        "done",
        "error_code",
        "held",
        "response_id",
        "usage",
    )

    def __init__(self, inner: StreamTranslator, ctx: ResponseContext) -> None:
        self._inner = inner
        self._ctx = ctx
        # The chat translator's output is bounded by its own reading of the provider.
        self._sse = SSEBuffer(max_event_bytes=2**62)
        self._next = 0  # the index of the next content block
        self._open: tuple[str, int] | None = None  # (block type, index) of the open block
        self._tools: dict[int, int] = {}  # chat tool call index -> content block index
        self._finish: str | None = None
        self.usage = inner.usage
        self.done = False
        self.error_code: str | None = None
        self.held: bytes | None = None
        self.response_id = ""

    @property
    def overflowed(self) -> bool:
        return self._inner.overflowed

    def feed(self, chunk: bytes) -> bytes:
        return self._after(self._inner.feed(chunk))

    def finish(self) -> bytes:
        return self._after(self._inner.finish())

    def _after(self, produced: bytes) -> bytes:
        inner = self._inner
        self.usage = inner.usage
        if self.done:
            return b""
        out: list[bytes] = []
        for ev in self._sse.feed(produced) if produced else ():
            self._on_chunk(ev.data, out)
        if self.done:  # an error chunk passed through the chat translator's output
            return b"".join(out)
        if inner.error_code is not None:
            self._failed(inner.held, inner.error_code)
        elif inner.done:
            if inner.held is not None:
                self._on_chunk(inner.held, out)
            if not self.done:
                self._complete(out)
        return b"".join(out)

    def _on_chunk(self, data: bytes, out: list[bytes]) -> None:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        if isinstance(chunk.get("error"), dict):
            self._failed(data, self._inner.error_code or "upstream_error")
            return
        if not self.response_id:
            self._start(chunk, out)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # a Messages request has one answer
            delta = _dict(choice.get("delta"))
            thought = delta.get("reasoning_content")
            if isinstance(thought, str) and thought:
                self._thinking(thought, out)
            for name in ("content", "refusal"):
                if isinstance(delta.get(name), str) and delta[name]:
                    self._text(delta[name], out)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool_delta(call, out)
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        self.response_id = docs.message_id(chunk.get("id"))
        usage = docs.usage_doc(self._inner.usage)
        usage["output_tokens"] = 0
        message: dict[str, Any] = {
            "id": self.response_id,
            "type": "message",
            "role": "assistant",
            "model": self._ctx.slug,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        out.append(docs.event("message_start", {"type": "message_start", "message": message}))

    def _open_block(self, block: dict[str, Any], out: list[bytes]) -> int:
        self._close(out)
        index = self._next
        self._next += 1
        self._open = (block["type"], index)
        out.append(
            docs.event(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            )
        )
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(
                docs.event("content_block_stop", {"type": "content_block_stop", "index": self._open[1]})
            )
            self._open = None

    def _delta(self, index: int, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(
            docs.event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )

    def _thinking(self, text: str, out: list[bytes]) -> None:
        """A thought summary: a ``thinking`` block (its signature empty: only Anthropic signs)."""
        if self._open is not None and self._open[0] == "thinking":
            index = self._open[1]
        else:
            index = self._open_block({"type": "thinking", "thinking": "", "signature": ""}, out)
        self._delta(index, {"type": "thinking_delta", "thinking": text}, out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open is not None and self._open[0] == "text":
            index = self._open[1]
        else:
            index = self._open_block({"type": "text", "text": ""}, out)
        self._delta(index, {"type": "text_delta", "text": text}, out)

    def _tool_delta(self, call: Mapping[str, Any], out: list[bytes]) -> None:
        fn = _dict(call.get("function"))
        position = call.get("index", 0)
        index = self._tools.get(position)
        if index is None:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or _tool_id(),
                "name": fn.get("name") or "",
                "input": {},
            }
            index = self._tools[position] = self._open_block(block, out)
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._delta(index, {"type": "input_json_delta", "partial_json": arguments}, out)

    def _complete(self, out: list[bytes]) -> None:
        if not self.response_id:
            self._start({}, out)
        self._close(out)
        stop = STOP_REASONS.get(self._finish or "stop", "end_turn")
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": docs.usage_doc(self.usage),
        }
        out.append(docs.event("message_delta", delta))
        self.held = b'{"type":"message_stop"}'
        self.done = True

    def _failed(self, envelope: bytes | None, code: str) -> None:
        """The chat stream's error (OpenAI's envelope) as Anthropic's error event, the stream's last."""
        status = docs.status_of(code)
        self.error_code, self.held = docs.from_envelope(status, envelope or b"{}")
        self.done = True


# ------------------------------------------------------------------ the pairs


class ViaChat(Translator):
    """The ``messages`` pair of a provider that speaks another API: :attr:`chat`, the provider's
    chat translator, around this module's two directions. A subclass names its chat pair and
    wire format, and says what its models take. Stateless, like the chat pair."""

    __slots__ = ()

    endpoint = "messages"
    chat: ClassVar[Translator]

    def max_tokens_field(self, target: Target) -> str:
        """The chat field of the output limit for this target."""
        return "max_tokens"

    def reasoning(self, target: Target) -> bool:
        """Whether the target's model takes ``reasoning_effort`` (``thinking`` is mapped to it)."""
        return True

    def media_urls(self, body: Mapping[str, Any]) -> list[str]:
        urls = image_urls(body)
        if not urls:
            return []
        parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
        return self.chat.media_urls({"messages": [{"role": "user", "content": parts}]})

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        chat = chat_request(
            body, max_tokens_field=self.max_tokens_field(target), reasoning=self.reasoning(target)
        )
        return self.chat.request(chat, target)

    def response(self, status: int, body: bytes, ctx: ResponseContext) -> TranslatedResponse:
        res = self.chat.response(status, body, _chat_context(ctx))
        if res.status >= 400:
            return docs.error_response(res)
        try:
            doc = orjson.loads(res.body)
        except orjson.JSONDecodeError:
            doc = {}
        return TranslatedResponse(res.status, orjson.dumps(message(doc, res, ctx)), res.usage)

    def stream(self, ctx: ResponseContext) -> MessageEvents:
        return MessageEvents(self.chat.stream(_chat_context(ctx)), ctx)


def _chat_context(ctx: ResponseContext) -> ResponseContext:
    """The chat pair's context: no usage chunk (``message_delta`` carries the usage), and the few
    fields of the request its answer side reads."""
    return ResponseContext(
        ctx.slug, ctx.upstream_model, ctx.created, False, chat_view(ctx.request), ctx.max_event_bytes
    )
