"""An upload with an ``Idempotency-Key``, retried, is the same file: never a second copy stored (and
billed as storage). Scoped as ext_proc scopes its keys: to the workspace and the member."""

from __future__ import annotations

from control_plane.files import idempotency
from control_plane.store.tables import StoredFile
from tests.control_plane.files.harness import T0, Files

KEY = {"Idempotency-Key": "upload-1"}


def test_attack_a_retried_upload_is_the_same_file_not_a_second_one(files: Files):
    first = files.upload(b"report " * 100, headers=KEY)
    assert first.status_code == 200
    files.clock.now = T0 + 5
    again = files.upload(b"report " * 100, headers=KEY)
    assert again.status_code == 200
    assert again.json() == first.json()  # the same file object: id, bytes, created_at
    assert again.headers.get("idempotent-replayed") == "true"
    assert len(files.rows()) == 1 and len(files.stored_bytes()) == 1
    listed = files.call("GET", "/v1/files").json()["data"]
    assert [f["id"] for f in listed] == [first.json()["id"]]
    usage = files.usage()
    assert [(u.status, u.file_bytes, u.idempotent_replay) for u in usage] == [
        (200, 700, False),
        (200, 0, True),
    ]


def test_the_same_key_with_another_file_is_refused(files: Files):
    files.upload(b"one", headers=KEY)
    other = files.upload(b"two", headers=KEY)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    other_purpose = files.upload(b"one", headers=KEY, purpose="batch")
    assert other_purpose.status_code == 422
    assert len(files.rows()) == 1 and len(files.stored_bytes()) == 1


def test_another_member_or_workspace_never_gets_the_file(files: Files):
    """Attack: guessing a key never replays someone else's upload (its id, its name)."""
    mine = files.upload(b"secret", headers=KEY).json()
    theirs = files.upload(b"secret", member="member-2", headers=KEY).json()
    elsewhere = files.upload(b"secret", workspace="ws-2", headers=KEY).json()
    assert len({mine["id"], theirs["id"], elsewhere["id"]}) == 3
    assert len(files.rows()) == 3


def test_a_refused_upload_leaves_the_key_free_for_the_retry(files: Files):
    refused = files.upload(b"x", headers=KEY, purpose="wallpaper")
    assert refused.status_code == 400
    retried = files.upload(b"x", headers=KEY)
    assert retried.status_code == 200 and len(files.rows()) == 1


def test_a_key_whose_upload_is_under_way_is_in_use(files: Files):
    with files.service.sessions() as session:
        session.add(
            StoredFile(
                id="file-underway",
                workspace_id="ws-1",
                member_id="member-1",
                created_at=int(T0),
                storage_key="ws-1/file-underway",
                idempotency_key=idempotency.scope("member-1", "upload-1"),
            )
        )
        session.commit()
    busy = files.upload(b"x", headers=KEY)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_key_in_use"
    assert len(files.rows()) == 1


def test_a_deleted_files_key_uploads_anew(files: Files):
    first = files.upload(b"v1", headers=KEY).json()
    assert files.call("DELETE", f"/v1/files/{first['id']}").status_code == 200
    second = files.upload(b"v2", headers=KEY)
    assert second.status_code == 200 and second.json()["id"] != first["id"]


def test_a_key_too_long_is_refused(files: Files):
    refused = files.upload(b"x", headers={"Idempotency-Key": "k" * 300})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "Idempotency-Key"
