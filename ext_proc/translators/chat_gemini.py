"""OpenAI Chat Completions ⇄ Google Gemini API (v1beta) ``generateContent``.

Gemini needs bytes for every image (it cannot fetch arbitrary https URLs), so
:meth:`ChatGemini.media_urls` lists them and the request reads them from
``Target.media``. Tool calls carry no ids in Gemini: ids are minted on the way
out and the function *name* is looked up from the caller's history on the way
back. A ``thoughtSignature`` (which Gemini 3 requires to be echoed with its
function call) travels as ``tool_calls[].extra_content.google.thought_signature``,
the field Google's own OpenAI-compatible endpoint uses.

``parallel_tool_calls: false`` is enforced on the answer from the client's
request (``ResponseContext.request``); without it every call is returned.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import GatewayError, envelope
from . import chat_documents, messages, params
from . import usage as provider_usage
from .base import ResponseContext, Target, TranslatedResponse, UpstreamRequest, Usage
from .chunks import ChunkStream
from .gemini_api import GeminiTranslator, error_fields, integer, upstream
from .sse import SSEEvent

# Gemini 3 rejects a function call replayed without its signature; Google
# documents this value for calls whose signature was lost (e.g. made elsewhere).
SKIP_SIGNATURE = "skip_thought_signature_validator"
_SIGNED_FAMILY = re.compile(r"gemini-(?:1|2)\.")  # models that never required signatures

# reasoning_effort -> thinkingBudget, for Gemini 2.5 (later models use thinkingLevel)
_THINKING_BUDGET = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}

# tool_choice mode -> functionCallingConfig.mode
_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

_INT32 = 2**31
_MAX_CANDIDATES = 8  # generationConfig.candidateCount: 1 to 8


class ChatGemini(GeminiTranslator):
    """Stateless; one instance serves every request."""

    __slots__ = ()

    endpoint = "chat_completions"

    def media_urls(self, body: Mapping[str, Any]) -> list[str]:
        if not isinstance(body.get("messages"), list):
            return []
        urls: dict[str, None] = {}
        for msg in body["messages"]:
            content = msg.get("content") if isinstance(msg, dict) else None
            if not isinstance(content, list):
                continue
            for part in content:
                image = part.get("image_url") if isinstance(part, dict) else None
                url = image.get("url") if isinstance(image, dict) else None
                if isinstance(url, str) and url.startswith(("https://", "http://")):
                    urls[url] = None
        return list(urls)

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        method = ":streamGenerateContent?alt=sse" if body.get("stream") is True else ":generateContent"
        return upstream(target, method, _chat_request(body, target))

    def answer(self, doc: dict[str, Any], ctx: ResponseContext) -> TranslatedResponse:
        blocked = _block_reason(doc)
        if blocked is not None:
            error = envelope(400, "content_filter", _blocked_message(blocked), "messages")
            return TranslatedResponse(
                400, error, provider_usage.gemini(doc.get("usageMetadata")), "content_filter"
            )
        one_call = ctx.request.get("parallel_tool_calls") is False
        out, usage = _completion(doc, ctx, one_call)
        return TranslatedResponse(200, orjson.dumps(out), usage)

    def stream(self, ctx: ResponseContext) -> GeminiStream:
        one_call = ctx.request.get("parallel_tool_calls") is False
        return GeminiStream(ctx, one_call)


TRANSLATOR = ChatGemini()


# --------------------------------------------------------------------- request


def _chat_request(body: Mapping[str, Any], target: Target) -> dict[str, Any]:
    params.reject_unsupported(body)
    model = target.upstream_model.removeprefix("models/")
    system, contents = _contents(body.get("messages"), target, _SIGNED_FAMILY.match(model) is None)
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools, tool_config = _tools(body)
    if tools:
        out["tools"] = [{"functionDeclarations": tools}]
    if tool_config:
        out["toolConfig"] = {"functionCallingConfig": tool_config}
    config = _generation_config(body, model)
    if config:
        out["generationConfig"] = config
    return out


def _generation_config(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    stop = params.stop_sequences(body.get("stop"))
    if stop:
        config["stopSequences"] = stop
    for name, key in (("temperature", "temperature"), ("top_p", "topP")):
        value = params.number(body, name)
        if value is not None:
            config[key] = value
    limit = integer(body, "max_completion_tokens")
    if limit is None:
        limit = integer(body, "max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    n = integer(body, "n", 1)
    if n is not None and n > _MAX_CANDIDATES:
        params.unsupported("n", f"this model's provider returns at most {_MAX_CANDIDATES} choices (n)")
    if n is not None and n != 1:
        config["candidateCount"] = n
    seed = integer(body, "seed", -(2**63))
    if seed is not None:
        config["seed"] = (seed + _INT32) % (2 * _INT32) - _INT32  # Gemini's seed is int32
    for name, key in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        value = params.number(body, name)
        if value:  # 0 is the default; some models reject the field even when it is 0
            config[key] = value
    if body.get("logprobs") is True:
        config["responseLogprobs"] = True
        top = integer(body, "top_logprobs")
        if top:
            config["logprobs"] = top
    _response_format(body.get("response_format"), config)
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in _THINKING_BUDGET and model.startswith("gemini-2.5"):
        budget = _THINKING_BUDGET[effort]
        if "pro" in model:
            budget = min(max(budget, 128), 32768)  # 2.5 Pro cannot turn thinking off
        config["thinkingConfig"] = {"thinkingBudget": budget}
    return config


def _response_format(fmt: Any, config: dict[str, Any]) -> None:
    answer = params.json_answer(fmt)
    if answer is None:
        return
    config["responseMimeType"] = "application/json"
    if answer.schema is not None:
        config["responseJsonSchema"] = _json_schema(answer.schema)


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    if "$schema" in schema:
        return {k: v for k, v in schema.items() if k != "$schema"}
    return schema


def _tools(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    decls = []
    for _, name, fn in params.function_tools(body):
        decl: dict[str, Any] = {"name": name}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if isinstance(fn.get("parameters"), dict):
            decl["parametersJsonSchema"] = _json_schema(fn["parameters"])
        decls.append(decl)
    if not decls:
        return decls, None
    choice = params.tool_choice(body.get("tool_choice"))
    if choice is None:
        return decls, None
    if choice.name is not None:
        return decls, {"mode": "ANY", "allowedFunctionNames": [choice.name]}
    if choice.allowed is not None:
        decls = [d for d in decls if d["name"] in choice.allowed]
    return decls, {"mode": _CHOICE_MODES[choice.mode]}


def _contents(
    raw: Any, target: Target, needs_signature: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []  # {"role", "parts"}, same roles merged
    names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse
    for where, role, msg in messages.walk(raw):
        if role in ("system", "developer"):
            system.extend(_text_parts(msg.get("content"), where))
        elif role == "user":
            messages.append_turn(contents, "user", "parts", _user_parts(msg.get("content"), where, target))
        elif role == "assistant":
            messages.append_turn(contents, "model", "parts", _model_parts(msg, where, names, needs_signature))
        else:  # tool
            call_id = msg.get("tool_call_id")
            name = names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                raise params.invalid(
                    f"{where}.tool_call_id", "tool_call_id does not match an earlier tool call"
                )
            response = {"name": name, "response": _tool_result(msg.get("content"), where)}
            messages.append_turn(contents, "user", "parts", [{"functionResponse": response}])
    if not contents:
        raise params.invalid("messages", "messages must contain at least one user or assistant message")
    return system, contents


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    return [{"text": t} for t in messages.text_of(content, where)]


def _tool_result(content: Any, where: str) -> dict[str, Any]:
    """functionResponse.response must be an object: a JSON object result is passed as is."""
    text = "".join(messages.text_of(content, where))
    if text.startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"result": text}


def _user_parts(content: Any, where: str, target: Target) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for kind, at, value in messages.user_parts(content, where):
        if kind == "text":
            parts.append({"text": value})
        elif kind == "image_url":
            parts.append(_image_part(value, at, target))
        elif kind == "file":
            mime, data = messages.file_data(value, at)
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        else:  # input_audio
            if not isinstance(value, dict) or not value.get("data") or not value.get("format"):
                raise params.invalid(f"{at}.input_audio", "input_audio needs data and format")
            parts.append({"inlineData": {"mimeType": f"audio/{value['format']}", "data": value["data"]}})
    return parts


def _image_part(image: Any, at: str, target: Target) -> dict[str, Any]:
    param = f"{at}.image_url.url"
    url = messages.image_url(image, param)
    parsed = messages.parse_data_uri(url, param)
    if parsed is not None:
        mime, data = parsed
        if not mime.startswith("image/"):
            raise GatewayError(400, "invalid_image_url", f"{mime} is not an image type", param)
        return {"inlineData": {"mimeType": mime, "data": data}}
    media = target.media.get(url)
    if media is None:
        raise GatewayError(
            400, "invalid_image_url", "the image URL was not fetched; use https or a data URI", param
        )
    return {"inlineData": {"mimeType": media.mime_type, "data": base64.b64encode(media.data).decode()}}


def _model_parts(
    msg: Mapping[str, Any], where: str, names: dict[str, str], needs_signature: bool
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": t} for t in messages.assistant_text(msg, where)]
    for k, at, call, fn in messages.function_calls(msg, where):
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise params.invalid(f"{at}.function.name", "tool call name is required")
        if isinstance(call.get("id"), str):
            names[call["id"]] = name
        args = messages.arguments(fn.get("arguments"), f"{at}.function.arguments")
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        signature = _signature_of(call)
        if signature is None and k == 0 and needs_signature:
            signature = SKIP_SIGNATURE
        if signature is not None:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _signature_of(call: Mapping[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    sig = google.get("thought_signature") if isinstance(google, dict) else None
    return sig if isinstance(sig, str) and sig else None


# -------------------------------------------------------------------- response


def _block_reason(doc: Mapping[str, Any]) -> str | None:
    feedback = doc.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if reason and not doc.get("candidates"):
        return str(reason)
    return None


def _blocked_message(reason: str) -> str:
    return f"the prompt was blocked by the provider's content filter ({reason})"


def _new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _tool_call(call: Mapping[str, Any], signature: Any) -> dict[str, Any]:
    out = chat_documents.tool_call(call.get("id") or _new_call_id(), call.get("name"), call.get("args"))
    if isinstance(signature, str) and signature:
        out["extra_content"] = {"google": {"thought_signature": signature}}
    return out


def _logprobs(result: Any) -> dict[str, Any] | None:
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    content = []
    for i, cand in enumerate(chosen):
        entry = _logprob(cand)
        alternatives = tops[i].get("candidates") or [] if i < len(tops) and isinstance(tops[i], dict) else []
        entry["top_logprobs"] = [_logprob(c) for c in alternatives]
        content.append(entry)
    return {"content": content, "refusal": None}


def _logprob(cand: Mapping[str, Any]) -> dict[str, Any]:
    token = str(cand.get("token") or "")
    return {"token": token, "logprob": cand.get("logProbability") or 0.0, "bytes": list(token.encode())}


def _candidate_parts(cand: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = cand.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _completion(
    doc: Mapping[str, Any], ctx: ResponseContext, one_call: bool
) -> tuple[dict[str, Any], Usage | None]:
    choices = []
    for position, cand in enumerate(doc.get("candidates") or []):
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in _candidate_parts(cand):
            if part.get("thought"):
                if isinstance(part.get("text"), str):
                    thoughts.append(part["text"])
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), dict) and not (one_call and calls):
                calls.append(_tool_call(part["functionCall"], part.get("thoughtSignature")))
        finish = _FINISH.get(str(cand.get("finishReason")), "stop")
        if calls and finish == "stop":
            finish = "tool_calls"
        message = chat_documents.assistant_message("".join(texts), calls)
        if thoughts:  # only when asked for (includeThoughts: the Messages API's thinking)
            message["reasoning_content"] = "".join(thoughts)
        choices.append(
            {
                "index": cand.get("index", position),
                "message": message,
                "logprobs": _logprobs(cand.get("logprobsResult")),
                "finish_reason": finish,
            }
        )
    usage = provider_usage.gemini(doc.get("usageMetadata"))
    return chat_documents.completion(doc.get("responseId"), ctx, choices, usage or Usage()), usage


# ---------------------------------------------------------------------- stream


class _Choice:
    __slots__ = ("finished", "tools")

    def __init__(self) -> None:
        self.tools = 0
        self.finished = False


class GeminiStream(ChunkStream):
    """Gemini ``?alt=sse`` chunks → OpenAI ``chat.completion.chunk`` SSE.

    Gemini has no end-of-stream event: the stream is done once every candidate
    seen has a finishReason, and usage (cumulative in every chunk) is reported
    after the last candidate's finishReason.
    """

    __slots__ = ("_choices", "_one_call", "_started")

    def __init__(self, ctx: ResponseContext, one_call: bool = False) -> None:
        super().__init__(ctx)
        self._one_call = one_call
        self._choices: dict[int, _Choice] = {}
        self._started = False

    def _on_event(self, event: SSEEvent, out: list[bytes]) -> None:
        if event.data.strip() != b"[DONE]":  # an OpenAI-style terminator is no Gemini event: skipped
            super()._on_event(event, out)

    def _on_data(self, doc: dict[str, Any], event: SSEEvent, out: list[bytes]) -> None:
        if isinstance(doc.get("error"), dict):
            self._provider_error(out, doc["error"], error_fields)
            return
        if doc.get("usageMetadata") is not None:
            self.usage = provider_usage.gemini(doc["usageMetadata"])
        if not self._started:
            self._started = True
            if doc.get("responseId"):
                self._set_id(chat_documents.chat_id(doc["responseId"]))
        blocked = _block_reason(doc)
        if blocked is not None:
            self._error(out, 400, "content_filter", _blocked_message(blocked), "messages")
            return
        for position, cand in enumerate(doc.get("candidates") or []):
            if isinstance(cand, dict):
                self._on_candidate(cand.get("index", position), cand, out)
        if self._choices and all(c.finished for c in self._choices.values()):
            self.done = True
            if self._ctx.include_usage:
                self._usage_chunk(out, self.usage or Usage())

    def _on_candidate(self, index: int, cand: Mapping[str, Any], out: list[bytes]) -> None:
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice()
            out.append(self._chunk({"role": "assistant", "content": ""}, index=index))
        texts: list[str] = []
        for part in _candidate_parts(cand):
            if part.get("thought"):
                if isinstance(part.get("text"), str) and part["text"]:
                    out.append(self._chunk({"reasoning_content": part["text"]}, index=index))
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), dict):
                if texts:
                    out.append(self._chunk({"content": "".join(texts)}, index=index))
                    texts = []
                self._tool_call(index, choice, part, out)
        logprobs = _logprobs(cand.get("logprobsResult"))
        text = "".join(texts)
        if text or logprobs is not None:
            out.append(self._chunk({"content": text}, index=index, logprobs=logprobs))
        reason = cand.get("finishReason")
        if reason and not choice.finished:
            finish = _FINISH.get(str(reason), "stop")
            if choice.tools and finish == "stop":
                finish = "tool_calls"
            self._finish_chunk(out, finish, index)
            choice.finished = True

    def _tool_call(self, index: int, choice: _Choice, part: Mapping[str, Any], out: list[bytes]) -> None:
        """The call with empty arguments, then its arguments as one fragment, as OpenAI streams them."""
        if self._one_call and choice.tools:
            return
        call = _tool_call(part["functionCall"], part.get("thoughtSignature"))
        args = call["function"]["arguments"]
        call["function"]["arguments"] = ""
        call["index"] = choice.tools
        out.append(self._chunk({"tool_calls": [call]}, index=index))
        fragment = {"index": choice.tools, "function": {"arguments": args}}
        out.append(self._chunk({"tool_calls": [fragment]}, index=index))
        choice.tools += 1
