"""Stored files a request names: typed by their bytes, fetched as the requesting workspace from a real
files service, put inline in a copy (the endpoints find and write them: tests/endpoints/; e2e:
test_file_ids.py)."""

from __future__ import annotations

import base64
import copy
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from infery_proto import identity_assertion
from infery_proto.identity_assertion import Identity

from ext_proc import file_refs
from ext_proc.endpoints.chat_completions import ENDPOINT as CHAT
from ext_proc.endpoints.responses import ENDPOINT as RESPONSES
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


async def test_references_without_the_service_or_the_key_are_503():
    body = _chat({"type": "file", "file": {"file_id": "file-a"}})
    for service, key in ((None, b"k"), (file_refs.FilesService("https://127.0.0.1:1"), b"")):
        with pytest.raises(GatewayError) as refused:
            await file_refs.resolve(body, CHAT.file_refs(body), CHAT, service, key, WHO)
        assert refused.value.status == 503


async def test_too_many_files_or_an_impossible_id_are_refused_before_any_fetch():
    service = file_refs.FilesService("https://127.0.0.1:1")  # nothing listens: a fetch would be a 503
    many = _chat(
        *({"type": "file", "file": {"file_id": f"file-{i}"}} for i in range(file_refs.MAX_FILES + 1))
    )
    with pytest.raises(GatewayError) as refused:
        await file_refs.resolve(many, CHAT.file_refs(many), CHAT, service, b"k", WHO)
    assert refused.value.status == 400 and refused.value.param == "messages"
    for bad in ("../v1/models", "file-a/b", "file-" + "x" * 61):
        with pytest.raises(GatewayError) as refused:
            body = _chat({"type": "file", "file": {"file_id": bad}})
            await file_refs.resolve(body, CHAT.file_refs(body), CHAT, service, b"k", WHO)
        assert refused.value.status == 404 and refused.value.code == "not_found"


# -- fetched from a real HTTP server standing in for the files service -------------------------

FILES_KEY = b"f" * 32
PDF = b"%PDF-1.4 a report"
PNG = b"\x89PNG\r\n\x1a\nrest"


class _FilesHandler(BaseHTTPRequestHandler):
    """Answers /v1/files/{id}/content for workspace ``ws`` only, as the files service does:
    the identity must be signed for this method and path."""

    stored = {"file-pdf": ("report.pdf", PDF), "file-png": ("dot.png", PNG)}
    asked: list[str] = []

    def do_GET(self) -> None:  # http.server calls it by this name
        who = identity_assertion.verify(
            FILES_KEY, self.headers.get(identity_assertion.HEADER, ""), "GET", self.path
        )
        file_id = self.path.removeprefix("/v1/files/").removesuffix("/content")
        self.asked.append(file_id)
        found = self.stored.get(file_id) if who is not None and who.workspace_id == "ws" else None
        if found is None:
            self.send_response(404 if who is not None else 401)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        name, data = found
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.send_header("content-disposition", f"attachment; filename*=UTF-8''{name}")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def files_service() -> Iterator[file_refs.FilesService]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FilesHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FilesHandler.asked = []
    try:
        yield file_refs.FilesService(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_chat_files_go_inline_in_a_copy_and_the_request_is_left_as_sent(files_service):
    body = _chat(
        {"type": "text", "text": "x"},
        {"type": "file", "file": {"file_id": "file-pdf"}},
        {"type": "file", "file": {"file_id": "file-png"}},
        {"type": "file", "file": {"file_id": "file-pdf"}},
    )
    sent = copy.deepcopy(body)
    inlined = await file_refs.resolve(body, CHAT.file_refs(body), CHAT, files_service, FILES_KEY, WHO)
    assert body == sent  # the client's request (what is fingerprinted and kept) is untouched
    parts = inlined["messages"][1]["content"]
    pdf = "data:application/pdf;base64," + base64.b64encode(PDF).decode()
    assert parts[1] == parts[3] == {"type": "file", "file": {"filename": "report.pdf", "file_data": pdf}}
    assert parts[2]["image_url"]["url"].startswith("data:image/png;base64,")
    assert _FilesHandler.asked == ["file-pdf", "file-png"]  # each file fetched once


async def test_responses_files_go_inline_too(files_service):
    body = {
        "model": "m",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "read"},
                    {"type": "input_file", "file_id": "file-pdf"},
                    {"type": "input_image", "file_id": "file-png", "detail": "low"},
                ],
            }
        ],
    }
    inlined = await file_refs.resolve(
        body, RESPONSES.file_refs(body), RESPONSES, files_service, FILES_KEY, WHO
    )
    parts = inlined["input"][0]["content"]
    assert parts[1] == {
        "type": "input_file",
        "filename": "report.pdf",
        "file_data": "data:application/pdf;base64," + base64.b64encode(PDF).decode(),
    }
    assert parts[2]["type"] == "input_image" and parts[2]["detail"] == "low"
    assert parts[2]["image_url"].startswith("data:image/png;base64,")
    assert body["input"][0]["content"][1] == {"type": "input_file", "file_id": "file-pdf"}


async def test_another_workspaces_file_is_404_as_a_missing_one(files_service):
    body = _chat({"type": "file", "file": {"file_id": "file-pdf"}})
    stranger = Identity("req", "ws-other", "member", "key")
    for who, file_id in ((stranger, "file-pdf"), (WHO, "file-none")):
        body["messages"][1]["content"][0]["file"]["file_id"] = file_id
        with pytest.raises(GatewayError) as refused:
            await file_refs.resolve(body, CHAT.file_refs(body), CHAT, files_service, FILES_KEY, who)
        assert (refused.value.status, refused.value.code) == (404, "not_found")
        assert refused.value.param == "messages[1].content[0].file.file_id"
