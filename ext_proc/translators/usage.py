"""Every provider format's usage object, read in one place and never trusted blindly.

A provider's token counts decide what a workspace is charged, so each count must be a
non-negative integer no larger than :data:`MAX_TOKENS` (JSON's ``12.0`` is accepted as 12).
A count that is not -- negative, fractional, a string, absurdly large -- makes the whole usage
object *rejected*: :attr:`Usage.rejected` says why, and the exchange charges the request from
the gateway's own estimate instead (``usage_estimated`` and ``usage_rejected`` in the usage
record). Rejecting the object rather than clamping one count keeps the charge coherent: a
provider that lies about one number is not believed about the others.

Each reader returns ``None`` when the provider sent no usage at all (the exchange then
estimates too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .base import Usage

# Far above any context window times any ``n``: a count beyond it is an error, not a bill.
MAX_TOKENS = 100_000_000


class _Counts:
    """Reads counts from one usage object, noting the first one that cannot be charged."""

    __slots__ = ("problem",)

    def __init__(self) -> None:
        self.problem = ""

    def get(self, raw: Mapping[str, Any], name: str) -> int:
        value = raw.get(name)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self._reject(name, value, "is not a number")
        if isinstance(value, float) and not value.is_integer():
            return self._reject(name, value, "is not an integer")
        if value < 0:
            return self._reject(name, value, "is negative")
        if value > MAX_TOKENS:
            return self._reject(name, value, f"is over {MAX_TOKENS}")
        return int(value)

    def _reject(self, name: str, value: Any, why: str) -> int:
        if not self.problem:
            self.problem = f"provider usage {name}={_short(value)} {why}"
        return 0

    def usage(self, usage: Usage) -> Usage:
        if self.problem:
            return Usage(images=usage.images, rejected=self.problem)
        return usage


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def openai(obj: Mapping[str, Any], images: int = 0) -> Usage | None:
    """OpenAI's usage object (chat, embeddings, images or the Responses API) of a response or chunk.

    ``images``: the images the answer holds, which its pair counted (images_openai.py). An
    image response without ``usage`` is complete: images are priced per image.
    """
    raw = obj.get("usage")
    if not isinstance(raw, Mapping):
        return Usage(images=images) if images else None
    counts = _Counts()
    prompt = counts.get(raw, "prompt_tokens") if "prompt_tokens" in raw else counts.get(raw, "input_tokens")
    completion = (
        counts.get(raw, "completion_tokens")
        if "completion_tokens" in raw
        else counts.get(raw, "output_tokens")
    )
    prompt_details = _mapping(raw.get("prompt_tokens_details") or raw.get("input_tokens_details"))
    completion_details = _mapping(raw.get("completion_tokens_details") or raw.get("output_tokens_details"))
    return counts.usage(
        Usage(
            input_tokens=prompt,
            cached_input_tokens=counts.get(prompt_details, "cached_tokens"),
            output_tokens=completion,
            reasoning_tokens=counts.get(completion_details, "reasoning_tokens"),
            images=images,
        )
    )


def anthropic(raw: Any) -> Usage | None:
    """Anthropic's usage (a message's, or the merge of a stream's): cached and created cache
    tokens are prompt tokens too."""
    if not isinstance(raw, Mapping) or not raw:
        return None
    counts = _Counts()
    cached = counts.get(raw, "cache_read_input_tokens")
    prompt = counts.get(raw, "input_tokens") + cached + counts.get(raw, "cache_creation_input_tokens")
    reasoning = counts.get(_mapping(raw.get("output_tokens_details")), "thinking_tokens")
    return counts.usage(Usage(prompt, cached, counts.get(raw, "output_tokens"), reasoning))


def gemini(raw: Any) -> Usage | None:
    """Gemini's ``usageMetadata``: tool-use prompt tokens are input, thoughts are output."""
    if not isinstance(raw, Mapping):
        return None
    counts = _Counts()
    prompt = counts.get(raw, "promptTokenCount") + counts.get(raw, "toolUsePromptTokenCount")
    reasoning = counts.get(raw, "thoughtsTokenCount")
    output = counts.get(raw, "candidatesTokenCount") + reasoning
    return counts.usage(Usage(prompt, counts.get(raw, "cachedContentTokenCount"), output, reasoning))


# A month of audio: a longer duration is an error, not a bill.
MAX_AUDIO_SECONDS = 31 * 24 * 3600


def audio_ms(seconds: Any, name: str) -> tuple[int, str]:
    """(milliseconds, why refused) of a provider's duration in seconds, rounded up."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return 0, f"provider usage {name}={_short(seconds)} is not a number"
    if not 0 <= seconds <= MAX_AUDIO_SECONDS:  # NaN fails both comparisons
        return 0, f"provider usage {name}={_short(seconds)} is out of range"
    return math.ceil(seconds * 1000), ""


def openai_transcription(doc: Mapping[str, Any]) -> Usage | None:
    """A transcription's (or translation's) usage: the seconds of a duration usage (whisper-1),
    else the answer's ``duration`` (verbose_json); a token usage (gpt-4o-transcribe) keeps its
    tokens and has no duration. None when the answer says nothing."""
    raw = doc.get("usage")
    raw = raw if isinstance(raw, Mapping) else {}
    tokens = Usage()
    if raw.get("type") == "tokens":
        counts = _Counts()
        details = _mapping(raw.get("input_token_details"))
        tokens = counts.usage(
            Usage(
                input_tokens=counts.get(raw, "input_tokens"),
                output_tokens=counts.get(raw, "output_tokens"),
                cached_input_tokens=counts.get(details, "cached_tokens"),
            )
        )
        if tokens.rejected:
            return tokens
    if raw.get("type") == "duration":
        name, seconds = "seconds", raw.get("seconds")
    elif "duration" in doc:
        name, seconds = "duration", doc["duration"]
    else:
        return tokens if raw else None
    ms, problem = audio_ms(seconds, name)
    if problem:
        return Usage(rejected=problem)
    tokens.audio_ms = ms
    return tokens
