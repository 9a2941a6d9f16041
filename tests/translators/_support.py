"""Helpers shared by the translator tests: provider validators, fixtures, stream replay."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ext_proc.translators.base import StreamTranslator
from tests.conformance import CONFORMANCE_DIR, assert_openai, provider_validate

SHARED_FIXTURES = CONFORMANCE_DIR / "fixtures"
OWN_FIXTURES = Path(__file__).resolve().parent / "fixtures"
SPLITS = (1, 7, None)  # None: the whole body in one feed()


def shared_fixture(name: str) -> bytes:
    return (SHARED_FIXTURES / name).read_bytes()


def own_fixture(name: str) -> bytes:
    return (OWN_FIXTURES / name).read_bytes()


def _run_validator(fn: Callable[..., int], doc: Any, *args: Any) -> tuple[int, str]:
    with tempfile.NamedTemporaryFile("wb", suffix=".json") as f:
        f.write(doc if isinstance(doc, bytes) else orjson.dumps(doc))
        f.flush()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = fn(f.name, *args)
    return rc, out.getvalue()


def assert_anthropic_request(body: bytes | dict[str, Any]) -> None:
    rc, report = _run_validator(provider_validate().anthropic_request, body)
    assert rc == 0, f"not a valid Anthropic request:\n{report}\n{_show(body)}"


def assert_gemini_request(body: bytes | dict[str, Any]) -> None:
    rc, report = _run_validator(provider_validate().gemini_request, body)
    assert rc == 0, f"not a valid Gemini request:\n{report}\n{_show(body)}"


def assert_provider_sse(kind: str, raw: bytes) -> None:
    """Our own provider-side fixtures must be streams the real provider could send."""
    fn = provider_validate().anthropic_sse if kind == "anthropic" else provider_validate().gemini_sse
    rc, report = _run_validator(fn, raw)
    assert rc == 0, report


def _show(body: bytes | dict[str, Any]) -> str:
    return (body if isinstance(body, bytes) else orjson.dumps(body)).decode()[:3000]


def replay(stream: StreamTranslator, raw: bytes, size: int | None) -> bytes:
    """Feed ``raw`` in pieces of ``size`` bytes (all at once for None), then finish()."""
    if size is None:
        out = stream.feed(raw)
    else:
        out = b"".join(stream.feed(raw[i : i + size]) for i in range(0, len(raw), size))
    return out + stream.finish()


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
