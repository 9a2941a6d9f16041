"""The deterministic model: formulas tests elsewhere rely on."""

from __future__ import annotations

import base64
import struct

import orjson

import simulators
from simulators import content
from simulators.content import Prompt, Tool

WEATHER = Tool(
    "get_weather",
    {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
)
CLOCK = Tool("get_time", {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]})


def test_token_formulas():
    assert content.count_tokens("  one two\tthree\nfour ") == 4
    assert simulators.prompt_tokens(["a b c", "", "d"]) == (3 + 3) + (0 + 3) + (1 + 3)


def test_fill_schema_fills_required_props_only():
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "score": {"type": ["number", "null"]},
            "ok": {"type": "boolean"},
            "unit": {"enum": ["c", "f"]},
            "where": {"$ref": "#/$defs/Place"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
            "optional": {"type": "string"},
        },
        "required": ["name", "age", "score", "ok", "unit", "where", "tags", "maybe"],
        "$defs": {
            "Place": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
    }
    assert content.fill_schema(schema) == {
        "name": "x",
        "age": 1,
        "score": 1,
        "ok": True,
        "unit": "c",
        "where": {"city": "x"},
        "tags": ["x", "x"],
        "maybe": 1,
    }


def test_fill_schema_understands_gemini_upper_case_types():
    schema = {
        "type": "OBJECT",
        "properties": {"n": {"type": "NUMBER"}, "s": {"type": "STRING"}},
        "required": ["n", "s"],
    }
    assert content.fill_schema(schema) == {"n": 1, "s": "x"}


def test_stream_pieces_rebuild_the_text():
    text = "Hello! You said: a  spaced   sentence with averyveryverylongwordindeed."
    pieces = content.stream_pieces(text)
    assert "".join(pieces) == text
    assert len(pieces) >= 8
    assert all(len(p) <= 12 for p in pieces)


def test_plan_echoes_last_user_text_and_media():
    prompt = Prompt(message_texts=["sys", "hi there"], last_user_text="hi there", images=2, documents=1)
    answer = content.plan(prompt)
    assert answer.text == "Hello! You said: hi there. I saw 2 image(s). I saw 1 document(s)."
    assert answer.finish == "stop"
    assert answer.tokens == content.count_tokens(answer.text)


def test_plan_max_tokens_and_stop():
    prompt = Prompt(last_user_text="one two three four five six", max_tokens=3)
    answer = content.plan(prompt)
    assert (answer.text, answer.finish, answer.tokens) == ("Hello! You said:", "length", 3)
    answer = content.plan(Prompt(last_user_text="one two STOP three", stop=["STOP"]))
    assert (answer.text, answer.finish, answer.stop_sequence) == (
        "Hello! You said: one two ",
        "stop_sequence",
        "STOP",
    )


def test_plan_tool_decisions():
    weather = Prompt(last_user_text="What is the weather?", tools=[WEATHER, CLOCK])
    assert [(c.name, c.arguments) for c in content.plan(weather).tool_calls] == [
        ("get_weather", {"location": "x"})
    ]
    assert content.plan(Prompt(last_user_text="hello", tools=[WEATHER])).tool_calls == []
    forced = Prompt(last_user_text="hello", tools=[WEATHER, CLOCK], tool_choice="name:get_time")
    assert [c.name for c in content.plan(forced).tool_calls] == ["get_time"]
    none = Prompt(last_user_text="weather", tools=[WEATHER], tool_choice="none")
    assert content.plan(none).tool_calls == []
    parallel = Prompt(last_user_text="weather in parallel", tools=[WEATHER, CLOCK])
    assert [c.name for c in content.plan(parallel).tool_calls] == ["get_weather", "get_time"]
    parallel.tools = [WEATHER]
    assert [c.name for c in content.plan(parallel).tool_calls] == ["get_weather", "get_weather"]
    parallel.parallel_tool_calls = False
    assert len(content.plan(parallel).tool_calls) == 1
    answered = Prompt(last_user_text="weather?", tools=[WEATHER], tool_results=["18C and sunny"])
    answer = content.plan(answered)
    assert answer.tool_calls == [] and answer.text == "The tool returned: 18C and sunny"
    call = content.plan(weather)
    assert call.finish == "tool_calls" and call.tokens == 2  # name + compact JSON, one word each


def test_plan_json_mode():
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["city", "n"],
    }
    answer = content.plan(Prompt(last_user_text="give json", json_mode=True, json_schema=schema))
    assert orjson.loads(answer.text) == {"city": "x", "n": 1}
    answer = content.plan(Prompt(last_user_text="give json", json_mode=True))
    assert orjson.loads(answer.text) == {"reply": "Hello! You said: give json."}


def test_embeddings_are_deterministic_unit_vectors():
    a, b, c = content.embedding("same", 64), content.embedding("same", 64), content.embedding("other", 64)
    assert a == b != c and len(a) == 64
    assert abs(sum(v * v for v in a) - 1) < 1e-9
    decoded = struct.unpack("<64f", base64.b64decode(content.embedding_base64(a)))
    assert all(abs(x - y) < 1e-6 for x, y in zip(decoded, a, strict=True))


def test_png_is_a_png():
    png = content.png_for("a cat")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" in png
    assert png != content.png_for("a dog")


def test_expected_usage_per_kind():
    chat = {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello you"}],
    }
    usage = simulators.expected_usage("openai", chat)
    reply = "Hello! You said: hello you."
    assert usage["prompt_tokens"] == (2 + 3) + (2 + 3)
    assert usage["completion_tokens"] == content.count_tokens(reply)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    anthropic = {
        "model": "m",
        "max_tokens": 10,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello you"}],
    }
    assert simulators.expected_usage("anthropic", anthropic)["input_tokens"] == 10
    gemini = {"contents": [{"role": "user", "parts": [{"text": "hello you"}]}]}
    assert simulators.expected_usage("google", gemini)["promptTokenCount"] == 5
    embed = simulators.expected_usage("openai", {"model": "e", "input": ["a b", "c"]}, path="/v1/embeddings")
    assert embed == {"prompt_tokens": 3, "total_tokens": 3}
