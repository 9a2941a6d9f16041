from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from tests.control_plane.files.harness import Files, files_service


@pytest.fixture
def files(tmp_path: Path, session_factory: sessionmaker[Session]) -> Iterator[Files]:
    with files_service(tmp_path / "files", session_factory) as service:
        yield service
