"""The Dockerfile, checked without a Docker engine: its shape (digest-pinned base, two stages, the
lock, a non-root user, ENTRYPOINT, HEALTHCHECK), then its build stage's RUN steps followed in a fresh
venv on this machine, and the result started in its control-plane role and probed by its own
healthcheck."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infery.stack import free_port
from tests.locked_wheels import offline as locked_wheels_offline
from tests.test_self_contained import copy_repository

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_shape() -> None:
    steps = _instructions()
    base = next(args for op, args in steps if op == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim@sha256:[0-9a-f]{64}", base)
    stages = [args for op, args in steps if op == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    runs = [args for op, args in steps if op == "RUN"]
    assert any("--require-hashes" in run and "-r /tmp/requirements.txt" in run for run in runs)
    assert ("COPY", "requirements/runtime.txt /tmp/requirements.txt") in steps
    runtime = steps[[i for i, (op, _) in enumerate(steps) if op == "FROM"][1] :]
    users = [args for op, args in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert ("ENTRYPOINT", '["infery-entrypoint"]') in runtime
    assert any(op == "HEALTHCHECK" and "infery-entrypoint" in args for op, args in runtime)


@pytest.mark.timeout(900)
def test_build_steps_in_a_fresh_venv_give_a_working_control_plane(
    tmp_path: Path, locked_wheels: Path
) -> None:
    prefix, source = tmp_path / "opt-infery", copy_repository(tmp_path / "src")
    build = _instructions()[: [i for i, (op, _) in enumerate(_instructions()) if op == "FROM"][1]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERY_", "VIRTUAL_ENV", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # The RUN lines run unchanged; their pip reads the lock's files, hash-checked, from the run's
    # shared folder rather than from PyPI (tests/locked_wheels.py says why and what stays proven).
    env |= locked_wheels_offline(locked_wheels)
    here = {  # the image's paths, on this machine
        "/opt/infery": str(prefix),
        "/tmp/requirements.txt": str(source / "requirements" / "runtime.txt"),
        "/src": str(source),
        "python -m venv": f"{shlex.quote(sys.executable)} -m venv",
    }
    image_paths = re.compile("|".join(re.escape(path) + (r"\b" if path == "/src" else "") for path in here))
    for op, args in build:
        if op != "RUN":
            continue
        command = image_paths.sub(lambda m: here[m[0]], args)
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=800)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"

    admin_port = free_port()
    env |= {
        "PATH": f"{prefix / 'bin'}:{env['PATH']}",
        "INFERY_ADMIN_TOKEN": "dockerfile-test-token",
        "INFERY_DATABASE_URL": f"sqlite:///{tmp_path / 'infery.db'}",
        "INFERY_ADMIN_PORT": str(admin_port),
        "INFERY_XDS_PORT": str(free_port()),
        "INFERY_HEALTH_URL": f"http://127.0.0.1:{admin_port}/healthz",
    }
    entrypoint = str(prefix / "bin" / "infery-entrypoint")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(
        [entrypoint, "control-plane"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        healthy = 1
        while healthy != 0 and time.monotonic() < deadline and proc.poll() is None:
            healthy = subprocess.run([entrypoint, "healthcheck"], cwd=work, env=env, timeout=30).returncode
            time.sleep(0.3)
        output = b"" if proc.poll() is None else (proc.stdout.read() if proc.stdout else b"")
        assert healthy == 0, output.decode(errors="replace")[-3000:]
    finally:
        proc.terminate()
        proc.wait(30)
    # With the control plane gone, the same healthcheck says so.
    assert subprocess.run([entrypoint, "healthcheck"], cwd=work, env=env, timeout=30).returncode == 1
