"""Chat's ``file`` parts by ``file_id``: one upload serves every provider, inline in its own format.

The simulators check each request against their provider's own types (OpenAI's spec,
Anthropic's request schema, Gemini's types) and say what they saw; a provider never
sees the gateway's file id.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import anthropic
import openai
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import Admin, Tenant, eventually, new_tenant

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def _ask(file_id: str) -> list[dict[str, Any]]:
    content = [{"type": "text", "text": "What is this?"}, {"type": "file", "file": {"file_id": file_id}}]
    return [{"role": "user", "content": content}]


def test_a_pdf_uploaded_once_serves_every_provider(
    three_formats: dict[str, SimulatorProcess], client: openai.OpenAI
):
    report = client.files.create(file=("report.pdf", PDF), purpose="user_data")
    for slug, sim in three_formats.items():
        for stream in (False, True):
            if stream:
                chunks = list(
                    client.chat.completions.create(model=slug, messages=_ask(report.id), stream=True)
                )
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                reply = client.chat.completions.create(model=slug, messages=_ask(report.id))
                text = reply.choices[0].message.content or ""
            assert "saw 1 document(s)" in text, (slug, text)
            sent = json.dumps(sim.requests()[-1]["body"])
            assert report.id not in sent  # the provider got the bytes, never our id
    anthropic_part = three_formats["claude-sonnet-4-5"].requests()[-1]["body"]["messages"][0]["content"][1]
    assert anthropic_part["type"] == "document" and anthropic_part["title"] == "report.pdf"


def test_an_image_by_file_id_is_each_providers_image_part(
    three_formats: dict[str, SimulatorProcess], client: openai.OpenAI
):
    picture = client.files.create(file=("dot.png", _png()), purpose="vision")
    for slug in three_formats:
        reply = client.chat.completions.create(model=slug, messages=_ask(picture.id))
        assert "saw 1 image(s)" in (reply.choices[0].message.content or ""), slug


def test_another_workspaces_file_is_not_found(
    three_formats: dict[str, SimulatorProcess], admin: Admin, gateway: Stack, client: openai.OpenAI
):
    other = new_tenant(admin, gateway, "file-ids-other").client(gateway)
    theirs = other.files.create(file=("theirs.pdf", PDF), purpose="user_data")
    for file_id in (theirs.id, "file-0000000000000000000000000000", "../v1/models"):
        with pytest.raises(openai.NotFoundError) as refused:
            client.chat.completions.create(model="claude-sonnet-4-5", messages=_ask(file_id))
        assert refused.value.code == "not_found"
        assert refused.value.param == "messages[0].content[1].file.file_id"


def test_a_fallback_attempt_gets_the_file_inline_too(
    three_formats: dict[str, SimulatorProcess], admin: Admin, client: openai.OpenAI
):
    admin.model("pdf-chain", "sim-openai", "gpt-4o-mini")
    admin.call("PUT", "/routes/pdf-chain", {"fallbacks": ["claude-sonnet-4-5"], "retry_on": ["5xx"]})
    report = client.files.create(file=("chain.pdf", PDF), purpose="user_data")

    primary = three_formats["gpt-4o-mini"]

    def served_by_the_fallback() -> Any:
        primary.clear()  # no step left over from a try made before the chain was in force
        primary.script([{"status": 503}])
        raw = client.chat.completions.with_raw_response.create(model="pdf-chain", messages=_ask(report.id))
        return raw if raw.headers.get("x-fallback-from") == "pdf-chain" else None

    try:
        raw = eventually(served_by_the_fallback, timeout=10, interval=0.2)
    finally:
        primary.clear()
    assert raw.headers["x-model-used"] == "claude-sonnet-4-5"
    assert "saw 1 document(s)" in (raw.parse().choices[0].message.content or "")


def test_a_file_too_large_to_inline_is_a_clean_413(
    three_formats: dict[str, SimulatorProcess], client: openai.OpenAI
):
    """Inline, a file counts against the gateway's request size limit (1 MiB on the test gateways,
    INFERY_MAX_REQUEST_BYTES): over it the client gets Envoy's 413 envelope, not a failure."""
    big = client.files.create(file=("big.pdf", PDF + b"x" * 900_000), purpose="user_data")
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="claude-sonnet-4-5", messages=_ask(big.id))
    assert refused.value.status_code == 413 and refused.value.code == "request_too_large"


# -- the Responses API's input_file / input_image parts by file_id ------------------------------


def _input(file_id: str, kind: str = "input_file") -> list[dict[str, Any]]:
    part: dict[str, Any] = {"type": kind, "file_id": file_id}
    if kind == "input_image":
        part["detail"] = "auto"
    return [{"role": "user", "content": [{"type": "input_text", "text": "What is this?"}, part]}]


def test_responses_name_stored_files_for_every_provider(
    three_formats: dict[str, SimulatorProcess], client: openai.OpenAI
):
    """Passed through to OpenAI, translated for Anthropic and Gemini: each provider gets the bytes
    inline (validated by its simulator), none gets the gateway's id."""
    report = client.files.create(file=("report.pdf", PDF), purpose="user_data")
    picture = client.files.create(file=("dot.png", _png()), purpose="vision")
    for slug, sim in three_formats.items():
        answer = client.responses.create(model=slug, input=_input(report.id))
        assert "saw 1 document(s)" in answer.output_text, (slug, answer.output_text)
        assert report.id not in json.dumps(sim.requests()[-1]["body"])
        seen = client.responses.create(model=slug, input=_input(picture.id, "input_image"))
        assert "saw 1 image(s)" in seen.output_text, (slug, seen.output_text)
        assert picture.id not in json.dumps(sim.requests()[-1]["body"])


def test_a_kept_response_keeps_the_file_id_and_the_next_turn_sends_the_file_again(
    three_formats: dict[str, SimulatorProcess], client: openai.OpenAI
):
    report = client.files.create(file=("kept.pdf", PDF), purpose="user_data")
    first = client.responses.create(model="claude-sonnet-4-5", input=_input(report.id))
    items = client.responses.input_items.list(first.id).data
    kept = [p for item in items for p in (getattr(item, "content", None) or []) if p.type == "input_file"]
    assert [p.file_id for p in kept] == [report.id]  # the id as the client gave it, not the bytes
    second = client.responses.create(
        model="gemini-2-5-flash", previous_response_id=first.id, input="And now?"
    )
    assert "saw 1 document(s)" in second.output_text  # the history's file, inline for Gemini
    assert report.id not in json.dumps(three_formats["gemini-2-5-flash"].requests()[-1]["body"])


def test_a_responses_file_of_another_workspace_is_not_found(
    three_formats: dict[str, SimulatorProcess], admin: Admin, gateway: Stack, client: openai.OpenAI
):
    other = new_tenant(admin, gateway, "file-ids-responses-other").client(gateway)
    theirs = other.files.create(file=("theirs.pdf", PDF), purpose="user_data")
    with pytest.raises(openai.NotFoundError) as refused:
        client.responses.create(model="gpt-4o-mini", input=_input(theirs.id))
    assert refused.value.code == "not_found" and refused.value.param == "input[0].content[1].file_id"


def _blocks(*file_ids: tuple[str, str]) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "What are these?"}]
    content += [{"type": kind, "source": {"type": "file", "file_id": fid}} for kind, fid in file_ids]
    return [{"role": "user", "content": content}]


def test_messages_name_stored_files_for_every_provider(
    three_formats: dict[str, SimulatorProcess], client: openai.OpenAI, tenant: Tenant, gateway: Stack
):
    """Anthropic's Messages API: a ``document`` or ``image`` block whose source is a ``file``
    names a file the gateway stores; it goes to every provider inline, in that provider's form."""
    report = client.files.create(file=("report.pdf", PDF), purpose="user_data")
    picture = client.files.create(file=("dot.png", _png()), purpose="vision")
    notes = client.files.create(file=("notes.txt", b"plain words"), purpose="user_data")
    claude = anthropic.Anthropic(
        base_url=gateway.base_url.removesuffix("/v1"), api_key=tenant.key, max_retries=0, timeout=30
    )
    ask = _blocks(("document", report.id), ("image", picture.id), ("document", notes.id))
    for slug, sim in three_formats.items():
        reply = claude.messages.create(model=slug, max_tokens=64, messages=ask)  # type: ignore[arg-type]
        text = reply.content[0].text  # type: ignore[union-attr]
        assert "saw 1 image(s)" in text and "document(s)" in text, (slug, text)
        sent = json.dumps(sim.requests()[-1]["body"])
        assert report.id not in sent and picture.id not in sent and notes.id not in sent
    blocks = three_formats["claude-sonnet-4-5"].requests()[-1]["body"]["messages"][0]["content"]
    assert blocks[1]["source"]["type"] == "base64" and blocks[1]["source"]["media_type"] == "application/pdf"
    assert blocks[1]["title"] == "report.pdf"
    assert blocks[2]["type"] == "image" and blocks[2]["source"]["media_type"] == "image/png"
    assert blocks[3]["source"] == {"type": "text", "media_type": "text/plain", "data": "plain words"}


def test_a_messages_file_of_another_workspace_is_not_found(
    three_formats: dict[str, SimulatorProcess], admin: Admin, gateway: Stack, tenant: Tenant
):
    other = new_tenant(admin, gateway, "messages-files-other").client(gateway)
    theirs = other.files.create(file=("theirs.pdf", PDF), purpose="user_data")
    claude = anthropic.Anthropic(
        base_url=gateway.base_url.removesuffix("/v1"), api_key=tenant.key, max_retries=0, timeout=30
    )
    with pytest.raises(anthropic.NotFoundError) as refused:
        claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=16,
            messages=_blocks(("document", theirs.id)),  # type: ignore[arg-type]
        )
    error = refused.value.body["error"]  # type: ignore[index]
    assert error["code"] == "not_found" and error["type"] == "not_found_error"


def test_a_messages_file_nested_in_a_content_document_is_resolved_too(
    three_formats: dict[str, SimulatorProcess], admin: Admin, gateway: Stack, tenant: Tenant
):
    """Attack: a ``file`` source hidden one level down (an image in a ``document`` whose source is
    ``content``, Anthropic's custom-content document, also inside a tool result) must be looked
    up as the workspace's like any other: another workspace's id is 404 and no provider gets it."""
    other = new_tenant(admin, gateway, "messages-nested-other").client(gateway)
    theirs = other.files.create(file=("theirs.png", _png()), purpose="vision")
    claude = anthropic.Anthropic(
        base_url=gateway.base_url.removesuffix("/v1"), api_key=tenant.key, max_retries=0, timeout=30
    )
    image = {"type": "image", "source": {"type": "file", "file_id": theirs.id}}
    document = {"type": "document", "source": {"type": "content", "content": [image]}}
    tool_result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [document]}
    sim = three_formats["claude-sonnet-4-5"]
    for block in (document, tool_result):
        before = len(sim.requests())
        messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, block]}]
        with pytest.raises(anthropic.NotFoundError) as refused:
            claude.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=messages)  # type: ignore[arg-type]
        error = refused.value.body["error"]  # type: ignore[index]
        assert error["code"] == "not_found" and error["type"] == "not_found_error"
        assert all(theirs.id not in json.dumps(r["body"]) for r in sim.requests()[before:])
