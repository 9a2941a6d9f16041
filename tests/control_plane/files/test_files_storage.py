"""The storage interface, the same tests against a local directory and a real S3-compatible server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from control_plane.files.storage import PART_BYTES, FileStorage, ObjectMissing
from tests.s3_server import S3Server, s3_server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@dataclass
class Backend:
    storage: FileStorage
    leftovers: Callable[[], list[str]]  # what the backend holds: objects, staged or pending uploads


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    if request.param == "file":
        root = tmp_path / "files"
        storage = FileStorage(root.as_uri())
        return Backend(storage, lambda: sorted(str(p) for p in root.rglob("*") if p.is_file()))
    server: S3Server = request.getfixturevalue("s3")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    bucket = server.new_bucket()
    storage = FileStorage(f"s3://{bucket}/some/prefix")
    return Backend(storage, lambda: server.keys(bucket) + server.pending_uploads(bucket))


async def _read_all(storage: FileStorage, key: str) -> bytes:
    return b"".join([piece async for piece in await storage.read(key)])


async def test_a_file_written_in_pieces_reads_back_whole(backend: Backend):
    # Over two parts: a multipart upload on S3, a staged file renamed into place locally.
    pieces = [os.urandom(64 * 1024) for _ in range(2 * PART_BYTES // (64 * 1024) + 3)]
    async with backend.storage.writer("ws-1/file-a") as writer:
        for piece in pieces:
            await writer.write(piece)
    assert await backend.storage.size("ws-1/file-a") == sum(map(len, pieces))
    assert await _read_all(backend.storage, "ws-1/file-a") == b"".join(pieces)


async def test_an_interrupted_write_leaves_nothing(backend: Backend):
    with pytest.raises(RuntimeError):
        async with backend.storage.writer("ws-1/file-b") as writer:
            for _ in range(2 * PART_BYTES // (1 << 20) + 1):  # parts already sent to S3
                await writer.write(b"x" * (1 << 20))
            raise RuntimeError("the client went away")
    with pytest.raises(ObjectMissing):
        await backend.storage.read("ws-1/file-b")
    # Nothing staged locally; on S3 the multipart upload was aborted, not left to cost storage.
    assert backend.leftovers() == []


async def test_delete_removes_the_object_and_is_idempotent(backend: Backend):
    async with backend.storage.writer("ws-2/file-c") as writer:
        await writer.write(b"hello")
    assert len(backend.leftovers()) == 1
    await backend.storage.delete("ws-2/file-c")
    with pytest.raises(ObjectMissing):
        await backend.storage.read("ws-2/file-c")
    with pytest.raises(ObjectMissing):
        await backend.storage.size("ws-2/file-c")
    assert backend.leftovers() == []
    await backend.storage.delete("ws-2/file-c")  # already gone: nothing to do, no error


async def test_an_s3_prefix_keeps_objects_under_it(s3: S3Server, monkeypatch: pytest.MonkeyPatch):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3.new_bucket()
    storage = FileStorage(f"s3://{bucket}/gateway/files")
    async with storage.writer("ws-3/file-d") as writer:
        await writer.write(b"data")
    assert s3.keys(bucket) == ["gateway/files/ws-3/file-d"]
