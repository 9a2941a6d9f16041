"""The shared conformance validators (../shared/conformance), loaded once per test run.

Tests fail, never skip, when the conformance material is missing: a green run
without it would prove nothing.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE_DIR = Path(os.environ.get("INFERY_CONFORMANCE_DIR") or REPO.parent / "shared" / "conformance")


def _load(name: str) -> ModuleType:
    path = CONFORMANCE_DIR / f"{name}.py"
    if not path.exists():
        raise RuntimeError(f"conformance material missing: {path} (set INFERY_CONFORMANCE_DIR)")
    spec = importlib.util.spec_from_file_location(f"conformance_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _openai() -> ModuleType:
    return _load("validate")


@functools.cache
def _lenient_spec() -> Any:
    mod = _openai()
    return mod.apply_lenient(mod.load_spec(mod.DEFAULT_SPEC))


@functools.cache
def _validator(schema: str) -> Any:
    return _openai().make_validator(_lenient_spec(), schema)


def openai_errors(doc: Any, schema: str) -> list[str]:
    """Every way ``doc`` breaks the OpenAI spec's ``schema`` (lenient mode)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
        for e in _validator(schema).iter_errors(doc)
    ]


def assert_openai(doc: Any, schema: str) -> None:
    errors = openai_errors(doc, schema)
    assert not errors, f"not a valid {schema}:\n" + "\n".join(errors[:10]) + "\n" + json.dumps(doc)[:2000]


def assert_openai_sse(text: str) -> list[dict[str, Any]]:
    """Validate every chunk of an SSE transcript; returns the parsed chunks ([DONE] excluded)."""
    chunks = []
    payloads = [data for _, data in _openai().iter_sse_payloads(text)]
    assert payloads and payloads[-1] == "[DONE]", f"stream does not end with [DONE]: {text[-500:]!r}"
    for data in payloads[:-1]:
        chunk = json.loads(data)
        assert_openai(chunk, "CreateChatCompletionStreamResponse")
        chunks.append(chunk)
    return chunks


@functools.cache
def provider_validate() -> ModuleType:
    return _load("provider_validate")
