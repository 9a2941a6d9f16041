"""The files service in process, for its tests: the same application the service runs, on a
migrated SQLite store and a local storage directory, driven through Starlette's test client
with identities signed as ext_proc signs them (a fresh request id per call, as ext_proc gives)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from infery_proto.identity_assertion import HEADER, Identity, sign
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, select

from control_plane.files.app import FilesService, create_app
from control_plane.files.settings import FilesSettings
from control_plane.files.storage import FileStorage
from control_plane.store.tables import StoredFile, UsageRecord

KEY = b"f" * 32
T0 = 1_800_000_000.0


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Files:
    client: TestClient
    service: FilesService
    clock: Clock
    root: Path
    request_ids: Iterator[int] = field(default_factory=itertools.count)
    last_request_id: str = ""

    def call(
        self, method: str, path: str, workspace: str = "ws-1", member: str = "member-1", **kwargs: Any
    ) -> Any:
        self.last_request_id = f"req-{next(self.request_ids)}"
        who = Identity(self.last_request_id, workspace, member, "key-1")
        headers = {HEADER: sign(KEY, who, method, path, now=self.clock.now), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def upload(
        self,
        content: bytes = b"hello",
        workspace: str = "ws-1",
        member: str = "member-1",
        headers: dict[str, str] | None = None,
        **fields: str,
    ) -> Any:
        data = {"purpose": "user_data", **fields}
        files = {"file": ("notes.txt", content)}
        return self.call(
            "POST", "/v1/files", workspace, member, data=data, files=files, headers=headers or {}
        )

    def stored_bytes(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file()]

    def rows(self) -> list[StoredFile]:
        with self.service.sessions() as session:
            return list(session.exec(select(StoredFile)))

    def usage(self) -> list[UsageRecord]:
        with self.service.sessions() as session:
            return list(session.exec(select(UsageRecord).order_by(UsageRecord.request_id)))  # type: ignore[arg-type]


@contextmanager
def files_service(
    root: Path, sessions: sessionmaker[Session], max_file_bytes: int = 10_000
) -> Iterator[Files]:
    clock = Clock()
    settings = FilesSettings(max_file_bytes=max_file_bytes, files_min_expires_after_s=10)
    service = FilesService(settings, sessions, FileStorage(root.as_uri()), KEY, clock=clock)
    with TestClient(create_app(service)) as client:
        yield Files(client, service, clock, root)
