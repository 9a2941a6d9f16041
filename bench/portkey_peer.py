"""Portkey's OSS AI gateway (npm ``@portkey-ai/gateway``, Node) as a peer, pointed at the same simulator.

Installed like LiteLLM is: its own directory (``bench/.node-portkey``, ``npm install`` on first use),
started with ``--port=N --headless`` (no console UI). It has no configuration file for this: each
request names the provider and where it lives in headers (``x-portkey-provider: openai``,
``x-portkey-custom-host: <simulator>/v1``) and carries the provider's key as its bearer token.

Its streaming fails on Node 20 (the Node here): every streamed request answers 500 after
``TypeError: immutable`` from undici's ``Headers.append`` in its ``updateHeaders``, so only its
``chat`` rows are run; the table's notes say so.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.launch import bounded_spawn
from infery.stack import Process, free_port, port_open, wait_until

VERSION = "1.15.2"
NODE_DIR = Path(__file__).resolve().parent / ".node-portkey"
PACKAGE = NODE_DIR / "node_modules" / "@portkey-ai" / "gateway"
SERVER = PACKAGE / "build" / "start-server.js"
STREAMING_NOTE = (
    "Portkey's gateway: stream rows not run, its streaming fails on Node {node} "
    "(500, `TypeError: immutable` in undici's Headers.append from its updateHeaders)"
)


def ensure_installed(log: Path) -> Path:
    """``start-server.js`` of the pinned version, installing it into ``bench/.node-portkey`` on first use."""
    if SERVER.exists():
        return SERVER
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        subprocess.run(
            [
                "npm",
                "install",
                "--prefix",
                str(NODE_DIR),
                "--no-audit",
                "--no-fund",
                f"@portkey-ai/gateway@{VERSION}",
            ],
            check=True,
            stdout=out,
            stderr=out,
            timeout=600,
        )
    if not SERVER.exists():
        raise RuntimeError(f"npm install @portkey-ai/gateway@{VERSION} did not produce {SERVER}; see {log}")
    return SERVER


def version() -> str:
    return str(json.loads((PACKAGE / "package.json").read_text())["version"])


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()


def headers(api_base: str) -> dict[str, str]:
    """What tells Portkey which provider serves a request, and where."""
    return {"x-portkey-provider": "openai", "x-portkey-custom-host": api_base}


def start(work_dir: Path) -> tuple[Process, int]:
    """The gateway on a free port; returns the process and the port."""
    server = ensure_installed(work_dir / "logs" / "portkey-install.log")
    port = free_port()
    proc = bounded_spawn("portkey", ["node", str(server), f"--port={port}", "--headless"], work_dir / "logs")
    try:
        wait_until(lambda: port_open(port), "Portkey's gateway", 60, [proc])
    except BaseException:
        proc.stop()
        raise
    return proc, port
