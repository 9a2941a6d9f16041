"""OpenAI's chat parameter rules, checked once before any translation (issue 12 item 3).

The end-to-end test (tests/e2e/test_request_fidelity.py) compares the gateway's refusals
with OpenAI's (its simulator) for every provider; this covers the edges of each range.
"""

from __future__ import annotations

from typing import Any

import pytest

from ext_proc.errors import GatewayError
from ext_proc.translators.params import check_chat_request

CHAT = [{"role": "user", "content": "hi"}]

VALID: list[dict[str, Any]] = [
    {},
    {"temperature": 0, "top_p": 0, "n": 1, "presence_penalty": -2, "frequency_penalty": 2},
    {"temperature": 2, "top_p": 1, "n": 128, "presence_penalty": 2, "frequency_penalty": -2},
    {"temperature": 1.25, "max_tokens": 1, "max_completion_tokens": 100000},
    {"logprobs": True, "top_logprobs": 0},
    {"logprobs": False, "top_logprobs": 20},
    {"seed": -(2**63), "stop": "END"},
    {"seed": 2**63 - 1, "stop": ["a", "b", "c", "d"]},
    {"stream": True, "stream_options": {"include_usage": True}},
    {"temperature": None, "n": None, "stop": None, "stream_options": None},
    {"parallel_tool_calls": False, "store": True},
]

INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"temperature": 2.0001}, "invalid_value", "temperature"),
    ({"temperature": True}, "invalid_type", "temperature"),
    ({"top_p": -0.01}, "invalid_value", "top_p"),
    ({"n": 129}, "invalid_value", "n"),
    ({"n": 2.0}, "invalid_type", "n"),
    ({"presence_penalty": 2.01}, "invalid_value", "presence_penalty"),
    ({"frequency_penalty": "0"}, "invalid_type", "frequency_penalty"),
    ({"max_tokens": 0}, "invalid_value", "max_tokens"),
    ({"max_completion_tokens": True}, "invalid_type", "max_completion_tokens"),
    ({"top_logprobs": -1}, "invalid_value", "top_logprobs"),
    ({"logprobs": 1}, "invalid_type", "logprobs"),
    ({"seed": 2**63}, "invalid_value", "seed"),
    ({"stop": ["a", 1]}, "invalid_type", "stop"),
    ({"stop": ["a"] * 5}, "invalid_value", "stop"),
    ({"stream_options": {"include_usage": True}}, "invalid_value", "stream_options"),
    ({"stream": False, "stream_options": {"include_usage": True}}, "invalid_value", "stream_options"),
    ({"stream": True, "stream_options": "usage"}, "invalid_type", "stream_options"),
    ({"parallel_tool_calls": "no"}, "invalid_type", "parallel_tool_calls"),
    ({"messages": "hi"}, "invalid_type", "messages"),
    ({"messages": []}, "invalid_value", "messages"),
]


@pytest.mark.parametrize("extra", VALID)
def test_valid_parameters_pass(extra: dict[str, Any]) -> None:
    check_chat_request({"model": "m", "messages": CHAT, **extra})


@pytest.mark.parametrize(("extra", "code", "param"), INVALID)
def test_invalid_parameters_are_refused_with_openai_code_and_param(
    extra: dict[str, Any], code: str, param: str
) -> None:
    with pytest.raises(GatewayError) as info:
        check_chat_request({"model": "m", "messages": CHAT, **extra})
    assert (info.value.status, info.value.code, info.value.param) == (400, code, param)
    assert param in info.value.message


def test_missing_messages() -> None:
    with pytest.raises(GatewayError) as info:
        check_chat_request({"model": "m"})
    assert (info.value.code, info.value.param) == ("missing_required_parameter", "messages")
