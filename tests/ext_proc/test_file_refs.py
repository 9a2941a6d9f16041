"""file_id parts of a chat request: found, typed by their bytes, put inline (e2e: test_file_ids.py)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from infery_proto.identity_assertion import Identity

from ext_proc import file_refs
from ext_proc.errors import GatewayError

WHO = Identity("req", "ws", "member", "key")


def _chat(*parts: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": list(parts)}],
    }


def test_types_come_from_the_bytes_not_the_name():
    assert file_refs.sniff(b"%PDF-1.7 ...") == "application/pdf"
    assert file_refs.sniff(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert file_refs.sniff(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert file_refs.sniff(b"GIF89a..") == "image/gif"
    assert file_refs.sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert file_refs.sniff("héllo\n".encode()) == "text/plain"
    assert file_refs.sniff(b"\x00\xff\xfe\x80") == "application/octet-stream"


def test_only_file_parts_with_a_file_id_are_references():
    body = _chat(
        {"type": "text", "text": "x"},
        {"type": "file", "file": {"file_id": "file-a"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    )
    assert [(at, file_id) for at, _, file_id in file_refs.references(body)] == [
        ("messages[1].content[1].file.file_id", "file-a")
    ]
    with pytest.raises(GatewayError) as refused:
        list(file_refs.references(_chat({"type": "file", "file": {"file_id": 7}})))
    assert refused.value.status == 400 and refused.value.param == "messages[1].content[0].file.file_id"


def test_a_document_becomes_file_data_and_an_image_an_image_part():
    doc: dict[str, Any] = {"type": "file", "file": {"file_id": "file-a"}}
    file_refs._inline(doc, "report.pdf", b"%PDF-1.4 x")
    assert doc == {
        "type": "file",
        "file": {
            "filename": "report.pdf",
            "file_data": "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 x").decode(),
        },
    }
    image: dict[str, Any] = {"type": "file", "file": {"file_id": "file-b"}}
    file_refs._inline(image, "dot.png", b"\x89PNG\r\n\x1a\nrest")
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")


async def test_a_request_without_references_is_left_alone_and_needs_no_service():
    body = _chat({"type": "text", "text": "x"})
    assert await file_refs.resolve(body, None, b"", WHO) is False


async def test_references_without_the_service_or_the_key_are_503():
    body = _chat({"type": "file", "file": {"file_id": "file-a"}})
    for service, key in ((None, b"k"), (file_refs.FilesService("https://127.0.0.1:1"), b"")):
        with pytest.raises(GatewayError) as refused:
            await file_refs.resolve(body, service, key, WHO)
        assert refused.value.status == 503


async def test_too_many_files_or_an_impossible_id_are_refused_before_any_fetch():
    service = file_refs.FilesService("https://127.0.0.1:1")  # nothing listens: a fetch would be a 503
    many = _chat(
        *({"type": "file", "file": {"file_id": f"file-{i}"}} for i in range(file_refs.MAX_FILES + 1))
    )
    with pytest.raises(GatewayError) as refused:
        await file_refs.resolve(many, service, b"k", WHO)
    assert refused.value.status == 400 and refused.value.param == "messages"
    for bad in ("../v1/models", "file-a/b", "file-" + "x" * 61):
        with pytest.raises(GatewayError) as refused:
            await file_refs.resolve(_chat({"type": "file", "file": {"file_id": bad}}), service, b"k", WHO)
        assert refused.value.status == 404 and refused.value.code == "not_found"
