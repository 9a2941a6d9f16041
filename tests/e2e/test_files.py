"""``/v1/files`` through a real Envoy with the openai SDK: stored by the gateway's files service.

Two gateways: one on the default local storage (expiry lowered to seconds, so it can be
watched), one on S3-compatible storage (moto's server, a real S3 HTTP API) with a small
size limit for the 413s. Every answer is checked against OpenAI's OpenAPI spec and
parsed by the SDK's typed objects.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from infery_proto.identity_assertion import HEADER, Identity, sign

from infery.stack import Stack
from tests.conformance import assert_openai
from tests.e2e.support import Admin, Tenant, eventually, new_tenant, start_gateway
from tests.s3_server import S3Server, s3_server

S3_MAX_FILE_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def files_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_gateway(
        tmp_path_factory.mktemp("files-gateway"),
        INFERY_FILES_MIN_EXPIRES_AFTER_S="1",
        INFERY_FILES_SWEEP_INTERVAL_S="1",
    )
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def files_admin(files_gateway: Stack) -> Admin:
    admin = Admin(files_gateway.admin_url)
    # A fallback chain: Envoy's routes are then picked by its matcher tree (the files route
    # is its no-match branch), as on any real gateway, not by the plain list of an empty one.
    admin.provider("nowhere", "openai", "http://127.0.0.1:9/v1", "sk-unused")
    admin.model("chained", "nowhere", "m1")
    admin.model("fallback", "nowhere", "m2")
    admin.call("PUT", "/routes/chained", {"fallbacks": ["fallback"], "retry_on": ["5xx"]})
    return admin


@pytest.fixture(scope="module")
def alice(files_admin: Admin, files_gateway: Stack) -> Tenant:
    return new_tenant(files_admin, files_gateway, "files-alice")


@pytest.fixture(scope="module")
def bob(files_admin: Admin, files_gateway: Stack) -> Tenant:
    return new_tenant(files_admin, files_gateway, "files-bob")


def _workspace_id(admin: Admin, name: str) -> str:
    return str(admin.call("GET", f"/workspaces/{name}")["id"])


def test_upload_list_retrieve_content_delete_with_the_openai_sdk(alice: Tenant, files_gateway: Stack):
    client = alice.client(files_gateway)
    raw = client.files.with_raw_response.create(
        file=("train.jsonl", b'{"a": 1}\n{"a": 2}\n'), purpose="batch"
    )
    assert raw.status_code == 200 and raw.headers.get("x-request-id")
    assert_openai(raw.http_response.json(), "OpenAIFile")
    created = raw.parse()
    assert (created.object, created.bytes, created.filename, created.purpose) == (
        "file",
        18,
        "train.jsonl",
        "batch",
    )
    assert created.status == "processed" and created.expires_at is None
    assert abs(created.created_at - time.time()) < 60

    listed = client.files.with_raw_response.list(purpose="batch")
    assert_openai(listed.http_response.json(), "ListFilesResponse")
    assert created.id in [f.id for f in listed.parse().data]
    retrieved = client.files.with_raw_response.retrieve(created.id)
    assert_openai(retrieved.http_response.json(), "OpenAIFile")
    assert retrieved.parse() == created
    assert client.files.content(created.id).read() == b'{"a": 1}\n{"a": 2}\n'

    deleted = client.files.with_raw_response.delete(created.id)
    assert_openai(deleted.http_response.json(), "DeleteFileResponse")
    assert deleted.parse().deleted is True
    with pytest.raises(openai.NotFoundError) as missing:
        client.files.retrieve(created.id)
    assert missing.value.code == "not_found"


def test_pages_follow_the_cursor(alice: Tenant, files_gateway: Stack):
    client = alice.client(files_gateway)
    ids = [client.files.create(file=(f"p{i}.txt", b"x"), purpose="evals").id for i in range(3)]
    page = client.files.list(purpose="evals", limit=2, order="asc")
    assert [f.id for f in page.data] == ids[:2] and page.has_more
    assert [f.id for f in page.get_next_page().data] == ids[2:]
    assert [f.id for f in client.files.list(purpose="evals", limit=2, order="asc")]  # every page == ids


def test_workspaces_see_only_their_own_files(alice: Tenant, bob: Tenant, files_gateway: Stack):
    a, b = alice.client(files_gateway), bob.client(files_gateway)
    secret = a.files.create(file=("alice.txt", b"alice's data"), purpose="user_data")
    mine = b.files.create(file=("bob.txt", b"bob's data"), purpose="user_data")
    for call in (b.files.retrieve, b.files.content, b.files.delete):
        with pytest.raises(openai.NotFoundError) as refused:
            call(secret.id)
        assert refused.value.code == "not_found"
    bobs = [f.id for f in b.files.list().data]
    assert mine.id in bobs and secret.id not in bobs
    assert secret.id not in [f.id for f in b.files.list(after="file-0").data]
    assert a.files.content(secret.id).read() == b"alice's data"  # untouched by bob's attempts


def test_attack_a_client_cannot_assert_an_identity(
    alice: Tenant, bob: Tenant, files_admin: Admin, files_gateway: Stack
):
    """The identity header is ext_proc's: a client's copy is overwritten, not appended or trusted."""
    secret = alice.client(files_gateway).files.create(file=("a.txt", b"alice only"), purpose="user_data")
    alice_ws = _workspace_id(files_admin, alice.workspace)
    # Bob claims to be alice's workspace, with a well-formed assertion signed by a guessed key.
    for claimed_path in ("/v1/files", f"/v1/files/{secret.id}/content"):
        forged = sign(
            b"guessed key" * 3, Identity("r", alice_ws, alice.member_id, alice.key_id), "GET", claimed_path
        )
        b = bob.client(files_gateway, default_headers={HEADER: forged})
        assert secret.id not in [f.id for f in b.files.list().data]
        with pytest.raises(openai.NotFoundError):
            b.files.content(secret.id)
    # Without a key the gateway answers 401 itself, forged header or not.
    anonymous = httpx.get(f"{files_gateway.base_url}/files", headers={HEADER: forged})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"


def test_attack_the_files_port_answers_envoy_only(alice: Tenant, files_gateway: Stack, files_admin: Admin):
    """Mutual TLS: no plain HTTP, no TLS client without the data plane's certificate; and even
    with it, no request without an assertion signed by ext_proc."""
    url = f"{files_gateway.files_url}/v1/files"
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://"), timeout=5)
    context = ssl.create_default_context(cafile=str(files_gateway.pki.client.ca))  # trusts it, no client cert
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, verify=context, timeout=5).raise_for_status()
    alice_ws = _workspace_id(files_admin, alice.workspace)
    forged = sign(
        b"guessed key" * 3, Identity("r", alice_ws, alice.member_id, alice.key_id), "GET", "/v1/files"
    )
    with files_gateway.files_client(timeout=5) as envoy_like:
        for headers in ({}, {HEADER: forged}, {"authorization": f"Bearer {alice.key}"}):
            response = envoy_like.get(url, headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_identity"


def test_an_unknown_purpose_is_a_400_naming_purpose(alice: Tenant, files_gateway: Stack):
    with pytest.raises(openai.BadRequestError) as refused:
        alice.client(files_gateway).files.create(file=("a.txt", b"x"), purpose="wallpaper")  # type: ignore[arg-type]
    assert refused.value.code == "invalid_request" and refused.value.param == "purpose"


def test_an_expired_file_vanishes_then_its_bytes_are_swept(
    alice: Tenant, files_admin: Admin, files_gateway: Stack
):
    client = alice.client(files_gateway)
    short = client.files.create(
        file=("soon.txt", b"gone soon"),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3},
    )
    assert short.expires_at == short.created_at + 3
    assert client.files.retrieve(short.id).expires_at == short.expires_at
    stored = files_gateway.run_dir / "files" / _workspace_id(files_admin, alice.workspace) / short.id
    assert stored.read_bytes() == b"gone soon"

    def gone() -> bool:
        try:
            client.files.retrieve(short.id)
        except openai.NotFoundError:
            return True
        return False

    eventually(gone, timeout=10, interval=0.2)
    assert short.id not in [f.id for f in client.files.list().data]
    eventually(lambda: not stored.exists(), timeout=10, interval=0.2)  # the sweeper, every second here


def test_uploads_larger_than_any_buffered_request_pass_straight_through(alice: Tenant, files_gateway: Stack):
    """Chat requests are buffered up to INFERY_MAX_REQUEST_BYTES (1 MiB here) for ext_proc;
    a 6 MiB file is not: its body never goes to ext_proc, Envoy streams it to the service."""
    client = alice.client(files_gateway)
    data = os.urandom(6 * 1024 * 1024)
    created = client.files.create(file=("big.bin", data), purpose="user_data")
    assert created.bytes == len(data)
    assert hashlib.sha256(client.files.content(created.id).read()).digest() == hashlib.sha256(data).digest()
    client.files.delete(created.id)


def _memory(pid: int) -> dict[str, int]:
    """Resident and peak resident memory (bytes) of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux, as the process's owner)


def test_a_100_mb_upload_and_download_keep_memory_flat(alice: Tenant, files_gateway: Stack, tmp_path: Path):
    """The service streams both ways: its peak memory grows by a fraction of the file's size."""
    size = 100 * 1024 * 1024
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with source.open("wb") as out:  # generated on the fly, never whole in this process either
        for _ in range(size // (1 << 20)):
            block = os.urandom(1 << 20)
            digest.update(block)
            out.write(block)
    watched = {name: p.popen.pid for name, p in files_gateway.processes.items() if name != "control_plane"}
    for pid in watched.values():
        _reset_peak(pid)
    before = {name: _memory(pid) for name, pid in watched.items()}
    client = alice.client(files_gateway, timeout=300)
    created = client.files.create(file=source, purpose="user_data")
    assert created.bytes == size
    after_upload = {name: _memory(pid) for name, pid in watched.items()}
    for pid in watched.values():
        _reset_peak(pid)
    downloaded = hashlib.sha256()
    with client.files.with_streaming_response.content(created.id) as response:
        for piece in response.iter_bytes(1 << 20):
            downloaded.update(piece)
    after_download = {name: _memory(pid) for name, pid in watched.items()}
    client.files.delete(created.id)
    assert downloaded.digest() == digest.digest()

    mib = 1024 * 1024
    for name in watched:
        print(
            f"{name}: RSS before {before[name]['VmRSS'] / mib:.1f} MiB,"
            f" peak during upload {after_upload[name]['VmHWM'] / mib:.1f} MiB,"
            f" peak during download {after_download[name]['VmHWM'] / mib:.1f} MiB"
        )
    base = before["files"]["VmRSS"]
    # Storage parts are 8 MiB (two in flight, one filling): a bound well below the file's size.
    assert after_upload["files"]["VmHWM"] - base < 48 * mib
    assert after_download["files"]["VmHWM"] - base < 48 * mib


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def s3_bucket(s3: S3Server) -> str:
    return s3.new_bucket()


@pytest.fixture(scope="module")
def s3_gateway(tmp_path_factory: pytest.TempPathFactory, s3: S3Server, s3_bucket: str) -> Iterator[Stack]:
    stack = start_gateway(
        tmp_path_factory.mktemp("s3-files-gateway"),
        INFERY_FILES_URL=f"s3://{s3_bucket}/gateway-files",
        INFERY_MAX_FILE_BYTES=str(S3_MAX_FILE_BYTES),
        **s3.env(),
    )
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def s3_tenant(s3_gateway: Stack) -> Tenant:
    return new_tenant(Admin(s3_gateway.admin_url), s3_gateway, "files-s3")


def test_files_on_s3_compatible_storage(s3_tenant: Tenant, s3_gateway: Stack, s3: S3Server, s3_bucket: str):
    client = s3_tenant.client(s3_gateway)
    data = os.urandom(S3_MAX_FILE_BYTES)  # the limit itself: allowed; a multipart upload on S3
    created = client.files.create(file=("on-s3.bin", data), purpose="assistants")
    workspace_id = _workspace_id(Admin(s3_gateway.admin_url), s3_tenant.workspace)
    assert s3.keys(s3_bucket) == [f"gateway-files/{workspace_id}/{created.id}"]
    assert client.files.content(created.id).read() == data
    assert [f.id for f in client.files.list().data] == [created.id]
    client.files.delete(created.id)
    assert s3.keys(s3_bucket) == [] and s3.pending_uploads(s3_bucket) == []


def test_a_file_over_the_limit_is_413_and_leaves_nothing(
    s3_tenant: Tenant, s3_gateway: Stack, s3: S3Server, s3_bucket: str
):
    client = s3_tenant.client(s3_gateway)
    with pytest.raises(openai.APIStatusError) as refused:  # Content-Length says it: refused unread
        client.files.create(file=("big.bin", b"x" * (S3_MAX_FILE_BYTES + 100 * 1024)), purpose="batch")
    assert refused.value.status_code == 413 and refused.value.code == "request_too_large"

    # No Content-Length (chunked): the service counts as the bytes arrive and stops past the limit.
    form = httpx.Request(
        "POST",
        "http://x",
        data={"purpose": "batch"},
        files={"file": ("big.bin", b"y" * (S3_MAX_FILE_BYTES + 1))},
    )
    body = form.read()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    streamed = httpx.post(
        f"{s3_gateway.base_url}/files",
        content=chunks(),
        headers={"authorization": f"Bearer {s3_tenant.key}", "content-type": form.headers["content-type"]},
        timeout=60,
    )
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "request_too_large"
    assert s3.keys(s3_bucket) == [] and s3.pending_uploads(s3_bucket) == []
    assert client.files.list().data == []


def test_uploads_and_deletes_are_in_the_usage_breakdown_by_endpoint(files_admin: Admin, files_gateway: Stack):
    """Item 7 of issue 14: files make usage records (the files service writes them, ext_proc sees
    only the headers), with their bytes and 0 credits, in ``GET /admin/v1/usage?group_by=endpoint``."""
    carol = new_tenant(files_admin, files_gateway, "files-carol")
    client = carol.client(files_gateway)
    kept = client.files.create(file=("kept.txt", b"k" * 3000), purpose="user_data")
    gone = client.files.create(file=("gone.txt", b"g" * 500), purpose="user_data")
    assert client.files.delete(gone.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.delete(gone.id)  # recorded too: 404, nothing freed
    client.files.retrieve(kept.id)  # reads are not recorded

    def breakdown() -> dict[str, dict[str, object]]:
        rows = files_admin.call("GET", "/usage?workspace=files-carol&group_by=endpoint")["rows"]
        found = {row["group"]: row for row in rows}
        return found if found.get("/v1/files/{file_id}", {}).get("requests") == 2 else {}

    rows = eventually(breakdown)
    assert set(rows) == {"/v1/files", "/v1/files/{file_id}"}
    uploads, deletes = rows["/v1/files"], rows["/v1/files/{file_id}"]
    assert (uploads["requests"], uploads["file_bytes"], uploads["credits"]) == (2, 3500, "0")
    assert (deletes["requests"], deletes["file_bytes"], deletes["credits"]) == (2, 500, "0")


def test_attack_an_upload_retried_with_its_idempotency_key_is_one_file(alice: Tenant, files_gateway: Stack):
    """A client retrying an upload (a timeout, a lost answer) with the same Idempotency-Key gets the
    same file object back, replayed, and the workspace stores (and is recorded for) one file."""
    client = alice.client(files_gateway)
    key = {"Idempotency-Key": "upload-retry-" + os.urandom(6).hex()}
    content = os.urandom(50_000)
    first = client.files.with_raw_response.create(
        file=("retry.bin", content), purpose="user_data", extra_headers=key
    )
    again = client.files.with_raw_response.create(
        file=("retry.bin", content), purpose="user_data", extra_headers=key
    )
    assert again.parse().id == first.parse().id and again.parse().bytes == 50_000
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert [f.id for f in client.files.list() if f.filename == "retry.bin"] == [first.parse().id]
    with pytest.raises(openai.UnprocessableEntityError) as reused:
        client.files.create(file=("retry.bin", b"something else"), purpose="user_data", extra_headers=key)
    assert reused.value.code == "idempotency_key_reused"
