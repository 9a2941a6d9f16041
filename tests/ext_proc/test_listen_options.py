"""ext_proc never opens a TCP port that would answer anyone (``python -m ext_proc``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "argv",
    [["--port", "0"], ["--uds", "/tmp/never.sock", "--tcp"]],
    ids=["tcp-by-default", "tcp-asked-for-beside-a-socket"],
)
def test_tcp_without_a_token_refuses_to_start(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERY_")}
    run = subprocess.run(
        [sys.executable, "-m", "ext_proc", *argv], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 2
    assert "INFERY_EXT_PROC_TOKEN" in run.stderr
    assert not os.path.exists("/tmp/never.sock")


def test_an_unknown_server_refuses_to_start() -> None:
    """INFERY_EXT_PROC_SERVER picks the gRPC server (h2 or grpcio); a typo must not fall back silently."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERY_")}
    env["INFERY_EXT_PROC_SERVER"] = "grpc"
    run = subprocess.run(
        [sys.executable, "-m", "ext_proc", "--uds", "/tmp/never.sock"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 2
    assert "INFERY_EXT_PROC_SERVER: Input should be 'h2' or 'grpcio'" in run.stderr
    assert not os.path.exists("/tmp/never.sock")
