"""LiteLLM's proxy as the peer, offline, in a venv of its own, pointed at the same simulator.

Run the way LiteLLM runs offline: no database, a non-default master key
(LiteLLM refuses the documented one), local copies of every file it would otherwise fetch, one
worker, no ``DATABASE_URL``. Logging is kept to errors so it is not charged for verbosity the
gateway does not have.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from bench.launch import bounded_spawn
from infery.stack import Process, free_port, wait_until

VENV = Path(__file__).resolve().parent / ".venv-litellm"
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "NO_DOCS": "True",
    "LITELLM_LOG": "ERROR",
}


def ensure_installed(log: Path) -> Path:
    """``bench/.venv-litellm/bin/litellm``, creating the venv on first use (takes a few minutes)."""
    exe = VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        subprocess.run(
            [sys.executable, "-m", "venv", str(VENV)], check=True, stdout=out, stderr=out, timeout=300
        )
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
            check=True,
            stdout=out,
            stderr=out,
            timeout=1200,
        )
    if not exe.exists():
        raise RuntimeError(f"pip install 'litellm[proxy]' did not produce {exe}; see {log}")
    return exe


def version() -> str:
    done = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() or "unknown"


def write_config(path: Path, models: list[str], api_base: str, api_key: str) -> Path:
    doc = {
        "model_list": [
            {
                "model_name": m,
                "litellm_params": {"model": f"openai/{m}", "api_base": api_base, "api_key": api_key},
            }
            for m in models
        ],
        "litellm_settings": {"num_retries": 0, "request_timeout": 30, "drop_params": True},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def start(work_dir: Path, models: list[str], api_base: str, api_key: str) -> tuple[Process, int, str]:
    """The proxy on a free port; returns the process, the port and the master key to call it with."""
    exe = ensure_installed(work_dir / "logs" / "litellm-install.log")
    cfg = write_config(work_dir / "litellm.yaml", models, api_base, api_key)
    port = free_port()
    master_key = "sk-bench-" + secrets.token_hex(12)
    argv = [
        "env",
        "-u",
        "DATABASE_URL",
        str(exe),
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    proc = bounded_spawn(
        "litellm", argv, work_dir / "logs", {**OFFLINE_ENV, "LITELLM_MASTER_KEY": master_key}
    )
    url = f"http://127.0.0.1:{port}/health/liveliness"
    try:
        wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, "LiteLLM's proxy", 180, [proc])
    except BaseException:
        proc.stop()
        raise
    return proc, port, master_key
