"""Every upload and delete leaves one usage record (control_plane/files/usage_records.py): the file's
bytes, 0 credits, the caller ext_proc asserted, under its request id; refused ones too."""

from __future__ import annotations

from infery_proto.identity_assertion import Identity

from control_plane.files import records, usage_records
from control_plane.files.settings import ABANDONED_AFTER_S
from control_plane.files.sweeper import sweep_once
from control_plane.resources import usage
from control_plane.store.tables import StoredFile
from tests.control_plane.files.harness import T0, Files


def _fields(row: object, *names: str) -> tuple[object, ...]:
    return tuple(getattr(row, name) for name in names)


def test_an_upload_and_a_delete_are_recorded_with_the_files_bytes(files: Files):
    uploaded = files.upload(b"x" * 1234)
    assert uploaded.status_code == 200
    upload_id = files.last_request_id
    file_id = uploaded.json()["id"]
    files.clock.now = T0 + 2
    assert files.call("DELETE", f"/v1/files/{file_id}").status_code == 200
    delete_id = files.last_request_id
    records = {r.request_id: r for r in files.usage()}
    assert set(records) == {upload_id, delete_id}
    names = (
        "endpoint",
        "status",
        "file_bytes",
        "credits",
        "workspace_id",
        "member_id",
        "key_id",
        "error_code",
    )
    assert _fields(records[upload_id], *names) == (
        "/v1/files",
        200,
        1234,
        "0",
        "ws-1",
        "member-1",
        "key-1",
        "",
    )
    assert _fields(records[delete_id], *names) == (
        "/v1/files/{file_id}",  # the route, not the id: one row per kind in a breakdown
        200,
        1234,
        "0",
        "ws-1",
        "member-1",
        "key-1",
        "",
    )
    assert records[upload_id].started_at_ms == int(T0 * 1000)
    assert records[upload_id].model_used == records[upload_id].provider == ""


def test_refused_uploads_and_deletes_are_recorded_with_nothing_stored(files: Files):
    """Never a lost usage record: a bad form, a file over the limit, an unknown id."""
    assert files.upload(b"x", purpose="wallpaper").status_code == 400
    bad_form = files.last_request_id
    assert files.upload(b"x" * 20_000).status_code == 413
    too_large = files.last_request_id
    assert files.call("DELETE", "/v1/files/file-000000000000aaaaaaaaaaaaaaaa").status_code == 404
    unknown = files.last_request_id
    other = files.upload(b"theirs", workspace="ws-2").json()["id"]
    assert files.call("DELETE", f"/v1/files/{other}").status_code == 404  # another workspace's
    not_ours = files.last_request_id
    records = {r.request_id: r for r in files.usage()}
    assert _fields(records[bad_form], "endpoint", "status", "error_code", "file_bytes") == (
        "/v1/files",
        400,
        "invalid_request",
        0,
    )
    assert _fields(records[too_large], "status", "error_code", "file_bytes") == (413, "request_too_large", 0)
    for request_id in (unknown, not_ours):
        assert _fields(records[request_id], "endpoint", "status", "error_code", "file_bytes") == (
            "/v1/files/{file_id}",
            404,
            "not_found",
            0,
        )
    assert len(files.rows()) == 1  # only ws-2's file is stored


def test_reads_are_not_recorded(files: Files):
    file_id = files.upload(b"hello").json()["id"]
    before = len(files.usage())
    for path in ("/v1/files", f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
        assert files.call("GET", path).status_code == 200
    assert len(files.usage()) == before == 1


def test_a_request_id_is_recorded_once(files: Files):
    """As for ext_proc's records: a second record under the same request id is not a second use."""
    who = Identity("req-same", "ws-1", "member-1", "key-1")
    first = usage_records.record(who, usage_records.UPLOAD_ENDPOINT, T0, T0 + 1, 200, 10)
    usage_records.write(files.service.sessions, first)
    usage_records.write(files.service.sessions, usage_records.record(who, "/v1/files", T0, T0, 200, 99))
    (row,) = files.usage()
    assert (row.file_bytes, row.latency_ms) == (10, 1000.0)


def test_the_breakdown_by_endpoint_shows_files_bytes_and_no_credits(files: Files):
    for size in (100, 250):
        files.upload(b"y" * size)
    file_id = files.upload(b"z" * 40).json()["id"]
    files.call("DELETE", f"/v1/files/{file_id}")
    with files.service.sessions() as session:
        rows = {r.group: r for r in usage.report(session, usage.UsageQuery(group_by="endpoint"))}
    assert (rows["/v1/files"].requests, rows["/v1/files"].file_bytes, rows["/v1/files"].credits) == (
        3,
        390,
        "0",
    )
    deleted = rows["/v1/files/{file_id}"]
    assert (deleted.requests, deleted.file_bytes, deleted.input_tokens) == (1, 40, 0)


async def test_an_expired_file_is_recorded_when_the_sweeper_frees_its_bytes(files: Files):
    """What is stored is the uploads' bytes less the deletes': a file that expires frees its
    bytes too, so the sweeper records that, once, as a delete of the file's owner."""
    doc = files.upload(
        b"y" * 321, **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"}
    ).json()
    files.clock.now = T0 + 61
    assert await sweep_once(files.service) == 1
    assert await sweep_once(files.service) == 0
    expired = [r for r in files.usage() if r.request_id == f"expired-{doc['id']}"]
    assert len(expired) == 1
    assert _fields(expired[0], "endpoint", "status", "file_bytes", "credits", "workspace_id", "key_id") == (
        "/v1/files/{file_id}",
        200,
        321,
        "0",
        "ws-1",
        "key-1",
    )
    assert expired[0].started_at_ms == int((T0 + 61) * 1000)


async def test_a_deleted_file_the_sweeper_finishes_is_not_recorded_twice(files: Files):
    """A delete that stopped half-way (row expired, bytes and row still there) is finished by
    the sweeper; the delete's own record already holds the freed bytes."""
    file_id = files.upload(b"z" * 50).json()["id"]
    records.expire_now(files.service.sessions, "ws-1", file_id, int(T0))  # the delete's first step only
    files.clock.now = T0 + 1
    assert await sweep_once(files.service) == 1
    assert [r.request_id for r in files.usage() if r.request_id.startswith("expired-")] == []
    assert files.rows() == []


async def test_an_abandoned_upload_is_swept_without_a_record(files: Files):
    """Nothing was stored for it (its failure, if seen, was recorded with 0 bytes)."""
    with files.service.sessions() as session:
        session.add(StoredFile(id="file-gone", workspace_id="ws-1", created_at=int(T0), storage_key="ws-1/x"))
        session.commit()
    files.clock.now = T0 + ABANDONED_AFTER_S + 1
    assert await sweep_once(files.service) == 1
    assert files.usage() == []
