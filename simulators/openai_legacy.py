"""OpenAI's legacy Completions (``/v1/completions``) and Moderations (``/v1/moderations``).

Completions: each prompt (a string, strings, or token ids, read as their numbers) is the simulated
model's last user text, with OpenAI's defaults of this API: ``max_tokens`` 16 (the answer is cut
there, finish ``length``), ``n`` answers per prompt, ``echo`` puts the prompt before the answer.
Usage: prompt tokens = the words of every prompt (no per-message framing: there are no messages),
completion tokens = the words of every answer. Chat models are refused as OpenAI refuses them.

Moderations: one result per input string (one for a multi-modal array). A text is flagged for
violence when it says "kill", for harassment when it says "hate"; scores are 0.9 for a flagged
category, else 0.0001. No usage (OpenAI reports none).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from simulators import content
from simulators.content import Answer, Prompt
from simulators.openai_chat import FINGERPRINT, FINISH
from simulators.provider import ApiError, new_id

DEFAULT_MAX_TOKENS = 16
# Chat models answer 404 on /v1/completions, as OpenAI's do.
_CHAT_PREFIXES = ("gpt-4", "gpt-5", "gpt-3.5-turbo", "o1", "o3", "o4", "chatgpt")

CATEGORIES = (
    "hate",
    "hate/threatening",
    "harassment",
    "harassment/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_IMAGE_CATEGORIES = frozenset(
    ("self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence", "violence/graphic")
)
_TRIGGERS = {"kill": "violence", "hate": "harassment"}
MODERATION_MODELS = {
    "omni-moderation-latest": "omni-moderation-2024-09-26",
    "text-moderation-latest": "text-moderation-007",
    "text-moderation-stable": "text-moderation-007",
}


# ------------------------------------------------------------------------ completions


def prompts(body: dict[str, Any]) -> list[str]:
    """The prompts of a request: a string, a list of strings, token ids, or a list of token id lists."""
    value = body.get("prompt")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        return [" ".join(map(str, value))]
    if isinstance(value, list):
        return [
            p if isinstance(p, str) else " ".join(map(str, p)) for p in value if isinstance(p, str | list)
        ]
    return []


def _answer(prompt_text: str, body: dict[str, Any]) -> Answer:
    prompt = Prompt(message_texts=[prompt_text], last_user_text=prompt_text)
    limit = body.get("max_tokens")
    prompt.max_tokens = limit if isinstance(limit, int) else DEFAULT_MAX_TOKENS
    stop = body.get("stop")
    prompt.stop = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    return content.plan(prompt)


def _answers(body: dict[str, Any]) -> list[tuple[str, Answer]]:
    """(prompt, answer) for each of the ``n`` answers of each prompt, in OpenAI's choice order."""
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    return [(p, _answer(p, body)) for p in prompts(body) for _ in range(max(1, int(n or 1)))]


def completion_usage(body: dict[str, Any]) -> dict[str, Any]:
    prompt_tokens = sum(content.count_tokens(p) for p in prompts(body))
    completion_tokens = sum(content.count_tokens(a.text) for _, a in _answers(body))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def check_completion_model(model: str) -> None:
    if model.startswith(_CHAT_PREFIXES) and "instruct" not in model:
        raise ApiError(
            404,
            "This is a chat model and not supported in the v1/completions endpoint. "
            "Did you mean to use v1/chat/completions?",
            param="model",
        )


def completion(body: dict[str, Any], usage: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """(the answer, its stream events): the stream when ``stream`` is true, else no events."""
    completion_id = f"cmpl-{new_id()[:29]}"
    created = int(time.time())
    model = str(body.get("model"))
    echo = body.get("echo") is True
    choices: list[dict[str, Any]] = [
        {
            "text": (prompt if echo else "") + answer.text,
            "index": i,
            "logprobs": None,
            "finish_reason": FINISH[answer.finish],
        }
        for i, (prompt, answer) in enumerate(_answers(body))
    ]
    doc = {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": usage,
    }
    if body.get("stream") is not True:
        return doc, []
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk: dict[str, Any] = {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    events = []
    for choice in choices:
        for piece in content.stream_pieces(str(choice["text"])):
            events.append(
                event([{"text": piece, "index": choice["index"], "logprobs": None, "finish_reason": None}])
            )
        last = {
            "text": "",
            "index": choice["index"],
            "logprobs": None,
            "finish_reason": choice["finish_reason"],
        }
        events.append(event([last]))
    if include_usage:
        events.append(event([], usage=usage))
    events.append(b"data: [DONE]\n\n")
    return doc, events


# ------------------------------------------------------------------------ moderations


def moderation_inputs(body: dict[str, Any]) -> list[tuple[str, int]]:
    """(text, images) of each result's input."""
    value = body.get("input")
    if isinstance(value, str):
        return [(value, 0)]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [(v, 0) for v in value]
    if isinstance(value, list):
        texts = [str(p.get("text", "")) for p in value if isinstance(p, dict) and p.get("type") == "text"]
        images = sum(1 for p in value if isinstance(p, dict) and p.get("type") == "image_url")
        return [(" ".join(texts), images)]
    return []


def moderation(body: dict[str, Any]) -> dict[str, Any]:
    requested = str(body.get("model") or "omni-moderation-latest")
    inputs = moderation_inputs(body)
    if not inputs:
        raise ApiError(400, "'$.input' is invalid.", param="input")
    if any(images for _, images in inputs) and not requested.startswith("omni-moderation"):
        raise ApiError(400, f"Model {requested} does not support image inputs.", param="input")
    return {
        "id": f"modr-{new_id()[:24]}",
        "model": MODERATION_MODELS.get(requested, requested),
        "results": [_result(text, images) for text, images in inputs],
    }


def _result(text: str, images: int) -> dict[str, Any]:
    lowered = text.lower()
    hit = {category for word, category in _TRIGGERS.items() if word in lowered}
    applied: dict[str, list[str]] = {}
    for category in CATEGORIES:
        kinds = ["text"] if text else []
        if images and category in _IMAGE_CATEGORIES:
            kinds.append("image")
        applied[category] = kinds
    return {
        "flagged": bool(hit),
        "categories": {c: c in hit for c in CATEGORIES},
        "category_scores": {c: 0.9 if c in hit else 0.0001 for c in CATEGORIES},
        "category_applied_input_types": applied,
    }
