"""wrk's Lua script and summary line, /proc accounting, the pass-through Envoy config."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench import passthrough, procstat, wrk
from infery.stack import BIN


def test_lua_script_carries_body_headers_and_the_json_hook(tmp_path: Path) -> None:
    body = b'{"messages":[{"role":"user","content":"say \\"hi\\" caf\xc3\xa9"}]}'
    req = wrk.Request("127.0.0.1", 1, "/v1/chat/completions", {"authorization": "Bearer k"}, body)
    script = wrk.write_script(req, tmp_path / "s.lua").read_text()
    assert 'wrk.method = "POST"' in script and 'wrk.headers["authorization"] = "Bearer k"' in script
    assert "café" in script and "latency:percentile(99)" in script and wrk.MARK in script


def test_meter_sees_cpu_of_a_child_tree() -> None:
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\ntime.sleep(5)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess,sys; subprocess.run([sys.executable,'-c',{burn!r}])"]
    )
    members: list[int] = []
    try:
        meter = procstat.Meter({"tree": [parent.pid]})
        meter.start()
        deadline = time.monotonic() + 10
        usage = meter.stop()["tree"]
        while time.monotonic() < deadline and usage.cpu_s < 0.25:  # the grandchild burns 0.3 s
            members = procstat.tree([parent.pid]) or members
            time.sleep(0.05)
            usage = meter.stop()["tree"]
        assert len(members) == 2
        assert usage.cpu_s >= 0.25
        assert usage.peak_rss_mb > 1
        assert procstat.rss_mb([parent.pid]) > 1
    finally:
        for pid in procstat.tree([parent.pid]) or members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        parent.wait()


def test_passthrough_config_is_accepted_by_envoy(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(passthrough.config(10000, 10001)))
    done = subprocess.run(
        [str(BIN / "envoy"), "--mode", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
