"""TensorZero's gateway (Rust, embedded in the PyPI ``tensorzero`` wheel) as a peer, as an HTTP server.

The wheel carries the gateway as a native module. Besides the in-process client it has an entry
point that runs the gateway as an HTTP server on a local port: ``tensorzero._start_http_gateway``,
the one its ``patch_openai_client`` uses (underscored: not a documented API). ``bench/`` runs it in
a venv of its own (``bench/.venv-tensorzero``, ``pip install tensorzero==<VERSION>`` on first use)
from a small launcher that prints the server's URL and sleeps; the process is the gateway.

Configuration: one model served by an ``openai`` provider whose ``api_base`` is the simulator,
observability off (no ClickHouse, as LiteLLM runs without a database). Clients call its
OpenAI-compatible endpoint, ``/openai/v1/chat/completions``, with the model named
``tensorzero::model_name::<model>``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench.launch import spawn_announcing
from infery.stack import Process

VERSION = "2026.6.0"
VENV = Path(__file__).resolve().parent / ".venv-tensorzero"
PATH = "/openai/v1/chat/completions"
_READY = re.compile(r"^http://127\.0\.0\.1:(\d+)/openai/v1", re.MULTILINE)
LAUNCHER = """
import sys, time, tensorzero
gateway = tensorzero._start_http_gateway(
    config_file=sys.argv[1], clickhouse_url=None, postgres_url=None, valkey_url=None, async_setup=False
)
print(gateway.base_url, flush=True)
while True:
    time.sleep(3600)
"""


def ensure_installed(log: Path) -> Path:
    """``bench/.venv-tensorzero/bin/python``, creating the venv on first use."""
    python = VENV / "bin" / "python"
    if python.exists() and _has_tensorzero(python):
        return python
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        subprocess.run(
            [sys.executable, "-m", "venv", str(VENV)], check=True, stdout=out, stderr=out, timeout=300
        )
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", f"tensorzero=={VERSION}"],
            check=True,
            stdout=out,
            stderr=out,
            timeout=1200,
        )
    if not _has_tensorzero(python):
        raise RuntimeError(f"pip install tensorzero=={VERSION} did not give {python} the gateway; see {log}")
    return python


def _has_tensorzero(python: Path) -> bool:
    return (
        subprocess.run([str(python), "-c", "import tensorzero"], capture_output=True, timeout=60).returncode
        == 0
    )


def version() -> str:
    done = subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('tensorzero'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() or "unknown"


def model_name(model: str) -> str:
    return f"tensorzero::model_name::{model}"


def write_config(path: Path, model: str, api_base: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[models."{model}"]\n'
        'routing = ["sim"]\n\n'
        f'[models."{model}".providers.sim]\n'
        'type = "openai"\n'
        f'model_name = "{model}"\n'
        f'api_base = "{api_base.rstrip("/")}/"\n'
        'api_key_location = "env::OPENAI_API_KEY"\n\n'
        "[gateway]\n"
        "observability.enabled = false\n"
    )
    return path


def start(work_dir: Path, model: str, api_base: str, api_key: str) -> tuple[Process, int]:
    """The gateway on the port it picks; returns the process and the port."""
    python = ensure_installed(work_dir / "logs" / "tensorzero-install.log")
    config = write_config(work_dir / "tensorzero.toml", model, api_base)
    # RUST_LOG=warn: no log line per request (the gateway's own logging is not what is compared).
    env = {"OPENAI_API_KEY": api_key, "RUST_LOG": "warn"}
    argv = [str(python), "-c", LAUNCHER, str(config)]
    proc, ready = spawn_announcing(
        "tensorzero", argv, work_dir / "logs", _READY, "TensorZero's gateway", 120, env
    )
    return proc, int(ready.group(1))
