"""The files API in process: identity, workspace scoping, the form's rules, listing, expiry.

The same application the service runs, on a migrated SQLite store and a local storage
directory, driven through Starlette's test client. What Envoy and ext_proc add (the
identity header, mutual TLS) is exercised end to end in tests/e2e/test_files.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from infery_proto.identity_assertion import HEADER, Identity, sign

from control_plane.files.settings import ABANDONED_AFTER_S
from control_plane.files.sweeper import sweep_once
from control_plane.store.tables import StoredFile
from tests.conformance import assert_openai
from tests.control_plane.files.harness import KEY, T0, Files

# The service in process: tests/control_plane/files/harness.py; the ``files`` fixture: conftest.py.


def test_without_a_valid_identity_nothing_is_answered(files: Files):
    files.upload()
    assert files.client.get("/v1/files").status_code == 401
    forged = sign(b"not the key" * 3, Identity("r", "ws-1", "m", "k"), "GET", "/v1/files", now=T0)
    response = files.client.get("/v1/files", headers={HEADER: forged})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_identity"
    # Signed for another request: another path, another method, or expired.
    good = sign(KEY, Identity("r", "ws-1", "m", "k"), "GET", "/v1/files", now=T0)
    assert files.client.get("/v1/files?purpose=batch", headers={HEADER: good}).status_code == 401
    assert files.client.post("/v1/files", headers={HEADER: good}).status_code == 401
    files.clock.now += 3600
    assert files.client.get("/v1/files", headers={HEADER: good}).status_code == 401
    # Two values (a client's copy appended beside ext_proc's) are refused, not guessed between.
    files.clock.now = T0
    two = [(HEADER, good), (HEADER, good)]
    assert files.client.get("/v1/files", headers=two).status_code == 401


def test_upload_retrieve_list_content_delete_in_openai_shapes(files: Files):
    created = files.upload(b"line one\nline two\n", purpose="batch")
    assert created.status_code == 200
    doc = created.json()
    assert_openai(doc, "OpenAIFile")
    assert doc["object"] == "file" and doc["id"].startswith("file-")
    assert (doc["bytes"], doc["filename"], doc["purpose"], doc["status"]) == (
        18,
        "notes.txt",
        "batch",
        "processed",
    )
    assert doc["created_at"] == int(T0) and "expires_at" not in doc
    file_id = doc["id"]

    assert files.call("GET", f"/v1/files/{file_id}").json() == doc
    listed = files.call("GET", "/v1/files").json()
    assert_openai(listed, "ListFilesResponse")
    assert listed["data"] == [doc] and listed["has_more"] is False
    assert listed["first_id"] == listed["last_id"] == file_id
    content = files.call("GET", f"/v1/files/{file_id}/content")
    assert content.content == b"line one\nline two\n"
    assert content.headers["content-type"] == "application/octet-stream"
    assert 'filename="notes.txt"' in content.headers["content-disposition"]

    deleted = files.call("DELETE", f"/v1/files/{file_id}")
    assert_openai(deleted.json(), "DeleteFileResponse")
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    assert files.stored_bytes() == [] and files.rows() == []
    for method, path in (("GET", f"/v1/files/{file_id}"), ("GET", f"/v1/files/{file_id}/content")):
        assert files.call(method, path).status_code == 404
    assert files.call("DELETE", f"/v1/files/{file_id}").status_code == 404


def test_another_workspaces_file_does_not_exist(files: Files):
    file_id = files.upload(workspace="ws-1").json()["id"]
    for method, path in (
        ("GET", f"/v1/files/{file_id}"),
        ("GET", f"/v1/files/{file_id}/content"),
        ("DELETE", f"/v1/files/{file_id}"),
    ):
        response = files.call(method, path, workspace="ws-2")
        assert response.status_code == 404
        assert response.json()["error"] == {
            "type": "invalid_request_error",
            "code": "not_found",
            "message": f"No such File object: {file_id}.",
            "param": "id",
        }
    assert files.call("GET", "/v1/files", workspace="ws-2").json()["data"] == []
    assert files.call("GET", f"/v1/files/{file_id}", workspace="ws-1").status_code == 200  # still there


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"purpose": "not-a-purpose"}, "purpose"),
        ({"purpose": ""}, "purpose"),
        (
            {"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"},
            "expires_after.anchor",
        ),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "9"}, "expires_after.seconds"),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"},
            "expires_after.seconds",
        ),
        ({"expires_after[anchor]": "created_at"}, "expires_after.seconds"),
    ],
)
def test_a_refused_form_stores_nothing(files: Files, fields: dict[str, str], param: str):
    response = files.upload(**fields)
    assert response.status_code == 400, response.text
    assert (
        response.json()["error"]["code"] == "invalid_request" and response.json()["error"]["param"] == param
    )
    assert files.stored_bytes() == [] and files.rows() == []


def test_a_form_without_a_file_or_not_multipart_is_refused(files: Files):
    no_file = files.call("POST", "/v1/files", files={"other": ("a.txt", b"x")}, data={"purpose": "batch"})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    as_json = files.call("POST", "/v1/files", json={"purpose": "batch"})
    assert as_json.status_code == 400 and as_json.json()["error"]["code"] == "invalid_request"
    assert files.stored_bytes() == [] and files.rows() == []


def test_a_file_over_the_limit_is_413_whether_announced_or_streamed(files: Files):
    announced = files.upload(b"x" * 80_000)  # Content-Length over the limit: refused unread
    assert announced.status_code == 413 and announced.json()["error"]["code"] == "request_too_large"

    body = files.client.build_request(
        "POST", "/v1/files", data={"purpose": "batch"}, files={"file": ("big.bin", b"y" * 10_001)}
    )
    content = body.read()

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for i in range(0, len(content), 1000):
            yield content[i : i + 1000]

    streamed = files.call(
        "POST", "/v1/files", content=chunks(), headers={"content-type": body.headers["content-type"]}
    )
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "request_too_large"
    assert files.stored_bytes() == [] and files.rows() == []
    assert files.upload(b"z" * 10_000).status_code == 200  # the limit itself is allowed


def test_listing_pages_by_cursor_in_either_order_and_filters_by_purpose(files: Files):
    ids = []
    for i in range(5):
        files.clock.now = T0 + i
        ids.append(files.upload(purpose="batch" if i % 2 else "user_data").json()["id"])
    files.clock.now = T0 + 10

    def page(**params: Any) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return dict(files.call("GET", f"/v1/files?{query}" if query else "/v1/files").json())

    first = page(limit=2)
    assert [f["id"] for f in first["data"]] == [ids[4], ids[3]] and first["has_more"] is True
    second = page(limit=2, after=first["last_id"])
    assert [f["id"] for f in second["data"]] == [ids[2], ids[1]] and second["has_more"] is True
    third = page(limit=2, after=second["last_id"])
    assert [f["id"] for f in third["data"]] == [ids[0]] and third["has_more"] is False
    assert [f["id"] for f in page(order="asc")["data"]] == ids
    assert [f["id"] for f in page(order="asc", after=ids[2])["data"]] == ids[3:]
    assert [f["id"] for f in page(purpose="batch")["data"]] == [ids[3], ids[1]]
    empty = page(purpose="evals")
    assert empty["data"] == [] and empty["first_id"] is None and empty["has_more"] is False
    for bad, param in (({"limit": 0}, "limit"), ({"limit": 10_001}, "limit"), ({"order": "up"}, "order")):
        response = files.call("GET", "/v1/files?" + "&".join(f"{k}={v}" for k, v in bad.items()))
        assert response.status_code == 400 and response.json()["error"]["param"] == param


async def test_an_expired_file_vanishes_and_the_sweeper_deletes_its_bytes(files: Files):
    kept = files.upload(b"kept").json()
    doc = files.upload(
        b"short-lived", **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"}
    ).json()
    assert doc["expires_at"] == int(T0) + 60
    assert_openai(doc, "OpenAIFile")
    files.clock.now = T0 + 59
    assert files.call("GET", f"/v1/files/{doc['id']}").status_code == 200
    files.clock.now = T0 + 60
    assert files.call("GET", f"/v1/files/{doc['id']}").status_code == 404
    assert files.call("GET", f"/v1/files/{doc['id']}/content").status_code == 404
    assert [f["id"] for f in files.call("GET", "/v1/files").json()["data"]] == [kept["id"]]
    assert len(files.stored_bytes()) == 2  # gone for the workspace, not yet from the storage

    assert await sweep_once(files.service) == 1
    assert len(files.stored_bytes()) == 1 and [r.id for r in files.rows()] == [kept["id"]]
    assert await sweep_once(files.service) == 0


async def test_the_sweeper_clears_uploads_abandoned_mid_way(files: Files):
    abandoned = StoredFile(
        id="file-abandoned", workspace_id="ws-1", created_at=int(T0), storage_key="ws-1/file-abandoned"
    )
    with files.service.sessions() as session:
        session.add(abandoned)
        session.commit()
    async with files.service.storage.writer("ws-1/file-abandoned") as writer:
        await writer.write(b"partial")
    assert files.call("GET", "/v1/files/file-abandoned").status_code == 404  # never served
    files.clock.now = T0 + ABANDONED_AFTER_S - 1
    assert await sweep_once(files.service) == 0
    files.clock.now = T0 + ABANDONED_AFTER_S + 1
    assert await sweep_once(files.service) == 1
    assert files.stored_bytes() == [] and files.rows() == []
