"""The runtime lock's wheels, fetched once per test run and shared by the tests that install the
lock into a fresh venv (the Dockerfile's build steps, `make up` on a fresh clone).

Why: on this project's CI (two cores) most of a fresh `pip install -r requirements/runtime.txt`
is not installing but finding: the venv's own pip (the one `python -m venv` bundles) fetches and
parses each package's whole PyPI page (thousands of links for grpcio), about 40 s of CPU for
81 packages, and does so on every install: pip never serves an index page from its cache. Fetched
once here, by this venv's newer pip (7 s of CPU), each of those tests installs from a local folder.

What stays proven: every file comes from the index once, checked against the lock's hashes
(`pip download --require-hashes`), and each test then runs its own commands unchanged (the
Dockerfile's RUN lines, `make up`), whose pip checks the same hashes again and unpacks,
byte-compiles and installs exactly what it would from PyPI. Only where pip reads the files
from changes, through pip's own settings (`PIP_NO_INDEX`, `PIP_FIND_LINKS`).
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = REPO / "requirements" / "runtime.txt"


def build_requirements() -> list[str]:
    """pyproject.toml's build-system requirements: what pip's build isolation installs to build
    the project (`pip install /src`, `pip install -e .`), so that it finds them offline too."""
    return list(tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"])


def fetch(root: Path) -> Path:
    """The folder under ``root`` holding every wheel the runtime lock names and the build
    requirements; the first caller fetches them (one process at a time, under a lock file),
    the others find them there. Keyed by the lock's content, so a changed lock fetches anew."""
    key = hashlib.sha256(RUNTIME_LOCK.read_bytes() + repr(build_requirements()).encode()).hexdigest()[:16]
    wheels, done = root / f"locked-wheels-{key}", root / f"locked-wheels-{key}.done"
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"locked-wheels-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels)]
            for extra in (["--require-hashes", "-r", str(RUNTIME_LOCK)], build_requirements()):
                got = subprocess.run([*pip, *extra], capture_output=True, text=True, timeout=600)
                assert got.returncode == 0, f"{got.stdout[-2000:]}{got.stderr[-3000:]}"
            done.touch()
    return wheels


def offline(wheels: Path) -> dict[str, str]:
    """pip's settings that make it install from ``wheels`` alone (no index, no other links)."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
