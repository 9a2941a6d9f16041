"""An ext_proc without its configuration is not ready: it does not listen and says why, every time.

Before issue 18 it printed "ready ... (no configuration yet)" after --ready-timeout and answered
503 to everything: a restarted gateway that could not load its configuration took traffic.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from infery.stack import free_port, port_open, spawn


def test_without_a_configuration_ext_proc_neither_listens_nor_says_ready(tmp_path: Path) -> None:
    port, nowhere = free_port(), free_port()  # nothing listens on `nowhere`: no control plane
    proc = spawn(
        "ext_proc",
        [
            sys.executable,
            "-m",
            "ext_proc",
            "--port",
            str(port),
            "--control-plane",
            f"127.0.0.1:{nowhere}",
            "--spool",
            str(tmp_path / "usage.db"),
            "--ready-timeout",
            "0.5",
        ],
        tmp_path / "logs",
        {"INFERY_EXT_PROC_TOKEN": "a-token-for-the-tcp-port"},
    )
    try:
        deadline = time.monotonic() + 20
        while proc.log().count("no configuration from") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        log = proc.log()
        assert proc.alive()
        assert log.count("no configuration from") >= 2, log  # logged again and again, not once
        assert "ready ext_proc" not in log
        assert not port_open(port)
    finally:
        proc.stop()
