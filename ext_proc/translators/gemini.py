"""OpenAI Chat Completions / Embeddings ⇄ Google Gemini API (v1beta).

Gemini needs bytes for every image (it cannot fetch arbitrary https URLs), so
:meth:`GeminiTranslator.media_urls` lists them and the request reads them from
``Target.media``. Tool calls carry no ids in Gemini: ids are minted on the way
out and the function *name* is looked up from the caller's history on the way
back. A ``thoughtSignature`` (which Gemini 3 requires to be echoed with its
function call) travels as ``tool_calls[].extra_content.google.thought_signature``,
the field Google's own OpenAI-compatible endpoint uses.

``response`` and ``stream`` take the original OpenAI request as an optional
``request`` keyword: the :class:`~.base.Translator` protocol has no slot for
it, and without it embeddings come back as floats with an unknown token count
and ``parallel_tool_calls: false`` cannot be enforced (see README.md).
"""

from __future__ import annotations

import base64
import math
import re
import secrets
import struct
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from ..errors import GatewayError, envelope, upstream_status
from .base import (
    Endpoint,
    ResponseContext,
    Target,
    TranslatedResponse,
    UpstreamRequest,
    Usage,
)
from .sse import SSEBuffer, SSEEvent, encode

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

# google.rpc status -> (client status, code, pass the provider's message on)
_ERRORS: dict[str, tuple[int, str, bool]] = {
    "INVALID_ARGUMENT": (400, "invalid_request", True),
    "OUT_OF_RANGE": (400, "invalid_request", True),
    "UNIMPLEMENTED": (400, "invalid_request", True),
    "NOT_FOUND": (404, "model_not_found", True),
    "FAILED_PRECONDITION": (502, "upstream_error", False),  # billing / region of the gateway's account
    "UNAUTHENTICATED": (502, "upstream_error", False),
    "PERMISSION_DENIED": (502, "upstream_error", False),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_exceeded", False),
    "UNAVAILABLE": (503, "upstream_unavailable", False),
    "DEADLINE_EXCEEDED": (504, "upstream_timeout", False),
    "INTERNAL": (502, "upstream_error", False),
    "UNKNOWN": (502, "upstream_error", False),
    "ABORTED": (502, "upstream_error", False),
    "CANCELLED": (502, "upstream_error", False),
}

_INT32 = 2**31


def model_path(model: str) -> str:
    """``models/<name>``, quoted so a model name can never alter the request path."""
    return "models/" + quote(model.removeprefix("models/"), safe="-._~@")


def estimate_tokens(inputs: Any) -> int:
    """Gemini reports no tokens for embeddings: ceil(characters / 4) per input."""
    texts = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else []
    return sum(math.ceil(len(t) / 4) for t in texts if isinstance(t, str))


class GeminiTranslator:
    """Stateless; one instance serves every request."""

    def media_urls(self, endpoint: Endpoint, body: Mapping[str, Any]) -> list[str]:
        if endpoint is not Endpoint.CHAT or not isinstance(body.get("messages"), list):
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

    def request(self, endpoint: Endpoint, body: dict[str, Any], target: Target) -> UpstreamRequest:
        path = f"{target.base_path}/v1beta/{model_path(target.upstream_model)}"
        if endpoint is Endpoint.CHAT:
            out = _chat_request(body, target)
            path += ":streamGenerateContent?alt=sse" if body.get("stream") is True else ":generateContent"
        elif endpoint is Endpoint.EMBEDDINGS:
            out = _embed_request(body, target.upstream_model)
            path += ":batchEmbedContents"
        else:
            model = body.get("model") or target.upstream_model
            raise GatewayError(
                400, "invalid_request", f"model {model} does not support /v1{endpoint.value}", "model"
            )
        headers = {"x-goog-api-key": target.api_key, "content-type": "application/json"}
        return UpstreamRequest(path=path, headers=headers, body=orjson.dumps(out))

    def response(
        self,
        endpoint: Endpoint,
        status: int,
        body: bytes,
        ctx: ResponseContext,
    ) -> TranslatedResponse:
        request = ctx.request
        if status >= 400:
            return error_response(status, body)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, list) and doc:
            doc = doc[0]
        if not isinstance(doc, dict):
            return _failed(502, "upstream_error", "the provider returned an unreadable response")
        if isinstance(doc.get("error"), dict):
            return error_response(502, body)
        if endpoint is Endpoint.EMBEDDINGS:
            out, usage = _embeddings(doc, ctx, request)
            return TranslatedResponse(200, orjson.dumps(out), usage)
        blocked = _block_reason(doc)
        if blocked is not None:
            return TranslatedResponse(
                400, _blocked_body(blocked), _usage(doc.get("usageMetadata"))[1], "content_filter"
            )
        one_call = request.get("parallel_tool_calls") is False
        out, usage = _completion(doc, ctx, one_call)
        return TranslatedResponse(200, orjson.dumps(out), usage)

    def stream(self, ctx: ResponseContext) -> GeminiStream:
        one_call = ctx.request.get("parallel_tool_calls") is False
        return GeminiStream(ctx, one_call)


# --------------------------------------------------------------------- request


def _invalid(param: str, message: str) -> GatewayError:
    return GatewayError(400, "invalid_request", message, param)


def _unsupported(param: str, message: str) -> None:
    raise GatewayError(400, "unsupported_parameter", message, param)


def _chat_request(body: Mapping[str, Any], target: Target) -> dict[str, Any]:
    _reject_unsupported(body)
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


def _reject_unsupported(body: Mapping[str, Any]) -> None:
    if body.get("logit_bias"):
        _unsupported("logit_bias", "logit_bias is not supported by this model's provider")
    modalities = body.get("modalities")
    if modalities and any(m != "text" for m in modalities):
        _unsupported("modalities", "only text output is supported by this model's provider")
    for name in ("audio", "web_search_options", "moderation", "functions", "function_call"):
        if body.get(name) is not None:
            _unsupported(name, f"{name} is not supported by this model's provider")


def _number(body: Mapping[str, Any], name: str) -> float | int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(name, f"{name} must be a number")
    return value


def _int(body: Mapping[str, Any], name: str, minimum: int = 0) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _invalid(name, f"{name} must be an integer >= {minimum}")
    return value


def _generation_config(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _invalid("stop", "stop must be a string or a list of strings")
        if any(stop):
            config["stopSequences"] = [s for s in stop if s]
    for name, key in (("temperature", "temperature"), ("top_p", "topP")):
        value = _number(body, name)
        if value is not None:
            config[key] = value
    limit = _int(body, "max_completion_tokens")
    if limit is None:
        limit = _int(body, "max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    n = _int(body, "n", 1)
    if n is not None and n != 1:
        config["candidateCount"] = n
    seed = _int(body, "seed", -(2**63))
    if seed is not None:
        config["seed"] = (seed + _INT32) % (2 * _INT32) - _INT32  # Gemini's seed is int32
    for name, key in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        value = _number(body, name)
        if value:  # 0 is the default; some models reject the field even when it is 0
            config[key] = value
    if body.get("logprobs") is True:
        config["responseLogprobs"] = True
        top = _int(body, "top_logprobs")
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
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    if kind != "json_schema":
        raise _invalid("response_format.type", f"unknown response_format type {kind!r}")
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise _invalid("response_format.json_schema.schema", "json_schema.schema must be an object")
    config["responseMimeType"] = "application/json"
    config["responseJsonSchema"] = _json_schema(schema)


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    if "$schema" in schema:
        return {k: v for k, v in schema.items() if k != "$schema"}
    return schema


def _tools(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise _invalid("tools", "tools must be an array")
    decls = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function":
            _unsupported(f"tools[{i}]", "only function tools are supported by this model's provider")
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"tools[{i}].function.name", "tool name is required")
        decl: dict[str, Any] = {"name": name}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if isinstance(fn.get("parameters"), dict):
            decl["parametersJsonSchema"] = _json_schema(fn["parameters"])
        decls.append(decl)
    choice = body.get("tool_choice")
    if not decls or choice is None:
        return decls, None
    if choice == "auto":
        return decls, {"mode": "AUTO"}
    if choice == "none":
        return decls, {"mode": "NONE"}
    if choice == "required":
        return decls, {"mode": "ANY"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("tool_choice.function.name", "tool_choice needs a function name")
        return decls, {"mode": "ANY", "allowedFunctionNames": [name]}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = {
            (t.get("function") or {}).get("name") for t in allowed.get("tools") or [] if isinstance(t, dict)
        }
        decls = [d for d in decls if d["name"] in names]
        return decls, {"mode": "ANY" if allowed.get("mode") == "required" else "AUTO"}
    _unsupported("tool_choice", "this tool_choice is not supported by this model's provider")
    return decls, None


def _contents(
    raw: Any, target: Target, needs_signature: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise _invalid("messages", "messages must be a non-empty array")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _invalid(where, "each message must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            system.extend(_text_parts(msg.get("content"), where))
        elif role == "user":
            add("user", _user_parts(msg.get("content"), where, target))
        elif role == "assistant":
            add("model", _model_parts(msg, where, names, needs_signature))
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            name = names.get(call_id) if isinstance(call_id, str) else None
            if name is None:
                raise _invalid(f"{where}.tool_call_id", "tool_call_id does not match an earlier tool call")
            response = {"name": name, "response": _tool_result(msg.get("content"), where)}
            add("user", [{"functionResponse": response}])
        elif role == "function":
            _unsupported(f"{where}.role", "function messages are not supported; use tool messages")
        else:
            raise _invalid(f"{where}.role", f"unknown role {role!r}")
    if not contents:
        raise _invalid("messages", "messages must contain at least one user or assistant message")
    return system, contents


def _text_of(content: Any, where: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise _invalid(f"{where}.content", "content must be a string or an array of parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise _invalid(f"{where}.content[{j}]", "only text parts are allowed here")
        text = part.get("text") if part["type"] == "text" else part.get("refusal")
        if not isinstance(text, str):
            raise _invalid(f"{where}.content[{j}]", "text parts need a string")
        if text:
            texts.append(text)
    return texts


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    return [{"text": t} for t in _text_of(content, where)]


def _tool_result(content: Any, where: str) -> dict[str, Any]:
    """functionResponse.response must be an object: a JSON object result is passed as is."""
    text = "".join(_text_of(content, where))
    if text.startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"result": text}


def _user_parts(content: Any, where: str, target: Target) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return _text_parts(content, where)
    if not isinstance(content, list):
        raise _invalid(f"{where}.content", "content must be a string or an array of parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.extend(_text_parts([part], where))
        elif kind == "image_url":
            parts.append(_image_part(part.get("image_url"), at, target))
        elif kind == "file":
            parts.append(_file_part(part.get("file"), at))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not audio.get("data") or not audio.get("format"):
                raise _invalid(f"{at}.input_audio", "input_audio needs data and format")
            parts.append({"inlineData": {"mimeType": f"audio/{audio['format']}", "data": audio["data"]}})
        else:
            raise _invalid(at, f"unknown content part type {kind!r}")
    return parts


def parse_data_uri(url: str, param: str) -> tuple[str, str] | None:
    """(mime type, base64 payload) of a ``data:`` URI; None for anything else."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64") or not data:
        raise GatewayError(400, "invalid_image_url", "data URIs must be base64-encoded", param)
    return header[:-7].split(";", 1)[0].strip().lower(), data


def _image_part(image: Any, at: str, target: Target) -> dict[str, Any]:
    param = f"{at}.image_url.url"
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not url:
        raise _invalid(param, "image_url.url is required")
    parsed = parse_data_uri(url, param)
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


def _file_part(file: Any, at: str) -> dict[str, Any]:
    if not isinstance(file, dict):
        raise _invalid(f"{at}.file", "file must be an object")
    if file.get("file_id") is not None:
        _unsupported(f"{at}.file.file_id", "file_id references are not supported yet; send file_data")
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        raise _invalid(f"{at}.file.file_data", "file.file_data is required")
    parsed = parse_data_uri(data, f"{at}.file.file_data")
    mime, b64 = parsed if parsed is not None else ("application/pdf", data)
    return {"inlineData": {"mimeType": mime, "data": b64}}


def _model_parts(
    msg: Mapping[str, Any], where: str, names: dict[str, str], needs_signature: bool
) -> list[dict[str, Any]]:
    parts = _text_parts(msg.get("content"), where)
    refusal = msg.get("refusal")
    if not parts and isinstance(refusal, str) and refusal:
        parts.append({"text": refusal})
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _invalid(f"{where}.tool_calls", "tool_calls must be an array")
    for k, call in enumerate(calls):
        at = f"{where}.tool_calls[{k}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or call.get("type", "function") != "function":
            _unsupported(at, "only function tool calls are supported")
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"{at}.function.name", "tool call name is required")
        if isinstance(call.get("id"), str):
            names[call["id"]] = name
        part: dict[str, Any] = {"functionCall": {"name": name, "args": _arguments(fn.get("arguments"), at)}}
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


def _arguments(raw: Any, at: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise _invalid(f"{at}.function.arguments", "tool call arguments must be a JSON object") from None
    if not isinstance(value, dict):
        raise _invalid(f"{at}.function.arguments", "tool call arguments must be a JSON object")
    return value


def _embed_request(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    inputs = body.get("input")
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs):
        texts = inputs
    elif isinstance(inputs, list) and inputs and all(isinstance(t, int | list) for t in inputs):
        raise GatewayError(
            400, "unsupported_parameter", "token arrays are not supported by this model's provider", "input"
        )
    else:
        raise _invalid("input", "input must be a string or an array of strings")
    fmt = body.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise _invalid("encoding_format", "encoding_format must be float or base64")
    dims = _int(body, "dimensions", 1)
    name = model_path(model)
    requests = []
    for text in texts:
        req: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
        if dims is not None:
            req["outputDimensionality"] = dims
        requests.append(req)
    return {"requests": requests}


# -------------------------------------------------------------------- response


def _usage(raw: Any) -> tuple[dict[str, Any], Usage]:
    raw = raw if isinstance(raw, dict) else {}
    prompt = (raw.get("promptTokenCount") or 0) + (raw.get("toolUsePromptTokenCount") or 0)
    cached = raw.get("cachedContentTokenCount") or 0
    reasoning = raw.get("thoughtsTokenCount") or 0
    completion = (raw.get("candidatesTokenCount") or 0) + reasoning
    doc = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    return doc, Usage(prompt, cached, completion, reasoning)


def _block_reason(doc: Mapping[str, Any]) -> str | None:
    feedback = doc.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if reason and not doc.get("candidates"):
        return str(reason)
    return None


def _blocked_body(reason: str) -> bytes:
    message = f"the prompt was blocked by the provider's content filter ({reason})"
    return envelope(400, "content_filter", message, "messages")


def _new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _tool_call(call: Mapping[str, Any], signature: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": call.get("id") or _new_call_id(),
        "type": "function",
        "function": {"name": call.get("name"), "arguments": orjson.dumps(call.get("args") or {}).decode()},
    }
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


def _completion(doc: Mapping[str, Any], ctx: ResponseContext, one_call: bool) -> tuple[dict[str, Any], Usage]:
    choices = []
    for position, cand in enumerate(doc.get("candidates") or []):
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in _candidate_parts(cand):
            if part.get("thought"):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), dict) and not (one_call and calls):
                calls.append(_tool_call(part["functionCall"], part.get("thoughtSignature")))
        finish = _FINISH.get(str(cand.get("finishReason")), "stop")
        if calls and finish == "stop":
            finish = "tool_calls"
        text = "".join(texts)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text or (None if calls else ""),
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": cand.get("index", position),
                "message": message,
                "logprobs": _logprobs(cand.get("logprobsResult")),
                "finish_reason": finish,
            }
        )
    usage_doc, usage = _usage(doc.get("usageMetadata"))
    out = {
        "id": "chatcmpl-" + str(doc.get("responseId") or secrets.token_hex(12)),
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.upstream_model,
        "choices": choices,
        "usage": usage_doc,
    }
    return out, usage


def _embeddings(
    doc: Mapping[str, Any], ctx: ResponseContext, request: Mapping[str, Any]
) -> tuple[dict[str, Any], Usage]:
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for i, emb in enumerate(doc.get("embeddings") or []):
        values = emb.get("values") or [] if isinstance(emb, dict) else []
        vector: Any = values
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = estimate_tokens(request.get("input"))
    out = {
        "object": "list",
        "data": data,
        "model": ctx.upstream_model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return out, Usage(input_tokens=tokens)


def error_response(status: int, body: bytes) -> TranslatedResponse:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, list) and doc:
        doc = doc[0]
    err = doc.get("error") if isinstance(doc, dict) else None
    client_status, code = upstream_status(status)
    message = f"the provider returned HTTP {status}"
    if isinstance(err, dict):
        client_status, code, message = _error_fields(err, client_status, code, message)
    return _failed(client_status, code, message)


def _error_fields(err: Mapping[str, Any], status: int, code: str, fallback: str) -> tuple[int, str, str]:
    provider_msg = err.get("message") if isinstance(err.get("message"), str) else None
    if _is_key_error(err):
        return 502, "upstream_error", "the provider rejected the gateway's credentials"
    mapped = _ERRORS.get(str(err.get("status")))
    if mapped is None:
        return status, code, provider_msg or fallback
    status, code, passthrough = mapped
    if passthrough and provider_msg:
        return status, code, provider_msg
    return status, code, f"the provider answered {err.get('status')}"


def _is_key_error(err: Mapping[str, Any]) -> bool:
    """A bad API key is a 400 INVALID_ARGUMENT at Google, but it is the gateway's fault."""
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("reason", "")).startswith("API_KEY"):
            return True
    return False


def _failed(status: int, code: str, message: str) -> TranslatedResponse:
    return TranslatedResponse(status, envelope(status, code, message), None, code)


# ---------------------------------------------------------------------- stream


class _Choice:
    __slots__ = ("finished", "tools")

    def __init__(self) -> None:
        self.tools = 0
        self.finished = False


class GeminiStream:
    """Gemini ``?alt=sse`` chunks → OpenAI ``chat.completion.chunk`` SSE.

    Gemini has no end-of-stream event: the stream is done once every candidate
    seen has a finishReason, and usage (cumulative in every chunk) is reported
    from :meth:`finish`, after the last chunk.
    """

    __slots__ = (
        "_choices",
        "_ctx",
        "_one_call",
        "_prefix",
        "_raw_usage",
        "_sse",
        "_started",
        "done",
        "error_code",
        "response_id",
        "usage",
    )

    def __init__(self, ctx: ResponseContext, one_call: bool = False) -> None:
        self.usage: Usage | None = None
        self.done = False
        self.error_code: str | None = None
        self._ctx = ctx
        self._one_call = one_call
        self._sse = SSEBuffer()
        self._choices: dict[int, _Choice] = {}
        self._raw_usage: Any = None
        self._started = False
        self._set_id("chatcmpl-" + secrets.token_hex(12))

    def _set_id(self, response_id: str) -> None:
        self.response_id = response_id
        self._prefix = (
            b'{"id":'
            + orjson.dumps(response_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._ctx.created).encode()
            + b',"model":'
            + orjson.dumps(self._ctx.upstream_model)
            + b',"choices":['
        )

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._sse.feed(chunk):
            self._on_event(event, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        for event in self._sse.flush():
            self._on_event(event, out)
        if not self.done:
            self._error(
                out, 502, "upstream_error", "the provider stream ended before the answer was complete"
            )
        return b"".join(out)

    def _on_event(self, event: SSEEvent, out: list[bytes]) -> None:
        if self.done or event.data.strip() == b"[DONE]":
            return
        try:
            doc = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            self._error(out, 502, "upstream_error", "the provider sent an unreadable stream event")
            return
        if not isinstance(doc, dict):
            return
        if isinstance(doc.get("error"), dict):
            status, code, message = _error_fields(
                doc["error"], 502, "upstream_error", "the provider stream failed"
            )
            self._error(out, status, code, message)
            return
        if doc.get("usageMetadata") is not None:
            self._raw_usage = doc["usageMetadata"]
            self.usage = _usage(self._raw_usage)[1]
        if not self._started:
            self._started = True
            if doc.get("responseId"):
                self._set_id("chatcmpl-" + str(doc["responseId"]))
        blocked = _block_reason(doc)
        if blocked is not None:
            out.append(encode(_blocked_body(blocked)))
            self.error_code = "content_filter"
            self.done = True
            return
        for position, cand in enumerate(doc.get("candidates") or []):
            if isinstance(cand, dict):
                self._on_candidate(cand.get("index", position), cand, out)
        if self._choices and all(c.finished for c in self._choices.values()):
            self.done = True
            if self._ctx.include_usage:
                usage_doc = _usage(self._raw_usage)[0]
                out.append(b"data: " + self._prefix + b'],"usage":' + orjson.dumps(usage_doc) + b"}\n\n")

    def _on_candidate(self, index: int, cand: Mapping[str, Any], out: list[bytes]) -> None:
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice()
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        texts: list[str] = []
        for part in _candidate_parts(cand):
            if part.get("thought"):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), dict):
                if texts:
                    out.append(self._chunk(index, {"content": "".join(texts)}))
                    texts = []
                self._tool_call(index, choice, part, out)
        logprobs = _logprobs(cand.get("logprobsResult"))
        text = "".join(texts)
        if text or logprobs is not None:
            out.append(self._chunk(index, {"content": text}, logprobs=logprobs))
        reason = cand.get("finishReason")
        if reason and not choice.finished:
            finish = _FINISH.get(str(reason), "stop")
            if choice.tools and finish == "stop":
                finish = "tool_calls"
            out.append(self._chunk(index, {}, finish))
            choice.finished = True

    def _tool_call(self, index: int, choice: _Choice, part: Mapping[str, Any], out: list[bytes]) -> None:
        if self._one_call and choice.tools:
            return
        call = _tool_call(part["functionCall"], part.get("thoughtSignature"))
        arguments = call["function"]["arguments"]
        call["function"]["arguments"] = ""
        call["index"] = choice.tools
        out.append(self._chunk(index, {"tool_calls": [call]}))
        fragment = {"index": choice.tools, "function": {"arguments": arguments}}
        out.append(self._chunk(index, {"tool_calls": [fragment]}))
        choice.tools += 1

    def _chunk(
        self, index: int, delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None
    ) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return b"data: " + self._prefix + orjson.dumps(choice) + b"]}\n\n"

    def _error(self, out: list[bytes], status: int, code: str, message: str) -> None:
        out.append(encode(envelope(status, code, message)))
        self.error_code = code
        self.done = True
