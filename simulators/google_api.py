"""Simulated Gemini API (REST, v1beta and v1): generateContent, streamGenerateContent (SSE with
``?alt=sse``, else a streamed JSON array), embedContent, batchEmbedContents, countTokens.

A request with audio (an ``inlineData`` part of an ``audio/*`` type) is heard
(simulators/audio.py): the answer is a transcript of that duration, or its English translation
when the text asks to translate; JSON with ``language``, ``text`` and ``segments`` when the
request asks for JSON, else the text alone. Its usage counts the audio as Gemini documents it,
32 tokens per second, in ``promptTokensDetails`` under ``AUDIO``.

A request naming `cachedContent` reports half its prompt tokens (rounded down) as
`cachedContentTokenCount`, so cached-token pricing can be tested.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, ClassVar

import orjson

from simulators import audio, content
from simulators.content import Answer, Prompt, Tool
from simulators.provider import ApiError, Call, Endpoint, Provider, merge_usage, new_id
from simulators.replies import JsonReply, Reply, StreamReply

FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "stop_sequence": "STOP"}
STATUSES: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    499: ("CANCELLED", "The operation was cancelled."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    501: ("UNIMPLEMENTED", "Operation is not implemented, or supported, or enabled."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
BAD_KEY = "API key not valid. Please pass a valid API key."
BAD_KEY_DETAILS = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    },
    {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": BAD_KEY},
]
NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key "
    "or other form of API consumer identity to call this API."
)


def _get(obj: Any, camel: str, snake: str) -> Any:
    """The REST API accepts both spellings of every field."""
    if not isinstance(obj, dict):
        return None
    return obj.get(camel, obj.get(snake))


def _parts_text(prompt: Prompt, parts: Any, said: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(texts for token counting, function responses) of one content's parts."""
    texts: list[str] = []
    responses: list[str] = []
    for part in parts or []:
        if not isinstance(part, dict):
            continue
        if "text" in part and not part.get("thought"):
            texts.append(str(part["text"]))
            if said is not None:
                said.append(texts[-1])
        media = _get(part, "inlineData", "inline_data") or _get(part, "fileData", "file_data")
        if isinstance(media, dict):
            mime = str(_get(media, "mimeType", "mime_type") or "")
            if mime.startswith("image/"):
                prompt.images += 1
            elif mime == "application/pdf":
                prompt.documents += 1
            if said is not None:
                said.append("")
        call = _get(part, "functionCall", "function_call")
        if isinstance(call, dict):
            texts += [str(call.get("name", "")), content.compact_json(call.get("args", {}))]
        response = _get(part, "functionResponse", "function_response")
        if isinstance(response, dict):
            responses.append(content.compact_json(response.get("response", {})))
            texts += [str(response.get("name", "")), responses[-1]]
    return texts, responses


def generate_prompt(body: dict[str, Any]) -> Prompt:
    prompt = Prompt()
    system = _get(body, "systemInstruction", "system_instruction")
    if isinstance(system, dict):
        texts, _ = _parts_text(prompt, system.get("parts"))
        prompt.message_texts.append(" ".join(texts))
    responses: list[str] = []
    for item in body.get("contents") or []:
        said: list[str] = []
        texts, responses = _parts_text(prompt, _get(item, "parts", "parts"), said)
        prompt.message_texts.append(" ".join(t for t in texts if t))
        if item.get("role", "user") == "user" and said:
            prompt.last_user_text = " ".join(t for t in said if t)
    prompt.tool_results = responses or None

    declarations = [
        d
        for t in body.get("tools") or []
        if isinstance(t, dict)
        for d in _get(t, "functionDeclarations", "function_declarations") or []
    ]
    tools = [
        Tool(
            str(d.get("name")),
            _get(d, "parametersJsonSchema", "parameters_json_schema") or d.get("parameters") or {},
        )
        for d in declarations
        if isinstance(d, dict)
    ]
    config = (
        _get(_get(body, "toolConfig", "tool_config"), "functionCallingConfig", "function_calling_config")
        or {}
    )
    mode = str(config.get("mode", "AUTO")).upper()
    allowed = _get(config, "allowedFunctionNames", "allowed_function_names") or []
    if mode == "ANY":
        prompt.tool_choice = "required"
        if allowed:
            tools = [t for t in tools if t.name in allowed] or tools
    elif mode == "NONE":
        prompt.tool_choice = "none"
    prompt.tools = tools

    generation = _get(body, "generationConfig", "generation_config") or {}
    if _get(generation, "responseMimeType", "response_mime_type") == "application/json":
        prompt.json_mode = True
        prompt.json_schema = (
            _get(generation, "responseJsonSchema", "response_json_schema")
            or _get(generation, "responseSchema", "response_schema")
            or None
        )
    limit = _get(generation, "maxOutputTokens", "max_output_tokens")
    prompt.max_tokens = limit if isinstance(limit, int) else None
    prompt.stop = [s for s in _get(generation, "stopSequences", "stop_sequences") or [] if isinstance(s, str)]
    count = _get(generation, "candidateCount", "candidate_count")
    prompt.n = count if isinstance(count, int) and count > 0 else 1
    return prompt


def _usage(prompt: Prompt, answer: Answer, cached: bool) -> dict[str, Any]:
    prompt_tokens = prompt.prompt_tokens
    output = answer.tokens * prompt.n
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt_tokens + output,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
    }
    if cached:
        usage["cachedContentTokenCount"] = prompt_tokens // 2
    return usage


def usage_for(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.endswith(":countTokens"):
        return {"totalTokens": _count_prompt(body).prompt_tokens}
    prompt = generate_prompt(body)
    return _usage(prompt, content.plan(prompt), bool(_get(body, "cachedContent", "cached_content")))


def _count_prompt(body: dict[str, Any]) -> Prompt:
    inner = _get(body, "generateContentRequest", "generate_content_request")
    return generate_prompt(inner if isinstance(inner, dict) else body)


class Google(Provider):
    kind: ClassVar[str] = "google"

    def endpoints(self) -> list[Endpoint]:
        out = []
        for version in ("v1beta", "v1"):
            base = f"/{version}/models/{{model}}"
            out += [
                Endpoint("POST", f"{base}:generateContent", self.generate),
                Endpoint("POST", f"{base}:streamGenerateContent", self.generate),
                Endpoint("POST", f"{base}:embedContent", self.embed),
                Endpoint("POST", f"{base}:batchEmbedContents", self.batch_embed),
                Endpoint("POST", f"{base}:countTokens", self.count_tokens),
            ]
        return out

    def authenticate(self, call: Call) -> None:
        key = call.headers.get("x-goog-api-key") or call.query.get("key")
        if not key:
            raise ApiError(
                403,
                NO_KEY,
                extra={
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "CONSUMER_INVALID",
                            "domain": "googleapis.com",
                            "metadata": {"service": "generativelanguage.googleapis.com"},
                        }
                    ]
                },
            )
        if not self.key_matches(key):
            raise ApiError(400, BAD_KEY, extra={"details": BAD_KEY_DETAILS})

    def error_reply(self, error: ApiError) -> JsonReply:
        fallback = STATUSES[500] if error.status >= 500 else STATUSES[400]
        status, message = STATUSES.get(error.status, fallback)
        body = {
            "error": {
                "code": error.status,
                "message": error.message or message,
                "status": status,
                **error.extra,
            }
        }
        return JsonReply(body, error.status)

    def not_found(self, call: Call) -> ApiError:
        return ApiError(404, f"Requested entity was not found: {call.method} {call.path}")

    def invalid_json(self) -> ApiError:
        return ApiError(400, "Invalid JSON payload received. Unexpected token.")

    def _check(self, problems: list[str]) -> None:
        if problems:
            raise ApiError(400, f"Invalid JSON payload received. {problems[0]}")

    # ---------------------------------------------------------------- generation
    def generate(self, call: Call) -> Reply:
        body = self.require_json(call)
        if self.kit is not None:
            self._check(self.kit.providers.gemini_request(body, api=call.path.split("/")[1]))
        if not body.get("contents"):
            raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
        heard = _heard(body)
        if heard is not None:
            return self._hear(call, body, heard)
        prompt = generate_prompt(body)
        answer = content.plan(prompt)
        usage = _usage(prompt, answer, bool(_get(body, "cachedContent", "cached_content")))
        thought = _thought(body, answer)
        if thought:  # Gemini counts thoughts apart from the candidates, inside the total
            thinking = content.count_tokens(thought) * prompt.n
            usage["thoughtsTokenCount"] = thinking
            usage["totalTokenCount"] += thinking
        merge_usage(
            usage, call.usage_override, ("totalTokenCount", "promptTokenCount", "candidatesTokenCount")
        )
        model = call.path_params["model"]
        response_id = new_id()[:22]
        if call.path.endswith(":generateContent"):
            parts = _thought_parts(thought) + _answer_parts(answer)
            return JsonReply(
                {
                    "candidates": [_candidate(i, parts, FINISH[answer.finish]) for i in range(prompt.n)],
                    "usageMetadata": usage,
                    "modelVersion": model,
                    "responseId": response_id,
                }
            )
        chunks = _stream_chunks(prompt.n, answer, usage, model, response_id, thought)
        if call.query.get("alt") == "sse":
            return StreamReply([b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks])
        pieces = [(b"[" if i == 0 else b",\r\n") + orjson.dumps(c) for i, c in enumerate(chunks)]
        return StreamReply([*pieces, b"]"], media_type="application/json; charset=UTF-8")

    def _hear(self, call: Call, body: dict[str, Any], seconds: float) -> Reply:
        """An answer about the request's audio: its transcript or translation (module docstring)."""
        asked = " ".join(
            str(p["text"])
            for c in body.get("contents") or []
            for p in _get(c, "parts", "parts") or []
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
        translate = "translate" in asked.lower()
        text = audio.transcript(seconds, translate)
        generation = _get(body, "generationConfig", "generation_config") or {}
        if _get(generation, "responseMimeType", "response_mime_type") == "application/json":
            segments = [
                {"start": s.start, "end": s.end, "text": s.text} for s in audio.segments(text, seconds)
            ]
            said = content.compact_json({"language": "english", "text": text, "segments": segments})
        else:
            said = text
        text_tokens = content.count_tokens(asked)
        audio_tokens = math.ceil(seconds * audio.AUDIO_TOKENS_PER_SECOND)
        output = content.count_tokens(said)
        usage = {
            "promptTokenCount": text_tokens + audio_tokens,
            "candidatesTokenCount": output,
            "totalTokenCount": text_tokens + audio_tokens + output,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": text_tokens},
                {"modality": "AUDIO", "tokenCount": audio_tokens},
            ],
        }
        merge_usage(
            usage, call.usage_override, ("totalTokenCount", "promptTokenCount", "candidatesTokenCount")
        )
        answer = {
            "candidates": [_candidate(0, [{"text": said}], "STOP")],
            "usageMetadata": usage,
            "modelVersion": call.path_params["model"],
            "responseId": new_id()[:22],
        }
        if call.path.endswith(":generateContent"):
            return JsonReply(answer)
        return StreamReply([b"data: " + orjson.dumps(answer) + b"\r\n\r\n"])

    def count_tokens(self, call: Call) -> Reply:
        body = self.require_json(call)
        if self.kit is not None:
            self._check(self.kit.providers.gemini_message("CountTokensRequest", body))
        tokens = _count_prompt(body).prompt_tokens
        return JsonReply(
            {"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}
        )

    # ---------------------------------------------------------------- embeddings
    def embed(self, call: Call) -> Reply:
        body = self.require_json(call)
        if self.kit is not None:
            self._check(self.kit.providers.gemini_message("EmbedContentRequest", body))
        return JsonReply({"embedding": self._embedding(call.path_params["model"], body)})

    def batch_embed(self, call: Call) -> Reply:
        body = self.require_json(call)
        model = call.path_params["model"]
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise ApiError(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
        if self.kit is not None:
            self._check(self.kit.providers.gemini_message("BatchEmbedContentsRequest", body))
            for i, request in enumerate(requests):
                if request.get("model") != f"models/{model}":
                    raise ApiError(
                        400,
                        f"* BatchEmbedContentsRequest.requests[{i}].model: model "
                        f"'{request.get('model')}' does not match the URL model 'models/{model}'",
                    )
        return JsonReply({"embeddings": [self._embedding(model, r) for r in requests]})

    def _embedding(self, model: str, request: dict[str, Any]) -> dict[str, Any]:
        parts = (request.get("content") or {}).get("parts") or []
        text = " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
        dims = _get(request, "outputDimensionality", "output_dimensionality")
        dims = dims if isinstance(dims, int) and dims > 0 else 3072 if "gemini-embedding" in model else 768
        return {"values": content.embedding(text, dims)}


def _thought(body: dict[str, Any], answer: Answer) -> str:
    """The model's thought summary, when the request asks for it as Gemini's API does
    (``generationConfig.thinkingConfig.includeThoughts`` with a budget that is not 0); else ""."""
    generation = _get(body, "generationConfig", "generation_config") or {}
    thinking = _get(generation, "thinkingConfig", "thinking_config") or {}
    if not isinstance(thinking, dict) or _get(thinking, "includeThoughts", "include_thoughts") is not True:
        return ""
    if _get(thinking, "thinkingBudget", "thinking_budget") == 0:
        return ""
    planned = "a call to a tool" if answer.tool_calls else f"an answer of {len(answer.text)} characters"
    return f"Thinking it over before {planned}."


def _thought_parts(thought: str) -> list[dict[str, Any]]:
    return [{"text": thought, "thought": True}] if thought else []


def _answer_parts(answer: Answer) -> list[dict[str, Any]]:
    if answer.tool_calls:
        return [{"functionCall": {"name": c.name, "args": c.arguments}} for c in answer.tool_calls]
    return [{"text": answer.text}]


def _candidate(index: int, parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": index}
    if finish:
        candidate["finishReason"] = finish
    return candidate


def _stream_chunks(
    n: int, answer: Answer, usage: dict[str, Any], model: str, response_id: str, thought: str = ""
) -> list[Any]:
    """The thought summary first (when asked), then text a word per chunk, function calls whole;
    every chunk carries the prompt count, the last one the finish reason and the full usage (as
    the real stream does)."""
    running: dict[str, Any] = {k: usage[k] for k in ("promptTokenCount", "promptTokensDetails") if k in usage}
    running["totalTokenCount"] = usage.get("promptTokenCount", 0)
    groups = (
        [_answer_parts(answer)]
        if answer.tool_calls
        else [[{"text": p}] for p in content.stream_pieces(answer.text) or [""]]
    )
    if thought:
        groups.insert(0, _thought_parts(thought))
    chunks = []
    for i, parts in enumerate(groups):
        last = i == len(groups) - 1
        chunks.append(
            {
                "candidates": [
                    _candidate(c, parts, FINISH[answer.finish] if last else None) for c in range(n)
                ],
                "usageMetadata": usage if last else running,
                "modelVersion": model,
                "responseId": response_id,
            }
        )
    return chunks


AUDIO_TYPES = ("audio/wav", "audio/mp3", "audio/aiff", "audio/aac", "audio/ogg", "audio/flac")


def _heard(body: dict[str, Any]) -> float | None:
    """The seconds of audio in the request's inline data; None when it has none."""
    seconds = None
    for item in body.get("contents") or []:
        for part in _get(item, "parts", "parts") or []:
            media = _get(part, "inlineData", "inline_data")
            if not isinstance(media, dict):
                continue
            mime = str(_get(media, "mimeType", "mime_type") or "")
            if mime == "application/octet-stream":
                raise ApiError(400, f"Unsupported MIME type: {mime}")
            if not mime.startswith("audio/"):
                continue
            if mime not in AUDIO_TYPES:
                raise ApiError(400, f"Unsupported MIME type: {mime}")
            try:
                data = base64.b64decode(str(media.get("data") or ""), validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(
                    400, "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES)"
                ) from None
            if not data:
                raise ApiError(400, "The audio file is empty.")
            seconds = (seconds or 0.0) + audio.heard_seconds(data)
    return seconds
