"""Helpers shared by the translator tests: provider validators, fixtures, stream replay, and
the checks every provider's translation must pass the same way."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from ext_proc.translators.base import ResponseContext, StreamTranslator, TranslatedResponse
from tests.conformance import FIXTURES_DIR, assert_openai, providers

RECORDED_FIXTURES = FIXTURES_DIR  # real provider payloads, vendored (see its PROVENANCE.md)
OWN_FIXTURES = Path(__file__).resolve().parent / "fixtures"
SPLITS = (1, 7, None)  # None: the whole body in one feed()
each_split = pytest.mark.parametrize("size", SPLITS, ids=lambda s: f"split-{s or 'whole'}")

# ------------------------------------------------------------------ requests

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVQImWNwav0CAALIAbzDqqRyAAAAAElFTkSuQmCC"
PDF = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK"
USER = {"role": "user", "content": "hi"}

# A check on the translated provider body: truthy when the translation is right.
Check = Callable[[dict[str, Any]], Any]


def chat(*messages: dict[str, Any], **params: Any) -> dict[str, Any]:
    """An OpenAI chat request; one user turn unless ``messages`` are given."""
    return {"model": "slug", "messages": list(messages or [USER]), **params}


def weather_tool(parameters: dict[str, Any], **function: Any) -> dict[str, Any]:
    """An OpenAI ``get_weather`` function tool with the given parameter schema."""
    fn = {"name": "get_weather", "description": "Weather for a city", "parameters": parameters, **function}
    return {"type": "function", "function": fn}


def each_case(argnames: str | Sequence[str], cases: Sequence[tuple[Any, ...]]) -> pytest.MarkDecorator:
    """Parametrize over ``(description, *values)`` tuples; the description names the case."""
    return pytest.mark.parametrize(argnames, [c[1:] for c in cases], ids=[c[0] for c in cases])


def shared_fixture(name: str) -> bytes:
    """A recorded real provider payload."""
    return (RECORDED_FIXTURES / name).read_bytes()


def own_fixture(name: str) -> bytes:
    return (OWN_FIXTURES / name).read_bytes()


def assert_anthropic_request(body: bytes | dict[str, Any]) -> None:
    problems = providers().anthropic_request(orjson.loads(body) if isinstance(body, bytes) else body)
    assert not problems, "not a valid Anthropic request:\n" + "\n".join(problems) + "\n" + _show(body)


def assert_gemini_request(body: bytes | dict[str, Any]) -> None:
    problems = providers().gemini_request(orjson.loads(body) if isinstance(body, bytes) else body)
    assert not problems, "not a valid Gemini request:\n" + "\n".join(problems) + "\n" + _show(body)


def assert_provider_sse(kind: str, raw: bytes) -> None:
    """Our own provider-side fixtures must be streams the real provider could send."""
    problems = providers().response("anthropic-sse" if kind == "anthropic" else "gemini-sse", raw)
    assert not problems, "\n".join(problems)


def _show(body: bytes | dict[str, Any]) -> str:
    return (body if isinstance(body, bytes) else orjson.dumps(body)).decode()[:3000]


# ----------------------------------------------------------------- responses


def usage_doc(prompt: int, cached: int, completion: int, reasoning: int) -> dict[str, Any]:
    """OpenAI's usage object, as every translator must report it."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def as_body(body: Any) -> bytes:
    """A provider body given as bytes, or as JSON to encode."""
    return body if isinstance(body, bytes) else orjson.dumps(body)


def completion_of(res: TranslatedResponse, ctx: ResponseContext) -> dict[str, Any]:
    """The body of a successful chat response, checked against the OpenAI spec and the context."""
    out: dict[str, Any] = orjson.loads(res.body)
    assert_openai(out, "CreateChatCompletionResponse")
    assert (res.status, res.error_code) == (200, None)
    assert (out["object"], out["created"], out["model"]) == (
        "chat.completion",
        ctx.created,
        ctx.slug,  # the slug that served, never the provider's name
    )
    return out


def error_of(res: TranslatedResponse, status: int, code: str, message: str | None) -> dict[str, Any]:
    """The body of an error response; ``message`` None: the gateway's own wording, not checked."""
    out: dict[str, Any] = orjson.loads(res.body)
    assert_openai(out, "ErrorResponse")
    assert (res.status, res.error_code, out["error"]["code"]) == (status, code, code)
    assert res.usage is None
    if message is not None:
        assert out["error"]["message"] == message
    return out


# ------------------------------------------------------------------- streams


def first_event(raw: bytes) -> dict[str, Any]:
    """The first ``data:`` payload of a provider stream, read independently of the translator."""
    event: dict[str, Any] = json.loads(raw.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    return event


def replay(stream: StreamTranslator, raw: bytes, size: int | None) -> bytes:
    """Feed ``raw`` in pieces of ``size`` bytes (all at once for None), then finish(), then the
    held last chunk (where the gateway adds ``credits_used``)."""
    if size is None:
        out = stream.feed(raw)
    else:
        out = b"".join(stream.feed(raw[i : i + size]) for i in range(0, len(raw), size))
    out += stream.finish()
    return out + (b"data: " + stream.held + b"\n\n" if stream.held is not None else b"")


def stream_events(stream: StreamTranslator, raw: bytes, size: int | None) -> list[dict[str, Any]]:
    """Replay ``raw`` through ``stream``; every event out must be a valid chunk or a final error."""
    events = sse_payloads(replay(stream, raw, size))
    check_chunks(events)
    return events


def check_completed(stream: StreamTranslator, events: list[dict[str, Any]], ctx: ResponseContext) -> None:
    """A stream that ended normally: one id, the context's model and time, a role delta first."""
    assert stream.done and stream.error_code is None
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert stream.response_id.startswith("chatcmpl-")
    assert {e["id"] for e in events} == {stream.response_id}
    assert {(e["model"], e["created"]) for e in events} == {(ctx.slug, ctx.created)}


def check_failed(
    stream: StreamTranslator, events: list[dict[str, Any]], code: str
) -> dict[int, dict[str, Any]]:
    """A stream that ended with an error event; returns the choices accumulated before it."""
    assert events[-1]["error"]["code"] == code
    assert stream.error_code == code and stream.done
    return accumulate(events[:-1])


def sse_payloads(text: bytes) -> list[dict[str, Any]]:
    """Every OpenAI event: ``data: {...}`` separated by blank lines, nothing else."""
    assert text == b"" or text.endswith(b"\n\n"), text[-200:]
    events = []
    for block in text.split(b"\n\n")[:-1]:
        assert block.startswith(b"data: ") and b"\n" not in block, block[:200]
        assert block != b"data: [DONE]", "translators never send [DONE]"
        events.append(json.loads(block[6:]))
    return events


def check_chunks(events: list[dict[str, Any]]) -> None:
    """Each event is a valid chunk (or a final error envelope)."""
    for i, event in enumerate(events):
        if "error" in event:
            assert i == len(events) - 1, "an error event ends the stream"
            assert_openai(event, "ErrorResponse")
        else:
            assert_openai(event, "CreateChatCompletionStreamResponse")


def accumulate(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Merge chunks per choice the way OpenAI's SDK does."""
    choices: dict[int, dict[str, Any]] = {}
    for event in events:
        for choice in event.get("choices", []):
            acc = choices.setdefault(
                choice["index"], {"role": None, "content": "", "refusal": "", "tools": {}, "finish": None}
            )
            delta = choice["delta"]
            acc["role"] = acc["role"] or delta.get("role")
            acc["content"] += delta.get("content") or ""
            acc["refusal"] += delta.get("refusal") or ""
            for call in delta.get("tool_calls") or []:
                slot = acc["tools"].setdefault(call["index"], {"id": None, "name": None, "arguments": ""})
                slot["id"] = slot["id"] or call.get("id")
                fn = call.get("function") or {}
                slot["name"] = slot["name"] or fn.get("name")
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                assert acc["finish"] is None, "one finish_reason per choice"
                acc["finish"] = choice["finish_reason"]
    return choices


def usage_chunks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["usage"] for e in events if e.get("usage")]


# ------------------------------------------------------ Anthropic Messages answers


def assert_anthropic_message(body: bytes | dict[str, Any]) -> dict[str, Any]:
    """An answer of the ``messages`` endpoint, valid for the Anthropic SDK's ``Message`` (or
    ``ErrorResponse``) type; returns it parsed."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    problems = providers().response("anthropic-response", raw)
    assert not problems, "not a valid Anthropic answer:\n" + "\n".join(problems) + "\n" + raw.decode()[:2000]
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


def messages_replay(stream: StreamTranslator, raw: bytes, size: int | None, credits: str = "0.25") -> bytes:
    """Replay ``raw`` through a ``messages`` stream translator, then end it as the gateway does:
    the held event with ``credits_used`` (endpoints/anthropic_messages.py). The whole is checked
    with the Anthropic SDK's event types and Anthropic's event order."""
    from ext_proc.endpoints.anthropic_messages import ENDPOINT

    if size is None:
        out = stream.feed(raw)
    else:
        out = b"".join(stream.feed(raw[i : i + size]) for i in range(0, len(raw), size))
    out += stream.finish()
    if stream.held is not None:
        out += ENDPOINT.stream_tail(stream.held, credits)
    problems = providers().response("anthropic-sse", out)
    assert not problems, "not a valid Anthropic stream:\n" + "\n".join(problems) + "\n" + out.decode()[-3000:]
    return out


def anthropic_events(text: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event of an Anthropic stream: each has both, named alike."""
    events = []
    assert text.endswith(b"\n\n"), text[-200:]
    for block in text.split(b"\n\n")[:-1]:
        lines = block.split(b"\n")
        assert len(lines) == 2 and lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), block
        name, data = lines[0][7:].decode(), json.loads(lines[1][6:])
        assert data["type"] == name
        events.append((name, data))
    return events


def final_message(text: bytes) -> Any:
    """The message the Anthropic SDK's ``messages.stream()`` helper builds from a stream
    (``get_final_message()``), with the SDK's own accumulator."""
    from anthropic.lib.streaming._messages import accumulate_event
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, data in anthropic_events(text):
        if name in ("ping", "error"):
            continue
        snapshot = accumulate_event(
            event=adapter.validate_python(data), current_snapshot=snapshot, json_bufs=json_bufs
        )
    return snapshot
