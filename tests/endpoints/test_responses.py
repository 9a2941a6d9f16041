"""The Responses endpoint: its checks, how a stream is asked for, its token estimates, its price,
and how its streams end (the charge in the last event's ``response``, no ``[DONE]``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from ext_proc import endpoints
from ext_proc.endpoints.base import RequestBody
from ext_proc.endpoints.responses import ENDPOINT as RESPONSES
from ext_proc.errors import GatewayError
from ext_proc.metering import Prices, credits
from ext_proc.translators.base import Usage
from tests.conformance import assert_openai


def test_declares_a_streamed_json_post() -> None:
    assert (RESPONSES.name, RESPONSES.paths, RESPONSES.methods) == ("responses", ("/v1/responses",), {"POST"})
    assert RESPONSES.request_body is RequestBody.JSON and RESPONSES.streams and RESPONSES.operation == "chat"
    assert endpoints.by_path("/v1/responses") is RESPONSES


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "input": "hi"},
        {"model": "m", "input": [{"role": "user", "content": "hi"}], "temperature": 2, "top_p": 1},
        {"model": "m", "previous_response_id": "resp_1"},  # the input may be the stored conversation
        {"model": "m", "input": "x", "max_output_tokens": 16, "metadata": {"k": "v" * 512}},
        {"model": "m", "input": "x", "stream": True, "stream_options": {"include_obfuscation": False}},
    ],
)
def test_check_accepts_what_openai_accepts(body: dict[str, Any]) -> None:
    RESPONSES.check(body)


REFUSED: list[tuple[str, dict[str, Any], int, str, str]] = [
    ("no input", {"model": "m"}, 400, "missing_required_parameter", "input"),
    ("input of the wrong type", {"model": "m", "input": 3}, 400, "invalid_type", "input"),
    (
        "temperature above 2",
        {"model": "m", "input": "x", "temperature": 2.5},
        400,
        "invalid_value",
        "temperature",
    ),
    ("top_p above 1", {"model": "m", "input": "x", "top_p": 1.5}, 400, "invalid_value", "top_p"),
    (
        "max_output_tokens below 16",
        {"model": "m", "input": "x", "max_output_tokens": 8},
        400,
        "invalid_value",
        "max_output_tokens",
    ),
    ("a string for a boolean", {"model": "m", "input": "x", "store": "yes"}, 400, "invalid_type", "store"),
    (
        "instructions not a string",
        {"model": "m", "input": "x", "instructions": ["a"]},
        400,
        "invalid_type",
        "instructions",
    ),
    ("tools not an array", {"model": "m", "input": "x", "tools": {}}, 400, "invalid_type", "tools"),
    (
        "stream_options without stream",
        {"model": "m", "input": "x", "stream_options": {}},
        400,
        "invalid_value",
        "stream_options",
    ),
    (
        "metadata with 17 keys",
        {"model": "m", "input": "x", "metadata": {str(i): "v" for i in range(17)}},
        400,
        "invalid_value",
        "metadata",
    ),
    (
        "metadata of numbers",
        {"model": "m", "input": "x", "metadata": {"k": 1}},
        400,
        "invalid_type",
        "metadata.k",
    ),
    (
        "a background response",
        {"model": "m", "input": "x", "background": True},
        400,
        "unsupported_parameter",
        "background",
    ),
    (
        "a conversation",
        {"model": "m", "input": "x", "conversation": "conv_1"},
        400,
        "unsupported_parameter",
        "conversation",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_check_refuses_what_openai_refuses(body: dict[str, Any], status: int, code: str, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        RESPONSES.check(body)
    assert (info.value.status, info.value.code, info.value.param) == (status, code, param)


@pytest.mark.parametrize(
    ("body", "streaming"),
    [
        ({}, (False, False)),
        ({"stream": False}, (False, False)),
        ({"stream": "true"}, (False, False)),
        ({"stream": True}, (True, False)),
    ],
)
def test_streaming(body: dict[str, Any], streaming: tuple[bool, bool]) -> None:
    assert RESPONSES.streaming(body) == streaming


def test_reservation_counts_instructions_items_tools_and_the_output_limit() -> None:
    assert RESPONSES.reservation({"model": "m", "input": "a" * 400}) == 4 + 100 + 1024
    body: dict[str, Any] = {
        "model": "m",
        "instructions": "b" * 40,
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "a" * 40},
                    {"type": "input_image", "image_url": "x"},
                ],
            },
            {"type": "function_call", "call_id": "c", "name": "f" * 4, "arguments": "{" * 36},
            {"type": "function_call_output", "call_id": "c", "output": "o" * 40},
        ],
        "max_output_tokens": 100,
    }
    assert RESPONSES.reservation(body) == 3 * 4 + 256 + 160 // 4 + 100
    body["tools"] = [{"type": "function", "name": "f"}]
    assert RESPONSES.prompt_tokens(body) == 3 * 4 + 256 + -(-(160 + len(orjson.dumps(body["tools"]))) // 4)


def test_served_chars_reads_answers_and_delta_events_only() -> None:
    answer = {
        "object": "response",
        "output": [
            {
                "type": "message",
                "content": [{"type": "output_text", "text": "abcd"}, {"type": "refusal", "refusal": "no"}],
            },
            {"type": "function_call", "name": "f", "arguments": "{}"},
            {"type": "reasoning", "summary": []},
        ],
    }
    assert RESPONSES.served_chars(answer) == 4 + 2 + 1 + 2
    assert RESPONSES.served_chars({"type": "response.output_text.delta", "delta": "abc"}) == 3
    assert RESPONSES.served_chars({"type": "response.function_call_arguments.delta", "delta": "{}"}) == 2
    assert (
        RESPONSES.served_chars(
            {"type": "response.output_item.added", "item": {"type": "function_call", "name": "fn"}}
        )
        == 2
    )
    # .done events and the final response repeat what the deltas carried: not counted again
    assert RESPONSES.served_chars({"type": "response.output_text.done", "text": "abc"}) == 0
    assert RESPONSES.served_chars({"type": "response.completed", "response": answer}) == 0


def test_input_and_output_tokens_are_priced() -> None:
    prices = Prices(Decimal("1"), Decimal("0.5"), Decimal("2"), None)
    usage = Usage(input_tokens=1000, cached_input_tokens=200, output_tokens=100)
    # 800 at 1, 200 cached at 0.5 and 100 out at 2, per million
    assert credits(usage, prices, Decimal(1), RESPONSES.meters) == Decimal("0.0011")


def test_the_charge_goes_into_the_last_events_response() -> None:
    last = orjson.dumps(
        {
            "type": "response.completed",
            "sequence_number": 7,
            "response": {"id": "resp_1", "status": "completed"},
        }
    )
    tail = RESPONSES.stream_tail(last, "0.000375")
    assert tail.startswith(b"event: response.completed\ndata: ") and tail.endswith(b"\n\n")
    assert b"[DONE]" not in tail
    doc = orjson.loads(tail.split(b"data: ", 1)[1])
    assert doc == {
        "type": "response.completed",
        "sequence_number": 7,
        "response": {"id": "resp_1", "status": "completed", "credits_used": 0.000375},
    }
    assert b'"credits_used":0.000375}' in tail  # the exact decimal digits, not a float's


def test_an_error_event_carries_the_charge_at_its_top() -> None:
    last = orjson.dumps(
        {"type": "error", "sequence_number": 3, "code": "upstream_error", "message": "x", "param": None}
    )
    doc = orjson.loads(RESPONSES.stream_tail(last, "0").split(b"data: ", 1)[1])
    assert doc["credits_used"] == 0 and doc["code"] == "upstream_error"
    assert_openai(doc, "ResponseErrorEvent")


# -- stored files (file_id): where they are named and how one is written inline ----------------


def test_input_files_and_images_with_a_file_id_name_stored_files() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "plain text"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "x"},
                    {"type": "input_file", "file_id": "file-a"},
                    {"type": "input_image", "file_id": "file-b", "detail": "high"},
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,AA==",
                        "filename": "a.pdf",
                    },
                    {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
                ],
            },
        ],
    }
    refs = RESPONSES.file_refs(body)
    assert [(r.at, r.file_id) for r in refs] == [
        ("input[1].content[1].file_id", "file-a"),
        ("input[1].content[2].file_id", "file-b"),
    ]
    assert RESPONSES.file_refs({"model": "m", "input": "text only"}) == []
    with pytest.raises(GatewayError) as refused:
        RESPONSES.file_refs(
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": ""}]}]}
        )
    assert refused.value.param == "input[0].content[0].file_id"


def test_an_inlined_file_is_openais_input_file_or_input_image() -> None:
    pdf_uri, png_uri = "data:application/pdf;base64,AA==", "data:image/png;base64,AA=="
    doc: dict[str, Any] = {"type": "input_file", "file_id": "file-a", "detail": "low"}
    RESPONSES.inline_file(doc, "report.pdf", "application/pdf", pdf_uri)
    assert doc == {"type": "input_file", "filename": "report.pdf", "file_data": pdf_uri, "detail": "low"}
    image: dict[str, Any] = {"type": "input_image", "file_id": "file-b", "detail": "high"}
    RESPONSES.inline_file(image, "dot.png", "image/png", png_uri)
    assert image == {"type": "input_image", "image_url": png_uri, "detail": "high"}
    named_as_file: dict[str, Any] = {"type": "input_file", "file_id": "file-c"}
    RESPONSES.inline_file(named_as_file, "dot.png", "image/png", png_uri)
    assert named_as_file == {
        "type": "input_image",
        "image_url": png_uri,
        "detail": "auto",
    }  # the bytes decide
    for part, schema in (
        (doc, "InputFileContent"),
        (image, "InputImageContent"),
        (named_as_file, "InputImageContent"),
    ):
        assert_openai(part, schema)
    RESPONSES.check({"model": "m", "input": [{"role": "user", "content": [doc, image]}]})
