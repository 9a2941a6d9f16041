"""The Messages endpoint (Anthropic's API): its checks, token estimates, price, and its answers in
Anthropic's shapes (errors, and a stream ending with ``message_stop`` carrying the credits)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from ext_proc.endpoints.anthropic_count_tokens import ENDPOINT as COUNT
from ext_proc.endpoints.anthropic_messages import ENDPOINT as MESSAGES
from ext_proc.endpoints.base import LastEvent, RequestBody
from ext_proc.errors import GatewayError, envelope
from ext_proc.metering import Prices, credits
from ext_proc.translators.base import Usage
from tests.conformance import providers

USER = {"role": "user", "content": "hi"}
BODY: dict[str, Any] = {"model": "m", "max_tokens": 100, "messages": [USER]}


def assert_anthropic(raw: bytes) -> dict[str, Any]:
    problems = providers().response("anthropic-response", raw)
    assert not problems, problems
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


def test_declares_a_streamed_json_post_and_a_count() -> None:
    assert (MESSAGES.name, MESSAGES.paths, MESSAGES.methods) == ("messages", ("/v1/messages",), {"POST"})
    assert MESSAGES.request_body is RequestBody.JSON and MESSAGES.streams and MESSAGES.fallback
    assert (COUNT.name, COUNT.paths, COUNT.streams, COUNT.fallback) == (
        "count_tokens",
        ("/v1/messages/count_tokens",),
        False,
        False,
    )


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        ({"max_tokens": None}, "missing_required_parameter", "max_tokens"),
        ({"max_tokens": "5"}, "invalid_type", "max_tokens"),
        ({"max_tokens": 0}, "invalid_value", "max_tokens"),
        ({"messages": None}, "missing_required_parameter", "messages"),
        ({"messages": []}, "invalid_value", "messages"),
        ({"messages": "hi"}, "invalid_type", "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "invalid_value", "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "missing_required_parameter", "messages.0.content"),
        (
            {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "invalid_type",
            "messages.0.content.0",
        ),
        ({"system": [{"type": "image"}]}, "invalid_type", "system"),
        ({"temperature": 1.5}, "invalid_value", "temperature"),
        ({"top_p": "0.5"}, "invalid_type", "top_p"),
        ({"top_k": -1}, "invalid_value", "top_k"),
        ({"stop_sequences": "END"}, "invalid_type", "stop_sequences"),
        ({"stream": "yes"}, "invalid_type", "stream"),
        ({"tools": [{"input_schema": {}}]}, "missing_required_parameter", "tools.0.name"),
        ({"tool_choice": {"type": "required"}}, "invalid_value", "tool_choice.type"),
        ({"tool_choice": {"type": "tool"}}, "missing_required_parameter", "tool_choice.name"),
        ({"thinking": {"budget_tokens": 2000}}, "invalid_type", "thinking.type"),
        ({"thinking": {"type": "enabled"}}, "missing_required_parameter", "thinking.budget_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 500}}, "invalid_value", "thinking.budget_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, "invalid_value", "max_tokens"),
    ],
)
def test_check_refuses_what_anthropic_refuses(change: dict[str, Any], code: str, param: str) -> None:
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
    with pytest.raises(GatewayError) as info:
        MESSAGES.check(body)
    assert (info.value.status, info.value.code, info.value.param) == (400, code, param)
    assert info.value.message.startswith(f"{param}: ")


def test_check_accepts_a_full_request_and_leaves_unknown_fields_to_the_provider() -> None:
    MESSAGES.check(
        {
            **BODY,
            "max_tokens": 4096,
            "system": [{"type": "text", "text": "terse"}],
            "messages": [USER, {"role": "assistant", "content": [{"type": "text", "text": "yo"}]}],
            "temperature": 1,
            "top_p": 0.5,
            "top_k": 3,
            "stop_sequences": ["END"],
            "stream": True,
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "f"},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "context_management": {"edits": []},
        }
    )
    for kind in ("disabled", "adaptive", "between_tools"):  # newer kinds are the provider's to judge
        MESSAGES.check({**BODY, "thinking": {"type": kind}})
    COUNT.check({"model": "m", "messages": [USER]})  # a count has no max_tokens


@pytest.mark.parametrize(
    ("body", "streaming"),
    [({}, (False, False)), ({"stream": True}, (True, False)), ({"stream": "true"}, (False, False))],
)
def test_streaming(body: dict[str, Any], streaming: tuple[bool, bool]) -> None:
    assert MESSAGES.streaming(body) == streaming


def test_estimates_count_text_tools_media_and_framing() -> None:
    body = {
        "model": "m",
        "max_tokens": 300,
        "system": "x" * 40,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "y" * 40}, {"type": "image", "source": {}}],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "fn", "input": {"a": 1}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "z" * 8}]},
        ],
        "tools": [{"name": "fn", "input_schema": {}}],
    }
    tool_chars = len("fn") + len(b'{"a":1}')
    tools_chars = len(orjson.dumps(body["tools"]))
    chars = 40 + 40 + tool_chars + 8 + tools_chars
    assert MESSAGES.prompt_tokens(body) == 3 * 4 + 256 + -(-chars // 4)
    assert MESSAGES.reservation(body) == MESSAGES.prompt_tokens(body) + 300
    assert MESSAGES.output_allowance({}) == 1024


def test_served_chars_of_a_message_and_of_events() -> None:
    message = {
        "type": "message",
        "content": [
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "t", "name": "fn", "input": {}},
        ],
    }
    assert MESSAGES.served_chars(message) == 5 + 2 + 2
    deltas = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "abc"}},
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a"'},
        },
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": "xy"}},
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 9}},
    ]
    assert [MESSAGES.served_chars(d) for d in deltas] == [3, 4, 2, 0]


def test_credits_are_input_and_output_tokens_and_a_count_is_free() -> None:
    prices = Prices(Decimal("3"), Decimal("0.3"), Decimal("15"))
    assert credits(Usage(1000, 200, 100), prices, Decimal(1), MESSAGES.meters) == Decimal("0.00396")
    assert credits(Usage(1000, 0, 0), prices, Decimal(1), COUNT.meters) == 0
    assert COUNT.reservation(BODY) == 1 and COUNT.input_tokens(BODY) == 0


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "invalid_request", "invalid_request_error"),
        (401, "invalid_api_key", "authentication_error"),
        (403, "model_not_allowed", "permission_error"),
        (404, "model_not_found", "not_found_error"),
        (405, "method_not_allowed", "invalid_request_error"),
        (409, "idempotency_key_in_use", "invalid_request_error"),
        (413, "request_too_large", "invalid_request_error"),
        (429, "insufficient_quota", "rate_limit_error"),
        (500, "internal_error", "api_error"),
        (502, "upstream_error", "api_error"),
        (503, "upstream_unavailable", "overloaded_error"),
        (504, "upstream_timeout", "timeout_error"),
    ],
)
def test_errors_are_in_anthropics_shape_with_the_gateways_code(status: int, code: str, kind: str) -> None:
    for endpoint in (MESSAGES, COUNT):
        doc = assert_anthropic(endpoint.error_body(status, code, "why", "param"))
        assert doc == {"type": "error", "error": {"type": kind, "code": code, "message": "why"}}
        restyled = endpoint.restyle_error(status, envelope(status, code, "why", "p"))
        assert orjson.loads(restyled) == doc


def test_a_stream_ends_with_message_stop_carrying_the_credits() -> None:
    last = MESSAGES.stream_last(LastEvent("msg_1", "req", 5, "m", Usage(1, 0, 1)))
    assert last == b'{"type":"message_stop"}'
    assert MESSAGES.stream_tail(last, "0.000375") == (
        b'event: message_stop\ndata: {"type":"message_stop","credits_used":0.000375}\n\n'
    )
    error = MESSAGES.stream_error(502, "upstream_error", "cut")
    assert MESSAGES.stream_tail(error, "0").startswith(b"event: error\ndata: {")
    assert_anthropic(error)
    assert MESSAGES.stream_event(b'{"type":"ping"}') == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_a_count_for_a_provider_that_cannot_count_is_the_estimate_marked_so() -> None:
    from anthropic.types import MessageTokensCount

    assert COUNT.local_for == {"openai", "gemini"}
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 40}]}
    answer = orjson.loads(COUNT.local_answer(body))
    assert (
        answer
        == {"input_tokens": MESSAGES.prompt_tokens(body), "estimated": True}
        == {"input_tokens": 14, "estimated": True}
    )
    assert MessageTokensCount.model_validate(answer).input_tokens == 14


def test_file_refs_are_documents_and_images_with_a_file_source_tool_results_included():
    def file_block(kind: str, file_id: object) -> dict[str, Any]:
        return {"type": kind, "source": {"type": "file", "file_id": file_id}}

    body = {
        "model": "m",
        "max_tokens": 8,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, file_block("document", "file-a")]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [file_block("image", "file-b")]}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}],
            },
        ],
    }
    for endpoint in (MESSAGES, COUNT):
        refs = endpoint.file_refs(body)
        assert [(r.at, r.file_id) for r in refs] == [
            ("messages[0].content[1].source.file_id", "file-a"),
            ("messages[2].content[0].content[0].source.file_id", "file-b"),
        ]
    assert MESSAGES.file_refs({"model": "m", "messages": "text"}) == []
    with pytest.raises(GatewayError) as bad:
        MESSAGES.file_refs({"messages": [{"role": "user", "content": [file_block("document", 7)]}]})
    assert (bad.value.status, bad.value.param) == (400, "messages[0].content[0].source.file_id")


def test_file_refs_include_images_in_a_content_documents_source():
    """A content document's blocks are read too (at any depth a tool result adds): missed, their
    file id would reach the provider as the client wrote it."""
    image = {"type": "image", "source": {"type": "file", "file_id": "file-c"}}
    document = {"type": "document", "source": {"type": "content", "content": [image]}}
    result = {"type": "tool_result", "tool_use_id": "t", "content": [document]}
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": [document, result]}]}
    assert [(r.at, r.file_id) for r in MESSAGES.file_refs(body)] == [
        ("messages[0].content[0].source.content[0].source.file_id", "file-c"),
        ("messages[0].content[1].content[0].source.content[0].source.file_id", "file-c"),
    ]


def test_inline_file_writes_the_block_anthropic_reads_without_files():
    doc = {
        "type": "document",
        "source": {"type": "file", "file_id": "f"},
        "context": "c",
        "cache_control": {"type": "ephemeral"},
    }
    MESSAGES.inline_file(doc, "report.pdf", "application/pdf", "data:application/pdf;base64,AA==")
    assert doc == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "AA=="},
        "context": "c",
        "cache_control": {"type": "ephemeral"},
        "title": "report.pdf",
    }
    text = {"type": "document", "source": {"type": "file", "file_id": "f"}, "title": "mine"}
    MESSAGES.inline_file(text, "notes.txt", "text/plain", "data:text/plain;base64,aGkgdGhlcmU=")
    assert text == {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "hi there"},
        "title": "mine",
    }
    image = {"type": "image", "source": {"type": "file", "file_id": "f"}}
    MESSAGES.inline_file(image, "dot.png", "image/png", "data:image/png;base64,AA==")
    assert image == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}


def test_attack_a_container_upload_cannot_name_a_file_of_the_providers_account():
    """Its ``file_id`` is one of Anthropic's Files API, the operator's account: refused for every
    provider, as no gateway file is ever uploaded there."""
    body = {
        "model": "m",
        "max_tokens": 8,
        "messages": [
            {"role": "user", "content": [{"type": "container_upload", "file_id": "file_011operator"}]}
        ],
    }
    with pytest.raises(GatewayError) as refused:
        MESSAGES.check(body)
    assert (refused.value.status, refused.value.code, refused.value.param) == (
        400,
        "unsupported_parameter",
        "messages.0.content.0",
    )
