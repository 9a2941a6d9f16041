"""Validating a Responses API request the same way for every provider.

As ``params.check_chat_request`` for chat: OpenAI's documented types and ranges
(``CreateResponse`` in OpenAI's OpenAPI spec, and the few rules the real API adds, such as
``max_output_tokens`` >= 16), refused in OpenAI's words and codes before any translation, so
that every provider refuses the same bad request the same way. Also refused here, for every
provider OpenAI's own included: what the gateway does not serve and must not pass on
(``background`` responses, whose result the gateway could not charge, and ``conversation``
ids, which name objects of the gateway's own OpenAI account, not the workspace's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import GatewayError
from .params import check_scalars, type_error, unsupported

_INT64 = 2**63
_SCALARS: dict[str, tuple[type, float | None, float | None]] = {
    "temperature": (float, 0, 2),
    "top_p": (float, 0, 1),
    "max_output_tokens": (int, 16, None),
    "max_tool_calls": (int, 1, None),
    "top_logprobs": (int, 0, 20),
    "stream": (bool, None, None),
    "store": (bool, None, None),
    "parallel_tool_calls": (bool, None, None),
    "background": (bool, None, None),
}
_METADATA_KEYS = 16
_METADATA_KEY_CHARS = 64
_METADATA_VALUE_CHARS = 512


def check_responses_request(body: Mapping[str, Any]) -> None:
    """Refuse what OpenAI refuses in a Responses request, as OpenAI answers it."""
    inp = body.get("input")
    if inp is None and body.get("previous_response_id") is None and body.get("prompt") is None:
        raise GatewayError(400, "missing_required_parameter", "Missing required parameter: 'input'.", "input")
    if inp is not None and not isinstance(inp, str | list):
        raise type_error("input", "a string or an array", inp)
    check_scalars(body, _SCALARS)
    for name in ("instructions", "previous_response_id", "user", "safety_identifier", "prompt_cache_key"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise type_error(name, "a string", value)
    for name in ("text", "reasoning", "stream_options"):
        value = body.get(name)
        if value is not None and not isinstance(value, dict):
            raise type_error(name, "an object", value)
    for name in ("tools", "include"):
        value = body.get(name)
        if value is not None and not isinstance(value, list):
            raise type_error(name, "an array", value)
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise GatewayError(
            400,
            "invalid_value",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    _check_metadata(body.get("metadata"))
    if body.get("background") is True:
        unsupported("background", "background responses are not supported by this gateway")
    if body.get("conversation") is not None:
        unsupported(
            "conversation", "conversations are not supported by this gateway; use previous_response_id"
        )


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise type_error("metadata", "an object", metadata)
    if len(metadata) > _METADATA_KEYS:
        raise GatewayError(
            400,
            "invalid_value",
            f"Invalid 'metadata': too many properties. Expected an object with at most {_METADATA_KEYS} "
            f"properties, but got an object with {len(metadata)} properties instead.",
            "metadata",
        )
    for key, value in metadata.items():
        if len(key) > _METADATA_KEY_CHARS:
            raise GatewayError(
                400,
                "invalid_value",
                f"Invalid 'metadata': key too long. Expected keys of at most {_METADATA_KEY_CHARS} "
                "characters.",
                "metadata",
            )
        if not isinstance(value, str):
            raise type_error(f"metadata.{key}", "a string", value)
        if len(value) > _METADATA_VALUE_CHARS:
            raise GatewayError(
                400,
                "invalid_value",
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                f"{_METADATA_VALUE_CHARS}, but got a string with length {len(value)} instead.",
                f"metadata.{key}",
            )
