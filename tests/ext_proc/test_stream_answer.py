"""A streamed answer chunk by chunk (ext_proc/stream_answer.py), with the real stream translators.

What it must get right: pass each chunk on (as is when nothing changes), keep every byte the
client got, notice every way a stream ends -- the provider's end, its error event, the body
ending early, an event past the bound -- and leave the last chunk for the charge.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from ext_proc.endpoints import chat_completions
from ext_proc.endpoints.base import LastEvent, with_credits
from ext_proc.metering import format_credits
from ext_proc.stream_answer import StreamAnswer, streamed_chars
from ext_proc.translators import translator_for
from ext_proc.translators.base import ResponseContext, Usage

CHAT = chat_completions.ENDPOINT
DONE = b"data: [DONE]\n\n"  # how a chat stream ends (the chat endpoint's stream_tail)
BASE = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def _answer(kind: str = "openai", max_event_bytes: int = 1 << 20) -> StreamAnswer:
    ctx = ResponseContext("m", "m", 1, False, {}, max_event_bytes)
    translator = translator_for(CHAT, kind)
    return StreamAnswer(CHAT, translator.stream(ctx), [], max_event_bytes)


def _event(doc: object) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def _text(text: str) -> bytes:
    return _event({**BASE, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


FINISH = _event({**BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
USAGE = _event({**BASE, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})


def test_a_chunk_passes_as_it_is_and_is_kept():
    answer = _answer()
    chunk = _text("hello")
    out = answer.feed(chunk, False)
    assert out is chunk  # Envoy keeps its own bytes: nothing to copy
    assert answer.sent == [chunk] and answer.ttft > 0 and not answer.ended
    assert answer.feed(b"", False) == b"" and answer.sent == [chunk]  # nothing sent, nothing kept


def test_the_providers_end_leaves_the_held_last_chunk_for_the_charge():
    answer = _answer()
    answer.feed(_text("hi"), False)
    out = answer.feed(FINISH + USAGE + b"data: [DONE]\n\n", False)
    assert answer.ended and answer.completed and not answer.error_code
    assert out == b""  # the finish chunk is held: it goes out last, with the credits
    assert orjson.loads(answer.last or b"")["choices"][0]["finish_reason"] == "stop"
    assert answer.translator.usage == Usage(input_tokens=7, output_tokens=3)
    tail = answer.close(answer.last or b"", Decimal("0.25"))
    assert tail.endswith(b',"credits_used":0.25}\n\n' + DONE) and answer.sent[-1] == tail


def test_a_body_that_ends_early_ends_with_the_gateways_error():
    answer = _answer()
    answer.feed(_text("hi"), False)
    out = answer.feed(_text("there"), True)
    assert answer.ended and not answer.completed and answer.error_code == "upstream_error"
    assert out == _text("there")
    last = orjson.loads(answer.last or b"")
    assert last["error"]["code"] == "upstream_error" and "ended the stream early" in last["error"]["message"]
    assert answer.served_chars(answer.last) == len("hithere")  # the error event carries no text


def test_an_event_past_the_bound_cuts_the_stream():
    answer = _answer(max_event_bytes=64)
    answer.feed(_text("a"), False)
    answer.feed(b'data: {"x":"' + b"y" * 100, False)
    assert answer.ended and answer.error_code == "upstream_error" and not answer.completed
    assert b"over 64 bytes" in (answer.last or b"")


def test_a_providers_error_event_is_the_last_chunk():
    answer = _answer("anthropic")
    error = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'
    answer.feed(error, False)
    assert answer.ended and answer.error_code and not answer.completed
    assert orjson.loads(answer.last or b"")["error"]["code"] == answer.error_code


def test_the_gateways_final_chunk_is_what_the_client_asked_for():
    # (The chat endpoint writes it now: endpoints/chat_completions.py's stream_last.)
    plain = orjson.loads(CHAT.stream_last(LastEvent("chatcmpl-r", "req", 5, "m", None)))
    assert plain["choices"][0]["finish_reason"] == "stop" and plain["id"] == "chatcmpl-r"
    with_usage = orjson.loads(
        CHAT.stream_last(LastEvent("c", "req", 5, "m", Usage(input_tokens=2, output_tokens=3)))
    )
    assert with_usage["choices"] == [] and with_usage["usage"]["total_tokens"] == 5


def test_credits_are_written_with_their_exact_digits():
    one = format_credits(Decimal("0.000000000001"))
    assert with_credits(b'{"a":1}', one) == b'{"a":1,"credits_used":0.000000000001}'
    assert with_credits(b'{"x":1}', format_credits(Decimal(0))) == b'{"x":1,"credits_used":0}'


def test_served_text_is_read_back_from_what_was_sent():
    sent = [_text("ab")[:10], _text("ab")[10:] + _text("cde"), b"data: [DONE]\n\n", b"data: not json\n\n"]
    assert streamed_chars(CHAT, sent) == 5
