"""Simulated OpenAI API: chat completions, the Responses API, embeddings, image generation, legacy
completions, moderations, audio (speech, transcriptions, translations: simulators/openai_audio.py),
models."""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from simulators import content, openai_audio, openai_legacy
from simulators.conformance import OpenAISpec
from simulators.openai_chat import FINGERPRINT, FINISH, chat_chunks, chat_prompt, chat_usage
from simulators.openai_responses import (
    Kept,
    Store,
    check_semantics,
    input_items,
    output_items,
    response_events,
    response_object,
    responses_prompt,
)
from simulators.openai_responses import usage_doc as responses_usage
from simulators.openai_rules import check_chat_semantics, check_request
from simulators.provider import ApiError, Call, Endpoint, Provider, merge_usage, new_id
from simulators.replies import JsonReply, Reply, StreamReply

MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "dall-e-3",
    "gpt-image-1",
    "gpt-3.5-turbo-instruct",
    "omni-moderation-latest",
    "text-moderation-latest",
    "tts-1",
    "gpt-4o-mini-tts",
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
)
DEFAULT_DIMENSIONS = {"text-embedding-3-large": 3072}
IMAGE_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160}

ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in 20s.",
    ),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
}


def embedding_inputs(value: Any) -> list[tuple[str, int]]:
    """(text to embed, token count) per input: strings count words, token arrays their length."""
    if isinstance(value, str):
        return [(value, content.count_tokens(value))]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [(" ".join(map(str, value)), len(value))]
    if isinstance(value, list):
        return [item for v in value for item in embedding_inputs(v)]
    return []


def usage_for(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.endswith("/embeddings"):
        tokens = sum(n for _, n in embedding_inputs(body.get("input")))
        return {"prompt_tokens": tokens, "total_tokens": tokens}
    if path.endswith("/v1/completions") and not path.endswith("/chat/completions"):
        return openai_legacy.completion_usage(body)
    if path.endswith("/responses"):  # without a previous response
        prompt = responses_prompt(body, input_items(body))
        return responses_usage(prompt, content.plan(prompt))
    prompt = chat_prompt(body)
    return chat_usage(prompt, content.plan(prompt))


@dataclass
class OpenAI(Provider):
    kind: ClassVar[str] = "openai"
    # The responses this simulated account keeps (``store``), for ``previous_response_id``.
    kept: Store = field(default_factory=Store)

    @property
    def spec(self) -> OpenAISpec | None:
        """OpenAI's OpenAPI spec, when this simulator validates requests."""
        return self.kit.openai if self.kit is not None else None

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("POST", "/v1/chat/completions", self.chat),
            Endpoint("POST", "/v1/responses", self.responses),
            Endpoint("GET", "/v1/responses/{response_id}", self.get_response),
            Endpoint("DELETE", "/v1/responses/{response_id}", self.delete_response),
            Endpoint("POST", "/v1/embeddings", self.embeddings),
            Endpoint("POST", "/v1/images/generations", self.images),
            Endpoint("POST", "/v1/completions", self.completions),
            Endpoint("POST", "/v1/moderations", self.moderations),
            Endpoint("POST", "/v1/audio/speech", lambda call: openai_audio.speech(self, call)),
            Endpoint("POST", "/v1/audio/transcriptions", lambda call: openai_audio.transcription(self, call)),
            Endpoint(
                "POST",
                "/v1/audio/translations",
                lambda call: openai_audio.transcription(self, call, translate=True),
            ),
            Endpoint("GET", "/v1/models", self.models),
            Endpoint("GET", "/v1/models/{model_id:path}", self.model),
        ]

    # ---------------------------------------------------------------- errors and auth
    def authenticate(self, call: Call) -> None:
        scheme, _, key = call.headers.get("authorization", "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        if not self.key_matches(key):
            masked = f"{key[:3]}{'*' * max(len(key) - 7, 0)}{key[-4:]}" if len(key) > 7 else "*" * len(key)
            raise ApiError(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def error_reply(self, error: ApiError) -> JsonReply:
        fallback = ("server_error", None, "Server error.") if error.status >= 500 else ERRORS[400]
        kind, code, message = ERRORS.get(error.status, fallback)
        body = {
            "error": {
                "message": error.message or message,
                "type": kind,
                "param": error.param,
                "code": error.code if error.code is not None else code,
            }
        }
        headers = {"retry-after": "1"} if error.status == 429 else {}
        return JsonReply(body, error.status, headers)

    def not_found(self, call: Call) -> ApiError:
        return ApiError(404, f"Invalid URL ({call.method} {call.path})", code="unknown_url")

    def invalid_json(self) -> ApiError:
        return ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
            "valid JSON.)",
        )

    def response_headers(self) -> dict[str, str]:
        return {
            "x-request-id": f"req_{new_id()}",
            "openai-version": "2020-10-01",
            "openai-processing-ms": "1",
        }

    # ---------------------------------------------------------------- chat
    def chat(self, call: Call) -> Reply:
        body = self.require_json(call)
        check_request(self.spec, "CreateChatCompletionRequest", body)
        if "messages" not in body:
            raise ApiError(
                400,
                "Missing required parameter: 'messages'.",
                code="missing_required_parameter",
                param="messages",
            )
        if self.kit is not None:
            check_chat_semantics(body)
        prompt = chat_prompt(body)
        answer = content.plan(prompt)
        if call.step is not None and call.step.answer_bytes:
            answer = content.lengthened(answer, call.step.answer_bytes)
        usage = chat_usage(prompt, answer)
        merge_usage(usage, call.usage_override, ("total_tokens", "prompt_tokens", "completion_tokens"))
        completion_id = f"chatcmpl-{new_id()[:29]}"
        created = int(time.time())
        model = str(body.get("model"))
        calls = [(f"call_{new_id()[:24]}", c) for c in answer.tool_calls]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = chat_chunks(completion_id, created, model, prompt.n, answer, calls, usage, include_usage)
            return StreamReply(events)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text if not calls else None,
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                for cid, c in calls
            ]
        choice = {"message": message, "logprobs": None, "finish_reason": FINISH[answer.finish]}
        return JsonReply(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": i, **choice} for i in range(prompt.n)],
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
            }
        )

    # ---------------------------------------------------------------- responses
    def responses(self, call: Call) -> Reply:
        body = self.require_json(call)
        check_request(self.spec, "CreateResponse", body)
        if self.kit is not None:
            check_semantics(body)
        history = self.kept.history(body.get("previous_response_id"))
        items = input_items(body)
        prompt = responses_prompt(body, history + items)
        answer = content.plan(prompt)
        usage = responses_usage(prompt, answer)
        merge_usage(usage, call.usage_override, ("total_tokens", "input_tokens", "output_tokens"))
        response_id = f"resp_{new_id()}"
        created = int(time.time())
        final = response_object(body, response_id, created, answer, usage)
        final["output"] = output_items(answer)
        if body.get("store", True) is not False:
            self.kept.kept[response_id] = Kept(history + items + final["output"], final)
        if body.get("stream"):
            return StreamReply(
                response_events(response_object(body, response_id, created, None, None), final)
            )
        return JsonReply(final)

    def _kept(self, call: Call) -> Kept:
        found = self.kept.kept.get(call.path_params["response_id"])
        if found is None:
            raise ApiError(
                404,
                f"Response with id '{call.path_params['response_id']}' not found.",
                param="response_id",
            )
        return found

    def get_response(self, call: Call) -> Reply:
        return JsonReply(self._kept(call).response)

    def delete_response(self, call: Call) -> Reply:
        response_id = self._kept(call).response["id"]
        del self.kept.kept[response_id]
        return JsonReply({"id": response_id, "object": "response.deleted", "deleted": True})

    # ---------------------------------------------------------------- embeddings
    def embeddings(self, call: Call) -> Reply:
        body = self.require_json(call)
        check_request(self.spec, "CreateEmbeddingRequest", body)
        inputs = embedding_inputs(body.get("input"))
        if not inputs:
            raise ApiError(
                400,
                "'$.input' is invalid. Please check the API reference: "
                "https://platform.openai.com/docs/api-reference.",
                param="input",
            )
        model = str(body.get("model"))
        dims = body.get("dimensions") or DEFAULT_DIMENSIONS.get(model, 1536)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, (text, _) in enumerate(inputs):
            vector = content.embedding(text, int(dims))
            encoded: Any = content.embedding_base64(vector) if as_base64 else vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(n for _, n in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        merge_usage(usage, call.usage_override)
        return JsonReply({"object": "list", "data": data, "model": model, "usage": usage})

    # ---------------------------------------------------------------- images
    def images(self, call: Call) -> Reply:
        body = self.require_json(call)
        if "prompt" not in body:
            raise ApiError(
                400,
                "Missing required parameter: 'prompt'.",
                code="missing_required_parameter",
                param="prompt",
            )
        check_request(self.spec, "CreateImageRequest", body, required=())
        model = str(body.get("model") or "dall-e-2")
        prompt = str(body["prompt"])
        count = body.get("n") or 1
        gpt_image = model.startswith("gpt-image")
        as_b64 = gpt_image or body.get("response_format") == "b64_json"
        data = []
        for i in range(int(count)):
            token = hashlib.sha256(f"{model}\n{prompt}\n{i}".encode()).hexdigest()[:16]
            item: dict[str, Any] = (
                {"b64_json": base64.b64encode(content.png_for(token)).decode()}
                if as_b64
                else {"url": f"{call.base_url}/_sim/images/{token}.png"}
            )
            if model == "dall-e-3":
                item["revised_prompt"] = prompt
            data.append(item)
        reply: dict[str, Any] = {"created": int(time.time()), "data": data}
        if gpt_image:
            text_tokens = content.count_tokens(prompt)
            output = IMAGE_OUTPUT_TOKENS.get(str(body.get("quality")), IMAGE_OUTPUT_TOKENS["medium"]) * int(
                count
            )
            usage = {
                "input_tokens": text_tokens,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
                "output_tokens": output,
                "total_tokens": text_tokens + output,
            }
            merge_usage(usage, call.usage_override, ("total_tokens", "input_tokens", "output_tokens"))
            reply.update(
                background="opaque",
                output_format="png",
                quality=body.get("quality") or "medium",
                size=body.get("size") or "1024x1024",
                usage=usage,
            )
        return JsonReply(reply)

    # ---------------------------------------------------------------- legacy completions
    def completions(self, call: Call) -> Reply:
        body = self.require_json(call)
        check_request(self.spec, "CreateCompletionRequest", body, required=("model", "prompt"))
        if body.get("stream_options") is not None and not body.get("stream"):
            raise ApiError(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        openai_legacy.check_completion_model(str(body.get("model")))
        usage = openai_legacy.completion_usage(body)
        merge_usage(usage, call.usage_override, ("total_tokens", "prompt_tokens", "completion_tokens"))
        doc, events = openai_legacy.completion(body, usage)
        return StreamReply(events) if events else JsonReply(doc)

    # ---------------------------------------------------------------- moderations
    def moderations(self, call: Call) -> Reply:
        body = self.require_json(call)
        check_request(self.spec, "CreateModerationRequest", body, required=("input",))
        return JsonReply(openai_legacy.moderation(body))

    # ---------------------------------------------------------------- models
    def models(self, call: Call) -> Reply:
        return JsonReply({"object": "list", "data": [_model(m) for m in MODELS]})

    def model(self, call: Call) -> Reply:
        model_id = call.path_params["model_id"]
        if model_id not in MODELS:
            raise ApiError(
                404, f"The model '{model_id}' does not exist", code="model_not_found", param="model"
            )
        return JsonReply(_model(model_id))


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1715367049, "owned_by": "system"}
