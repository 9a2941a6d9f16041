"""The chat completions endpoint: its checks, how a stream is asked for, its token estimates and its price."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from ext_proc.endpoints.base import RequestBody
from ext_proc.endpoints.chat_completions import ENDPOINT as CHAT
from ext_proc.errors import GatewayError
from ext_proc.metering import Prices, credits
from ext_proc.translators.base import Usage

USER = {"role": "user", "content": "hi"}


def test_declares_a_streamed_json_post() -> None:
    assert (CHAT.name, CHAT.paths, CHAT.methods) == ("chat_completions", ("/v1/chat/completions",), {"POST"})
    assert CHAT.request_body is RequestBody.JSON and CHAT.streams and CHAT.operation == "chat"


def test_check_is_openais() -> None:
    CHAT.check({"model": "m", "messages": [USER], "temperature": 2})
    with pytest.raises(GatewayError) as info:
        CHAT.check({"model": "m", "messages": [USER], "temperature": 3})
    assert (info.value.status, info.value.code, info.value.param) == (400, "invalid_value", "temperature")


@pytest.mark.parametrize(
    ("body", "streaming"),
    [
        ({}, (False, False)),
        ({"stream": False, "stream_options": {"include_usage": True}}, (False, False)),
        ({"stream": "true"}, (False, False)),  # only the boolean asks (check refuses the string)
        ({"stream": True}, (True, False)),
        ({"stream": True, "stream_options": {"include_usage": False}}, (True, False)),
        ({"stream": True, "stream_options": {"include_usage": True}}, (True, True)),
        ({"stream": True, "stream_options": "include_usage"}, (True, False)),
    ],
)
def test_streaming(body: dict[str, Any], streaming: tuple[bool, bool]) -> None:
    assert CHAT.streaming(body) == streaming


# -- token estimates (moved from test_limits.py, where limits.estimate_tokens was) -------------


def test_reservation_counts_text_parts_and_output_allowance() -> None:
    chat: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "a" * 400}],
        "max_tokens": 50,
    }
    assert CHAT.reservation(chat) == 4 + 100 + 50
    chat["n"] = 2
    assert CHAT.reservation(chat) == 4 + 100 + 100
    parts = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "b" * 40},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}},
                ],
            }
        ],
        "max_completion_tokens": 10,
        "max_tokens": 999,
    }
    assert CHAT.reservation(parts) == 4 + 10 + 256 + 10
    assert CHAT.reservation({"messages": [], "max_tokens": True}) == 1024  # a bool is not a count
    assert CHAT.reservation({}) == 1


def test_input_counts_tool_calls_and_tool_definitions() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    body = {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}], "tools": tools}
    chars = len(orjson.dumps(call)) + len(orjson.dumps(tools))
    assert CHAT.prompt_tokens(body) == 4 + -(-chars // 4)
    assert CHAT.input_tokens({"messages": []}) == 1  # the charge never estimates 0 input
    assert CHAT.prompt_tokens({"messages": "hi"}) == 0 and CHAT.output_allowance({"messages": "hi"}) == 0


def test_served_chars_of_a_completion_and_of_chunks() -> None:
    completion = {
        "choices": [
            {"message": {"role": "assistant", "content": "hello", "refusal": None}},
            {"message": {"content": [{"type": "text", "text": "abc"}], "refusal": "no"}},
        ]
    }
    assert CHAT.served_chars(completion) == 5 + 3 + 2
    chunk = {
        "choices": [
            {
                "delta": {
                    "reasoning_content": "hmm",
                    "tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}],
                }
            }
        ]
    }
    assert CHAT.served_chars(chunk) == 3 + 1 + 7
    assert CHAT.served_chars({"choices": [], "usage": {"prompt_tokens": 5}}) == 0
    assert CHAT.served_chars(["not", "a", "chunk"]) == 0 and CHAT.served_chars({"choices": "x"}) == 0


def test_credits_are_input_and_output_tokens() -> None:
    prices = Prices(Decimal("2"), Decimal("0.5"), Decimal("8"), Decimal("0.04"))
    usage = Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=100, images=3)
    expected = (600 * 2 + Decimal("400") * Decimal("0.5") + 100 * 8) / 1_000_000
    assert (
        credits(usage, prices, Decimal(1), CHAT.meters) == expected
    )  # an image count is not chat's to price
    assert credits(usage, prices, Decimal("1.5"), CHAT.meters) == expected * Decimal("1.5")
    unpriced_cache = Prices(Decimal("2"), None, Decimal("8"))
    assert credits(usage, unpriced_cache, Decimal(1), CHAT.meters) == (1000 * 2 + 100 * 8) / Decimal(
        1_000_000
    )


def test_its_answers_are_openais() -> None:
    from ext_proc.endpoints.base import LastEvent
    from tests.conformance import assert_openai

    assert CHAT.error_body(429, "rate_limit_exceeded", "slow down") == (
        b'{"error":{"type":"requests","code":"rate_limit_exceeded","message":"slow down","param":null}}'
    )
    assert CHAT.restyle_error(502, b'{"error":{}}') == b'{"error":{}}'
    final = orjson.loads(CHAT.stream_last(LastEvent("chatcmpl-1", "req", 5, "m", None)))
    assert_openai(final, "CreateChatCompletionStreamResponse")
    assert final["choices"][0]["finish_reason"] == "stop" and final["id"] == "chatcmpl-1"
    usage = orjson.loads(CHAT.stream_last(LastEvent("", "req", 5, "m", Usage(3, 0, 2))))
    assert_openai(usage, "CreateChatCompletionStreamResponse")
    assert (usage["id"], usage["choices"], usage["usage"]["total_tokens"]) == ("chatcmpl-req", [], 5)
    assert CHAT.stream_tail(b'{"a":1}', "0.5") == b'data: {"a":1,"credits_used":0.5}\n\ndata: [DONE]\n\n'


# -- stored files (file_id): where they are named and how one is written inline ----------------


def _with_parts(*parts: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": list(parts)}],
    }


def test_only_file_parts_with_a_file_id_name_stored_files() -> None:
    body = _with_parts(
        {"type": "text", "text": "x"},
        {"type": "file", "file": {"file_id": "file-a"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    )
    refs = CHAT.file_refs(body)
    assert [(r.at, r.file_id) for r in refs] == [("messages[1].content[1].file.file_id", "file-a")]
    assert refs[0].part is body["messages"][1]["content"][1]
    with pytest.raises(GatewayError) as refused:
        CHAT.file_refs(_with_parts({"type": "file", "file": {"file_id": 7}}))
    assert refused.value.status == 400 and refused.value.param == "messages[1].content[0].file.file_id"
    assert CHAT.file_refs({"model": "m", "messages": "not a list"}) == []


def test_a_document_becomes_file_data_and_an_image_an_image_part() -> None:
    doc: dict[str, Any] = {"type": "file", "file": {"file_id": "file-a"}}
    CHAT.inline_file(doc, "report.pdf", "application/pdf", "data:application/pdf;base64,AA==")
    assert doc == {
        "type": "file",
        "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,AA=="},
    }
    image: dict[str, Any] = {"type": "file", "file": {"file_id": "file-b"}}
    CHAT.inline_file(image, "dot.png", "image/png", "data:image/png;base64,AA==")
    assert image == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
    CHAT.check(_with_parts(doc, image))  # what the translators read: a valid chat request
