"""Several ext_proc processes without a shared store would each keep their own limits and idempotency keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ext_proc.shared_state import require_shared_store
from infery.stack import REPO, Ports, Stack, free_port


def test_the_launcher_refuses_several_ext_procs_without_redis(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "INFERY_REDIS_URL"}
    stack = Stack(tmp_path, Ports.free(2), {})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", env)
        with pytest.raises(ValueError, match="INFERY_EXT_PROCS=2 needs INFERY_REDIS_URL"):
            stack.start()
    assert not stack.processes, "nothing was started"


def test_one_ext_proc_or_redis_is_accepted():
    require_shared_store(1, None)
    require_shared_store(3, "redis://127.0.0.1:6379/5")


def test_ext_proc_refuses_to_start_as_one_of_several_without_redis(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "INFERY_REDIS_URL"}
    env["INFERY_EXT_PROCS"] = "2"
    env["INFERY_EXT_PROC_TOKEN"] = "a-token"  # its TCP port needs one; this tests the shared-store check
    proc = subprocess.run(
        [sys.executable, "-m", "ext_proc", "--port", str(free_port()), "--spool", str(tmp_path / "spool.db")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "INFERY_EXT_PROCS=2 needs INFERY_REDIS_URL" in proc.stderr
